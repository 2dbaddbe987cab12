//! The DPoP `jti` replay cache (RFC 9449 §11.1), shared by every worker VM
//! through proxy-wasm shared data, so a proof replayed to another worker
//! is refused as surely as one replayed to the same worker.
//!
//! Bounded: `entries` ids in `entries / BUCKET` slots (shared-data keys) of
//! `BUCKET` ids each, an id kept until the proof it came from could no
//! longer be accepted anyway (`iat` + the proof window). Every write is a
//! compare-and-swap on the slot's version, so two VMs recording the same
//! id at once cannot both succeed. slots are created when the configuration loads ([`prepare`]), before
//! any request is served, and never over one another VM wrote.
//!
//! A full slot refuses the proof rather than forget an id that could still
//! be replayed: size `replay_cache_entries` for the peak rate of DPoP
//! requests times twice the window (the README says how).

use crate::callout::{SharedStore, StoreWrite};
use sha2::{Digest, Sha256};

/// Ids per slot.
pub const BUCKET: usize = 16;
const ID: usize = 16;
const ENTRY: usize = ID + 8;
/// Compare-and-swap attempts before giving up on a busy slot.
const ATTEMPTS: usize = 8;

/// Where a proof's id went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: recorded.
    Fresh,
    /// Recorded before, by this or another VM, and not expired.
    Replayed,
    /// The slot holds `BUCKET` live ids: refused rather than forgotten.
    Full,
    /// The store would not take the id (busy slot, host failure).
    Unavailable,
}

/// A proof's id: SHA-256 of the key's thumbprint and the `jti`, cut to 128 bits.
pub fn id(thumbprint: &str, jti: &str) -> [u8; ID] {
    let mut h = Sha256::new();
    h.update((thumbprint.len() as u64).to_le_bytes());
    h.update(thumbprint.as_bytes());
    h.update(jti.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut out = [0u8; ID];
    out.copy_from_slice(digest.get(..ID).unwrap_or(&[0; ID]));
    out
}

/// The shared-data keys of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCache {
    namespace: String,
    slots: usize,
}

impl ReplayCache {
    pub fn new(namespace: &str, entries: usize) -> Self {
        ReplayCache {
            namespace: namespace.to_string(),
            slots: entries.div_ceil(BUCKET).max(1),
        }
    }

    fn key(&self, slot: usize) -> String {
        format!("ai_auth.dpop.{}.{slot}", self.namespace)
    }

    fn slot_of(&self, id: &[u8; ID]) -> usize {
        crate::shared_cache::slot_of(id, self.slots)
    }

    /// Creates every slot that does not exist yet (at load, before requests).
    pub fn prepare(&self, store: &dyn SharedStore) {
        for slot in 0..self.slots {
            // Never over a slot another VM created and wrote meanwhile.
            store.create(&self.key(slot), &[]);
        }
    }

    /// Records `id` until `expires_at`, unless it is already there.
    pub fn check_and_record(
        &self,
        store: &dyn SharedStore,
        id: &[u8; ID],
        expires_at: u64,
        now: u64,
    ) -> Seen {
        let key = self.key(self.slot_of(id));
        for _ in 0..ATTEMPTS {
            let Some((bytes, version)) = store.get_versioned(&key) else {
                // Not prepared (a VM that started late): create it.
                store.create(&key, &[]);
                continue;
            };
            let mut live: Vec<u8> = Vec::with_capacity(bytes.len() + ENTRY);
            for entry in bytes.chunks_exact(ENTRY) {
                let (entry_id, expiry) = entry.split_at(ID);
                let expiry = u64::from_le_bytes(expiry.try_into().unwrap_or([0; 8]));
                if expiry < now {
                    continue;
                }
                if entry_id == id {
                    return Seen::Replayed;
                }
                live.extend_from_slice(entry);
            }
            if live.len() >= BUCKET * ENTRY {
                return Seen::Full;
            }
            live.extend_from_slice(id);
            live.extend_from_slice(&expires_at.to_le_bytes());
            match store.set_versioned(&key, &live, version) {
                StoreWrite::Written => return Seen::Fresh,
                StoreWrite::Conflict => continue,
                StoreWrite::Failed => return Seen::Unavailable,
            }
        }
        Seen::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callout::{MemoryStore, RacingStore, CREATE_ONLY};

    #[test]
    fn an_id_is_seen_once_until_it_expires() {
        let store = MemoryStore::default();
        let cache = ReplayCache::new("ns", 64);
        cache.prepare(&store);
        let a = id("thumb", "jti-1");
        assert_eq!(cache.check_and_record(&store, &a, 200, 100), Seen::Fresh);
        assert_eq!(cache.check_and_record(&store, &a, 200, 150), Seen::Replayed);
        assert_eq!(cache.check_and_record(&store, &a, 300, 201), Seen::Fresh);
        // The same jti from another key is another proof.
        let b = id("other-thumb", "jti-1");
        assert_eq!(cache.check_and_record(&store, &b, 300, 201), Seen::Fresh);
    }

    #[test]
    fn a_full_slot_refuses_rather_than_forgets() {
        let store = MemoryStore::default();
        let cache = ReplayCache::new("ns", 1);
        cache.prepare(&store);
        for n in 0..BUCKET {
            let i = id("t", &n.to_string());
            assert_eq!(cache.check_and_record(&store, &i, 100, 0), Seen::Fresh);
        }
        let one_more = id("t", "x");
        assert_eq!(
            cache.check_and_record(&store, &one_more, 100, 0),
            Seen::Full
        );
        // Once the others have expired, there is room again.
        assert_eq!(
            cache.check_and_record(&store, &one_more, 200, 101),
            Seen::Fresh
        );
        let first = id("t", "0");
        assert_eq!(
            cache.check_and_record(&store, &first, 200, 101),
            Seen::Fresh
        );
    }

    /// A store where another VM records `racer_id` in the slot between our
    /// read and our write, `races` times (slot creation aside).
    fn racing(races: u32, racer_id: [u8; ID]) -> RacingStore<impl Fn(&MemoryStore, &str, u32)> {
        let left = std::cell::Cell::new(races);
        RacingStore {
            inner: MemoryStore::default(),
            race: move |inner: &MemoryStore, key: &str, version: u32| {
                if left.get() == 0 || version == CREATE_ONLY {
                    return;
                }
                left.set(left.get() - 1);
                let mut theirs = inner.get(key).unwrap_or_default();
                theirs.extend_from_slice(&racer_id);
                theirs.extend_from_slice(&500u64.to_le_bytes());
                inner.set(key, &theirs);
            },
        }
    }

    #[test]
    fn a_concurrent_record_of_the_same_id_wins_over_ours() {
        let proof = id("t", "same");
        let store = racing(1, proof);
        let cache = ReplayCache::new("ns", 16);
        cache.prepare(&store);
        assert_eq!(
            cache.check_and_record(&store, &proof, 100, 0),
            Seen::Replayed,
            "the conflict makes us read again, and the id is there"
        );
    }

    #[test]
    fn endless_conflicts_give_up() {
        let store = racing(u32::MAX, id("t", "someone-else"));
        let cache = ReplayCache::new("ns", 1 << 20);
        cache.prepare(&store);
        // Different ids each time so the slot does not just fill up.
        let mine = id("t", "mine");
        let seen = cache.check_and_record(&store, &mine, 100, 0);
        assert!(matches!(seen, Seen::Unavailable | Seen::Full), "{seen:?}");
    }
}
