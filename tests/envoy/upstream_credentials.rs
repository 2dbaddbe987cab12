//! Upstream credentials in the real Envoy: the mock provider records what it
//! receives; it must see exactly the backend's credential and none of the
//! client's, and no secret may reach the log or the client.

use crate::support::*;
use serde_json::{json, Value};

const OPENAI: &str = "sk-test-openai-5f1c9a";
const AZURE: &str = "azure-test-key-77d2e0";
const ANTHROPIC: &str = "sk-ant-test-91b3c4";
const GEMINI: &str = "AIza-test-gemini-0a8d";
const CUSTOM: &str = "custom-test-secret-3e6f";
const ACME: &str = "sk-tenant-acme-11aa";
const SHARED: &str = "sk-tenant-shared-22bb";
const ALL_SECRETS: [&str; 7] = [OPENAI, AZURE, ANTHROPIC, GEMINI, CUSTOM, ACME, SHARED];

fn plugin(key: &TestKey) -> Value {
    json!({
        "jwt_authn": {
            "providers": {"idp": {"issuer": ISS, "audiences": [AUD],
                                  "local_jwks": {"inline_string": jwks(&[key]).to_string()}}},
            "rules": [
                {"match": {"prefix": "/tenant/"}, "requires": {"provider_name": "idp"}},
                {"match": {"prefix": "/strict/"}, "requires": {"provider_name": "idp"}},
                {"match": {"prefix": "/"}}
            ]
        },
        "upstream_credentials": {
            "backends": {
                "openai": {"scheme": "openai", "secret": {"environment_variable": "OPENAI_API_KEY"}},
                "azure": {"scheme": "azure_api_key", "secret": {"environment_variable": "AZURE_OPENAI_KEY"}},
                "anthropic": {"scheme": "anthropic", "secret": {"environment_variable": "ANTHROPIC_API_KEY"}},
                "gemini": {"scheme": "gemini", "secret": {"inline_string": GEMINI}},
                "custom": {"scheme": "header", "header": "x-backend-token", "prefix": "Token ", "secret": {"inline_string": CUSTOM}},
                "tenants": {"scheme": "openai", "secret_by_claim": {"claim": "tenant",
                    "secrets": {"acme": {"environment_variable": "ACME_KEY"}}, "default": {"inline_string": SHARED}}},
                "strict": {"scheme": "openai", "secret_by_claim": {"claim": "tenant",
                    "secrets": {"acme": {"environment_variable": "ACME_KEY"}}}}
            },
            "routes": [
                {"match": {"prefix": "/openai/"}, "backend": "openai"},
                {"match": {"prefix": "/azure/"}, "backend": "azure"},
                {"cluster": "anthropic_cluster", "backend": "anthropic"},
                {"match": {"prefix": "/gemini/"}, "backend": "gemini"},
                {"match": {"prefix": "/custom/"}, "backend": "custom"},
                {"match": {"prefix": "/tenant/"}, "backend": "tenants"},
                {"match": {"prefix": "/strict/"}, "backend": "strict"},
                {"match": {"prefix": "/health"}, "pass_through": true}
            ],
            "strip_cookies": ["session"]
        }
    })
}

struct Setup {
    envoy: Envoy,
    provider: Server,
    access_log: std::path::PathBuf,
    key: TestKey,
}

fn start() -> Setup {
    let key = TestKey::ed25519("k");
    let provider = Server::recorder();
    let access_log_path = std::env::temp_dir().join(format!(
        "ai-auth-access-{}-{}.log",
        std::process::id(),
        now()
    ));
    let filter = bootstrap::wasm_filter_with_env(
        &plugin(&key),
        &[
            ("OPENAI_API_KEY", OPENAI),
            ("AZURE_OPENAI_KEY", AZURE),
            ("ANTHROPIC_API_KEY", ANTHROPIC),
            ("ACME_KEY", ACME),
        ],
    );
    let routes = vec![
        json!({"match": {"prefix": "/anthropic/"}, "route": {"cluster": "anthropic_cluster"}}),
        bootstrap::route_to("upstream"),
    ];
    let mut listener = bootstrap::listener("main", vec![filter], routes);
    access_log(
        &mut listener,
        &access_log_path,
        "%REQ(:PATH)% backend=%FILTER_STATE(wasm.ai_auth.upstream_backend:PLAIN)%\n",
    );
    let boot = bootstrap::bootstrap(
        vec![listener],
        vec![
            bootstrap::cluster("upstream", provider.port),
            bootstrap::cluster("anthropic_cluster", provider.port),
        ],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        envoy,
        provider,
        access_log: access_log_path,
        key,
    }
}

