//! The `jwt_authn` section: field names and meaning follow Envoy's
//! `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`.

use super::challenge::RuleChallenge;
use super::claims::{ClaimRule, RawClaimRule};
use super::cnf::{CertificateBound, RawCertificateBound};
use super::dpop::{Dpop, RawDpop};
use super::keys::{parse_jwks, KeySet, SkippedKey};
use super::protected_resource::{Facts, ProtectedResource, RawProtectedResource};
use crate::apikeys::config::RawApiKey;
use crate::apikeys::ApiKeys;
use crate::introspection::{Introspection, RawIntrospection};
use crate::models::{ModelCheck, RawModelCheck};
use crate::request::RequestView;
use crate::response::{is_valid_header_value, ErrorFormat};
use crate::route::{RawRouteMatch, RouteMatch};
use crate::vocab::unique_map::UniqueMap;
use crate::vocab::{
    duration, header_name, ConfigError, DataSource, Environment, HttpUri, RawHttpUri,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's `jwt_cache_config` defaults: 100 tokens of at most 4 KiB.
const DEFAULT_CACHE_SIZE: usize = 100;
const DEFAULT_MAX_CACHED_TOKEN: usize = 4096;
/// Each shared entry is a shared-data key (about 100 bytes with its name).
const MAX_SHARED_CACHE_SIZE: usize = 1_000_000;
/// Tokens above this are refused before any parsing. Envoy has no such
/// limit of its own: its header limit (`max_request_headers_kb`, 60 KiB by
/// default) bounds them, and Entra ID or Keycloak tokens with many groups
/// or roles reach 20-30 KiB.
const DEFAULT_MAX_TOKEN_SIZE: usize = 60 * 1024;
/// A remote JWKS or discovery document above this is a failed fetch: large
/// IdP key sets (many rotated keys, certificate chains) fit.
const DEFAULT_MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Beyond this a document would not be a key set; it is also copied into
/// shared data for every worker VM.
const MAX_MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawJwtAuthn {
    #[serde(default)]
    providers: UniqueMap<RawProvider>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    bypass_cors_preflight: bool,
    jwt_cache_config: Option<RawCacheConfig>,
    max_token_size: Option<usize>,
    /// `realm` of `WWW-Authenticate`; by default the request URL, as Envoy does.
    www_authenticate_realm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawCacheConfig {
    jwt_cache_size: Option<usize>,
    jwt_max_token_size: Option<usize>,
    /// Entries of the verified-token cache every worker VM shares (0: off);
    /// by default `jwt_cache_size`.
    jwt_shared_cache_size: Option<usize>,
}

/// A provider's wire form. Which of `local_jwks` / `remote_jwks` /
/// `api_keys` (or `api_keys_from`) is set says its kind; token locations,
/// `forward` and `claim_to_headers` apply to every kind.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProvider {
    /// Gateway-issued API keys, as hashes (an API key provider).
    api_keys: Option<Vec<RawApiKey>>,
    /// The same list, from an environment variable holding JSON.
    api_keys_from: Option<DataSource>,
    /// Opaque tokens judged by the IdP's introspection endpoint (RFC 7662).
    introspection: Option<RawIntrospection>,
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    local_jwks: Option<DataSource>,
    remote_jwks: Option<RawRemoteJwks>,
    #[serde(default)]
    from_headers: Vec<RawJwtHeader>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    #[serde(default)]
    forward: bool,
    clock_skew_seconds: Option<u64>,
    #[serde(default)]
    require_expiration: bool,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    max_lifetime: Option<Duration>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    forward_payload_header: Option<String>,
    /// RFC 9728 metadata for every rule that requires this provider and has none of its own.
    protected_resource: Option<RawProtectedResource>,
    /// DPoP-bound tokens (RFC 9449): `Authorization: DPoP` with a proof.
    dpop: Option<RawDpop>,
    /// Certificate-bound tokens (RFC 8705): `cnf.x5t#S256` against the client certificate.
    certificate_bound_tokens: Option<RawCertificateBound>,
}

/// Envoy's `RemoteJwks`, plus `discovery`: `http_uri` is then the issuer's
/// OIDC discovery document (as Keycloak publishes it) and the JWKS is fetched
/// from its `jwks_uri`, through the same cluster.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: RawHttpUri,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    cache_duration: Option<Duration>,
    #[serde(default)]
    discovery: bool,
    /// Largest JWKS or discovery document accepted, in bytes.
    max_document_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawJwtHeader {
    name: String,
    value_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: String,
    claim_name: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match", default)]
    route: RawRouteMatch,
    requires: Option<RawRequirement>,
    #[serde(default)]
    claim_rules: Vec<RawClaimRule>,
    /// The shape of error bodies for requests this rule matches.
    error_format: Option<ErrorFormat>,
    /// RFC 9728 metadata for the routes of this rule.
    protected_resource: Option<RawProtectedResource>,
    /// Which models the caller may ask for in the body (`crate::models`).
    model_check: Option<RawModelCheck>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    provider_and_audiences: Option<RawProviderAndAudiences>,
    requires_any: Option<RawRequirementList>,
    requires_all: Option<RawRequirementList>,
    allow_missing: Option<Empty>,
    allow_missing_or_failed: Option<Empty>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProviderAndAudiences {
    provider_name: String,
    audiences: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRequirementList {
    requirements: Vec<RawRequirement>,
}

/// Where a provider looks for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Header, with an optional value prefix such as `Bearer ` (scheme matched case-insensitively).
    Header {
        name: String,
        prefix: Option<String>,
    },
    Param(String),
    Cookie(String),
}

impl Location {
    /// Whether removing one removes the other: the same header, query
    /// parameter or cookie, whatever the value prefix.
    pub fn same_carrier(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Header { name: a, .. }, Location::Header { name: b, .. }) => a == b,
            (Location::Param(a), Location::Param(b))
            | (Location::Cookie(a), Location::Cookie(b)) => a == b,
            _ => false,
        }
    }

    /// `Authorization: DPoP <token>` (RFC 9449 7.1).
    pub fn is_dpop(&self) -> bool {
        matches!(self, Location::Header { name, prefix: Some(p) }
            if name == "authorization" && p.eq_ignore_ascii_case("DPoP "))
    }
}

