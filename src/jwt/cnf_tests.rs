//! Sender-constrained tokens through the whole JWT stage: DPoP-bound and
//! certificate-bound tokens, their proofs and certificates, in native tests
//! (the Envoy suites repeat the wire cases with a reference library).

use crate::callout::MemoryStore;
use crate::config::FilterConfig;
use crate::jwt::cache::VerifiedCache;
use crate::jwt::challenge::Scheme;
use crate::jwt::config::JwtAuthn;
use crate::jwt::dpop::access_token_hash;
use crate::jwt::error::JwtError;
use crate::jwt::{authenticate_with, JwtOutcome};
use crate::request::RequestView;
use crate::response::HeaderOp;
use crate::stats::Counter;
use ai_auth_testkit::keys::{b64, jwks, TestKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/ai";
const URI: &str = "https://gw.example/v1/chat/completions";

fn config(provider_extra: Value) -> JwtAuthn {
    let idp = TestKey::rsa("idp");
    let mut provider =
        json!({"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&idp]).to_string()}});
    for (k, v) in provider_extra.as_object().unwrap() {
        provider[k] = v.clone();
    }
    let cfg = json!({"jwt_authn": {
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }});
    FilterConfig::from_json(cfg.to_string().as_bytes(), &|_: &str| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .jwt_authn
        .unwrap()
}

/// The RFC 7638 thumbprint of a P-256 test key, computed here independently.
fn thumbprint(key: &TestKey) -> String {
    let jwk = key.jwk();
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap(),
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    b64(Sha256::digest(canonical))
}

fn access_token(cnf: Option<Value>) -> String {
    let mut claims = json!({"iss": ISS, "sub": "agent-7", "exp": NOW + 300, "iat": NOW});
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    TestKey::rsa("idp").sign(&claims)
}

fn proof(key: &TestKey, token: &str, patch: Value) -> String {
    let mut jwk = key.jwk();
    jwk.as_object_mut().unwrap().remove("kid");
    let header = json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": jwk});
    let mut payload = json!({"jti": format!("jti-{}", rand_suffix()), "htm": "POST", "htu": URI,
                             "iat": NOW, "ath": access_token_hash(token)});
    for (k, v) in patch.as_object().unwrap() {
        payload[k] = v.clone();
    }
    key.sign_raw(key.alg(), &header, &payload)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn request(headers: &[(&str, &str)], peer_cert: Option<&str>) -> RequestView {
    let mut all = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/v1/chat/completions".to_string()),
        (":authority".to_string(), "gw.example".to_string()),
        (":scheme".to_string(), "https".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut r = RequestView::new(all);
    r.set_peer_certificate_sha256(peer_cert.map(str::to_string));
    r
}

fn run(cfg: &JwtAuthn, req: &RequestView, store: &MemoryStore) -> JwtOutcome {
    let mut cache = VerifiedCache::new(100, 8192);
    authenticate_with(
        cfg,
        req,
        NOW,
        &mut cache,
        &[],
        store,
        &crate::introspection::Learnt::default(),
    )
}

fn dpop_request(token: &str, proof: &str) -> RequestView {
    let auth = format!("DPoP {token}");
    request(&[("authorization", &auth), ("dpop", proof)], None)
}

fn error(outcome: &JwtOutcome) -> JwtError {
    outcome.result.clone().unwrap_err()
}

#[test]
fn a_dpop_bound_token_with_its_proof_passes_once() {
    let cfg = config(json!({"dpop": {}}));
    let store = MemoryStore::default();
    let key = TestKey::p256("client");
    let token = access_token(Some(json!({"jkt": thumbprint(&key)})));
    let p = proof(&key, &token, json!({}));
    let outcome = run(&cfg, &dpop_request(&token, &p), &store);
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert!(outcome.counters.contains(&Counter::DpopVerified));
    // Token and proof are both removed before the upstream.
    assert!(outcome
        .header_ops
        .contains(&HeaderOp::remove("authorization")));
    assert!(outcome.header_ops.contains(&HeaderOp::remove("dpop")));
    // The same proof again, as another worker VM would see it (same store): a replay.
    let again = run(&cfg, &dpop_request(&token, &p), &store);
    assert_eq!(
        error(&again),
        JwtError::InvalidDpopProof("the proof was used before (jti replayed)")
    );
    assert_eq!(again.scheme, Scheme::Dpop);
    assert!(again.counters.contains(&Counter::DpopReplayed));
    // A new proof for the same token is fine.
    let fresh = proof(&key, &token, json!({}));
    assert!(run(&cfg, &dpop_request(&token, &fresh), &store)
        .result
        .is_ok());
}

#[test]
fn proofs_that_do_not_fit_the_token_are_refused() {
    let cfg = config(json!({"dpop": {}}));
    let store = MemoryStore::default();
    let key = TestKey::p256("client");
    let token = access_token(Some(json!({"jkt": thumbprint(&key)})));
    // ath of another token.
    let p = proof(&key, &token, json!({"ath": access_token_hash("other")}));
    assert_eq!(
        error(&run(&cfg, &dpop_request(&token, &p), &store)),
        JwtError::InvalidDpopProof("ath does not match the access token")
    );
    // No ath at all.
    let p = proof(&key, &token, json!({"ath": null}));
    assert!(matches!(
        error(&run(&cfg, &dpop_request(&token, &p), &store)),
        JwtError::InvalidDpopProof(_)
    ));
    // A valid proof by another key than the token is bound to.
    let thief = TestKey::ed25519("thief");
    let p = proof(&thief, &token, json!({}));
    assert_eq!(
        error(&run(&cfg, &dpop_request(&token, &p), &store)),
        JwtError::InvalidDpopProof("the token is bound to another key")
    );
    // No proof.
    let auth = format!("DPoP {token}");
    let r = request(&[("authorization", &auth)], None);
    assert_eq!(
        error(&run(&cfg, &r, &store)),
        JwtError::InvalidDpopProof("the DPoP header is missing")
    );
}

#[test]
fn bound_tokens_are_never_bearer_tokens() {
    let key = TestKey::p256("client");
    let token = access_token(Some(json!({"jkt": thumbprint(&key)})));
    let bearer = format!("Bearer {token}");
    let store = MemoryStore::default();
    // At a DPoP provider, sent as Bearer (with or without a proof).
    let cfg = config(json!({"dpop": {}}));
    let p = proof(&key, &token, json!({}));
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("authorization", bearer.as_str()), ("dpop", p.as_str())],
    ] {
        let outcome = run(&cfg, &request(&headers, None), &store);
        assert!(matches!(error(&outcome), JwtError::SenderConstraint(_)));
        assert_eq!(outcome.scheme, Scheme::Bearer);
        assert!(outcome.counters.contains(&Counter::SenderConstraintFailed));
    }
    // At a provider without DPoP.
    let plain = config(json!({}));
    assert_eq!(
        error(&run(
            &plain,
            &request(&[("authorization", &bearer)], None),
            &store
        )),
        JwtError::SenderConstraint("Jwt is DPoP-bound; this provider does not accept DPoP")
    );
    // An unbound token passes as Bearer unless DPoP is required.
    let unbound = format!("Bearer {}", access_token(None));
    let r = request(&[("authorization", &unbound)], None);
    assert!(run(&cfg, &r, &store).result.is_ok());
    let required = config(json!({"dpop": {"required": true}}));
    assert_eq!(
        error(&run(&required, &r, &store)),
        JwtError::SenderConstraint("this provider requires DPoP-bound tokens")
    );
    // An unbound token with the DPoP scheme is not accepted either.
    let unbound = access_token(None);
    let p = proof(&key, &unbound, json!({}));
    assert!(matches!(
        error(&run(&cfg, &dpop_request(&unbound, &p), &store)),
        JwtError::SenderConstraint(_)
    ));
}

#[test]
fn a_failed_binding_yields_no_identity_even_when_failure_is_allowed() {
    let key = TestKey::p256("client");
    let token = access_token(Some(json!({"jkt": thumbprint(&key)})));
    let idp = TestKey::rsa("idp");
    let cfg = json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&idp]).to_string()},
                              "dpop": {}, "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing_or_failed": {}}}]
    }});
    let cfg = FilterConfig::from_json(cfg.to_string().as_bytes(), &|_: &str| None)
        .unwrap()
        .jwt_authn
        .unwrap();
    let bearer = format!("Bearer {token}");
    let outcome = run(
        &cfg,
        &request(&[("authorization", &bearer)], None),
        &MemoryStore::default(),
    );
    assert!(outcome.result.as_ref().unwrap().is_empty(), "no identity");
    assert!(!outcome
        .header_ops
        .iter()
        .any(|op| matches!(op, HeaderOp::Set(name, _) if name == "x-sub")));
}

