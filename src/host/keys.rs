//! Remote JWKS in the host: the root context of each VM sends the fetches
//! `jwks::Fetcher` asks for, publishes a fetched JWKS in shared data, and
//! loads whatever any VM published, so every worker VM uses the same keys.

use super::hostcalls::{self, SharedData};
use super::root::Shared;
use super::stream::{KeysEvent, NO_CLOCK};
use crate::callout::CalloutRequest;
use crate::callout::CalloutResponse;
use crate::jwks::{claim_window, decode_shared, encode_shared, Fetched, Fetcher, Refresh};
use crate::jwt::keys::{parse_jwks, SkippedKey};
use crate::shared_cache::{prepare_slots, put_once};
use crate::stats::Counter;
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often each VM's root looks for due fetches and published keys.
pub const TICK: Duration = Duration::from_millis(500);

/// The root context's remote-JWKS state.
#[derive(Default)]
pub struct RemoteJwksHost {
    pub fetcher: RefCell<Fetcher>,
    /// Callout token to the provider it fetches for.
    calls: RefCell<HashMap<u32, usize>>,
    /// The shared-data version last loaded, per provider.
    seen: RefCell<HashMap<usize, u32>>,
    /// Providers a request that went on asked to refresh (unknown `kid`).
    pub refresh_wanted: RefCell<Vec<usize>>,
    generation: Cell<u64>,
}

impl RemoteJwksHost {
    pub fn new(fetcher: Fetcher) -> Self {
        RemoteJwksHost {
            fetcher: RefCell::new(fetcher),
            ..Default::default()
        }
    }
}

fn shared_key(namespace: &str, provider: usize) -> String {
    format!("ai_auth.jwks.{namespace}.{provider}")
}

/// When a provider was last refetched for an unknown `kid` by any VM of the
/// plugin (u64 LE seconds): the rate limit's window is plugin-wide.
fn refetch_key(namespace: &str, provider: usize) -> String {
    format!("ai_auth.jwks_refetch.{namespace}.{provider}")
}

/// The digest of the skipped entries last reported for a provider.
fn skipped_key(namespace: &str, provider: usize) -> String {
    format!("ai_auth.jwks_skipped.{namespace}.{provider}")
}

impl Shared {
    pub fn has_remote_jwks(&self) -> bool {
        !self.jwks.fetcher.borrow().is_empty()
    }

    /// Every tick: load keys another VM published, release requests waiting
    /// for keys, then send due fetches.
    pub fn jwks_tick(&self) {
        let Some(now) = hostcalls::now_secs() else {
            log::error!("ai_auth: {NO_CLOCK}; no jwks fetch this tick");
            return;
        };
        let loaded = self.load_published();
        self.release_waiting_for_keys(KeysEvent::Tick { loaded: &loaded });
        let wanted: Vec<usize> = self.jwks.refresh_wanted.borrow_mut().drain(..).collect();
        for index in wanted {
            let _ = self.refetch(index, now);
        }
        let due = self.jwks.fetcher.borrow_mut().due(now);
        for (index, request) in due {
            self.send_fetch(index, &request, now);
        }
    }

    /// Sends a fetch `Fetcher` put in flight; returns whether it went.
    fn send_fetch(&self, index: usize, request: &CalloutRequest, now: u64) -> bool {
        match hostcalls::dispatch(request) {
            Ok(token) => {
                self.jwks.calls.borrow_mut().insert(token, index);
                true
            }
            Err(status) => {
                log::warn!(
                    "ai_auth: jwks fetch for provider {index}: cannot call cluster {}: {status:?}",
                    request.cluster
                );
                self.count(Counter::JwksFetchFailed);
                self.jwks
                    .fetcher
                    .borrow_mut()
                    .on_dispatch_failed(index, now);
                false
            }
        }
    }

    /// A token's `kid` is unknown to provider `index`: refetch at once,
    /// unless a fetch is in flight or the window is closed. Returns whether
    /// a fetch is in flight now (worth waiting for).
    fn refetch(&self, index: usize, now: u64) -> bool {
        let namespace = &self.config.namespace;
        let outcome = self.jwks.fetcher.borrow_mut().refresh_now(index, now, || {
            claim_window(&SharedData, &refetch_key(namespace, index), now)
        });
        match outcome {
            Refresh::InFlight | Refresh::Elsewhere => true,
            Refresh::Send(request) => {
                self.count(Counter::JwksRefetchUnknownKid);
                self.send_fetch(index, &request, now)
            }
            Refresh::Limited => false,
        }
    }

    /// Refetches these providers for a request held meanwhile; returns
    /// whether any fetch is in flight (else the request is answered now).
    pub fn refetch_keys(&self, providers: &[usize]) -> bool {
        let Some(now) = hostcalls::now_secs() else {
            return false;
        };
        let mut any = false;
        for index in providers {
            any |= self.refetch(*index, now);
        }
        any
    }

