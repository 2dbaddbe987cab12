//! Gateway-issued API keys in the real Envoy: configured only as SHA-256
//! hashes, read where the `openai` and `anthropic` SDKs put them, in the
//! same requirement trees as a JWT, never passed upstream nor logged; the
//! key's tenant chooses the upstream key, its name goes to the access log.

use crate::support::*;
use ai_auth_testkit::{providers, sdk};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ACME_KEY: &str = "sk-gw-acme-6c1f0e92b7d4a5";
const GLOBEX_KEY: &str = "sk-gw-globex-0d9e8f7a6b5c4d";
const RETIRED_KEY: &str = "sk-gw-retired-4a4a4a4a4a";
const ENV_KEY: &str = "sk-gw-from-env-9b8a7c6d5e";
const UP_ACME: &str = "sk-upstream-acme-77aa";
const UP_GLOBEX: &str = "sk-upstream-globex-88bb";
const UP_SHARED: &str = "sk-upstream-shared-99cc";
const CLIENT_KEYS: [&str; 4] = [ACME_KEY, GLOBEX_KEY, RETIRED_KEY, ENV_KEY];

pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_b64url(key: &str) -> String {
    b64(Sha256::digest(key.as_bytes()))
}

fn keys_provider() -> Value {
    json!({
        "api_keys": [
            {"name": "search-app", "tenant": "acme", "sha256": sha256_hex(ACME_KEY), "labels": {"team": "search"}},
            {"name": "globex-app", "tenant": "globex", "sha256": sha256_b64url(GLOBEX_KEY)},
            {"name": "retired-app", "tenant": "acme", "sha256": sha256_hex(RETIRED_KEY), "expires_at": "2020-01-01T00:00:00Z"}
        ],
        "api_keys_from": {"environment_variable": "GATEWAY_API_KEYS"},
        "claim_to_headers": [
            {"header_name": "x-caller", "claim_name": "sub"},
            {"header_name": "x-tenant", "claim_name": "tenant"},
            {"header_name": "x-team", "claim_name": "labels.team"}
        ]
    })
}

fn plugin(signer: &TestKey) -> Value {
    json!({
        "jwt_authn": {
            "providers": {
                "keys": keys_provider(),
                "idp": {"issuer": ISS, "audiences": [AUD],
                        "local_jwks": {"inline_string": jwks(&[signer]).to_string()},
                        "claim_to_headers": [{"header_name": "x-caller", "claim_name": "sub"}]}
            },
            "rules": [
                {"match": {"prefix": "/keys-only/"}, "requires": {"provider_name": "keys"}},
                {"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                    {"provider_name": "keys"}, {"provider_name": "idp"}]}}}
            ]
        },
        "upstream_credentials": {
            "backends": {
                "openai": {"scheme": "openai", "secret_by_claim": {"claim": "tenant",
                    "secrets": {"acme": {"inline_string": UP_ACME}, "globex": {"inline_string": UP_GLOBEX}},
                    "default": {"inline_string": UP_SHARED}}},
                "anthropic": {"scheme": "anthropic", "secret_by_claim": {"claim": "tenant",
                    "secrets": {"acme": {"inline_string": UP_ACME}, "globex": {"inline_string": UP_GLOBEX}},
                    "default": {"inline_string": UP_SHARED}}}
            },
            "routes": [
                {"match": {"prefix": "/v1/messages"}, "backend": "anthropic"},
                {"match": {"prefix": "/"}, "backend": "openai"}
            ]
        }
    })
}

/// Only the JWT stage with the API key provider: no credentials stage to
/// strip client credentials.
fn keys_alone(keys: Value) -> Value {
    json!({"jwt_authn": {
        "providers": {"keys": {"api_keys": keys}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
    }})
}

pub fn access_log_to(listener: &mut Value, path: &std::path::Path) {
    access_log(
        listener,
        path,
        "%REQ(:PATH)% status=%RESPONSE_CODE% caller=%FILTER_STATE(wasm.ai_auth.caller:PLAIN)% backend=%FILTER_STATE(wasm.ai_auth.upstream_backend:PLAIN)% model=%FILTER_STATE(wasm.ai_auth.model:PLAIN)%\n",
    );
}

pub fn temp_log(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ai-auth-{tag}-{}-{}.log",
        std::process::id(),
        now()
    ))
}