/// Where a provider's keys come from.
#[derive(Debug)]
pub enum ProviderKeys {
    Local(Arc<KeySet>),
    /// Fetched by the root context and shared by every worker VM.
    Remote(RemoteJwks),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The JWKS, or with `discovery` the discovery document.
    pub http_uri: HttpUri,
    /// How long fetched keys are used before they are fetched again (Envoy's default: 10 minutes).
    pub cache_duration_secs: u64,
    pub discovery: bool,
    pub max_document_bytes: usize,
}

/// A provider: where its credential is, what to do with it, and its kind.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub locations: Vec<Location>,
    pub forward: bool,
    /// (header name, claim path)
    pub claim_to_headers: Vec<(String, Vec<String>)>,
    /// The URL of the provider's own RFC 9728 document, used by the rules
    /// that require it and publish none of their own.
    pub resource_metadata: Option<String>,
    pub dpop: Option<Dpop>,
    pub certificate_bound: Option<CertificateBound>,
    pub kind: ProviderKind,
}

/// How a provider judges the credential found in its locations. Each kind
/// turns a credential into claims; everything after (requirements, claim
/// rules and headers, the later stages) works on the claims alone.
#[derive(Debug)]
pub enum ProviderKind {
    /// A JWT verified with the provider's keys.
    Jwt(JwtProvider),
    /// A gateway-issued API key, looked up by its hash (`crate::apikeys`).
    ApiKeys(ApiKeys),
    /// An opaque token the IdP judges (RFC 7662, `crate::introspection`).
    Introspection(IntrospectionProvider),
}

/// The time checks of a token's claims, whatever vouched for them.
#[derive(Debug, Clone, Copy)]
pub struct TimeChecks {
    pub clock_skew: u64,
    pub require_expiration: bool,
    pub max_lifetime: Option<u64>,
}

/// What an introspection provider checks in an active answer, as a JWT
/// provider checks its token's claims.
#[derive(Debug)]
pub struct IntrospectionProvider {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub times: TimeChecks,
    pub introspection: Introspection,
}

