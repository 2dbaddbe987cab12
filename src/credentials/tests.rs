use super::*;
use crate::jwt::token::Claims;
use serde_json::json;
use std::sync::Arc;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_KEY" => Some("sk-openai-test".into()),
        "ACME_KEY" => Some("sk-acme".into()),
        _ => None,
    }
}

fn compile(v: Value) -> Result<UpstreamCredentials, ConfigError> {
    UpstreamCredentials::compile(serde_json::from_value(v).unwrap(), &env)
}

fn creds(v: Value) -> UpstreamCredentials {
    compile(v).unwrap_or_else(|e| panic!("{e}"))
}

fn req(path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut all = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestView::new(all)
}

fn identity(claims: Value) -> Identity {
    Identity {
        provider: "idp".into(),
        claims: Arc::new(Claims {
            iss: None,
            sub: None,
            aud: vec![],
            exp: None,
            nbf: None,
            iat: None,
            payload: claims.as_object().unwrap().clone(),
            payload_b64: String::new(),
        }),
    }
}

/// Applies the plan to the request and returns what the provider would see.
fn upstream_view(c: &UpstreamCredentials, r: &RequestView, ids: &[Identity]) -> RequestView {
    match c.plan(r, ids, &[], 0) {
        CredentialOutcome::Inject { ops, .. } => {
            let mut seen = r.clone();
            seen.apply(&ops);
            seen
        }
        other => panic!("expected injection, got {other:?}"),
    }
}

fn all_schemes() -> UpstreamCredentials {
    creds(json!({
        "backends": {
            "openai": {"scheme": "openai", "secret": {"environment_variable": "OPENAI_KEY"}},
            "azure": {"scheme": "azure_api_key", "secret": {"inline_string": "azure-secret"}},
            "anthropic": {"scheme": "anthropic", "secret": {"inline_string": "anthropic-secret"}},
            "gemini": {"scheme": "gemini", "secret": {"inline_string": "gemini-secret"}},
            "custom": {"scheme": "header", "header": "X-Custom-Key", "prefix": "Key ", "secret": {"inline_string": "custom-secret"}}
        },
        "routes": [
            {"match": {"prefix": "/openai/"}, "backend": "openai"},
            {"match": {"prefix": "/azure/"}, "backend": "azure"},
            {"match": {"prefix": "/anthropic/"}, "backend": "anthropic"},
            {"match": {"prefix": "/gemini/"}, "backend": "gemini"},
            {"match": {"prefix": "/custom/"}, "backend": "custom"},
            {"match": {"prefix": "/health"}, "pass_through": true}
        ],
        "strip_cookies": ["session"]
    }))
}

const CLIENT_SHAPES: [(&str, &str); 7] = [
    ("authorization", "Bearer client-token"),
    ("Authorization", "Basic dXNlcjpwYXNz"),
    ("proxy-authorization", "Bearer proxy-token"),
    ("x-api-key", "client-x-api-key"),
    ("api-key", "client-api-key"),
    ("x-goog-api-key", "client-goog-key"),
    ("cookie", "a=1; session=client-session"),
];

#[test]
fn every_scheme_sees_only_its_credential() {
    let c = all_schemes();
    let expected: [(&str, &str, &str); 5] = [
        (
            "/openai/v1/chat/completions",
            "authorization",
            "Bearer sk-openai-test",
        ),
        ("/azure/openai/deployments/x", "api-key", "azure-secret"),
        ("/anthropic/v1/messages", "x-api-key", "anthropic-secret"),
        ("/gemini/v1beta/models", "x-goog-api-key", "gemini-secret"),
        ("/custom/x", "x-custom-key", "Key custom-secret"),
    ];
    for (path, header, value) in expected {
        let r = req(
            &format!("{path}?key=client-key&access_token=client-at&x=1"),
            &CLIENT_SHAPES,
        );
        let seen = upstream_view(&c, &r, &[]);
        assert_eq!(
            seen.header_values(header).collect::<Vec<_>>(),
            [value],
            "{path}"
        );
        for (name, _) in CLIENT_SHAPES {
            if name.eq_ignore_ascii_case(header) || name == "cookie" {
                continue;
            }
            assert_eq!(seen.header(name), None, "{path}: {name} must be stripped");
        }
        assert_eq!(seen.header("cookie"), Some("a=1"), "{path}");
        assert_eq!(seen.path(), format!("{path}?x=1"));
        let everything = format!("{:?} {}", seen.headers(), seen.path());
        assert!(
            !everything.contains("client-"),
            "{path}: a client credential survived: {everything}"
        );
    }
}

