//! Gateway-issued client API keys: a kind of provider of the `jwt_authn`
//! stage, usable in the same requirement trees as JWT providers.
//!
//! Keys are configured only as their SHA-256 hashes, each with a name, a
//! tenant, an optional expiry, optional allowed models and labels. A valid
//! key yields claims as a verified JWT does (`name`, `tenant`,
//! `allowed_models`, `labels`), so claim headers, claim rules, the
//! passthrough's claims and per-tenant upstream keys work with it.
//!
//! Lookup without timing leaks: the presented key is hashed once, then
//! looked up in a map keyed by that digest. The map hashes the digest again
//! with SipHash under a random key of the VM, so the bucket probed says
//! nothing an attacker can steer, and digests are compared in full in
//! constant time ([`KeyDigest`]'s equality): neither tells how many leading
//! bytes of a guess were right. The time per request does not grow with the
//! number of keys.

pub mod config;

use crate::jwt::token::Claims;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The SHA-256 digest of a key. Equality looks at every byte, whatever
/// they hold, so a map probe or a compare takes the same time for a guess
/// that shares a long prefix with a real key as for one that shares none.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of_key(key: &str) -> Self {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }
}

/// ORs the differences of every pair: there is no early exit, and
/// `black_box` keeps the optimiser from adding one.
fn diff_bits(pairs: impl Iterator<Item = (u8, u8)>) -> u8 {
    pairs.fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)))
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        diff_bits(self.0.iter().copied().zip(other.0.iter().copied())) == 0
    }
}

impl Eq for KeyDigest {}

impl Hash for KeyDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// One configured key (never the key itself: its digest is the map's key).
#[derive(Debug)]
pub struct ApiKey {
    pub name: String,
    /// Unix seconds from which the key is refused.
    pub expires_at: Option<u64>,
    /// What a request authenticated with this key carries as claims.
    pub claims: Arc<Claims>,
}

/// Why a presented key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not the hash of any configured key.
    Unknown,
    /// A configured key past its `expires_at`.
    Expired,
}

/// The keys of one provider.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_digest: HashMap<KeyDigest, usize>,
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a key; `Err` with the index of the key that has the same digest.
    fn insert(&mut self, digest: KeyDigest, key: ApiKey) -> Result<(), usize> {
        if let Some(existing) = self.by_digest.get(&digest) {
            return Err(*existing);
        }
        self.by_digest.insert(digest, self.keys.len());
        self.keys.push(key);
        Ok(())
    }

    /// The configured key the client presented, if it is one and still valid at `now`.
    pub fn check(&self, presented: &str, now: u64) -> Result<&ApiKey, Rejection> {
        let digest = KeyDigest::of_key(presented);
        let key = self
            .by_digest
            .get(&digest)
            .and_then(|i| self.keys.get(*i))
            .ok_or(Rejection::Unknown)?;
        match key.expires_at {
            Some(at) if now >= at => Err(Rejection::Expired),
            _ => Ok(key),
        }
    }
}

#[cfg(test)]
mod tests;
