//! Remote JWKS: which fetches the root context makes, when, and what a
//! reply means. Plain state over an injected clock; the host sends the
//! callouts and shares the result with every worker VM through shared data.
//!
//! - First fetch at once; then again after `cache_duration`.
//! - A failed fetch keeps the keys already held (stale while the IdP is
//!   down) and is retried with backoff: 1 s, 2 s, 4 s ... at most 60 s.
//! - A token whose `kid` is unknown asks for a fetch at once, at most once
//!   per 30 s per provider (the host makes the window plugin-wide), so a key
//!   rotation at the IdP is picked up at once without letting forged `kid`s
//!   hammer it: [`Fetcher::refresh_now`]. The host holds that request until
//!   the fetch in flight answers, single-flight: one fetch, however many
//!   requests wait for it.
//! - With `discovery`, the OIDC discovery document is fetched first and its
//!   `jwks_uri` next, through the same cluster; its `issuer` must be the
//!   provider's.

use crate::callout::{CalloutRequest, CalloutResponse, SharedStore, StoreWrite};
use crate::jwt::config::{JwtAuthn, ProviderKeys, RemoteJwks};
use crate::jwt::keys::parse_jwks;
use crate::vocab::split_uri;
use serde_json::Value;

const MAX_BACKOFF_SECS: u64 = 60;
/// At most one fetch asked by an unknown `kid` per this many seconds.
pub const MIN_FORCED_INTERVAL_SECS: u64 = 30;

/// What a pending fetch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

#[derive(Debug)]
struct Slot {
    remote: RemoteJwks,
    issuer: Option<String>,
    next_attempt: u64,
    failures: u32,
    in_flight: Option<Stage>,
    last_forced: Option<u64>,
    /// When the keys this VM holds were fetched (here or by another VM).
    fetched_at: Option<u64>,
}

/// What a request whose token has an unknown `kid` may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// A fetch for the provider is in flight: wait for its keys.
    InFlight,
    /// Send this fetch (now in flight) and wait for its keys.
    Send(CalloutRequest),
    /// Another VM refetches the provider now: wait for the keys it
    /// publishes.
    Elsewhere,
    /// The provider was refetched within the window: answer with the keys
    /// at hand.
    Limited,
}

/// The plugin-wide refetch window, as the host's shared data tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// It was open, and this VM has now taken it.
    Claimed,
    /// A VM took it at this time, within [`MIN_FORCED_INTERVAL_SECS`].
    TakenAt(u64),
    /// The host could not tell: closed.
    Unknown,
}

/// Takes the plugin-wide refetch window at `key` (when a VM last took it,
/// u64 LE seconds) for this VM if no VM took it within
/// [`MIN_FORCED_INTERVAL_SECS`]: a compare-and-swap, or a create where the
/// slot is missing, so of VMs racing one wins and the others wait for its
/// keys. A slot the store can neither read nor write closes the window:
/// better a token answered with the keys at hand than an IdP hammered.
pub fn claim_window(store: &dyn SharedStore, key: &str, now: u64) -> Window {
    let Some((value, version)) = store.get_versioned(key) else {
        if store.create(key, &now.to_le_bytes()) {
            return Window::Claimed;
        }
        // Another VM created it first, or the store is failing.
        return match store.get_versioned(key) {
            Some(_) => Window::TakenAt(now),
            None => Window::Unknown,
        };
    };
    let last = <[u8; 8]>::try_from(value.as_slice())
        .ok()
        .map(u64::from_le_bytes);
    match last {
        Some(at) if now.saturating_sub(at) < MIN_FORCED_INTERVAL_SECS => Window::TakenAt(at),
        _ => match store.set_versioned(key, &now.to_le_bytes(), version) {
            StoreWrite::Written => Window::Claimed,
            StoreWrite::Conflict => Window::TakenAt(now),
            StoreWrite::Failed => Window::Unknown,
        },
    }
}

/// The result of one reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A valid JWKS, to use until `expires_at`.
    Keys { jwks: String, expires_at: u64 },
    /// Discovery answered: fetch the JWKS with this callout next.
    Next(CalloutRequest),
    /// Nothing usable; the reason is for the log (never document content).
    Failed(String),
}

#[derive(Debug, Default)]
pub struct Fetcher {
    /// One slot per provider index; `None` for providers with local keys.
    slots: Vec<Option<Slot>>,
}

