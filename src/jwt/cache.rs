//! The verified-token cache: a client that reuses its token pays for the
//! signature check once.
//!
//! Keyed by a keyed hash (SipHash, random key per VM) of provider and token;
//! an entry keeps its token and a hit compares it in full, so a hash
//! collision can never return another token's claims. SipHash rather than
//! SHA-256: hashing a 700-byte token with SHA-256 costs several µs in the VM,
//! a large share of a cache hit. Bounded in entries (oldest evicted first)
//! and in token size; an entry is never used past the token's `exp` (plus
//! skew) and every time check is redone on a hit with the current clock.
//!
//! Behind it, [`SharedVerified`]: the cache every worker VM shares.

use super::config::JwtAuthn;
use super::keys::KeySet;
use super::token::Claims;
use crate::callout::SharedStore;
use crate::shared_cache::{Lookup, SlotCache};
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

/// Where a token would live in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    hash: u64,
    provider: usize,
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    provider: usize,
    generation: u64,
    token: Box<str>,
    claims: Arc<Claims>,
}

#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    max_token_size: usize,
    hasher: RandomState,
    entries: HashMap<u64, Entry>,
    order: VecDeque<u64>,
}

impl VerifiedCache {
    pub fn new(capacity: usize, max_token_size: usize) -> Self {
        VerifiedCache {
            capacity,
            max_token_size,
            hasher: RandomState::new(),
            entries: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The key for `token` under `provider`, or `None` when the token is not cacheable.
    pub fn key(&self, provider: usize, generation: u64, token: &str) -> Option<CacheKey> {
        if !self.is_enabled() || token.len() > self.max_token_size {
            return None;
        }
        Some(CacheKey {
            hash: self.hasher.hash_one((provider, generation, token)),
            provider,
            generation,
        })
    }

    /// A previous verification of exactly this token, if it is still in its
    /// validity window at `now`; stale entries are dropped.
    pub fn get(&mut self, key: &CacheKey, token: &str, now: u64, skew: u64) -> Option<Arc<Claims>> {
        let entry = self.entries.get(&key.hash)?;
        if entry.provider != key.provider
            || entry.generation != key.generation
            || *entry.token != *token
        {
            return None;
        }
        if entry
            .claims
            .exp
            .is_some_and(|exp| now > exp.saturating_add(skew))
        {
            self.entries.remove(&key.hash);
            self.order.retain(|k| *k != key.hash);
            return None;
        }
        Some(Arc::clone(&entry.claims))
    }

    pub fn insert(&mut self, key: CacheKey, token: &str, claims: Arc<Claims>) {
        if !self.is_enabled() {
            return;
        }
        let entry = Entry {
            provider: key.provider,
            generation: key.generation,
            token: token.into(),
            claims,
        };
        if self.entries.insert(key.hash, entry).is_none() {
            self.order.push_back(key.hash);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The verified-token cache every worker VM shares (proxy-wasm shared
/// data), behind each VM's own [`VerifiedCache`]: a token one worker
/// verified is not verified again by the others.
///
/// An entry says only "this exact token verified under this configuration,
/// provider and key set", and holds nothing else: it is keyed by SHA-256 of
/// the configuration's digest (a reload is another configuration), the
/// provider, the key set's fingerprint (a rotated or changed JWKS is
/// another key set, as it is a new generation locally) and the token's
/// bytes. A hit skips the signature check and nothing else: the claims are
/// parsed from the token itself and its issuer and times are checked as on
/// a miss. An entry lives until `exp` plus the clock skew, as a local one
/// does. Bounded: `jwt_shared_cache_size` slots ([`SlotCache`]).
#[derive(Debug)]
pub struct SharedVerified<'a> {
    cfg: &'a JwtAuthn,
    slots: SlotCache,
}

/// Where a verified token lives in the shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedKey([u8; 32]);

/// Layout of an entry: no payload (the token is its own record).
const SHARED_VERSION: u8 = 1;

impl<'a> SharedVerified<'a> {
    /// `None` when the configuration turns it off.
    pub fn new(cfg: &'a JwtAuthn) -> Option<Self> {
        (cfg.shared_cache_size > 0).then(|| SharedVerified {
            cfg,
            slots: SlotCache::new(
                format!("ai_auth.jwt.{}", cfg.namespace),
                cfg.shared_cache_size,
                SHARED_VERSION,
            ),
        })
    }

    /// The key of `token` verified by `provider` with `keys`; `None` when
    /// the token is too large to cache.
    pub fn key(&self, provider: usize, keys: &KeySet, token: &str) -> Option<SharedKey> {
        if token.len() > self.cfg.max_cached_token_size {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"ai-auth verified jwt\0");
        h.update(self.cfg.config_digest);
        h.update((provider as u64).to_le_bytes());
        h.update(keys.fingerprint());
        // Last and alone of variable length: no two inputs run together.
        h.update(token.as_bytes());
        Some(SharedKey(h.finalize().into()))
    }

    pub fn get(&self, store: &dyn SharedStore, key: &SharedKey, now: u64) -> Lookup {
        self.slots.get(store, &key.0, now)
    }

    /// Records a token just verified, until its `exp` plus `skew`.
    pub fn insert(&self, store: &dyn SharedStore, key: &SharedKey, claims: &Claims, skew: u64) {
        let expires_at = claims
            .exp
            .map_or(u64::MAX, |exp| exp.saturating_add(skew).saturating_add(1));
        self.slots.put(store, &key.0, expires_at, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>) -> Arc<Claims> {
        Arc::new(Claims {
            iss: None,
            sub: None,
            aud: vec![],
            exp,
            nbf: None,
            iat: None,
            payload: Default::default(),
            payload_b64: String::new(),
        })
    }

    #[test]
    fn keys_depend_on_provider_and_token() {
        let c = VerifiedCache::new(10, 100);
        assert_ne!(c.key(0, 0, "a"), c.key(1, 0, "a"));
        assert_ne!(c.key(0, 0, "a"), c.key(0, 0, "b"));
        assert_ne!(c.key(0, 0, "a"), c.key(0, 1, "a"), "new keys, new entries");
        assert_eq!(c.key(0, 0, &"x".repeat(101)), None);
        assert_eq!(VerifiedCache::new(0, 100).key(0, 0, "a"), None);
    }

    #[test]
    fn a_hit_needs_the_same_token() {
        let mut c = VerifiedCache::new(10, 100);
        let k = c.key(0, 0, "t").unwrap();
        c.insert(k, "t", claims(None));
        // Same slot, other token (as a hash collision would be): a miss.
        assert!(c.get(&k, "u", 0, 0).is_none());
        assert!(c.get(&k, "t", 0, 0).is_some());
    }

    #[test]
    fn entries_expire_with_the_token() {
        let mut c = VerifiedCache::new(10, 100);
        let k = c.key(0, 0, "t").unwrap();
        c.insert(k, "t", claims(Some(100)));
        assert!(c.get(&k, "t", 150, 60).is_some());
        assert!(c.get(&k, "t", 161, 60).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_oldest_first() {
        let mut c = VerifiedCache::new(2, 100);
        let keys: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|t| c.key(0, 0, t).unwrap())
            .collect();
        for (k, t) in keys.iter().zip(["a", "b", "c"]) {
            c.insert(*k, t, claims(None));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&keys[0], "a", 0, 0).is_none());
        assert!(c.get(&keys[2], "c", 0, 0).is_some());
    }
}