/// What a JWT provider checks beyond the signature.
#[derive(Debug)]
pub struct JwtProvider {
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub keys: ProviderKeys,
    /// Entries of the inline JWKS that were skipped: logged and counted
    /// once when the filter starts.
    pub skipped_keys: Vec<SkippedKey>,
    pub clock_skew: u64,
    pub require_expiration: bool,
    pub max_lifetime: Option<u64>,
    pub forward_payload_header: Option<String>,
}

impl JwtProvider {
    pub fn times(&self) -> TimeChecks {
        TimeChecks {
            clock_skew: self.clock_skew,
            require_expiration: self.require_expiration,
            max_lifetime: self.max_lifetime,
        }
    }
}

impl Provider {
    /// The JWT settings, for a JWT provider.
    pub fn jwt(&self) -> Option<&JwtProvider> {
        match &self.kind {
            ProviderKind::Jwt(j) => Some(j),
            ProviderKind::ApiKeys(_) | ProviderKind::Introspection(_) => None,
        }
    }

    /// The introspection settings, for an introspection provider.
    pub fn introspection(&self) -> Option<&IntrospectionProvider> {
        match &self.kind {
            ProviderKind::Introspection(i) => Some(i),
            _ => None,
        }
    }

    /// The issuer the provider's tokens must name, whatever its kind.
    pub fn issuer(&self) -> Option<&str> {
        match &self.kind {
            ProviderKind::Jwt(j) => j.issuer.as_deref(),
            ProviderKind::Introspection(i) => i.issuer.as_deref(),
            ProviderKind::ApiKeys(_) => None,
        }
    }
}

/// What these providers tell RFC 9728 metadata about themselves.
fn facts_of(providers: &[&Provider]) -> Facts {
    let mut facts = Facts::default();
    for p in providers {
        p.add_facts(&mut facts);
    }
    facts.dpop_required = !providers.is_empty()
        && providers
            .iter()
            .all(|p| p.dpop.as_ref().is_some_and(|d| d.required));
    facts
}

impl Provider {
    fn add_facts(&self, facts: &mut Facts) {
        if let Some(iss) = self.issuer() {
            facts.add_issuer(iss);
        }
        for location in &self.locations {
            match location {
                Location::Header { name, .. } if name == "authorization" => {
                    facts.add_bearer_method("header")
                }
                Location::Param(_) => facts.add_bearer_method("query"),
                _ => {}
            }
        }
        if let Some(d) = &self.dpop {
            for alg in &d.algs {
                facts.add_dpop_alg(alg.name());
            }
        }
        facts.certificate_bound |= self.certificate_bound.is_some();
    }
}

/// Envoy's `JwtRequirement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A provider's token must be valid; `audiences` replaces the provider's own list.
    Provider {
        provider: usize,
        audiences: Option<Vec<String>>,
    },
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
    /// Missing token passes; a present token must be valid.
    AllowMissing,
    /// Passes whatever the token; a valid token still yields its claims.
    AllowMissingOrFailed,
}

impl Requirement {
    /// The providers this requirement may verify, in order, without repeats.
    pub fn providers(&self, all: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect_providers(all, &mut out);
        out
    }

