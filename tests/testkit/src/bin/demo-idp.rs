//! A small local identity provider for the demo: issues RS256 tokens and
//! publishes its keys the way Keycloak does (OIDC discovery + JWKS).
//!
//!   GET  /token?sub=alice&aud=llm-gateway&expires_in=3600&roles=llm-user  -> the JWT as text
//!   POST /token (form: same fields)                                       -> {"access_token": ..., "token_type": "Bearer", ...}
//!   GET  /realms/demo/.well-known/openid-configuration, /realms/demo/protocol/openid-connect/certs
//!
//! Tokens last an hour unless `expires_in` (seconds) says otherwise.
//!
//! Usage: demo-idp <port> <signing-key.pem> [issuer]   (ends on SIGTERM or SIGINT)

use ai_auth_testkit::demo;
use ai_auth_testkit::http::Action;
use ai_auth_testkit::keys::{jwks, TestKey};
use serde_json::json;
use std::collections::HashMap;

fn params(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('+', " ").replace("%20", " ")))
        .collect()
}

/// How long a token lasts when the caller does not say.
const DEFAULT_EXPIRES_IN: i64 = 3600;

fn main() {
    demo::block_termination();
    let usage = "demo-idp <port> <signing-key.pem> [issuer]";
    let port = demo::port_arg(usage);
    let args: Vec<String> = std::env::args().collect();
    let Some(pem_path) = args.get(2) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    let pem = std::fs::read_to_string(pem_path).expect("signing key");
    let key = TestKey::rsa_pem(&pem, "demo-key-1").expect("RSA key");
    let issuer = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| format!("http://127.0.0.1:{port}/realms/demo"));
    let public_jwks = {
        let mut j = jwks(&[&key]);
        j["keys"][0]["alg"] = json!("RS256");
        j["keys"][0]["use"] = json!("sig");
        j
    };
    eprintln!("demo-idp: issuer {issuer}");
    let iss = issuer;
    demo::serve("demo-idp", port, move |r| {
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        match (r.method.as_str(), path) {
            (_, "/token") => {
                let mut p = params(query);
                if r.method == "POST" {
                    p.extend(params(&String::from_utf8_lossy(&r.body)));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let expires_in: i64 = p
                    .get("expires_in")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_EXPIRES_IN);
                let roles: Vec<&str> = p
                    .get("roles")
                    .map_or("llm-user", String::as_str)
                    .split(',')
                    .collect();
                let claims = json!({
                    "iss": iss,
                    "aud": p.get("aud").map_or("llm-gateway", String::as_str),
                    "sub": p.get("sub").map_or("alice", String::as_str),
                    "azp": "demo-client",
                    "tenant": p.get("tenant").map_or("acme", String::as_str),
                    "iat": now.min(now + expires_in) - 1,
                    "exp": now + expires_in,
                    "realm_access": {"roles": roles},
                    "scope": "openid chat",
                });
                let token = key.sign(&claims);
                if r.method == "POST" {
                    Action::json(
                        200,
                        &json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}),
                    )
                } else {
                    Action::Respond {
                        status: 200,
                        headers: vec![("content-type".into(), "text/plain".into())],
                        body: token.into_bytes(),
                    }
                }
            }
            ("GET", p) if p.ends_with("/.well-known/openid-configuration") => Action::json(
                200,
                &json!({
                    "issuer": iss,
                    "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
                    "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            ),
            ("GET", p) if p.ends_with("/protocol/openid-connect/certs") => {
                Action::json(200, &public_jwks)
            }
            _ => Action::json(404, &json!({"error": "not_found"})),
        }
    });
}
