//! The verified-token cache shared by worker VMs: one VM's verification
//! serves the others, never beyond what a local verification would accept.

use super::keys::parse_jwks;
use super::tests::filter;
use super::*;
use crate::callout::MemoryStore;
use ai_auth_testkit::keys::{jwks, TestKey};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/demo";

/// One provider, `idp`, with `keys` in `local_jwks` (or `remote_jwks`), and
/// the local cache of `local` entries.
fn config(keys: Value, audience: &str, local: usize) -> JwtAuthn {
    let mut provider = json!({"issuer": ISS, "audiences": [audience], "clock_skew_seconds": 10});
    provider
        .as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    filter(json!({
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        "jwt_cache_config": {"jwt_cache_size": local, "jwt_shared_cache_size": 64}
    }))
}

fn local(key: &TestKey, audience: &str) -> JwtAuthn {
    config(
        json!({"local_jwks": {"inline_string": jwks(&[key]).to_string()}}),
        audience,
        100,
    )
}

fn remote() -> JwtAuthn {
    config(
        json!({"remote_jwks": {"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}}}),
        "llm-gateway",
        100,
    )
}

fn token(key: &TestKey, exp: u64) -> String {
    key.sign(&json!({"iss": ISS, "aud": "llm-gateway", "sub": "alice", "exp": exp}))
}

/// One worker VM: its own local cache and remote keys.
struct Vm {
    cache: VerifiedCache,
    remote: Vec<Option<Arc<KeySet>>>,
}

impl Vm {
    fn new(cfg: &JwtAuthn) -> Vm {
        Vm {
            cache: VerifiedCache::new(cfg.cache_size, cfg.max_cached_token_size),
            remote: vec![None],
        }
    }

    fn with_keys(cfg: &JwtAuthn, keys: &[&TestKey]) -> Vm {
        let mut vm = Vm::new(cfg);
        vm.load(keys);
        vm
    }

    fn load(&mut self, keys: &[&TestKey]) {
        let set = parse_jwks(&jwks(keys).to_string()).unwrap().keys;
        let generation = self.remote[0].as_ref().map_or(1, |k| k.generation() + 1);
        self.remote[0] = Some(Arc::new(set.with_generation(generation)));
    }

    fn send(&mut self, cfg: &JwtAuthn, store: &MemoryStore, token: &str, now: u64) -> JwtOutcome {
        let r = RequestView::new(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/v1/x".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ]);
        authenticate_with(
            cfg,
            &r,
            now,
            &mut self.cache,
            &self.remote,
            store,
            &Learnt::default(),
        )
    }
}

fn count(outcome: &JwtOutcome, counter: Counter) -> usize {
    outcome.counters.iter().filter(|c| **c == counter).count()
}

#[test]
fn a_token_is_verified_once_across_vms() {
    let key = TestKey::rsa("k1");
    let cfg = local(&key, "llm-gateway");
    let store = MemoryStore::default();
    let t = token(&key, NOW + 300);
    let mut vms: Vec<Vm> = (0..4).map(|_| Vm::new(&cfg)).collect();
    let mut verifications = 0;
    let mut shared_hits = 0;
    for round in 0..3 {
        for vm in &mut vms {
            let outcome = vm.send(&cfg, &store, &t, NOW + round);
            assert!(outcome.result.is_ok(), "{:?}", outcome.result);
            verifications += count(&outcome, Counter::JwtSignatureVerifications);
            shared_hits += count(&outcome, Counter::JwtSharedCacheHit);
        }
    }
    assert_eq!(verifications, 1);
    assert_eq!(shared_hits, 3, "each other VM once; then its local cache");
    // The shared entry holds a digest and an expiry, never the token or claims.
    for (value, _) in store.0.borrow().values() {
        assert!(value.len() <= 41, "{} bytes", value.len());
    }
}

#[test]
fn a_shared_hit_fills_the_local_cache_and_needs_no_local_one() {
    let key = TestKey::rsa("k1");
    let cfg = local(&key, "llm-gateway");
    let store = MemoryStore::default();
    let t = token(&key, NOW + 300);
    Vm::new(&cfg).send(&cfg, &store, &t, NOW);
    let mut vm = Vm::new(&cfg);
    let first = vm.send(&cfg, &store, &t, NOW);
    assert_eq!(count(&first, Counter::JwtSharedCacheHit), 1);
    let second = vm.send(&cfg, &store, &t, NOW);
    assert_eq!(count(&second, Counter::JwtCacheHit), 1);
    assert_eq!(count(&second, Counter::JwtSharedCacheHit), 0);
    // Local cache off: every request is a shared hit, no signature check.
    let cfg0 = config(
        json!({"local_jwks": {"inline_string": jwks(&[&key]).to_string()}}),
        "llm-gateway",
        0,
    );
    let store = MemoryStore::default();
    Vm::new(&cfg0).send(&cfg0, &store, &t, NOW);
    let mut vm = Vm::new(&cfg0);
    for _ in 0..3 {
        let o = vm.send(&cfg0, &store, &t, NOW);
        assert!(o.result.is_ok());
        assert_eq!(count(&o, Counter::JwtSharedCacheHit), 1);
        assert_eq!(count(&o, Counter::JwtSignatureVerifications), 0);
    }
}

#[test]
fn an_expired_token_is_refused_whatever_the_shared_entry() {
    let key = TestKey::rsa("k1");
    let cfg = local(&key, "llm-gateway");
    let store = MemoryStore::default();
    let t = token(&key, NOW + 5);
    assert!(Vm::new(&cfg).send(&cfg, &store, &t, NOW).result.is_ok());
    // Within the skew (10 s) past exp: still good, from the shared entry.
    let ok = Vm::new(&cfg).send(&cfg, &store, &t, NOW + 15);
    assert!(ok.result.is_ok());
    assert_eq!(count(&ok, Counter::JwtSharedCacheHit), 1);
    let late = Vm::new(&cfg).send(&cfg, &store, &t, NOW + 16);
    assert_eq!(count(&late, Counter::JwtSharedCacheHit), 0);
    assert_eq!(late.result.unwrap_err(), JwtError::Expired);
    // Even an entry whose expiry says otherwise (forged in shared data)
    // does not make an expired token pass: the token's times are checked.
    let shared = SharedVerified::new(&cfg).unwrap();
    let keys = match &cfg.providers[0].jwt().unwrap().keys {
        config::ProviderKeys::Local(k) => k,
        config::ProviderKeys::Remote(_) => unreachable!(),
    };
    let k = shared.key(0, keys, &t).unwrap();
    let forever = token::parse(&token(&key, u64::MAX), 1 << 16)
        .unwrap()
        .claims;
    shared.insert(&store, &k, &forever, 0);
    let forged = Vm::new(&cfg).send(&cfg, &store, &t, NOW + 100);
    assert_eq!(forged.result.unwrap_err(), JwtError::Expired);
}

#[test]
fn another_configuration_or_provider_does_not_reuse_an_entry() {
    let key = TestKey::rsa("k1");
    let store = MemoryStore::default();
    let t = token(&key, NOW + 300);
    let cfg = local(&key, "llm-gateway");
    assert!(Vm::new(&cfg).send(&cfg, &store, &t, NOW).result.is_ok());
    // Another audience: another configuration, its own verification (and
    // the audience check that refuses this token).
    let mut other = local(&key, "other-api");
    // The same slots: only the configuration's digest tells them apart.
    other.namespace = cfg.namespace.clone();
    let o = Vm::new(&other).send(&other, &store, &t, NOW);
    assert_eq!(count(&o, Counter::JwtSharedCacheHit), 0);
    assert_eq!(count(&o, Counter::JwtSignatureVerifications), 1);
    assert_eq!(o.result.unwrap_err(), JwtError::AudienceNotAllowed);
    // Another provider of one configuration: keys differ by provider.
    let shared = SharedVerified::new(&cfg).unwrap();
    let keys = parse_jwks(&jwks(&[&key]).to_string()).unwrap().keys;
    assert_ne!(shared.key(0, &keys, &t), shared.key(1, &keys, &t));
    let other_shared = SharedVerified::new(&other).unwrap();
    assert_ne!(shared.key(0, &keys, &t), other_shared.key(0, &keys, &t));
}

#[test]
fn a_rotated_key_set_does_not_reuse_entries_of_the_old_one() {
    let (old, new) = (TestKey::rsa("old"), TestKey::rsa("new"));
    let cfg = remote();
    let store = MemoryStore::default();
    let t = token(&old, NOW + 300);
    let mut a = Vm::with_keys(&cfg, &[&old]);
    assert!(a.send(&cfg, &store, &t, NOW).result.is_ok());
    // A VM with the same keys (the same JWKS) reuses the verification.
    let same = Vm::with_keys(&cfg, &[&old]).send(&cfg, &store, &t, NOW);
    assert_eq!(count(&same, Counter::JwtSharedCacheHit), 1);
    // The IdP retires the old key: a VM with the new set refuses the token.
    let mut b = Vm::with_keys(&cfg, &[&new]);
    let refused = b.send(&cfg, &store, &t, NOW);
    assert!(refused.result.is_err(), "{:?}", refused.result);
    assert_eq!(count(&refused, Counter::JwtSharedCacheHit), 0);
    // And so does the first VM once it loads it, local cache and all.
    a.load(&[&new]);
    assert!(a.send(&cfg, &store, &t, NOW).result.is_err());
}

#[test]
fn a_malformed_entry_is_a_counted_miss() {
    let key = TestKey::rsa("k1");
    let cfg = local(&key, "llm-gateway");
    let store = MemoryStore::default();
    let t = token(&key, NOW + 300);
    assert!(Vm::new(&cfg).send(&cfg, &store, &t, NOW).result.is_ok());
    let slots: Vec<String> = store.0.borrow().keys().cloned().collect();
    assert_eq!(slots.len(), 1);
    store.set(&slots[0], b"\x09garbage");
    let o = Vm::new(&cfg).send(&cfg, &store, &t, NOW);
    assert!(o.result.is_ok());
    assert_eq!(count(&o, Counter::JwtSharedCacheMalformed), 1);
    assert_eq!(count(&o, Counter::JwtSignatureVerifications), 1);
}

#[test]
fn bounded_by_the_configured_size() {
    let key = TestKey::rsa("k1");
    let cfg = local(&key, "llm-gateway");
    let store = MemoryStore::default();
    let mut vm = Vm::new(&cfg);
    for i in 0..200 {
        let t = key.sign(&json!({"iss": ISS, "aud": "llm-gateway", "sub": format!("user-{i}"), "exp": NOW + 300}));
        assert!(vm.send(&cfg, &store, &t, NOW).result.is_ok());
    }
    assert!(store.0.borrow().len() <= 64);
    let off = filter(json!({
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        "jwt_cache_config": {"jwt_shared_cache_size": 0}
    }));
    assert!(SharedVerified::new(&off).is_none());
}