    fn collect_providers(&self, all: usize, out: &mut Vec<usize>) {
        match self {
            Requirement::Provider { provider, .. } => {
                if !out.contains(provider) {
                    out.push(*provider);
                }
            }
            Requirement::Any(list) | Requirement::All(list) => {
                for r in list {
                    r.collect_providers(all, out);
                }
            }
            Requirement::AllowMissing | Requirement::AllowMissingOrFailed => {
                for p in 0..all {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Rule {
    pub route: RouteMatch,
    /// `None`: the route needs no JWT.
    pub requirement: Option<Requirement>,
    pub claim_rules: Vec<ClaimRule>,
    pub error_format: Option<ErrorFormat>,
    /// What this rule's `WWW-Authenticate` says besides the error.
    pub challenge: RuleChallenge,
    /// The body's `model` is checked against the identity's allow-list.
    pub model_check: Option<ModelCheck>,
}

#[derive(Debug)]
pub struct JwtAuthn {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub bypass_cors_preflight: bool,
    pub cache_size: usize,
    pub max_cached_token_size: usize,
    pub max_token_size: usize,
    pub realm: Option<String>,
    /// RFC 9728 documents, each served at its own path.
    pub protected_resources: Vec<ProtectedResource>,
    /// This configuration's shared-data namespace (the DPoP replay cache).
    pub namespace: String,
    /// Entries of the shared verified-token cache (`cache::SharedVerified`).
    pub shared_cache_size: usize,
    /// SHA-256 of the whole plugin configuration: a shared verified token
    /// is only reused under the very configuration that verified it.
    pub config_digest: [u8; 32],
}

impl JwtAuthn {
    pub fn compile(raw: RawJwtAuthn, env: &dyn Environment) -> Result<Self, ConfigError> {
        if raw.providers.0.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "at least one provider is required",
            ));
        }
        let mut providers = Vec::new();
        let mut documents = Documents::default();
        for (name, mut p) in raw.providers.0 {
            let path = format!("providers.{name}");
            let block = p.protected_resource.take();
            let mut provider = compile_provider(&name, p, env).map_err(|e| e.under(&path))?;
            if let Some(raw) = block {
                let facts = facts_of(&[&provider]);
                let field = format!("{path}.protected_resource");
                let doc = ProtectedResource::compile(raw, &facts).map_err(|e| e.under(&field))?;
                provider.resource_metadata = Some(documents.add(doc, &field)?);
            }
            providers.push(provider);
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let path = format!("rules[{i}]");
            let route = RouteMatch::compile(&r.route).map_err(|e| e.under("match").under(&path))?;
            let requirement = r
                .requires
                .map(|req| {
                    compile_requirement(req, &providers)
                        .map_err(|e| e.under("requires").under(&path))
                })
                .transpose()?;
            let claim_rules = r
                .claim_rules
                .into_iter()
                .enumerate()
                .map(|(j, c)| {
                    ClaimRule::compile(c).map_err(|e| e.under(&format!("{path}.claim_rules[{j}]")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !claim_rules.is_empty() && requirement.is_none() {
                return Err(ConfigError::new(
                    format!("{path}.claim_rules"),
                    "claim rules need a `requires` that verifies a token",
                ));
            }
            let model_check = r
                .model_check
                .map(|m| {
                    ModelCheck::compile(m).map_err(|e| e.under(&format!("{path}.model_check")))
                })
                .transpose()?;
            if model_check.is_some() && requirement.is_none() {
                return Err(ConfigError::new(
                    format!("{path}.model_check"),
                    "a model check needs a `requires`: the allowed models come from the verified identity",
                ));
            }
            let challenge = rule_challenge(
                &providers,
                requirement.as_ref(),
                &claim_rules,
                r.protected_resource,
                &mut documents,
            )
            .map_err(|e| e.under(&path))?;
            rules.push(Rule {
                route,
                requirement,
                claim_rules,
                error_format: r.error_format,
                challenge,
                model_check,
            });
        }
        if rules.is_empty() {
            return Err(ConfigError::new(
                "rules",
                "at least one rule is required (a rule with no `requires` lets its routes through)",
            ));
        }
        let cache = raw.jwt_cache_config.unwrap_or(RawCacheConfig {
            jwt_cache_size: None,
            jwt_max_token_size: None,
            jwt_shared_cache_size: None,
        });
        let cache_size = cache.jwt_cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        let shared_cache_size = cache.jwt_shared_cache_size.unwrap_or(cache_size);
        if shared_cache_size > MAX_SHARED_CACHE_SIZE {
            return Err(ConfigError::new(
                "jwt_cache_config.jwt_shared_cache_size",
                format!("at most {MAX_SHARED_CACHE_SIZE} (one shared-data key per entry)"),
            ));
        }
        let max_token_size = raw.max_token_size.unwrap_or(DEFAULT_MAX_TOKEN_SIZE);
        if max_token_size == 0 {
            return Err(ConfigError::new("max_token_size", "must be greater than 0"));
        }
        Ok(JwtAuthn {
            providers,
            rules,
            bypass_cors_preflight: raw.bypass_cors_preflight,
            cache_size,
            shared_cache_size,
            max_cached_token_size: cache.jwt_max_token_size.unwrap_or(DEFAULT_MAX_CACHED_TOKEN),
            max_token_size,
            realm: raw.www_authenticate_realm,
            protected_resources: documents.0,
            namespace: String::new(),
            config_digest: [0; 32],
        })
    }

    /// The `error_format` of the rule this request matches, if it sets one.
    pub fn error_format_for(&self, req: &RequestView) -> Option<ErrorFormat> {
        self.rules
            .iter()
            .find(|r| r.route.matches(req))
            .and_then(|r| r.error_format)
    }

    /// The RFC 9728 document a request asks for (`GET` or `HEAD` of its
    /// well-known path, any query ignored).
    pub fn resource_metadata(&self, req: &RequestView) -> Option<&ProtectedResource> {
        if self.protected_resources.is_empty() || !matches!(req.method(), "GET" | "HEAD") {
            return None;
        }
        let path = req.path_without_query();
        self.protected_resources
            .iter()
            .find(|d| d.metadata_path == path)
    }

    /// The DPoP replay caches of the providers, one per size.
    pub fn replay_caches(&self) -> Vec<super::replay::ReplayCache> {
        let mut caches = Vec::new();
        for d in self.providers.iter().filter_map(|p| p.dpop.as_ref()) {
            let cache = super::replay::ReplayCache::new(&self.namespace, d.replay_entries);
            if !caches.contains(&cache) {
                caches.push(cache);
            }
        }
        caches
    }

    /// Whether some provider checks certificate-bound tokens: the host then
    /// reads the client certificate's digest for each request.
    pub fn needs_peer_certificate(&self) -> bool {
        self.providers.iter().any(|p| p.certificate_bound.is_some())
    }

    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }
}

fn compile_provider(
    name: &str,
    mut p: RawProvider,
    env: &dyn Environment,
) -> Result<Provider, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new("", "provider name must not be empty"));
    }
    let is_api_key = p.api_keys.is_some() || p.api_keys_from.is_some();
    let mut locations = compile_locations(&p, is_api_key)?;
    let dpop = p
        .dpop
        .take()
        .map(|d| Dpop::compile(d).map_err(|e| e.under("dpop")))
        .transpose()?;
    if dpop.is_some() {
        // RFC 9449 7.1: a DPoP-bound token comes as `Authorization: DPoP`.
        locations.insert(
            0,
            Location::Header {
                name: "authorization".into(),
                prefix: Some("DPoP ".into()),
            },
        );
    }
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        let header = header_name(
            &c.header_name,
            &format!("claim_to_headers[{i}].header_name"),
        )?;
        if c.claim_name.is_empty() || c.claim_name.split('.').any(str::is_empty) {
            return Err(ConfigError::new(
                format!("claim_to_headers[{i}].claim_name"),
                "must be a claim name or a dotted path such as `realm_access.roles`",
            ));
        }
        claim_to_headers.push((
            header,
            c.claim_name.split('.').map(str::to_string).collect(),
        ));
    }
    let forward = p.forward;
    let certificate_bound = p
        .certificate_bound_tokens
        .take()
        .map(CertificateBound::compile);
    let kind = if is_api_key {
        refuse_jwt_fields(&p, dpop.is_some(), certificate_bound.is_some())?;
        ProviderKind::ApiKeys(crate::apikeys::config::compile(
            p.api_keys.take(),
            p.api_keys_from.take(),
            env,
        )?)
    } else if let Some(raw) = p.introspection.take() {
        ProviderKind::Introspection(compile_introspection(p, raw, env)?)
    } else {
        ProviderKind::Jwt(compile_jwt(p, env)?)
    };
    Ok(Provider {
        name: name.to_string(),
        locations,
        forward,
        claim_to_headers,
        resource_metadata: None,
        dpop,
        certificate_bound,
        kind,
    })
}

/// An API key provider has no issuer, keys, token times nor sender
/// constraints: a JWT field set on it is a mistake worth naming.
fn refuse_jwt_fields(
    p: &RawProvider,
    dpop: bool,
    certificate_bound: bool,
) -> Result<(), ConfigError> {
    let set = [
        ("introspection", p.introspection.is_some()),
        ("issuer", p.issuer.is_some()),
        ("audiences", !p.audiences.is_empty()),
        ("local_jwks", p.local_jwks.is_some()),
        ("remote_jwks", p.remote_jwks.is_some()),
        ("clock_skew_seconds", p.clock_skew_seconds.is_some()),
        ("require_expiration", p.require_expiration),
        ("max_lifetime", p.max_lifetime.is_some()),
        ("forward_payload_header", p.forward_payload_header.is_some()),
        ("dpop", dpop),
        ("certificate_bound_tokens", certificate_bound),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((field, _)) => Err(ConfigError::new(
            *field,
            "is a JWT provider field; this provider has api_keys",
        )),
        None => Ok(()),
    }
}

/// Where the provider looks for its credential. Defaults: for a JWT,
/// Envoy's (`Authorization: Bearer`, then `?access_token=`); for API keys,
/// `Authorization: Bearer` (the `openai` SDK) then `x-api-key` (Anthropic's).
fn compile_locations(p: &RawProvider, is_api_key: bool) -> Result<Vec<Location>, ConfigError> {
    let mut locations = Vec::new();
    for (i, h) in p.from_headers.iter().enumerate() {
        let name = header_name(&h.name, &format!("from_headers[{i}].name"))?;
        locations.push(Location::Header {
            name,
            prefix: h.value_prefix.clone().filter(|v| !v.is_empty()),
        });
    }
    for (i, param) in p.from_params.iter().enumerate() {
        if param.is_empty() {
            return Err(ConfigError::new(
                format!("from_params[{i}]"),
                "must not be empty",
            ));
        }
        locations.push(Location::Param(param.clone()));
    }
    for (i, cookie) in p.from_cookies.iter().enumerate() {
        if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
            return Err(ConfigError::new(
                format!("from_cookies[{i}]"),
                "is not a valid cookie name",
            ));
        }
        locations.push(Location::Cookie(cookie.clone()));
    }
    if locations.is_empty() {
        locations.push(Location::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        });
        locations.push(if is_api_key {
            Location::Header {
                name: "x-api-key".into(),
                prefix: None,
            }
        } else {
            Location::Param("access_token".into())
        });
    }
    if let Some(prefix) = locations.iter().find_map(|l| match l {
        Location::Header {
            prefix: Some(p), ..
        } => (!is_valid_header_value(p)).then_some(p),
        _ => None,
    }) {
        return Err(ConfigError::new(
            "from_headers",
            format!("value_prefix {prefix:?} has control characters"),
        ));
    }
    Ok(locations)
}

