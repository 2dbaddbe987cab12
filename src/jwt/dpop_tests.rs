//! DPoP proofs signed by the testkit's fixture keys, valid and broken in
//! every way RFC 9449 §4.3 lists. (The Envoy suite makes its proofs with
//! Python's joserfc instead, as a reference independent of this code.)

use super::*;
use ai_auth_testkit::keys::{b64, TestKey};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const URI: &str = "https://gw.example/v1/chat/completions";

fn cfg() -> Dpop {
    Dpop::compile(serde_json::from_value(json!({})).unwrap()).unwrap()
}

fn public_jwk(key: &TestKey) -> Value {
    let mut jwk = key.jwk();
    jwk.as_object_mut().unwrap().remove("kid");
    jwk
}

fn proof_with(key: &TestKey, header: Value, payload: Value) -> String {
    let alg = header["alg"].as_str().unwrap_or("none").to_string();
    key.sign_raw(&alg, &header, &payload)
}

fn header(key: &TestKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": public_jwk(key)})
}

fn payload() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URI, "iat": NOW,
           "ath": access_token_hash("the-token")})
}

fn request() -> ProofRequest<'static> {
    ProofRequest {
        method: "POST",
        uri: URI,
        now: NOW,
    }
}

fn check(proof: &str) -> Result<Proof, JwtError> {
    verify(&cfg(), &[proof], request())
}

fn reason(result: Result<Proof, JwtError>) -> &'static str {
    match result {
        Err(JwtError::InvalidDpopProof(why)) => why,
        other => panic!("expected an invalid proof, got {other:?}"),
    }
}

#[test]
fn valid_proofs_for_each_key_type() {
    for key in [
        TestKey::p256("p"),
        TestKey::p384("p"),
        TestKey::p521("p"),
        TestKey::ed25519("e"),
        TestKey::rsa("r"),
    ] {
        let proof = proof_with(&key, header(&key), payload());
        let p = check(&proof).unwrap_or_else(|e| panic!("{}: {e:?}", key.alg()));
        assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
        assert_eq!(p.iat, NOW);
        assert_eq!(
            p.ath.as_deref(),
            Some(access_token_hash("the-token").as_str())
        );
        assert_eq!(p.thumbprint.len(), 43, "base64url of 32 bytes");
    }
    // PS256 with the same RSA key.
    let rsa = TestKey::rsa("r");
    let mut h = header(&rsa);
    h["alg"] = json!("PS256");
    assert!(check(&proof_with(&rsa, h, payload())).is_ok());
}

