//! Passthrough auth over HTTP in the real Envoy, against a scripted auth
//! service: allow, deny, every kind of failure under failure_mode_allow
//! false and true, bodies, spoofed identity headers, the decision cache.

use crate::support::*;
use ai_auth_testkit::http::Action;
use serde_json::{json, Value};
use std::time::Duration;

fn authz(cluster: &str, extra: Value) -> Value {
    let mut v = json!({
        "http_service": {
            "server_uri": {"uri": "http://authz.local", "cluster": cluster, "timeout": "0.5s"},
            "path_prefix": "/check",
            "authorization_request": {
                "allowed_headers": {"patterns": [{"exact": "x-api-key"}]},
                "headers_to_add": [{"key": "x-gateway", "value": "ai-auth"}]
            },
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": "x-user-id"}, {"exact": "x-plan"}]},
                "allowed_upstream_headers_to_append": {"patterns": [{"exact": "x-trace"}]},
                "allowed_client_headers": {"patterns": [{"exact": "www-authenticate"}, {"exact": "location"}, {"exact": "x-deny-reason"}]},
                "allowed_client_headers_on_success": {"patterns": [{"exact": "x-ratelimit-remaining"}]}
            }
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    json!({"ext_authz": v})
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Body mode: no upstream header lists (refused with a body), and Envoy's
/// buffer filter after ours so the upstream sees nothing before the decision.
fn body_authz(body: Value) -> Value {
    let mut v = authz("ext_authz", json!({"with_request_body": body}));
    v["ext_authz"]["http_service"]["authorization_response"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k.starts_with("allowed_client"));
    v
}

fn buffer_filter() -> Value {
    json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1048576}})
}

struct Setup {
    envoy: Envoy,
    auth: Server,
    upstream: Server,
}

impl Setup {
    fn start(listeners: Vec<(&str, Value)>) -> Setup {
        Self::start_with(listeners, 1)
    }

    fn start_with(listeners: Vec<(&str, Value)>, concurrency: u32) -> Setup {
        let auth = Server::start(|_| Action::status(200));
        let ls = listeners
            .into_iter()
            .map(|(name, plugin)| {
                let mut filters = vec![bootstrap::wasm_filter(&plugin)];
                if plugin["ext_authz"].get("with_request_body").is_some() {
                    filters.push(buffer_filter());
                }
                bootstrap::listener(name, filters, vec![bootstrap::route_to("upstream")])
            })
            .collect();
        let Gateway { envoy, upstream } = Gateway::start_listeners(
            ls,
            vec![
                bootstrap::cluster("ext_authz", auth.port),
                bootstrap::cluster("dead_authz", dead_port()),
            ],
            &workers(concurrency),
        );
        Setup {
            envoy,
            auth,
            upstream,
        }
    }

    fn get(&self, listener: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(self.envoy.port(listener), path, headers).unwrap()
    }

    fn good_request_passes(&self, listener: &str) {
        self.auth.set_handler(|_| Action::status(200));
        let r = self.get(listener, "/v1/models", &[]);
        assert_eq!(
            r.status,
            200,
            "a good request after a failure: {}",
            r.text()
        );
    }
}

