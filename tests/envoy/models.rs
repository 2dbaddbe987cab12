//! Model checks in the real Envoy: the `model` of OpenAI- and
//! Anthropic-shaped bodies against the caller's allow-list (an API key's
//! `allowed_models`, a JWT's `models` claim or `model:` scopes), with the
//! buffer filter after ours; streaming answers still stream, and a route
//! without a model rule never waits for the body.

use crate::api_keys::{access_log_to, sha256_hex, temp_log};
use crate::support::*;
use ai_auth_testkit::http::{Action, Gate, StreamingResponse};
use ai_auth_testkit::{providers, sdk};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const SEARCH_KEY: &str = "sk-gw-search-41c7e0a9d2";
const ANY_KEY: &str = "sk-gw-any-model-7f3b21c8";
const NO_LIST_KEY: &str = "sk-gw-no-list-c0ffee11";
const UPSTREAM_KEY: &str = "sk-upstream-openai-5e5e";

fn buffer_filter() -> Value {
    json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1048576}})
}

/// A route to the upstream on which the buffer filter is off: requests
/// stream to the upstream as they come.
fn unbuffered_route(prefix: &str) -> Value {
    let mut r = bootstrap::route_to("upstream");
    r["match"] = json!({"prefix": prefix});
    r["typed_per_filter_config"] = json!({"envoy.filters.http.buffer": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "disabled": true}});
    r
}

fn plugin(signer: &TestKey) -> Value {
    let any = json!({"requires_any": {"requirements": [
        {"provider_name": "keys"}, {"provider_name": "idp"}]}});
    json!({
        "jwt_authn": {
            "providers": {
                "keys": {"api_keys": [
                    {"name": "search-app", "sha256": sha256_hex(SEARCH_KEY),
                     "allowed_models": ["gpt-4o*", "claude-3-5-haiku-*"]},
                    {"name": "any-app", "sha256": sha256_hex(ANY_KEY), "allowed_models": ["*"]},
                    {"name": "no-list-app", "sha256": sha256_hex(NO_LIST_KEY)}
                ]},
                "idp": {"issuer": ISS, "audiences": [AUD],
                        "local_jwks": {"inline_string": jwks(&[signer]).to_string()}}
            },
            "rules": [
                {"match": {"prefix": "/nomodel/"}, "requires": any},
                {"match": {"prefix": "/lenient/"}, "requires": any,
                 "model_check": {"missing_model": "allow", "max_body_bytes": 1024, "over_max_body": "check_start"}},
                {"match": {"prefix": "/v1/"}, "requires": any,
                 "model_check": {"claims": ["allowed_models", "models"], "scope_prefix": "model:", "max_body_bytes": 4096}}
            ]
        },
        "upstream_credentials": {
            "backends": {"openai": {"scheme": "openai", "secret": {"inline_string": UPSTREAM_KEY}}},
            "routes": [{"match": {"prefix": "/"}, "backend": "openai"}]
        }
    })
}

struct Setup {
    envoy: Envoy,
    upstream: Server,
    auth: Server,
    access_log: std::path::PathBuf,
    signer: TestKey,
}

fn start() -> Setup {
    let signer = TestKey::ed25519("k1");
    // Provider-shaped answers on /v1/..., a plain 200 on the test's other prefixes.
    let upstream = Server::start(|r| {
        if r.path.starts_with("/v1/") {
            providers::any_key(r)
        } else {
            Action::status(200)
        }
    });
    let auth = Server::start(|_| Action::status(200).with_header("x-ratelimit-remaining", "41"));
    let access_log = temp_log("models-access");
    let routes = vec![
        unbuffered_route("/nomodel/"),
        bootstrap::route_to("upstream"),
    ];
    let mut main = bootstrap::listener(
        "main",
        vec![bootstrap::wasm_filter(&plugin(&signer)), buffer_filter()],
        routes.clone(),
    );
    access_log_to(&mut main, &access_log);
    // The passthrough (headers only) after a model check: asked once the
    // model is allowed; its client headers still reach the client.
    let mut with_authz = plugin(&signer);
    with_authz["ext_authz"] = json!({"http_service": {
        "server_uri": {"uri": "http://authz.local", "cluster": "authz", "timeout": "1s"},
        "authorization_response": {"allowed_client_headers_on_success": {"patterns": [{"exact": "x-ratelimit-remaining"}]}}}});
    let authz = bootstrap::listener(
        "authz",
        vec![bootstrap::wasm_filter(&with_authz), buffer_filter()],
        routes,
    );
    let boot = bootstrap::bootstrap(
        vec![main, authz],
        vec![
            bootstrap::cluster("upstream", upstream.port),
            bootstrap::cluster("authz", auth.port),
        ],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        envoy,
        upstream,
        auth,
        access_log,
        signer,
    }
}

