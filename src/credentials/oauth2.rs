//! OAuth 2 client-credentials tokens for upstream providers (Azure Entra ID
//! for Azure OpenAI, or any token endpoint), fetched by the root context and
//! shared by every worker VM.
//!
//! - First fetch at once; a token is fetched again at half its lifetime.
//! - A token is never injected in its last `EXPIRY_MARGIN_SECS`: once the
//!   endpoint has failed that long, requests get 503, not a dead token
//!   (the failure Envoy's oauth2 injector had, envoyproxy/envoy#44674).
//! - Failures back off: 1 s, 2 s, 4 s ... at most 60 s.

use crate::callout::{CalloutRequest, CalloutResponse};
use crate::response::is_valid_header_value;
use crate::secret::Secret;
use crate::vocab::{ConfigError, DataSource, Environment, HttpUri, RawHttpUri};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

const MAX_BACKOFF_SECS: u64 = 60;
/// A token this close to its expiry is not used.
pub const EXPIRY_MARGIN_SECS: u64 = 10;
/// Token responses above this are refused.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    token_uri: RawHttpUri,
    client_id: String,
    client_secret: DataSource,
    #[serde(default)]
    scopes: Vec<String>,
    /// `body` (client_secret_post, default) or `basic` (client_secret_basic).
    #[serde(default)]
    client_auth: ClientAuth,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Body,
    Basic,
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    token_uri: HttpUri,
    client_id: String,
    client_secret: Secret,
    scopes: Vec<String>,
    client_auth: ClientAuth,
}

impl OAuth2 {
    pub fn compile(raw: RawOAuth2, env: &dyn Environment) -> Result<Self, ConfigError> {
        let token_uri =
            HttpUri::compile(raw.token_uri, DEFAULT_TIMEOUT).map_err(|e| e.under("token_uri"))?;
        if raw.client_id.is_empty() {
            return Err(ConfigError::new("client_id", "must not be empty"));
        }
        let secret = raw
            .client_secret
            .read(env)
            .map_err(|e| e.under("client_secret"))?;
        if secret.is_empty() {
            return Err(ConfigError::new("client_secret", "the secret is empty"));
        }
        Ok(OAuth2 {
            token_uri,
            client_id: raw.client_id,
            client_secret: Secret::new(secret),
            scopes: raw.scopes,
            client_auth: raw.client_auth,
        })
    }

    /// The token request (RFC 6749 4.4). Its body or header holds the
    /// client secret: it is sent, never logged.
    fn request(&self) -> CalloutRequest {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
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
        match self.client_auth {
            ClientAuth::Body => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", self.client_secret.expose().to_string()));
            }
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: both parts form-urlencoded, then Basic.
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(self.client_secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push(("authorization".to_string(), format!("Basic {encoded}")));
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        CalloutRequest {
            cluster: self.token_uri.cluster.clone(),
            headers,
            body: body.into_bytes(),
            timeout: self.token_uri.timeout,
        }
    }
}

/// application/x-www-form-urlencoded.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A token as injected: the secret and when it stops being usable.
#[derive(Debug, Clone)]
pub struct UpstreamToken {
    pub access_token: Secret,
    pub expires_at: u64,
}

impl UpstreamToken {
    pub fn usable_at(&self, now: u64) -> bool {
        now.saturating_add(EXPIRY_MARGIN_SECS) < self.expires_at
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
    in_flight: bool,
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
                        in_flight: false,
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
            if slot.in_flight || now < slot.next_attempt {
                continue;
            }
            slot.in_flight = true;
            out.push((index, slot.oauth.request()));
        }
        out
    }

    /// Another VM stored a token to refresh at `refresh_at`.
    pub fn fetched_elsewhere(&mut self, index: usize, refresh_at: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if !slot.in_flight {
                slot.next_attempt = slot.next_attempt.max(refresh_at);
                slot.failures = 0;
            }
        }
    }

    pub fn on_reply(&mut self, index: usize, reply: &CalloutResponse, now: u64) -> TokenFetched {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return TokenFetched::Failed("not an OAuth 2 backend".into());
        };
        slot.in_flight = false;
        match parse(reply, now) {
            Ok((token, lifetime)) => {
                slot.failures = 0;
                let refresh_at = now.saturating_add((lifetime / 2).max(1));
                slot.next_attempt = refresh_at;
                TokenFetched::Token { token, refresh_at }
            }
            Err(reason) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = 1u64
                    .checked_shl(slot.failures.saturating_sub(1))
                    .unwrap_or(MAX_BACKOFF_SECS)
                    .min(MAX_BACKOFF_SECS);
                slot.next_attempt = now.saturating_add(backoff);
                TokenFetched::Failed(reason)
            }
        }
    }

    pub fn on_dispatch_failed(&mut self, index: usize, now: u64) {
        let _ = self.on_reply(index, &CalloutResponse::default(), now);
    }
}

fn parse(reply: &CalloutResponse, now: u64) -> Result<(UpstreamToken, u64), String> {
    match reply.status {
        None => return Err("no response (timeout, reset or not HTTP)".into()),
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
            return Err(format!("token_type {kind} is not Bearer"));
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
    if lifetime <= EXPIRY_MARGIN_SECS {
        return Err(format!("the token lives {lifetime} s, too short to use"));
    }
    Ok((
        UpstreamToken {
            access_token: Secret::new(token.to_string()),
            expires_at: now.saturating_add(lifetime),
        },
        lifetime,
    ))
}

/// Shared-data form: expiry and refresh time (u64 LE each), then the token.
pub fn encode_shared(token: &UpstreamToken, refresh_at: u64) -> Vec<u8> {
    let mut out = token.expires_at.to_le_bytes().to_vec();
    out.extend_from_slice(&refresh_at.to_le_bytes());
    out.extend_from_slice(token.access_token.expose().as_bytes());
    out
}

pub fn decode_shared(bytes: &[u8]) -> Option<(UpstreamToken, u64)> {
    let expires_at = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let refresh_at = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let token = std::str::from_utf8(bytes.get(16..)?).ok()?;
    Some((
        UpstreamToken {
            access_token: Secret::new(token.to_string()),
            expires_at,
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
                reply(200, json!({"access_token": "t", "expires_in": 5})),
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
        assert!(f.due(30).is_empty(), "fifth failure waits 16 s");
        assert_eq!(f.due(31).len(), 1);
    }

    #[test]
    fn shared_form_round_trips() {
        let t = UpstreamToken {
            access_token: Secret::new("abc".into()),
            expires_at: 9,
        };
        let (back, refresh) = decode_shared(&encode_shared(&t, 5)).unwrap();
        assert_eq!(
            (back.access_token.expose(), back.expires_at, refresh),
            ("abc", 9, 5)
        );
    }
}
