//! Bounded caches in proxy-wasm shared data, used by every worker VM of the
//! plugin: the passthrough's decisions, introspection answers and verified
//! JWTs.
//!
//! Shared data never evicts, so a cache is a fixed number of slots (one
//! shared-data key each) and an entry takes the slot its 32-byte digest
//! names, replacing what was there (direct-mapped, last writer wins).
//! Entries are independent, so no write is a read-modify-write that a
//! compare-and-swap would have to protect. An entry carries its layout
//! version, its full digest and its expiry: a slot another key took is a
//! miss, and one holding another layout or cut short is a malformed miss.
//!
//! Slots that several VMs update (a claim, a "reported once" marker) are
//! compare-and-swap writes over a key that exists: [`prepare_slots`] creates
//! them at load and [`put_once`] swaps a value in, each never over what
//! another VM created or wrote meanwhile ([`SharedStore::create`]).

use crate::callout::{SharedStore, StoreWrite};

/// Version, digest, expiry (u64 LE).
const HEAD: usize = 1 + 32 + 8;

/// Which of `slots` slots `id` (a digest, at least 8 bytes) lives in.
pub fn slot_of(id: &[u8], slots: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(id.get(..8).unwrap_or(&[0; 8]));
    (u64::from_le_bytes(first) % slots.max(1) as u64) as usize
}

/// One cache: its shared-data keys are `<prefix>.<slot>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCache {
    prefix: String,
    slots: usize,
    version: u8,
}

/// What a slot held for a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The entry's payload, still fresh.
    Hit(Vec<u8>),
    /// Nothing, another digest's entry, or an expired one.
    Miss,
    /// Bytes no entry of this layout has: too short, or another version.
    Malformed,
}

impl SlotCache {
    /// `version` names the payload's layout: bump it when that changes.
    pub fn new(prefix: String, slots: usize, version: u8) -> Self {
        SlotCache {
            prefix,
            slots,
            version,
        }
    }

    fn key(&self, digest: &[u8; 32]) -> String {
        format!("{}.{}", self.prefix, slot_of(digest, self.slots))
    }

    /// The payload stored under `digest`, if it is fresh at `now` (entries
    /// live while `now < expires_at`).
    pub fn get(&self, store: &dyn SharedStore, digest: &[u8; 32], now: u64) -> Lookup {
        let Some(mut bytes) = store.get(&self.key(digest)) else {
            return Lookup::Miss;
        };
        let (Some(version), Some(stored), Some(expires)) =
            (bytes.first(), bytes.get(1..33), bytes.get(33..HEAD))
        else {
            return Lookup::Malformed;
        };
        if *version != self.version {
            return Lookup::Malformed;
        }
        if !same_bytes(stored, digest) {
            return Lookup::Miss;
        }
        let expires_at = u64::from_le_bytes(expires.try_into().unwrap_or([0; 8]));
        if now >= expires_at {
            return Lookup::Miss;
        }
        bytes.drain(..HEAD);
        Lookup::Hit(bytes)
    }

    /// Stores `payload` under `digest` until `expires_at`, replacing the
    /// slot's entry.
    pub fn put(&self, store: &dyn SharedStore, digest: &[u8; 32], expires_at: u64, payload: &[u8]) {
        let mut out = Vec::with_capacity(HEAD + payload.len());
        out.push(self.version);
        out.extend_from_slice(digest);
        out.extend_from_slice(&expires_at.to_le_bytes());
        out.extend_from_slice(payload);
        store.set(&self.key(digest), &out);
    }
}

/// Creates each of `keys` that does not exist yet, empty, so that later
/// writes are compare-and-swaps; never over a key another VM created (and
/// maybe wrote) meanwhile.
pub fn prepare_slots(store: &dyn SharedStore, keys: impl IntoIterator<Item = String>) {
    for key in keys {
        store.create(&key, &[]);
    }
}

/// Puts `value` at `key` unless the key holds it already; returns whether
/// this call put it: of VMs racing to put the same value, one wins. A key
/// the store can neither read nor create says `true` (better twice than
/// never).
pub fn put_once(store: &dyn SharedStore, key: &str, value: &[u8]) -> bool {
    match store.get_versioned(key) {
        Some((held, _)) if held == value => false,
        Some((_, version)) => store.set_versioned(key, value, version) == StoreWrite::Written,
        None => store.create(key, value) || store.get_versioned(key).is_none(),
    }
}