fn post(port: u16, path: &str, auth: (&str, &str), body: &[u8]) -> Response {
    http::request(
        port,
        "POST",
        path,
        &[
            auth,
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    )
    .unwrap()
}

fn chat_body(model: &str) -> Vec<u8> {
    json!({"messages": [{"role": "user", "content": "Hello"}], "model": model})
        .to_string()
        .into_bytes()
}

fn key(k: &str) -> (&'static str, String) {
    ("x-api-key", k.to_string())
}

/// (credential header, path, body, expected status, model named in a 403)
type Case<'a> = ((&'a str, String), &'a str, Vec<u8>, u16, Option<&'a str>);

#[test]
fn allowed_disallowed_wildcards_and_unreadable_models() {
    let s = start();
    let port = s.envoy.port("main");
    let jwt_models = s
        .signer
        .sign(&claims_with(json!({"models": ["gpt-4o-mini"]})));
    let jwt_scope = s
        .signer
        .sign(&claims_with(json!({"scope": "openid model:claude-* chat"})));
    let jwt_none = s.signer.sign(&claims());
    let bearer_of = |t: &str| ("authorization", bearer(t));
    // (who, path, body, expected status, expected model in the 403)
    let cases: Vec<Case> = vec![
        (
            key(SEARCH_KEY),
            "/v1/chat/completions",
            chat_body("gpt-4o"),
            200,
            None,
        ),
        (
            key(SEARCH_KEY),
            "/v1/chat/completions",
            chat_body("gpt-4o-mini-2024-07-18"),
            200,
            None,
        ),
        (
            key(SEARCH_KEY),
            "/v1/messages",
            br#"{"model":"claude-3-5-haiku-latest","max_tokens":64,"messages":[]}"#.to_vec(),
            200,
            None,
        ),
        (
            key(SEARCH_KEY),
            "/v1/chat/completions",
            chat_body("gpt-4"),
            403,
            Some("gpt-4"),
        ),
        (
            key(SEARCH_KEY),
            "/v1/messages",
            br#"{"model":"claude-3-opus-latest","max_tokens":64,"messages":[]}"#.to_vec(),
            403,
            Some("claude-3-opus-latest"),
        ),
        (
            key(ANY_KEY),
            "/v1/chat/completions",
            chat_body("o1-pro"),
            200,
            None,
        ),
        (
            key(NO_LIST_KEY),
            "/v1/chat/completions",
            chat_body("gpt-4o"),
            403,
            Some("gpt-4o"),
        ),
        (
            bearer_of(&jwt_models),
            "/v1/chat/completions",
            chat_body("gpt-4o-mini"),
            200,
            None,
        ),
        (
            bearer_of(&jwt_models),
            "/v1/chat/completions",
            chat_body("gpt-4o"),
            403,
            Some("gpt-4o"),
        ),
        (
            bearer_of(&jwt_scope),
            "/v1/messages",
            br#"{"model":"claude-3-7-sonnet","messages":[]}"#.to_vec(),
            200,
            None,
        ),
        (
            bearer_of(&jwt_scope),
            "/v1/chat/completions",
            chat_body("gpt-4o"),
            403,
            Some("gpt-4o"),
        ),
        (
            bearer_of(&jwt_none),
            "/v1/chat/completions",
            chat_body("gpt-4o"),
            403,
            Some("gpt-4o"),
        ),
    ];
    for (i, ((h, v), path, body, status, model)) in cases.iter().enumerate() {
        let before = s.upstream.count();
        let r = post(port, path, (h, v), body);
        assert_eq!(r.status, *status, "case {i}: {}", r.text());
        match model {
            None => {
                let seen = s.upstream.last().unwrap();
                assert_eq!(
                    seen.body, *body,
                    "case {i}: the upstream got the body as sent"
                );
                assert_eq!(
                    seen.header("authorization"),
                    Some(format!("Bearer {UPSTREAM_KEY}").as_str())
                );
            }
            Some(m) => {
                assert_eq!(
                    s.upstream.count(),
                    before,
                    "case {i}: a denied request reached the upstream"
                );
                assert_eq!(
                    error_of(&r),
                    (
                        "model_not_allowed".to_string(),
                        format!("model `{m}` is not allowed for this caller")
                    ),
                    "case {i}"
                );
            }
        }
    }
    // No readable model: denied by default, allowed where configured.
    let before = s.upstream.count();
    for body in [
        &b"{}"[..],
        br#"{"messages": []}"#,
        b"model=gpt-4o",
        br#"{"model": 4}"#,
        // A second model a provider keeping the last key would use.
        br#"{"model": "gpt-4o", "messages": [], "model": "o1-pro"}"#,
        br#"{"model": "gpt-4o", "m\u006fdel": "o1-pro"}"#,
    ] {
        let r = post(port, "/v1/chat/completions", ("x-api-key", ANY_KEY), body);
        assert_eq!(
            r.status,
            403,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert_eq!(error_of(&r).0, "model_unreadable");
    }
    // A request without a body on a route with a model rule.
    let r = http::get(port, "/v1/models", &[("x-api-key", ANY_KEY)]).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        error_of(&r).1,
        "the requested model cannot be checked: the request has no body"
    );
    assert_eq!(s.upstream.count(), before);
    let r = post(
        port,
        "/lenient/v1/chat/completions",
        ("x-api-key", ANY_KEY),
        b"{}",
    );
    assert_eq!(r.status, 200, "missing_model: allow");
    let r = http::get(port, "/lenient/v1/models", &[("x-api-key", ANY_KEY)]).unwrap();
    assert_eq!(r.status, 200);

    // Six allowed cases, and the two unreadable ones allowed on /lenient/.
    assert_eq!(s.envoy.counter("model_check.allowed"), 8);
    assert_eq!(s.envoy.counter("model_check.denied"), 6 + 6 + 1);
    assert_eq!(s.envoy.counter("model_check.unreadable"), 6 + 1 + 2);
}

