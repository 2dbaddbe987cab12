//! The lifecycle every credential the root context fetches shares (OAuth 2
//! client-credentials tokens, AWS STS temporary credentials):
//!
//! - first fetch at once; fetched again at half its lifetime;
//! - its lifetime counts from when its request was sent (the endpoint
//!   issued it later), and it is never used in its last [`expiry_margin`]
//!   (10 % of its lifetime, between 1 s and 10 s): while the endpoint
//!   fails, requests get 503, not a dead credential;
//! - failures back off from `retry_back_off.base_interval` (1 s), doubling,
//!   to at most `max_interval` (10 s), as Envoy's `BackoffStrategy`;
//! - one fetch in flight per backend; a credential another VM published in
//!   shared data postpones this VM's next fetch to its refresh time.

use super::oauth2::{BackOff, OAuth2};
use super::sigv4::AwsCredentials;
use super::sts::WebIdentity;
use crate::callout::{CalloutRequest, CalloutResponse};
use crate::secret::Secret;
use std::sync::Arc;

/// The largest margin before a credential's expiry in which it is not used.
pub const MAX_EXPIRY_MARGIN_SECS: u64 = 10;
/// Replies above this are refused (read one byte more to tell).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The margin before expiry in which a credential of `lifetime` seconds is
/// not used: 10 % of the lifetime, at least 1 s (the clock counts whole
/// seconds), at most [`MAX_EXPIRY_MARGIN_SECS`].
pub fn expiry_margin(lifetime: u64) -> u64 {
    lifetime.div_ceil(10).clamp(1, MAX_EXPIRY_MARGIN_SECS)
}

/// What a fetch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth 2 access token.
    Bearer(Secret),
    /// AWS temporary credentials (STS).
    Aws(Arc<AwsCredentials>),
}

/// A credential and when it stops being usable.
#[derive(Debug, Clone)]
pub struct Lease {
    pub credential: Credential,
    /// When the endpoint's lifetime ends, counted from the request's sending.
    pub expires_at: u64,
    /// `expires_at` less the margin: the credential is used strictly before this.
    pub usable_until: u64,
}

impl Lease {
    /// A credential that lives `lifetime` seconds from `sent_at`; refused
    /// when its margin would leave nothing.
    pub fn new(credential: Credential, sent_at: u64, lifetime: u64) -> Result<Self, String> {
        let margin = expiry_margin(lifetime);
        if lifetime <= margin {
            return Err(format!(
                "the credential lives {lifetime} s, too short to use"
            ));
        }
        let expires_at = sent_at.saturating_add(lifetime);
        Ok(Lease {
            credential,
            expires_at,
            usable_until: expires_at - margin,
        })
    }

    /// Whether it may be used at `now` (whole seconds, rounded down): it
    /// then has more than the margin left, wherever in the second the
    /// request is.
    pub fn usable_at(&self, now: u64) -> bool {
        now < self.usable_until
    }
}

/// What a backend's credential comes from.
#[derive(Debug, Clone)]
pub enum Source {
    OAuth2(OAuth2),
    Sts(WebIdentity),
}

impl Source {
    fn request(&self) -> CalloutRequest {
        match self {
            Source::OAuth2(o) => o.request(),
            Source::Sts(s) => s.request(),
        }
    }

    fn retry(&self) -> BackOff {
        match self {
            Source::OAuth2(o) => o.retry,
            Source::Sts(s) => s.retry,
        }
    }