/// `issuer` and `audiences`, checked the same for every token kind.
fn check_issuer_and_audiences(p: &RawProvider) -> Result<(), ConfigError> {
    if let Some(iss) = &p.issuer {
        if iss.is_empty() {
            return Err(ConfigError::new("issuer", "must not be empty when set"));
        }
    }
    if p.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            "audiences",
            "an audience must not be empty",
        ));
    }
    Ok(())
}

fn compile_max_lifetime(p: &RawProvider) -> Result<Option<u64>, ConfigError> {
    let max_lifetime = p.max_lifetime.map(|d| d.as_secs());
    if max_lifetime == Some(0) {
        return Err(ConfigError::new(
            "max_lifetime",
            "must be at least one second",
        ));
    }
    Ok(max_lifetime)
}

/// An introspection provider: the IdP judges the token, so it has no keys
/// and no payload segment to forward.
fn compile_introspection(
    p: RawProvider,
    raw: RawIntrospection,
    env: &dyn Environment,
) -> Result<IntrospectionProvider, ConfigError> {
    let set = [
        ("local_jwks", p.local_jwks.is_some()),
        ("remote_jwks", p.remote_jwks.is_some()),
        ("forward_payload_header", p.forward_payload_header.is_some()),
    ];
    if let Some((field, _)) = set.iter().find(|(_, is_set)| *is_set) {
        return Err(ConfigError::new(
            *field,
            "is not for an introspection provider (the IdP judges its opaque tokens)",
        ));
    }
    check_issuer_and_audiences(&p)?;
    let introspection = Introspection::compile(raw, env).map_err(|e| e.under("introspection"))?;
    Ok(IntrospectionProvider {
        times: TimeChecks {
            clock_skew: p.clock_skew_seconds.unwrap_or(60),
            require_expiration: p.require_expiration,
            max_lifetime: compile_max_lifetime(&p)?,
        },
        issuer: p.issuer,
        audiences: p.audiences,
        introspection,
    })
}