#[test]
fn anthropic_version_defaults_but_the_clients_is_kept() {
    let c = all_schemes();
    let seen = upstream_view(&c, &req("/anthropic/v1/messages", &[]), &[]);
    assert_eq!(
        seen.header("anthropic-version"),
        Some(DEFAULT_ANTHROPIC_VERSION)
    );
    let seen = upstream_view(
        &c,
        &req(
            "/anthropic/v1/messages",
            &[("anthropic-version", "2024-01-01")],
        ),
        &[],
    );
    assert_eq!(seen.header("anthropic-version"), Some("2024-01-01"));
}

#[test]
fn pass_through_and_no_backend() {
    let c = all_schemes();
    assert_eq!(
        c.plan(&req("/health", &[("authorization", "x")]), &[], &[], 0),
        CredentialOutcome::PassThrough
    );
    match c.plan(&req("/elsewhere", &[]), &[], &[], 0) {
        CredentialOutcome::Deny(reply) => assert_eq!(reply.status, 403),
        other => panic!("{other:?}"),
    }
    let open = creds(json!({
        "backends": {"openai": {"scheme": "openai", "secret": {"inline_string": "k"}}},
        "routes": [{"match": {"prefix": "/v1/"}, "backend": "openai"}],
        "no_backend": "pass_through"
    }));
    assert_eq!(
        open.plan(&req("/elsewhere", &[]), &[], &[], 0),
        CredentialOutcome::PassThrough
    );
}

