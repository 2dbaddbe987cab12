//! The passthrough decision cache, shared by every worker VM through
//! proxy-wasm shared data.
//!
//! A decision is keyed by SHA-256 of method, path, the configured headers
//! (and the body when it is sent to the service). It lives in one of
//! `max_entries` slots, so the cache is bounded whatever the traffic: a new
//! key takes its slot from the old one. Allows live `ttl`, denials
//! `denied_ttl` (not at all when unset), both capped by the service's
//! `Cache-Control: max-age`; errors are never cached.

use super::config::DecisionCacheConfig;
use super::AuthDecision;
use crate::callout::SharedStore;
use crate::request::RequestView;
use sha2::{Digest, Sha256};

/// Denials with a body above this are not cached (shared memory is not for bodies).
const MAX_CACHED_BODY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionKey([u8; 32]);

impl DecisionKey {
    fn slot(&self, max_entries: usize) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(self.0.get(..8).unwrap_or(&[0; 8]));
        (u64::from_le_bytes(first) % max_entries.max(1) as u64) as usize
    }
}

/// A compact binary form of an entry: serde_json cost several µs per hit in
/// the VM. Layout: version, key (32), expiry (u64 LE), then the decision:
/// `0` allow with three header lists, or `1` deny with status, headers, body.
/// Strings and lists are u16/u32-length-prefixed; decoding checks every bound.
mod wire {
    use super::super::AuthDecision;

    const VERSION: u8 = 1;

    fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Option<()> {
        out.extend_from_slice(&u32::try_from(b.len()).ok()?.to_le_bytes());
        out.extend_from_slice(b);
        Some(())
    }

    fn put_headers(out: &mut Vec<u8>, headers: &[(String, String)]) -> Option<()> {
        out.extend_from_slice(&u16::try_from(headers.len()).ok()?.to_le_bytes());
        for (k, v) in headers {
            put_bytes(out, k.as_bytes())?;
            put_bytes(out, v.as_bytes())?;
        }
        Some(())
    }

    pub fn encode(key: &[u8; 32], expires_at: u64, decision: &AuthDecision) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        out.extend_from_slice(key);
        out.extend_from_slice(&expires_at.to_le_bytes());
        match decision {
            AuthDecision::Allow {
                upstream_set,
                upstream_append,
                client,
            } => {
                out.push(0);
                put_headers(&mut out, upstream_set)?;
                put_headers(&mut out, upstream_append)?;
                put_headers(&mut out, client)?;
            }
            AuthDecision::Deny {
                status,
                headers,
                body,
            } => {
                out.push(1);
                out.extend_from_slice(&status.to_le_bytes());
                put_headers(&mut out, headers)?;
                put_bytes(&mut out, body)?;
            }
            AuthDecision::Error(_) => return None,
        }
        Some(out)
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take(1)?.first().copied()
        }
        fn u16(&mut self) -> Option<u16> {
            Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = usize::try_from(self.u32()?).ok()?;
            self.take(n)
        }
        fn string(&mut self) -> Option<String> {
            String::from_utf8(self.bytes()?.to_vec()).ok()
        }
        fn headers(&mut self) -> Option<Vec<(String, String)>> {
            let n = self.u16()?;
            (0..n)
                .map(|_| Some((self.string()?, self.string()?)))
                .collect()
        }
    }

    /// The decision stored under `key`, with its expiry; `None` for another
    /// key (a slot reused) or anything malformed.
    pub fn decode(bytes: &[u8], key: &[u8; 32]) -> Option<(u64, AuthDecision)> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION || r.take(32)? != key {
            return None;
        }
        let expires_at = r.u64()?;
        let decision = match r.u8()? {
            0 => AuthDecision::Allow {
                upstream_set: r.headers()?,
                upstream_append: r.headers()?,
                client: r.headers()?,
            },
            1 => AuthDecision::Deny {
                status: r.u16()?,
                headers: r.headers()?,
                body: r.bytes()?.to_vec(),
            },
            _ => return None,
        };
        Some((expires_at, decision))
    }
}

pub fn key(cfg: &DecisionCacheConfig, req: &RequestView, body: Option<&[u8]>) -> DecisionKey {
    let mut h = Sha256::new();
    // Length-prefixed fields, so no two requests can produce the same input.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(req.method().as_bytes());
    field(req.path().as_bytes());
    for name in &cfg.key_headers {
        field(name.as_bytes());
        for value in req.header_values(name) {
            field(value.as_bytes());
        }
        field(b"\0end");
    }
    match body {
        Some(b) => field(b),
        None => field(b"\0nobody"),
    }
    DecisionKey(h.finalize().into())
}

fn store_key(namespace: &str, slot: usize) -> String {
    format!("ai_auth.authz.{namespace}.{slot}")
}

pub fn lookup(
    cfg: &DecisionCacheConfig,
    namespace: &str,
    store: &dyn SharedStore,
    key: &DecisionKey,
    now: u64,
) -> Option<AuthDecision> {
    let bytes = store.get(&store_key(namespace, key.slot(cfg.max_entries)))?;
    let (expires_at, decision) = wire::decode(&bytes, &key.0)?;
    (now < expires_at).then_some(decision)
}

/// `max-age` from `Cache-Control`; `no-store`/`no-cache` mean zero.
pub fn max_age(cache_control: Option<&str>) -> Option<u64> {
    let value = cache_control?;
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok().or(Some(0));
        }
    }
    age
}

