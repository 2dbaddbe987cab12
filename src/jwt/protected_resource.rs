//! OAuth 2.0 Protected Resource Metadata (RFC 9728): how an agent that got a
//! 401 finds out which authorization server to ask, for which scopes, and
//! whether its token must be sender-constrained.
//!
//! A `protected_resource` block (on a rule, or on a provider for every rule
//! that requires it) becomes one JSON document, built once at load and
//! served as a local reply at `/.well-known/oauth-protected-resource`
//! followed by the resource's path (§3.1). Every `WWW-Authenticate` the JWT
//! stage sends on those routes names the document's URL in
//! `resource_metadata` (§5.1).
//!
//! Facts the filter knows better than a hand-written document (the
//! providers' issuers, whether DPoP or certificate-bound tokens are
//! accepted or required, where tokens are read) are filled in from the
//! providers when the block does not set them.

use crate::response::LocalReply;
use crate::vocab::ConfigError;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The well-known URI suffix registered by RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Wire form: the RFC 9728 §2 members a gateway operator writes.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawProtectedResource {
    /// The resource identifier: an `https` (or, for local use, `http`) URL
    /// without query or fragment.
    resource: String,
    authorization_servers: Option<Vec<String>>,
    scopes_supported: Option<Vec<String>>,
    bearer_methods_supported: Option<Vec<String>>,
    jwks_uri: Option<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    resource_policy_uri: Option<String>,
    resource_tos_uri: Option<String>,
    authorization_details_types_supported: Option<Vec<String>>,
}

/// What the providers behind a block say about themselves.
#[derive(Debug, Default)]
pub struct Facts {
    /// Issuers of the providers, in order, without repeats.
    pub issuers: Vec<String>,
    /// Scope values the route's claim rules ask for.
    pub scopes: Vec<String>,
    /// RFC 6750 methods the providers read tokens with (`header`, `query`).
    pub bearer_methods: Vec<&'static str>,
    /// Proof algorithms accepted for DPoP, when some provider accepts DPoP.
    pub dpop_algs: Vec<&'static str>,
    /// Every provider requires DPoP-bound tokens.
    pub dpop_required: bool,
    /// Some provider accepts certificate-bound tokens (RFC 8705).
    pub certificate_bound: bool,
}

impl Facts {
    fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
        if !list.contains(&item) {
            list.push(item);
        }
    }

    pub fn add_issuer(&mut self, issuer: &str) {
        Self::push_unique(&mut self.issuers, issuer.to_string());
    }

    pub fn add_scope(&mut self, scope: &str) {
        Self::push_unique(&mut self.scopes, scope.to_string());
    }

    pub fn add_bearer_method(&mut self, method: &'static str) {
        Self::push_unique(&mut self.bearer_methods, method);
    }

    pub fn add_dpop_alg(&mut self, alg: &'static str) {
        Self::push_unique(&mut self.dpop_algs, alg);
    }
}

/// A compiled metadata document and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The request path the document is served at (RFC 9728 §3.1).
    pub metadata_path: String,
    /// The document's absolute URL, for `resource_metadata` (§5.1).
    pub metadata_url: String,
    /// The JSON document, serialised once.
    pub document: String,
}

