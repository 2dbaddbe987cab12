//! Opaque tokens judged by the identity provider: OAuth 2 token
//! introspection (RFC 7662), a kind of provider of the `jwt_authn` stage.
//!
//! The token is POSTed to the introspection endpoint with the gateway's
//! client authentication; `active: true` makes the answer's members the
//! claims of the identity (checked for `iss`, `aud`, `exp`, `nbf` as a
//! JWT's are), so claim headers, claim rules, the passthrough's claims and
//! per-tenant upstream keys work unchanged. Keycloak's answer is taken as
//! it comes (`aud` a string or a list, `scope` a space-separated string,
//! `realm_access.roles`...).
//!
//! Answers are cached in proxy-wasm shared data, so every worker VM uses
//! them: keyed by SHA-256 of the token (never the token), in one of
//! `max_entries` slots per provider (bounded whatever the traffic), an
//! active answer until its `exp` and at most `max_ttl`, an inactive one for
//! `inactive_ttl`. Failures (no answer, a status other than 200, a body that
//! is no introspection answer) are never cached: the request is answered
//! `status_on_error` (503 by default) and the reason is logged, remote text
//! quoted.

use crate::callout::{CalloutRequest, CalloutResponse, SharedStore};
use crate::jwt::token::Claims;
use crate::shared_cache::{Lookup, SlotCache};
use crate::vocab::client_auth::{ClientAuthMethod, ClientCredentials, Form};
use crate::vocab::{
    duration, quote, quote_bytes, ConfigError, DataSource, Environment, HttpUri, RawHttpUri,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_ENTRIES: usize = 1024;
const MAX_MAX_ENTRIES: usize = 1_000_000;
const DEFAULT_MAX_TTL_SECS: u64 = 300;
const DEFAULT_INACTIVE_TTL_SECS: u64 = 10;
const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
const MAX_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Active answers whose claims take more than this are not cached (shared
/// memory is copied into each VM on every hit).
const MAX_CACHED_CLAIMS: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The introspection endpoint (Keycloak:
    /// `.../realms/<realm>/protocol/openid-connect/token/introspect`).
    endpoint: Option<RawHttpUri>,
    /// Or the IdP's OIDC discovery document, whose `introspection_endpoint`
    /// is then used, through the same cluster.
    discovery: Option<RawHttpUri>,
    client_id: String,
    client_secret: DataSource,
    /// `client_secret_basic` (default) or `client_secret_post`.
    client_auth: Option<ClientAuthMethod>,
    cache: Option<RawCache>,
    /// The answer when the endpoint fails: 503 (default) or 401.
    status_on_error: Option<u16>,
    max_response_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_entries: Option<usize>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    max_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    inactive_ttl: Option<Duration>,
}

/// Where the introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Configured(HttpUri),
    /// Read from this discovery document's `introspection_endpoint`.
    Discovered(HttpUri),
}

/// How long a discovered endpoint is used before the document is read again.
pub const DISCOVERY_TTL_SECS: u64 = 600;

/// A provider's introspection settings.
#[derive(Debug)]
pub struct Introspection {
    pub endpoint: Endpoint,
    client: ClientCredentials,
    pub max_entries: usize,
    /// Longest an active answer is used (it never outlives its `exp`); 0: not cached.
    pub max_ttl_secs: u64,
    /// How long an inactive answer is used; 0: not cached.
    pub inactive_ttl_secs: u64,
    pub status_on_error: u16,
    pub max_response_bytes: usize,
}

impl Introspection {
    pub fn compile(raw: RawIntrospection, env: &dyn Environment) -> Result<Self, ConfigError> {
        let endpoint = match (raw.endpoint, raw.discovery) {
            (Some(e), None) => Endpoint::Configured(
                HttpUri::compile(e, DEFAULT_TIMEOUT).map_err(|e| e.under("endpoint"))?,
            ),
            (None, Some(d)) => Endpoint::Discovered(
                HttpUri::compile(d, DEFAULT_TIMEOUT).map_err(|e| e.under("discovery"))?,
            ),
            _ => {
                return Err(ConfigError::new(
                    "endpoint",
                    "set exactly one of endpoint, discovery",
                ))
            }
        };
        let client = ClientCredentials::compile(
            raw.client_id,
            raw.client_secret,
            raw.client_auth.unwrap_or(ClientAuthMethod::Basic),
            env,
        )?;
        let cache = raw.cache.unwrap_or(RawCache {
            max_entries: None,
            max_ttl: None,
            inactive_ttl: None,
        });
        let max_entries = cache.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if !(1..=MAX_MAX_ENTRIES).contains(&max_entries) {
            return Err(ConfigError::new(
                "cache.max_entries",
                format!("must lie between 1 and {MAX_MAX_ENTRIES}"),
            ));
        }
        let status_on_error = raw.status_on_error.unwrap_or(503);
        if !matches!(status_on_error, 401 | 403 | 500 | 502 | 503 | 504) {
            return Err(ConfigError::new(
                "status_on_error",
                "must be 401, 403, 500, 502, 503 or 504",
            ));
        }
        let max_response_bytes = raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if !(1..=MAX_MAX_RESPONSE_BYTES).contains(&max_response_bytes) {
            return Err(ConfigError::new(
                "max_response_bytes",
                format!("must lie between 1 and {MAX_MAX_RESPONSE_BYTES}"),
            ));
        }
        Ok(Introspection {
            endpoint,
            client,
            max_entries,
            max_ttl_secs: cache.max_ttl.map_or(DEFAULT_MAX_TTL_SECS, |d| d.as_secs()),
            inactive_ttl_secs: cache
                .inactive_ttl
                .map_or(DEFAULT_INACTIVE_TTL_SECS, |d| d.as_secs()),
            status_on_error,
            max_response_bytes,
        })
    }

    /// The introspection request (RFC 7662 2.1). Its body holds the token
    /// and perhaps the client secret: sent, never logged.
    pub fn request(&self, token: &str, endpoint: &HttpUri) -> CalloutRequest {
        let mut form = Form::default();
        form.push("token", token);
        form.push("token_type_hint", "access_token");
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), endpoint.path.clone()),
            (":authority".to_string(), endpoint.authority.clone()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept".to_string(), "application/json".to_string()),
        ];
        self.client.authenticate(&mut headers, &mut form);
        CalloutRequest {
            cluster: endpoint.cluster.clone(),
            headers,
            body: form.into_bytes(),
            timeout: endpoint.timeout,
        }
    }

    /// The endpoint as configured, or as discovered: from this request's
    /// discovery, else from shared data (any VM's, until it expires).
    pub fn endpoint_now(
        &self,
        namespace: &str,
        provider: usize,
        store: &dyn SharedStore,
        learnt: &[(usize, HttpUri)],
        now: u64,
    ) -> Option<HttpUri> {
        let doc = match &self.endpoint {
            Endpoint::Configured(e) => return Some(e.clone()),
            Endpoint::Discovered(doc) => doc,
        };
        if let Some((_, e)) = learnt.iter().find(|(p, _)| *p == provider) {
            return Some(e.clone());
        }
        let bytes = store.get(&discovered_key(namespace, provider))?;
        let (expires, rest) = (bytes.get(..8)?, bytes.get(8..)?);
        if now >= u64::from_le_bytes(expires.try_into().ok()?) {
            return None;
        }
        let (authority, path) = std::str::from_utf8(rest).ok()?.split_once('\n')?;
        Some(HttpUri {
            authority: authority.to_string(),
            path: path.to_string(),
            cluster: doc.cluster.clone(),
            timeout: doc.timeout,
        })
    }

    /// The GET of the discovery document, for a discovered endpoint.
    pub fn discovery_request(&self) -> Option<CalloutRequest> {
        let Endpoint::Discovered(doc) = &self.endpoint else {
            return None;
        };
        Some(CalloutRequest {
            cluster: doc.cluster.clone(),
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), doc.path.clone()),
                (":authority".into(), doc.authority.clone()),
                ("accept".into(), "application/json".into()),
            ],
            body: Vec::new(),
            timeout: doc.timeout,
        })
    }

    /// The endpoint a discovery document names (its `issuer`, when it has
    /// one, must be `issuer`); it is shared with every VM for
    /// [`DISCOVERY_TTL_SECS`]. The reason of a failure is for the log.
    #[allow(clippy::too_many_arguments)]
    pub fn discovered(
        &self,
        reply: &CalloutResponse,
        issuer: Option<&str>,
        namespace: &str,
        provider: usize,
        store: &dyn SharedStore,
        now: u64,
    ) -> Result<HttpUri, String> {
        let Endpoint::Discovered(doc) = &self.endpoint else {
            return Err("not a discovered endpoint".into());
        };
        match reply.status {
            None => return Err("discovery: no valid answer".into()),
            Some(200) => {}
            Some(s) => return Err(format!("discovery: the IdP answered {s}")),
        }
        if reply.body.len() > self.max_response_bytes {
            return Err("discovery: the document is larger than max_response_bytes".into());
        }
        let doc_json: Map<String, Value> = serde_json::from_slice(&reply.body).map_err(|_| {
            format!(
                "discovery: the document is not a JSON object: {}",
                quote_bytes(&reply.body)
            )
        })?;
        if let (Some(expected), Some(Value::String(got))) = (issuer, doc_json.get("issuer")) {
            if got != expected {
                return Err(format!(
                    "discovery: the document's issuer {} is not the provider's",
                    quote(got)
                ));
            }
        }
        let uri = doc_json
            .get("introspection_endpoint")
            .and_then(Value::as_str)
            .ok_or("discovery: the document has no introspection_endpoint")?;
        let (authority, path) = crate::vocab::split_uri(uri)
            .filter(|(a, p)| !a.contains('\n') && !p.contains('\n'))
            .ok_or_else(|| {
                format!(
                    "discovery: introspection_endpoint {} is not an http(s) URI",
                    quote(uri)
                )
            })?;
        let mut value = now
            .saturating_add(DISCOVERY_TTL_SECS)
            .to_le_bytes()
            .to_vec();
        value.extend_from_slice(format!("{authority}\n{path}").as_bytes());
        store.set(&discovered_key(namespace, provider), &value);
        Ok(HttpUri {
            authority,
            path,
            cluster: doc.cluster.clone(),
            timeout: doc.timeout,
        })
    }

    /// What the endpoint's reply says. The reason of a failure is for the
    /// log, remote text quoted.
    pub fn answer(&self, reply: &CalloutResponse) -> Answer {
        match reply.status {
            None => {
                return Answer::Failed(
                    "no valid answer (timeout, reset, not HTTP, or a status outside 100-599)"
                        .into(),
                )
            }
            Some(200) => {}
            Some(s) => {
                return Answer::Failed(format!(
                    "the endpoint answered {s} {}",
                    quote_bytes(&reply.body)
                ))
            }
        }
        if reply.body.len() > self.max_response_bytes {
            return Answer::Failed(format!(
                "the answer is larger than max_response_bytes ({} bytes)",
                self.max_response_bytes
            ));
        }
        let doc: Map<String, Value> = match serde_json::from_slice(&reply.body) {
            Ok(d) => d,
            Err(_) => {
                return Answer::Failed(format!(
                    "the answer is not a JSON object: {}",
                    quote_bytes(&reply.body)
                ))
            }
        };
        parse_answer(doc)
    }
}