#[test]
fn allow_and_deny_with_their_headers() {
    let s = Setup::start(vec![("main", authz("ext_authz", json!({})))]);
    // Allow: the check request is what Envoy's ext_authz sends.
    let r = s.get(
        "main",
        "/v1/models?limit=1",
        &[
            ("x-api-key", "k1"),
            ("cookie", "c=1"),
            ("authorization", "Bearer t"),
        ],
    );
    assert_eq!(r.status, 200);
    let check = s.auth.last().unwrap();
    assert_eq!(check.method, "GET");
    assert_eq!(check.path, "/check/v1/models?limit=1");
    assert_eq!(check.header("x-api-key"), Some("k1"));
    assert_eq!(check.header("authorization"), Some("Bearer t"));
    assert_eq!(check.header("x-gateway"), Some("ai-auth"));
    assert_eq!(check.header("cookie"), None);

    // Allow with headers: allowed ones overwrite the client's, others are dropped, append appends.
    s.auth.set_handler(|_| {
        Action::status(200)
            .with_header("x-user-id", "42")
            .with_header("x-internal", "secret-route")
            .with_header("x-trace", "from-authz")
            .with_header("x-ratelimit-remaining", "99")
    });
    let r = s.get(
        "main",
        "/v1/models",
        &[("x-user-id", "mallory"), ("x-trace", "from-client")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("99"),
        "allowed_client_headers_on_success"
    );
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.headers_named("x-user-id"), ["42"]);
    assert_eq!(seen.header("x-internal"), None);
    let mut traces = seen.headers_named("x-trace");
    traces.sort();
    assert!(
        traces.join(",").contains("from-authz") && traces.join(",").contains("from-client"),
        "{traces:?}"
    );

    // Spoofed identity, service silent about it: removed.
    s.auth.set_handler(|_| Action::status(200));
    let r = s.get(
        "main",
        "/v1/models",
        &[("x-user-id", "mallory"), ("x-plan", "enterprise")],
    );
    assert_eq!(r.status, 200);
    let seen = s.upstream.last().unwrap();
    assert_eq!(
        seen.header("x-user-id"),
        None,
        "native ext_authz would let this through"
    );
    assert_eq!(seen.header("x-plan"), None);

    // Denials keep their status, allowed headers and body; others are dropped.
    let before = s.upstream.count();
    for (status, header, value, body) in [
        (
            401,
            "www-authenticate",
            "Bearer realm=\"authz\"",
            "{\"error\":\"who are you\"}",
        ),
        (403, "x-deny-reason", "quota", "{\"error\":\"over quota\"}"),
        (302, "location", "https://login.example/", ""),
        (403, "x-deny-reason", "no body", ""),
    ] {
        s.auth.set_handler(move |_| Action::Respond {
            status,
            headers: vec![
                (header.into(), value.into()),
                ("x-internal-debug".into(), "leak".into()),
            ],
            body: body.as_bytes().to_vec(),
        });
        let r = s.get("main", "/v1/models", &[]);
        assert_eq!(r.status, status);
        assert_eq!(r.header(header), Some(value), "{status}");
        assert_eq!(r.header("x-internal-debug"), None, "{status}");
        if status == 403 && body.is_empty() {
            // A 4xx without a body gets ours, so the client's SDK has a reason to show.
            assert_eq!(error_of(&r).0, "access_denied", "{}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
        } else {
            assert_eq!(r.text(), body, "{status}");
        }
    }
    assert_eq!(
        s.upstream.count(),
        before,
        "a denied request never reaches the upstream"
    );
    assert_eq!(s.envoy.counter("ext_authz.denied"), 4);
    assert_eq!(s.envoy.counter("ext_authz.ok"), 3);

    // A runaway denial: 200 KiB of body and 50 headers. The client gets the
    // status and at most 64 KiB of the body; the filter keeps serving.
    s.auth.set_handler(|_| Action::Respond {
        status: 403,
        headers: (0..50)
            .map(|i| (format!("x-deny-reason-{i}"), "x".repeat(50)))
            .collect(),
        body: vec![b'z'; 200 * 1024],
    });
    let r = s.get("main", "/v1/models", &[]);
    assert_eq!(r.status, 403);
    assert!(r.body.len() <= 64 * 1024, "{} bytes", r.body.len());
    assert_eq!(s.envoy.counter("ext_authz.denied"), 5);
    s.good_request_passes("main");
}

#[test]
fn failures_under_failure_mode_allow_false_and_true() {
    let s = Setup::start(vec![
        ("closed", authz("ext_authz", json!({}))),
        (
            "open",
            authz(
                "ext_authz",
                json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true}),
            ),
        ),
        (
            "closed_503",
            authz("ext_authz", json!({"status_on_error": {"code": 503}})),
        ),
        ("dead_closed", authz("dead_authz", json!({}))),
        (
            "dead_open",
            authz(
                "dead_authz",
                json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true}),
            ),
        ),
        ("unknown_closed", authz("no_such_cluster", json!({}))),
        (
            "unknown_open",
            authz("no_such_cluster", json!({"failure_mode_allow": true})),
        ),
    ]);
    let failures: Vec<(&str, Action)> = vec![
        ("500", Action::status(500)),
        ("503", Action::status(503)),
        (
            "3 s hang against a 500 ms timeout",
            Action::Delay(Duration::from_secs(3), Box::new(Action::status(200))),
        ),
        ("dropped connection", Action::Close),
        (
            "garbage reply",
            Action::Garbage(b"\x00\x01not http at all\r\n\r\n".to_vec()),
        ),
    ];
    for (name, action) in failures {
        let a = action.clone();
        s.auth.set_handler(move |_| a.clone());
        let r = s.get("closed", "/v1/models", &[("x-user-id", "mallory")]);
        assert_eq!(r.status, 403, "{name}, fail closed: {}", r.text());
        assert_eq!(
            error_of(&r).0,
            "authorization_unavailable",
            "{name}: status_on_error carries our error body: {}",
            r.text()
        );
        let r = s.get("closed_503", "/v1/models", &[]);
        assert_eq!(r.status, 503, "{name}: status_on_error 503");
        s.upstream.clear();
        let r = s.get("open", "/v1/models", &[("x-user-id", "mallory")]);
        assert_eq!(r.status, 200, "{name}, fail open: {}", r.text());
        let seen = s.upstream.last().unwrap();
        assert_eq!(
            seen.header("x-envoy-auth-failure-mode-allowed"),
            Some("true"),
            "{name}"
        );
        assert_eq!(
            seen.header("x-user-id"),
            None,
            "{name}: a failing auth service never makes a spoofed identity valid"
        );
        s.good_request_passes("closed");
    }
    assert_eq!(
        s.get("dead_closed", "/v1/models", &[]).status,
        403,
        "unreachable service, fail closed"
    );
    let r = s.get("dead_open", "/v1/models", &[]);
    assert_eq!(r.status, 200, "unreachable service, fail open");
    assert_eq!(
        s.upstream
            .last()
            .unwrap()
            .header("x-envoy-auth-failure-mode-allowed"),
        Some("true")
    );
    assert_eq!(
        s.get("unknown_closed", "/v1/models", &[]).status,
        403,
        "unknown cluster, fail closed"
    );
    assert_eq!(
        s.get("unknown_open", "/v1/models", &[]).status,
        200,
        "unknown cluster, fail open"
    );
    assert!(s.envoy.counter("ext_authz.error") >= 17);
    assert!(s.envoy.counter("ext_authz.failure_mode_allowed") >= 7);
    s.good_request_passes("closed");
    s.good_request_passes("open");
}