#[test]
fn a_huge_body_only_its_start_is_read() {
    let s = start();
    let port = s.envoy.port("main");
    let filler = "x".repeat(300 * 1024);
    // Written by hand: serde_json would sort the keys.
    let model_first = format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{filler}"}}]}}"#
    )
    .into_bytes();
    let model_last = format!(
        r#"{{"messages": [{{"role": "user", "content": "{filler}"}}], "model": "gpt-4o"}}"#
    )
    .into_bytes();
    // Default: a body longer than max_body_bytes (4 KiB here) has no
    // readable model, wherever the model is.
    for body in [&model_first, &model_last] {
        let r = post(
            port,
            "/v1/chat/completions",
            ("x-api-key", SEARCH_KEY),
            body,
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(
            error_of(&r).1,
            "the requested model cannot be checked: no model in the part of the body that is read"
        );
    }
    assert_eq!(s.upstream.count(), 0);
    // over_max_body: check_start (1 KiB read): the model in the start is
    // checked, and the whole body goes on untouched.
    let r = post(
        port,
        "/lenient/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        &model_first,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream.last().unwrap().body, model_first);
    let disallowed = String::from_utf8(model_first.clone())
        .unwrap()
        .replace("gpt-4o", "o1-pro");
    let r = post(
        port,
        "/lenient/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        disallowed.as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r).0, "model_not_allowed");
    // The model after the first KiB is not found; missing_model: allow there.
    let r = post(
        port,
        "/lenient/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        &model_last,
    );
    assert_eq!(r.status, 200);
    assert_eq!(s.envoy.counter("model_check.unreadable"), 3);
}

#[test]
fn stream_true_answers_still_stream() {
    let s = start();
    let gate = Gate::default();
    let g = gate.clone();
    s.upstream.set_handler(move |_| {
        let chunk = |delta: Value| {
            let c = json!({"object": "chat.completion.chunk", "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
            format!("data: {c}\n\n")
        };
        Action::GatedStream {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            first: chunk(json!({"role": "assistant", "content": "Hel"})).into_bytes(),
            gate: g.clone(),
            rest: format!("{}data: [DONE]\n\n", chunk(json!({"content": "lo"}))).into_bytes(),
        }
    });
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
        .to_string();
    let mut r = StreamingResponse::open(
        s.envoy.port("main"),
        "POST",
        "/v1/chat/completions",
        &[
            ("x-api-key", SEARCH_KEY),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // The first event arrives while the upstream holds the rest back: the
    // answer is not buffered by the model check nor the buffer filter.
    r.read_until("\"role\":\"assistant\"").unwrap();
    assert!(!r.text().contains("[DONE]"));
    gate.open();
    r.read_to_end().unwrap();
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    assert_eq!(s.upstream.last().unwrap().body, body.as_bytes());
}

/// Sends the head and half of the body, waits (bounded) for `arrived`,
/// then sends the rest; returns whether `arrived` held before the rest went.
fn send_in_two_halves(
    port: u16,
    path: &str,
    body: &[u8],
    arrived: impl Fn() -> bool,
) -> (bool, Response) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(http::IO_TIMEOUT)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nx-api-key: {SEARCH_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first).unwrap();
    stream.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = arrived();
    while !seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = arrived();
    }
    stream.write_all(rest).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    (seen, http::read_response(&mut reader).unwrap())
}

#[test]
fn a_route_without_a_model_rule_never_waits_for_the_body() {
    let s = start();
    let port = s.envoy.port("main");
    let body = chat_body("gpt-4o");
    let before = s.upstream.heads_seen();
    let (seen, r) = send_in_two_halves(port, "/nomodel/v1/chat/completions", &body, || {
        s.upstream.heads_seen() > before
    });
    assert!(
        seen,
        "the upstream had the request before its body was complete"
    );
    assert_eq!(r.status, 200);
    assert_eq!(s.upstream.last().unwrap().body, body);
    assert_eq!(
        s.envoy.counter("model_check.allowed"),
        0,
        "no model was read"
    );
}

#[test]
fn the_passthrough_is_asked_after_the_model() {
    let s = start();
    let port = s.envoy.port("authz");
    let r = post(
        port,
        "/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        &chat_body("gpt-4o"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.auth.count(), 1);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("41"));
    let seen = s.upstream.last().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    // A disallowed model is refused before the service is asked.
    let r = post(
        port,
        "/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        &chat_body("o1"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(s.auth.count(), 1);
    // A service denial after an allowed model: nothing reached the upstream.
    s.auth.set_handler(|_| Action::status(403));
    let before = s.upstream.count();
    let r = post(
        port,
        "/v1/chat/completions",
        ("x-api-key", SEARCH_KEY),
        &chat_body("gpt-4o"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(s.upstream.count(), before);
}

#[test]
fn the_sdks_see_the_model_in_the_denial_and_the_access_log_has_it() {
    let mut s = start();
    let base = format!("http://127.0.0.1:{}", s.envoy.port("main"));
    let v1 = format!("{base}/v1");
    let call = |sdk: &str, base: &str, what: &str, model: &str| json!({"sdk": sdk, "base_url": base, "api_key": SEARCH_KEY, "call": what, "model": model});
    let calls = json!([
        call("openai", &v1, "chat", "gpt-4o-mini"),
        call("openai", &v1, "chat_stream", "gpt-4o"),
        call("openai", &v1, "chat", "o1-pro"),
        call("anthropic", &base, "messages", "claude-3-5-haiku-latest"),
        call(
            "anthropic",
            &base,
            "messages_stream",
            "claude-3-5-haiku-20241022"
        ),
        call("anthropic", &base, "messages", "claude-opus-4"),
    ]);
    let results = sdk::run_calls(&calls).unwrap_or_else(|e| panic!("{e}"));
    for i in [0, 1, 3, 4] {
        assert_eq!(results[i]["ok"], true, "call {i}: {}", results[i]);
    }
    assert_eq!(results[0]["model"], "gpt-4o-mini");
    for i in [1, 4] {
        assert!(results[i]["chunks"].as_u64().unwrap() > 1, "{}", results[i]);
    }
    for (i, model) in [(2, "o1-pro"), (5, "claude-opus-4")] {
        assert_eq!(
            results[i]["exception"], "PermissionDeniedError",
            "{}",
            results[i]
        );
        assert_eq!(results[i]["status"], 403);
        let message = results[i]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("model `{model}` is not allowed")),
            "{message}"
        );
    }
    s.envoy.stop();
    let access = std::fs::read_to_string(&s.access_log).unwrap_or_default();
    assert!(
        access.contains(
            "/v1/chat/completions status=200 caller=search-app backend=openai model=gpt-4o-mini"
        ),
        "access log:\n{access}"
    );
    assert!(
        access.contains(
            "/v1/chat/completions status=403 caller=search-app backend=openai model=o1-pro"
        ),
        "access log:\n{access}"
    );
    assert!(
        access.contains("/v1/messages status=200 caller=search-app backend=openai model=claude-3-5-haiku-latest"),
        "access log:\n{access}"
    );
    assert!(!access.contains(SEARCH_KEY) && !access.contains(UPSTREAM_KEY));
}
