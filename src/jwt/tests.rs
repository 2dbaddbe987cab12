//! Request snapshot in, decision out; the clock is injected.

use super::*;
use crate::config::FilterConfig;
use ai_auth_testkit::keys::{b64, jwks, TestKey};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/demo";

pub(super) fn filter(cfg: Value) -> JwtAuthn {
    let bytes = serde_json::to_vec(&json!({ "jwt_authn": cfg })).unwrap();
    FilterConfig::from_json(&bytes, &|_: &str| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .jwt_authn
        .unwrap()
}

fn provider(keys: &[&TestKey], extra: Value) -> Value {
    let mut p = json!({
        "issuer": ISS,
        "audiences": ["llm-gateway"],
        "local_jwks": {"inline_string": jwks(keys).to_string()},
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

fn simple(keys: &[&TestKey], extra: Value) -> JwtAuthn {
    filter(json!({
        "providers": {"idp": provider(keys, extra)},
        "rules": [
            {"match": {"prefix": "/health"}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}
        ]
    }))
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "llm-gateway", "sub": "alice", "exp": NOW + 300, "iat": NOW - 10})
}

fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut all = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "gw.example".to_string()),
        (":scheme".to_string(), "https".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestView::new(all)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn run(cfg: &JwtAuthn, r: &RequestView) -> JwtOutcome {
    let mut cache = VerifiedCache::new(cfg.cache_size, cfg.max_cached_token_size);
    authenticate(cfg, r, NOW, &mut cache)
}

fn check(cfg: &JwtAuthn, token: &str) -> Result<Vec<Identity>, JwtError> {
    run(
        cfg,
        &req("/v1/chat/completions", &[("authorization", &bearer(token))]),
    )
    .result
}

#[test]
fn valid_token_for_every_algorithm() {
    let rsa = TestKey::rsa("rsa");
    let p256 = TestKey::p256("p256");
    let p384 = TestKey::p384("p384");
    let p521 = TestKey::p521("p521");
    let ed = TestKey::ed25519("ed");
    let hmac = TestKey::hmac(
        "hmac",
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let cfg = simple(&[&rsa, &p256, &p384, &p521, &ed, &hmac], json!({}));
    let cases: Vec<(&TestKey, &str)> = vec![
        (&rsa, "RS256"),
        (&rsa, "RS384"),
        (&rsa, "RS512"),
        (&rsa, "PS256"),
        (&rsa, "PS384"),
        (&rsa, "PS512"),
        (&p256, "ES256"),
        (&p384, "ES384"),
        (&p521, "ES512"),
        (&ed, "EdDSA"),
        (&hmac, "HS256"),
        (&hmac, "HS384"),
        (&hmac, "HS512"),
    ];
    for (key, alg) in cases {
        let token = key.sign_with(alg, &claims());
        let ids = check(&cfg, &token).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(ids.len(), 1, "{alg}");
        assert_eq!(ids[0].claims.sub.as_deref(), Some("alice"));
        // The same token with one signature byte flipped fails.
        let mut bad = token.into_bytes();
        let last = bad.len() - 3;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(
            check(&cfg, &bad).unwrap_err(),
            JwtError::BadSignature,
            "{alg}"
        );
    }
}

#[test]
fn the_denial_matrix() {
    let key = TestKey::rsa("k1");
    let cfg = simple(&[&key], json!({}));
    let with = |patch: Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        key.sign(&c)
    };
    let other = TestKey::rsa_from("rsa2048-b.pem", "k1");
    let cases: Vec<(&str, String, JwtError)> = vec![
        ("expired", with(json!({"exp": NOW - 61})), JwtError::Expired),
        ("exp 0 is 1970", with(json!({"exp": 0})), JwtError::Expired),
        (
            "not yet valid",
            with(json!({"nbf": NOW + 61})),
            JwtError::NotYetValid,
        ),
        (
            "bad issuer",
            with(json!({"iss": "https://evil"})),
            JwtError::UnknownIssuer,
        ),
        (
            "issuer with trailing slash",
            with(json!({"iss": format!("{ISS}/")})),
            JwtError::UnknownIssuer,
        ),
        (
            "bad audience",
            with(json!({"aud": "other"})),
            JwtError::AudienceNotAllowed,
        ),
        (
            "audience not normalised",
            with(json!({"aud": "llm-gateway/"})),
            JwtError::AudienceNotAllowed,
        ),
        (
            "no audience",
            with(json!({"aud": null})),
            JwtError::AudienceNotAllowed,
        ),
        (
            "unknown kid",
            TestKey::rsa("nope").sign(&claims()),
            JwtError::UnknownKid,
        ),
        (
            "other key same kid",
            other.sign(&claims()),
            JwtError::BadSignature,
        ),
    ];
    for (name, token, expected) in cases {
        assert_eq!(check(&cfg, &token).unwrap_err(), expected, "{name}");
    }
}

#[test]
fn clock_skew_is_applied_both_ways() {
    let key = TestKey::ed25519("k");
    let cfg = simple(&[&key], json!({"clock_skew_seconds": 30}));
    let mut c = claims();
    c["exp"] = json!(NOW - 30);
    assert!(check(&cfg, &key.sign(&c)).is_ok());
    c["exp"] = json!(NOW - 31);
    assert_eq!(check(&cfg, &key.sign(&c)).unwrap_err(), JwtError::Expired);
    let mut c = claims();
    c["nbf"] = json!(NOW + 30);
    assert!(check(&cfg, &key.sign(&c)).is_ok());
    c["nbf"] = json!(NOW + 31);
    assert_eq!(
        check(&cfg, &key.sign(&c)).unwrap_err(),
        JwtError::NotYetValid
    );
}

#[test]
fn expiration_and_lifetime_policies() {
    let key = TestKey::ed25519("k");
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(check(&simple(&[&key], json!({})), &key.sign(&no_exp)).is_ok());
    let strict = simple(&[&key], json!({"require_expiration": true}));
    assert_eq!(
        check(&strict, &key.sign(&no_exp)).unwrap_err(),
        JwtError::ExpirationRequired
    );
    let bounded = simple(&[&key], json!({"max_lifetime": "600s"}));
    assert!(check(&bounded, &key.sign(&claims())).is_ok());
    let mut long = claims();
    long["exp"] = json!(NOW + 3600);
    assert_eq!(
        check(&bounded, &key.sign(&long)).unwrap_err(),
        JwtError::LifetimeTooLong
    );
}

#[test]
fn algorithm_confusion_and_none_are_refused() {
    let rsa = TestKey::rsa("k1");
    let cfg = simple(&[&rsa], json!({}));
    // An HS256 token whose HMAC key is the RSA key's public modulus bytes.
    let jwk = rsa.jwk();
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["n"].as_str().unwrap(),
    )
    .unwrap();
    let confused = TestKey::hmac("k1", &n).sign_with("HS256", &claims());
    assert_eq!(check(&cfg, &confused).unwrap_err(), JwtError::UnknownKid);
    let pem_confused =
        TestKey::hmac("k1", jwk.to_string().as_bytes()).sign_with("HS256", &claims());
    assert_eq!(
        check(&cfg, &pem_confused).unwrap_err(),
        JwtError::UnknownKid
    );
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "kid": "k1"}).to_string());
        let payload = b64(claims().to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            assert!(check(&cfg, &token).is_err(), "{alg}");
        }
    }
    // An RSA key used for ES256 never verifies.
    let es = TestKey::p256("k1").sign(&claims());
    assert_eq!(check(&cfg, &es).unwrap_err(), JwtError::UnknownKid);
}

