//! RFC 9728 in the real Envoy: the metadata document served at its
//! well-known path, and `resource_metadata` in every challenge on the routes
//! that publish it, never elsewhere.

use crate::support::*;
use serde_json::{json, Value};

fn plugin(key: &TestKey) -> Value {
    json!({"jwt_authn": {
        "providers": {
            "idp": {"issuer": ISS, "audiences": [AUD],
                    "local_jwks": {"inline_string": jwks(&[key]).to_string()}},
            "plain": {"issuer": ISS, "audiences": [AUD],
                      "local_jwks": {"inline_string": jwks(&[key]).to_string()},
                      "from_headers": [{"name": "x-plain-token"}]}
        },
        "rules": [
            {"match": {"prefix": "/v1/"}, "requires": {"provider_name": "idp"},
             "claim_rules": [{"claim": "scope", "contains": "chat"}],
             "protected_resource": {"resource": "https://gw.example.com/v1",
                                    "resource_name": "LLM gateway"}},
            {"match": {"prefix": "/other/"}, "requires": {"provider_name": "plain"}}
        ]
    }})
}

/// The `WWW-Authenticate` parameters of the one challenge of `scheme`.
fn challenge_params(r: &Response, scheme: &str) -> Vec<(String, String)> {
    let line = r
        .headers_named("www-authenticate")
        .into_iter()
        .find(|l| l.starts_with(&format!("{scheme} ")))
        .unwrap_or_else(|| panic!("no {scheme} challenge in {:?}", r.headers));
    line[scheme.len() + 1..]
        .split("\", ")
        .map(|p| {
            let (k, v) = p.split_once("=\"").unwrap();
            (k.to_string(), v.trim_end_matches('"').to_string())
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const METADATA_URL: &str = "https://gw.example.com/.well-known/oauth-protected-resource/v1";

#[test]
fn the_document_is_served_and_every_challenge_on_its_routes_names_it() {
    let key = TestKey::ed25519("k1");
    let gw = Gateway::start(plugin(&key));

    // An agent's first call: 401, and the URL of the metadata.
    let r = gw.post("/v1/chat/completions", &[], b"{}");
    assert_eq!(r.status, 401);
    let params = challenge_params(&r, "Bearer");
    assert_eq!(param(&params, "resource_metadata"), Some(METADATA_URL));
    assert_eq!(param(&params, "scope"), Some("chat"));
    assert_eq!(param(&params, "error"), None, "no token: no error code");

    // It reads the document at the path the URL names (RFC 9728 3.1).
    let path = METADATA_URL.strip_prefix("https://gw.example.com").unwrap();
    let doc = gw.get(path, &[]);
    assert_eq!(doc.status, 200, "{}", doc.text());
    assert_eq!(doc.header("content-type"), Some("application/json"));
    assert_eq!(
        doc.json(),
        json!({"resource": "https://gw.example.com/v1",
               "authorization_servers": [ISS],
               "scopes_supported": ["chat"],
               "bearer_methods_supported": ["header", "query"],
               "resource_name": "LLM gateway"})
    );
    assert_eq!(gw.upstream.count(), 0, "served by the filter itself");
    assert_eq!(gw.envoy.counter("jwt_authn.resource_metadata_served"), 1);

    // Every other answer of the stage on that route names it too.
    let expired = key.sign(&claims_with(json!({"exp": now() - 600})));
    let r = gw.post(
        "/v1/chat/completions",
        &[("authorization", &bearer(&expired))],
        b"{}",
    );
    assert_eq!(r.status, 401);
    let params = challenge_params(&r, "Bearer");
    assert_eq!(param(&params, "error"), Some("invalid_token"));
    assert_eq!(param(&params, "resource_metadata"), Some(METADATA_URL));

    let no_scope = key.sign(&claims_with(json!({"scope": "openid"})));
    let r = gw.post(
        "/v1/chat/completions",
        &[("authorization", &bearer(&no_scope))],
        b"{}",
    );
    assert_eq!(r.status, 403);
    let params = challenge_params(&r, "Bearer");
    assert_eq!(param(&params, "error"), Some("insufficient_scope"));
    assert_eq!(param(&params, "scope"), Some("chat"));
    assert_eq!(param(&params, "resource_metadata"), Some(METADATA_URL));

    let good = key.sign(&claims());
    let r = gw.post(
        "/v1/chat/completions",
        &[("authorization", &bearer(&good))],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A route that publishes no metadata says nothing of it.
    let r = gw.get("/other/x", &[]);
    assert_eq!(r.status, 401);
    let params = challenge_params(&r, "Bearer");
    assert_eq!(param(&params, "resource_metadata"), None);
    assert_eq!(param(&params, "scope"), None);

    // Only GET and HEAD of the exact path are the document; anything else
    // goes the usual way (here: no rule, so to the upstream).
    let before = gw.upstream.count();
    for r in [
        gw.post(path, &[], b"{}"),
        gw.get(&format!("{path}/more"), &[]),
    ] {
        assert!(r.json().get("resource").is_none(), "{}", r.text());
    }
    assert_eq!(gw.upstream.count(), before + 2);
    assert_eq!(gw.envoy.counter("jwt_authn.resource_metadata_served"), 1);
}
