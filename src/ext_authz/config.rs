//! The `ext_authz` section, named as Envoy's `ext_authz` with an
//! `http_service` or a `grpc_service`.

use super::cache::CacheSecret;
use crate::callout::GrpcTarget;
use crate::response::is_valid_header_value;
use crate::route::{RawRouteMatch, RawStringMatcher, RouteMatch, StringMatcher};
use crate::vocab::{
    duration, header_name, ConfigError, DataSource, Environment, HttpUri, Json, RawHttpUri,
};
use serde::{de::Error as _, Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's default `ext_authz` timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Envoy's default `status_on_error`.
const DEFAULT_STATUS_ON_ERROR: u16 = 403;
/// A configured `decision_cache.key_secret` is at least this long.
const MIN_KEY_SECRET_BYTES: usize = 16;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawExtAuthz {
    http_service: Option<RawHttpService>,
    grpc_service: Option<RawGrpcService>,
    /// Sent in every gRPC check (`AttributeContext.context_extensions`);
    /// a matching rule's own are merged over them.
    #[serde(default)]
    context_extensions: BTreeMap<String, String>,
    #[serde(default)]
    failure_mode_allow: bool,
    #[serde(default)]
    failure_mode_allow_header_add: bool,
    status_on_error: Option<RawHttpStatus>,
    with_request_body: Option<RawBufferSettings>,
    /// Verified JWT claims sent to the auth service as headers.
    #[serde(default)]
    claims_to_headers: Vec<RawClaimHeader>,
    /// Per-route switch, first match wins: `{"match": {...}, "disabled": true}`.
    #[serde(default)]
    rules: Vec<RawRule>,
    decision_cache: Option<RawDecisionCache>,
    /// gRPC: the request headers as `header_map` entries (one per value,
    /// its bytes in `raw_value`) instead of the `headers` map. HTTP: a
    /// repeated header as its lines, not one joined with `,`.
    #[serde(default)]
    encode_raw_headers: bool,
    /// The request headers the check carries (gRPC: all when unset; HTTP:
    /// as `authorization_request.allowed_headers`). Case-sensitive unless
    /// a pattern sets `ignore_case`, as in Envoy.
    allowed_headers: Option<RawListMatcher>,
    /// Request headers the check never carries (before `allowed_headers`).
    disallowed_headers: Option<RawListMatcher>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawHttpService {
    server_uri: RawHttpUri,
    #[serde(default)]
    path_prefix: String,
    authorization_request: Option<RawAuthorizationRequest>,
    authorization_response: Option<RawAuthorizationResponse>,
}

/// Envoy's `GrpcService` with an `envoy_grpc` target.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawGrpcService {
    envoy_grpc: RawEnvoyGrpc,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    timeout: Option<Duration>,
    #[serde(default)]
    initial_metadata: Vec<RawHeaderValue>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawEnvoyGrpc {
    cluster_name: String,
    #[serde(default)]
    authority: String,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawAuthorizationRequest {
    allowed_headers: Option<RawListMatcher>,
    #[serde(default)]
    headers_to_add: Vec<RawHeaderValue>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawAuthorizationResponse {
    allowed_upstream_headers: Option<RawListMatcher>,
    allowed_upstream_headers_to_append: Option<RawListMatcher>,
    allowed_client_headers: Option<RawListMatcher>,
    allowed_client_headers_on_success: Option<RawListMatcher>,
}

/// Envoy's `ListStringMatcher`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawListMatcher {
    patterns: Vec<RawStringMatcher>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawHeaderValue {
    key: String,
    value: String,
}

/// Envoy's `HttpStatus` (`{"code": 503}`), or a bare number.
#[derive(Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), serde(untagged))]
enum RawHttpStatus {
    Code(u16),
    Object { code: u16 },
}

/// What `#[serde(untagged)]` accepted (other members of the object ignored)
/// and its error, written out because serde's untagged buffering costs the
/// `.wasm` several KB (issue 14).
impl<'de> Deserialize<'de> for RawHttpStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = |v: &Json| match v {
            Json::U64(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let found = match &Json::deserialize(d)? {
            v @ Json::U64(_) => code(v).map(RawHttpStatus::Code),
            Json::Obj(members) => {
                let mut codes = members.iter().filter(|(k, _)| k == "code");
                match (codes.next(), codes.next()) {
                    (Some((_, v)), None) => code(v).map(|code| RawHttpStatus::Object { code }),
                    _ => None,
                }
            }
            _ => None,
        };
        found.ok_or_else(|| {
            D::Error::custom("data did not match any variant of untagged enum RawHttpStatus")
        })
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBufferSettings {
    max_request_bytes: usize,
    #[serde(default)]
    allow_partial_message: bool,
    /// gRPC: the body as `raw_body` bytes instead of the `body` string.
    #[serde(default)]
    pack_as_bytes: bool,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    claim_name: String,
    header_name: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match", default)]
    route: RawRouteMatch,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    context_extensions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawDecisionCache {
    /// Request headers that separate decisions on top of everything the
    /// service is shown (the key always covers the whole check request).
    #[serde(default)]
    key_headers: Vec<String>,
    /// The key of the keyed hash that names cached decisions in shared
    /// data; a random one per configuration when unset.
    key_secret: Option<DataSource>,
    #[serde(deserialize_with = "duration::deserialize")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "crate::vocab::duration::RawDuration")
    )]
    ttl: Duration,
    /// Denials are cached only when set, and for this (short) time.
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    denied_ttl: Option<Duration>,
    max_entries: Option<usize>,
}

/// Header names (lowercase) matched against patterns.
#[derive(Debug, Default)]
pub struct HeaderList(Vec<StringMatcher>);

impl HeaderList {
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|m| m.matches(name))
    }

    /// `fold`: every pattern ignores case (as the `http_service` lists
    /// always have here); else each pattern as it says, as Envoy matches.
    fn compile(
        raw: Option<RawListMatcher>,
        field: &str,
        fold: bool,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let mut out = Vec::new();
        for (i, mut p) in raw.patterns.into_iter().enumerate() {
            p.ignore_case |= fold;
            out.push(
                StringMatcher::compile(&p)
                    .map_err(|e| e.under(&format!("{field}.patterns[{i}]")))?,
            );
        }
        Ok(Some(HeaderList(out)))
    }
}

#[derive(Debug)]
pub struct DecisionCacheConfig {
    pub key_headers: Vec<String>,
    /// From `key_secret`; `None`: the random secret of the configuration,
    /// set by `prepare_shared_data` (see `cache`).
    pub secret: Option<CacheSecret>,
    pub ttl_secs: u64,
    pub denied_ttl_secs: u64,
    pub max_entries: usize,
}

#[derive(Debug)]
pub struct BodyPolicy {
    pub max_bytes: usize,
    pub allow_partial: bool,
    pub pack_as_bytes: bool,
}

/// Where checks go over HTTP.
#[derive(Debug)]
pub struct HttpSettings {
    /// Its authority is the `:authority` of a check for a request that has none.
    pub server_uri: HttpUri,
    pub path_prefix: String,
}

/// Where checks go over gRPC.
#[derive(Debug)]
pub struct GrpcSettings {
    pub cluster: String,
    /// `:authority` of the calls; empty: the cluster name (Envoy's default).
    pub authority: String,
    pub timeout: Duration,
    pub initial_metadata: Vec<(String, String)>,
    /// The calls' target, encoded once here rather than for every check.
    pub target: Arc<GrpcTarget>,
}

#[derive(Debug)]
pub enum Transport {
    Http(HttpSettings),
    Grpc(GrpcSettings),
}

/// A per-route rule, first match wins.
#[derive(Debug)]
pub struct Rule {
    pub route: RouteMatch,
    pub disabled: bool,
    pub context_extensions: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct ExtAuthz {
    pub transport: Transport,
    /// The request headers a check carries besides those it always has;
    /// `None`: none over HTTP, all over gRPC.
    pub allowed_headers: Option<HeaderList>,
    /// Request headers a check never carries.
    pub disallowed_headers: HeaderList,
    /// gRPC: headers in `header_map` (`raw_value`), not in `headers`;
    /// HTTP: repeats not joined.
    pub encode_raw_headers: bool,
    /// The `http_service` lists below are empty for gRPC, whose service
    /// says per answer what to do with which header.
    pub headers_to_add: Vec<(String, String)>,
    pub upstream_headers: HeaderList,
    pub upstream_headers_to_append: HeaderList,
    /// `None`: every header of a denial goes to the client (Envoy's default).
    pub client_headers: Option<HeaderList>,
    pub client_headers_on_success: HeaderList,
    pub failure_mode_allow: bool,
    pub failure_mode_allow_header_add: bool,
    pub status_on_error: u16,
    pub with_request_body: Option<BodyPolicy>,
    /// The field that makes the service's answer edit request headers
    /// (impossible once the headers are released for a body check).
    pub answer_edits_headers: Option<String>,
    pub claims_to_headers: Vec<(String, Vec<String>)>,
    pub rules: Vec<Rule>,
    pub context_extensions: BTreeMap<String, String>,
    pub decision_cache: Option<DecisionCacheConfig>,
    /// Separates this plugin's cached decisions from another plugin's in the
    /// same VM (set from a hash of the whole plugin configuration).
    pub cache_namespace: String,
}

impl ExtAuthz {
    pub fn compile(raw: RawExtAuthz, env: &dyn Environment) -> Result<Self, ConfigError> {
        let (transport, req, resp) = match (raw.http_service, raw.grpc_service) {
            (Some(svc), None) => {
                let server_uri = HttpUri::compile(svc.server_uri, DEFAULT_TIMEOUT)
                    .map_err(|e| e.under("http_service.server_uri"))?;
                if !svc.path_prefix.is_empty() && !svc.path_prefix.starts_with('/') {
                    return Err(ConfigError::new(
                        "http_service.path_prefix",
                        "must start with `/`",
                    ));
                }
                (
                    Transport::Http(HttpSettings {
                        server_uri,
                        path_prefix: svc.path_prefix,
                    }),
                    svc.authorization_request.unwrap_or_default(),
                    svc.authorization_response.unwrap_or_default(),
                )
            }
            (None, Some(svc)) => (
                Transport::Grpc(GrpcSettings::compile(svc)?),
                RawAuthorizationRequest::default(),
                RawAuthorizationResponse::default(),
            ),
            _ => {
                return Err(ConfigError::new(
                    "",
                    "exactly one of http_service, grpc_service must be set",
                ))
            }
        };
        if !raw.context_extensions.is_empty() && matches!(transport, Transport::Http(_)) {
            return Err(ConfigError::new(
                "context_extensions",
                "only a grpc_service check carries context_extensions",
            ));
        }
        let rq = "http_service.authorization_request";
        let rs = "http_service.authorization_response";
        let is_http = matches!(transport, Transport::Http(_));
        let top_allowed = HeaderList::compile(raw.allowed_headers, "allowed_headers", false)?;
        let http_allowed =
            HeaderList::compile(req.allowed_headers, &format!("{rq}.allowed_headers"), true)?;
        if top_allowed.is_some() && http_allowed.is_some() {
            // As Envoy: "Invalid duplicate configuration for allowed_headers".
            return Err(ConfigError::new(
                "allowed_headers",
                format!("cannot be combined with {rq}.allowed_headers"),
            ));
        }
        let disallowed_headers =
            HeaderList::compile(raw.disallowed_headers, "disallowed_headers", false)?
                .unwrap_or_default();
        if is_http {
            // Envoy would send a check without them (a broken request).
            if let Some(p) = [":method", ":path", ":authority"]
                .into_iter()
                .find(|p| disallowed_headers.matches(p))
            {
                return Err(ConfigError::new(
                    "disallowed_headers",
                    format!("matches {p}, which an http_service check needs"),
                ));
            }
        }
        let mut headers_to_add = Vec::new();
        for (i, h) in req.headers_to_add.iter().enumerate() {
            let field = format!("{rq}.headers_to_add[{i}]");
            if !is_valid_header_value(&h.value) {
                return Err(ConfigError::new(
                    format!("{field}.value"),
                    "has control characters",
                ));
            }
            headers_to_add.push((
                header_name(&h.key, &format!("{field}.key"))?,
                h.value.clone(),
            ));
        }
        let status_on_error = match raw.status_on_error {
            None => DEFAULT_STATUS_ON_ERROR,
            Some(RawHttpStatus::Code(c)) | Some(RawHttpStatus::Object { code: c }) => c,
        };
        if !(200..=599).contains(&status_on_error) {
            return Err(ConfigError::new(
                "status_on_error",
                "must be an HTTP status between 200 and 599",
            ));
        }
        let with_request_body = match raw.with_request_body {
            None => None,
            Some(b) if b.max_request_bytes == 0 => {
                return Err(ConfigError::new(
                    "with_request_body.max_request_bytes",
                    "must be greater than 0",
                ))
            }
            Some(b) => Some(BodyPolicy {
                max_bytes: b.max_request_bytes,
                allow_partial: b.allow_partial_message,
                pack_as_bytes: b.pack_as_bytes,
            }),
        };
        let mut claims_to_headers = Vec::new();
        for (i, c) in raw.claims_to_headers.iter().enumerate() {
            let field = format!("claims_to_headers[{i}]");
            if c.claim_name.is_empty() || c.claim_name.split('.').any(str::is_empty) {
                return Err(ConfigError::new(
                    format!("{field}.claim_name"),
                    "must be a claim name or dotted path",
                ));
            }
            claims_to_headers.push((
                header_name(&c.header_name, &format!("{field}.header_name"))?,
                c.claim_name.split('.').map(str::to_string).collect(),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            if !r.context_extensions.is_empty() && matches!(transport, Transport::Http(_)) {
                return Err(ConfigError::new(
                    format!("rules[{i}].context_extensions"),
                    "only a grpc_service check carries context_extensions",
                ));
            }
            rules.push(Rule {
                route: RouteMatch::compile(&r.route)
                    .map_err(|e| e.under(&format!("rules[{i}].match")))?,
                disabled: r.disabled,
                context_extensions: r.context_extensions,
            });
        }
        let decision_cache = match raw.decision_cache {
            None => None,
            Some(c) => {
                let mut key_headers = Vec::new();
                for (i, h) in c.key_headers.iter().enumerate() {
                    key_headers.push(header_name(h, &format!("decision_cache.key_headers[{i}]"))?);
                }
                let max_entries = c.max_entries.unwrap_or(1024);
                if max_entries == 0 || max_entries > 1_000_000 {
                    return Err(ConfigError::new(
                        "decision_cache.max_entries",
                        "must be between 1 and 1000000",
                    ));
                }
                if c.ttl.as_secs() == 0 {
                    return Err(ConfigError::new(
                        "decision_cache.ttl",
                        "must be at least one second",
                    ));
                }
                let secret = match c.key_secret {
                    None => None,
                    Some(source) => {
                        let text = source
                            .read(env)
                            .map_err(|e| e.under("decision_cache.key_secret"))?;
                        if text.len() < MIN_KEY_SECRET_BYTES {
                            return Err(ConfigError::new(
                                "decision_cache.key_secret",
                                format!("must be at least {MIN_KEY_SECRET_BYTES} bytes"),
                            ));
                        }
                        Some(CacheSecret::derive(text.as_bytes()))
                    }
                };
                Some(DecisionCacheConfig {
                    key_headers,
                    secret,
                    ttl_secs: c.ttl.as_secs(),
                    denied_ttl_secs: c.denied_ttl.map_or(0, |d| d.as_secs()),
                    max_entries,
                })
            }
        };
        let upstream_headers = HeaderList::compile(
            resp.allowed_upstream_headers,
            &format!("{rs}.allowed_upstream_headers"),
            true,
        )?;
        let upstream_headers_to_append = HeaderList::compile(
            resp.allowed_upstream_headers_to_append,
            &format!("{rs}.allowed_upstream_headers_to_append"),
            true,
        )?;
        // The field that makes the answer edit request headers, if any.
        let answer_edits_headers = if upstream_headers.is_some() {
            Some(format!("{rs}.allowed_upstream_headers"))
        } else if upstream_headers_to_append.is_some() {
            Some(format!("{rs}.allowed_upstream_headers_to_append"))
        } else if raw.failure_mode_allow_header_add {
            Some("failure_mode_allow_header_add".to_string())
        } else {
            None
        };
        if with_request_body.is_some() {
            // In body mode the headers are gone before the service answers (see flow.rs).
            if let Some(field) = answer_edits_headers.clone() {
                return Err(ConfigError::new(
                    field,
                    "cannot be combined with with_request_body: Envoy's proxy-wasm ABI lets no filter edit request headers once it reads the body",
                ));
            }
        }
        Ok(ExtAuthz {
            answer_edits_headers,
            transport,
            context_extensions: raw.context_extensions,
            allowed_headers: top_allowed.or(http_allowed),
            disallowed_headers,
            encode_raw_headers: raw.encode_raw_headers,
            headers_to_add,
            upstream_headers: upstream_headers.unwrap_or_default(),
            upstream_headers_to_append: upstream_headers_to_append.unwrap_or_default(),
            client_headers: HeaderList::compile(
                resp.allowed_client_headers,
                &format!("{rs}.allowed_client_headers"),
                true,
            )?,
            client_headers_on_success: HeaderList::compile(
                resp.allowed_client_headers_on_success,
                &format!("{rs}.allowed_client_headers_on_success"),
                true,
            )?
            .unwrap_or_default(),
            failure_mode_allow: raw.failure_mode_allow,
            failure_mode_allow_header_add: raw.failure_mode_allow_header_add,
            status_on_error,
            with_request_body,
            claims_to_headers,
            rules,
            decision_cache,
            cache_namespace: String::new(),
        })
    }
}

impl GrpcSettings {
    fn compile(raw: RawGrpcService) -> Result<Self, ConfigError> {
        let field = "grpc_service";
        if raw.envoy_grpc.cluster_name.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.envoy_grpc.cluster_name"),
                "must name an Envoy cluster (with HTTP/2)",
            ));
        }
        let authority = raw.envoy_grpc.authority;
        if !is_valid_header_value(&authority) || authority.contains(' ') {
            return Err(ConfigError::new(
                format!("{field}.envoy_grpc.authority"),
                "is not a valid authority",
            ));
        }
        let timeout = crate::vocab::callout_timeout(raw.timeout.unwrap_or(DEFAULT_TIMEOUT))
            .map_err(|reason| ConfigError::new(format!("{field}.timeout"), reason))?;
        let mut initial_metadata = Vec::new();
        for (i, h) in raw.initial_metadata.iter().enumerate() {
            let f = format!("{field}.initial_metadata[{i}]");
            if !is_valid_header_value(&h.value) {
                return Err(ConfigError::new(
                    format!("{f}.value"),
                    "has control characters",
                ));
            }
            initial_metadata.push((header_name(&h.key, &format!("{f}.key"))?, h.value.clone()));
        }
        let cluster = raw.envoy_grpc.cluster_name;
        let target = Arc::new(super::grpc::target(
            &cluster,
            &authority,
            &initial_metadata,
            timeout,
        ));
        Ok(GrpcSettings {
            cluster,
            authority,
            timeout,
            initial_metadata,
            target,
        })
    }
}

#[cfg(test)]
mod raw_http_status_tests {
    use super::RawHttpStatus;

    #[test]
    fn reads_what_the_untagged_derive_read() {
        mod derived {
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            pub enum RawHttpStatus {
                Code(u16),
                Object { code: u16 },
            }
        }
        let inputs = [
            "503",
            "0",
            "65535",
            "65536",
            "-1",
            "5.0",
            "\"503\"",
            "null",
            "true",
            "[]",
            "[503]",
            "[503, 1]",
            "[\"503\"]",
            "{}",
            r#"{"code": 503}"#,
            r#"{"code": 503, "other": [1]}"#,
            r#"{"code": 503, "code": 503}"#,
            r#"{"code": 70000}"#,
            r#"{"code": "503"}"#,
            r#"{"status": 503}"#,
        ];
        let theirs = |s: derived::RawHttpStatus| match s {
            derived::RawHttpStatus::Code(c) => format!("{:?}", RawHttpStatus::Code(c)),
            derived::RawHttpStatus::Object { code } => {
                format!("{:?}", RawHttpStatus::Object { code })
            }
        };
        for input in inputs {
            assert_eq!(
                crate::vocab::parse_json::<RawHttpStatus>(input.as_bytes())
                    .map(|s| format!("{s:?}")),
                crate::vocab::parse_json::<derived::RawHttpStatus>(input.as_bytes()).map(theirs),
                "{input}"
            );
        }
    }
}