#[test]
fn token_without_kid_is_tried_against_keys_of_its_alg() {
    let a = TestKey::p256("a");
    let rsa = TestKey::rsa("r");
    let cfg = simple(&[&rsa, &a], json!({}));
    let token = a.sign_raw("ES256", &json!({"alg": "ES256"}), &claims());
    assert!(check(&cfg, &token).is_ok());
    let token = TestKey::p384("x").sign_raw("ES384", &json!({"alg": "ES384"}), &claims());
    assert_eq!(check(&cfg, &token).unwrap_err(), JwtError::UnknownKid);
}

#[test]
fn kid_less_keys_verify_tokens_with_any_kid_and_skipped_keys_say_why() {
    let signer = TestKey::ed25519("rotated-kid");
    let mut kidless = signer.jwk();
    kidless.as_object_mut().unwrap().remove("kid");
    let other = TestKey::p256("other");
    let jwks = json!({"keys": [
        other.jwk(),
        {"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"},
        kidless
    ]});
    let cfg = filter(json!({
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks.to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }));
    // A different signature character well inside the segment (the last
    // one carries padding bits).
    let corrupt = |t: String| {
        let at = t.len() - 10;
        let swapped = if &t[at..at + 1] == "A" { "B" } else { "A" };
        format!("{}{swapped}{}", &t[..at], &t[at + 1..])
    };
    assert!(
        check(&cfg, &signer.sign(&claims())).is_ok(),
        "kid is a hint"
    );
    assert!(check(&cfg, &other.sign(&claims())).is_ok());
    // A token naming the skipped key (and no kid-less key of its alg): 401
    // with the reason, no refetch.
    let weak = other.sign_raw("ES256", &json!({"alg": "ES256", "kid": "weak"}), &claims());
    assert_eq!(
        check(&cfg, &weak).unwrap_err(),
        JwtError::UnusableKey("RSA key under 2048 bits")
    );
    // A known kid whose key does not verify: a bad signature, not unknown.
    assert_eq!(
        check(&cfg, &corrupt(other.sign(&claims()))).unwrap_err(),
        JwtError::BadSignature
    );
    // An unknown kid that the kid-less keys do not verify either: unknown
    // (the IdP may have rotated), so remote keys would be fetched again.
    let stranger = signer.sign_raw(
        "EdDSA",
        &json!({"alg": "EdDSA", "kid": "stranger"}),
        &claims(),
    );
    assert!(check(&cfg, &stranger).is_ok());
    assert_eq!(
        check(&cfg, &corrupt(stranger)).unwrap_err(),
        JwtError::UnknownKid
    );
}

