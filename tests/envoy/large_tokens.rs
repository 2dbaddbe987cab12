//! Sizes real identity providers produce: Entra ID tokens with group claims
//! and Keycloak tokens with many roles (20-40 KiB), and key sets of more
//! than 64 KiB (many rotated keys).

use crate::support::*;
use ai_auth_testkit::http::Action;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_40_kib_token_verifies_against_a_large_remote_jwks() {
    let signer = TestKey::rsa("k150");
    // 200 entries (the same public key under 200 kids): about 90 KiB.
    let entry = signer.jwk();
    let keys: Vec<_> = (0..200)
        .map(|i| {
            let mut k = entry.clone();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .collect();
    let jwks = json!({ "keys": keys });
    let jwks_bytes = jwks.to_string().len();
    let idp = Server::start(move |_| Action::json(200, &jwks));
    // Entra ID puts group object ids in `groups`: 800 of them is about 41 KiB.
    let groups: Vec<String> = (0..800)
        .map(|i| format!("{i:08x}-4f1c-4c5e-9a53-7a1b2c3d4e5f"))
        .collect();
    let token = signer.sign(&claims_with(json!({"groups": groups})));
    let upstream = Server::echo();
    let plugin = json!({"jwt_authn": {
        "providers": {"entra": {"issuer": ISS, "audiences": [AUD],
            "remote_jwks": {"http_uri": {"uri": "http://login.test/keys", "cluster": "idp", "timeout": "2s"}},
            "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "entra"}}]
    }});
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(&plugin)],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![
            bootstrap::cluster("upstream", upstream.port),
            bootstrap::cluster("idp", idp.port),
        ],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    let auth = bearer(&token);
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = http::get(
            envoy.port("main"),
            "/v1/models",
            &[("authorization", &auth)],
        )
        .unwrap();
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "token {} bytes, JWKS {jwks_bytes} bytes: {} {}",
        token.len(),
        r.status,
        error_of(&r).1
    );
    assert!(token.len() > 40 * 1024 && jwks_bytes > 64 * 1024);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().unwrap().header("x-user"), Some("alice"));
    assert_eq!(upstream.last().unwrap().header("authorization"), None);
}
