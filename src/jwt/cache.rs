//! The verified-token cache: a client that reuses its token pays for the
//! signature check once.
//!
//! Keyed by SHA-256 of (provider, token), so entries are small and a token is
//! never kept in memory; bounded in entries (oldest evicted first) and in
//! token size; an entry is never used past the token's `exp` (plus skew) and
//! every time check is redone on a hit with the current clock.

use super::token::Claims;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub type CacheKey = [u8; 32];

#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    max_token_size: usize,
    entries: HashMap<CacheKey, Arc<Claims>>,
    order: VecDeque<CacheKey>,
}

impl VerifiedCache {
    pub fn new(capacity: usize, max_token_size: usize) -> Self {
        VerifiedCache {
            capacity,
            max_token_size,
            entries: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The key for `token` under `provider`, or `None` when the token is not cacheable.
    pub fn key(&self, provider: usize, token: &str) -> Option<CacheKey> {
        if !self.is_enabled() || token.len() > self.max_token_size {
            return None;
        }
        let mut h = Sha256::new();
        h.update((provider as u64).to_le_bytes());
        h.update(token.as_bytes());
        Some(h.finalize().into())
    }

    /// A previous verification of the token, if it is still in its validity
    /// window at `now`; stale entries are dropped.
    pub fn get(&mut self, key: &CacheKey, now: u64, skew: u64) -> Option<Arc<Claims>> {
        let claims = self.entries.get(key)?;
        if claims.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            self.entries.remove(key);
            self.order.retain(|k| k != key);
            return None;
        }
        Some(Arc::clone(claims))
    }

    pub fn insert(&mut self, key: CacheKey, claims: Arc<Claims>) {
        if !self.is_enabled() {
            return;
        }
        if self.entries.insert(key, claims).is_none() {
            self.order.push_back(key);
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
        assert_ne!(c.key(0, "a"), c.key(1, "a"));
        assert_ne!(c.key(0, "a"), c.key(0, "b"));
        assert_eq!(c.key(0, &"x".repeat(101)), None);
        assert_eq!(VerifiedCache::new(0, 100).key(0, "a"), None);
    }

    #[test]
    fn entries_expire_with_the_token() {
        let mut c = VerifiedCache::new(10, 100);
        let k = c.key(0, "t").unwrap();
        c.insert(k, claims(Some(100)));
        assert!(c.get(&k, 150, 60).is_some());
        assert!(c.get(&k, 161, 60).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_oldest_first() {
        let mut c = VerifiedCache::new(2, 100);
        let keys: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|t| c.key(0, t).unwrap())
            .collect();
        for k in &keys {
            c.insert(*k, claims(None));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&keys[0], 0, 0).is_none());
        assert!(c.get(&keys[2], 0, 0).is_some());
    }
}
