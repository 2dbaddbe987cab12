//! API keys: hashes in the configuration, lookup, expiry, and API key
//! providers in the JWT stage's requirement trees.

use super::config::parse_digest;
use super::*;
use crate::config::FilterConfig;
use crate::jwt::cache::VerifiedCache;
use crate::jwt::config::JwtAuthn;
use crate::jwt::error::JwtError;
use crate::jwt::{authenticate, JwtOutcome};
use crate::request::RequestView;
use crate::response::HeaderOp;
use crate::stats::Counter;
use crate::vocab::ConfigError;
use ai_auth_testkit::keys::{jwks, TestKey};
use base64::Engine;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/demo";
const KEY: &str = "sk-gw-test-0123456789abcdef";
const OTHER: &str = "sk-gw-test-fedcba9876543210";

fn hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn b64url(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(key.as_bytes()))
}

fn compile(cfg: Value, env: &[(&str, &str)]) -> Result<JwtAuthn, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let bytes = serde_json::to_vec(&json!({ "jwt_authn": cfg })).unwrap();
    FilterConfig::from_json(&bytes, &lookup).map(|c| c.jwt_authn.unwrap())
}

fn keys_only(keys: Value) -> JwtAuthn {
    compile(
        json!({
            "providers": {"keys": {"api_keys": keys,
                "claim_to_headers": [{"header_name": "x-key-name", "claim_name": "name"},
                                     {"header_name": "x-tenant", "claim_name": "tenant"},
                                     {"header_name": "x-team", "claim_name": "labels.team"}]}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
        }),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn req(headers: &[(&str, &str)]) -> RequestView {
    req_at("/v1/chat/completions", headers)
}

fn req_at(path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut all = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "gw.example".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestView::new(all)
}

fn run(cfg: &JwtAuthn, r: &RequestView) -> JwtOutcome {
    let mut cache = VerifiedCache::new(cfg.cache_size, cfg.max_cached_token_size);
    authenticate(cfg, r, NOW, &mut cache)
}

fn removed(ops: &[HeaderOp], name: &str) -> bool {
    ops.contains(&HeaderOp::remove(name))
}

fn set_value<'a>(ops: &'a [HeaderOp], name: &str) -> Option<&'a str> {
    ops.iter().find_map(|op| match op {
        HeaderOp::Set(n, v) if n == name => Some(v.as_str()),
        _ => None,
    })
}

#[test]
fn the_compare_visits_every_byte_whatever_the_prefix() {
    let real = KeyDigest::of_key(KEY).0;
    let mut shares_31 = real;
    shares_31[31] ^= 1;
    let mut first_differs = real;
    first_differs[0] ^= 0x80;
    for (name, guess, equal) in [
        ("equal", real, true),
        ("shares 31 bytes", shares_31, false),
        ("first byte differs", first_differs, false),
        ("all differ", [0u8; 32], false),
    ] {
        let mut visited = 0;
        let diff = diff_bits(real.iter().zip(&guess).map(|(a, b)| {
            visited += 1;
            (*a, *b)
        }));
        assert_eq!(visited, 32, "{name}: the compare stopped early");
        assert_eq!(diff == 0, equal, "{name}");
        assert_eq!(
            KeyDigest(real) == KeyDigest(guess),
            equal,
            "{name}: KeyDigest equality"
        );
    }
}

#[test]
fn hashes_in_hex_or_base64url() {
    let want = KeyDigest::of_key(KEY);
    assert!(parse_digest(&hex(KEY)).unwrap() == want);
    assert!(parse_digest(&hex(KEY).to_uppercase()).unwrap() == want);
    assert!(parse_digest(&b64url(KEY)).unwrap() == want);
    assert!(parse_digest(&format!("{}=", b64url(KEY))).unwrap() == want);
    for bad in [
        String::new(),
        hex(KEY)[..62].to_string(),
        format!("{}0", hex(KEY)),
        hex(KEY).replace('a', "g"),
        format!("{}x", &b64url(KEY)[..42]).replace('x', "+"),
        b64url(KEY)[..40].to_string(),
        KEY.to_string(),
    ] {
        let err = parse_digest(&bad).unwrap_err();
        assert!(!err.contains(&bad) || bad.is_empty(), "never quoted: {err}");
    }
}

#[test]
fn valid_unknown_and_expired_keys() {
    let cfg = keys_only(json!([
        {"name": "search", "tenant": "acme", "sha256": hex(KEY),
         "labels": {"team": "search-team"}, "allowed_models": ["gpt-4o*"]},
        {"name": "old", "sha256": b64url(OTHER), "expires_at": NOW - 1}
    ]));
    // Valid, in each default location.
    for headers in [
        vec![("authorization", format!("Bearer {KEY}"))],
        vec![("authorization", format!("bearer {KEY}"))],
        vec![("x-api-key", KEY.to_string())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run(&cfg, &req(&h));
        let ids = out.result.unwrap_or_else(|e| panic!("{h:?}: {e:?}"));
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].caller(), Some("search"));
        assert_eq!(ids[0].claims.payload["tenant"], "acme");
        assert_eq!(ids[0].claims.payload["allowed_models"], json!(["gpt-4o*"]));
        assert_eq!(set_value(&out.header_ops, "x-key-name"), Some("search"));
        assert_eq!(set_value(&out.header_ops, "x-tenant"), Some("acme"));
        assert_eq!(set_value(&out.header_ops, "x-team"), Some("search-team"));
        assert!(removed(&out.header_ops, h[0].0), "{h:?}: key not stripped");
        assert!(out.counters.contains(&Counter::ApiKeyValid));
    }
    // Unknown: 401 invalid_token, as a bad JWT.
    let out = run(&cfg, &req(&[("x-api-key", "sk-gw-test-0123456789abcdeX")]));
    assert_eq!(out.result.unwrap_err(), JwtError::ApiKeyUnknown);
    assert!(out.counters.contains(&Counter::ApiKeyUnknown));
    let d = JwtError::ApiKeyUnknown.denial();
    assert_eq!((d.status, d.error), (401, Some("invalid_token")));
    // Expired: 401 with its reason.
    let out = run(&cfg, &req(&[("x-api-key", OTHER)]));
    assert_eq!(out.result.unwrap_err(), JwtError::ApiKeyExpired);
    assert!(out.counters.contains(&Counter::ApiKeyExpired));
    let d = JwtError::ApiKeyExpired.denial();
    assert_eq!(d.status, 401);
    assert_eq!(d.description, "API key is expired");
    // Missing: 401 without an error code, saying what is missing.
    let out = run(&cfg, &req(&[]));
    let e = out.result.unwrap_err();
    assert_eq!(e, JwtError::ApiKeyMissing);
    assert_eq!((e.denial().status, e.denial().error), (401, None));
    // Two keys in one header location are refused, as two tokens are.
    let out = run(&cfg, &req(&[("x-api-key", KEY), ("x-api-key", "sk-other")]));
    assert_eq!(out.result.unwrap_err(), JwtError::MultipleTokens);
}

