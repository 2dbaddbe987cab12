//! Upstream OAuth 2 tokens in the host: each VM's root context sends the
//! token requests `TokenFetcher` asks for, publishes a fresh token in shared
//! data and loads whatever any VM published, so every worker VM injects the
//! same token and the token endpoint sees about one request per refresh.

use super::hostcalls;
use super::root::Shared;
use super::stream::NO_CLOCK;
use crate::callout::CalloutResponse;
use crate::credentials::oauth2::{
    decode_shared, encode_shared, TokenFetched, TokenFetcher, MAX_RESPONSE_BYTES,
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

fn shared_key(namespace: &str, backend: usize) -> String {
    format!("ai_auth.token.{namespace}.{backend}")
}

impl Shared {
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
            match hostcalls::dispatch(&request) {
                Ok(token) => {
                    self.tokens.calls.borrow_mut().insert(token, index);
                }
                Err(status) => {
                    log::warn!("ai_auth: token request for backend {index}: cannot call cluster {}: {status:?}", request.cluster);
                    self.count(Counter::TokenFetchFailed);
                    self.tokens
                        .fetcher
                        .borrow_mut()
                        .on_dispatch_failed(index, now);
                }
            }
        }
    }

    fn install_token(&self, index: usize, token: crate::credentials::oauth2::UpstreamToken) {
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
            self.count(Counter::TokenFetchFailed);
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
            TokenFetched::Token { token, refresh_at } => {
                self.count(Counter::TokenFetchSuccess);
                let key = shared_key(&self.config.namespace, index);
                hostcalls::set_shared(&key, &encode_shared(&token, refresh_at));
                if let Ok((_, Some(cas))) = hostcalls::shared_data_with_cas(&key) {
                    self.tokens.seen.borrow_mut().insert(index, cas);
                }
                log::info!("ai_auth: upstream token for backend {index} fetched");
                self.install_token(index, token);
            }
            TokenFetched::Failed(reason) => {
                self.count(Counter::TokenFetchFailed);
                log::warn!("ai_auth: upstream token for backend {index} not fetched: {reason}");
            }
        }
        true
    }
}