    /// The credential in a reply to a request sent at `sent_at`, and its lifetime.
    fn parse(&self, reply: &CalloutResponse, sent_at: u64) -> Result<(Credential, u64), String> {
        match reply.status {
            None => {
                return Err(
                    "no valid response (timeout, reset, not HTTP, or a status outside 100-599)"
                        .into(),
                )
            }
            Some(200) => {}
            Some(s) => return Err(format!("the endpoint answered {s}")),
        }
        if reply.body.len() > MAX_RESPONSE_BYTES {
            return Err("response too large".into());
        }
        match self {
            Source::OAuth2(_) => super::oauth2::parse(&reply.body)
                .map(|(token, lifetime)| (Credential::Bearer(token), lifetime)),
            Source::Sts(_) => {
                let (creds, expiration) = super::sts::parse(&reply.body)?;
                if expiration <= sent_at {
                    return Err("the credentials' Expiration is already past".into());
                }
                Ok((Credential::Aws(Arc::new(creds)), expiration - sent_at))
            }
        }
    }

    pub fn is_aws(&self) -> bool {
        matches!(self, Source::Sts(_))
    }
}

#[derive(Debug)]
pub enum Fetched {
    /// A credential, to fetch again at `refresh_at`.
    Lease { lease: Lease, refresh_at: u64 },
    /// Nothing usable; the reason is for the log (never a response body).
    Failed(String),
}

#[derive(Debug)]
struct Slot {
    source: Source,
    next_attempt: u64,
    failures: u32,
    /// When the request in flight was sent: a lifetime counts from then.
    in_flight: Option<u64>,
}

/// The fetches of every backend whose credential is fetched, by backend index.
#[derive(Debug, Default)]
pub struct CredentialFetcher {
    slots: Vec<Option<Slot>>,
}

impl CredentialFetcher {
    pub fn new(backends: impl Iterator<Item = Option<Source>>) -> Self {
        CredentialFetcher {
            slots: backends
                .map(|o| {
                    o.map(|source| Slot {
                        source,
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

    /// Whether backend `index` fetches AWS credentials (for counters and logs).
    pub fn is_aws(&self, index: usize) -> bool {
        matches!(self.slots.get(index), Some(Some(s)) if s.source.is_aws())
    }

    pub fn due(&mut self, now: u64) -> Vec<(usize, CalloutRequest)> {
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.in_flight.is_some() || now < slot.next_attempt {
                continue;
            }
            slot.in_flight = Some(now);
            out.push((index, slot.source.request()));
        }
        out
    }

    /// Another VM stored a credential to refresh at `refresh_at`.
    pub fn fetched_elsewhere(&mut self, index: usize, refresh_at: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if slot.in_flight.is_none() {
                slot.next_attempt = slot.next_attempt.max(refresh_at);
                slot.failures = 0;
            }
        }
    }

    pub fn on_reply(&mut self, index: usize, reply: &CalloutResponse, now: u64) -> Fetched {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return Fetched::Failed("not a fetched backend".into());
        };
        // The endpoint issued the credential after the request left:
        // counting its lifetime from the sending errs on the early side.
        let sent_at = slot.in_flight.take().unwrap_or(now).min(now);
        let parsed = slot
            .source
            .parse(reply, sent_at)
            .and_then(|(credential, lifetime)| {
                Lease::new(credential, sent_at, lifetime).map(|lease| (lease, lifetime))
            });
        match parsed {
            Ok((lease, lifetime)) => {
                slot.failures = 0;
                let refresh_at = sent_at.saturating_add((lifetime / 2).max(1)).max(now);
                slot.next_attempt = refresh_at;
                Fetched::Lease { lease, refresh_at }
            }
            Err(reason) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.next_attempt = now.saturating_add(slot.source.retry().delay(slot.failures));
                Fetched::Failed(reason)
            }
        }
    }

    /// Another VM is fetching (or failed and backs off) until `until`:
    /// no request from this VM before then, and no failure counted.
    pub fn postpone(&mut self, index: usize, until: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.in_flight = None;
            slot.next_attempt = slot.next_attempt.max(until);
        }
    }

    /// When backend `index` is next due.
    pub fn next_attempt(&self, index: usize) -> Option<u64> {
        match self.slots.get(index) {
            Some(Some(slot)) => Some(slot.next_attempt),
            _ => None,
        }
    }

    pub fn on_dispatch_failed(&mut self, index: usize, now: u64) {
        let _ = self.on_reply(index, &CalloutResponse::default(), now);
    }

    /// Tests: make backend `index` due at once.
    #[cfg(test)]
    pub fn retry_now(&mut self, index: usize) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            slot.next_attempt = 0;
        }
    }
}