#[test]
fn expiry_is_exact_and_accepts_rfc3339() {
    let cfg = keys_only(json!([
        {"name": "a", "sha256": hex(KEY), "expires_at": NOW + 1},
        {"name": "b", "sha256": hex(OTHER), "expires_at": "2027-01-15T08:00:00Z"}
    ]));
    assert!(run(&cfg, &req(&[("x-api-key", KEY)])).result.is_ok());
    let keys = match &cfg.providers[0].kind {
        crate::jwt::config::ProviderKind::ApiKeys(k) => k,
        _ => panic!("an API key provider"),
    };
    assert!(keys.check(KEY, NOW).is_ok());
    assert_eq!(keys.check(KEY, NOW + 1).unwrap_err(), Rejection::Expired);
    // 2027-01-15T08:00:00Z = 1800000000 = NOW.
    assert_eq!(keys.check(OTHER, NOW - 1).unwrap().name, "b");
    assert_eq!(keys.check(OTHER, NOW).unwrap_err(), Rejection::Expired);
}

#[test]
fn ten_thousand_keys_each_found() {
    let keys: Vec<String> = (0..10_000).map(|i| format!("sk-gw-bulk-{i:08}")).collect();
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"name": format!("app-{i}"), "sha256": hex(k)}))
        .collect();
    let cfg = keys_only(Value::Array(entries));
    for i in [0, 1, 4999, 9998, 9999] {
        let out = run(&cfg, &req(&[("x-api-key", &keys[i])]));
        assert_eq!(
            out.result.unwrap()[0].caller(),
            Some(format!("app-{i}").as_str())
        );
    }
    assert_eq!(
        run(&cfg, &req(&[("x-api-key", "sk-gw-bulk-10000000")]))
            .result
            .unwrap_err(),
        JwtError::ApiKeyUnknown
    );
}