    /// Returns the providers whose keys were loaded.
    fn load_published(&self) -> Vec<usize> {
        let mut any = Vec::new();
        let providers: Vec<usize> = self.jwks.fetcher.borrow().remote_providers().collect();
        for index in providers {
            let Ok((Some(bytes), Some(cas))) =
                hostcalls::shared_data_with_cas(&shared_key(&self.config.namespace, index))
            else {
                continue;
            };
            if self.jwks.seen.borrow().get(&index) == Some(&cas) {
                continue;
            }
            self.jwks.seen.borrow_mut().insert(index, cas);
            if let Some((expires_at, text)) = decode_shared(&bytes) {
                if self.load(index, text).is_some() {
                    any.push(index);
                    self.jwks
                        .fetcher
                        .borrow_mut()
                        .fetched_elsewhere(index, expires_at);
                }
            }
        }
        any
    }

    /// Parses and installs keys for this VM's requests; returns the
    /// entries skipped, or `None` when nothing was installed.
    fn load(&self, index: usize, text: &str) -> Option<Vec<SkippedKey>> {
        let loaded = parse_jwks(text).ok()?;
        let generation = self.jwks.generation.get().wrapping_add(1);
        self.jwks.generation.set(generation);
        let keys = Arc::new(loaded.keys.with_generation(generation));
        let mut state = self.state.try_borrow_mut().ok()?;
        if let Some(slot) = state.remote_keys.get_mut(index) {
            *slot = Some(keys);
        }
        Some(loaded.skipped)
    }

    /// Creates the slots where skipped keys are reported and the refetch
    /// window is claimed, before any worker VM runs (`on_configure` runs on
    /// the main thread first), so every later write is a compare-and-swap;
    /// never over a slot another VM created.
    pub fn prepare_skip_reports(&self) {
        let Some(jwt) = &self.config.jwt_authn else {
            return;
        };
        let namespace = &self.config.namespace;
        prepare_slots(
            &SharedData,
            (0..jwt.providers.len())
                .flat_map(|index| [skipped_key(namespace, index), refetch_key(namespace, index)]),
        );
    }

    /// Logs each entry a provider's JWKS skipped (one line, its `kid` and
    /// the reason, escaped) and counts it, once per distinct set of skipped
    /// entries across every VM of the plugin: whichever VM first swaps in
    /// the set's digest reports it.
    pub fn report_skipped_keys(&self, index: usize, skipped: &[SkippedKey]) {
        let mut digest = Sha256::new();
        for s in skipped {
            digest.update(s.to_string().as_bytes());
            digest.update(b"\n");
        }
        let digest = digest.finalize();
        let key = skipped_key(&self.config.namespace, index);
        if !put_once(&SharedData, &key, &digest) {
            return;
        }
        let provider = self
            .config
            .jwt_authn
            .as_ref()
            .and_then(|j| j.providers.get(index))
            .map_or("?", |p| p.name.as_str());
        for s in skipped {
            log::warn!("ai_auth: jwks of provider {provider}: {s}; key skipped");
            self.count(Counter::JwksKeySkipped);
        }
    }

    /// A reply to a JWKS or discovery fetch; returns false if the token is not ours.
    pub fn jwks_reply(&self, token: u32, body_size: usize) -> bool {
        let Some(index) = self.jwks.calls.borrow_mut().remove(&token) else {
            return false;
        };
        let reply = CalloutResponse::from_headers(
            hostcalls::callout_response_headers(),
            hostcalls::callout_response_body(
                body_size.min(self.jwks.fetcher.borrow().reply_bytes_wanted(index)),
            ),
        );
        let Some(now) = hostcalls::now_secs() else {
            // Without a time the keys' lifetime is unknown: a failed fetch,
            // retried as soon as the clock is back.
            log::error!("ai_auth: {NO_CLOCK}; jwks reply for provider {index} dropped");
            self.count(Counter::JwksFetchFailed);
            self.jwks.fetcher.borrow_mut().on_dispatch_failed(index, 0);
            return true;
        };
        let outcome = self.jwks.fetcher.borrow_mut().on_reply(index, &reply, now);
        match outcome {
            Fetched::Keys { jwks, expires_at } => {
                self.count(Counter::JwksFetchSuccess);
                let key = shared_key(&self.config.namespace, index);
                hostcalls::set_shared(&key, &encode_shared(expires_at, &jwks));
                if let Ok((_, Some(cas))) = hostcalls::shared_data_with_cas(&key) {
                    self.jwks.seen.borrow_mut().insert(index, cas);
                }
                if let Some(skipped) = self.load(index, &jwks) {
                    self.report_skipped_keys(index, &skipped);
                }
                log::info!("ai_auth: jwks for provider {index} fetched");
                self.release_waiting_for_keys(KeysEvent::Loaded(index));
            }
            Fetched::Next(request) => {
                if !self.send_fetch(index, &request, now) {
                    self.release_waiting_for_keys(KeysEvent::RefetchFailed(index));
                }
            }
            Fetched::Failed(reason) => {
                self.count(Counter::JwksFetchFailed);
                log::warn!("ai_auth: jwks fetch for provider {index} failed: {reason}; keeping the keys held");
                self.release_waiting_for_keys(KeysEvent::RefetchFailed(index));
            }
        }
        true
    }
}
