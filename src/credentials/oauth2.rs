//! OAuth 2 client-credentials tokens for upstream providers (Azure Entra ID
//! for Azure OpenAI, or any token endpoint), fetched by the root context and
//! shared by every worker VM.
//!
//! - First fetch at once; a token is fetched again at half its lifetime.
//! - A token's lifetime counts from when its request was sent (the endpoint
//!   issued it later), and it is never injected in its last
//!   [`expiry_margin`] (10 % of its lifetime, between 1 s and 10 s): once the
//!   endpoint has failed that long, requests get 503, not a dead token (the
//!   failure Envoy's oauth2 injector had, envoyproxy/envoy#44674).
//! - Failures back off from `retry_back_off.base_interval` (1 s), doubling,
//!   to at most `max_interval` (10 s), as Envoy's `BackoffStrategy`.

use crate::callout::{CalloutRequest, CalloutResponse};
use crate::response::is_valid_header_value;
use crate::secret::Secret;
use crate::vocab::client_auth::{ClientAuthMethod, ClientCredentials, Form};
use crate::vocab::{duration, ConfigError, DataSource, Environment, HttpUri, RawHttpUri};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// The largest margin before a token's expiry in which it is not used.
pub const MAX_EXPIRY_MARGIN_SECS: u64 = 10;
/// Envoy's `BackoffStrategy`: base 1 s; the cap defaults to ten times the base.
const DEFAULT_RETRY_BASE_SECS: u64 = 1;
const DEFAULT_RETRY_MAX_FACTOR: u64 = 10;
/// Token responses above this are refused.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    token_uri: RawHttpUri,
    client_id: String,
    client_secret: DataSource,
    #[serde(default)]
    scopes: Vec<String>,
    /// `body` (client_secret_post, default) or `basic` (client_secret_basic).
    client_auth: Option<ClientAuthMethod>,
    /// Envoy's `config.core.v3.BackoffStrategy`: when a fetch fails.
    retry_back_off: Option<RawBackOff>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawBackOff {
    #[serde(deserialize_with = "duration::deserialize")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "crate::vocab::duration::RawDuration")
    )]
    base_interval: Duration,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    max_interval: Option<Duration>,
}

/// Retry delays after failed fetches, in whole seconds: `base`, doubling
/// with each consecutive failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackOff {
    pub base_secs: u64,
    pub max_secs: u64,
}

impl Default for BackOff {
    fn default() -> Self {
        BackOff {
            base_secs: DEFAULT_RETRY_BASE_SECS,
            max_secs: DEFAULT_RETRY_BASE_SECS * DEFAULT_RETRY_MAX_FACTOR,
        }
    }
}

impl BackOff {
    fn compile(raw: Option<RawBackOff>) -> Result<Self, ConfigError> {
        let Some(raw) = raw else {
            return Ok(BackOff::default());
        };
        // The root context looks at its fetches every 500 ms: whole seconds.
        let whole_secs = |d: Duration, field: &str| {
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                Err(ConfigError::new(
                    field,
                    "must be a whole number of seconds, at least 1s",
                ))
            } else {
                Ok(d.as_secs())
            }
        };
        let base_secs = whole_secs(raw.base_interval, "base_interval")?;
        let max_secs = match raw.max_interval {
            Some(d) => whole_secs(d, "max_interval")?,
            None => base_secs.saturating_mul(DEFAULT_RETRY_MAX_FACTOR),
        };
        if max_secs < base_secs {
            return Err(ConfigError::new(
                "max_interval",
                "must not be shorter than base_interval",
            ));
        }
        Ok(BackOff {
            base_secs,
            max_secs,
        })
    }

    /// The delay after `failures` consecutive failures (1 or more).
    pub fn delay(&self, failures: u32) -> u64 {
        1u64.checked_shl(failures.saturating_sub(1))
            .map_or(self.max_secs, |factor| {
                self.base_secs.saturating_mul(factor)
            })
            .min(self.max_secs)
    }
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    token_uri: HttpUri,
    client: ClientCredentials,
    scopes: Vec<String>,
    retry: BackOff,
}

impl OAuth2 {
    pub fn compile(raw: RawOAuth2, env: &dyn Environment) -> Result<Self, ConfigError> {
        let token_uri =
            HttpUri::compile(raw.token_uri, DEFAULT_TIMEOUT).map_err(|e| e.under("token_uri"))?;
        let client = ClientCredentials::compile(
            raw.client_id,
            raw.client_secret,
            raw.client_auth.unwrap_or(ClientAuthMethod::Post),
            env,
        )?;
        let retry = BackOff::compile(raw.retry_back_off).map_err(|e| e.under("retry_back_off"))?;
        Ok(OAuth2 {
            token_uri,
            client,
            scopes: raw.scopes,
            retry,
        })
    }