/// Shared-data form: expiry, end of use and refresh time (u64 LE each),
/// then a kind byte and the credential (`B` token; `A` key id, secret and
/// session token separated by NUL).
pub fn encode_shared(lease: &Lease, refresh_at: u64) -> Vec<u8> {
    let mut out = lease.expires_at.to_le_bytes().to_vec();
    out.extend_from_slice(&lease.usable_until.to_le_bytes());
    out.extend_from_slice(&refresh_at.to_le_bytes());
    match &lease.credential {
        Credential::Bearer(token) => {
            out.push(b'B');
            out.extend_from_slice(token.expose().as_bytes());
        }
        Credential::Aws(c) => {
            out.push(b'A');
            out.extend_from_slice(c.access_key_id.as_bytes());
            out.push(0);
            out.extend_from_slice(c.secret_access_key.expose().as_bytes());
            out.push(0);
            if let Some(t) = &c.session_token {
                out.extend_from_slice(t.expose().as_bytes());
            }
        }
    }
    out
}

pub fn decode_shared(bytes: &[u8]) -> Option<(Lease, u64)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let (expires_at, usable_until, refresh_at) = (word(0)?, word(8)?, word(16)?);
    let kind = *bytes.get(24)?;
    let text = std::str::from_utf8(bytes.get(25..)?).ok()?;
    let credential = match kind {
        b'B' => Credential::Bearer(Secret::new(text.to_string())),
        b'A' => {
            let mut parts = text.split('\0');
            let (akid, secret, token) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || akid.is_empty() || secret.is_empty() {
                return None;
            }
            Credential::Aws(Arc::new(AwsCredentials {
                access_key_id: akid.to_string(),
                secret_access_key: Secret::new(secret.to_string()),
                session_token: (!token.is_empty()).then(|| Secret::new(token.to_string())),
            }))
        }
        _ => return None,
    };
    Some((
        Lease {
            credential,
            expires_at,
            usable_until: usable_until.min(expires_at),
        },
        refresh_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_form_round_trips_both_kinds() {
        for credential in [
            Credential::Bearer(Secret::new("abc".into())),
            Credential::Aws(Arc::new(AwsCredentials {
                access_key_id: "ASIA1".into(),
                secret_access_key: Secret::new("s/+=".into()),
                session_token: Some(Secret::new("tok".into())),
            })),
        ] {
            let lease = Lease {
                credential: credential.clone(),
                expires_at: 9,
                usable_until: 8,
            };
            let (back, refresh) = decode_shared(&encode_shared(&lease, 5)).unwrap();
            assert_eq!(
                (back.credential, back.expires_at, back.usable_until, refresh),
                (credential, 9, 8, 5)
            );
        }
        assert!(decode_shared(b"short").is_none());
        let mut bad = encode_shared(
            &Lease {
                credential: Credential::Bearer(Secret::new("x".into())),
                expires_at: 1,
                usable_until: 1,
            },
            1,
        );
        bad[24] = b'Z';
        assert!(decode_shared(&bad).is_none());
    }

    #[test]
    fn margins() {
        for (lifetime, margin) in [(2, 1), (4, 1), (11, 2), (60, 6), (100, 10), (3600, 10)] {
            assert_eq!(expiry_margin(lifetime), margin, "{lifetime}");
        }
        assert!(Lease::new(Credential::Bearer(Secret::new("t".into())), 0, 1).is_err());
        let l = Lease::new(Credential::Bearer(Secret::new("t".into())), 100, 4).unwrap();
        assert_eq!((l.expires_at, l.usable_until), (104, 103));
    }
}
