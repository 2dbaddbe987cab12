//! The plugin configuration: JSON in, a validated and compiled
//! [`FilterConfig`] out, or a [`ConfigError`] naming the field.
//!
//! One section per stage, run in this order for each request:
//! `jwt_authn`, then `ext_authz` (passthrough), then `upstream_credentials`.

use crate::vocab::{parse_json, ConfigError, Environment};

use crate::credentials::{RawUpstreamCredentials, UpstreamCredentials};
use crate::ext_authz::config::RawExtAuthz;
use crate::ext_authz::ExtAuthz;
use crate::jwt::config::{JwtAuthn, RawJwtAuthn};
use crate::request::RequestView;
use crate::response::ErrorFormat;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawFilterConfig {
    /// The JSON Schema this document follows (for editors); not read.
    #[serde(default, rename = "$schema")]
    #[allow(dead_code)]
    schema: Option<String>,
    jwt_authn: Option<RawJwtAuthn>,
    ext_authz: Option<RawExtAuthz>,
    upstream_credentials: Option<RawUpstreamCredentials>,
    /// The shape of the filter's own error bodies, unless a rule or backend says otherwise.
    #[serde(default)]
    error_format: ErrorFormat,
}

/// The compiled configuration shared by every request of a VM.
#[derive(Debug, Default)]
pub struct FilterConfig {
    /// Separates this plugin's shared data (JWKS, cached decisions) from
    /// another plugin's in the same VM: a hash of the whole configuration.
    pub namespace: String,
    pub jwt_authn: Option<JwtAuthn>,
    pub ext_authz: Option<ExtAuthz>,
    pub upstream_credentials: Option<UpstreamCredentials>,
    /// `error_format`: the shape of our error bodies where no rule or backend sets one.
    pub error_format: ErrorFormat,
}

impl FilterConfig {
    /// Parses and validates the plugin configuration. An empty configuration
    /// is refused: a filter that does nothing is a mistake worth reporting.
    pub fn from_json(bytes: &[u8], env: &dyn Environment) -> Result<FilterConfig, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                "",
                "the plugin configuration is empty; set at least one of jwt_authn, ext_authz, upstream_credentials",
            ));
        }
        let raw: RawFilterConfig = parse_json(bytes)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let namespace: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let jwt_authn = raw
            .jwt_authn
            .map(|j| JwtAuthn::compile(j, env).map_err(|e| e.under("jwt_authn")))
            .transpose()?
            .map(|mut j| {
                j.namespace = namespace.clone();
                j.config_digest = digest;
                j
            });
        let ext_authz = raw
            .ext_authz
            .map(|x| ExtAuthz::compile(x, env).map_err(|e| e.under("ext_authz")))
            .transpose()?
            .map(|mut x| {
                x.cache_namespace = namespace.clone();
                x
            });
        let upstream_credentials = raw
            .upstream_credentials
            .map(|u| {
                UpstreamCredentials::compile(u, env).map_err(|e| e.under("upstream_credentials"))
            })
            .transpose()?;
        // A model check releases the headers before the passthrough's answer
        // (Envoy's proxy-wasm ABI edits no request header after that).
        let model_checked = jwt_authn
            .as_ref()
            .and_then(|j| j.rules.iter().position(|r| r.model_check.is_some()));
        if let (Some(rule), Some(field)) = (
            model_checked,
            ext_authz
                .as_ref()
                .and_then(|x| x.answer_edits_headers.as_ref()),
        ) {
            return Err(ConfigError::new(
                format!("ext_authz.{field}"),
                format!("cannot be combined with the model_check of jwt_authn.rules[{rule}]: the headers go on before the service answers, and Envoy's proxy-wasm ABI lets no filter edit them after"),
            ));
        }
        if jwt_authn.is_none() && ext_authz.is_none() && upstream_credentials.is_none() {
            return Err(ConfigError::new(
                "",
                "no stage is configured; set at least one of jwt_authn, ext_authz, upstream_credentials",
            ));
        }
        Ok(FilterConfig {
            namespace,
            jwt_authn,
            ext_authz,
            upstream_credentials,
            error_format: raw.error_format,
        })
    }
}

/// The JSON Schema of the plugin configuration, derived from the types the
/// filter reads it into (`tools/` prints it as `envoy/ai-auth-filter.schema.json`).
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawFilterConfig);
    schema.insert(
        "$id".into(),
        "https://github.com/ai-auth-filter/ai-auth-filter/envoy/ai-auth-filter.schema.json".into(),
    );
    schema.insert("title".into(), "ai-auth-filter plugin configuration".into());
    schema.insert(
        "description".into(),
        "The JSON the ai-auth-filter wasm filter takes as its plugin configuration (Envoy's `configuration`, Istio's `pluginConfig`, Envoy Gateway's `wasm[].config`). Generated from the filter's configuration types by `cargo run -p ai-auth-tools --bin config-schema`; the filter also refuses what JSON Schema cannot express (duplicate keys, undefined providers, out-of-range timeouts).".into(),
    );
    schema.to_value()
}

