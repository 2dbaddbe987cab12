//! Envoy's `HttpUri` (`uri`, `cluster`, `timeout`): where a callout goes.
//! One definition for every callout (auth service, JWKS, discovery, token
//! endpoints), so each gets the same checks at load.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// The host takes a callout timeout as a `u32` of milliseconds: a longer one
/// would wrap around (`4294967.297s` would mean 1 ms), so it is refused.
pub const MAX_CALLOUT_TIMEOUT: Duration = Duration::from_millis(u32::MAX as u64);

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHttpUri {
    pub uri: String,
    pub cluster: String,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    pub timeout: Option<Duration>,
}

/// A checked `HttpUri`: the authority and path to send, the Envoy cluster to
/// send them through, and a timeout the host can represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUri {
    pub authority: String,
    pub path: String,
    pub cluster: String,
    pub timeout: Duration,
}

impl HttpUri {
    /// Errors name the field relative to the `HttpUri` (`uri`, `cluster`, `timeout`).
    pub fn compile(raw: RawHttpUri, default_timeout: Duration) -> Result<Self, ConfigError> {
        let (authority, path) = split_uri(&raw.uri).ok_or_else(|| {
            ConfigError::new("uri", "must be an http:// or https:// URI with a host")
        })?;
        if raw.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "must not be empty"));
        }
        let timeout = callout_timeout(raw.timeout.unwrap_or(default_timeout))
            .map_err(|reason| ConfigError::new("timeout", reason))?;
        Ok(HttpUri {
            authority,
            path,
            cluster: raw.cluster,
            timeout,
        })
    }
}

/// A timeout the host can honour: at least 1 ms (Envoy reads 0 as "none"),
/// at most [`MAX_CALLOUT_TIMEOUT`].
pub fn callout_timeout(timeout: Duration) -> Result<Duration, String> {
    if timeout < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    if timeout > MAX_CALLOUT_TIMEOUT {
        return Err(format!(
            "{}s is longer than the host can represent ({}s)",
            timeout.as_secs_f64(),
            MAX_CALLOUT_TIMEOUT.as_secs_f64()
        ));
    }
    Ok(timeout)
}

/// Splits `http(s)://authority/path` for a callout through a cluster.
pub fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then(|| (authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(uri: &str, timeout: Option<Duration>) -> RawHttpUri {
        RawHttpUri {
            uri: uri.into(),
            cluster: "c".into(),
            timeout,
        }
    }

    #[test]
    fn splits_and_defaults() {
        let u =
            HttpUri::compile(raw("https://idp:8443/a/b", None), Duration::from_secs(5)).unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("idp:8443", "/a/b")
        );
        assert_eq!(u.timeout, Duration::from_secs(5));
        let u = HttpUri::compile(raw("http://idp", None), Duration::from_secs(5)).unwrap();
        assert_eq!(u.path, "/");
        assert_eq!(
            HttpUri::compile(raw("ftp://x", None), Duration::from_secs(1))
                .unwrap_err()
                .path,
            "uri"
        );
    }

    #[test]
    fn timeouts_the_host_cannot_represent_are_refused() {
        let at = |ms: u64| {
            HttpUri::compile(
                raw("http://a/", Some(Duration::from_millis(ms))),
                Duration::ZERO,
            )
        };
        assert!(at(u64::from(u32::MAX)).is_ok());
        let err = at(u64::from(u32::MAX) + 1).unwrap_err();
        assert_eq!(err.path, "timeout");
        assert!(at(0).is_err());
        assert!(at(1).is_ok());
        // Sub-millisecond would be sent as 0 ms, which Envoy reads as no timeout.
        let micro = HttpUri::compile(
            raw("http://a/", Some(Duration::from_micros(500))),
            Duration::ZERO,
        );
        assert!(micro.is_err());
    }
}