impl Fetcher {
    pub fn new(cfg: &JwtAuthn) -> Self {
        Fetcher {
            slots: cfg
                .providers
                .iter()
                .map(|p| match p.jwt().map(|j| (j, &j.keys)) {
                    Some((jwt, ProviderKeys::Remote(r))) => Some(Slot {
                        remote: r.clone(),
                        issuer: jwt.issuer.clone(),
                        next_attempt: 0,
                        failures: 0,
                        in_flight: None,
                        last_forced: None,
                        fetched_at: None,
                    }),
                    _ => None,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Providers with remote keys.
    pub fn remote_providers(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
    }

    /// The fetches to send now; they count as in flight until their reply.
    pub fn due(&mut self, now: u64) -> Vec<(usize, CalloutRequest)> {
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.in_flight.is_some() || now < slot.next_attempt {
                continue;
            }
            out.push((index, slot.start()));
        }
        out
    }

    /// Another VM stored keys valid until `expires_at`: no need to fetch before.
    pub fn fetched_elsewhere(&mut self, index: usize, expires_at: u64) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            let fetched_at = expires_at.saturating_sub(slot.remote.cache_duration_secs);
            slot.fetched_at = slot.fetched_at.max(Some(fetched_at));
            if slot.in_flight.is_none() {
                slot.next_attempt = slot.next_attempt.max(expires_at);
                slot.failures = 0;
            }
        }
    }

    /// A token had a `kid` the keys of provider `index` lack: fetch now,
    /// unless a fetch is in flight (wait for it) or one was forced within
    /// [`MIN_FORCED_INTERVAL_SECS`]. `claim` is asked last, only when this
    /// VM would fetch: the host's plugin-wide window, which another VM may
    /// have taken (then wait while its fetch may still run).
    pub fn refresh_now(
        &mut self,
        index: usize,
        now: u64,
        claim: impl FnOnce() -> Window,
    ) -> Refresh {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return Refresh::Limited;
        };
        if slot.in_flight.is_some() {
            return Refresh::InFlight;
        }
        let recently = slot
            .last_forced
            .is_some_and(|t| now.saturating_sub(t) < MIN_FORCED_INTERVAL_SECS);
        if recently {
            return Refresh::Limited;
        }
        match claim() {
            Window::Claimed => {
                slot.last_forced = Some(now);
                Refresh::Send(slot.start())
            }
            // Its keys are not here yet, and its fetch may still run.
            Window::TakenAt(at)
                if slot.fetched_at.is_none_or(|f| f < at)
                    && now.saturating_sub(at) <= slot.fetch_secs() =>
            {
                Refresh::Elsewhere
            }
            Window::TakenAt(at) => {
                slot.last_forced = Some(at);
                Refresh::Limited
            }
            Window::Unknown => {
                slot.last_forced = Some(now);
                Refresh::Limited
            }
        }
    }

    /// The reply to the fetch in flight for provider `index`.
    pub fn on_reply(&mut self, index: usize, reply: &CalloutResponse, now: u64) -> Fetched {
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return Fetched::Failed("not a remote provider".into());
        };
        let stage = slot.in_flight.take();
        let result = match stage {
            Some(Stage::Discovery) => discovery(slot, reply),
            Some(Stage::Jwks) => jwks(slot, reply, now),
            None => Err("no fetch was in flight".into()),
        };
        match result {
            Ok(Fetched::Next(call)) => {
                slot.in_flight = Some(Stage::Jwks);
                Fetched::Next(call)
            }
            Ok(done) => {
                slot.failures = 0;
                slot.fetched_at = Some(now);
                slot.next_attempt = now.saturating_add(slot.remote.cache_duration_secs);
                done
            }
            Err(reason) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = 1u64
                    .checked_shl(slot.failures.saturating_sub(1))
                    .unwrap_or(MAX_BACKOFF_SECS)
                    .min(MAX_BACKOFF_SECS);
                slot.next_attempt = now.saturating_add(backoff);
                Fetched::Failed(reason)
            }
        }
    }

    /// The largest reply body worth reading for provider `index` (one byte
    /// over the limit tells "too large" from "just fits").
    pub fn reply_bytes_wanted(&self, index: usize) -> usize {
        match self.slots.get(index) {
            Some(Some(slot)) => slot.remote.max_document_bytes.saturating_add(1),
            _ => 0,
        }
    }

    /// The fetch could not be sent at all.
    pub fn on_dispatch_failed(&mut self, index: usize, now: u64) {
        let _ = self.on_reply(index, &CalloutResponse::default(), now);
    }
}