/// Compares every byte, whatever they hold.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callout::MemoryStore;

    fn cache(slots: usize) -> SlotCache {
        SlotCache::new("test.ns".into(), slots, 7)
    }

    #[test]
    fn an_entry_lives_until_it_expires() {
        let (c, store) = (cache(16), MemoryStore::default());
        c.put(&store, &[1; 32], 100, b"payload");
        assert_eq!(
            c.get(&store, &[1; 32], 99),
            Lookup::Hit(b"payload".to_vec())
        );
        assert_eq!(c.get(&store, &[1; 32], 100), Lookup::Miss);
        assert_eq!(c.get(&store, &[2; 32], 0), Lookup::Miss);
    }

    #[test]
    fn a_slot_holds_one_digest_and_the_count_is_the_bound() {
        let (c, store) = (cache(4), MemoryStore::default());
        for i in 0..200u8 {
            c.put(&store, &[i; 32], u64::MAX, &[i]);
        }
        assert!(store.0.borrow().len() <= 4);
        // The last writer of each slot holds it; the others are misses.
        let hits = (0..200u8)
            .filter(|i| matches!(c.get(&store, &[*i; 32], 0), Lookup::Hit(_)))
            .count();
        assert!((1..=4).contains(&hits), "{hits}");
    }

    #[test]
    fn foreign_and_truncated_entries_are_malformed() {
        let (c, store) = (cache(1), MemoryStore::default());
        let other_layout = SlotCache::new("test.ns".into(), 1, 8);
        other_layout.put(&store, &[1; 32], u64::MAX, b"");
        assert_eq!(c.get(&store, &[1; 32], 0), Lookup::Malformed);
        c.put(&store, &[1; 32], u64::MAX, b"");
        let full = store.get("test.ns.0").unwrap();
        for cut in 0..HEAD {
            store.set("test.ns.0", &full[..cut]);
            assert_eq!(
                c.get(&store, &[1; 32], 0),
                Lookup::Malformed,
                "cut at {cut}"
            );
        }
        store.set("test.ns.0", &full);
        assert_eq!(c.get(&store, &[1; 32], 0), Lookup::Hit(vec![]));
    }

    #[test]
    fn preparing_never_overwrites_a_slot_another_vm_wrote() {
        let store = MemoryStore::default();
        store.set("slot.a", b"another VM's claim");
        prepare_slots(&store, ["slot.a".to_string(), "slot.b".to_string()]);
        assert_eq!(store.get("slot.a").unwrap(), b"another VM's claim");
        assert_eq!(store.get("slot.b").unwrap(), b"");
        // A VM that prepares late, after a value went in: still kept.
        store.set("slot.b", b"v");
        prepare_slots(&store, ["slot.b".to_string()]);
        assert_eq!(store.get("slot.b").unwrap(), b"v");
    }

    #[test]
    fn put_once_is_true_once_per_value() {
        let store = MemoryStore::default();
        prepare_slots(&store, ["k".to_string()]);
        assert!(put_once(&store, "k", b"d1"));
        assert!(!put_once(&store, "k", b"d1"));
        assert!(put_once(&store, "k", b"d2"));
        // Unprepared: created by the first.
        assert!(put_once(&store, "late", b"d1"));
        assert!(!put_once(&store, "late", b"d1"));
    }

    #[test]
    fn of_two_vms_putting_the_same_value_one_wins() {
        // Another VM puts the same value between our read and our write,
        // over a prepared slot and over a missing one.
        for prepared in [true, false] {
            let store = crate::callout::another_vm_writes(b"d".to_vec(), "k", prepared);
            assert!(!put_once(&store, "k", b"d"), "prepared: {prepared}");
            assert_eq!(store.get("k").unwrap(), b"d");
        }
    }

    #[test]
    fn prefixes_separate_caches() {
        let store = MemoryStore::default();
        cache(4).put(&store, &[1; 32], u64::MAX, b"x");
        let other = SlotCache::new("test.other".into(), 4, 7);
        assert_eq!(other.get(&store, &[1; 32], 0), Lookup::Miss);
    }
}
