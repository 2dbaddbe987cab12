//! OAuth 2 client-credentials tokens for upstream providers (Azure Entra ID
//! for Azure OpenAI, or any token endpoint), fetched by the root context and
//! shared by every worker VM.
//!
//! The lifecycle (half-life refresh, never used near expiry, back-off) is
//! the one every fetched credential shares: [`super::fetch`]. Envoy's own
//! oauth2 injector once used dead tokens (envoyproxy/envoy#44674).

use crate::callout::CalloutRequest;
#[cfg(test)]
use crate::callout::CalloutResponse;
use crate::response::is_valid_header_value;
use crate::secret::Secret;
use crate::vocab::client_auth::{ClientAuthMethod, ClientCredentials, Form};
use crate::vocab::{duration, ConfigError, DataSource, Environment, HttpUri, RawHttpUri};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Envoy's `BackoffStrategy`: base 1 s; the cap defaults to ten times the base.
const DEFAULT_RETRY_BASE_SECS: u64 = 1;
const DEFAULT_RETRY_MAX_FACTOR: u64 = 10;
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
    pub fn compile(raw: Option<RawBackOff>) -> Result<Self, ConfigError> {
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
    pub retry: BackOff,
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
    pub fn request(&self) -> CalloutRequest {
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

/// The token in a 200 reply's body, and its lifetime.
pub fn parse(body: &[u8]) -> Result<(Secret, u64), String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| "token response is not JSON".to_string())?;
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
    Ok((Secret::new(token.to_string()), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::fetch::{
        expiry_margin, CredentialFetcher as TokenFetcher, Fetched as TokenFetched, Source,
    };
    use serde_json::json;

    fn fetcher(o: OAuth2) -> TokenFetcher {
        TokenFetcher::new([Some(Source::OAuth2(o))].into_iter())
    }

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
        let mut f = fetcher(oauth(json!({})));
        assert_eq!(f.due(100).len(), 1);
        assert!(f.due(100).is_empty(), "in flight");
        let TokenFetched::Lease {
            lease: token,
            refresh_at,
        } = f.on_reply(
            0,
            &reply(
                200,
                json!({"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}),
            ),
            100,
        )
        else {
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
        let mut f = fetcher(oauth(json!({})));
        assert_eq!(f.due(100).len(), 1);
        // The endpoint answered 3 s later (slow): its 4 s count from 100.
        let TokenFetched::Lease {
            lease: token,
            refresh_at,
        } = f.on_reply(
            0,
            &reply(200, json!({"access_token": "t", "expires_in": 4})),
            103,
        )
        else {
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
            f.retry_now(0);
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
        let mut f = fetcher(oauth(json!({})));
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
        let mut f = fetcher(oauth(json!({})));
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
}