fn compile_jwt(p: RawProvider, env: &dyn Environment) -> Result<JwtProvider, ConfigError> {
    check_issuer_and_audiences(&p)?;
    let max_lifetime = compile_max_lifetime(&p)?;
    let mut skipped_keys = Vec::new();
    let keys = match (p.local_jwks, p.remote_jwks) {
        (Some(source), None) => {
            let text = source.read(env).map_err(|e| e.under("local_jwks"))?;
            let loaded = parse_jwks(&text).map_err(|e| ConfigError::new("local_jwks", e))?;
            skipped_keys = loaded.skipped;
            ProviderKeys::Local(Arc::new(loaded.keys))
        }
        (None, Some(remote)) => {
            ProviderKeys::Remote(compile_remote(remote).map_err(|e| e.under("remote_jwks"))?)
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "remote_jwks",
                "set either local_jwks or remote_jwks, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                "local_jwks",
                "a provider needs its keys: set local_jwks or remote_jwks (a JWT provider), or api_keys / api_keys_from (an API key provider)",
            ))
        }
    };
    let forward_payload_header = p
        .forward_payload_header
        .as_deref()
        .map(|h| header_name(h, "forward_payload_header"))
        .transpose()?;
    Ok(JwtProvider {
        issuer: p.issuer,
        audiences: p.audiences,
        keys,
        skipped_keys,
        clock_skew: p.clock_skew_seconds.unwrap_or(60),
        require_expiration: p.require_expiration,
        max_lifetime,
        forward_payload_header,
    })
}