#[test]
fn request_body_is_forwarded_when_configured() {
    let s = Setup::start(vec![
        ("body", body_authz(json!({"max_request_bytes": 64}))),
        (
            "partial",
            body_authz(json!({"max_request_bytes": 16, "allow_partial_message": true})),
        ),
        ("nobody", authz("ext_authz", json!({}))),
    ]);
    let port = s.envoy.port("body");
    let payload = br#"{"model":"gpt-4o-mini","messages":[]}"#;
    let r = http::request(
        port,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        payload,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let check = s.auth.last().unwrap();
    assert_eq!(check.method, "POST");
    assert_eq!(check.body, payload);
    assert_eq!(check.header("x-envoy-auth-partial-body"), Some("false"));
    // The upstream still gets the whole body.
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.body, payload);

    let big = vec![b'a'; 200];
    let before = s.upstream.count();
    let r = http::request(port, "POST", "/v1/chat/completions", &[], &big).unwrap();
    assert_eq!(
        r.status, 413,
        "past max_request_bytes without allow_partial_message"
    );
    // Denied with a body: the upstream saw nothing (the buffer filter held the headers).
    s.auth.set_handler(|_| Action::status(403));
    let r = http::request(port, "POST", "/v1/chat/completions", &[], payload).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        s.upstream.count(),
        before,
        "nothing reached the upstream before the decision"
    );
    s.auth.set_handler(|_| Action::status(200));

    let r = http::request(
        s.envoy.port("partial"),
        "POST",
        "/v1/chat/completions",
        &[],
        &big,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let check = s.auth.last().unwrap();
    assert_eq!(check.body.len(), 16);
    assert_eq!(check.header("x-envoy-auth-partial-body"), Some("true"));
    assert_eq!(s.upstream.last().unwrap().body.len(), 200);

    let r = http::request(
        s.envoy.port("nobody"),
        "POST",
        "/v1/chat/completions",
        &[],
        payload,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        s.auth.last().unwrap().body.is_empty(),
        "no body unless configured"
    );

    // A GET with no body still works with body buffering on.
    assert_eq!(http::get(port, "/v1/models", &[]).unwrap().status, 200);
}

