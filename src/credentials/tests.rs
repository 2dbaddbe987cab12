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
    assert_eq!(c.oauth2_backends().filter(Option::is_some).count(), 1);
    let r = req(
        "/openai/deployments/x",
        &[("authorization", "Bearer client")],
    );
    let token = |expires_at| {
        vec![Some(Arc::new(oauth2::UpstreamToken {
            access_token: Secret::new("entra-token".into()),
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