#[test]
fn per_tenant_keys_by_claim() {
    let c = creds(json!({
        "backends": {"openai": {"scheme": "openai", "secret_by_claim": {
            "claim": "tenant",
            "secrets": {"acme": {"environment_variable": "ACME_KEY"}, "globex": {"inline_string": "sk-globex"}},
            "default": {"inline_string": "sk-shared"}
        }}},
        "routes": [{"backend": "openai"}]
    }));
    let r = req("/v1/chat", &[]);
    let auth = |ids: &[Identity]| {
        upstream_view(&c, &r, ids)
            .header("authorization")
            .map(str::to_string)
    };
    assert_eq!(
        auth(&[identity(json!({"tenant": "acme"}))]).as_deref(),
        Some("Bearer sk-acme")
    );
    assert_eq!(
        auth(&[identity(json!({"tenant": "globex"}))]).as_deref(),
        Some("Bearer sk-globex")
    );
    assert_eq!(
        auth(&[identity(json!({"tenant": "initech"}))]).as_deref(),
        Some("Bearer sk-shared")
    );
    assert_eq!(auth(&[]).as_deref(), Some("Bearer sk-shared"));

    let strict = creds(json!({
        "backends": {"openai": {"scheme": "openai", "secret_by_claim": {
            "claim": "org.id", "secrets": {"42": {"inline_string": "sk-42"}}
        }}},
        "routes": [{"backend": "openai"}]
    }));
    assert_eq!(
        upstream_view(&strict, &r, &[identity(json!({"org": {"id": 42}}))]).header("authorization"),
        Some("Bearer sk-42")
    );
    match strict.plan(&r, &[identity(json!({"org": {"id": 7}}))], &[], 0) {
        CredentialOutcome::Deny(reply) => {
            assert_eq!(reply.status, 403);
            assert!(!String::from_utf8_lossy(&reply.body).contains("sk-"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn routes_by_cluster_and_route_name() {
    let c = creds(json!({
        "backends": {
            "anthropic": {"scheme": "anthropic", "secret": {"inline_string": "a"}},
            "openai": {"scheme": "openai", "secret": {"inline_string": "o"}}
        },
        "routes": [{"cluster": "anthropic_cluster", "backend": "anthropic"}, {"route_name": "oai", "backend": "openai"}]
    }));
    assert!(c.needs_route_info);
    let mut r = req("/v1/messages", &[]);
    r.set_route_info(Some("anthropic_cluster".into()), None);
    assert_eq!(upstream_view(&c, &r, &[]).header("x-api-key"), Some("a"));
    r.set_route_info(Some("other".into()), Some("oai".into()));
    assert_eq!(
        upstream_view(&c, &r, &[]).header("authorization"),
        Some("Bearer o")
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let c = all_schemes();
    let printed = format!("{c:?}");
    for secret in [
        "sk-openai-test",
        "azure-secret",
        "anthropic-secret",
        "gemini-secret",
        "custom-secret",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    let outcome = c.plan(&req("/openai/x", &[]), &[], &[], 0);
    assert!(!format!("{outcome:?}").contains("sk-openai-test"));
}

#[test]
fn configuration_errors_name_the_field() {
    let cases = [
        (
            json!({"backends": {"o": {"scheme": "openai", "secret": {"environment_variable": "MISSING"}}}}),
            "backends.o.secret.environment_variable",
        ),
        (
            json!({"backends": {"o": {"scheme": "openai"}}}),
            "backends.o",
        ),
        (
            json!({"backends": {"o": {"scheme": "header", "secret": {"inline_string": "k"}}}}),
            "backends.o.header",
        ),
        (
            json!({"backends": {"o": {"scheme": "openai", "secret": {"inline_string": "k\r\nx: y"}}}}),
            "backends.o.secret",
        ),
        (
            json!({"backends": {"o": {"scheme": "openai", "secret": {"inline_string": "k"}}}, "routes": [{"backend": "nope"}]}),
            "routes[0].backend",
        ),
        (json!({"backends": {}}), "backends"),
    ];
    for (cfg, path) in cases {
        let err = compile(cfg).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert!(!err.reason.contains("k\r\n"));
    }
}

#[test]
fn oauth2_tokens_are_injected_while_usable_and_never_after() {
    let c = compile(json!({
        "backends": {"azure": {"scheme": "bearer", "oauth2": {
            "token_uri": {"uri": "https://login.example/t/oauth2/v2.0/token", "cluster": "entra"},
            "client_id": "id", "client_secret": {"environment_variable": "OPENAI_KEY"},
            "scopes": ["https://cognitiveservices.azure.com/.default"]}}},
        "routes": [{"backend": "azure"}]
    }))
    .unwrap();
    assert_eq!(c.fetched_backends().filter(Option::is_some).count(), 1);
    let r = req(
        "/openai/deployments/x",
        &[("authorization", "Bearer client")],
    );
    let token = |expires_at| {
        vec![Some(Arc::new(fetch::Lease {
            credential: fetch::Credential::Bearer(Secret::new("entra-token".into())),
            expires_at,
            usable_until: expires_at - 10,
        }))]
    };
    match c.plan(&r, &[], &token(1000), 100) {
        CredentialOutcome::Inject { ops, .. } => {
            let mut seen = r.clone();
            seen.apply(&ops);
            assert_eq!(
                seen.header_values("authorization").collect::<Vec<_>>(),
                ["Bearer entra-token"]
            );
        }
        other => panic!("{other:?}"),
    }
    for tokens in [vec![None], token(105), token(110)] {
        match c.plan(&r, &[], &tokens, 100) {
            CredentialOutcome::Deny(reply) => {
                assert_eq!(reply.status, 503);
                assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
            }
            other => panic!("{other:?}"),
        }
    }
    let err = compile(
        json!({"backends": {"azure": {"scheme": "bearer", "oauth2": {
        "token_uri": {"uri": "login", "cluster": "entra"}, "client_id": "id",
        "client_secret": {"inline_string": "s"}}}}}),
    )
    .unwrap_err();
    assert_eq!(err.path, "backends.azure.oauth2.token_uri.uri");
}

fn sigv4_backend(extra: Value) -> Result<UpstreamCredentials, ConfigError> {
    let mut sigv4 = json!({
        "region": "us-east-1", "host": "bedrock-runtime.us-east-1.amazonaws.com",
        "signed_headers": ["Content-Type"],
        "credentials": {"access_key_id": {"inline_string": "AKIDEXAMPLE"},
                        "secret_access_key": {"inline_string": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
                        "session_token": {"inline_string": "session-token-value"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        sigv4[k] = v.clone();
    }
    compile(
        json!({"backends": {"bedrock": {"scheme": "sigv4", "sigv4": sigv4}},
                   "routes": [{"match": {"prefix": "/"}, "backend": "bedrock"}]}),
    )
}

#[test]
fn sigv4_without_a_body_is_signed_with_the_empty_hash_at_once() {
    let c = sigv4_backend(json!({})).unwrap();
    let r = RequestView::new(
        [
            (":method", "GET"),
            (
                ":path",
                "/foundation-models?key=client&byProvider=anthropic",
            ),
            (":authority", "gateway.local"),
            ("authorization", "Bearer client-jwt"),
            ("x-amz-date", "19990101T000000Z"),
            ("x-amz-security-token", "client-token"),
            ("content-type", "application/json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let CredentialOutcome::Inject {
        ops,
        properties,
        sign_body,
        ..
    } = c.plan(&r, &[], &[], 1_440_938_160)
    else {
        panic!("expected injection");
    };
    assert!(sign_body.is_none());
    let mut seen = r.clone();
    seen.apply(&ops);
    assert_eq!(seen.authority(), "bedrock-runtime.us-east-1.amazonaws.com");
    assert_eq!(seen.path(), "/foundation-models?byProvider=anthropic");
    assert_eq!(seen.header("x-amz-date"), Some("20150830T123600Z"));
    assert_eq!(
        seen.header("x-amz-security-token"),
        Some("session-token-value")
    );
    assert_eq!(
        seen.header("x-amz-content-sha256"),
        Some(sigv4::EMPTY_SHA256)
    );
    let auth = seen.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="),
        "{auth}"
    );
    assert_eq!(seen.header_values("authorization").count(), 1);
    assert!(properties.contains(&(aws::AUTHORIZATION_PROPERTY, auth.to_string())));
    // The secrets never print.
    let printed = format!("{ops:?}");
    assert!(!printed.contains("session-token-value") && !printed.contains("wJalr"));
}

#[test]
fn sigv4_with_a_body_is_signed_once_the_body_is_there() {
    let c = sigv4_backend(json!({"max_body_bytes": 100})).unwrap();
    let mut r = req(
        "/model/m%3A0/invoke",
        &[("content-type", "application/json")],
    );
    r.set_has_body(true);
    let CredentialOutcome::Inject {
        ops,
        properties,
        sign_body,
        ..
    } = c.plan(&r, &[], &[], 1_440_938_160)
    else {
        panic!("expected injection");
    };
    assert!(properties.is_empty());
    assert!(ops
        .iter()
        .all(|op| op.name() != "authorization" || matches!(op, HeaderOp::Remove(_))));
    let pending = sign_body.unwrap();
    assert_eq!(pending.max_body_bytes, 100);
    let a = pending.sign(b"{\"a\":1}");
    let b = pending.sign(b"{\"a\":2}");
    assert_eq!(a.content_sha256, sigv4::sha256_hex(b"{\"a\":1}"));
    assert_ne!(a.authorization, b.authorization);
    assert_eq!(pending.sign(b"").content_sha256, sigv4::EMPTY_SHA256);
}

#[test]
fn sigv4_configuration_is_checked_naming_the_field() {
    for (extra, field) in [
        (
            json!({"region": "US East"}),
            "backends.bedrock.sigv4.region",
        ),
        (json!({"service": ""}), "backends.bedrock.sigv4.service"),
        (json!({"host": "a/b"}), "backends.bedrock.sigv4.host"),
        (
            json!({"signed_headers": ["x-amz-date"]}),
            "backends.bedrock.sigv4.signed_headers[0]",
        ),
        (
            json!({"signed_headers": ["bad header"]}),
            "backends.bedrock.sigv4.signed_headers[0]",
        ),
        (
            json!({"max_body_bytes": 1u64 << 40}),
            "backends.bedrock.sigv4.max_body_bytes",
        ),
        (json!({"credentials": null}), "backends.bedrock.sigv4"),
        (
            json!({"credentials": {"access_key_id": {"environment_variable": "NOPE"},
                                   "secret_access_key": {"inline_string": "s"}}}),
            "backends.bedrock.sigv4.credentials.access_key_id.environment_variable",
        ),
    ] {
        let e = sigv4_backend(extra.clone()).map(|_| ()).unwrap_err();
        assert_eq!(e.path, field, "{extra}: {e}");
    }
    let both = compile(
        json!({"backends": {"b": {"scheme": "sigv4", "secret": {"inline_string": "x"},
        "sigv4": {"region": "r", "host": "h", "credentials": {"access_key_id": {"inline_string": "a"}, "secret_access_key": {"inline_string": "s"}}}}}}),
    );
    assert_eq!(both.map(|_| ()).unwrap_err().path, "backends.b");
    let stray = compile(
        json!({"backends": {"b": {"scheme": "openai", "secret": {"inline_string": "x"},
        "sigv4": {"region": "r", "host": "h"}}}}),
    );
    assert_eq!(stray.map(|_| ()).unwrap_err().path, "backends.b.sigv4");
}

#[test]
fn sigv4_with_web_identity_signs_with_the_fetched_credentials_only_while_usable() {
    let c = sigv4_backend(json!({"credentials": null, "web_identity": {
        "role_arn": "arn:aws:iam::123456789012:role/bedrock",
        "sts_uri": {"uri": "https://sts.us-east-1.amazonaws.com/", "cluster": "sts"},
        "web_identity_token": {"inline_string": "eyJ.token"}}}))
    .unwrap();
    assert_eq!(c.fetched_backends().filter(Option::is_some).count(), 1);
    let r = req("/model/m/invoke", &[]);
    let lease = |expires_at| {
        vec![Some(Arc::new(fetch::Lease {
            credential: fetch::Credential::Aws(Arc::new(sigv4::AwsCredentials {
                access_key_id: "ASIATEMPORARY0001".into(),
                secret_access_key: Secret::new("temp-secret".into()),
                session_token: Some(Secret::new("temp-token".into())),
            })),
            expires_at,
            usable_until: expires_at - 10,
        }))]
    };
    let CredentialOutcome::Inject { ops, .. } = c.plan(&r, &[], &lease(1_000_000), 999_000) else {
        panic!("expected injection");
    };
    let mut seen = r.clone();
    seen.apply(&ops);
    assert!(seen
        .header("authorization")
        .unwrap()
        .contains("Credential=ASIATEMPORARY0001/"));
    assert_eq!(seen.header("x-amz-security-token"), Some("temp-token"));
    for leases in [vec![None], lease(999_005), lease(999_010)] {
        let CredentialOutcome::Deny(reply) = c.plan(&r, &[], &leases, 999_000) else {
            panic!("expected 503");
        };
        assert_eq!(reply.status, 503);
        assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
    }
    let both = sigv4_backend(json!({"web_identity": {
        "role_arn": "arn:aws:iam::1:role/r",
        "sts_uri": {"uri": "https://sts.amazonaws.com/", "cluster": "sts"},
        "web_identity_token": {"inline_string": "t"}}}));
    assert_eq!(both.map(|_| ()).unwrap_err().path, "backends.bedrock.sigv4");
}