#[test]
fn decision_cache_serves_repeats_and_never_caches_errors() {
    let cache = json!({"decision_cache": {"key_headers": ["x-api-key"], "ttl": "2s", "denied_ttl": "1s", "max_entries": 64}});
    let s = Setup::start(vec![("cached", authz("ext_authz", cache))]);
    s.auth.set_handler(|r| {
        if r.header("x-api-key") == Some("good") {
            Action::status(200).with_header("x-user-id", "7")
        } else {
            Action::status(403)
        }
    });
    for _ in 0..5 {
        let r = s.get("cached", "/v1/models", &[("x-api-key", "good")]);
        assert_eq!(r.status, 200);
        assert_eq!(
            s.upstream.last().unwrap().header("x-user-id"),
            Some("7"),
            "cached allows keep their headers"
        );
    }
    assert_eq!(
        s.auth.count(),
        1,
        "cached decisions do not reach the service"
    );
    assert_eq!(s.envoy.counter("ext_authz.decision_cache_hit"), 4);
    // A different path is a different decision.
    assert_eq!(
        s.get("cached", "/v1/chat/completions", &[("x-api-key", "good")])
            .status,
        200
    );
    assert_eq!(s.auth.count(), 2);
    // Denials are cached with their own short TTL.
    for _ in 0..3 {
        assert_eq!(
            s.get("cached", "/v1/models", &[("x-api-key", "bad")])
                .status,
            403
        );
    }
    assert_eq!(s.auth.count(), 3);
    // Expiry.
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(
        s.get("cached", "/v1/models", &[("x-api-key", "good")])
            .status,
        200
    );
    assert_eq!(
        s.auth.count(),
        4,
        "an expired decision asks the service again"
    );
    // Errors are never cached.
    s.auth.set_handler(|_| Action::status(503));
    for _ in 0..3 {
        assert_eq!(
            s.get("cached", "/v1/models", &[("x-api-key", "flaky")])
                .status,
            403
        );
    }
    assert_eq!(s.auth.count(), 7, "every request after an error asks again");
    s.auth.set_handler(|_| Action::status(200));
    assert_eq!(
        s.get("cached", "/v1/models", &[("x-api-key", "flaky")])
            .status,
        200
    );
}

#[test]
fn the_decision_cache_is_shared_by_the_worker_vms() {
    let cache = json!({"decision_cache": {"key_headers": ["x-api-key"], "ttl": "60s"}});
    let s = Setup::start_with(vec![("cached", authz("ext_authz", cache))], 2);
    let port = s.envoy.port("cached");
    // New connections until both workers have served some (Envoy's
    // per-worker listener stats say which), each one a cacheable request.
    let served_by = |worker: u32| s.envoy.connections_by_worker(worker);
    let mut sent = 0;
    while (served_by(0) == 0 || served_by(1) == 0) && sent < 200 {
        assert_eq!(
            http::get(port, "/v1/models", &[("x-api-key", "shared")])
                .unwrap()
                .status,
            200
        );
        sent += 1;
    }
    assert!(
        served_by(0) > 0 && served_by(1) > 0,
        "both workers must serve for this test ({sent} requests)"
    );
    assert_eq!(
        s.auth.count(),
        1,
        "one decision for both workers: the cache is in shared data ({sent} requests)"
    );
}