/// Stores a decision if it may be cached; returns whether it was.
pub fn remember(
    cfg: &DecisionCacheConfig,
    namespace: &str,
    store: &dyn SharedStore,
    key: &DecisionKey,
    decision: &AuthDecision,
    cache_control: Option<&str>,
    now: u64,
) -> bool {
    let ttl = match decision {
        AuthDecision::Allow { .. } => cfg.ttl_secs,
        AuthDecision::Deny { body, .. } if body.len() <= MAX_CACHED_BODY => cfg.denied_ttl_secs,
        AuthDecision::Deny { .. } | AuthDecision::Error(_) => 0,
    };
    let ttl = max_age(cache_control).map_or(ttl, |age| ttl.min(age));
    if ttl == 0 {
        return false;
    }
    match wire::encode(&key.0, now.saturating_add(ttl), decision) {
        Some(bytes) => {
            store.set(&store_key(namespace, key.slot(cfg.max_entries)), &bytes);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callout::MemoryStore;
    use crate::ext_authz::ErrorKind;

    fn cfg(denied: u64) -> DecisionCacheConfig {
        DecisionCacheConfig {
            key_headers: vec!["authorization".into()],
            ttl_secs: 30,
            denied_ttl_secs: denied,
            max_entries: 16,
        }
    }

    fn req(path: &str, auth: &str) -> RequestView {
        RequestView::new(vec![
            (":method".into(), "POST".into()),
            (":path".into(), path.into()),
            ("authorization".into(), auth.into()),
            ("x-other".into(), "ignored".into()),
        ])
    }

    fn allow() -> AuthDecision {
        AuthDecision::Allow {
            upstream_set: vec![("x-user-id".into(), "42".into())],
            upstream_append: vec![],
            client: vec![],
        }
    }

    #[test]
    fn key_covers_method_path_headers_and_body() {
        let c = cfg(0);
        let base = key(&c, &req("/a", "k1"), None);
        assert_eq!(base, key(&c, &req("/a", "k1"), None));
        assert_ne!(base, key(&c, &req("/b", "k1"), None));
        assert_ne!(base, key(&c, &req("/a", "k2"), None));
        assert_ne!(base, key(&c, &req("/a", "k1"), Some(b"")));
    }

    #[test]
    fn allows_are_cached_until_ttl() {
        let (c, store) = (cfg(0), MemoryStore::default());
        let k = key(&c, &req("/a", "k1"), None);
        assert!(remember(&c, "ns", &store, &k, &allow(), None, 100));
        assert_eq!(lookup(&c, "ns", &store, &k, 129), Some(allow()));
        assert_eq!(lookup(&c, "ns", &store, &k, 130), None);
        assert_eq!(lookup(&c, "other", &store, &k, 100), None);
    }

    #[test]
    fn max_age_caps_the_ttl() {
        let (c, store) = (cfg(0), MemoryStore::default());
        let k = key(&c, &req("/a", "k1"), None);
        assert!(remember(
            &c,
            "ns",
            &store,
            &k,
            &allow(),
            Some("public, max-age=5"),
            100
        ));
        assert!(lookup(&c, "ns", &store, &k, 104).is_some());
        assert!(lookup(&c, "ns", &store, &k, 105).is_none());
        assert!(!remember(
            &c,
            "ns",
            &store,
            &k,
            &allow(),
            Some("no-store"),
            100
        ));
        assert_eq!(max_age(Some("max-age=60, no-cache")), Some(0));
    }

    #[test]
    fn denials_only_with_denied_ttl_and_errors_never() {
        let deny = AuthDecision::Deny {
            status: 403,
            headers: vec![],
            body: b"no".to_vec(),
        };
        let store = MemoryStore::default();
        let k = key(&cfg(0), &req("/a", "k1"), None);
        assert!(!remember(&cfg(0), "ns", &store, &k, &deny, None, 0));
        assert!(remember(&cfg(2), "ns", &store, &k, &deny, None, 0));
        assert_eq!(lookup(&cfg(2), "ns", &store, &k, 1), Some(deny));
        let error = AuthDecision::Error(ErrorKind::ServerError(503));
        let k2 = key(&cfg(2), &req("/b", "k1"), None);
        assert!(!remember(&cfg(2), "ns", &store, &k2, &error, None, 0));
    }

    #[test]
    fn wire_form_round_trips_and_rejects_garbage() {
        let key = [7u8; 32];
        let deny = AuthDecision::Deny {
            status: 302,
            headers: vec![("location".into(), "/login".into())],
            body: b"\x00\xffbody".to_vec(),
        };
        for d in [allow(), deny] {
            let bytes = wire::encode(&key, 42, &d).unwrap();
            assert_eq!(wire::decode(&bytes, &key), Some((42, d.clone())));
            assert_eq!(wire::decode(&bytes, &[8u8; 32]), None, "another key");
            for cut in 0..bytes.len() {
                assert_eq!(
                    wire::decode(&bytes[..cut], &key),
                    None,
                    "truncated at {cut}"
                );
            }
        }
        assert_eq!(
            wire::encode(&key, 1, &AuthDecision::Error(ErrorKind::NoResponse)),
            None
        );
        assert_eq!(wire::decode(b"garbage", &key), None);
    }

    #[test]
    fn bounded_by_slots() {
        let (c, store) = (cfg(0), MemoryStore::default());
        for i in 0..200 {
            let k = key(&c, &req(&format!("/{i}"), "k"), None);
            remember(&c, "ns", &store, &k, &allow(), None, 0);
        }
        assert!(store.0.borrow().len() <= 16);
    }
}
