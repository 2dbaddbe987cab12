//! Fetched upstream credentials in the host (OAuth 2 tokens, AWS STS
//! temporary credentials): each VM's root context sends the requests the
//! `CredentialFetcher` asks for, publishes a fresh credential in shared data
//! and loads whatever any VM published, so every worker VM uses the same
//! credential and the endpoint sees about one request per refresh.

use super::hostcalls::{self, SharedData};
use super::root::Shared;
use super::stream::NO_CLOCK;
use crate::callout::{CalloutResponse, SharedStore};
use crate::credentials::fetch::{
    decode_shared, encode_shared, CredentialFetcher as TokenFetcher, Fetched, Lease,
    MAX_RESPONSE_BYTES,
};
use crate::stats::Counter;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct TokensHost {
    fetcher: RefCell<TokenFetcher>,
    /// Callout token to the backend it fetches for.
    calls: RefCell<HashMap<u32, usize>>,
    /// The shared-data version last loaded, per backend.
    seen: RefCell<HashMap<usize, u32>>,
}

impl TokensHost {
    pub fn new(fetcher: TokenFetcher) -> Self {
        TokensHost {
            fetcher: RefCell::new(fetcher),
            ..Default::default()
        }
    }
}

/// Shared data saying until when no VM starts a fetch for the backend
/// (u64 LE): one VM claims it with compare-and-swap before fetching, so an
/// Envoy with several workers sends one request per refresh, not one per VM.
fn claim_key(namespace: &str, backend: usize) -> String {
    format!("ai_auth.fetch_claim.{namespace}.{backend}")
}

fn shared_key(namespace: &str, backend: usize) -> String {
    format!("ai_auth.token.{namespace}.{backend}")
}

impl Shared {
    /// `token_fetch_*` for OAuth 2 tokens, `aws_credentials_fetch_*` for STS.
    fn count_fetch(&self, index: usize, success: bool) {
        let aws = self.tokens.fetcher.borrow().is_aws(index);
        self.count(match (aws, success) {
            (false, true) => Counter::TokenFetchSuccess,
            (false, false) => Counter::TokenFetchFailed,
            (true, true) => Counter::AwsCredentialsFetchSuccess,
            (true, false) => Counter::AwsCredentialsFetchFailed,
        });
    }

    /// Creates the claim keys at load: a key must exist before it is
    /// written under compare-and-swap (Envoy takes CAS 0 as "no check", and
    /// creates a missing key whatever CAS is given).
    pub fn prepare_fetch_claims(&self) {
        let backends: Vec<usize> = self.tokens.fetcher.borrow().backends().collect();
        for index in backends {
            // Never over a claim another VM created and took meanwhile.
            SharedData.create(
                &claim_key(&self.config.namespace, index),
                &0u64.to_le_bytes(),
            );
        }
    }