impl ProtectedResource {
    /// Errors name the field relative to the block.
    pub fn compile(raw: RawProtectedResource, facts: &Facts) -> Result<Self, ConfigError> {
        let (origin, path) = split_resource(&raw.resource)?;
        // §3.1: the well-known string goes between the host and the path; a
        // lone terminating slash after the host is dropped first.
        let suffix = if path == "/" { "" } else { path };
        let metadata_path = format!("{WELL_KNOWN}{suffix}");
        let metadata_url = format!("{origin}{metadata_path}");

        let mut doc = Map::new();
        doc.insert("resource".into(), Value::String(raw.resource.clone()));
        let servers = match raw.authorization_servers {
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    check_url(s, &format!("authorization_servers[{i}]"))?;
                }
                list
            }
            None => facts.issuers.clone(),
        };
        insert_list(&mut doc, "authorization_servers", servers);
        let scopes = raw.scopes_supported.unwrap_or_else(|| facts.scopes.clone());
        if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(ConfigError::new(
                "scopes_supported",
                "a scope value must be one non-empty word",
            ));
        }
        insert_list(&mut doc, "scopes_supported", scopes);
        let methods = match raw.bearer_methods_supported {
            Some(list) => {
                if let Some(bad) = list
                    .iter()
                    .find(|m| !["header", "body", "query"].contains(&m.as_str()))
                {
                    return Err(ConfigError::new(
                        "bearer_methods_supported",
                        format!("`{bad}` is not one of header, body, query (RFC 6750)"),
                    ));
                }
                list
            }
            None => facts.bearer_methods.iter().map(|m| m.to_string()).collect(),
        };
        insert_list(&mut doc, "bearer_methods_supported", methods);
        for (name, value) in [
            ("jwks_uri", raw.jwks_uri),
            ("resource_documentation", raw.resource_documentation),
            ("resource_policy_uri", raw.resource_policy_uri),
            ("resource_tos_uri", raw.resource_tos_uri),
        ] {
            if let Some(url) = value {
                check_url(&url, name)?;
                doc.insert(name.into(), Value::String(url));
            }
        }
        if let Some(name) = raw.resource_name {
            doc.insert("resource_name".into(), Value::String(name));
        }
        if let Some(types) = raw.authorization_details_types_supported {
            insert_list(&mut doc, "authorization_details_types_supported", types);
        }
        if facts.certificate_bound {
            doc.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                Value::Bool(true),
            );
        }
        if !facts.dpop_algs.is_empty() {
            insert_list(
                &mut doc,
                "dpop_signing_alg_values_supported",
                facts.dpop_algs.iter().map(|a| a.to_string()).collect(),
            );
            doc.insert(
                "dpop_bound_access_tokens_required".into(),
                Value::Bool(facts.dpop_required),
            );
        }
        Ok(ProtectedResource {
            metadata_path,
            metadata_url,
            document: Value::Object(doc).to_string(),
        })
    }

    /// The document as the answer to `GET` (public: an agent reads it
    /// before it has any token, possibly from a browser).
    pub fn reply(&self) -> LocalReply {
        LocalReply::json(200, self.document.clone())
            .with_header("cache-control", "max-age=300".into())
            .with_header("access-control-allow-origin", "*".into())
    }
}

fn insert_list(doc: &mut Map<String, Value>, name: &str, items: Vec<String>) {
    if !items.is_empty() {
        doc.insert(
            name.into(),
            Value::Array(items.into_iter().map(Value::String).collect()),
        );
    }
}

fn check_url(url: &str, field: &str) -> Result<(), ConfigError> {
    split_resource(url)
        .map(|_| ())
        .map_err(|e| ConfigError::new(field, e.reason))
}