struct Setup {
    envoy: Envoy,
    upstream: Server,
    access_log: std::path::PathBuf,
    signer: TestKey,
}

fn start() -> Setup {
    let signer = TestKey::ed25519("k1");
    let upstream = Server::start(providers::any_key);
    let env_keys =
        json!([{"name": "env-app", "tenant": "globex", "sha256": sha256_hex(ENV_KEY)}]).to_string();
    let access_log = temp_log("api-keys-access");
    let mut main = bootstrap::listener(
        "main",
        vec![bootstrap::wasm_filter_with_env(
            &plugin(&signer),
            &[("GATEWAY_API_KEYS", &env_keys)],
        )],
        vec![bootstrap::route_to("upstream")],
    );
    access_log_to(&mut main, &access_log);
    let bare = bootstrap::listener(
        "bare",
        vec![bootstrap::wasm_filter(&keys_alone(json!([
            {"name": "search-app", "sha256": sha256_hex(ACME_KEY)}
        ])))],
        vec![bootstrap::route_to("upstream")],
    );
    let boot = bootstrap::bootstrap(
        vec![main, bare],
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        envoy,
        upstream,
        access_log,
        signer,
    }
}

fn chat(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    http::request(
        port,
        "POST",
        path,
        &[headers, &[("content-type", "application/json")]].concat(),
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .unwrap()
}

/// Nothing the upstream received holds a client key.
fn upstream_saw_no_client_key(upstream: &Server) {
    for r in upstream.requests() {
        let text = r.all_text();
        for key in CLIENT_KEYS {
            assert!(!text.contains(key), "a client key reached the upstream");
        }
    }
}

#[test]
fn keys_valid_unknown_expired_in_each_location_alongside_a_jwt_and_from_the_environment() {
    let mut s = start();
    let port = s.envoy.port("main");
    let bearer_acme = bearer(ACME_KEY);
    let mut responses = Vec::new();

    // Valid, as the openai SDK sends it: the acme tenant's upstream key.
    let r = chat(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer_acme)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.last().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UP_ACME}").as_str())
    );
    assert_eq!(seen.header("x-caller"), Some("search-app"));
    assert_eq!(seen.header("x-tenant"), Some("acme"));
    assert_eq!(seen.header("x-team"), Some("search"));
    responses.push(r);

    // Valid, as the Anthropic SDK sends it (x-api-key): the globex key, by base64url hash.
    let r = chat(port, "/v1/messages", &[("x-api-key", GLOBEX_KEY)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.header("x-api-key"), Some(UP_GLOBEX));
    assert_eq!(seen.header("x-caller"), Some("globex-app"));
    assert_eq!(seen.header("authorization"), None);
    responses.push(r);

    // From the environment variable.
    let r = chat(port, "/v1/chat/completions", &[("x-api-key", ENV_KEY)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.upstream.last().unwrap().header("authorization"),
        Some(format!("Bearer {UP_GLOBEX}").as_str())
    );
    responses.push(r);

    // A client cannot send the identity headers itself.
    let r = chat(
        port,
        "/v1/chat/completions",
        &[
            ("x-api-key", GLOBEX_KEY),
            ("x-tenant", "acme"),
            ("x-team", "admins"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.header("x-tenant"), Some("globex"));
    assert_eq!(seen.header("x-team"), None);
    responses.push(r);

    // A JWT alone: its subject, and (no tenant claim) the shared upstream key.
    let jwt = s.signer.sign(&claims());
    let r = chat(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer(&jwt))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.header("x-caller"), Some("alice"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UP_SHARED}").as_str())
    );
    responses.push(r);

    // A key sent alongside a JWT: the key comes first in requires_any, and
    // neither credential reaches the upstream.
    let before = s.upstream.count();
    let r = chat(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer(&jwt)), ("x-api-key", ACME_KEY)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.upstream.count(), before + 1);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.header("x-caller"), Some("search-app"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UP_ACME}").as_str())
    );
    assert_eq!(seen.header("x-api-key"), None);
    assert!(
        !seen.all_text().contains(&jwt),
        "the JWT reached the upstream"
    );
    responses.push(r);

    // Unknown, expired, missing: 401 in the shape of a bad JWT, nothing upstream.
    let before = s.upstream.count();
    let cases = [
        (
            "/v1/chat/completions",
            vec![("x-api-key", "sk-gw-acme-6c1f0e92b7d4a6")],
            401,
            "invalid_token",
            "API key is not valid",
        ),
        (
            "/v1/chat/completions",
            vec![("authorization", "Bearer sk-gw-nope")],
            401,
            "invalid_token",
            "API key is not valid",
        ),
        (
            "/v1/chat/completions",
            vec![("x-api-key", RETIRED_KEY)],
            401,
            "invalid_token",
            "API key is expired",
        ),
        (
            "/keys-only/v1/chat/completions",
            vec![],
            401,
            "missing_token",
            "API key is missing",
        ),
    ];
    for (path, headers, status, code, message) in cases {
        let r = chat(port, path, &headers);
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
        assert_eq!(
            error_of(&r),
            (code.to_string(), message.to_string()),
            "{headers:?}"
        );
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        if code == "invalid_token" {
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        }
        responses.push(r);
    }
    assert_eq!(
        s.upstream.count(),
        before,
        "a refused request reached the upstream"
    );

    assert_eq!(s.envoy.counter("jwt_authn.api_key_valid"), 5);
    // The JWT alone was tried as a key first (requires_any): 3 unknown.
    assert_eq!(s.envoy.counter("jwt_authn.api_key_unknown"), 3);
    assert_eq!(s.envoy.counter("jwt_authn.api_key_expired"), 1);

    upstream_saw_no_client_key(&s.upstream);
    // Stopping Envoy flushes its logs; debug logging is on.
    let log = s.envoy.stop();
    assert!(
        log.contains("jwt_authn: allowed"),
        "debug logging must be on for this check"
    );
    let access = std::fs::read_to_string(&s.access_log).unwrap_or_default();
    for key in CLIENT_KEYS.iter().chain(&[UP_ACME, UP_GLOBEX, UP_SHARED]) {
        assert!(!log.contains(key), "a key in Envoy's log");
        assert!(!access.contains(key), "a key in the access log");
        for r in &responses {
            assert!(
                !format!("{:?} {}", r.headers, r.text()).contains(key),
                "a key in a response"
            );
        }
    }
    // Cost attribution: the key's name (or the JWT's subject) and the backend.
    assert!(
        access.contains("/v1/chat/completions status=200 caller=search-app backend=openai"),
        "access log:\n{access}"
    );
    assert!(
        access.contains("/v1/messages status=200 caller=globex-app backend=anthropic"),
        "access log:\n{access}"
    );
    assert!(
        access.contains("status=200 caller=alice backend=openai"),
        "access log:\n{access}"
    );
}

