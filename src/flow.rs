//! The per-request pipeline: JWT, then passthrough auth, then upstream
//! credentials. Plain data in (config, request snapshot, clock, worker
//! state), plain data out ([`Decision`]): the host performs it.

use crate::config::FilterConfig;
use crate::credentials::{CredentialOutcome, BACKEND_PROPERTY};
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
    /// One line for the debug log: reasons and names, never a token or a secret.
    pub log: String,
    pub identities: Vec<Identity>,
    /// Values for Envoy's filter state (access logs read them).
    pub properties: Vec<(&'static str, String)>,
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

impl Decision {
    fn reply(mut self, reply: LocalReply) -> Decision {
        self.step = Step::Reply(reply);
        self
    }
}

/// Runs the stages on the request headers. `req` is updated as each stage
/// edits it, so a later stage sees what the upstream will see.
pub fn on_request_headers(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    mut req: RequestView,
    now: u64,
) -> Decision {
    let mut decision = Decision {
        step: Step::Continue(Vec::new()),
        counters: Vec::new(),
        log: String::new(),
        identities: Vec::new(),
        properties: Vec::new(),
    };
    let mut ops = Vec::new();
    let mut log = Vec::new();
    if let Some(jwt_cfg) = &cfg.jwt_authn {
        let outcome = jwt::authenticate(jwt_cfg, &req, now, &mut state.jwt_cache);
        decision.counters.extend(outcome.counters);
        let rule = outcome.rule.map_or("none".to_string(), |r| r.to_string());
        match outcome.result {
            Err(e) => {
                decision.log = format!("jwt_authn: denied rule={rule} reason={}", e.code());
                let reply = e.denial().to_reply(&jwt::realm(jwt_cfg, &req));
                return decision.reply(reply);
            }
            Ok(identities) => {
                let who: Vec<&str> = identities.iter().map(|i| i.provider.as_str()).collect();
                log.push(format!(
                    "jwt_authn: allowed rule={rule} providers=[{}]",
                    who.join(",")
                ));
                decision.identities = identities;
                req.apply(&outcome.header_ops);
                ops.extend(outcome.header_ops);
            }
        }
    }
    if let Some(creds) = &cfg.upstream_credentials {
        match creds.plan(&req, &decision.identities) {
            CredentialOutcome::Inject {
                ops: cred_ops,
                backend,
            } => {
                decision.counters.push(Counter::CredentialsInjected);
                log.push(format!("upstream_credentials: backend={backend}"));
                decision.properties.push((BACKEND_PROPERTY, backend));
                ops.extend(cred_ops);
            }
            CredentialOutcome::PassThrough => {
                decision.counters.push(Counter::CredentialsPassedThrough);
                log.push("upstream_credentials: pass_through".into());
            }
            CredentialOutcome::Deny(reply) => {
                decision.counters.push(Counter::CredentialsDenied);
                log.push(format!("upstream_credentials: denied ({})", reply.details));
                decision.log = log.join("; ");
                return decision.reply(reply);
            }
        }
    }
    decision.log = log.join("; ");
    decision.step = Step::Continue(ops);
    decision
}