impl Slot {
    /// The longest a fetch can take, in whole seconds (with discovery, two
    /// calls), and the second the clock may have turned meanwhile.
    fn fetch_secs(&self) -> u64 {
        let one = self.remote.http_uri.timeout.as_millis().div_ceil(1000);
        let calls = if self.remote.discovery { 2 } else { 1 };
        u64::try_from(one)
            .unwrap_or(u64::MAX)
            .saturating_mul(calls)
            .saturating_add(1)
    }

    /// The first request of a fetch, now in flight.
    fn start(&mut self) -> CalloutRequest {
        self.in_flight = Some(if self.remote.discovery {
            Stage::Discovery
        } else {
            Stage::Jwks
        });
        get(
            &self.remote,
            &self.remote.http_uri.authority,
            &self.remote.http_uri.path,
        )
    }
}

fn get(remote: &RemoteJwks, authority: &str, path: &str) -> CalloutRequest {
    CalloutRequest {
        cluster: remote.http_uri.cluster.clone(),
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            (":authority".into(), authority.into()),
            ("accept".into(), "application/json".into()),
        ],
        body: Vec::new(),
        timeout: remote.http_uri.timeout,
    }
}

fn body_of(slot: &Slot, reply: &CalloutResponse, what: &str) -> Result<String, String> {
    match reply.status {
        None => {
            return Err(format!(
                "{what}: no valid response (timeout, reset, not HTTP, or a status outside 100-599)"
            ))
        }
        Some(200) => {}
        Some(s) => return Err(format!("{what}: status {s}")),
    }
    let max = slot.remote.max_document_bytes;
    if reply.body.len() > max {
        return Err(format!(
            "{what}: larger than {max} bytes (remote_jwks.max_document_bytes)"
        ));
    }
    String::from_utf8(reply.body.clone()).map_err(|_| format!("{what}: not UTF-8"))
}