impl FilterConfig {
    /// The shape of our error bodies for this request: the `error_format` of
    /// the JWT rule it matches, else of its upstream route, else of that
    /// route's backend, else the global one. Only asked when replying.
    pub fn error_format_for(&self, req: &RequestView) -> ErrorFormat {
        self.jwt_authn
            .as_ref()
            .and_then(|j| j.error_format_for(req))
            .or_else(|| {
                self.upstream_credentials
                    .as_ref()
                    .and_then(|u| u.error_format_for(req))
            })
            .unwrap_or(self.error_format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn unknown_top_level_field_is_named() {
        let err =
            FilterConfig::from_json(br#"{"jwt_authn": {}, "jwt_auth": {}}"#, &no_env).unwrap_err();
        assert!(err.reason.contains("unknown field `jwt_auth`"), "{err}");
    }

    #[test]
    fn unknown_nested_field_has_its_path() {
        let err = FilterConfig::from_json(
            br#"{"jwt_authn": {"providers": {"p": {"isuer": "x"}}}}"#,
            &no_env,
        )
        .unwrap_err();
        assert!(err.path.starts_with("jwt_authn.providers.p"), "{err}");
        assert!(err.reason.contains("unknown field `isuer`"), "{err}");
    }

    const HS256_JWKS: &str = r#"{"keys": [{"kty": "oct", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;

    /// A JWT rule per API, and upstream routes and backends with their own
    /// error shapes, to see which one each denial gets.
    fn formats_config(global: Option<&str>) -> FilterConfig {
        let mut v = serde_json::json!({
            "jwt_authn": {
                "providers": {"idp": {"issuer": "i", "local_jwks": {"inline_string": HS256_JWKS}}},
                "rules": [
                    {"match": {"prefix": "/oauth/"}, "requires": {"provider_name": "idp"}, "error_format": "oauth2"},
                    {"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}
                ]
            },
            "upstream_credentials": {
                "backends": {
                    "openai": {"scheme": "openai", "secret": {"inline_string": "sk-o"}},
                    "anthropic": {"scheme": "anthropic", "secret": {"inline_string": "sk-a"}, "error_format": "anthropic"}
                },
                "routes": [
                    {"match": {"prefix": "/v1/messages"}, "backend": "anthropic"},
                    {"match": {"prefix": "/claude/oauth"}, "backend": "anthropic", "error_format": "oauth2"},
                    {"match": {"prefix": "/"}, "backend": "openai"}
                ]
            }
        });
        if let Some(g) = global {
            v["error_format"] = serde_json::json!(g);
        }
        FilterConfig::from_json(v.to_string().as_bytes(), &no_env).unwrap()
    }

    fn denial_body(cfg: &FilterConfig, path: &str) -> serde_json::Value {
        let req = RequestView::new(vec![
            (":method".into(), "POST".into()),
            (":path".into(), path.into()),
        ]);
        let mut state = crate::flow::WorkerState::new(cfg);
        let store = crate::callout::MemoryStore::default();
        let (d, _) = crate::flow::on_request_headers(cfg, &mut state, &store, req, 0);
        match d.step {
            crate::flow::Step::Reply(r) => {
                assert_eq!(r.status, 401, "{path}");
                serde_json::from_slice(&r.body).unwrap()
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn error_format_comes_from_the_rule_then_route_then_backend_then_global() {
        let cfg = formats_config(None);
        let openai = denial_body(&cfg, "/v1/chat/completions");
        assert_eq!(openai["error"]["code"], "missing_token", "{openai}");
        assert_eq!(openai["error"]["message"], "Jwt is missing");
        let anthropic = denial_body(&cfg, "/v1/messages");
        assert_eq!(anthropic["type"], "error", "{anthropic}");
        assert_eq!(anthropic["error"]["type"], "authentication_error");
        assert_eq!(anthropic["error"]["message"], "Jwt is missing");
        // The JWT rule's format wins over the route's backend.
        let rule = denial_body(&cfg, "/oauth/x");
        assert_eq!(rule["error"], "missing_token", "{rule}");
        // The route's own format wins over its backend's.
        let route = denial_body(&cfg, "/claude/oauth");
        assert_eq!(route["error_description"], "Jwt is missing", "{route}");
        // The global format where nothing more specific is set.
        let cfg = formats_config(Some("anthropic"));
        assert_eq!(denial_body(&cfg, "/v1/chat/completions")["type"], "error");
        assert_eq!(denial_body(&cfg, "/oauth/x")["error"], "missing_token");
    }

    #[test]
    fn unknown_error_format_is_named() {
        let err = FilterConfig::from_json(
            br#"{"error_format": "openai_v2", "ext_authz": {}}"#,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.path, "error_format", "{err}");
        assert!(err.reason.contains("openai_v2"), "{err}");
    }

    #[test]
    fn empty_and_invalid_json_are_refused() {
        assert!(FilterConfig::from_json(b"", &no_env).is_err());
        assert!(FilterConfig::from_json(b"{", &no_env).is_err());
        assert!(FilterConfig::from_json(b"{}", &no_env).is_err());
        assert!(FilterConfig::from_json(b"{} x", &no_env).is_err());
        assert!(FilterConfig::from_json(&[0xff, 0xfe], &no_env).is_err());
    }
}