#[test]
fn without_the_credentials_stage_the_key_never_reaches_the_upstream() {
    let s = start();
    let port = s.envoy.port("bare");
    for headers in [
        vec![("authorization", bearer(ACME_KEY))],
        vec![("x-api-key", ACME_KEY.to_string())],
        // Both locations: one is used, both are removed.
        vec![
            ("authorization", bearer(ACME_KEY)),
            ("x-api-key", ACME_KEY.to_string()),
        ],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = chat(port, "/v1/chat/completions", &h);
        assert_eq!(r.status, 200, "{h:?}: {}", r.text());
        let seen = s.upstream.last().unwrap();
        assert_eq!(seen.header("authorization"), None, "{h:?}");
        assert_eq!(seen.header("x-api-key"), None, "{h:?}");
    }
    upstream_saw_no_client_key(&s.upstream);
}

#[test]
fn the_openai_and_anthropic_sdks_authenticate_with_a_gateway_key() {
    let s = start();
    let base = format!("http://127.0.0.1:{}", s.envoy.port("main"));
    let call = |sdk: &str, base: &str, key: &str, what: &str| json!({"sdk": sdk, "base_url": base, "api_key": key, "call": what});
    let v1 = format!("{base}/v1");
    let calls = json!([
        call("openai", &v1, ACME_KEY, "chat"),
        call("openai", &v1, GLOBEX_KEY, "chat_stream"),
        call("anthropic", &base, ACME_KEY, "messages"),
        call("anthropic", &base, GLOBEX_KEY, "messages_stream"),
        call("openai", &v1, RETIRED_KEY, "chat"),
        call("anthropic", &base, "sk-gw-unknown", "messages"),
    ]);
    let results = sdk::run_calls(&calls).unwrap_or_else(|e| panic!("{e}"));
    for r in &results[..4] {
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["text"].as_str().unwrap().starts_with("Hello"), "{r}");
    }
    for i in [1, 3] {
        let chunks = results[i]["chunks"].as_u64().unwrap();
        assert!(chunks > 1, "the stream came in pieces: {}", results[i]);
    }
    assert_eq!(
        results[4]["exception"], "AuthenticationError",
        "{}",
        results[4]
    );
    assert!(results[4]["message"]
        .as_str()
        .unwrap()
        .contains("API key is expired"));
    assert_eq!(
        results[5]["exception"], "AuthenticationError",
        "{}",
        results[5]
    );
    // The SDKs' requests reached the upstream with the tenant's key only.
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UP_ACME}").as_str())
    );
    assert_eq!(seen[2].header("x-api-key"), Some(UP_ACME));
    assert!(seen[2].header("anthropic-version").is_some());
    upstream_saw_no_client_key(&s.upstream);
}

