//! The passthrough decision cache, shared by every worker VM through
//! proxy-wasm shared data.
//!
//! A decision is keyed by everything the auth service is shown: the check
//! request as built and sent (its headers, including claim headers and a
//! forwarded token, path, method, the body when sent), plus any
//! `key_headers` of the client's request; never by a separately assembled
//! view, which once let one caller ride on another's allow (issue 9.2).
//! The key is HMAC-SHA256 under a secret (`key_secret`, or a random one per
//! configuration published once in shared data so every worker VM shares
//! the cache), so keys in shared data say nothing testable about the
//! credentials they were computed from. It lives in one of
//! `max_entries` slots, so the cache is bounded whatever the traffic: a new
//! key takes its slot from the old one. Allows live `ttl`, denials
//! `denied_ttl` (not at all when unset), both capped by the service's
//! `Cache-Control: max-age`; errors are never cached.

use super::config::DecisionCacheConfig;
use super::AuthDecision;
use crate::callout::SharedStore;
use crate::request::RequestView;
use crate::shared_cache::{Lookup, SlotCache};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// The key of the keyed hash naming cached decisions. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheSecret([u8; 32]);

impl fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheSecret([redacted])")
    }
}

impl CacheSecret {
    /// From a configured `key_secret` of any length.
    pub fn derive(text: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"ai-auth decision cache key\0");
        h.update(text);
        CacheSecret(h.finalize().into())
    }

    fn from_stored(bytes: &[u8]) -> Option<Self> {
        Some(CacheSecret(bytes.try_into().ok()?))
    }
}

/// The configuration's random secret, shared by every worker VM through
/// shared data: the first VM to write it wins ([`SharedStore::create`], or
/// a compare-and-swap over a value that is no secret) and every VM uses
/// what is stored, so VMs loading at the same instant share one key and so
/// the cache. `None` when no random bytes could be had (the cache is then
/// off, and the caller logs it).
pub fn shared_secret(namespace: &str, store: &dyn SharedStore) -> Option<CacheSecret> {
    let key = format!("ai_auth.authz.{namespace}.secret");
    let mut fresh = None;
    // Each lost write means another VM's secret is there to read.
    for _ in 0..3 {
        let stored = store.get_versioned(&key);
        if let Some(secret) = stored
            .as_ref()
            .and_then(|(b, _)| CacheSecret::from_stored(b))
        {
            return Some(secret);
        }
        let mine = match fresh {
            Some(bytes) => bytes,
            None => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).ok()?;
                *fresh.insert(bytes)
            }
        };
        match stored {
            None => {
                store.create(&key, &mine);
            }
            Some((_, version)) => {
                store.set_versioned(&key, &mine, version);
            }
        }
    }
    // The store takes no write: this VM's own key (no sharing, still correct).
    fresh.map(CacheSecret)
}

/// Builds a [`DecisionKey`] from length-prefixed fields, so no two
/// different sequences of fields hash the same input.
pub struct KeyHasher(Hmac<Sha256>);

impl KeyHasher {
    /// `transport` separates the inputs of different check transports.
    pub fn new(secret: &CacheSecret, transport: &str) -> Option<Self> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0).ok()?;
        mac.update(transport.as_bytes());
        Some(KeyHasher(mac))
    }

    pub fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// The `key_headers` of the client's request, then the key.
    pub fn finish(mut self, cfg: &DecisionCacheConfig, req: &RequestView) -> DecisionKey {
        self.field(b"\0key_headers");
        for name in &cfg.key_headers {
            self.field(name.as_bytes());
            for value in req.header_values(name) {
                self.field(value.as_bytes());
            }
            self.field(b"\0end");
        }
        DecisionKey(self.0.finalize().into_bytes().into())
    }
}

/// Denials with a body above this are not cached (shared memory is not for bodies).
const MAX_CACHED_BODY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionKey([u8; 32]);