/// An introspection result.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `active: true`, with the answer's members as claims.
    Active(Arc<Claims>),
    /// `active: false` (unknown, expired, revoked... the endpoint does not say).
    Inactive,
    /// No usable answer; why, for the log.
    Failed(String),
}

fn parse_answer(doc: Map<String, Value>) -> Answer {
    match doc.get("active") {
        Some(Value::Bool(true)) => match Claims::from_payload(doc, "") {
            Ok(claims) => Answer::Active(Arc::new(claims)),
            Err(e) => Answer::Failed(format!(
                "the answer's claims are invalid: {}",
                e.description()
            )),
        },
        Some(Value::Bool(false)) => Answer::Inactive,
        Some(other) => Answer::Failed(format!(
            "`active` is not a boolean: {}",
            quote(&other.to_string())
        )),
        None => Answer::Failed("the answer has no `active` member".into()),
    }
}

/// SHA-256 of a token: what the cache is keyed by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// The answer for one provider and token, got by the flow from a callout:
/// the JWT stage uses it before looking in the cache.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub provider: usize,
    pub digest: TokenDigest,
    pub answer: Answer,
}

/// A token the JWT stage could not judge without asking the endpoint
/// (or first the discovery document, for where the endpoint is).
#[derive(Debug, Clone)]
pub struct Needed {
    pub provider: usize,
    pub digest: TokenDigest,
    pub discovery: bool,
    pub request: CalloutRequest,
}