fn cert_digest(der: &[u8]) -> (String, String) {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (hex, b64(digest))
}

#[test]
fn certificate_bound_tokens_need_that_certificate() {
    let cfg = config(json!({"certificate_bound_tokens": {}}));
    assert!(cfg.needs_peer_certificate());
    let store = MemoryStore::default();
    let (hex, x5t) = cert_digest(b"client certificate A");
    let (other_hex, _) = cert_digest(b"client certificate B");
    let token = access_token(Some(json!({"x5t#S256": x5t})));
    let bearer = format!("Bearer {token}");
    let with_cert =
        |cert: Option<&str>| run(&cfg, &request(&[("authorization", &bearer)], cert), &store);
    let ok = with_cert(Some(&hex));
    assert!(ok.result.is_ok(), "{:?}", ok.result);
    assert!(ok.counters.contains(&Counter::CertificateBoundVerified));
    assert!(with_cert(Some(&hex.to_ascii_uppercase())).result.is_ok());
    assert_eq!(
        error(&with_cert(Some(&other_hex))),
        JwtError::SenderConstraint(
            "Jwt is bound to another client certificate than the connection's"
        )
    );
    assert_eq!(
        error(&with_cert(None)),
        JwtError::SenderConstraint(
            "Jwt is bound to a client certificate and the connection presented none"
        )
    );
    // Unbound tokens pass unless binding is required.
    let unbound = format!("Bearer {}", access_token(None));
    let r = request(&[("authorization", &unbound)], Some(&hex));
    assert!(run(&cfg, &r, &store).result.is_ok());
    let required = config(json!({"certificate_bound_tokens": {"required": true}}));
    assert!(matches!(
        error(&run(&required, &r, &store)),
        JwtError::SenderConstraint(_)
    ));
    // A provider that does not check certificates refuses a bound token.
    let plain = config(json!({}));
    assert!(!plain.needs_peer_certificate());
    assert!(matches!(
        error(&run(
            &plain,
            &request(&[("authorization", &bearer)], Some(&hex)),
            &store
        )),
        JwtError::SenderConstraint(_)
    ));
    // A malformed cnf is a malformed token.
    let bad = format!("Bearer {}", access_token(Some(json!("x"))));
    assert!(matches!(
        error(&run(
            &cfg,
            &request(&[("authorization", &bad)], Some(&hex)),
            &store
        )),
        JwtError::BadPayload(_)
    ));
}

#[test]
fn challenges_name_the_dpop_scheme_and_its_algorithms() {
    let cfg = config(json!({"dpop": {"algorithms": ["ES256", "EdDSA"]}}));
    assert_eq!(
        cfg.rules[0].challenge.dpop_algs.as_deref(),
        Some("ES256 EdDSA")
    );
    assert!(cfg.rules[0].challenge.bearer);
    let required = config(json!({"dpop": {"required": true}}));
    assert!(!required.rules[0].challenge.bearer);
    let plain = config(json!({}));
    assert_eq!(plain.rules[0].challenge.dpop_algs, None);
}