#[test]
fn ten_thousand_configured_keys() {
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("sk-gw-bulk-{i:08}-x"))
        .collect();
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"name": format!("app-{i}"), "tenant": format!("t{}", i % 50), "sha256": sha256_hex(k)}))
        .collect();
    let mut plugin = keys_alone(Value::Array(entries));
    plugin["jwt_authn"]["providers"]["keys"]["claim_to_headers"] =
        json!([{"header_name": "x-caller", "claim_name": "sub"}]);
    let gw = Gateway::start(plugin);
    for i in [0, 1, 5_000, 9_999] {
        let r = chat(
            gw.port(),
            "/v1/chat/completions",
            &[("x-api-key", &keys[i])],
        );
        assert_eq!(r.status, 200, "key {i}: {}", r.text());
        assert_eq!(
            gw.upstream.last().unwrap().header("x-caller"),
            Some(format!("app-{i}").as_str())
        );
    }
    let r = chat(
        gw.port(),
        "/v1/chat/completions",
        &[("x-api-key", "sk-gw-bulk-10000000-x")],
    );
    assert_eq!(r.status, 401);
}

/// `new-api-key`, run as an operator runs it (`cargo run -p ai-auth-tools`).
fn run_new_api_key(args: &[&str]) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::process::Command::new(cargo)
        .current_dir(ai_auth_testkit::envoy::repo_root())
        .args([
            "run",
            "--quiet",
            "-p",
            "ai-auth-tools",
            "--bin",
            "new-api-key",
            "--",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// The key and the entry `new-api-key` prints.
fn new_api_key(args: &[&str]) -> (String, Value) {
    let out = run_new_api_key(args);
    assert!(
        out.status.success(),
        "new-api-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let key = lines.next().unwrap().to_string();
    let entry: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(lines.next(), None);
    (key, entry)
}

#[test]
fn a_key_from_the_new_api_key_command_works_as_pasted() {
    let (key, entry) = new_api_key(&[
        "--name",
        "cli-app",
        "--tenant",
        "acme",
        "--allowed-models",
        "gpt-4o*",
        "--label",
        "team=cli",
    ]);
    let (key2, entry2) = new_api_key(&["--name", "cli-app-2", "--hash", "base64url"]);
    assert!(key.starts_with("sk-gw-") && key.len() >= 6 + 43, "{key}");
    assert_ne!(key, key2, "keys are random");
    // The entry has the hash, never the key.
    assert_eq!(entry["sha256"], sha256_hex(&key));
    assert_eq!(entry2["sha256"], sha256_b64url(&key2));
    assert!(!entry.to_string().contains(&key));
    assert_eq!(entry["allowed_models"], json!(["gpt-4o*"]));
    let mut plugin = keys_alone(json!([entry, entry2]));
    plugin["jwt_authn"]["providers"]["keys"]["claim_to_headers"] = json!([{"header_name": "x-caller", "claim_name": "sub"}, {"header_name": "x-team", "claim_name": "labels.team"}]);
    let gw = Gateway::start(plugin);
    let r = chat(
        gw.port(),
        "/v1/chat/completions",
        &[("authorization", &bearer(&key))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gw.upstream.last().unwrap();
    assert_eq!(seen.header("x-caller"), Some("cli-app"));
    assert_eq!(seen.header("x-team"), Some("cli"));
    let r = chat(gw.port(), "/v1/chat/completions", &[("x-api-key", &key2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    // A bad option is refused with the usage.
    let out = run_new_api_key(&["--name", "x", "--expires-at", "someday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires_at"));
    assert!(out.stdout.is_empty(), "nothing printed for a refused entry");
}

/// The passthrough's `claims_to_headers` with an API key identity: the auth
/// service sees the key's name, tenant and label (never a client's forged
/// value, never the key), as it would a JWT's claims.
#[test]
fn the_passthrough_receives_the_api_keys_claims() {
    let auth = Server::start(|_| ai_auth_testkit::http::Action::status(200));
    let upstream = Server::echo();
    let plugin = json!({
        "jwt_authn": {
            "providers": {"keys": keys_provider()},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
        },
        "ext_authz": {
            "http_service": {
                "server_uri": {"uri": "http://authz.local", "cluster": "authz", "timeout": "1s"},
                "authorization_request": {"allowed_headers": {"patterns": [
                    {"exact": "x-api-key"}, {"exact": "authorization"}, {"prefix": "x-verified-"}]}}
            },
            "claims_to_headers": [
                {"claim_name": "sub", "header_name": "x-verified-caller"},
                {"claim_name": "tenant", "header_name": "x-verified-tenant"},
                {"claim_name": "labels.team", "header_name": "x-verified-team"}
            ]
        }
    });
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter_with_env(
                &plugin,
                &[("GATEWAY_API_KEYS", "[]")],
            )],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![
            bootstrap::cluster("upstream", upstream.port),
            bootstrap::cluster("authz", auth.port),
        ],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    let r = http::get(
        envoy.port("main"),
        "/v1/models",
        &[
            ("x-api-key", ACME_KEY),
            ("x-verified-tenant", "globex"),
            ("x-verified-caller", "mallory"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let check = auth.last().expect("the auth service was asked");
    assert_eq!(check.headers_named("x-verified-caller"), ["search-app"]);
    assert_eq!(check.headers_named("x-verified-tenant"), ["acme"]);
    assert_eq!(check.headers_named("x-verified-team"), ["search"]);
    assert!(
        !check.all_text().contains(ACME_KEY),
        "the key never reaches the auth service"
    );
    // Another key, other claims; an unknown key never reaches the service.
    let r = http::get(
        envoy.port("main"),
        "/v1/models",
        &[("x-api-key", GLOBEX_KEY)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let check = auth.last().unwrap();
    assert_eq!(check.headers_named("x-verified-caller"), ["globex-app"]);
    assert_eq!(check.headers_named("x-verified-tenant"), ["globex"]);
    assert!(check.headers_named("x-verified-team").is_empty());
    let asked = auth.count();
    let r = http::get(
        envoy.port("main"),
        "/v1/models",
        &[("x-api-key", "sk-gw-wrong")],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(auth.count(), asked);
    assert_eq!(upstream.count(), 2);
}