#[test]
fn short_hmac_keys_fit_only_the_hashes_they_can_serve() {
    let key = TestKey::hmac("h", &[7u8; 32]);
    let cfg = simple(&[&key], json!({}));
    assert!(check(&cfg, &key.sign_with("HS256", &claims())).is_ok());
    assert_eq!(
        check(&cfg, &key.sign_with("HS512", &claims())).unwrap_err(),
        JwtError::UnknownKid
    );
}

#[test]
fn embedded_keys_are_never_trusted() {
    let attacker = TestKey::hmac("evil", b"attacker-secret");
    let cfg = simple(&[&TestKey::rsa("k1")], json!({}));
    for (member, value) in [
        ("jwk", attacker.jwk()),
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/cert")),
    ] {
        let mut header = json!({"alg": "HS256", "kid": "k1"});
        header[member] = value;
        let token = attacker.sign_raw("HS256", &header, &claims());
        assert_eq!(
            check(&cfg, &token).unwrap_err(),
            JwtError::ForbiddenHeader(member)
        );
    }
}

#[test]
fn missing_malformed_and_multiple_tokens() {
    let key = TestKey::ed25519("k");
    let cfg = simple(&[&key], json!({}));
    let token = key.sign(&claims());
    let out = run(&cfg, &req("/v1/x", &[]));
    assert_eq!(out.result.unwrap_err(), JwtError::Missing);
    let out = run(
        &cfg,
        &req("/v1/x", &[("authorization", "Basic dXNlcjpwYXNz")]),
    );
    assert_eq!(out.result.unwrap_err(), JwtError::Missing);
    let out = run(&cfg, &req("/v1/x", &[("authorization", "Bearer")]));
    assert!(matches!(out.result.unwrap_err(), JwtError::BadFormat(_)));
    let out = run(
        &cfg,
        &req("/v1/x", &[("authorization", "Bearer not-a-jwt")]),
    );
    assert!(matches!(out.result.unwrap_err(), JwtError::BadFormat(_)));
    let two = [
        ("authorization", bearer(&token)),
        ("authorization", bearer(&token)),
    ];
    let two: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        run(&cfg, &req("/v1/x", &two)).result.unwrap_err(),
        JwtError::MultipleTokens
    );
}