/// (shape name, headers, query string)
type ClientShape = (&'static str, Vec<(&'static str, String)>, &'static str);

/// Client credential shapes, each sent alone and all together.
fn client_shapes() -> Vec<ClientShape> {
    let big = format!("Bearer {}", "c".repeat(8 * 1024));
    vec![
        (
            "authorization lower case",
            vec![("authorization", "Bearer client-token-1".into())],
            "",
        ),
        (
            "Authorization upper case",
            vec![("Authorization", "Bearer client-token-2".into())],
            "",
        ),
        (
            "two Authorization lines",
            vec![
                ("authorization", "Bearer client-a".into()),
                ("Authorization", "Bearer client-b".into()),
            ],
            "",
        ),
        (
            "Basic",
            vec![("authorization", "Basic Y2xpZW50OnNlY3JldA==".into())],
            "",
        ),
        ("8 KiB value", vec![("authorization", big)], ""),
        (
            "forged provider-looking value",
            vec![("authorization", "Bearer sk-proj-client-forged-000".into())],
            "",
        ),
        (
            "Proxy-Authorization",
            vec![("proxy-authorization", "Basic client-proxy".into())],
            "",
        ),
        (
            "x-api-key",
            vec![("x-api-key", "client-x-api-key".into())],
            "",
        ),
        ("api-key", vec![("api-key", "client-api-key".into())], ""),
        (
            "x-goog-api-key",
            vec![("x-goog-api-key", "client-goog".into())],
            "",
        ),
        (
            "session cookie",
            vec![("cookie", "theme=dark; session=client-session".into())],
            "",
        ),
        ("?access_token=", vec![], "access_token=client-at"),
        ("?key=", vec![], "key=client-query-key"),
    ]
}