    /// `Ok` when this VM may fetch for `index` now; `Err(until)` when
    /// another VM claimed the fetch (or backs off) until then.
    fn claim_fetch(&self, index: usize, now: u64, timeout_secs: u64) -> Result<(), u64> {
        let key = claim_key(&self.config.namespace, index);
        let (value, cas) = match hostcalls::shared_data_with_cas(&key) {
            Ok((value, Some(cas))) if cas != 0 => (value, cas),
            // No usable version (never written under CAS 0: that would
            // always win): fetch rather than wait, as before claims.
            _ => return Ok(()),
        };
        let until = value
            .and_then(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?)))
            .unwrap_or(0);
        if now < until {
            return Err(until);
        }
        let mine = now.saturating_add(timeout_secs).saturating_add(2);
        if hostcalls::set_shared_if(&key, &mine.to_le_bytes(), Some(cas)) {
            Ok(())
        } else {
            Err(now.saturating_add(1))
        }
    }

    /// After this VM's fetch: nobody fetches before `until` (the refresh
    /// time, or the back-off after a failure).
    fn release_claim(&self, index: usize, until: u64) {
        hostcalls::set_shared(
            &claim_key(&self.config.namespace, index),
            &until.to_le_bytes(),
        );
    }

    pub fn has_upstream_tokens(&self) -> bool {
        !self.tokens.fetcher.borrow().is_empty()
    }

    /// Every tick: load tokens another VM published, then send due requests.
    pub fn tokens_tick(&self) {
        let Some(now) = hostcalls::now_secs() else {
            log::error!("ai_auth: {NO_CLOCK}; no token request this tick");
            return;
        };
        let backends: Vec<usize> = self.tokens.fetcher.borrow().backends().collect();
        for index in backends {
            let key = shared_key(&self.config.namespace, index);
            let Ok((Some(bytes), Some(cas))) = hostcalls::shared_data_with_cas(&key) else {
                continue;
            };
            if self.tokens.seen.borrow().get(&index) == Some(&cas) {
                continue;
            }
            self.tokens.seen.borrow_mut().insert(index, cas);
            if let Some((token, refresh_at)) = decode_shared(&bytes) {
                self.install_token(index, token);
                self.tokens
                    .fetcher
                    .borrow_mut()
                    .fetched_elsewhere(index, refresh_at);
            }
        }
        let due = self.tokens.fetcher.borrow_mut().due(now);
        for (index, request) in due {
            if let Err(until) = self.claim_fetch(index, now, request.timeout.as_secs()) {
                self.tokens.fetcher.borrow_mut().postpone(index, until);
                continue;
            }
            match hostcalls::dispatch(&request) {
                Ok(token) => {
                    self.tokens.calls.borrow_mut().insert(token, index);
                }
                Err(status) => {
                    log::warn!("ai_auth: token request for backend {index}: cannot call cluster {}: {status:?}", request.cluster);
                    self.count_fetch(index, false);
                    self.tokens
                        .fetcher
                        .borrow_mut()
                        .on_dispatch_failed(index, now);
                    let retry_at = self.tokens.fetcher.borrow().next_attempt(index);
                    self.release_claim(index, retry_at.unwrap_or(now));
                }
            }
        }
    }

    fn install_token(&self, index: usize, token: Lease) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            if let Some(slot) = state.upstream_tokens.get_mut(index) {
                *slot = Some(Arc::new(token));
            }
        }
    }

    /// A reply to a token request; returns false if the callout is not one.
    pub fn token_reply(&self, callout: u32, body_size: usize) -> bool {
        let Some(index) = self.tokens.calls.borrow_mut().remove(&callout) else {
            return false;
        };
        let reply = CalloutResponse::from_headers(
            hostcalls::callout_response_headers(),
            hostcalls::callout_response_body(body_size.min(MAX_RESPONSE_BYTES + 1)),
        );
        let Some(now) = hostcalls::now_secs() else {
            // A token whose expiry cannot be placed in time is never used.
            log::error!("ai_auth: {NO_CLOCK}; token reply for backend {index} dropped");
            self.count_fetch(index, false);
            self.tokens
                .fetcher
                .borrow_mut()
                .on_dispatch_failed(index, 0);
            return true;
        };
        let outcome = self
            .tokens
            .fetcher
            .borrow_mut()
            .on_reply(index, &reply, now);
        match outcome {
            Fetched::Lease {
                lease: token,
                refresh_at,
            } => {
                self.count_fetch(index, true);
                self.release_claim(index, refresh_at);
                let key = shared_key(&self.config.namespace, index);
                hostcalls::set_shared(&key, &encode_shared(&token, refresh_at));
                if let Ok((_, Some(cas))) = hostcalls::shared_data_with_cas(&key) {
                    self.tokens.seen.borrow_mut().insert(index, cas);
                }
                log::info!("ai_auth: upstream credential for backend {index} fetched");
                self.install_token(index, token);
            }
            Fetched::Failed(reason) => {
                self.count_fetch(index, false);
                let retry_at = self.tokens.fetcher.borrow().next_attempt(index);
                self.release_claim(index, retry_at.unwrap_or(now));
                log::warn!(
                    "ai_auth: upstream credential for backend {index} not fetched: {reason}"
                );
            }
        }
        true
    }
}