/// A compact binary form of a decision (the payload of a slot entry):
/// serde_json cost several µs per hit in the VM. Layout: `0` allow with its header lists, query edits and metadata, or `1` deny
/// with status, headers, body.
/// Strings and lists are u16/u32-length-prefixed; decoding checks every bound.
mod wire {
    use super::super::{Allowed, AuthDecision};

    pub const VERSION: u8 = 2;

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

    pub fn encode(decision: &AuthDecision) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        match decision {
            AuthDecision::Allow(a) => {
                out.push(0);
                for list in [
                    &a.upstream_set,
                    &a.upstream_append,
                    &a.upstream_append_existing,
                    &a.upstream_add_if_absent,
                    &a.upstream_overwrite_if_exists,
                    &a.client,
                    &a.query_set,
                ] {
                    put_headers(&mut out, list)?;
                }
                for list in [&a.upstream_remove, &a.query_remove] {
                    out.extend_from_slice(&u16::try_from(list.len()).ok()?.to_le_bytes());
                    for name in list {
                        put_bytes(&mut out, name.as_bytes())?;
                    }
                }
                match &a.metadata {
                    Some(m) => {
                        out.push(1);
                        put_bytes(&mut out, m.as_bytes())?;
                    }
                    None => out.push(0),
                }
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
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = usize::try_from(self.u32()?).ok()?;
            self.take(n)
        }
        fn string(&mut self) -> Option<String> {
            String::from_utf8(self.bytes()?.to_vec()).ok()
        }
        fn names(&mut self) -> Option<Vec<String>> {
            let n = self.u16()?;
            (0..n).map(|_| self.string()).collect()
        }
        fn headers(&mut self) -> Option<Vec<(String, String)>> {
            let n = self.u16()?;
            (0..n)
                .map(|_| Some((self.string()?, self.string()?)))
                .collect()
        }
    }

    /// The decision, or `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<AuthDecision> {
        let mut r = Reader(bytes);
        let decision = match r.u8()? {
            0 => AuthDecision::Allow(Allowed {
                upstream_set: r.headers()?,
                upstream_append: r.headers()?,
                upstream_append_existing: r.headers()?,
                upstream_add_if_absent: r.headers()?,
                upstream_overwrite_if_exists: r.headers()?,
                client: r.headers()?,
                query_set: r.headers()?,
                upstream_remove: r.names()?,
                query_remove: r.names()?,
                metadata: match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return None,
                },
            }),
            1 => AuthDecision::Deny {
                status: r.u16()?,
                headers: r.headers()?,
                body: r.bytes()?.to_vec(),
            },
            _ => return None,
        };
        r.0.is_empty().then_some(decision)
    }
}

fn slots(cfg: &DecisionCacheConfig, namespace: &str) -> SlotCache {
    SlotCache::new(
        format!("ai_auth.authz.{namespace}"),
        cfg.max_entries,
        wire::VERSION,
    )
}

/// The wire form, for the stage's tests.
#[cfg(test)]
pub mod tests_support {
    pub use super::wire::{decode, encode};
}