    /// The token request (RFC 6749 4.4). Its body or header holds the
    /// client secret: it is sent, never logged.
    fn request(&self) -> CalloutRequest {
        let mut form = Form::default();
        form.push("grant_type", "client_credentials");
        if !self.scopes.is_empty() {
            form.push("scope", &self.scopes.join(" "));
        }
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), self.token_uri.path.clone()),
            (":authority".to_string(), self.token_uri.authority.clone()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept".to_string(), "application/json".to_string()),
        ];
        self.client.authenticate(&mut headers, &mut form);
        CalloutRequest {
            cluster: self.token_uri.cluster.clone(),
            headers,
            body: form.into_bytes(),
            timeout: self.token_uri.timeout,
        }
    }
}

/// The margin before expiry in which a token of `lifetime` seconds is not
/// used: 10 % of the lifetime, at least 1 s (the clock counts whole
/// seconds), at most [`MAX_EXPIRY_MARGIN_SECS`].
pub fn expiry_margin(lifetime: u64) -> u64 {
    lifetime.div_ceil(10).clamp(1, MAX_EXPIRY_MARGIN_SECS)
}

/// A token as injected: the secret and when it stops being usable.
#[derive(Debug, Clone)]
pub struct UpstreamToken {
    pub access_token: Secret,
    /// When the endpoint's lifetime ends, counted from the request's sending.
    pub expires_at: u64,
    /// `expires_at` less the margin: the token is used strictly before this.
    pub usable_until: u64,
}

impl UpstreamToken {
    /// Whether the token may be injected at `now` (whole seconds, rounded
    /// down): it then has more than the margin left, wherever in the second
    /// the request is.
    pub fn usable_at(&self, now: u64) -> bool {
        now < self.usable_until
    }
}

#[derive(Debug)]
pub enum TokenFetched {
    /// A token, to fetch again at `refresh_at`.
    Token {
        token: UpstreamToken,
        refresh_at: u64,
    },
    /// Nothing usable; the reason is for the log (never the response body).
    Failed(String),
}

#[derive(Debug)]
struct Slot {
    oauth: OAuth2,
    next_attempt: u64,
    failures: u32,
    /// When the request in flight was sent: a token's lifetime counts from then.
    in_flight: Option<u64>,
}

/// The token fetches of every OAuth 2 backend, by backend index.
#[derive(Debug, Default)]
pub struct TokenFetcher {
    slots: Vec<Option<Slot>>,
}

impl TokenFetcher {
    pub fn new(backends: impl Iterator<Item = Option<OAuth2>>) -> Self {
        TokenFetcher {
            slots: backends
                .map(|o| {
                    o.map(|oauth| Slot {
                        oauth,
                        next_attempt: 0,
                        failures: 0,
                        in_flight: None,
                    })
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    pub fn backends(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
    }

    pub fn due(&mut self, now: u64) -> Vec<(usize, CalloutRequest)> {
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.in_flight.is_some() || now < slot.next_attempt {
                continue;
            }
            slot.in_flight = Some(now);
            out.push((index, slot.oauth.request()));
        }
        out
    }

    /// Another VM stored a token to refresh at `refresh_at`.
    pub fn fetched_elsewhere(&mut self, index: usize, refresh_at: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if slot.in_flight.is_none() {
                slot.next_attempt = slot.next_attempt.max(refresh_at);
                slot.failures = 0;
            }
        }
    }

    pub fn on_reply(&mut self, index: usize, reply: &CalloutResponse, now: u64) -> TokenFetched {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return TokenFetched::Failed("not an OAuth 2 backend".into());
        };
        // The endpoint issued the token after the request left: counting
        // its lifetime from the sending errs on the early side.
        let sent_at = slot.in_flight.take().unwrap_or(now).min(now);
        match parse(reply, sent_at) {
            Ok((token, lifetime)) => {
                slot.failures = 0;
                let refresh_at = sent_at.saturating_add((lifetime / 2).max(1)).max(now);
                slot.next_attempt = refresh_at;
                TokenFetched::Token { token, refresh_at }
            }
            Err(reason) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.next_attempt = now.saturating_add(slot.oauth.retry.delay(slot.failures));
                TokenFetched::Failed(reason)
            }
        }
    }

    pub fn on_dispatch_failed(&mut self, index: usize, now: u64) {
        let _ = self.on_reply(index, &CalloutResponse::default(), now);
    }
}

