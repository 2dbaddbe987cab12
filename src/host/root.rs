//! Root context: compiles the configuration once per VM and hands each
//! request a handle to it.

use super::hostcalls;
use super::http::HttpFilter;
use super::keys::{RemoteJwksHost, TICK};
use super::stream::{Pending, Site};
use super::tokens::TokensHost;
use crate::config::FilterConfig;
use crate::credentials::oauth2::TokenFetcher;
use crate::flow::WorkerState;
use crate::jwks::Fetcher;
use crate::stats::{self, Counter};
use crate::vocab::ProcessEnvironment;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
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

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: None,
        }
    }
}

impl Context for Root {
    /// Replies to the JWKS fetches this root context sent.
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            // JWKS fetches, or passthrough checks of requests this root
            // context released after they waited for keys.
            if !shared.jwks_reply(token_id, body_size) && !shared.token_reply(token_id, body_size) {
                shared.callout_reply(token_id, body_size, Site::Root);
            }
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        proxy_wasm::set_log_level(hostcalls::host_log_level());
        let bytes = match hostcalls::plugin_configuration() {
            Ok(b) => b,
            Err(status) => {
                log::error!("ai_auth: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let config = match FilterConfig::from_json(&bytes, &ProcessEnvironment) {
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
        let fetcher = config
            .jwt_authn
            .as_ref()
            .map(Fetcher::new)
            .unwrap_or_default();
        let token_fetcher = config
            .upstream_credentials
            .as_ref()
            .map(|c| TokenFetcher::new(c.oauth2_backends()))
            .unwrap_or_default();
        log::info!(
            "ai_auth: configuration loaded (root context {})",
            self.context_id
        );
        self.shared = Some(Rc::new(Shared {
            config,
            state,
            counters,
            pending: RefCell::new(HashMap::new()),
            callouts: RefCell::new(HashMap::new()),
            response_headers: RefCell::new(HashMap::new()),
            jwks: RemoteJwksHost::new(fetcher),
            tokens: TokensHost::new(token_fetcher),
        }));
        if self
            .shared
            .as_ref()
            .is_some_and(|s| s.has_remote_jwks() || s.has_upstream_tokens())
        {
            if let Err(status) = hostcalls::set_tick_period(TICK) {
                log::error!("ai_auth: cannot start the JWKS timer: {status:?}");
                return false;
            }
        }
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.as_ref().map(Rc::clone);
        Some(Box::new(HttpFilter::new(context_id, shared)))
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.jwks_tick();
            shared.tokens_tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