fn discovery(slot: &Slot, reply: &CalloutResponse) -> Result<Fetched, String> {
    let text = body_of(slot, reply, "discovery")?;
    // from_slice, as every runtime parse: each serde_json reader type is
    // another copy of the parser in the .wasm (issue 14).
    let doc: Value =
        serde_json::from_slice(text.as_bytes()).map_err(|_| "discovery: not JSON".to_string())?;
    if let Some(expected) = &slot.issuer {
        if doc.get("issuer").and_then(Value::as_str) != Some(expected.as_str()) {
            return Err("discovery: its issuer is not the provider's".into());
        }
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("discovery: no jwks_uri")?;
    let (authority, path) = split_uri(uri).ok_or("discovery: jwks_uri is not an http(s) URI")?;
    Ok(Fetched::Next(get(&slot.remote, &authority, &path)))
}

fn jwks(slot: &Slot, reply: &CalloutResponse, now: u64) -> Result<Fetched, String> {
    let text = body_of(slot, reply, "jwks")?;
    parse_jwks(&text).map_err(|e| format!("jwks: {e}"))?;
    Ok(Fetched::Keys {
        jwks: text,
        expires_at: now.saturating_add(slot.remote.cache_duration_secs),
    })
}

/// Shared-data form: expiry (u64 LE) then the JWKS text.
pub fn encode_shared(expires_at: u64, jwks: &str) -> Vec<u8> {
    let mut out = expires_at.to_le_bytes().to_vec();
    out.extend_from_slice(jwks.as_bytes());
    out
}

pub fn decode_shared(bytes: &[u8]) -> Option<(u64, &str)> {
    let expires = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((expires, std::str::from_utf8(bytes.get(8..)?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use serde_json::json;

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    fn fetcher(remote: Value) -> Fetcher {
        let cfg = json!({"jwt_authn": {
            "providers": {
                "idp": {"issuer": "https://idp/realms/ai", "remote_jwks": remote},
                "z-local": {"local_jwks": {"inline_string": JWKS}}
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
        }});
        let cfg = FilterConfig::from_json(cfg.to_string().as_bytes(), &|_: &str| None).unwrap();
        Fetcher::new(cfg.jwt_authn.as_ref().unwrap())
    }

    fn ok(body: &str) -> CalloutResponse {
        CalloutResponse {
            status: Some(200),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn path(call: &CalloutRequest) -> &str {
        call.headers
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn the_refetch_window_is_claimed_once_per_interval() {
        use crate::callout::MemoryStore;
        let store = MemoryStore::default();
        crate::shared_cache::prepare_slots(&store, ["w".to_string()]);
        assert_eq!(claim_window(&store, "w", 100), Window::Claimed);
        assert_eq!(claim_window(&store, "w", 129), Window::TakenAt(100));
        assert_eq!(claim_window(&store, "w", 130), Window::Claimed);
        // Not prepared (a VM that loaded late): created by the first claim.
        assert_eq!(claim_window(&store, "late", 5), Window::Claimed);
        assert_eq!(claim_window(&store, "late", 6), Window::TakenAt(5));
    }

    #[test]
    fn of_two_vms_claiming_the_window_at_once_one_wins() {
        // Another VM claims between our read and our write: over a prepared
        // slot (compare-and-swap) and over a missing one (create): a plain
        // write there would let both VMs fetch.
        for prepared in [true, false] {
            let store =
                crate::callout::another_vm_writes(90u64.to_le_bytes().to_vec(), "w", prepared);
            assert_eq!(
                claim_window(&store, "w", 100),
                Window::TakenAt(100),
                "prepared: {prepared}"
            );
            assert_eq!(store.get("w").unwrap(), 90u64.to_le_bytes());
        }
    }

    #[test]
    fn fetches_at_once_then_after_cache_duration() {
        let mut f = fetcher(
            json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}, "cache_duration": "300s"}),
        );
        assert_eq!(f.remote_providers().collect::<Vec<_>>(), [0]);
        let due = f.due(100);
        assert_eq!(due.len(), 1);
        assert_eq!(path(&due[0].1), "/certs");
        assert!(f.due(100).is_empty(), "in flight");
        assert!(matches!(
            f.on_reply(0, &ok(JWKS), 100),
            Fetched::Keys {
                expires_at: 400,
                ..
            }
        ));
        assert!(f.due(399).is_empty());
        assert_eq!(f.due(400).len(), 1);
    }

    #[test]
    fn failures_back_off_and_bad_documents_fail() {
        let mut f = fetcher(json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}}));
        f.due(0);
        assert!(matches!(
            f.on_reply(0, &CalloutResponse::default(), 0),
            Fetched::Failed(_)
        ));
        assert!(f.due(0).is_empty());
        assert_eq!(f.due(1).len(), 1);
        assert!(matches!(
            f.on_reply(0, &ok("{\"keys\": []}"), 1),
            Fetched::Failed(_)
        ));
        assert!(f.due(2).is_empty(), "second failure waits 2 s");
        assert_eq!(f.due(3).len(), 1);
        assert_eq!(f.reply_bytes_wanted(0), 256 * 1024 + 1);
        let big = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "a".repeat(256 * 1024));
        assert!(matches!(f.on_reply(0, &ok(&big), 3), Fetched::Failed(_)));
    }

    #[test]
    fn the_document_cap_is_configurable() {
        let mut f = fetcher(
            json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}, "max_document_bytes": 200}),
        );
        assert_eq!(f.reply_bytes_wanted(0), 201);
        f.due(0);
        assert!(matches!(f.on_reply(0, &ok(JWKS), 0), Fetched::Keys { .. }));
        f.due(600);
        let padded = JWKS.replacen('{', &format!("{{\"pad\": \"{}\", ", "a".repeat(100)), 1);
        let Fetched::Failed(why) = f.on_reply(0, &ok(&padded), 600) else {
            panic!()
        };
        assert!(why.contains("max_document_bytes"), "{why}");
        for bad in [json!(0), json!(17_000_000)] {
            let cfg = json!({"jwt_authn": {
                "providers": {"idp": {"remote_jwks": {"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}, "max_document_bytes": bad}}},
                "rules": [{"match": {"prefix": "/"}}]
            }});
            let err =
                FilterConfig::from_json(cfg.to_string().as_bytes(), &|_: &str| None).unwrap_err();
            assert_eq!(
                err.path,
                "jwt_authn.providers.idp.remote_jwks.max_document_bytes"
            );
        }
    }

    #[test]
    fn discovery_then_jwks_and_issuer_must_match() {
        let mut f = fetcher(
            json!({"http_uri": {"uri": "http://idp/realms/ai/.well-known/openid-configuration", "cluster": "idp"}, "discovery": true}),
        );
        let due = f.due(0);
        assert_eq!(
            path(&due[0].1),
            "/realms/ai/.well-known/openid-configuration"
        );
        let doc = json!({"issuer": "https://idp/realms/ai", "jwks_uri": "https://idp.example:8443/realms/ai/protocol/openid-connect/certs"});
        let Fetched::Next(call) = f.on_reply(0, &ok(&doc.to_string()), 0) else {
            panic!()
        };
        assert_eq!(path(&call), "/realms/ai/protocol/openid-connect/certs");
        assert!(call
            .headers
            .contains(&(":authority".into(), "idp.example:8443".into())));
        assert!(matches!(f.on_reply(0, &ok(JWKS), 0), Fetched::Keys { .. }));

        let mut f = fetcher(
            json!({"http_uri": {"uri": "http://idp/d", "cluster": "idp"}, "discovery": true}),
        );
        f.due(0);
        let evil = json!({"issuer": "https://evil", "jwks_uri": "http://evil/certs"});
        assert!(matches!(
            f.on_reply(0, &ok(&evil.to_string()), 0),
            Fetched::Failed(_)
        ));
    }

    #[test]
    fn unknown_kid_refetches_at_once_single_flight_and_rate_limited() {
        let mut f = fetcher(json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}}));
        f.due(0);
        assert_eq!(f.refresh_now(0, 0, || Window::Claimed), Refresh::InFlight);
        f.on_reply(0, &ok(JWKS), 0);
        let Refresh::Send(call) = f.refresh_now(0, 10, || Window::Claimed) else {
            panic!("the first unknown kid fetches at once")
        };
        assert_eq!(path(&call), "/certs");
        assert!(f.due(10).is_empty(), "one fetch in flight");
        assert_eq!(f.refresh_now(0, 10, || unreachable!()), Refresh::InFlight);
        f.on_reply(0, &ok(JWKS), 11);
        assert_eq!(f.refresh_now(0, 20, || unreachable!()), Refresh::Limited);
        assert_eq!(f.refresh_now(0, 39, || unreachable!()), Refresh::Limited);
        assert!(matches!(
            f.refresh_now(0, 40, || Window::Claimed),
            Refresh::Send(_)
        ));
        f.on_reply(0, &ok(JWKS), 40);
        // Another VM took the window at 70: wait while its fetch may run
        // (5 s timeout, and a second), then answer at once until 100.
        for now in [70, 76] {
            assert_eq!(
                f.refresh_now(0, now, || Window::TakenAt(70)),
                Refresh::Elsewhere
            );
        }
        assert_eq!(
            f.refresh_now(0, 77, || Window::TakenAt(70)),
            Refresh::Limited
        );
        // Or until its keys are here.
        let mut g = fetcher(json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}}));
        assert_eq!(
            g.refresh_now(0, 70, || Window::TakenAt(70)),
            Refresh::Elsewhere
        );
        g.fetched_elsewhere(0, 70 + 600);
        assert_eq!(
            g.refresh_now(0, 71, || Window::TakenAt(70)),
            Refresh::Limited
        );
        assert_eq!(f.refresh_now(0, 99, || unreachable!()), Refresh::Limited);
        assert_eq!(f.refresh_now(0, 100, || Window::Unknown), Refresh::Limited);
        assert_eq!(f.refresh_now(0, 129, || unreachable!()), Refresh::Limited);
        assert_eq!(
            f.refresh_now(1, 130, || Window::Claimed),
            Refresh::Limited,
            "local keys"
        );
    }

    #[test]
    fn keys_fetched_by_another_vm_defer_ours() {
        let mut f = fetcher(json!({"http_uri": {"uri": "http://idp/certs", "cluster": "idp"}}));
        f.fetched_elsewhere(0, 500);
        assert!(f.due(499).is_empty());
        assert_eq!(f.due(500).len(), 1);
    }

    #[test]
    fn shared_form_round_trips() {
        let bytes = encode_shared(42, JWKS);
        assert_eq!(decode_shared(&bytes), Some((42, JWKS)));
        assert_eq!(decode_shared(b"short"), None);
    }
}
