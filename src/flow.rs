//! The per-request pipeline: JWT, then passthrough auth, then upstream
//! credentials. Plain data in (config, request snapshot, clock, worker
//! state), plain data out ([`Decision`]): the host performs it.

use crate::config::FilterConfig;
use crate::jwt::{self, cache::VerifiedCache, Identity};
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use crate::stats::Counter;

/// What the host does next with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward upstream after these header edits, in order.
    Continue(Vec<HeaderOp>),
    /// Answer the client directly.
    Reply(LocalReply),
}

#[derive(Debug)]
pub struct Decision {
    pub step: Step,
    pub counters: Vec<Counter>,
    /// One line for the debug log: the reason, never a token or a secret.
    pub log: String,
    pub identities: Vec<Identity>,
}

/// State a worker VM keeps between requests.
#[derive(Debug)]
pub struct WorkerState {
    pub jwt_cache: VerifiedCache,
}

impl WorkerState {
    pub fn new(cfg: &FilterConfig) -> Self {
        let (size, max_token) = cfg
            .jwt_authn
            .as_ref()
            .map_or((0, 0), |j| (j.cache_size, j.max_cached_token_size));
        WorkerState {
            jwt_cache: VerifiedCache::new(size, max_token),
        }
    }
}

pub fn on_request_headers(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    req: &RequestView,
    now: u64,
) -> Decision {
    let mut decision = Decision {
        step: Step::Continue(Vec::new()),
        counters: Vec::new(),
        log: String::new(),
        identities: Vec::new(),
    };
    let mut ops = Vec::new();
    if let Some(jwt_cfg) = &cfg.jwt_authn {
        let outcome = jwt::authenticate(jwt_cfg, req, now, &mut state.jwt_cache);
        decision.counters.extend(outcome.counters);
        let rule = outcome.rule.map_or("none".to_string(), |r| r.to_string());
        match outcome.result {
            Err(e) => {
                decision.log = format!("jwt_authn: denied rule={rule} reason={}", e.code());
                decision.step = Step::Reply(e.denial().to_reply(&jwt::realm(jwt_cfg, req)));
                return decision;
            }
            Ok(identities) => {
                let who: Vec<&str> = identities.iter().map(|i| i.provider.as_str()).collect();
                decision.log = format!(
                    "jwt_authn: allowed rule={rule} providers=[{}]",
                    who.join(",")
                );
                decision.identities = identities;
                ops.extend(outcome.header_ops);
            }
        }
    }
    decision.step = Step::Continue(ops);
    decision
}