/// `scheme://authority` and the path (at least `/`) of an absolute URL
/// without query or fragment.
fn split_resource(url: &str) -> Result<(&str, &str), ConfigError> {
    let bad = |why: &str| ConfigError::new("resource", format!("{url:?}: {why}"));
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must be an https:// (or http://) URL"))?;
    if url.contains(['?', '#']) {
        return Err(bad("must have no query and no fragment (RFC 9728 1.2)"));
    }
    if url
        .bytes()
        .any(|b| b <= b' ' || b == b'"' || b == b'\\' || b >= 0x7f)
    {
        return Err(bad("must not contain spaces, quotes or control characters"));
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    if host_end == 0 {
        return Err(bad("has no host"));
    }
    let split = url.len() - rest.len() + host_end;
    let origin = url.get(..split).ok_or_else(|| bad("has no host"))?;
    let path = match url.get(split..) {
        Some("") | None => "/",
        Some(p) => p,
    };
    Ok((origin, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(raw: Value, facts: &Facts) -> Result<ProtectedResource, ConfigError> {
        ProtectedResource::compile(serde_json::from_value(raw).unwrap(), facts)
    }

    #[test]
    fn the_well_known_path_goes_between_host_and_path() {
        let facts = Facts::default();
        for (resource, path, url) in [
            (
                "https://gw.example.com",
                "/.well-known/oauth-protected-resource",
                "https://gw.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://gw.example.com/",
                "/.well-known/oauth-protected-resource",
                "https://gw.example.com/.well-known/oauth-protected-resource",
            ),
            (
                "https://gw.example.com:8443/v1/chat",
                "/.well-known/oauth-protected-resource/v1/chat",
                "https://gw.example.com:8443/.well-known/oauth-protected-resource/v1/chat",
            ),
        ] {
            let pr = compile(json!({"resource": resource}), &facts).unwrap();
            assert_eq!(pr.metadata_path, path, "{resource}");
            assert_eq!(pr.metadata_url, url, "{resource}");
            let doc: Value = serde_json::from_str(&pr.document).unwrap();
            assert_eq!(doc["resource"], resource, "identical, as §3.3 requires");
        }
    }

    #[test]
    fn facts_fill_what_the_block_leaves_out() {
        let facts = Facts {
            issuers: vec!["https://idp/realms/ai".into()],
            scopes: vec!["chat".into()],
            bearer_methods: vec!["header"],
            dpop_algs: vec!["ES256", "EdDSA"],
            dpop_required: true,
            certificate_bound: true,
        };
        let pr = compile(json!({"resource": "https://gw/v1"}), &facts).unwrap();
        let doc: Value = serde_json::from_str(&pr.document).unwrap();
        assert_eq!(
            doc,
            json!({"resource": "https://gw/v1",
                   "authorization_servers": ["https://idp/realms/ai"],
                   "scopes_supported": ["chat"],
                   "bearer_methods_supported": ["header"],
                   "tls_client_certificate_bound_access_tokens": true,
                   "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
                   "dpop_bound_access_tokens_required": true})
        );
        let pr = compile(
            json!({"resource": "https://gw/v1", "authorization_servers": ["https://other"],
                   "scopes_supported": [], "resource_name": "LLM gateway"}),
            &facts,
        )
        .unwrap();
        let doc: Value = serde_json::from_str(&pr.document).unwrap();
        assert_eq!(doc["authorization_servers"], json!(["https://other"]));
        assert!(doc.get("scopes_supported").is_none());
        assert_eq!(doc["resource_name"], "LLM gateway");
    }

    #[test]
    fn bad_blocks_name_the_field() {
        let facts = Facts::default();
        for (raw, field) in [
            (json!({"resource": "gw.example.com/v1"}), "resource"),
            (json!({"resource": "https://gw/v1?x=1"}), "resource"),
            (json!({"resource": "https://gw/v1#f"}), "resource"),
            (json!({"resource": "https:///v1"}), "resource"),
            (json!({"resource": "https://gw/a\"b"}), "resource"),
            (
                json!({"resource": "https://gw", "authorization_servers": ["idp"]}),
                "authorization_servers[0]",
            ),
            (
                json!({"resource": "https://gw", "bearer_methods_supported": ["cookie"]}),
                "bearer_methods_supported",
            ),
            (
                json!({"resource": "https://gw", "scopes_supported": ["a b"]}),
                "scopes_supported",
            ),
        ] {
            let err = compile(raw.clone(), &facts).unwrap_err();
            assert_eq!(err.path, field, "{raw}: {err}");
        }
    }

    fn jwt_authn(cfg: Value) -> Result<crate::jwt::config::JwtAuthn, ConfigError> {
        let bytes = serde_json::to_vec(&json!({ "jwt_authn": cfg })).unwrap();
        crate::config::FilterConfig::from_json(&bytes, &|_: &str| None)
            .map(|c| c.jwt_authn.unwrap())
    }

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn request(method: &str, path: &str) -> crate::request::RequestView {
        crate::request::RequestView::new(vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), "gw".into()),
        ])
    }

    #[test]
    fn rules_use_their_block_or_their_providers() {
        let cfg = jwt_authn(json!({
            "providers": {
                "idp": {"issuer": "https://idp/realms/ai", "local_jwks": {"inline_string": JWKS},
                        "protected_resource": {"resource": "https://gw/api"}},
                "other": {"issuer": "https://other", "local_jwks": {"inline_string": JWKS}}
            },
            "rules": [
                {"match": {"prefix": "/health"}},
                {"match": {"prefix": "/v1/"}, "requires": {"provider_name": "idp"},
                 "claim_rules": [{"claim": "scope", "contains": "chat"}],
                 "protected_resource": {"resource": "https://gw/v1"}},
                {"match": {"prefix": "/api/"}, "requires": {"requires_any": {"requirements": [
                    {"provider_name": "other"}, {"provider_name": "idp"}]}}},
                {"match": {"prefix": "/other/"}, "requires": {"provider_name": "other"}}
            ]
        }))
        .unwrap();
        let urls: Vec<Option<&str>> = cfg
            .rules
            .iter()
            .map(|r| r.challenge.resource_metadata.as_deref())
            .collect();
        assert_eq!(
            urls,
            [
                None,
                Some("https://gw/.well-known/oauth-protected-resource/v1"),
                Some("https://gw/.well-known/oauth-protected-resource/api"),
                None
            ]
        );
        assert_eq!(cfg.rules[1].challenge.scope.as_deref(), Some("chat"));
        let doc = cfg
            .resource_metadata(&request(
                "GET",
                "/.well-known/oauth-protected-resource/v1?x",
            ))
            .unwrap();
        let doc: Value = serde_json::from_str(&doc.document).unwrap();
        assert_eq!(
            doc,
            json!({"resource": "https://gw/v1", "authorization_servers": ["https://idp/realms/ai"],
                   "scopes_supported": ["chat"], "bearer_methods_supported": ["header", "query"]})
        );
        assert!(cfg
            .resource_metadata(&request(
                "HEAD",
                "/.well-known/oauth-protected-resource/api"
            ))
            .is_some());
        for (method, path) in [
            ("POST", "/.well-known/oauth-protected-resource/v1"),
            ("GET", "/.well-known/oauth-protected-resource"),
            ("GET", "/.well-known/oauth-protected-resource/v1/x"),
        ] {
            assert!(
                cfg.resource_metadata(&request(method, path)).is_none(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn two_documents_at_one_path_are_refused() {
        let err = jwt_authn(json!({
            "providers": {"idp": {"local_jwks": {"inline_string": JWKS}}},
            "rules": [
                {"match": {"prefix": "/a"}, "requires": {"provider_name": "idp"},
                 "protected_resource": {"resource": "https://gw/v1", "resource_name": "a"}},
                {"match": {"prefix": "/b"}, "requires": {"provider_name": "idp"},
                 "protected_resource": {"resource": "https://gw/v1", "resource_name": "b"}}
            ]
        }))
        .unwrap_err();
        assert_eq!(err.path, "jwt_authn.rules[1].protected_resource", "{err}");
        let err = jwt_authn(json!({
            "providers": {"idp": {"local_jwks": {"inline_string": JWKS},
                                  "protected_resource": {"resource": "ftp://gw"}}},
            "rules": [{"match": {"prefix": "/"}}]
        }))
        .unwrap_err();
        assert_eq!(
            err.path, "jwt_authn.providers.idp.protected_resource.resource",
            "{err}"
        );
        let err = jwt_authn(json!({
            "providers": {"idp": {"local_jwks": {"inline_string": JWKS}}},
            "rules": [{"match": {"prefix": "/"}, "protected_resource": {"resource": "https://gw"}}]
        }))
        .unwrap_err();
        assert_eq!(err.path, "jwt_authn.rules[0].protected_resource", "{err}");
    }

    #[test]
    fn the_reply_is_public_json() {
        let pr = compile(json!({"resource": "https://gw"}), &Facts::default()).unwrap();
        let r = pr.reply();
        assert_eq!(r.status, 200);
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert!(r
            .headers
            .contains(&("access-control-allow-origin".into(), "*".into())));
        assert_eq!(r.body, pr.document.as_bytes());
    }
}