/// The token in a reply to a request sent at `sent_at`, and its lifetime.
fn parse(reply: &CalloutResponse, sent_at: u64) -> Result<(UpstreamToken, u64), String> {
    match reply.status {
        None => {
            return Err(
                "no valid response (timeout, reset, not HTTP, or a status outside 100-599)".into(),
            )
        }
        Some(200) => {}
        Some(s) => return Err(format!("token endpoint answered {s}")),
    }
    if reply.body.len() > MAX_RESPONSE_BYTES {
        return Err("token response too large".into());
    }
    let doc: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| "token response is not JSON".to_string())?;
    let token = doc
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && is_valid_header_value(t))
        .ok_or("token response has no usable access_token")?;
    if let Some(kind) = doc.get("token_type").and_then(Value::as_str) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token_type {} is not Bearer",
                crate::vocab::quote(kind)
            ));
        }
    }
    // RFC 6749 5.1: expires_in is recommended; without it, assume an hour.
    let lifetime = match doc.get("expires_in") {
        None => 3600,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or("expires_in is not a number")?,
    };
    let margin = expiry_margin(lifetime);
    if lifetime <= margin {
        return Err(format!("the token lives {lifetime} s, too short to use"));
    }
    let expires_at = sent_at.saturating_add(lifetime);
    Ok((
        UpstreamToken {
            access_token: Secret::new(token.to_string()),
            expires_at,
            usable_until: expires_at - margin,
        },
        lifetime,
    ))
}

/// Shared-data form: expiry, end of use and refresh time (u64 LE each),
/// then the token.
pub fn encode_shared(token: &UpstreamToken, refresh_at: u64) -> Vec<u8> {
    let mut out = token.expires_at.to_le_bytes().to_vec();
    out.extend_from_slice(&token.usable_until.to_le_bytes());
    out.extend_from_slice(&refresh_at.to_le_bytes());
    out.extend_from_slice(token.access_token.expose().as_bytes());
    out
}

