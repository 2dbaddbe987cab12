//! Stage 3: upstream credentials. The client's credentials are removed,
//! all of them and for every provider, then the backend's credential is put
//! in their place.

use crate::vocab::unique_map::UniqueMap;
pub mod aws;
pub mod fetch;
pub mod oauth2;
pub mod sigv4;
pub mod sts;
pub mod xml;

use crate::jwt::Identity;
use crate::request::{cookie_header_without, path_without_params, RequestView};
use crate::response::{is_valid_header_value, ErrorFormat, HeaderOp, LocalReply};
use crate::route::{RawRouteMatch, RouteMatch};
use crate::secret::Secret;
use crate::vocab::{header_name, ConfigError, DataSource, Environment};
use aws::{AwsSource, PendingSignature, RawSigV4, SigV4};
use fetch::{Credential, Lease, Source};
use oauth2::{OAuth2, RawOAuth2};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Headers that carry a client credential for some provider or proxy.
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];
/// Query parameters that carry one (`?key=` for Gemini, `?access_token=` for OAuth 2).
pub const CLIENT_CREDENTIAL_PARAMS: [&str; 2] = ["key", "access_token"];
/// The version Anthropic's API requires when the client sent none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Filter state key (Envoy shows it as `wasm.ai_auth.upstream_backend`) naming the backend used.
pub const BACKEND_PROPERTY: &str = "ai_auth.upstream_backend";

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamCredentials {
    backends: UniqueMap<RawBackend>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    /// What to do with a request no route gives a backend: `deny` (default) or `pass_through`.
    #[serde(default)]
    no_backend: NoBackend,
    #[serde(default)]
    strip_headers: Vec<String>,
    #[serde(default)]
    strip_query_params: Vec<String>,
    #[serde(default)]
    strip_cookies: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NoBackend {
    #[default]
    Deny,
    PassThrough,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBackend {
    scheme: SchemeName,
    secret: Option<DataSource>,
    secret_by_claim: Option<RawSecretByClaim>,
    /// An OAuth 2 client-credentials token (Azure Entra ID...) as the secret.
    oauth2: Option<RawOAuth2>,
    /// For `sigv4`: region, service, host, credentials.
    sigv4: Option<RawSigV4>,
    /// For `header`: the header name; for `bearer`-like schemes it is `authorization`.
    header: Option<String>,
    /// For `header`: a prefix before the secret, e.g. `Token `.
    prefix: Option<String>,
    /// For `anthropic`: sent when the client sent no `anthropic-version`.
    anthropic_version: Option<String>,
    /// The shape of error bodies for requests routed to this backend.
    error_format: Option<ErrorFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
enum SchemeName {
    /// `Authorization: Bearer <key>`: OpenAI, Mistral, DeepSeek, Together, vLLM...
    Bearer,
    /// Alias of `bearer`.
    Openai,
    /// Azure OpenAI `api-key: <key>`.
    AzureApiKey,
    /// Anthropic `x-api-key: <key>` plus `anthropic-version`.
    Anthropic,
    /// Gemini `x-goog-api-key: <key>`.
    Gemini,
    /// Any header, with an optional prefix.
    Header,
    /// AWS Signature Version 4 (Bedrock).
    Sigv4,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawSecretByClaim {
    /// Claim of the verified JWT (dotted path), e.g. `tenant` or `azp`.
    claim: String,
    secrets: UniqueMap<DataSource>,
    default: Option<DataSource>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    route: Option<RawRouteMatch>,
    /// The Envoy cluster the route chose.
    cluster: Option<String>,
    /// The Envoy route's name.
    route_name: Option<String>,
    backend: Option<String>,
    #[serde(default)]
    pass_through: bool,
    /// The shape of error bodies for requests this route matches.
    error_format: Option<ErrorFormat>,
}

#[derive(Debug)]
enum Scheme {
    Header { name: String, prefix: String },
    Anthropic { version: String },
    SigV4(SigV4),
}

#[derive(Debug)]
enum SecretSource {
    Fixed(Secret),
    /// Fetched by the root context; the worker VM holds the current token.
    OAuth2(OAuth2),
    /// AWS credentials for the `sigv4` scheme.
    Aws(AwsSource),
    ByClaim {
        claim: Vec<String>,
        secrets: Vec<(String, Secret)>,
        default: Option<Secret>,
    },
}

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    scheme: Scheme,
    secret: SecretSource,
    error_format: Option<ErrorFormat>,
}

#[derive(Debug)]
enum Target {
    Backend(usize),
    PassThrough,
}

#[derive(Debug)]
struct Route {
    route: Option<RouteMatch>,
    cluster: Option<String>,
    route_name: Option<String>,
    target: Target,
    error_format: Option<ErrorFormat>,
}

#[derive(Debug)]
pub struct UpstreamCredentials {
    pub backends: Vec<Backend>,
    routes: Vec<Route>,
    no_backend: NoBackend,
    strip_headers: Vec<String>,
    strip_params: Vec<String>,
    strip_cookies: Vec<String>,
    /// Whether any route selects by cluster or route name (the host then reads them).
    pub needs_route_info: bool,
}

fn load_secret(raw: DataSource, env: &dyn Environment) -> Result<Secret, ConfigError> {
    let value = raw.read(env)?;
    // The reason never quotes the value: it is a secret.
    if value.trim().is_empty() {
        return Err(ConfigError::new("", "the secret is empty"));
    }
    if !is_valid_header_value(&value) || value != value.trim() {
        return Err(ConfigError::new(
            "",
            "the secret has control characters or surrounding whitespace and cannot be sent in a header",
        ));
    }
    Ok(Secret::new(value))
}

impl UpstreamCredentials {
    pub fn compile(
        raw: RawUpstreamCredentials,
        env: &dyn Environment,
    ) -> Result<Self, ConfigError> {
        if raw.backends.0.is_empty() {
            return Err(ConfigError::new(
                "backends",
                "at least one backend is required",
            ));
        }
        let mut backends = Vec::new();
        for (name, b) in raw.backends.0 {
            let path = format!("backends.{name}");
            backends.push(compile_backend(&name, b, env).map_err(|e| e.under(&path))?);
        }
        let mut routes = Vec::new();
        let mut needs_route_info = false;
        for (i, r) in raw.routes.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let target = match (r.backend, r.pass_through) {
                (Some(name), false) => {
                    Target::Backend(backends.iter().position(|b| b.name == name).ok_or_else(
                        || {
                            ConfigError::new(
                                format!("{path}.backend"),
                                format!("backend `{name}` is not defined in backends"),
                            )
                        },
                    )?)
                }
                (None, true) => Target::PassThrough,
                _ => {
                    return Err(ConfigError::new(
                        path,
                        "exactly one of backend, pass_through: true must be set",
                    ))
                }
            };
            let route = r
                .route
                .as_ref()
                .map(|m| RouteMatch::compile(m).map_err(|e| e.under(&format!("{path}.match"))))
                .transpose()?;
            needs_route_info |= r.cluster.is_some() || r.route_name.is_some();
            routes.push(Route {
                route,
                cluster: r.cluster,
                route_name: r.route_name,
                target,
                error_format: r.error_format,
            });
        }
        let mut strip_headers: Vec<String> = CLIENT_CREDENTIAL_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        for (i, h) in raw.strip_headers.iter().enumerate() {
            strip_headers.push(header_name(h, &format!("strip_headers[{i}]"))?);
        }
        let mut strip_params: Vec<String> = CLIENT_CREDENTIAL_PARAMS
            .iter()
            .map(|p| p.to_string())
            .collect();
        strip_params.extend(
            raw.strip_query_params
                .iter()
                .filter(|p| !p.is_empty())
                .cloned(),
        );
        Ok(UpstreamCredentials {
            backends,
            routes,
            no_backend: raw.no_backend,
            strip_headers,
            strip_params,
            strip_cookies: raw.strip_cookies,
            needs_route_info,
        })
    }
}

fn compile_backend(
    name: &str,
    b: RawBackend,
    env: &dyn Environment,
) -> Result<Backend, ConfigError> {
    let scheme = match b.scheme {
        SchemeName::Bearer | SchemeName::Openai => Scheme::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        SchemeName::AzureApiKey => Scheme::Header {
            name: "api-key".into(),
            prefix: String::new(),
        },
        SchemeName::Gemini => Scheme::Header {
            name: "x-goog-api-key".into(),
            prefix: String::new(),
        },
        SchemeName::Anthropic => {
            let version = b
                .anthropic_version
                .clone()
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.into());
            if !is_valid_header_value(&version) || version.is_empty() {
                return Err(ConfigError::new(
                    "anthropic_version",
                    "is not a valid header value",
                ));
            }
            Scheme::Anthropic { version }
        }
        SchemeName::Sigv4 => {
            if b.secret.is_some() || b.secret_by_claim.is_some() || b.oauth2.is_some() {
                return Err(ConfigError::new(
                    "",
                    "the `sigv4` scheme takes its credentials in `sigv4`, not secret, secret_by_claim or oauth2",
                ));
            }
            if b.header.is_some() || b.prefix.is_some() || b.anthropic_version.is_some() {
                return Err(ConfigError::new(
                    "header",
                    "header, prefix and anthropic_version are not for the `sigv4` scheme",
                ));
            }
            let raw = b.sigv4.ok_or_else(|| {
                ConfigError::new("sigv4", "the `sigv4` scheme needs a `sigv4` block")
            })?;
            let (sigv4, source) = SigV4::compile(raw, env).map_err(|e| e.under("sigv4"))?;
            return Ok(Backend {
                name: name.to_string(),
                scheme: Scheme::SigV4(sigv4),
                secret: SecretSource::Aws(source),
                error_format: b.error_format,
            });
        }
        SchemeName::Header => {
            let header = b.header.as_deref().ok_or_else(|| {
                ConfigError::new("header", "the `header` scheme needs a header name")
            })?;
            let prefix = b.prefix.clone().unwrap_or_default();
            if !is_valid_header_value(&prefix) {
                return Err(ConfigError::new("prefix", "has control characters"));
            }
            Scheme::Header {
                name: header_name(header, "header")?,
                prefix,
            }
        }
    };
    if b.scheme != SchemeName::Header && (b.header.is_some() || b.prefix.is_some()) {
        return Err(ConfigError::new(
            "header",
            "header and prefix are only for the `header` scheme",
        ));
    }
    if b.sigv4.is_some() {
        return Err(ConfigError::new("sigv4", "only for the `sigv4` scheme"));
    }
    if b.scheme != SchemeName::Anthropic && b.anthropic_version.is_some() {
        return Err(ConfigError::new(
            "anthropic_version",
            "only for the `anthropic` scheme",
        ));
    }
    let secret = match (b.secret, b.secret_by_claim, b.oauth2) {
        (Some(s), None, None) => {
            SecretSource::Fixed(load_secret(s, env).map_err(|e| e.under("secret"))?)
        }
        (None, None, Some(o)) => {
            SecretSource::OAuth2(OAuth2::compile(o, env).map_err(|e| e.under("oauth2"))?)
        }
        (None, Some(by), None) => {
            if by.claim.is_empty() || by.claim.split('.').any(str::is_empty) {
                return Err(ConfigError::new(
                    "secret_by_claim.claim",
                    "must be a claim name or dotted path",
                ));
            }
            if by.secrets.0.is_empty() {
                return Err(ConfigError::new(
                    "secret_by_claim.secrets",
                    "must not be empty",
                ));
            }
            let mut secrets = Vec::new();
            for (value, raw) in by.secrets.0 {
                let s = load_secret(raw, env)
                    .map_err(|e| e.under(&format!("secret_by_claim.secrets.{value}")))?;
                secrets.push((value, s));
            }
            let default = by
                .default
                .map(|d| load_secret(d, env).map_err(|e| e.under("secret_by_claim.default")))
                .transpose()?;
            SecretSource::ByClaim {
                claim: by.claim.split('.').map(str::to_string).collect(),
                secrets,
                default,
            }
        }
        _ => {
            return Err(ConfigError::new(
                "",
                "exactly one of secret, secret_by_claim, oauth2 must be set",
            ))
        }
    };
    Ok(Backend {
        name: name.to_string(),
        scheme,
        secret,
        error_format: b.error_format,
    })
}

/// What stage 3 decided for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum CredentialOutcome {
    /// Edits for the upstream request; `backend` names the credential used.
    Inject {
        ops: Vec<HeaderOp>,
        backend: String,
        /// Filter state to set with the edits (a SigV4 signature).
        properties: Vec<(&'static str, String)>,
        /// A SigV4 request with a body: signed once the body is there.
        sign_body: Option<Box<PendingSignature>>,
    },
    /// A route configured to pass through: the request is left as it is.
    PassThrough,
    Deny(LocalReply),
}

fn deny(description: &str) -> CredentialOutcome {
    CredentialOutcome::Deny(LocalReply::json_error(403, "access_denied", description))
}

/// 503 with `Retry-After`: no usable fetched credential right now.
fn unavailable() -> CredentialOutcome {
    CredentialOutcome::Deny(
        LocalReply::json_error(
            503,
            "upstream_credential_unavailable",
            "the upstream credential is not available yet",
        )
        .with_header("retry-after", "1".into()),
    )
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl UpstreamCredentials {
    /// The `error_format` of the route this request matches, else of its backend.
    pub fn error_format_for(&self, req: &RequestView) -> Option<ErrorFormat> {
        let route = self.route_for(req)?;
        route.error_format.or_else(|| match route.target {
            Target::Backend(i) => self.backends.get(i).and_then(|b| b.error_format),
            Target::PassThrough => None,
        })
    }

    fn select(&self, req: &RequestView) -> Option<&Target> {
        self.route_for(req).map(|r| &r.target)
    }

    fn route_for(&self, req: &RequestView) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.route.as_ref().is_none_or(|m| m.matches(req))
                && r.cluster
                    .as_deref()
                    .is_none_or(|c| req.cluster() == Some(c))
                && r.route_name
                    .as_deref()
                    .is_none_or(|n| req.route_name() == Some(n))
        })
    }

    /// What each backend's credential is fetched from (`None` for static
    /// secrets), for the root context's fetcher.
    pub fn fetched_backends(&self) -> impl Iterator<Item = Option<Source>> + '_ {
        self.backends.iter().map(|b| match &b.secret {
            SecretSource::OAuth2(o) => Some(Source::OAuth2(o.clone())),
            SecretSource::Aws(AwsSource::WebIdentity(w)) => Some(Source::Sts(w.clone())),
            _ => None,
        })
    }

    /// `tokens` are the worker's current OAuth 2 tokens, by backend index.
    pub fn plan(
        &self,
        req: &RequestView,
        identities: &[Identity],
        tokens: &[Option<Arc<Lease>>],
        now: u64,
    ) -> CredentialOutcome {
        let (backend_index, backend) = match self.select(req) {
            Some(Target::PassThrough) => return CredentialOutcome::PassThrough,
            Some(Target::Backend(i)) => match self.backends.get(*i) {
                Some(b) => (*i, b),
                None => return deny("no upstream backend is configured for this route"),
            },
            None => {
                return match self.no_backend {
                    NoBackend::PassThrough => CredentialOutcome::PassThrough,
                    NoBackend::Deny => deny("no upstream backend is configured for this route"),
                }
            }
        };
        let secret = match &backend.secret {
            SecretSource::Aws(source) => {
                let Scheme::SigV4(sigv4) = &backend.scheme else {
                    return deny("no upstream backend is configured for this route");
                };
                let fetched = tokens.get(backend_index).and_then(Option::as_ref);
                let creds = match (source, fetched) {
                    (AwsSource::Static(c), _) => c.clone(),
                    (AwsSource::WebIdentity(_), Some(lease)) if lease.usable_at(now) => {
                        match &lease.credential {
                            Credential::Aws(c) => c.clone(),
                            Credential::Bearer(_) => return unavailable(),
                        }
                    }
                    // Never missing or expiring credentials: the client may retry.
                    (AwsSource::WebIdentity(_), _) => return unavailable(),
                };
                return self.sigv4(req, backend, sigv4, creds, now);
            }
            SecretSource::Fixed(s) => s,
            SecretSource::OAuth2(_) => match tokens.get(backend_index).and_then(Option::as_ref) {
                Some(t) if t.usable_at(now) => match &t.credential {
                    Credential::Bearer(token) => token,
                    Credential::Aws(_) => return unavailable(),
                },
                // Never a missing or expiring token: the client may retry.
                _ => return unavailable(),
            },
            SecretSource::ByClaim {
                claim,
                secrets,
                default,
            } => {
                let value = identities
                    .iter()
                    .find_map(|id| id.claims.lookup(claim).and_then(claim_text));
                let chosen = value
                    .and_then(|v| secrets.iter().find(|(k, _)| *k == v).map(|(_, s)| s))
                    .or(default.as_ref());
                match chosen {
                    Some(s) => s,
                    None => return deny("no upstream credential is configured for this caller"),
                }
            }
        };
        let mut ops = self.strip_ops(req);
        match &backend.scheme {
            Scheme::Header { name, prefix } => {
                ops.push(HeaderOp::SetSecret(
                    name.clone(),
                    Secret::new(format!("{prefix}{}", secret.expose())),
                ));
            }
            Scheme::Anthropic { version } => {
                ops.push(HeaderOp::SetSecret("x-api-key".into(), secret.clone()));
                if req.header("anthropic-version").is_none() {
                    ops.push(HeaderOp::set("anthropic-version", version.clone()));
                }
            }
            // Its secret source is `Aws`: handled above.
            Scheme::SigV4(_) => return deny("no upstream backend is configured for this route"),
        }
        CredentialOutcome::Inject {
            ops,
            backend: backend.name.clone(),
            properties: Vec::new(),
            sign_body: None,
        }
    }

    /// A SigV4 backend: the client's credentials stripped, then the signed
    /// headers known now; the signature at once for a request without a
    /// body, else once the body is there.
    fn sigv4(
        &self,
        req: &RequestView,
        backend: &Backend,
        sigv4: &SigV4,
        creds: Arc<sigv4::AwsCredentials>,
        now: u64,
    ) -> CredentialOutcome {
        let mut ops = self.strip_ops(req);
        let pending = sigv4.prepare(req, &mut ops, creds, now);
        if req.has_body() {
            return CredentialOutcome::Inject {
                ops,
                backend: backend.name.clone(),
                properties: Vec::new(),
                sign_body: Some(Box::new(pending)),
            };
        }
        let signature = pending.sign(&[]);
        ops.extend(signature.header_ops());
        CredentialOutcome::Inject {
            ops,
            backend: backend.name.clone(),
            // The same values for header_mutation, should it copy them.
            properties: signature.properties(),
            sign_body: None,
        }
    }

    fn strip_ops(&self, req: &RequestView) -> Vec<HeaderOp> {
        let mut ops: Vec<HeaderOp> = self
            .strip_headers
            .iter()
            .map(|h| HeaderOp::remove(h.clone()))
            .collect();
        let params: Vec<&str> = self.strip_params.iter().map(String::as_str).collect();
        if let Some(path) = path_without_params(req.path(), &params) {
            ops.push(HeaderOp::set(":path", path));
        }
        if !self.strip_cookies.is_empty() {
            let cookies: Vec<&str> = self.strip_cookies.iter().map(String::as_str).collect();
            let all: Vec<&str> = req.header_values("cookie").collect();
            if let Some(rest) = cookie_header_without(&all.join("; "), &cookies) {
                ops.push(if rest.is_empty() {
                    HeaderOp::remove("cookie")
                } else {
                    HeaderOp::set("cookie", rest)
                });
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests;
