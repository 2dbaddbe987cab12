//! The filter's own errors in the shape each client reads (`error_format`),
//! checked on the wire and with the official `openai` and `anthropic`
//! Python SDKs: the exception an application sees names the cause.

use crate::support::*;
use ai_auth_testkit::sdk;
use serde_json::{json, Value};

fn plugin(key: &TestKey) -> Value {
    json!({
        "jwt_authn": {
            "providers": {"idp": {
                "issuer": ISS, "audiences": [AUD],
                "local_jwks": {"inline_string": jwks(&[key]).to_string()},
                // The Anthropic SDK sends its key as x-api-key.
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}, {"name": "x-api-key"}]
            }},
            "rules": [
                {"match": {"prefix": "/oauth/"}, "requires": {"provider_name": "idp"}, "error_format": "oauth2"},
                {"match": {"prefix": "/"}, "requires": {"provider_name": "idp"},
                 "claim_rules": [{"claim": "realm_access.roles", "contains": "llm-user"}]}
            ]
        },
        "upstream_credentials": {
            "backends": {
                "openai": {"scheme": "openai", "secret": {"inline_string": "sk-test-openai"}},
                "anthropic": {"scheme": "anthropic", "secret": {"inline_string": "sk-ant-test"}, "error_format": "anthropic"}
            },
            "routes": [
                {"match": {"prefix": "/v1/messages"}, "backend": "anthropic"},
                {"match": {"prefix": "/"}, "backend": "openai"}
            ]
        }
    })
}

#[test]
fn each_route_answers_in_its_clients_shape_and_www_authenticate_stays_rfc_6750() {
    let key = TestKey::ed25519("k");
    let gw = Gateway::start(plugin(&key));
    let expired = key.sign(&claims_with(
        json!({"exp": now() - 600, "iat": now() - 900}),
    ));
    let auth = bearer(&expired);

    let r = gw.post("/v1/chat/completions", &[("authorization", &auth)], b"{}");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "Jwt is expired", "type": "authentication_error",
                         "param": null, "code": "invalid_token"}})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );

    let r = gw.post("/v1/messages", &[("x-api-key", &expired)], b"{}");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "Jwt is expired"}})
    );
    assert!(r.header("www-authenticate").is_some());

    let r = gw.post("/oauth/token-info", &[], b"{}");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "missing_token", "error_description": "Jwt is missing"})
    );
    // No token: a bare challenge (RFC 6750 3.1), whatever the body's shape.
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://127.0.0.1:{}/oauth/token-info\"",
                gw.port()
            )
            .as_str()
        )
    );
    let role = key.sign(&claims_with(json!({"realm_access": {"roles": ["guest"]}})));
    let r = gw.post("/v1/messages", &[("x-api-key", &role)], b"{}");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
}

fn call(sdk: &str, base: &str, key: &str, what: &str) -> Value {
    json!({"sdk": sdk, "base_url": base, "api_key": key, "call": what})
}

#[test]
fn the_openai_and_anthropic_sdks_raise_exceptions_that_name_the_cause() {
    let key = TestKey::ed25519("k");
    let gw = Gateway::start(plugin(&key));
    let base = format!("http://127.0.0.1:{}", gw.port());
    let v1 = format!("{base}/v1");
    let expired = key.sign(&claims_with(
        json!({"exp": now() - 600, "iat": now() - 900}),
    ));
    let audience = key.sign(&claims_with(json!({"aud": "other-api"})));
    let no_role = key.sign(&claims_with(json!({"realm_access": {"roles": ["guest"]}})));
    let calls = json!([
        call("openai", &v1, &expired, "chat"),
        call("openai", &v1, &audience, "chat_stream"),
        call("openai", &v1, &no_role, "models"),
        call("openai", &v1, "not-a-jwt", "chat"),
        call("anthropic", &base, &expired, "messages"),
        call("anthropic", &base, &audience, "messages_stream"),
        json!({"sdk": "anthropic", "base_url": base, "api_key": no_role, "auth_token": true, "call": "messages"}),
        // What the OpenAI SDK shows for an RFC 6749 body: the status alone.
        call("openai", &format!("{base}/oauth"), &expired, "chat"),
    ]);
    let results = sdk::run_calls(&calls).unwrap_or_else(|e| panic!("{e}"));
    const DENIED: &str = "PermissionDeniedError";
    const UNAUTHENTICATED: &str = "AuthenticationError";
    let expected = [
        (UNAUTHENTICATED, 401, "Error code: 401 - Jwt is expired"),
        (DENIED, 403, "Audiences in Jwt are not allowed"),
        (
            DENIED,
            403,
            "claim realm_access.roles does not satisfy the rule",
        ),
        (UNAUTHENTICATED, 401, "Jwt is malformed"),
        (UNAUTHENTICATED, 401, "Jwt is expired"),
        (DENIED, 403, "Audiences in Jwt are not allowed"),
        (DENIED, 403, "realm_access.roles"),
        (UNAUTHENTICATED, 401, "Error code: 401"),
    ];
    assert_eq!(results.len(), expected.len());
    for (i, (r, (exception, status, reason))) in results.iter().zip(expected).enumerate() {
        assert_eq!(r["ok"], false, "call {i}: {r}");
        assert_eq!(r["exception"], exception, "call {i}: {r}");
        assert_eq!(r["status"], status, "call {i}: {r}");
        let message = r["message"].as_str().unwrap();
        assert!(
            message.contains(reason),
            "call {i}: {message:?} lacks {reason:?}"
        );
    }
    // The OpenAI SDK's `body` is the `error` object: its fields are the exception's.
    assert_eq!(results[0]["body"]["code"], "invalid_token");
    assert_eq!(results[4]["body"]["error"]["type"], "authentication_error");
    assert!(
        !results[7]["message"].as_str().unwrap().contains("expired"),
        "the OpenAI SDK shows only the status for an RFC 6749 body: {}",
        results[7]
    );
    for r in &results {
        for token in [&expired, &audience, &no_role] {
            assert!(!r.to_string().contains(token.as_str()), "a token in {r}");
        }
    }
}
