//! Passthrough auth over gRPC in the real Envoy, against a real gRPC auth
//! server (Python grpcio, scripted per test): Envoy's
//! `envoy.service.auth.v3.Authorization/Check` from inside the filter.

use crate::support::*;
use ai_auth_testkit::grpc_authz::GrpcAuthServer;
use serde_json::{json, Value};

fn grpc_authz(cluster: &str, extra: Value) -> Value {
    let mut v = json!({
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": "0.5s"}
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    json!({ "ext_authz": v })
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Setup {
    envoy: Envoy,
    auth: GrpcAuthServer,
    upstream: Server,
}

impl Setup {
    fn start(listeners: Vec<(&str, Value)>) -> Setup {
        let auth = GrpcAuthServer::start().unwrap_or_else(|e| panic!("{e}"));
        let Gateway { envoy, upstream } = Gateway::start_listeners(
            wasm_listeners(listeners, &[]),
            vec![
                bootstrap::h2_cluster("authz_grpc", auth.port),
                bootstrap::h2_cluster("dead_grpc", dead_port()),
            ],
            &Options::default(),
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
}

fn header_option(key: &str, value: &str, action: i32) -> Value {
    json!({"header": {"key": key, "value": value}, "append_action": action})
}

#[test]
fn grpc_check_allows_and_denies() {
    let s = Setup::start(vec![("main", grpc_authz("authz_grpc", json!({})))]);
    // Allow, with a header for the upstream.
    s.auth
        .allow_with(json!({"headers": [header_option("x-user-id", "42", 2)]}));
    let r = s.get(
        "main",
        "/v1/models?limit=1",
        &[("x-api-key", "k1"), ("x-user-id", "spoofed")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.upstream.last().unwrap().headers_named("x-user-id"),
        ["42"]
    );
    // The CheckRequest as Envoy builds it.
    let check = s.auth.last().unwrap();
    let http_req = &check["attributes"]["request"]["http"];
    assert_eq!(http_req["method"], "GET");
    assert_eq!(http_req["path"], "/v1/models?limit=1");
    assert_eq!(http_req["headers"]["x-api-key"], "k1");
    assert_eq!(http_req["headers"][":path"], "/v1/models?limit=1");
    assert_eq!(http_req["headers"][":method"], "GET");
    assert_eq!(http_req["protocol"], "HTTP/1.1");
    assert!(http_req["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        !http_req["id"].as_str().unwrap_or_default().is_empty(),
        "{check}"
    );
    assert_eq!(
        check["attributes"]["source"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    assert!(
        check["attributes"]["request"]["time"].is_string(),
        "{check}"
    );

    // Denied with the service's status, headers and body.
    s.auth.script(&json!({"response": {
        "status": {"code": 7},
        "denied_response": {"status": {"code": 401},
            "headers": [{"header": {"key": "www-authenticate", "value": "Bearer realm=\"authz\""}}],
            "body": "{\"error\":\"who are you\"}"}}}));
    let before = s.upstream.count();
    let r = s.get("main", "/v1/models", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"authz\""));
    assert_eq!(r.text(), "{\"error\":\"who are you\"}");
    // Denied without details: 403 (with our body, an SDK has a reason to show).
    s.auth
        .script(&json!({"response": {"status": {"code": 16}}}));
    let r = s.get("main", "/v1/models", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r).0, "access_denied", "{}", r.text());
    assert_eq!(
        s.upstream.count(),
        before,
        "a denial never reaches the upstream"
    );
    assert_eq!(s.envoy.counter("ext_authz.ok"), 1);
    assert_eq!(s.envoy.counter("ext_authz.denied"), 2);
}

#[test]
fn grpc_failures_take_the_error_path_and_the_vm_keeps_serving() {
    use ai_auth_testkit::misbehaving::vm_failure_lines;
    let open = json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true});
    let mut s = Setup::start(vec![
        ("closed", grpc_authz("authz_grpc", json!({}))),
        (
            "closed_503",
            grpc_authz("authz_grpc", json!({"status_on_error": {"code": 503}})),
        ),
        ("open", grpc_authz("authz_grpc", open.clone())),
        ("dead", grpc_authz("dead_grpc", json!({}))),
        ("dead_open", grpc_authz("dead_grpc", open.clone())),
        ("unknown", grpc_authz("no_such_cluster", json!({}))),
        ("unknown_open", grpc_authz("no_such_cluster", open)),
    ]);
    let mut seen = Vec::new();
    let scripts = [
        (
            "unavailable",
            json!({"abort": {"code": 14, "details": "down\nforged log line"}}),
        ),
        (
            "internal",
            json!({"abort": {"code": 13, "details": "boom"}}),
        ),
        ("slow", json!({"delay_ms": 1200})),
        ("not protobuf", json!({"raw_b64": "//////8="})),
        ("truncated", json!({"raw_b64": "CgIIAB"})),
        (
            "huge",
            json!({"raw_b64": base64_of(&vec![0x0a; 300 * 1024])}),
        ),
    ];
    for (name, script) in &scripts {
        s.auth.script(script);
        let closed = s.get("closed", "/v1/models", &[]);
        let closed_503 = s.get("closed_503", "/v1/models", &[]);
        s.upstream.clear();
        let open = s.get("open", "/v1/models", &[]);
        let allowed_header = s.upstream.last().and_then(|r| {
            r.header("x-envoy-auth-failure-mode-allowed")
                .map(String::from)
        });
        seen.push(format!(
            "{name}: {} {} {} {allowed_header:?}",
            closed.status, closed_503.status, open.status
        ));
        assert_eq!(closed.status, 403, "{name}: status_on_error");
        assert_eq!(error_of(&closed).0, "authorization_unavailable", "{name}");
        assert_eq!(closed_503.status, 503, "{name}");
        assert_eq!(open.status, 200, "{name}: failure_mode_allow");
        assert_eq!(allowed_header.as_deref(), Some("true"), "{name}");
        s.auth.script(&json!({}));
        assert_eq!(
            s.get("closed", "/v1/models", &[]).status,
            200,
            "{name}: then a good one"
        );
    }
    for (closed, open) in [("dead", "dead_open"), ("unknown", "unknown_open")] {
        let c = s.get(closed, "/v1/models", &[]);
        let o = s.get(open, "/v1/models", &[]);
        seen.push(format!("{closed}: {} {}", c.status, o.status));
        assert_eq!(c.status, 403, "{closed}");
        assert_eq!(o.status, 200, "{open}");
    }
    eprintln!("observed: {seen:#?}");
    assert_eq!(s.get("closed", "/v1/models", &[]).status, 200);
    let log = s.envoy.stop();
    let failures = vm_failure_lines(&log);
    assert!(failures.is_empty(), "the VM failed: {failures:#?}");
    assert!(
        !log.contains("forged log line\n"),
        "remote text reached the log raw"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The decision cache over gRPC: keyed on the CheckRequest as sent (less
/// the request id, time and client port), so the same caller hits and no
/// caller gets another's decision.
#[test]
fn grpc_decision_cache_separates_callers_and_serves_repeats() {
    let s = Setup::start(vec![(
        "cached",
        grpc_authz(
            "authz_grpc",
            json!({"decision_cache": {"ttl": "60s", "denied_ttl": "60s"}}),
        ),
    )]);
    let allow = |who: &str| {
        json!({"if_header": ["x-api-key", who], "response": {"status": {"code": 0},
            "ok_response": {"headers": [header_option("x-user-id", who, 2)]}}})
    };
    s.auth.script(&json!({
        "rules": [allow("alice"), allow("carol")],
        "response": {"status": {"code": 7}}
    }));
    let mut seen = Vec::new();
    for who in ["alice", "bob", "carol"] {
        for round in 0..2 {
            s.upstream.clear();
            let r = s.get("cached", "/v1/chat/completions", &[("x-api-key", who)]);
            let user = s
                .upstream
                .last()
                .map(|u| u.headers_named("x-user-id").join(","));
            seen.push(format!("{who}#{round}={} {user:?}", r.status));
            if who == "bob" {
                assert_eq!(r.status, 403, "{seen:?}");
            } else {
                assert_eq!(r.status, 200, "{seen:?}");
                assert_eq!(user.as_deref(), Some(who), "{seen:?}");
            }
        }
    }
    eprintln!("observed: {seen:?}, service asked {}", s.auth.count());
    assert_eq!(s.auth.count(), 3, "one call per caller: {seen:?}");
    assert_eq!(s.envoy.counter("ext_authz.decision_cache_hit"), 3);
}

/// The whole `OkHttpResponse` as Envoy applies it, dynamic metadata in
/// filter state (an access log reads it), and the chain with gRPC in the
/// middle: JWT, then the gRPC check (claims in `metadata_context`), then
/// the provider key.
#[test]
fn grpc_ok_response_edits_metadata_and_the_whole_chain() {
    let key = TestKey::ed25519("k");
    let mut chain = grpc_authz(
        "authz_grpc",
        json!({"context_extensions": {"gateway": "ai"},
               "rules": [{"match": {"prefix": "/v1/chat"}, "context_extensions": {"route": "chat"}}],
               "claims_to_headers": [{"claim_name": "sub", "header_name": "x-verified-sub"}]}),
    );
    chain["jwt_authn"] = json!({
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD], "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    });
    chain["upstream_credentials"] = json!({
        "backends": {"openai": {"scheme": "openai", "secret": {"inline_string": "sk-grpc-chain"}}},
        "routes": [{"backend": "openai"}]
    });
    let log_path =
        std::env::temp_dir().join(format!("ai-auth-grpc-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    let auth = GrpcAuthServer::start().unwrap_or_else(|e| panic!("{e}"));
    let mut listener = bootstrap::listener(
        "chain",
        vec![bootstrap::wasm_filter(&chain)],
        vec![bootstrap::route_to("upstream")],
    );
    access_log(
        &mut listener,
        &log_path,
        "metadata=%FILTER_STATE(wasm.ai_auth.ext_authz.dynamic_metadata:PLAIN)%\n",
    );
    let Gateway { envoy, upstream } = Gateway::start_listeners(
        vec![listener],
        vec![bootstrap::h2_cluster("authz_grpc", auth.port)],
        &Options::default(),
    );
    let port = envoy.port("chain");
    auth.script(&json!({"response": {
        "status": {"code": 0},
        "ok_response": {
            "headers": [
                header_option("x-user-id", "42", 2),
                header_option("x-trace", "from-authz", 0),
                header_option("x-plan", "pro", 1),
                header_option("x-tier", "gold", 1),
                header_option("x-overwrite", "new", 3),
                header_option("x-missing", "never", 3),
                {"header": {"key": "x-list", "value": "c"}, "append": true}
            ],
            "headers_to_remove": ["x-remove-me", "host", ":method"],
            "response_headers_to_add": [header_option("x-ratelimit-remaining", "99", 0)],
            "query_parameters_to_set": [{"key": "api-version", "value": "2024-06-01"}],
            "query_parameters_to_remove": ["debug"]
        },
        "dynamic_metadata": {"plan": "pro", "limits": {"rpm": 60}}
    }}));
    let token = key.sign(&claims());
    let r = http::get(
        port,
        "/v1/chat/completions?debug=1&keep=yes&api-version=old",
        &[
            ("authorization", &bearer(&token)),
            ("x-trace", "from-client"),
            ("x-plan", "free"),
            ("x-overwrite", "old"),
            ("x-list", "a"),
            ("x-remove-me", "secret"),
            ("x-verified-sub", "mallory"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    let seen = upstream.last().unwrap();
    // The query as Envoy rebuilds it: sorted by name.
    assert_eq!(
        seen.path,
        "/v1/chat/completions?api-version=2024-06-01&keep=yes"
    );
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.headers_named("x-user-id"), ["42"]);
    // As Envoy 1.40: `append_action` is not read on ok_response.headers;
    // without `append: true` each overwrites or adds.
    assert_eq!(seen.headers_named("x-trace"), ["from-authz"]);
    assert_eq!(seen.headers_named("x-plan"), ["pro"]);
    assert_eq!(seen.headers_named("x-tier"), ["gold"]);
    assert_eq!(seen.headers_named("x-overwrite"), ["new"]);
    assert_eq!(seen.headers_named("x-missing"), ["never"]);
    assert_eq!(seen.headers_named("x-list"), ["a,c"]);
    assert!(seen.header("x-remove-me").is_none());
    assert!(seen.header("host").unwrap().starts_with("127.0.0.1"));
    assert_eq!(
        seen.headers_named("authorization"),
        ["Bearer sk-grpc-chain"]
    );
    assert!(!seen.all_text().contains(&token));
    // What the service was shown: claims as jwt_authn metadata, the claim
    // header verified, context extensions merged.
    let check = auth.last().unwrap();
    let a = &check["attributes"];
    assert_eq!(
        a["metadata_context"]["filter_metadata"]["envoy.filters.http.jwt_authn"]["idp"]["sub"],
        "alice",
        "{check}"
    );
    assert_eq!(a["request"]["http"]["headers"]["x-verified-sub"], "alice");
    assert_eq!(
        a["context_extensions"],
        json!({"gateway": "ai", "route": "chat"})
    );
    // Envoy writes the access log file on its flush interval (1 s by
    // default), not at once: wait for the line, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut line = String::new();
    while line.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        line = log.lines().last().unwrap_or_default().to_string();
    }
    drop(envoy);
    let metadata: Value = serde_json::from_str(line.trim_start_matches("metadata="))
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(metadata, json!({"plan": "pro", "limits": {"rpm": 60.0}}));
}