#[test]
fn bearer_scheme_is_case_insensitive_and_query_is_the_fallback() {
    let key = TestKey::ed25519("k");
    let cfg = simple(&[&key], json!({}));
    let token = key.sign(&claims());
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        assert!(
            run(&cfg, &req("/v1/x", &[("authorization", &value)]))
                .result
                .is_ok(),
            "{scheme}"
        );
    }
    let out = run(&cfg, &req(&format!("/v1/x?a=1&access_token={token}"), &[]));
    assert!(out.result.is_ok());
    // forward: false strips the parameter and keeps the others.
    assert!(out
        .header_ops
        .contains(&HeaderOp::set(":path", "/v1/x?a=1")));
}

#[test]
fn token_is_removed_unless_forward() {
    let key = TestKey::ed25519("k");
    let token = key.sign(&claims());
    let r = req("/v1/x", &[("authorization", &bearer(&token))]);
    let out = run(&simple(&[&key], json!({})), &r);
    assert!(out.header_ops.contains(&HeaderOp::remove("authorization")));
    let out = run(&simple(&[&key], json!({"forward": true})), &r);
    assert!(!out.header_ops.contains(&HeaderOp::remove("authorization")));
}

#[test]
fn forward_false_strips_every_location_whatever_it_holds() {
    let key = TestKey::ed25519("k");
    let token = key.sign(&claims());
    let other =
        key.sign(&json!({"iss": ISS, "aud": "llm-gateway", "sub": "mallory", "exp": NOW + 300}));
    let cfg = simple(
        &[&key],
        json!({"from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
               "from_params": ["access_token"], "from_cookies": ["session"]}),
    );
    let upstream = |r: &RequestView| {
        let out = run(&cfg, r);
        assert!(out.result.is_ok(), "{:?}", out.result);
        let mut seen = r.clone();
        seen.apply(&out.header_ops);
        seen
    };
    // The same token in every location: one token, every copy removed.
    let cookie = format!("a=1; session={token}");
    let r = req(
        &format!("/v1/x?access_token={token}&b=2"),
        &[("authorization", &bearer(&token)), ("cookie", &cookie)],
    );
    let seen = upstream(&r);
    assert_eq!(seen.path(), "/v1/x?b=2");
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("cookie"), Some("a=1"));
    // A location that holds no token of ours (another scheme) is emptied too.
    let r = req(
        &format!("/v1/x?access_token={token}"),
        &[("authorization", "Basic dXNlcjpwYXNz")],
    );
    let seen = upstream(&r);
    assert_eq!((seen.path(), seen.header("authorization")), ("/v1/x", None));
    // An escaped parameter name is the same parameter upstream.
    let r = req(
        "/v1/x?access%5Ftoken=junk",
        &[("authorization", &bearer(&token))],
    );
    assert_eq!(upstream(&r).path(), "/v1/x");
    // Two different tokens: refused, whichever is valid (Envoy verifies both).
    for (path, headers) in [
        (
            format!("/v1/x?access_token={other}"),
            vec![("authorization", bearer(&token))],
        ),
        (
            "/v1/x".to_string(),
            vec![
                ("authorization", bearer(&token)),
                ("cookie", format!("session={other}")),
            ],
        ),
        (
            "/v1/x?access_token=not-a-jwt".to_string(),
            vec![("authorization", bearer(&token))],
        ),
        (
            "/v1/x".to_string(),
            vec![
                ("authorization", bearer(&token)),
                ("cookie", "session=junk".to_string()),
            ],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            run(&cfg, &req(&path, &headers)).result.unwrap_err(),
            JwtError::MultipleTokens,
            "{path}"
        );
    }
    // forward: true keeps the token where it is.
    let fwd = simple(&[&key], json!({"forward": true}));
    let r = req(
        &format!("/v1/x?access_token={token}"),
        &[("authorization", &bearer(&token))],
    );
    let out = run(&fwd, &r);
    assert!(out.result.is_ok());
    assert!(!out
        .header_ops
        .iter()
        .any(|op| op.name() == ":path" || op.name() == "authorization"));
}