#[test]
fn each_scheme_sees_exactly_its_credential_and_none_of_the_clients() {
    let mut s = start();
    let port = s.envoy.port("main");
    let expectations: [(&str, &str, String, &str); 5] = [
        (
            "/openai/v1/chat/completions",
            "authorization",
            format!("Bearer {OPENAI}"),
            "openai",
        ),
        (
            "/azure/openai/deployments/gpt/chat/completions",
            "api-key",
            AZURE.to_string(),
            "azure",
        ),
        (
            "/anthropic/v1/messages",
            "x-api-key",
            ANTHROPIC.to_string(),
            "anthropic",
        ),
        (
            "/gemini/v1beta/models/gemini:generateContent",
            "x-goog-api-key",
            GEMINI.to_string(),
            "gemini",
        ),
        (
            "/custom/v1/x",
            "x-backend-token",
            format!("Token {CUSTOM}"),
            "custom",
        ),
    ];
    let carriers = [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-backend-token",
    ];
    let mut responses = Vec::new();
    for (path, header, value, backend) in &expectations {
        let mut shapes = client_shapes();
        // And every shape at once.
        let all_headers: Vec<(&str, String)> = shapes
            .iter()
            .flat_map(|(_, h, _)| h.clone())
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
            .chain([("authorization", "Bearer client-all".to_string())])
            .collect();
        shapes.push((
            "all shapes together",
            all_headers,
            "key=client-query-key&access_token=client-at",
        ));
        for (shape, headers, query) in &shapes {
            let target = if query.is_empty() {
                format!("{path}?x=1")
            } else {
                format!("{path}?x=1&{query}")
            };
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = http::request(port, "POST", &target, &h, b"{\"model\":\"m\"}").unwrap();
            assert_eq!(r.status, 200, "{backend} / {shape}: {}", r.text());
            let seen = s.provider.last().unwrap();
            assert_eq!(
                seen.headers_named(header),
                [value.as_str()],
                "{backend} / {shape}"
            );
            for carrier in carriers {
                if carrier != *header {
                    assert_eq!(
                        seen.header(carrier),
                        None,
                        "{backend} / {shape}: {carrier} reached the provider"
                    );
                }
            }
            assert_eq!(
                seen.path,
                format!("{path}?x=1"),
                "{backend} / {shape}: credential query parameters stripped"
            );
            let text = seen.all_text();
            assert!(
                !text.contains("client-"),
                "{backend} / {shape}: a client credential reached the provider:\n{text}"
            );
            assert!(
                !text.contains("cccccccc"),
                "{backend} / {shape}: the 8 KiB token reached the provider"
            );
            if *backend == "anthropic" {
                assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
            }
            responses.push(r);
        }
    }
    // The client's anthropic-version is kept.
    let r = http::request(
        port,
        "POST",
        "/anthropic/v1/messages",
        &[("anthropic-version", "2024-10-22")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        s.provider.last().unwrap().header("anthropic-version"),
        Some("2024-10-22")
    );
    assert_eq!(
        s.envoy.counter("upstream_credentials.injected") as usize,
        responses.len() + 1
    );
    check_no_secret_leaked(&mut s, &responses);
    // The access log names the backend, never the key.
    let log = std::fs::read_to_string(&s.access_log).unwrap_or_default();
    assert!(
        log.contains("/openai/v1/chat/completions?x=1 backend=openai"),
        "access log:\n{log}"
    );
    assert!(
        log.contains("/anthropic/v1/messages?x=1 backend=anthropic"),
        "access log:\n{log}"
    );
}

fn check_no_secret_leaked(s: &mut Setup, responses: &[Response]) {
    // Stopping Envoy flushes its log.
    let log = s.envoy.stop();
    assert!(
        log.contains("upstream_credentials: backend="),
        "debug logging must be on for this check"
    );
    for secret in ALL_SECRETS {
        assert!(!log.contains(secret), "secret found in Envoy's log");
        for r in responses {
            let text = format!("{:?} {}", r.headers, r.text());
            assert!(
                !text.contains(secret),
                "secret found in a response to the client"
            );
        }
    }
    let access = std::fs::read_to_string(&s.access_log).unwrap_or_default();
    for secret in ALL_SECRETS {
        assert!(!access.contains(secret), "secret found in the access log");
    }
}

#[test]
fn per_tenant_keys_from_the_verified_jwt() {
    let mut s = start();
    let port = s.envoy.port("main");
    let mut responses = Vec::new();
    let cases = [
        (
            "/tenant/v1/chat",
            json!({"tenant": "acme"}),
            200,
            Some(ACME),
        ),
        (
            "/tenant/v1/chat",
            json!({"tenant": "initech"}),
            200,
            Some(SHARED),
        ),
        ("/tenant/v1/chat", json!({}), 200, Some(SHARED)),
        (
            "/strict/v1/chat",
            json!({"tenant": "acme"}),
            200,
            Some(ACME),
        ),
        ("/strict/v1/chat", json!({"tenant": "initech"}), 403, None),
    ];
    for (path, patch, status, key) in cases {
        let token = s.key.sign(&claims_with(patch.clone()));
        s.provider.clear();
        let r = http::request(
            port,
            "POST",
            path,
            &[("authorization", &bearer(&token))],
            b"{}",
        )
        .unwrap();
        assert_eq!(r.status, status, "{path} {patch}: {}", r.text());
        match key {
            Some(k) => {
                let seen = s.provider.last().unwrap();
                assert_eq!(
                    seen.headers_named("authorization"),
                    [format!("Bearer {k}").as_str()]
                );
                assert!(
                    !seen.all_text().contains(&token),
                    "the client's JWT reached the provider"
                );
            }
            None => {
                assert_eq!(s.provider.count(), 0);
                assert_eq!(error_of(&r).0, "access_denied");
            }
        }
        responses.push(r);
    }
    // A JWT that fails is refused before any credential is chosen.
    let r = http::request(
        port,
        "POST",
        "/tenant/v1/chat",
        &[("authorization", "Bearer nope")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 401);
    responses.push(r);
    check_no_secret_leaked(&mut s, &responses);
}

#[test]
fn pass_through_route_and_unknown_route() {
    let s = start();
    let port = s.envoy.port("main");
    let r = http::get(
        port,
        "/health",
        &[("authorization", "Bearer client-health")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        s.provider.last().unwrap().header("authorization"),
        Some("Bearer client-health")
    );
    s.provider.clear();
    let r = http::get(port, "/unknown/x", &[]).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(error_of(&r).0, "access_denied");
    assert_eq!(s.provider.count(), 0);
}

#[test]
fn a_missing_environment_variable_refuses_the_configuration() {
    let provider = Server::echo();
    let filter = bootstrap::wasm_filter_with_env(
        &plugin(&TestKey::ed25519("k")),
        &[
            ("OPENAI_API_KEY", OPENAI),
            ("ANTHROPIC_API_KEY", ANTHROPIC),
            ("ACME_KEY", ACME),
        ],
    );
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![filter],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![bootstrap::cluster("upstream", provider.port)],
    );
    let log = Envoy::start_expect_failure(&boot).unwrap();
    assert!(
        log.contains("field `upstream_credentials.backends.azure.secret.environment_variable`: environment variable `AZURE_OPENAI_KEY` is not set"),
        "{log}"
    );
    assert!(!log.contains(OPENAI), "a secret reached the log");
}

#[test]
fn oauth2_client_credentials_tokens_are_fetched_shared_and_injected() {
    use ai_auth_testkit::http::Action;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const CLIENT_SECRET: &str = "entra-client-secret-7f3a";
    let issued = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (count, healthy) = (Arc::clone(&issued), Arc::clone(&up));
    let entra = Server::start(move |r| {
        let body = String::from_utf8_lossy(&r.body).to_string();
        let valid = r.method == "POST"
            && r.path == "/tenant-1/oauth2/v2.0/token"
            && body.contains("grant_type=client_credentials")
            && body.contains("scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default")
            && body.contains(&format!("client_secret={CLIENT_SECRET}"));
        if !healthy.load(Ordering::SeqCst) {
            return Action::status(503);
        }
        if !valid {
            return Action::json(401, &json!({"error": "invalid_client"}));
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Action::json(
            200,
            &json!({"access_token": format!("entra-token-{n}"), "token_type": "Bearer", "expires_in": 3600}),
        )
    });
    let provider = Server::recorder();
    let plugin = json!({"upstream_credentials": {
        "backends": {"azure": {"scheme": "bearer", "oauth2": {
            "token_uri": {"uri": "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token", "cluster": "entra", "timeout": "2s"},
            "client_id": "gateway-app",
            "client_secret": {"environment_variable": "ENTRA_CLIENT_SECRET"},
            "scopes": ["https://cognitiveservices.azure.com/.default"]}}},
        "routes": [{"backend": "azure"}]
    }});
    let filter =
        bootstrap::wasm_filter_with_env(&plugin, &[("ENTRA_CLIENT_SECRET", CLIENT_SECRET)]);
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![filter],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![
            bootstrap::cluster("upstream", provider.port),
            bootstrap::cluster("entra", entra.port),
        ],
    );
    let opts = ai_auth_testkit::envoy::Options {
        concurrency: 2,
        ..Default::default()
    };
    let mut envoy = Envoy::start_with(&boot, &opts).unwrap_or_else(|e| panic!("{e}"));
    let port = envoy.port("main");
    let mut responses = Vec::new();
    // The token endpoint is down: no dead or missing token is ever sent.
    let r = http::post_json(
        port,
        "/openai/deployments/gpt/chat/completions",
        &[("authorization", "Bearer client")],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(provider.count(), 0);
    responses.push(r);
    up.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = http::post_json(
            port,
            "/openai/deployments/gpt/chat/completions",
            &[("authorization", "Bearer client")],
        );
        let ok = r.status == 200;
        responses.push(r);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token after the endpoint recovered"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for _ in 0..20 {
        let r = http::post_json(
            port,
            "/openai/deployments/gpt/chat/completions",
            &[("authorization", "Bearer client")],
        );
        assert_eq!(r.status, 200);
        let seen = provider.last().unwrap();
        let auth = seen.headers_named("authorization");
        assert_eq!(auth.len(), 1);
        assert!(auth[0].starts_with("Bearer entra-token-"), "{auth:?}");
        responses.push(r);
    }
    // One token for every VM: at most one request per VM at start-up (3 VMs).
    assert!(
        issued.load(Ordering::SeqCst) <= 3,
        "{} tokens issued",
        issued.load(Ordering::SeqCst)
    );
    assert!(envoy.counter("upstream_credentials.token_fetch_success") >= 1);
    let log = envoy.stop();
    for secret in [CLIENT_SECRET, "entra-token-1"] {
        assert!(!log.contains(secret), "a secret reached Envoy's log");
        for r in &responses {
            assert!(
                !format!("{:?} {}", r.headers, r.text()).contains(secret),
                "a secret reached the client"
            );
        }
    }
}

#[test]
fn a_misbehaving_token_endpoint_never_takes_the_gateway_down() {
    use ai_auth_testkit::http::Action;
    use ai_auth_testkit::misbehaving::{self, vm_failure_lines, Misbehavior};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    const TIMEOUT: Duration = Duration::from_millis(500);
    // One backend per kind (`/k0/`...), each with its own token endpoint
    // path, and a well-behaved one (`/good/`) that must keep serving.
    let kinds = misbehaving::ALL;
    let bad = Arc::new(AtomicBool::new(true));
    let issued: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let forged = "\r\n[2099-01-01 00:00:00.000][1][critical][main] forged line".repeat(200);
    let (misbehaving, tokens) = (Arc::clone(&bad), Arc::clone(&issued));
    let endpoint = Server::start(move |r| {
        let backend = r
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        let n = {
            let mut issued = tokens.lock().unwrap();
            let n = issued.entry(backend.to_string()).or_default();
            *n += 1;
            *n
        };
        let good = json!({"access_token": format!("tok-{backend}-{n}"), "token_type": "Bearer", "expires_in": 3600});
        let kind: Option<Misbehavior> = backend
            .strip_prefix('k')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| kinds.get(i).copied());
        match kind {
            Some(kind) if misbehaving.load(Ordering::SeqCst) => {
                kind.action(TIMEOUT, good.to_string().as_bytes())
            }
            // A reply that parses but must not be used, quoted in the log.
            None if backend == "hostile" && misbehaving.load(Ordering::SeqCst) => Action::json(
                200,
                &json!({"access_token": "t", "token_type": format!("mac{forged}")}),
            ),
            _ => Action::json(200, &good),
        }
    });
    let provider = Server::recorder();
    let mut backends = serde_json::Map::new();
    let mut routes = Vec::new();
    let names: Vec<String> = (0..kinds.len())
        .map(|i| format!("k{i}"))
        .chain(["hostile".to_string(), "good".to_string()])
        .collect();
    for name in &names {
        backends.insert(
            name.clone(),
            json!({"scheme": "bearer", "oauth2": {
                "token_uri": {"uri": format!("https://login.test/{name}/token"), "cluster": "entra", "timeout": "0.5s"},
                "client_id": "gateway-app",
                "client_secret": {"inline_string": "s3cret"}}}),
        );
        routes.push(json!({"match": {"prefix": format!("/{name}/")}, "backend": name}));
    }
    let plugin = json!({"upstream_credentials": {"backends": backends, "routes": routes}});
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(&plugin)],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![
            bootstrap::cluster("upstream", provider.port),
            bootstrap::cluster("entra", endpoint.port),
        ],
    );
    // One worker: the requests below and its root's fetches share one VM.
    let mut envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    let port = envoy.port("main");
    let post = |backend: &str| http::post_json(port, &format!("/{backend}/chat/completions"), &[]);
    // While every endpoint but `good` misbehaves (each VM fails at least
    // twice per backend, with backoff), `good` serves and the others get
    // 503 with Retry-After: no token, so none is sent.
    let requests_for = |name: &str| {
        endpoint
            .requests()
            .iter()
            .filter(|r| r.path.starts_with(&format!("/{name}/")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while post("good").status != 200 {
        assert!(Instant::now() < deadline, "no token for the good backend");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut during = Vec::new();
    while names.iter().any(|n| n != "good" && requests_for(n) < 4) {
        assert!(Instant::now() < deadline, "token requests were not retried");
        let good = post("good");
        assert_eq!(
            good.status, 200,
            "the well-behaved backend must keep serving"
        );
        for name in names.iter().filter(|n| *n != "good") {
            let r = post(name);
            assert_eq!(r.status, 503, "{name}: no token yet: {}", r.text());
            assert_eq!(r.header("retry-after"), Some("1"), "{name}");
            during.push(r.status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bad.store(false, Ordering::SeqCst);
    // Recovered: every backend gets a token its endpoint issued.
    let mut after = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let label = kinds.get(i).map_or(name.clone(), |k| k.name());
        loop {
            let r = post(name);
            if r.status == 200 {
                let auth = provider
                    .last()
                    .unwrap()
                    .header("authorization")
                    .map(String::from);
                assert!(
                    auth.as_deref()
                        .is_some_and(|a| a.starts_with(&format!("Bearer tok-{name}-"))),
                    "{label}: {auth:?}"
                );
                after.push(format!("{label}: 200"));
                break;
            }
            assert_eq!(r.status, 503, "{label}: {}", r.text());
            assert!(
                Instant::now() < deadline,
                "{label}: no token after recovery"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "observed during: {} answers, all 503; after: {after:#?}",
        during.len()
    );
    let log = envoy.stop();
    let failures = vm_failure_lines(&log);
    assert!(failures.is_empty(), "the VM failed: {failures:#?}");
    let forged_lines = log
        .lines()
        .filter(|l| l.contains("forged line") && !l.contains("wasm log"))
        .count();
    assert_eq!(forged_lines, 0, "remote text forged log lines");
    assert!(
        log.lines()
            .any(|l| l.contains("token_type \"mac\\r\\n[2099")),
        "the token_type is quoted, escaped"
    );
}