pub fn decode_shared(bytes: &[u8]) -> Option<(UpstreamToken, u64)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let (expires_at, usable_until, refresh_at) = (word(0)?, word(8)?, word(16)?);
    let token = std::str::from_utf8(bytes.get(24..)?).ok()?;
    Some((
        UpstreamToken {
            access_token: Secret::new(token.to_string()),
            expires_at,
            usable_until: usable_until.min(expires_at),
        },
        refresh_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oauth(extra: Value) -> OAuth2 {
        let mut raw = json!({
            "token_uri": {"uri": "https://login.example/tenant/oauth2/v2.0/token", "cluster": "entra"},
            "client_id": "client one",
            "client_secret": {"environment_variable": "SECRET"},
            "scopes": ["https://cognitiveservices.azure.com/.default"]
        });
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        let env = |n: &str| (n == "SECRET").then(|| "s3cr&t=x".to_string());
        OAuth2::compile(serde_json::from_value(raw).unwrap(), &env).unwrap()
    }

    fn reply(status: u16, body: Value) -> CalloutResponse {
        CalloutResponse {
            status: Some(status),
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn token_request_per_rfc_6749() {
        let req = oauth(json!({})).request();
        let body = String::from_utf8(req.body.clone()).unwrap();
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default&client_id=client+one&client_secret=s3cr%26t%3Dx"
        );
        assert!(req
            .headers
            .contains(&(":path".into(), "/tenant/oauth2/v2.0/token".into())));
        assert!(req
            .headers
            .contains(&(":authority".into(), "login.example".into())));
        let basic = oauth(json!({"client_auth": "basic"})).request();
        let auth = basic
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap();
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.1.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"client+one:s3cr%26t%3Dx");
        assert!(!String::from_utf8(basic.body).unwrap().contains("s3cr"));
    }

    #[test]
    fn refresh_at_half_life_and_never_a_dead_token() {
        let mut f = TokenFetcher::new([Some(oauth(json!({})))].into_iter());
        assert_eq!(f.due(100).len(), 1);
        assert!(f.due(100).is_empty(), "in flight");
        let TokenFetched::Token { token, refresh_at } = f.on_reply(
            0,
            &reply(
                200,
                json!({"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}),
            ),
            100,
        ) else {
            panic!()
        };
        assert_eq!((token.expires_at, refresh_at), (3700, 1900));
        assert!(token.usable_at(3689));
        assert!(!token.usable_at(3690));
        assert!(f.due(1899).is_empty());
        assert_eq!(f.due(1900).len(), 1);
    }

    #[test]
    fn a_token_lives_from_its_request_and_short_ones_keep_a_margin() {
        let mut f = TokenFetcher::new([Some(oauth(json!({})))].into_iter());
        assert_eq!(f.due(100).len(), 1);
        // The endpoint answered 3 s later (slow): its 4 s count from 100.
        let TokenFetched::Token { token, refresh_at } = f.on_reply(
            0,
            &reply(200, json!({"access_token": "t", "expires_in": 4})),
            103,
        ) else {
            panic!()
        };
        assert_eq!((token.expires_at, token.usable_until), (104, 103));
        assert!(!token.usable_at(103), "the last second is never used");
        assert_eq!(refresh_at, 103, "half-life already passed: at once");
        for (lifetime, margin) in [(2, 1), (4, 1), (11, 2), (60, 6), (100, 10), (3600, 10)] {
            assert_eq!(expiry_margin(lifetime), margin, "{lifetime}");
        }
        for short in [0, 1] {
            assert_eq!(f.due(200).len(), 1);
            let r = reply(200, json!({"access_token": "t", "expires_in": short}));
            assert!(matches!(f.on_reply(0, &r, 200), TokenFetched::Failed(_)));
            f.fetched_elsewhere(0, 0);
            f.slots[0].as_mut().unwrap().next_attempt = 0;
        }
    }

    #[test]
    fn retry_back_off_is_configurable() {
        let compile = |v: Value| {
            let env = |n: &str| (n == "SECRET").then(|| "s".to_string());
            let mut raw = json!({
                "token_uri": {"uri": "https://login.example/t", "cluster": "entra"},
                "client_id": "c", "client_secret": {"environment_variable": "SECRET"}});
            raw["retry_back_off"] = v;
            OAuth2::compile(serde_json::from_value(raw).unwrap(), &env)
        };
        let b = compile(json!({"base_interval": "2s", "max_interval": "5s"}))
            .unwrap()
            .retry;
        assert_eq!(
            (1..=4).map(|n| b.delay(n)).collect::<Vec<_>>(),
            [2, 4, 5, 5]
        );
        let b = compile(json!({"base_interval": "1s"})).unwrap().retry;
        assert_eq!((b.delay(1), b.delay(4), b.delay(40)), (1, 8, 10));
        for (bad, field) in [
            (
                json!({"base_interval": "0.5s"}),
                "retry_back_off.base_interval",
            ),
            (
                json!({"base_interval": "0s"}),
                "retry_back_off.base_interval",
            ),
            (
                json!({"base_interval": "4s", "max_interval": "2s"}),
                "retry_back_off.max_interval",
            ),
        ] {
            assert_eq!(compile(bad).unwrap_err().path, field);
        }
    }

    #[test]
    fn failures_back_off_and_bad_tokens_fail() {
        let mut f = TokenFetcher::new([Some(oauth(json!({})))].into_iter());
        for (i, (r, now)) in [
            (reply(401, json!({"error": "invalid_client"})), 0),
            (reply(200, json!({"token_type": "Bearer"})), 1),
            (
                reply(200, json!({"access_token": "t", "token_type": "mac"})),
                3,
            ),
            (reply(200, json!({"access_token": "t\r\nx: y"})), 7),
            (
                reply(200, json!({"access_token": "t", "expires_in": 1})),
                15,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(f.due(now).len(), 1, "attempt {i}");
            assert!(
                matches!(f.on_reply(0, &r, now), TokenFetched::Failed(_)),
                "attempt {i}"
            );
        }
        assert!(f.due(24).is_empty(), "fifth failure waits the 10 s cap");
        assert_eq!(f.due(25).len(), 1);
    }

    #[test]
    fn remote_token_replies_reach_the_log_short_and_escaped() {
        let mut f = TokenFetcher::new([Some(oauth(json!({})))].into_iter());
        let kind = format!("mac{}", "\r\n[critical] forged".repeat(400));
        assert_eq!(f.due(0).len(), 1);
        let r = reply(200, json!({"access_token": "t", "token_type": kind}));
        let TokenFetched::Failed(reason) = f.on_reply(0, &r, 0) else {
            panic!("a token_type other than Bearer must fail");
        };
        assert!(
            reason.starts_with("token_type \"mac\\r\\n[critical]"),
            "{reason}"
        );
        assert!(!reason.contains(['\r', '\n']), "{reason}");
        assert!(reason.len() < 250, "{} bytes", reason.len());
    }

    #[test]
    fn shared_form_round_trips() {
        let t = UpstreamToken {
            access_token: Secret::new("abc".into()),
            expires_at: 9,
            usable_until: 8,
        };
        let (back, refresh) = decode_shared(&encode_shared(&t, 5)).unwrap();
        assert_eq!(
            (
                back.access_token.expose(),
                back.expires_at,
                back.usable_until,
                refresh
            ),
            ("abc", 9, 8, 5)
        );
    }
}