#[test]
fn a_location_a_forwarding_provider_verified_is_kept() {
    let a = TestKey::ed25519("a");
    let b = TestKey::ed25519("b");
    let cfg = filter(json!({
        "providers": {
            "strip": provider(&[&a], json!({"issuer": "https://a"})),
            "keep": provider(&[&b], json!({"forward": true, "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}]}))
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "strip"}, {"provider_name": "keep"}]}}}]
    }));
    let token = b.sign(&claims());
    let r = req(
        "/v1/x?access_token=junk",
        &[("authorization", &bearer(&token))],
    );
    let out = run(&cfg, &r);
    assert!(out.result.is_ok(), "{:?}", out.result);
    assert!(
        !out.header_ops.contains(&HeaderOp::remove("authorization")),
        "{:?}",
        out.header_ops
    );
    assert!(
        out.header_ops.contains(&HeaderOp::set(":path", "/v1/x")),
        "{:?}",
        out.header_ops
    );
}

#[test]
fn custom_locations_and_cookie_stripping() {
    let key = TestKey::ed25519("k");
    let cfg = simple(
        &[&key],
        json!({"from_headers": [{"name": "x-jwt", "value_prefix": "Token "}], "from_cookies": ["session"]}),
    );
    let token = key.sign(&claims());
    let v = format!("Token {token}");
    assert!(run(&cfg, &req("/v1/x", &[("x-jwt", &v)])).result.is_ok());
    // The default locations are not used when locations are configured.
    assert_eq!(
        run(&cfg, &req("/v1/x", &[("authorization", &bearer(&token))]))
            .result
            .unwrap_err(),
        JwtError::Missing
    );
    let cookie = format!("a=1; session={token}; b=2");
    let out = run(&cfg, &req("/v1/x", &[("cookie", &cookie)]));
    assert!(out.result.is_ok());
    assert!(out
        .header_ops
        .contains(&HeaderOp::set("cookie", "a=1; b=2")));
}

#[test]
fn claim_headers_overwrite_and_remove_client_values() {
    let key = TestKey::ed25519("k");
    let cfg = simple(
        &[&key],
        json!({"claim_to_headers": [
            {"header_name": "x-user", "claim_name": "sub"},
            {"header_name": "x-roles", "claim_name": "realm_access.roles"},
            {"header_name": "x-tenant", "claim_name": "tenant"}
        ], "forward_payload_header": "x-jwt-payload"}),
    );
    let mut c = claims();
    c["realm_access"] = json!({"roles": ["llm-user", "admin"]});
    let token = key.sign(&c);
    let out = run(
        &cfg,
        &req(
            "/v1/x",
            &[
                ("authorization", &bearer(&token)),
                ("x-user", "mallory"),
                ("x-tenant", "spoofed"),
            ],
        ),
    );
    assert!(out.result.is_ok());
    let ops = out.header_ops;
    let pos = |op: &HeaderOp| {
        ops.iter()
            .position(|o| o == op)
            .unwrap_or_else(|| panic!("{op:?} in {ops:?}"))
    };
    assert!(pos(&HeaderOp::remove("x-user")) < pos(&HeaderOp::set("x-user", "alice")));
    pos(&HeaderOp::set("x-roles", "llm-user,admin"));
    // No tenant claim: the client's value is removed and nothing replaces it.
    pos(&HeaderOp::remove("x-tenant"));
    assert!(!ops
        .iter()
        .any(|o| matches!(o, HeaderOp::Set(n, _) if n == "x-tenant")));
    let payload = token.split('.').nth(1).unwrap();
    pos(&HeaderOp::set("x-jwt-payload", payload));
}

