//! Root context: compiles the configuration once per VM and hands each
//! request a handle to it.

use super::hostcalls;
use super::keys::{RemoteJwksHost, TICK};
use super::logger;
use super::stream::{Pending, Site};
use super::tokens::TokensHost;
use crate::callout::GrpcReply;
use crate::config::FilterConfig;
use crate::credentials::fetch::CredentialFetcher;
use crate::flow::{self, WorkerState};
use crate::jwks::Fetcher;
use crate::stats::{self, Counter};
use crate::vocab::ProcessEnvironment;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// What every request of this VM shares.
pub struct Shared {
    pub config: FilterConfig,
    pub state: RefCell<WorkerState>,
    /// Metric ids, indexed by `Counter::index`.
    pub counters: Vec<Option<u32>>,
    /// Streams waiting for their body or a callout, by context id.
    pub pending: RefCell<HashMap<u32, Pending>>,
    /// Callout token to the stream that waits for it.
    pub callouts: RefCell<HashMap<u32, u32>>,
    /// gRPC call token to the stream that waits for it.
    pub grpc_calls: RefCell<HashMap<u32, u32>>,
    /// Headers to add to a stream's response, by context id.
    pub response_headers: RefCell<HashMap<u32, Vec<(String, String)>>>,
    /// Remote JWKS fetching and sharing.
    pub jwks: RemoteJwksHost,
    /// Upstream OAuth 2 token fetching and sharing.
    pub tokens: TokensHost,
}

impl Shared {
    pub fn count(&self, counter: Counter) {
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            hostcalls::increment(*id);
        }
    }
}

/// A root context: one per plugin per VM. Its callbacks take `&self`
/// (the host may call back while one runs); the configuration is set once.
pub struct Root {
    context_id: u32,
    shared: RefCell<Option<Rc<Shared>>>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: RefCell::new(None),
        }
    }

    /// The compiled configuration, once `on_configure` accepted one.
    pub fn shared(&self) -> Option<Rc<Shared>> {
        self.shared.try_borrow().ok().and_then(|s| s.clone())
    }

    /// Every callout reply: Envoy delivers it to the root context, whoever
    /// sent it (JWKS and token fetches, passthrough checks of streams).
    pub fn on_http_call_response(
        &self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = self.shared() {
            if !shared.jwks_reply(token_id, body_size) && !shared.token_reply(token_id, body_size) {
                shared.callout_reply(token_id, body_size, Site::Root);
            }
        }
    }

    // gRPC replies: the passthrough's checks. A unary call ends with one
    // message (OK) or a close with its status, never both.
    pub fn on_grpc_receive_initial_metadata(&self, token: u32, _num_elements: usize) {
        log::trace!("ai_auth: gRPC metadata for call {token}");
    }

    pub fn on_grpc_receive(&self, token: u32, message_size: usize) {
        let Some(shared) = self.shared() else { return };
        let read = || {
            // A runaway reply is an error however it ends: read one byte
            // past the cap so the stage can tell.
            let cap = crate::ext_authz::grpc::MAX_REPLY_BYTES.saturating_add(1);
            GrpcReply::Message(hostcalls::grpc_reply_message(message_size.min(cap)))
        };
        if !shared.grpc_reply(token, read, Site::Root) {
            log::debug!("ai_auth: gRPC message for unknown call {token}");
        }
    }

    pub fn on_grpc_receive_trailing_metadata(&self, token: u32, _num_elements: usize) {
        log::trace!("ai_auth: gRPC trailers for call {token}");
    }

    pub fn on_grpc_close(&self, token: u32, status_code: u32) {
        let Some(shared) = self.shared() else { return };
        let read = || GrpcReply::Failed {
            code: status_code,
            message: hostcalls::grpc_status_message(),
        };
        if !shared.grpc_reply(token, read, Site::Root) {
            log::debug!("ai_auth: gRPC close for unknown call {token}");
        }
    }

    pub fn on_configure(&self) -> bool {
        logger::follow_host_level();
        let bytes = match hostcalls::plugin_configuration() {
            Ok(b) => b,
            Err(status) => {
                log::error!("ai_auth: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let mut config = match FilterConfig::from_json(&bytes, &ProcessEnvironment) {
            Ok(c) => c,
            Err(e) => {
                // One line naming the field and the reason; Envoy refuses the filter.
                log::error!("ai_auth: {e}");
                return false;
            }
        };
        let counters = Counter::ALL
            .iter()
            .map(|c| hostcalls::define_counter(&format!("{}.{}", stats::PREFIX, c.name())).ok())
            .collect();
        let state = RefCell::new(WorkerState::new(&config));
        flow::prepare_shared_data(&mut config, &hostcalls::SharedData);
        let fetcher = config
            .jwt_authn
            .as_ref()
            .map(Fetcher::new)
            .unwrap_or_default();
        let token_fetcher = config
            .upstream_credentials
            .as_ref()
            .map(|c| CredentialFetcher::new(c.fetched_backends()))
            .unwrap_or_default();
        log::info!(
            "ai_auth: configuration loaded (root context {})",
            self.context_id
        );
        let shared = Rc::new(Shared {
            config,
            state,
            counters,
            pending: RefCell::new(HashMap::new()),
            callouts: RefCell::new(HashMap::new()),
            grpc_calls: RefCell::new(HashMap::new()),
            response_headers: RefCell::new(HashMap::new()),
            jwks: RemoteJwksHost::new(fetcher),
            tokens: TokensHost::new(token_fetcher),
        });
        shared.prepare_skip_reports();
        shared.prepare_fetch_claims();
        if let Some(jwt) = &shared.config.jwt_authn {
            for (index, provider) in jwt.providers.iter().enumerate() {
                if let Some(jwt) = provider.jwt().filter(|j| !j.skipped_keys.is_empty()) {
                    shared.report_skipped_keys(index, &jwt.skipped_keys);
                }
            }
        }
        if shared.has_remote_jwks() || shared.has_upstream_tokens() {
            if let Err(status) = hostcalls::set_tick_period(TICK) {
                log::error!("ai_auth: cannot start the JWKS timer: {status:?}");
                return false;
            }
        }
        match self.shared.try_borrow_mut() {
            Ok(mut slot) => *slot = Some(shared),
            Err(_) => {
                log::error!("ai_auth: root context busy; configuration not installed");
                return false;
            }
        }
        true
    }

    pub fn on_tick(&self) {
        if let Some(shared) = self.shared() {
            shared.jwks_tick();
            shared.tokens_tick();
        }
    }
}