#[test]
fn chain_jwt_then_passthrough_then_credentials() {
    let key = TestKey::ed25519("k");
    let mut plugin = authz(
        "ext_authz",
        json!({"claims_to_headers": [{"claim_name": "sub", "header_name": "x-verified-sub"}]}),
    );
    plugin["jwt_authn"] = json!({
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD], "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    });
    plugin["upstream_credentials"] = json!({
        "backends": {"openai": {"scheme": "openai", "secret": {"inline_string": "sk-chain-test"}}},
        "routes": [{"backend": "openai"}]
    });
    let s = Setup::start(vec![("chain", plugin)]);
    let token = key.sign(&claims());
    // No JWT: the auth service is never asked.
    assert_eq!(s.get("chain", "/v1/models", &[]).status, 401);
    assert_eq!(s.auth.count(), 0);
    // Passthrough denies: no provider key is used.
    s.auth.set_handler(|_| Action::status(403));
    assert_eq!(
        s.get("chain", "/v1/models", &[("authorization", &bearer(&token))])
            .status,
        403
    );
    assert_eq!(s.upstream.count(), 0);
    // All pass: the service saw the verified subject, the provider only its key.
    s.auth.set_handler(|_| Action::status(200));
    let r = s.get(
        "chain",
        "/v1/models",
        &[
            ("authorization", &bearer(&token)),
            ("x-verified-sub", "mallory"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.auth.last().unwrap().header("x-verified-sub"),
        Some("alice")
    );
    let seen = s.upstream.last().unwrap();
    assert_eq!(
        seen.headers_named("authorization"),
        ["Bearer sk-chain-test"]
    );
    assert!(!seen.all_text().contains(&token));
}

#[test]
fn a_misbehaving_auth_service_gets_the_error_answer_and_the_vm_keeps_serving() {
    use ai_auth_testkit::misbehaving::{self, vm_failure_lines};
    // One worker: every request below runs in the same VM.
    let mut s = Setup::start(vec![
        ("closed", authz("ext_authz", json!({}))),
        (
            "closed_503",
            authz("ext_authz", json!({"status_on_error": {"code": 503}})),
        ),
        (
            "open",
            authz(
                "ext_authz",
                json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true}),
            ),
        ),
    ]);
    let timeout = Duration::from_millis(500); // as `authz` configures
    let mut seen = Vec::new();
    for kind in misbehaving::ALL {
        let name = kind.name();
        let action = kind.action(timeout, br#"{"allowed":true}"#);
        s.auth.set_handler(move |_| action.clone());
        let asked = s.auth.count();
        let closed = s.get("closed", "/v1/models", &[("x-user-id", "mallory")]);
        let closed_503 = s.get("closed_503", "/v1/models", &[]);
        s.upstream.clear();
        let open = s.get("open", "/v1/models", &[("x-user-id", "mallory")]);
        let allowed_header = s.upstream.last().and_then(|r| {
            r.header("x-envoy-auth-failure-mode-allowed")
                .map(String::from)
        });
        // The service records a request on its own thread, which may run
        // after Envoy has already answered (a timeout, a cut reply): wait
        // for it, bounded, on a loaded machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.auth.count() < asked + 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(s.auth.count(), asked + 3, "{name}: the service was asked");
        // Then a well-behaved service: the same VM must answer.
        s.auth.set_handler(|_| Action::status(200));
        let after = s.get("closed", "/v1/models", &[]);
        seen.push(format!(
            "{name}: {} {} {} then {}",
            closed.status, closed_503.status, open.status, after.status
        ));
        assert_eq!(closed.status, 403, "{name}: status_on_error (403)");
        assert_eq!(closed_503.status, 503, "{name}: status_on_error 503");
        assert_eq!(open.status, 200, "{name}: failure_mode_allow");
        assert_eq!(allowed_header.as_deref(), Some("true"), "{name}");
        assert_eq!(after.status, 200, "{name}: a good request after it");
    }
    eprintln!("observed: {seen:#?}");
    let log = s.envoy.stop();
    let failures = vm_failure_lines(&log);
    assert!(failures.is_empty(), "the VM failed: {failures:#?}");
}

/// Issue 9.2: the decision cache never gives one caller another's decision,
/// whichever way identity reaches the service (claim headers, the forwarded
/// token, an API key header, the body), and still serves the same caller.
/// Also: a client-sent claim header never reaches the upstream unverified.
#[test]
fn the_decision_cache_never_serves_one_callers_decision_to_another() {
    let key = TestKey::ed25519("k");
    let token_of = |sub: &str| key.sign(&claims_with(json!({ "sub": sub })));
    let tokens: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|who| (who.to_string(), token_of(who)))
        .collect();
    let jwt = |forward: bool| {
        json!({
            "providers": {"idp": {"issuer": ISS, "audiences": [AUD], "forward": forward,
                "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
        })
    };
    // The README's cache: keyed on x-api-key, which none of these callers
    // sends except on the listener that identifies callers by it.
    let cache =
        json!({"key_headers": ["x-api-key"], "ttl": "60s", "denied_ttl": "60s", "max_entries": 64});
    let mut claims_l = authz(
        "ext_authz",
        json!({"decision_cache": cache,
               "claims_to_headers": [{"claim_name": "sub", "header_name": "x-verified-sub"}]}),
    );
    claims_l["jwt_authn"] = jwt(false);
    let mut token_l = authz("ext_authz", json!({"decision_cache": cache}));
    token_l["jwt_authn"] = jwt(true);
    let apikey_cache =
        json!({"key_headers": ["x-tenant"], "ttl": "60s", "denied_ttl": "60s", "max_entries": 64});
    let apikey_l = authz("ext_authz", json!({"decision_cache": apikey_cache}));
    let mut body_l = body_authz(json!({"max_request_bytes": 1024}));
    body_l["ext_authz"]["decision_cache"] = cache.clone();
    let s = Setup::start(vec![
        ("claims", claims_l),
        ("token", token_l),
        ("apikey", apikey_l),
        ("body", body_l),
    ]);
    // The service names the caller from whatever it was shown; alice and
    // carol are allowed (each with her own x-user-id), bob is not.
    let by_token = tokens.clone();
    s.auth.set_handler(move |r| {
        let body = String::from_utf8_lossy(&r.body).to_string();
        let who = r
            .header("x-verified-sub")
            .map(str::to_string)
            .or_else(|| {
                let auth = r.header("authorization")?;
                by_token
                    .iter()
                    .find(|(_, t)| auth == format!("Bearer {t}"))
                    .map(|(w, _)| w.clone())
            })
            .or_else(|| {
                r.header("x-api-key")
                    .map(|k| k.trim_start_matches("key-").to_string())
            })
            .or_else(|| {
                ["alice", "bob", "carol"]
                    .iter()
                    .find(|w| body.contains(&format!("\"user\":\"{w}\"")))
                    .map(|w| w.to_string())
            });
        match who.as_deref() {
            Some(w @ ("alice" | "carol")) => Action::status(200).with_header("x-user-id", w),
            None if r.path.starts_with("/check/v1/anon") => Action::status(200),
            _ => Action::status(403),
        }
    });
    let mut wrong = Vec::new();
    // A client-sent header named like a claim header: overwritten by the
    // verified claim, removed when the claim is absent, before the service
    // and before the upstream.
    let mut spoof = |path: &str, token: &str, sent: &str, want: Option<&str>| {
        let r = s.get(
            "claims",
            path,
            &[("authorization", &bearer(token)), ("x-verified-sub", sent)],
        );
        let service = s
            .auth
            .last()
            .unwrap()
            .headers_named("x-verified-sub")
            .join(",");
        let upstream = s
            .upstream
            .last()
            .map(|u| u.headers_named("x-verified-sub").join(","));
        let seen = format!(
            "client sent x-verified-sub {sent:?} (claim {want:?}): {} service saw {service:?}, upstream saw {upstream:?}",
            r.status
        );
        if r.status != 200
            || service != want.unwrap_or("")
            || upstream.as_deref() != Some(want.unwrap_or(""))
        {
            wrong.push(seen.clone());
        }
        eprintln!("observed: {seen}");
    };
    s.upstream.clear();
    spoof("/v1/models", &tokens[0].1, "mallory", Some("alice"));
    let no_sub = key.sign(&claims_with(json!({"sub": null})));
    s.upstream.clear();
    spoof("/v1/anon", &no_sub, "alice", None);
    let mut observed = Vec::new();
    for listener in ["claims", "token", "apikey", "body"] {
        let asked_before = s.auth.count();
        let mut seen_here = Vec::new();
        for (who, token) in &tokens {
            for round in 0..2 {
                let bearer_token = bearer(token);
                let api_key = format!("key-{who}");
                let body = format!("{{\"user\":\"{who}\",\"n\":1}}");
                s.upstream.clear();
                let r = match listener {
                    "claims" | "token" => s.get(
                        listener,
                        "/v1/chat/completions",
                        &[("authorization", &bearer_token)],
                    ),
                    "apikey" => s.get(listener, "/v1/chat/completions", &[("x-api-key", &api_key)]),
                    _ => http::request(
                        s.envoy.port(listener),
                        "POST",
                        "/v1/chat/completions",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    )
                    .unwrap(),
                };
                let user_id = s
                    .upstream
                    .last()
                    .map(|u| u.headers_named("x-user-id").join(","))
                    .unwrap_or_default();
                seen_here.push(format!("{who}#{round}={} x-user-id={user_id:?}", r.status));
                let allowed = who != "bob";
                if r.status != if allowed { 200 } else { 403 } {
                    wrong.push(format!("{listener}: {who} round {round} got {}", r.status));
                }
                // Body mode edits no request header after the answer.
                if allowed && r.status == 200 && listener != "body" && user_id != *who {
                    wrong.push(format!(
                        "{listener}: {who} round {round} reached the upstream as {user_id:?}"
                    ));
                }
            }
        }
        let asked = s.auth.count() - asked_before;
        observed.push(format!(
            "{listener}: {seen_here:?}; service asked {asked} times for 6 requests"
        ));
        if asked != 3 {
            wrong.push(format!(
                "{listener}: service asked {asked} times, want 3 (one per caller, repeats cached)"
            ));
        }
    }
    eprintln!("observed: {observed:#?}");
    assert!(wrong.is_empty(), "{wrong:#?}\n{observed:#?}");
}

/// Envoy's top-level `allowed_headers` / `disallowed_headers` and
/// `encode_raw_headers` over HTTP: native `ext_authz` and ours, same
/// settings, same auth service; the check requests carry the same client
/// headers, the same way (Envoy 1.40: the top-level list replaces
/// `authorization_request.allowed_headers`, case-sensitive; disallowed
/// leaves out `authorization` too; repeats joined with `,`, or each its own
/// line with `encode_raw_headers`).
#[test]
fn top_level_header_lists_and_raw_headers_as_native_sends_them() {
    let lists = json!({
        "allowed_headers": {"patterns": [{"prefix": "x-api"}, {"prefix": "x-d"},
            {"exact": "x-multi"}, {"exact": "X-Tenant-Id"},
            {"exact": "Accept", "ignore_case": true}]},
        "disallowed_headers": {"patterns": [{"exact": "authorization"},
            {"safe_regex": {"regex": "x-drop-.*"}}]}
    });
    let raw = json!({"encode_raw_headers": true,
        "allowed_headers": {"patterns": [{"exact": "x-multi"}]}});
    let joined = json!({"allowed_headers": {"patterns": [{"exact": "x-multi"}]}});
    let cases = [("lists", lists), ("raw", raw), ("joined", joined)];
    let service = json!({"server_uri": {"uri": "http://authz.local", "cluster": "ext_authz",
        "timeout": "0.5s"}, "path_prefix": "/check"});
    let mut listeners = Vec::new();
    for (name, extra) in &cases {
        let mut native = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": service});
        let mut ours = json!({"http_service": service});
        for (k, v) in extra.as_object().unwrap() {
            native[k] = v.clone();
            ours[k] = v.clone();
        }
        let native = json!({"name": "envoy.filters.http.ext_authz", "typed_config": native});
        let ours = bootstrap::wasm_filter(&json!({ "ext_authz": ours }));
        for (side, filter) in [("native", native), ("ours", ours)] {
            listeners.push(bootstrap::listener(
                &format!("{name}_{side}"),
                vec![filter],
                vec![bootstrap::route_to("upstream")],
            ));
        }
    }
    let auth = Server::start(|_| Action::status(200));
    let Gateway {
        envoy,
        upstream: _upstream,
    } = Gateway::start_listeners(
        listeners,
        vec![bootstrap::cluster("ext_authz", auth.port)],
        &Options::default(),
    );
    let sent = [
        ("authorization", "Bearer t"),
        ("x-api-key", "k"),
        ("x-tenant-id", "acme"),
        ("accept", "application/json"),
        ("x-drop-me", "d"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("user-agent", "ua"),
    ];
    // The client's headers as the service got them, in order.
    let seen = |listener: &str| -> Vec<(String, String)> {
        auth.clear();
        let r = http::get(envoy.port(listener), "/v1/chat", &sent).unwrap();
        assert_eq!(r.status, 200, "{listener}: {}", r.text());
        let check = auth
            .last()
            .unwrap_or_else(|| panic!("{listener}: no check"));
        assert_eq!(check.path, "/check/v1/chat", "{listener}");
        check
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| sent.iter().any(|(n, _)| n == k))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let expected = [
        (
            "lists",
            pairs(&[
                ("x-api-key", "k"),
                ("accept", "application/json"),
                ("x-multi", "a,b"),
            ]),
        ),
        (
            "raw",
            pairs(&[
                ("authorization", "Bearer t"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ]),
        ),
        (
            "joined",
            pairs(&[("authorization", "Bearer t"), ("x-multi", "a,b")]),
        ),
    ];
    for (name, want) in expected {
        let (native, ours) = (
            seen(&format!("{name}_native")),
            seen(&format!("{name}_ours")),
        );
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        // Native's order is its map's; only what and how is compared.
        assert_eq!(sorted(native.clone()), sorted(want), "{name}: native");
        assert_eq!(sorted(ours), sorted(native), "{name}: ours");
    }
}
