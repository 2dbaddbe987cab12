//! The verified-token cache shared by the worker VMs (issue 14): a token is
//! verified once per Envoy, not once per worker.

use crate::support::*;
use serde_json::{json, Value};

const WORKERS: u32 = 4;

fn plugin(key: &TestKey, audience: &str) -> Value {
    json!({"jwt_authn": {
        "providers": {"idp": {
            "issuer": ISS,
            "audiences": [audience],
            "local_jwks": {"inline_string": jwks(&[key]).to_string()}
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }})
}

fn start(listeners: Vec<(&str, Value)>, concurrency: u32) -> (Envoy, Server) {
    let gw = Gateway::start_listeners(
        wasm_listeners(listeners, &[]),
        vec![],
        &workers(concurrency),
    );
    (gw.envoy, gw.upstream)
}

#[test]
fn a_token_is_verified_once_per_envoy_whichever_worker_serves_it() {
    let key = TestKey::rsa("rsa-1");
    let (envoy, _upstream) = start(vec![("main", plugin(&key, AUD))], WORKERS);
    let port = envoy.port("main");
    let token = key.sign(&claims());
    let auth = bearer(&token);
    // One token on new connections until every worker has served it twice.
    let served_by = |worker: u32| envoy.connections_by_worker(worker);
    let all_served = || (0..WORKERS).all(|w| served_by(w) >= 2);
    let mut sent = 0;
    while sent < 400 && (sent < 16 || !all_served()) {
        let r = http::get(port, "/v1/models", &[("authorization", &auth)]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        sent += 1;
    }
    let per_worker: Vec<u64> = (0..WORKERS).map(served_by).collect();
    assert!(
        all_served(),
        "every worker must serve for this test: {per_worker:?} after {sent} requests"
    );
    let verifications = envoy.counter("jwt_authn.signature_verifications");
    let shared_hits = envoy.counter("jwt_authn.jwt_shared_cache_hit");
    let local_hits = envoy.counter("jwt_authn.jwt_cache_hit");
    eprintln!(
        "{sent} requests over workers {per_worker:?}: {verifications} signature verification(s), \
         {shared_hits} shared-cache hits, {local_hits} local-cache hits"
    );
    assert_eq!(verifications, 1, "one verification per Envoy");
    assert_eq!(
        shared_hits,
        u64::from(WORKERS - 1),
        "each other worker's first request"
    );
    assert_eq!(local_hits, sent - u64::from(WORKERS));
    assert_eq!(envoy.counter("jwt_authn.allowed"), sent);
    assert_eq!(envoy.counter("jwt_authn.jwt_shared_cache_malformed"), 0);
}

#[test]
fn another_configuration_does_not_reuse_a_shared_verification() {
    let key = TestKey::rsa("rsa-1");
    // Two plugins in one VM (same code, same vm_config): one shared data.
    let (envoy, _upstream) = start(
        vec![
            ("main", plugin(&key, AUD)),
            ("other", plugin(&key, "another-api")),
        ],
        1,
    );
    let token = key.sign(&claims());
    let auth = bearer(&token);
    let r = http::get(
        envoy.port("main"),
        "/v1/models",
        &[("authorization", &auth)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(envoy.counter("jwt_authn.signature_verifications"), 1);
    // The other listener's configuration wants another audience: its own
    // verification, then its own refusal, never the first one's result.
    let r = http::get(
        envoy.port("other"),
        "/v1/models",
        &[("authorization", &auth)],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(envoy.counter("jwt_authn.signature_verifications"), 2);
    assert_eq!(envoy.counter("jwt_authn.jwt_shared_cache_hit"), 0);
}