pub fn lookup(
    cfg: &DecisionCacheConfig,
    namespace: &str,
    store: &dyn SharedStore,
    key: &DecisionKey,
    now: u64,
) -> Option<AuthDecision> {
    match slots(cfg, namespace).get(store, &key.0, now) {
        Lookup::Hit(payload) => wire::decode(&payload),
        Lookup::Miss | Lookup::Malformed => None,
    }
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
        AuthDecision::Allow(_) => cfg.ttl_secs,
        AuthDecision::Deny { body, .. } if body.len() <= MAX_CACHED_BODY => cfg.denied_ttl_secs,
        AuthDecision::Deny { .. } | AuthDecision::Error(_) => 0,
    };
    let ttl = max_age(cache_control).map_or(ttl, |age| ttl.min(age));
    if ttl == 0 {
        return false;
    }
    match wire::encode(decision) {
        Some(payload) => {
            slots(cfg, namespace).put(store, &key.0, now.saturating_add(ttl), &payload);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callout::{MemoryStore, RacingStore};
    use crate::ext_authz::ErrorKind;

    fn cfg(denied: u64) -> DecisionCacheConfig {
        DecisionCacheConfig {
            key_headers: vec!["authorization".into()],
            secret: Some(CacheSecret::derive(b"test secret")),
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

    /// A key over method, path and body (as a transport would feed them).
    fn key(c: &DecisionCacheConfig, r: &RequestView, body: Option<&[u8]>) -> DecisionKey {
        let mut h = KeyHasher::new(c.secret.as_ref().unwrap(), "test").unwrap();
        h.field(r.method().as_bytes());
        h.field(r.path().as_bytes());
        match body {
            Some(b) => h.field(b),
            None => h.field(b"\0nobody"),
        }
        h.finish(c, r)
    }

    #[test]
    fn keys_depend_on_the_secret_and_the_transport() {
        let (c, r) = (cfg(0), req("/a", "k1"));
        let other = DecisionCacheConfig {
            secret: Some(CacheSecret::derive(b"another secret")),
            ..cfg(0)
        };
        assert_ne!(key(&c, &r, None), key(&other, &r, None));
        let mut h = KeyHasher::new(c.secret.as_ref().unwrap(), "grpc").unwrap();
        h.field(r.method().as_bytes());
        h.field(r.path().as_bytes());
        h.field(b"\0nobody");
        assert_ne!(key(&c, &r, None), h.finish(&c, &r));
        assert!(!format!("{c:?}").contains("test secret"));
    }

    #[test]
    fn the_random_secret_is_created_once_and_shared() {
        let store = MemoryStore::default();
        let first = shared_secret("ns", &store).unwrap();
        assert_eq!(shared_secret("ns", &store), Some(first.clone()));
        assert_ne!(shared_secret("other", &store), Some(first));
    }

    #[test]
    fn of_two_vms_creating_the_secret_at_once_the_first_writer_wins() {
        // Both VMs found no secret; the other writes its own first.
        let store = RacingStore {
            inner: MemoryStore::default(),
            race: |inner: &MemoryStore, key: &str, _| {
                if inner.get(key).is_none() {
                    inner.create(key, &[9; 32]);
                }
            },
        };
        let ours = shared_secret("ns", &store).unwrap();
        assert_eq!(
            ours,
            CacheSecret([9; 32]),
            "we lost the race: theirs, re-read"
        );
        assert_eq!(shared_secret("ns", &store.inner), Some(ours));
        // A value that is no secret (another layout) is replaced, once.
        let store = MemoryStore::default();
        store.set("ai_auth.authz.ns.secret", b"short");
        let fixed = shared_secret("ns", &store).unwrap();
        assert_eq!(shared_secret("ns", &store), Some(fixed));
    }

    fn allow() -> AuthDecision {
        AuthDecision::Allow(crate::ext_authz::Allowed {
            upstream_set: vec![("x-user-id".into(), "42".into())],
            ..Default::default()
        })
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
        let deny = AuthDecision::Deny {
            status: 302,
            headers: vec![("location".into(), "/login".into())],
            body: b"\x00\xffbody".to_vec(),
        };
        let full = AuthDecision::Allow(crate::ext_authz::Allowed {
            upstream_set: vec![("a".into(), "1".into())],
            upstream_append: vec![("b".into(), "2".into())],
            upstream_append_existing: vec![("c".into(), "3".into())],
            upstream_add_if_absent: vec![("d".into(), "4".into())],
            upstream_overwrite_if_exists: vec![("e".into(), "5".into())],
            upstream_remove: vec!["f".into()],
            client: vec![("g".into(), "7".into())],
            query_set: vec![("h".into(), "8".into())],
            query_remove: vec!["i".into()],
            metadata: Some("{\"j\":9}".into()),
        });
        for d in [allow(), deny, full] {
            let bytes = wire::encode(&d).unwrap();
            assert_eq!(wire::decode(&bytes), Some(d.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(wire::decode(&bytes[..cut]), None, "truncated at {cut}");
            }
        }
        assert_eq!(
            wire::encode(&AuthDecision::Error(ErrorKind::NoResponse)),
            None
        );
        assert_eq!(wire::decode(b"garbage"), None);
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
