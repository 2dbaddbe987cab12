//! The per-request pipeline: JWT, then passthrough auth, then upstream
//! credentials. Plain data in (config, request snapshot, clock, worker
//! state, callout replies), plain data out ([`Decision`]): the host
//! performs it and calls back with what it was asked to fetch.
//!
//! ```text
//! on_request_headers ──► jwt ──► ext_authz? ──► credentials ──► Continue
//!                                   │  ▲
//!        ContinueAndBufferBody ◄────┤  │ on_request_body
//!        Callout               ◄────┘  │ on_callout_response
//! ```
//!
//! Body mode (`with_request_body`, request with a body): Envoy's proxy-wasm
//! host turns a pause on request headers into "stop everything", so a filter
//! that holds the headers never sees the body. In this mode the header edits
//! (JWT, identity headers stripped, upstream credential) are applied at once,
//! the headers are released, and the body is held until the auth service
//! answers. Put Envoy's `envoy.filters.http.buffer` after this filter so the
//! upstream sees nothing before the decision (the shipped configs do).

use crate::callout::{CalloutRequest, CalloutResponse, GrpcCall, GrpcReply, SharedStore};
use crate::config::FilterConfig;
use crate::credentials::aws::PendingSignature;
use crate::credentials::fetch::Lease;
use crate::credentials::{CredentialOutcome, BACKEND_PROPERTY};
use crate::ext_authz::cache::{self as decision_cache, DecisionKey};
use crate::ext_authz::{AuthDecision, Check, ErrorKind, ExtAuthz, Verdict, METADATA_PROPERTY};
use crate::introspection::{Answer, Fresh, Learnt, TokenDigest};
use crate::jwt::error::JwtError;
use crate::jwt::keys::KeySet;
use crate::jwt::{self, cache::VerifiedCache, Identity};
use crate::models::body::{model_field, ModelField};
use crate::models::{ModelCheck, MODEL_PROPERTY};
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use crate::stats::Counter;
use std::sync::Arc;

/// What the host does next with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forward upstream after these header edits, in order.
    Continue(Vec<HeaderOp>),
    /// Answer the client directly.
    Reply(LocalReply),
    /// Apply these edits and release the headers, then hold and buffer the
    /// body, up to `max_bytes`, and call [`on_request_body`] (with
    /// `truncated` when there was more).
    ContinueAndBufferBody {
        ops: Vec<HeaderOp>,
        max_bytes: usize,
    },
    /// Hold the request, send this callout, then call [`on_callout_response`].
    Callout(CalloutRequest),
    /// Hold the request, send this gRPC call, then call [`on_grpc_response`].
    GrpcCall(GrpcCall),
    /// Hold the request until the remote keys it needs are loaded (or a
    /// deadline passes), then call [`on_keys_loaded`]. With the decision's
    /// `jwks_refresh` set, the keys lack the token's `kid`: refetch those
    /// providers now and hold while the fetch runs; if the refetch is
    /// rate-limited, call [`on_keys_loaded`] at once.
    WaitForKeys,
}