/// What the flow learnt for one request from its calls: answers, and
/// discovered endpoints.
#[derive(Debug, Clone, Default)]
pub struct Learnt {
    pub answers: Vec<Fresh>,
    pub endpoints: Vec<(usize, HttpUri)>,
}

fn discovered_key(namespace: &str, provider: usize) -> String {
    format!("ai_auth.introspection_endpoint.{namespace}.{provider}")
}

/// The payload of a slot entry: kind (`1` active, `0` inactive), then for
/// an active answer its JSON.
const WIRE_VERSION: u8 = 1;

impl Introspection {
    fn slots(&self, namespace: &str, provider: usize) -> SlotCache {
        SlotCache::new(
            format!("ai_auth.introspection.{namespace}.{provider}"),
            self.max_entries,
            WIRE_VERSION,
        )
    }
}

impl Introspection {
    /// The cached answer for this token, if there is one still fresh at `now`.
    pub fn cached(
        &self,
        namespace: &str,
        provider: usize,
        store: &dyn SharedStore,
        digest: &TokenDigest,
        now: u64,
    ) -> Option<Answer> {
        let Lookup::Hit(payload) = self.slots(namespace, provider).get(store, &digest.0, now)
        else {
            return None;
        };
        let (kind, rest) = payload.split_first()?;
        match kind {
            0 => Some(Answer::Inactive),
            1 => match parse_answer(serde_json::from_slice(rest).ok()?) {
                a @ Answer::Active(_) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// Caches an answer, for as long as it may be used; returns whether it was.
    pub fn remember(
        &self,
        namespace: &str,
        provider: usize,
        store: &dyn SharedStore,
        digest: &TokenDigest,
        answer: &Answer,
        now: u64,
    ) -> bool {
        let (ttl, kind, body) = match answer {
            Answer::Active(claims) => {
                let until_exp = claims.exp.map_or(u64::MAX, |exp| exp.saturating_sub(now));
                let Ok(body) = serde_json::to_vec(&claims.payload) else {
                    return false;
                };
                if body.len() > MAX_CACHED_CLAIMS {
                    return false;
                }
                (self.max_ttl_secs.min(until_exp), 1u8, body)
            }
            Answer::Inactive => (self.inactive_ttl_secs, 0u8, Vec::new()),
            Answer::Failed(_) => return false,
        };
        if ttl == 0 {
            return false;
        }
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(kind);
        payload.extend_from_slice(&body);
        self.slots(namespace, provider)
            .put(store, &digest.0, now.saturating_add(ttl), &payload);
        true
    }
}

#[cfg(test)]
mod tests;