#[test]
fn routes_choose_requirements() {
    let key = TestKey::ed25519("k");
    let cfg = simple(&[&key], json!({}));
    let out = run(&cfg, &req("/health", &[]));
    assert!(out.result.is_ok());
    assert_eq!(out.rule, Some(0));
    assert_eq!(run(&cfg, &req("/v1/x", &[])).rule, Some(1));
}

fn two_providers(requires: Value) -> (JwtAuthn, TestKey, TestKey) {
    let a = TestKey::ed25519("a");
    let b = TestKey::p256("b");
    let mut pb = provider(&[&b], json!({"from_headers": [{"name": "x-other"}]}));
    pb["issuer"] = json!("https://other");
    let cfg = filter(json!({
        "providers": {"a": provider(&[&a], json!({})), "b": pb},
        "rules": [{"match": {"prefix": "/"}, "requires": requires}]
    }));
    (cfg, a, b)
}

#[test]
fn requires_any_all_and_allow_missing() {
    let (cfg, a, b) = two_providers(
        json!({"requires_any": {"requirements": [{"provider_name": "a"}, {"provider_name": "b"}]}}),
    );
    let ta = a.sign(&claims());
    let mut cb = claims();
    cb["iss"] = json!("https://other");
    let tb = b.sign(&cb);
    let ha = bearer(&ta);
    assert!(run(&cfg, &req("/", &[("authorization", &ha)]))
        .result
        .is_ok());
    assert!(run(&cfg, &req("/", &[("x-other", &tb)])).result.is_ok());
    assert_eq!(
        run(&cfg, &req("/", &[])).result.unwrap_err(),
        JwtError::Missing
    );
    // The reported error is the token's, not "missing" from the other provider.
    let expired = {
        let mut c = claims();
        c["exp"] = json!(NOW - 100);
        bearer(&a.sign(&c))
    };
    assert_eq!(
        run(&cfg, &req("/", &[("authorization", &expired)]))
            .result
            .unwrap_err(),
        JwtError::Expired
    );

    let (cfg, ..) = two_providers(
        json!({"requires_all": {"requirements": [{"provider_name": "a"}, {"provider_name": "b"}]}}),
    );
    assert_eq!(
        run(&cfg, &req("/", &[("authorization", &ha)]))
            .result
            .unwrap_err(),
        JwtError::Missing
    );
    let both = run(&cfg, &req("/", &[("authorization", &ha), ("x-other", &tb)]));
    assert_eq!(both.result.unwrap().len(), 2);

    let (cfg, ..) = two_providers(json!({"allow_missing": {}}));
    assert!(run(&cfg, &req("/", &[])).result.is_ok());
    assert!(run(&cfg, &req("/", &[("authorization", &ha)]))
        .result
        .is_ok());
    assert_eq!(
        run(&cfg, &req("/", &[("authorization", &expired)]))
            .result
            .unwrap_err(),
        JwtError::Expired
    );

    let (cfg, ..) = two_providers(json!({"allow_missing_or_failed": {}}));
    let out = run(&cfg, &req("/", &[("authorization", &expired)]));
    assert!(out.result.unwrap().is_empty());
    assert_eq!(
        run(&cfg, &req("/", &[("authorization", &ha)]))
            .result
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn provider_and_audiences_overrides_the_audience_list() {
    let (cfg, a, _) = two_providers(
        json!({"provider_and_audiences": {"provider_name": "a", "audiences": ["special"]}}),
    );
    let h = bearer(&a.sign(&claims()));
    assert_eq!(
        run(&cfg, &req("/", &[("authorization", &h)]))
            .result
            .unwrap_err(),
        JwtError::AudienceNotAllowed
    );
    let mut c = claims();
    c["aud"] = json!(["x", "special"]);
    let h = bearer(&a.sign(&c));
    assert!(run(&cfg, &req("/", &[("authorization", &h)]))
        .result
        .is_ok());
}

#[test]
fn claim_rules_give_403_insufficient_scope() {
    let key = TestKey::ed25519("k");
    let cfg = filter(json!({
        "providers": {"idp": provider(&[&key], json!({}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"},
                   "claim_rules": [{"claim": "realm_access.roles", "contains": "llm-user"},
                                   {"claim": "scope", "contains": "chat"}]}]
    }));
    let mut c = claims();
    c["realm_access"] = json!({"roles": ["llm-user"]});
    c["scope"] = json!("openid chat");
    assert!(check(&cfg, &key.sign(&c)).is_ok());
    c["scope"] = json!("openid");
    let err = check(&cfg, &key.sign(&c)).unwrap_err();
    assert_eq!(err, JwtError::ClaimRuleFailed("scope".into()));
    assert_eq!(err.denial().status, 403);
    assert_eq!(err.denial().error, Some("insufficient_scope"));
}

#[test]
fn cache_hit_skips_the_signature_and_respects_exp() {
    let key = TestKey::rsa("k1");
    let cfg = simple(&[&key], json!({"clock_skew_seconds": 0}));
    let token = key.sign(&claims());
    let r = req("/v1/x", &[("authorization", &bearer(&token))]);
    let mut cache = VerifiedCache::new(cfg.cache_size, cfg.max_cached_token_size);
    let first = authenticate(&cfg, &r, NOW, &mut cache);
    assert!(first.result.is_ok());
    assert!(first.counters.contains(&Counter::JwtCacheMiss));
    let second = authenticate(&cfg, &r, NOW + 1, &mut cache);
    assert!(second.result.is_ok());
    assert!(second.counters.contains(&Counter::JwtCacheHit));
    // Same header ops on a hit as on a miss.
    assert_eq!(first.header_ops, second.header_ops);
    // Past exp the cached entry is not used.
    let late = authenticate(&cfg, &r, NOW + 301, &mut cache);
    assert_eq!(late.result.unwrap_err(), JwtError::Expired);
    assert!(late.counters.contains(&Counter::JwtCacheMiss));
}

#[test]
fn cors_preflight_bypass() {
    let key = TestKey::ed25519("k");
    let mut cfg = simple(&[&key], json!({}));
    let mut r = vec![
        (":method".to_string(), "OPTIONS".to_string()),
        (":path".to_string(), "/v1/x".to_string()),
        ("origin".to_string(), "https://app".to_string()),
        (
            "access-control-request-method".to_string(),
            "POST".to_string(),
        ),
    ];
    let preflight = RequestView::new(r.clone());
    assert_eq!(run(&cfg, &preflight).result.unwrap_err(), JwtError::Missing);
    cfg.bypass_cors_preflight = true;
    let out = run(&cfg, &preflight);
    assert!(out.result.is_ok());
    assert_eq!(out.counters, vec![Counter::JwtCorsPreflightBypassed]);
    r.pop();
    assert!(run(&cfg, &RequestView::new(r)).result.is_err());
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let key = TestKey::rsa("k1");
    let cfg = simple(&[&key], json!({}));
    let dots = ".".repeat(5000);
    let big = "A".repeat(60 * 1024);
    let hostile = [
        dots.as_str(),
        big.as_str(),
        "\u{fffd}\u{fffd}.\u{fffd}.x",
        "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.",
        "eyJ.eyJ.eyJ",
        "e30.e30.e30",
        "bnVsbA.bnVsbA.bnVsbA",
        "W10.W10.W10",
        "IiI.IiI.IiI",
    ];
    for h in hostile {
        let value = format!("Bearer {h}");
        let out = run(&cfg, &req("/v1/x", &[("authorization", &value)]));
        assert!(out.result.is_err(), "{h:.40}");
    }
    // And a good token still passes afterwards.
    assert!(check(&cfg, &key.sign(&claims())).is_ok());
}

#[test]
fn denial_replies_follow_rfc_6750() {
    let key = TestKey::ed25519("k");
    let cfg = simple(&[&key], json!({}));
    let r = req("/v1/chat?x=1", &[]);
    assert_eq!(realm(&cfg, &r), "https://gw.example/v1/chat");
    let reply = JwtError::Missing.denial().to_reply(&realm(&cfg, &r));
    assert_eq!(reply.status, 401);
    let error = reply.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.description.as_str()),
        ("missing_token", "Jwt is missing")
    );
}