#[test]
fn keys_from_an_environment_variable() {
    let list = json!([{"name": "from-env", "tenant": "globex", "sha256": hex(OTHER)}]).to_string();
    let cfg = compile(
        json!({
            "providers": {"keys": {
                "api_keys": [{"name": "inline", "sha256": hex(KEY)}],
                "api_keys_from": {"environment_variable": "GATEWAY_API_KEYS"}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
        }),
        &[("GATEWAY_API_KEYS", &list)],
    )
    .unwrap();
    let inline = run(&cfg, &req(&[("x-api-key", KEY)])).result.unwrap();
    assert_eq!(inline[0].caller(), Some("inline"));
    let env = run(&cfg, &req(&[("x-api-key", OTHER)])).result.unwrap();
    assert_eq!(env[0].caller(), Some("from-env"));
    assert_eq!(env[0].claims.payload["tenant"], "globex");
}

#[test]
fn configuration_mistakes_name_the_field() {
    let rules = json!([{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]);
    let with = |provider: Value, env: &[(&str, &str)]| {
        compile(
            json!({"providers": {"keys": provider}, "rules": rules}),
            env,
        )
        .unwrap_err()
    };
    let e = with(json!({"api_keys": [{"name": "a", "sha256": "abc"}]}), &[]);
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys[0].sha256");
    let e = with(
        json!({"api_keys": [{"name": "a", "sha256": hex(KEY)}, {"name": "b", "sha256": b64url(KEY)}]}),
        &[],
    );
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys[1].sha256");
    assert!(e.reason.contains("api_keys[0]"), "{e}");
    let e = with(json!({"api_keys": []}), &[]);
    assert!(e.reason.contains("at least one key"), "{e}");
    let e = with(json!({"api_keys": [{"name": "", "sha256": hex(KEY)}]}), &[]);
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys[0].name");
    let e = with(
        json!({"api_keys": [{"name": "a", "sha256": hex(KEY), "expires_at": "soon"}]}),
        &[],
    );
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys[0].expires_at");
    let e = with(
        json!({"api_keys": [{"name": "a", "sha256": hex(KEY), "labels": {"a.b": "x"}}]}),
        &[],
    );
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys[0].labels.a.b");
    let e = with(
        json!({"api_keys": [{"name": "a", "sha256": hex(KEY)}], "issuer": ISS}),
        &[],
    );
    assert_eq!(e.path, "jwt_authn.providers.keys.issuer");
    let e = with(
        json!({"api_keys_from": {"environment_variable": "NOPE"}}),
        &[],
    );
    assert_eq!(
        e.path,
        "jwt_authn.providers.keys.api_keys_from.environment_variable"
    );
    let secret_looking = "[{\"name\": \"a\", \"sha256\": \"sk-live-not-a-hash\"}]";
    let e = with(
        json!({"api_keys_from": {"environment_variable": "K"}}),
        &[("K", secret_looking)],
    );
    assert_eq!(e.path, "jwt_authn.providers.keys.api_keys_from[0].sha256");
    assert!(!e.reason.contains("sk-live"), "{e}");
    let e = with(
        json!({"api_keys_from": {"environment_variable": "K"}}),
        &[("K", "sk-live-123")],
    );
    assert!(e.reason.contains("not valid JSON"), "{e}");
    assert!(!e.reason.contains("sk-live"), "{e}");
    // Audiences are for JWTs.
    let e = compile(
        json!({"providers": {"keys": {"api_keys": [{"name": "a", "sha256": hex(KEY)}]}},
               "rules": [{"match": {"prefix": "/"}, "requires": {"provider_and_audiences":
                   {"provider_name": "keys", "audiences": ["x"]}}}]}),
        &[],
    )
    .unwrap_err();
    assert!(e.reason.contains("no audience"), "{e}");
}

fn jwt_and_keys(requires: Value, forward_jwt: bool) -> (JwtAuthn, TestKey) {
    let key = TestKey::ed25519("k1");
    let cfg = compile(
        json!({
            "providers": {
                "idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&key]).to_string()},
                        "forward": forward_jwt},
                "keys": {"api_keys": [{"name": "app", "tenant": "acme", "sha256": hex(KEY)}]}
            },
            "rules": [{"match": {"prefix": "/"}, "requires": requires}]
        }),
        &[],
    )
    .unwrap();
    (cfg, key)
}

fn token(key: &TestKey) -> String {
    key.sign(&json!({"iss": ISS, "sub": "alice", "exp": NOW + 300, "tenant": "initech"}))
}

#[test]
fn a_key_or_a_jwt_in_one_requirement_tree() {
    let any = json!({"requires_any": {"requirements": [
        {"provider_name": "idp"}, {"provider_name": "keys"}]}});
    let (cfg, signer) = jwt_and_keys(any, false);
    let jwt = format!("Bearer {}", token(&signer));
    // A JWT alone.
    let out = run(&cfg, &req(&[("authorization", &jwt)]));
    assert_eq!(out.result.unwrap()[0].caller(), Some("alice"));
    // A key alone, as the openai SDK sends it (Authorization: Bearer).
    let out = run(&cfg, &req(&[("authorization", &format!("Bearer {KEY}"))]));
    let ids = out.result.unwrap();
    assert_eq!(
        (ids[0].provider.as_str(), ids[0].caller()),
        ("keys", Some("app"))
    );
    assert!(removed(&out.header_ops, "authorization"));
    // A key sent alongside a JWT: the JWT satisfies the tree first, and the
    // key is stripped all the same.
    let out = run(&cfg, &req(&[("authorization", &jwt), ("x-api-key", KEY)]));
    assert_eq!(out.result.unwrap()[0].caller(), Some("alice"));
    assert!(removed(&out.header_ops, "x-api-key"));
    assert!(removed(&out.header_ops, "authorization"));
    // A wrong key and no JWT: the key's reason.
    let out = run(&cfg, &req(&[("x-api-key", "sk-wrong")]));
    assert_eq!(out.result.unwrap_err(), JwtError::ApiKeyUnknown);
    // Nothing: missing.
    assert!(run(&cfg, &req(&[])).result.unwrap_err().is_missing());

    // Both required: a key and a JWT, two identities.
    let all = json!({"requires_all": {"requirements": [
        {"provider_name": "idp"}, {"provider_name": "keys"}]}});
    let (cfg, signer) = jwt_and_keys(all, false);
    let jwt = format!("Bearer {}", token(&signer));
    let out = run(&cfg, &req(&[("authorization", &jwt), ("x-api-key", KEY)]));
    assert_eq!(out.result.unwrap().len(), 2);
    // Without the key: the JWT in Authorization is no key.
    let out = run(&cfg, &req(&[("authorization", &jwt)]));
    assert_eq!(out.result.unwrap_err(), JwtError::ApiKeyUnknown);
}

#[test]
fn a_forwarded_jwt_keeps_its_header_and_the_key_still_goes() {
    let any = json!({"requires_any": {"requirements": [
        {"provider_name": "idp"}, {"provider_name": "keys"}]}});
    let (cfg, signer) = jwt_and_keys(any, true);
    let jwt = format!("Bearer {}", token(&signer));
    let out = run(&cfg, &req(&[("authorization", &jwt), ("x-api-key", KEY)]));
    assert!(out.result.is_ok());
    assert!(!removed(&out.header_ops, "authorization"), "forward: true");
    assert!(removed(&out.header_ops, "x-api-key"));
}

#[test]
fn allow_missing_takes_a_jwt_where_the_key_provider_also_looks() {
    let (cfg, signer) = jwt_and_keys(json!({"allow_missing": {}}), false);
    let jwt = format!("Bearer {}", token(&signer));
    // The key provider reads the JWT from Authorization and knows no such
    // key: not its credential, and the JWT is valid.
    assert!(run(&cfg, &req(&[("authorization", &jwt)])).result.is_ok());
    assert!(run(&cfg, &req(&[])).result.is_ok());
    assert!(run(&cfg, &req(&[("x-api-key", KEY)])).result.is_ok());
    // A credential nobody accepts is still refused.
    assert_eq!(
        run(&cfg, &req(&[("x-api-key", "sk-wrong")]))
            .result
            .unwrap_err(),
        JwtError::ApiKeyUnknown
    );
}

#[test]
fn custom_locations_and_forward() {
    let cfg = compile(
        json!({
            "providers": {"keys": {
                "api_keys": [{"name": "a", "sha256": hex(KEY)}],
                "from_headers": [{"name": "api-key"}, {"name": "x-goog-api-key"}],
                "from_params": ["key"]}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
        }),
        &[],
    )
    .unwrap();
    let out = run(
        &cfg,
        &req_at(
            "/v1/x?key=abc&b=1",
            &[("api-key", KEY), ("x-goog-api-key", "g")],
        ),
    );
    assert!(out.result.is_ok());
    assert!(removed(&out.header_ops, "api-key"));
    assert!(removed(&out.header_ops, "x-goog-api-key"));
    assert_eq!(set_value(&out.header_ops, ":path"), Some("/v1/x?b=1"));
    let out = run(&cfg, &req_at("/v1/x?key=sk-gw-test-0123456789abcdef", &[]));
    assert!(out.result.is_ok());
    // The default locations are not read when others are configured.
    assert!(run(&cfg, &req(&[("x-api-key", KEY)])).result.is_err());

    let fwd = compile(
        json!({
            "providers": {"keys": {"api_keys": [{"name": "a", "sha256": hex(KEY)}], "forward": true}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
        }),
        &[],
    )
    .unwrap();
    let out = run(&fwd, &req(&[("x-api-key", KEY)]));
    assert!(out.result.is_ok());
    assert!(!removed(&out.header_ops, "x-api-key"));
}

#[test]
fn claim_rules_and_tenant_work_on_keys() {
    let cfg = compile(
        json!({
            "providers": {"keys": {"api_keys": [
                {"name": "a", "tenant": "acme", "sha256": hex(KEY), "labels": {"tier": "gold"}},
                {"name": "b", "tenant": "globex", "sha256": hex(OTHER)}]}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"},
                       "claim_rules": [{"claim": "labels.tier", "equals": "gold"}]}]
        }),
        &[],
    )
    .unwrap();
    assert!(run(&cfg, &req(&[("x-api-key", KEY)])).result.is_ok());
    let e = run(&cfg, &req(&[("x-api-key", OTHER)])).result.unwrap_err();
    assert_eq!(e.denial().status, 403);
}

/// The README's API key example loads as it is written.
#[test]
fn the_readme_example_loads() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("### API keys")
        .nth(1)
        .expect("README has an API keys section");
    let example = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a JSON example");
    let signer = TestKey::ed25519("k1");
    let env_list = json!([{"name": "env-app", "sha256": hex(OTHER)}]).to_string();
    let jwks_text = jwks(&[&signer]).to_string();
    let env = |name: &str| match name {
        "GATEWAY_API_KEYS" => Some(env_list.clone()),
        "KEYCLOAK_JWKS" => Some(jwks_text.clone()),
        _ => None,
    };
    let cfg = FilterConfig::from_json(example.as_bytes(), &env)
        .unwrap_or_else(|e| panic!("README example: {e}"));
    let jwt = cfg.jwt_authn.unwrap();
    let out = run(
        &jwt,
        &req_at("/v1/chat/completions", &[("x-api-key", OTHER)]),
    );
    assert_eq!(out.result.unwrap()[0].caller(), Some("env-app"));
    let out = run(
        &jwt,
        &req_at(
            "/v1/chat/completions",
            &[("x-api-key", "sk-gw-example-search-app")],
        ),
    );
    assert_eq!(out.result.unwrap()[0].caller(), Some("search-app"));
}
