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
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Denials with a body above this are not cached (shared memory is not for bodies).
const MAX_CACHED_BODY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionKey([u8; 32]);

impl DecisionKey {
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn slot(&self, max_entries: usize) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(self.0.get(..8).unwrap_or(&[0; 8]));
        (u64::from_le_bytes(first) % max_entries.max(1) as u64) as usize
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    expires_at: u64,
    decision: AuthDecision,
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
    let entry: Entry = serde_json::from_slice(&bytes).ok()?;
    (entry.key == key.hex() && now < entry.expires_at).then_some(entry.decision)
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
    let entry = Entry {
        key: key.hex(),
        expires_at: now.saturating_add(ttl),
        decision: decision.clone(),
    };
    match serde_json::to_vec(&entry) {
        Ok(bytes) => {
            store.set(&store_key(namespace, key.slot(cfg.max_entries)), &bytes);
            true
        }
        Err(_) => false,
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
    fn bounded_by_slots() {
        let (c, store) = (cfg(0), MemoryStore::default());
        for i in 0..200 {
            let k = key(&c, &req(&format!("/{i}"), "k"), None);
            remember(&c, "ns", &store, &k, &allow(), None, 0);
        }
        assert!(store.0.borrow().len() <= 16);
    }
}