/// The RFC 9728 documents of the configuration, one per metadata path.
#[derive(Default)]
struct Documents(Vec<ProtectedResource>);

impl Documents {
    /// Adds a document, or finds the same one already there; two different
    /// documents at one path are refused.
    fn add(&mut self, doc: ProtectedResource, field: &str) -> Result<String, ConfigError> {
        match self.0.iter().find(|d| d.metadata_path == doc.metadata_path) {
            Some(existing) if *existing == doc => {}
            Some(_) => {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "another protected_resource block with different content is served at {}",
                        doc.metadata_path
                    ),
                ))
            }
            None => self.0.push(doc.clone()),
        }
        Ok(doc.metadata_url)
    }
}

/// A rule's challenge parameters, and its RFC 9728 document (its own
/// block, else the block of the first provider it requires that has one).
fn rule_challenge(
    providers: &[Provider],
    requirement: Option<&Requirement>,
    claim_rules: &[ClaimRule],
    own: Option<RawProtectedResource>,
    documents: &mut Documents,
) -> Result<RuleChallenge, ConfigError> {
    let mut challenge = RuleChallenge::default();
    let Some(requirement) = requirement else {
        if own.is_some() {
            return Err(ConfigError::new(
                "protected_resource",
                "needs a `requires` (a route without a token to present has no metadata to publish)",
            ));
        }
        return Ok(challenge);
    };
    let involved: Vec<&Provider> = requirement
        .providers(providers.len())
        .into_iter()
        .filter_map(|i| providers.get(i))
        .collect();
    // A Bearer challenge unless every provider requires DPoP; a DPoP one
    // with the algorithms some provider accepts.
    challenge.bearer = involved
        .iter()
        .any(|p| !p.dpop.as_ref().is_some_and(|d| d.required));
    let mut algs: Vec<&str> = Vec::new();
    for d in involved.iter().filter_map(|p| p.dpop.as_ref()) {
        for alg in &d.algs {
            if !algs.contains(&alg.name()) {
                algs.push(alg.name());
            }
        }
    }
    if !algs.is_empty() {
        challenge.dpop_algs = Some(algs.join(" "));
    }
    let mut scopes = Vec::new();
    for rule in claim_rules {
        for scope in rule.scope_values() {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    if !scopes.is_empty() {
        challenge.scope = Some(scopes.join(" "));
    }
    challenge.resource_metadata = match own {
        Some(raw) => {
            let mut facts = facts_of(&involved);
            for s in &scopes {
                facts.add_scope(s);
            }
            let doc = ProtectedResource::compile(raw, &facts)
                .map_err(|e| e.under("protected_resource"))?;
            Some(documents.add(doc, "protected_resource")?)
        }
        None => involved.iter().find_map(|p| p.resource_metadata.clone()),
    };
    Ok(challenge)
}

/// Envoy's default `cache_duration` of a remote JWKS.
const DEFAULT_JWKS_CACHE_SECS: u64 = 600;
/// Envoy's `HttpUri` has no default timeout; a fetch must end.
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

fn compile_remote(raw: RawRemoteJwks) -> Result<RemoteJwks, ConfigError> {
    let http_uri =
        HttpUri::compile(raw.http_uri, DEFAULT_JWKS_TIMEOUT).map_err(|e| e.under("http_uri"))?;
    let cache_duration_secs = raw
        .cache_duration
        .map_or(DEFAULT_JWKS_CACHE_SECS, |d| d.as_secs());
    if cache_duration_secs == 0 {
        return Err(ConfigError::new(
            "cache_duration",
            "must be at least one second",
        ));
    }
    let max_document_bytes = raw.max_document_bytes.unwrap_or(DEFAULT_MAX_DOCUMENT_BYTES);
    if max_document_bytes == 0 || max_document_bytes > MAX_MAX_DOCUMENT_BYTES {
        return Err(ConfigError::new(
            "max_document_bytes",
            format!("must lie between 1 and {MAX_MAX_DOCUMENT_BYTES}"),
        ));
    }
    Ok(RemoteJwks {
        http_uri,
        cache_duration_secs,
        discovery: raw.discovery,
        max_document_bytes,
    })
}

fn compile_requirement(
    raw: RawRequirement,
    providers: &[Provider],
) -> Result<Requirement, ConfigError> {
    let find = |field: &str, name: &str| {
        providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                ConfigError::new(
                    field,
                    format!("provider `{name}` is not defined in providers"),
                )
            })
    };
    let list = |field: &str, l: RawRequirementList| -> Result<Vec<Requirement>, ConfigError> {
        if l.requirements.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.requirements"),
                "must not be empty",
            ));
        }
        l.requirements
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                compile_requirement(r, providers)
                    .map_err(|e| e.under(&format!("{field}.requirements[{i}]")))
            })
            .collect()
    };
    let mut set = Vec::new();
    if let Some(name) = raw.provider_name {
        set.push(Requirement::Provider {
            provider: find("provider_name", &name)?,
            audiences: None,
        });
    }
    if let Some(pa) = raw.provider_and_audiences {
        if pa.audiences.is_empty() {
            return Err(ConfigError::new(
                "provider_and_audiences.audiences",
                "must not be empty",
            ));
        }
        let provider = find("provider_and_audiences.provider_name", &pa.provider_name)?;
        if providers
            .get(provider)
            .is_some_and(|p| matches!(p.kind, ProviderKind::ApiKeys(_)))
        {
            return Err(ConfigError::new(
                "provider_and_audiences.provider_name",
                format!(
                    "provider `{}` has API keys, which have no audience; use provider_name",
                    pa.provider_name
                ),
            ));
        }
        set.push(Requirement::Provider {
            provider,
            audiences: Some(pa.audiences),
        });
    }
    if let Some(l) = raw.requires_any {
        set.push(Requirement::Any(list("requires_any", l)?));
    }
    if let Some(l) = raw.requires_all {
        set.push(Requirement::All(list("requires_all", l)?));
    }
    if raw.allow_missing.is_some() {
        set.push(Requirement::AllowMissing);
    }
    if raw.allow_missing_or_failed.is_some() {
        set.push(Requirement::AllowMissingOrFailed);
    }
    match (set.pop(), set.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(ConfigError::new(
            "",
            "exactly one of provider_name, provider_and_audiences, requires_any, requires_all, allow_missing, allow_missing_or_failed must be set",
        )),
    }
}