#[derive(Debug)]
pub struct Decision {
    pub step: Step,
    pub counters: Vec<Counter>,
    /// One line for the debug log: reasons and names, never a token or a secret.
    pub log: String,
    /// Values for Envoy's filter state (access logs read them).
    pub properties: Vec<(&'static str, String)>,
    /// Headers to add to the client's response once it comes.
    pub response_headers: Vec<(String, String)>,
    /// Remote providers whose keys should be fetched again soon (unknown `kid`).
    pub jwks_refresh: Vec<usize>,
}

/// State a worker VM keeps between requests.
#[derive(Debug)]
pub struct WorkerState {
    pub jwt_cache: VerifiedCache,
    /// Keys of remote providers, as the root context last loaded them.
    pub remote_keys: Vec<Option<Arc<KeySet>>>,
    /// OAuth 2 tokens of upstream backends, as the root context last loaded them.
    pub upstream_tokens: Vec<Option<Arc<Lease>>>,
}

impl WorkerState {
    pub fn new(cfg: &FilterConfig) -> Self {
        let (size, max_token) = cfg
            .jwt_authn
            .as_ref()
            .map_or((0, 0), |j| (j.cache_size, j.max_cached_token_size));
        let providers = cfg.jwt_authn.as_ref().map_or(0, |j| j.providers.len());
        let backends = cfg
            .upstream_credentials
            .as_ref()
            .map_or(0, |c| c.backends.len());
        WorkerState {
            jwt_cache: VerifiedCache::new(size, max_token),
            remote_keys: vec![None; providers],
            upstream_tokens: vec![None; backends],
        }
    }
}

/// A request between two calls into the core (waiting for its body or for
/// the auth service). The host keeps it in the stream's context.
#[derive(Debug)]
pub struct InFlight {
    req: RequestView,
    ops: Vec<HeaderOp>,
    identities: Vec<Identity>,
    log: Vec<String>,
    counters: Vec<Counter>,
    cache_key: Option<DecisionKey>,
    /// The headers went on (body mode): no header edit is possible any more.
    headers_released: bool,
    jwks_refresh: Vec<usize>,
    /// The upstream tokens as they were when the request came, and the clock.
    tokens: Vec<Option<Arc<Lease>>>,
    now: u64,
    /// Filter state for access logs, set with the next decision.
    properties: Vec<(&'static str, String)>,
    /// The `jwt_authn` rule whose `model_check` waits for the body.
    model_rule: Option<usize>,
    /// The passthrough asks its service once the body is there.
    authz_after_body: bool,
    /// Introspection answers and endpoints got for this request; the JWT
    /// stage runs again with them.
    introspected: Learnt,
    /// The introspection call in flight: provider, token digest, and
    /// whether it is the discovery of the endpoint.
    introspecting: Option<(usize, TokenDigest, bool)>,
    /// A SigV4 request waiting for its body to be signed.
    sign_body: Option<Box<PendingSignature>>,
    /// The signature, published with the decision that lets the request go.
    signed: Vec<(&'static str, String)>,
}

impl InFlight {
    /// How many body bytes Envoy had buffered when the body was read.
    pub fn set_body_received(&mut self, bytes: usize) {
        self.req.set_body_received(bytes);
    }

    fn new(req: RequestView, state: &WorkerState, now: u64) -> Self {
        InFlight {
            req,
            ops: Vec::new(),
            identities: Vec::new(),
            log: Vec::new(),
            counters: Vec::new(),
            cache_key: None,
            headers_released: false,
            jwks_refresh: Vec::new(),
            tokens: state.upstream_tokens.clone(),
            now,
            properties: Vec::new(),
            model_rule: None,
            authz_after_body: false,
            introspected: Learnt::default(),
            introspecting: None,
            sign_body: None,
            signed: Vec::new(),
        }
    }

    /// The same request, to run the stages again from the start (nothing
    /// was applied yet: the JWT stage is the first): only what was learnt
    /// about it is kept.
    fn restart(self, state: &WorkerState, now: u64) -> Self {
        let mut next = InFlight::new(self.req, state, now);
        next.introspected = self.introspected;
        // Not handed to the host yet.
        next.counters = self.counters;
        next.log = self.log;
        next
    }

    /// The largest introspection reply body worth reading, when this
    /// request waits for one (one byte over the limit tells "too large").
    pub fn introspection_reply_limit(&self, cfg: &FilterConfig) -> Option<usize> {
        let (provider, _, _) = self.introspecting.as_ref()?;
        let intro = cfg
            .jwt_authn
            .as_ref()?
            .providers
            .get(*provider)?
            .introspection()?;
        Some(intro.introspection.max_response_bytes.saturating_add(1))
    }

    /// Adds to the debug line, only when debug logging is on: formatting
    /// costs measurable time per request in the VM.
    fn note(&mut self, line: impl FnOnce() -> String) {
        if log::max_level() >= log::LevelFilter::Debug {
            self.log.push(line());
        }
    }

    /// The decision to hand to the host. A reply of ours gets its body in
    /// the request's `error_format` here, the one place every stage's
    /// denials pass through.
    fn decision(&mut self, cfg: &FilterConfig, step: Step) -> Decision {
        let step = match step {
            Step::Reply(reply) if reply.error.is_some() => {
                Step::Reply(reply.in_format(cfg.error_format_for(&self.req)))
            }
            other => other,
        };
        if matches!(step, Step::Continue(_)) {
            let signed = std::mem::take(&mut self.signed);
            self.properties.extend(signed);
        }
        Decision {
            step,
            counters: std::mem::take(&mut self.counters),
            log: std::mem::take(&mut self.log).join("; "),
            properties: std::mem::take(&mut self.properties),
            response_headers: Vec::new(),
            jwks_refresh: std::mem::take(&mut self.jwks_refresh),
        }
    }
}

/// Creates the shared-data keys that must exist before requests write
/// them under compare-and-swap (the DPoP replay cache), once per VM at load.
/// The decision cache's random secret is read (or created) here too.
pub fn prepare_shared_data(cfg: &mut FilterConfig, store: &dyn SharedStore) {
    if let Some(jwt_cfg) = &cfg.jwt_authn {
        for cache in jwt_cfg.replay_caches() {
            cache.prepare(store);
        }
    }
    if let Some(authz) = &mut cfg.ext_authz {
        let namespace = authz.cache_namespace.clone();
        if let Some(cache) = authz.decision_cache.as_mut().filter(|c| c.secret.is_none()) {
            cache.secret = decision_cache::shared_secret(&namespace, store);
            if cache.secret.is_none() {
                log::error!(
                    "ai_auth: no random bytes for the decision cache's key; the cache is off"
                );
            }
        }
    }
}

/// Runs the stages on the request headers. The returned [`InFlight`] is
/// `Some` when the step asks the host to fetch something and call back.
pub fn on_request_headers(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    req: RequestView,
    now: u64,
) -> (Decision, Option<InFlight>) {
    let flight = InFlight::new(req, state, now);
    run(cfg, state, store, flight, now, true)
}

/// The remote keys a held request waited for are loaded, or its wait is
/// over: the stages run again, and this time missing keys are a 401.
pub fn on_keys_loaded(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    flight: InFlight,
    now: u64,
) -> (Decision, Option<InFlight>) {
    let flight = flight.restart(state, now);
    run(cfg, state, store, flight, now, false)
}

fn run(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    mut flight: InFlight,
    now: u64,
    may_wait_for_keys: bool,
) -> (Decision, Option<InFlight>) {
    let mut model_rule = None;
    if let Some(jwt_cfg) = &cfg.jwt_authn {
        if let Some(doc) = jwt_cfg.resource_metadata(&flight.req) {
            flight.counters.push(Counter::ResourceMetadataServed);
            flight.note(|| "jwt_authn: protected resource metadata served".into());
            return (flight.decision(cfg, Step::Reply(doc.reply())), None);
        }
        let outcome = jwt::authenticate_with(
            jwt_cfg,
            &flight.req,
            now,
            &mut state.jwt_cache,
            &state.remote_keys,
            store,
            &flight.introspected,
        );
        flight.counters.extend(outcome.counters);
        flight.jwks_refresh = outcome.refresh;
        let rule = || outcome.rule.map_or("none".to_string(), |r| r.to_string());
        match outcome.result {
            // Keys not fetched yet (just after start): hold the request
            // rather than answer 401 to a token that may well be valid.
            Err(JwtError::KeysUnavailable) if may_wait_for_keys => {
                flight.counters.retain(|c| *c != Counter::JwtDenied);
                flight.note(|| "jwt_authn: waiting for the remote keys".into());
                return (flight.decision(cfg, Step::WaitForKeys), Some(flight));
            }
            // An opaque token neither this request nor the cache has an
            // answer for: ask the endpoint, then run the stage again. Each
            // call adds an answer the next run uses, so this ends.
            Err(JwtError::IntrospectionPending) => {
                if let Some(needed) = outcome.introspect {
                    let provider = needed.provider;
                    flight.note(|| format!("jwt_authn: introspecting for provider {provider}"));
                    flight.introspecting = Some((needed.provider, needed.digest, needed.discovery));
                    return (
                        flight.decision(cfg, Step::Callout(needed.request)),
                        Some(flight),
                    );
                }
                let reply = jwt::denial_reply(
                    jwt_cfg,
                    outcome.rule,
                    &JwtError::IntrospectionFailed(503),
                    &flight.req,
                    outcome.scheme,
                );
                return (flight.decision(cfg, Step::Reply(reply)), None);
            }
            // A `kid` the remote keys lack: the IdP may have just rotated.
            // The decision's `jwks_refresh` names the providers to refetch;
            // the host holds the request while that fetch runs (or runs the
            // stages again at once when the refetch is rate-limited).
            Err(JwtError::UnknownKid) if may_wait_for_keys && !flight.jwks_refresh.is_empty() => {
                flight.counters.retain(|c| *c != Counter::JwtDenied);
                flight.note(|| "jwt_authn: unknown kid, waiting for a JWKS refetch".into());
                return (flight.decision(cfg, Step::WaitForKeys), Some(flight));
            }
            Err(e) => {
                flight.note(|| format!("jwt_authn: denied rule={} reason={}", rule(), e.code()));
                let reply =
                    jwt::denial_reply(jwt_cfg, outcome.rule, &e, &flight.req, outcome.scheme);
                return (flight.decision(cfg, Step::Reply(reply)), None);
            }
            Ok(identities) => {
                flight.note(|| {
                    let who: Vec<&str> = identities.iter().map(|i| i.provider.as_str()).collect();
                    format!(
                        "jwt_authn: allowed rule={} providers=[{}]",
                        rule(),
                        who.join(",")
                    )
                });
                if let Some(caller) = identities.iter().find_map(|i| i.caller()) {
                    flight
                        .properties
                        .push((jwt::CALLER_PROPERTY, jwt::loggable(caller)));
                }
                flight.identities = identities;
                flight.req.apply(&outcome.header_ops);
                flight.ops.extend(outcome.header_ops);
                model_rule = outcome.rule.filter(|i| {
                    jwt_cfg
                        .rules
                        .get(*i)
                        .is_some_and(|r| r.model_check.is_some())
                });
            }
        }
    }
    // The passthrough's claim headers: verified or gone, whatever the route.
    if let Some(authz) = &cfg.ext_authz {
        let ops = authz.claim_header_ops(&flight.identities);
        flight.req.apply(&ops);
        flight.ops.extend(ops);
    }
    if let Some(check) = model_rule.and_then(|i| model_check(cfg, i)) {
        if !flight.req.has_body() {
            if let Some(reply) = judge_model(&mut flight, check, None) {
                return (flight.decision(cfg, Step::Reply(reply)), None);
            }
        } else {
            // The model is in the body: release the headers and hold it.
            flight.model_rule = model_rule;
            let authz = cfg.ext_authz.as_ref();
            let authz_max = match authz.filter(|a| a.enabled_for(&flight.req)) {
                Some(a) => a.with_request_body.as_ref().map_or(0, |b| b.max_bytes),
                None => 0,
            };
            return release_headers(cfg, flight, check.max_body_bytes.max(authz_max));
        }
    }
    match &cfg.ext_authz {
        Some(authz) if authz.enabled_for(&flight.req) => match &authz.with_request_body {
            Some(body) if flight.req.has_body() => release_headers(cfg, flight, body.max_bytes),
            Some(_) => ask_auth_service(cfg, authz, store, flight, Some((&[], false)), now),
            None => ask_auth_service(cfg, authz, store, flight, None, now),
        },
        Some(_) => {
            flight.counters.push(Counter::ExtAuthzDisabled);
            finish_owned(cfg, flight)
        }
        None => finish_owned(cfg, flight),
    }
}

fn model_check(cfg: &FilterConfig, rule: usize) -> Option<&ModelCheck> {
    cfg.jwt_authn
        .as_ref()?
        .rules
        .get(rule)?
        .model_check
        .as_ref()
}

/// Body mode (a model check, or the passthrough `with_request_body`):
/// every header edit that can be known now, then the headers go on and the
/// body is held, up to `max_bytes`. The passthrough, if it applies, asks
/// its service once the body is there.
fn release_headers(
    cfg: &FilterConfig,
    mut flight: InFlight,
    max_bytes: usize,
) -> (Decision, Option<InFlight>) {
    match &cfg.ext_authz {
        Some(authz) if authz.enabled_for(&flight.req) => {
            let strip = authz.strip_service_owned_headers(&flight.req);
            flight.req.apply(&strip);
            flight.ops.extend(strip);
            flight.authz_after_body = true;
        }
        Some(_) => flight.counters.push(Counter::ExtAuthzDisabled),
        None => {}
    }
    let mut d = finish(cfg, &mut flight);
    if let Step::Continue(ops) = d.step {
        let max_bytes = flight
            .sign_body
            .as_ref()
            .map_or(max_bytes, |p| max_bytes.max(p.max_body_bytes));
        d.step = Step::ContinueAndBufferBody { ops, max_bytes };
        flight.headers_released = true;
        return (d, Some(flight));
    }
    (d, None)
}

/// The model check of a request; `Some` with the 403 to answer.
fn judge_model(
    flight: &mut InFlight,
    check: &ModelCheck,
    field: Option<ModelField>,
) -> Option<LocalReply> {
    let judgement = check.judge(&flight.identities, field);
    if let Some(model) = &judgement.model {
        flight
            .properties
            .push((MODEL_PROPERTY, jwt::loggable(model)));
    }
    if judgement.unreadable {
        flight.counters.push(Counter::ModelUnreadable);
    }
    flight.counters.push(match judgement.denial {
        Some(_) => Counter::ModelDenied,
        None => Counter::ModelAllowed,
    });
    flight.note(|| match &judgement.denial {
        Some(reply) => format!("model_check: denied ({})", reply.details),
        None => "model_check: allowed".into(),
    });
    judgement.denial
}

/// The first `max` bytes of `body`, and whether there was more.
fn start_of(body: &[u8], truncated: bool, max: usize) -> (&[u8], bool) {
    match body.get(..max) {
        Some(start) if body.len() > max => (start, true),
        _ => (body, truncated),
    }
}

/// The buffered body (at most `max_bytes`; `truncated` when the client sent
/// more): the model check, then the passthrough, each on its own share.
pub fn on_request_body(
    cfg: &FilterConfig,
    store: &dyn SharedStore,
    flight: InFlight,
    body: &[u8],
    truncated: bool,
    now: u64,
) -> (Decision, Option<InFlight>) {
    let mut flight = flight;
    flight.now = now;
    if let Some(pending) = flight.sign_body.take() {
        if truncated || body.len() > pending.max_body_bytes {
            flight.counters.push(Counter::Sigv4BodyTooLarge);
            flight.note(|| "upstream_credentials: body above the SigV4 max_body_bytes".into());
            let reply = LocalReply::json_error(
                413,
                "payload_too_large",
                "the request body is larger than the gateway signs",
            );
            return (flight.decision(cfg, Step::Reply(reply)), None);
        }
        flight.counters.push(Counter::Sigv4Signed);
        flight.signed = pending.sign(body).properties();
    }
    if let Some(check) = flight.model_rule.take().and_then(|i| model_check(cfg, i)) {
        let (start, cut) = start_of(body, truncated, check.max_body_bytes);
        let field = model_field(start, cut);
        if let Some(reply) = judge_model(&mut flight, check, Some(field)) {
            return (flight.decision(cfg, Step::Reply(reply)), None);
        }
    }
    let authz = match &cfg.ext_authz {
        Some(authz) if flight.authz_after_body => authz,
        _ => return (flight.decision(cfg, Step::Continue(Vec::new())), None),
    };
    let Some(with_body) = &authz.with_request_body else {
        return ask_auth_service(cfg, authz, store, flight, None, now);
    };
    let (start, cut) = start_of(body, truncated, with_body.max_bytes);
    if cut && !with_body.allow_partial {
        flight.note(|| "ext_authz: request body above max_request_bytes".into());
        let reply = LocalReply::json_error(
            413,
            "payload_too_large",
            "the request body is larger than the auth check accepts",
        );
        return (flight.decision(cfg, Step::Reply(reply)), None);
    }
    ask_auth_service(cfg, authz, store, flight, Some((start, cut)), now)
}

fn ask_auth_service(
    cfg: &FilterConfig,
    authz: &ExtAuthz,
    store: &dyn SharedStore,
    mut flight: InFlight,
    body: Option<(&[u8], bool)>,
    now: u64,
) -> (Decision, Option<InFlight>) {
    // The key is computed from the check as it will be sent, so it covers
    // everything the service is shown (issue 9.2).
    let (check, key) = authz.check(&flight.req, &flight.identities, body, now);
    if let (Some(cache_cfg), Some(key)) = (&authz.decision_cache, key) {
        if let Some(decision) =
            decision_cache::lookup(cache_cfg, &authz.cache_namespace, store, &key, now)
        {
            flight.counters.push(Counter::ExtAuthzCacheHit);
            flight.note(|| "ext_authz: cached decision".into());
            return apply_decision(cfg, authz, flight, &decision);
        }
        flight.counters.push(Counter::ExtAuthzCacheMiss);
        flight.cache_key = Some(key);
    }
    let step = match check {
        Check::Http(request) => Step::Callout(request),
        Check::Grpc(call) => Step::GrpcCall(call),
    };
    (flight.decision(cfg, step), Some(flight))
}

/// A callout's reply (or its absence: `status: None`): the introspection
/// endpoint's, or the auth service's.
pub fn on_callout_response(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    mut flight: InFlight,
    reply: CalloutResponse,
    now: u64,
) -> (Decision, Option<InFlight>) {
    if let Some((provider, digest, discovery)) = flight.introspecting.take() {
        if discovery {
            return discovered(cfg, state, store, flight, provider, digest, &reply, now);
        }
        return introspected(cfg, state, store, flight, provider, digest, &reply, now);
    }
    on_auth_service_response(cfg, store, flight, reply, now)
}

/// The introspection endpoint answered (or did not): the answer is
/// counted, cached when it may be, and the stages run again with it.
#[allow(clippy::too_many_arguments)]
fn introspected(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    mut flight: InFlight,
    provider: usize,
    digest: TokenDigest,
    reply: &CalloutResponse,
    now: u64,
) -> (Decision, Option<InFlight>) {
    let Some(jwt_cfg) = cfg.jwt_authn.as_ref() else {
        return finish_owned(cfg, flight);
    };
    let answer = match jwt_cfg
        .providers
        .get(provider)
        .and_then(|p| p.introspection())
    {
        Some(p) => {
            let answer = p.introspection.answer(reply);
            p.introspection
                .remember(&jwt_cfg.namespace, provider, store, &digest, &answer, now);
            answer
        }
        None => Answer::Failed("not an introspection provider".into()),
    };
    match &answer {
        Answer::Active(_) => flight.counters.push(Counter::IntrospectionActive),
        Answer::Inactive => flight.counters.push(Counter::IntrospectionInactive),
        Answer::Failed(why) => {
            flight.counters.push(Counter::IntrospectionFailed);
            // Worth a warning whatever the log level: the IdP is failing.
            log::warn!("ai_auth: introspection for provider {provider} failed: {why}");
        }
    }
    flight.introspected.answers.push(Fresh {
        provider,
        digest,
        answer,
    });
    let flight = flight.restart(state, now);
    run(cfg, state, store, flight, now, true)
}

/// The discovery document answered (or did not): its
/// `introspection_endpoint` is used (and shared), or the token's answer is
/// a failure; the stages run again either way.
#[allow(clippy::too_many_arguments)]
fn discovered(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    mut flight: InFlight,
    provider: usize,
    digest: TokenDigest,
    reply: &CalloutResponse,
    now: u64,
) -> (Decision, Option<InFlight>) {
    let Some(jwt_cfg) = cfg.jwt_authn.as_ref() else {
        return (finish(cfg, &mut flight), None);
    };
    let p = jwt_cfg
        .providers
        .get(provider)
        .and_then(|p| p.introspection());
    let result = match p {
        Some(p) => p.introspection.discovered(
            reply,
            p.issuer.as_deref(),
            &jwt_cfg.namespace,
            provider,
            store,
            now,
        ),
        None => Err("not an introspection provider".into()),
    };
    match result {
        Ok(endpoint) => flight.introspected.endpoints.push((provider, endpoint)),
        Err(why) => {
            flight.counters.push(Counter::IntrospectionFailed);
            log::warn!("ai_auth: introspection for provider {provider} failed: {why}");
            flight.introspected.answers.push(Fresh {
                provider,
                digest,
                answer: Answer::Failed(why),
            });
        }
    }
    let flight = flight.restart(state, now);
    run(cfg, state, store, flight, now, true)
}

/// The auth service's reply (or its absence: `status: None`).
fn on_auth_service_response(
    cfg: &FilterConfig,
    store: &dyn SharedStore,
    mut flight: InFlight,
    reply: CalloutResponse,
    now: u64,
) -> (Decision, Option<InFlight>) {
    flight.now = now;
    let Some(authz) = &cfg.ext_authz else {
        return finish_owned(cfg, flight);
    };
    let decision = authz.http_decide(&reply);
    let status = reply.status.map_or("none".to_string(), |s| s.to_string());
    flight.note(|| format!("ext_authz: service status={status}"));
    let cache_control = reply.header("cache-control");
    conclude(cfg, authz, store, flight, &decision, cache_control, now)
}

/// The auth service's gRPC answer (or the call's failure).
pub fn on_grpc_response(
    cfg: &FilterConfig,
    store: &dyn SharedStore,
    mut flight: InFlight,
    reply: GrpcReply,
    now: u64,
) -> (Decision, Option<InFlight>) {
    flight.now = now;
    let Some(authz) = &cfg.ext_authz else {
        return finish_owned(cfg, flight);
    };
    let decision = authz.grpc_decide(&reply);
    flight.note(|| match &reply {
        GrpcReply::Message(m) => format!("ext_authz: gRPC reply of {} bytes", m.len()),
        GrpcReply::Failed { code, message } => format!(
            "ext_authz: gRPC call failed: status {code} {}",
            crate::vocab::quote(message)
        ),
    });
    conclude(cfg, authz, store, flight, &decision, None, now)
}

/// The service's decision, whichever transport carried it: remembered in
/// the decision cache (with the HTTP reply's `cache-control`), then applied.
fn conclude(
    cfg: &FilterConfig,
    authz: &ExtAuthz,
    store: &dyn SharedStore,
    flight: InFlight,
    decision: &AuthDecision,
    cache_control: Option<&str>,
    now: u64,
) -> (Decision, Option<InFlight>) {
    if let (Some(cache_cfg), Some(key)) = (&authz.decision_cache, &flight.cache_key) {
        decision_cache::remember(
            cache_cfg,
            &authz.cache_namespace,
            store,
            key,
            decision,
            cache_control,
            now,
        );
    }
    apply_decision(cfg, authz, flight, decision)
}

/// The host could not send the callout at all.
pub fn on_callout_failed(
    cfg: &FilterConfig,
    state: &mut WorkerState,
    store: &dyn SharedStore,
    mut flight: InFlight,
    now: u64,
) -> (Decision, Option<InFlight>) {
    if flight.introspecting.is_some() {
        // As no answer at all: a failure, never cached.
        return on_callout_response(cfg, state, store, flight, CalloutResponse::default(), now);
    }
    flight.note(|| "ext_authz: the call could not be dispatched".into());
    match &cfg.ext_authz {
        Some(authz) => apply_decision(
            cfg,
            authz,
            flight,
            &AuthDecision::Error(ErrorKind::DispatchFailed),
        ),
        None => finish_owned(cfg, flight),
    }
}

fn apply_decision(
    cfg: &FilterConfig,
    authz: &ExtAuthz,
    mut flight: InFlight,
    decision: &AuthDecision,
) -> (Decision, Option<InFlight>) {
    match authz.resolve(decision, &flight.req, &mut flight.counters) {
        Verdict::Denied(reply) => {
            flight.note(|| format!("ext_authz: {}", reply.details));
            (flight.decision(cfg, Step::Reply(reply)), None)
        }
        Verdict::Allowed {
            ops,
            client_headers,
            metadata,
        } => {
            flight.note(|| "ext_authz: allowed".into());
            if let Some(m) = metadata {
                flight.properties.push((METADATA_PROPERTY, m));
            }
            if flight.headers_released {
                // Body mode: the edits were made before the headers went on
                // (the configuration refuses what could only be done now,
                // with `with_request_body` or a model check).
                let mut d = flight.decision(cfg, Step::Continue(Vec::new()));
                d.response_headers = client_headers;
                return (d, None);
            }
            flight.req.apply(&ops);
            flight.ops.extend(ops);
            let (mut d, next) = finish_owned(cfg, flight);
            if matches!(
                d.step,
                Step::Continue(_) | Step::ContinueAndBufferBody { .. }
            ) {
                d.response_headers = client_headers;
            }
            (d, next)
        }
    }
}

/// Stage 3 and the final step, for a request whose headers are still
/// held: a SigV4 request with a body goes on, its body held to be signed.
fn finish_owned(cfg: &FilterConfig, mut flight: InFlight) -> (Decision, Option<InFlight>) {
    let mut d = finish(cfg, &mut flight);
    match (d.step, &flight.sign_body) {
        (Step::Continue(ops), Some(pending)) => {
            d.step = Step::ContinueAndBufferBody {
                ops,
                max_bytes: pending.max_body_bytes,
            };
            flight.headers_released = true;
            (d, Some(flight))
        }
        (step, _) => {
            d.step = step;
            (d, None)
        }
    }
}

/// Stage 3 and the final step.
fn finish(cfg: &FilterConfig, flight: &mut InFlight) -> Decision {
    if let Some(creds) = &cfg.upstream_credentials {
        match creds.plan(&flight.req, &flight.identities, &flight.tokens, flight.now) {
            CredentialOutcome::Inject {
                ops,
                backend,
                properties,
                sign_body,
            } => {
                flight.counters.push(Counter::CredentialsInjected);
                flight.note(|| format!("upstream_credentials: backend={backend}"));
                flight.properties.push((BACKEND_PROPERTY, backend));
                if !properties.is_empty() {
                    flight.counters.push(Counter::Sigv4Signed);
                    flight.signed = properties;
                }
                flight.sign_body = sign_body;
                flight.ops.extend(ops);
            }
            CredentialOutcome::PassThrough => {
                flight.counters.push(Counter::CredentialsPassedThrough);
                flight.note(|| "upstream_credentials: pass_through".into());
            }
            CredentialOutcome::Deny(reply) => {
                flight.counters.push(Counter::CredentialsDenied);
                flight.note(|| format!("upstream_credentials: denied ({})", reply.details));
                return flight.decision(cfg, Step::Reply(reply));
            }
        }
    }
    let ops = std::mem::take(&mut flight.ops);
    flight.decision(cfg, Step::Continue(ops))
}