#[test]
fn thumbprint_follows_rfc_7638() {
    // RFC 7638 section 3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let (_, thumbprint) = public_key(jwk.as_object().unwrap()).unwrap();
    assert_eq!(thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

#[test]
fn request_mismatches_are_refused() {
    let key = TestKey::p256("p");
    let with = |patch: Value| {
        let mut p = payload();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        check(&proof_with(&key, header(&key), p))
    };
    assert_eq!(
        reason(with(json!({"htm": "GET"}))),
        "htm is not the request method"
    );
    assert_eq!(
        reason(with(json!({"htm": "post"}))),
        "htm is not the request method"
    );
    for htu in [
        "https://gw.example/v1/chat",
        "https://other.example/v1/chat/completions",
        "http://gw.example/v1/chat/completions",
        "https://gw.example:8443/v1/chat/completions",
        "gw.example/v1/chat/completions",
    ] {
        assert_eq!(
            reason(with(json!({ "htu": htu }))),
            "htu is not the request URI",
            "{htu}"
        );
    }
    for iat in [NOW - 61, NOW + 61] {
        assert_eq!(
            reason(with(json!({ "iat": iat }))),
            "iat is outside the accepted window"
        );
    }
    assert!(with(json!({"iat": NOW - 60})).is_ok());
    assert!(with(json!({"iat": NOW + 60})).is_ok());
    for missing in ["jti", "htm", "htu", "iat"] {
        assert!(
            matches!(
                with(json!({ missing: null })),
                Err(JwtError::InvalidDpopProof(_))
            ),
            "{missing}"
        );
    }
    assert_eq!(reason(with(json!({"jti": ""}))), "jti is missing");
    assert_eq!(reason(with(json!({"ath": 1}))), "ath must be a string");
}

#[test]
fn htu_is_compared_after_normalisation() {
    let key = TestKey::ed25519("e");
    for htu in [
        "HTTPS://GW.EXAMPLE/v1/chat/completions",
        "https://gw.example:443/v1/chat/completions",
        "https://gw.example/v1/%63hat/completions",
        "https://gw.example/v1/./chat/x/../completions",
        "https://gw.example/v1/chat/completions?stream=true",
        "https://gw.example/v1/chat/completions#frag",
    ] {
        let mut p = payload();
        p["htu"] = json!(htu);
        assert!(check(&proof_with(&key, header(&key), p)).is_ok(), "{htu}");
    }
    // The request side too: its query is not part of the URI compared.
    let proof = proof_with(&key, header(&key), payload());
    let req = ProofRequest {
        uri: "https://gw.example/v1/chat/completions?api-version=1",
        ..request()
    };
    assert!(verify(&cfg(), &[&proof], req).is_ok());
    assert_eq!(
        normalize_uri("http://a.example:80/%7euser/%2f"),
        Some("http://a.example/~user/%2F".into())
    );
    assert_eq!(
        normalize_uri("http://a.example"),
        Some("http://a.example/".into())
    );
    assert_eq!(normalize_uri("ftp://a.example/"), None);
    assert_eq!(normalize_uri("http://user@a.example/"), None);
    assert_eq!(normalize_uri("http://a.example/%zz"), None);
    // A sign is not a hex digit (`from_str_radix` would read `%+1` as 0x01).
    assert_eq!(normalize_uri("http://a.example/%+1"), None);
}

#[test]
fn keys_and_algorithms_that_are_refused() {
    let key = TestKey::p256("p");
    // A private key in the header: the client just disclosed it.
    let mut h = header(&key);
    h["jwk"]["d"] = json!(b64([7u8; 32]));
    assert_eq!(
        reason(check(&proof_with(&key, h, payload()))),
        "jwk holds a private key"
    );
    // alg none, in any spelling, and a MAC.
    for alg in ["none", "None", ""] {
        let input = format!(
            "{}.{}.",
            b64(json!({"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(&key)}).to_string()),
            b64(payload().to_string())
        );
        assert!(matches!(check(&input), Err(JwtError::InvalidDpopProof(_))));
    }
    let hmac = TestKey::hmac("h", &[9u8; 32]);
    let h = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64([9u8; 32])}});
    assert_eq!(
        reason(check(&proof_with(&hmac, h, payload()))),
        "alg must be asymmetric"
    );
    let h = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": public_jwk(&key)});
    assert_eq!(
        reason(check(&proof_with(&hmac, h, payload()))),
        "alg must be asymmetric"
    );
    // A key of another type than alg says.
    let ed = TestKey::ed25519("e");
    let mut h = header(&ed);
    h["alg"] = json!("ES256");
    assert_eq!(
        reason(check(&proof_with(&key, h, payload()))),
        "jwk does not fit alg"
    );
    // Signed by another key than the one in the header.
    let other = TestKey::p384("o");
    let mut h = header(&other);
    h["alg"] = json!("ES256");
    h["jwk"] = public_jwk(&key);
    let forged = proof_with(&TestKey::p256("p"), h.clone(), payload());
    let tampered = {
        let mut parts: Vec<&str> = forged.split('.').collect();
        let sig = b64([1u8; 64]);
        parts[2] = &sig;
        parts.join(".")
    };
    assert_eq!(
        reason(check(&tampered)),
        "the signature does not verify with jwk"
    );
    // typ, crit, an RSA key under 2048 bits.
    let mut h = header(&key);
    h["typ"] = json!("JWT");
    assert_eq!(
        reason(check(&proof_with(&key, h, payload()))),
        "typ must be dpop+jwt"
    );
    let mut h = header(&key);
    h["crit"] = json!(["x"]);
    assert_eq!(
        reason(check(&proof_with(&key, h, payload()))),
        "crit is not accepted"
    );
    let small = TestKey::rsa_from("rsa1024.pem", "s");
    assert_eq!(
        reason(check(&proof_with(&small, header(&small), payload()))),
        "jwk is not a usable public key"
    );
    // Only the configured algorithms.
    let only_eddsa =
        Dpop::compile(serde_json::from_value(json!({"algorithms": ["EdDSA"]})).unwrap()).unwrap();
    let proof = proof_with(&key, header(&key), payload());
    assert_eq!(
        reason(verify(&only_eddsa, &[&proof], request())),
        "alg is not accepted"
    );
}

#[test]
fn header_count_and_shape() {
    let key = TestKey::p256("p");
    let proof = proof_with(&key, header(&key), payload());
    assert_eq!(
        reason(verify(&cfg(), &[], request())),
        "the DPoP header is missing"
    );
    assert_eq!(
        reason(verify(&cfg(), &[&proof, &proof], request())),
        "more than one DPoP header"
    );
    for bad in [
        "a.b",
        "a.b.c.d",
        "",
        "x".repeat(MAX_PROOF_BYTES + 1).as_str(),
    ] {
        assert!(matches!(
            verify(&cfg(), &[bad], request()),
            Err(JwtError::InvalidDpopProof(_))
        ));
    }
}

#[test]
fn configuration_is_checked() {
    let compile = |v: Value| Dpop::compile(serde_json::from_value(v).unwrap());
    assert_eq!(
        compile(json!({"algorithms": ["HS256"]})).unwrap_err().path,
        "algorithms[0]"
    );
    assert_eq!(
        compile(json!({"algorithms": ["none"]})).unwrap_err().path,
        "algorithms[0]"
    );
    assert_eq!(
        compile(json!({"algorithms": []})).unwrap_err().path,
        "algorithms"
    );
    assert_eq!(
        compile(json!({"max_age": "0s"})).unwrap_err().path,
        "max_age"
    );
    assert_eq!(
        compile(json!({"max_age": "2h"})).unwrap_err().path,
        "max_age"
    );
    assert_eq!(
        compile(json!({"replay_cache_entries": 1}))
            .unwrap_err()
            .path,
        "replay_cache_entries"
    );
    let d = compile(json!({"required": true, "max_age": "30s", "algorithms": ["ES256"]})).unwrap();
    assert_eq!(
        (d.required, d.max_age, d.algs.as_slice()),
        (true, 30, &[Alg::ES256][..])
    );
}
