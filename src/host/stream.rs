//! Performing the core's decisions for a stream, from wherever the work
//! continues: the stream's own callbacks or a callout reply.

use super::abi::Action;
use super::hostcalls::{self, SharedData};
use super::root::Shared;
use crate::callout::{CalloutResponse, GrpcReply};
use crate::flow::{self, Decision, InFlight, Step};
use crate::response::{HeaderOp, LocalReply};

/// How long a request may wait for remote keys, in root ticks (500 ms).
const KEYS_WAIT_TICKS: u32 = 10;

pub enum Waiting {
    /// The body, up to `max` bytes (body mode: the headers went on).
    Body { max: usize },
    /// Remote keys, for at most this many more ticks: any provider's
    /// (`refetch` empty: the first keys after start), or the refetch of
    /// these providers (a token's `kid` was unknown).
    Keys {
        ticks_left: u32,
        refetch: Vec<usize>,
    },
    /// The reply to callout `token`.
    Callout { token: u32 },
    /// The reply to gRPC call `token`.
    GrpcCall { token: u32 },
}

/// What ends some streams' wait for keys.
#[derive(Clone, Copy)]
pub enum KeysEvent<'a> {
    /// A root tick, after loading what other VMs published for `loaded`.
    Tick { loaded: &'a [usize] },
    /// This VM fetched keys for a provider.
    Loaded(usize),
    /// This VM's fetch for a provider failed.
    RefetchFailed(usize),
}

pub struct Pending {
    pub flight: InFlight,
    pub waiting: Waiting,
}

/// Where the continuation runs. Callouts are sent from the stream's own
/// context, so their replies arrive there too: no context switch is needed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Inside the stream's own request callback: returning `Continue` resumes it.
    Callback,
    /// In a callout reply delivered to the stream's own context: resume the
    /// paused request explicitly.
    Async,
    /// In the root context (keys loaded, or a reply to a call it sent): make
    /// the stream the effective context first, then as `Async`.
    Root,
}

fn apply(ops: &[HeaderOp]) -> Result<(), String> {
    for op in ops {
        let result = match op {
            HeaderOp::Set(name, value) => hostcalls::set_request_header(name, Some(value)),
            HeaderOp::SetSecret(name, value) => {
                hostcalls::set_request_header(name, Some(value.expose()))
            }
            HeaderOp::Append(name, value) => hostcalls::add_request_header(name, value),
            HeaderOp::Remove(name) => hostcalls::set_request_header(name, None),
        };
        result.map_err(|status| format!("cannot edit header {}: {status:?}", op.name()))?;
    }
    Ok(())
}

fn send(context_id: u32, reply: &LocalReply) -> Action {
    if let Err(status) = hostcalls::send_response(reply.status, &reply.headers, &reply.body) {
        log::error!("#{context_id} ai_auth: cannot send the local reply: {status:?}");
    }
    Action::Pause
}

pub const NO_CLOCK: &str = "cannot read the host's clock";

/// Fail closed: when the host refuses an edit (a token we must strip
/// stays in place), the request must not go upstream.
pub fn internal_error(context_id: u32, what: &str) -> Action {
    log::warn!("#{context_id} ai_auth: {what}; answering 500");
    send(
        context_id,
        &LocalReply::json_error(
            500,
            "internal_error",
            "the gateway could not process the request",
        ),
    )
}

impl Shared {
    /// `internal_error` from wherever the continuation runs.
    fn fail_closed(&self, context_id: u32, site: Site, what: &str) {
        if site == Site::Root && hostcalls::set_effective_context(context_id).is_err() {
            return; // the stream is gone
        }
        internal_error(context_id, what);
    }

    /// Performs a decision for stream `context_id`. `flight` is the
    /// in-flight state when the step asks for something.
    pub fn perform(
        &self,
        context_id: u32,
        decision: Decision,
        flight: Option<InFlight>,
        site: Site,
    ) -> Action {
        for counter in &decision.counters {
            self.count(*counter);
        }
        let refetch = if decision.step == Step::WaitForKeys {
            decision.jwks_refresh
        } else {
            // Refetched from the next tick (rate-limited): the request
            // went on without waiting for it.
            self.jwks
                .refresh_wanted
                .borrow_mut()
                .extend(&decision.jwks_refresh);
            Vec::new()
        };
        // From the root context the stream must be made the effective one;
        // in the stream's own callbacks this changes nothing.
        if site == Site::Root && hostcalls::set_effective_context(context_id).is_err() {
            return Action::Pause; // the stream is gone
        }
        if !decision.log.is_empty() {
            log::debug!("#{context_id} {}", decision.log);
        }
        for (name, value) in &decision.properties {
            hostcalls::set_filter_state(name, value);
        }
        match decision.step {
            Step::Continue(ops) => {
                if let Err(e) = apply(&ops) {
                    return internal_error(context_id, &e);
                }
                if !decision.response_headers.is_empty() {
                    self.response_headers
                        .borrow_mut()
                        .insert(context_id, decision.response_headers);
                }
                if site != Site::Callback {
                    if let Err(status) = hostcalls::resume_request() {
                        log::warn!("#{context_id} ai_auth: cannot resume the request: {status:?}");
                    }
                }
                Action::Continue
            }
            Step::Reply(reply) => send(context_id, &reply),
            Step::ContinueAndBufferBody { ops, max_bytes } => {
                let Some(flight) = flight else {
                    return internal_error(context_id, "no state to wait for the body with");
                };
                if let Err(e) = apply(&ops) {
                    return internal_error(context_id, &e);
                }
                self.pending.borrow_mut().insert(
                    context_id,
                    Pending {
                        flight,
                        waiting: Waiting::Body { max: max_bytes },
                    },
                );
                // The headers go on; the body is held in on_http_request_body.
                if site != Site::Callback {
                    if let Err(status) = hostcalls::resume_request() {
                        log::warn!("#{context_id} ai_auth: cannot resume the request: {status:?}");
                    }
                }
                Action::Continue
            }
            Step::WaitForKeys => {
                let Some(flight) = flight else {
                    return internal_error(context_id, "no state to wait for keys with");
                };
                if !refetch.is_empty() && !self.refetch_keys(&refetch) {
                    // Rate-limited: answer at once with the keys at hand.
                    return self.run_again(context_id, flight, site);
                }
                self.pending.borrow_mut().insert(
                    context_id,
                    Pending {
                        flight,
                        waiting: Waiting::Keys {
                            ticks_left: KEYS_WAIT_TICKS,
                            refetch,
                        },
                    },
                );
                Action::Pause
            }
            Step::GrpcCall(call) => self.send_grpc(context_id, call, flight, site),
            Step::Callout(request) => {
                let Some(flight) = flight else {
                    return internal_error(context_id, "no state for the callout");
                };
                match hostcalls::dispatch(&request) {
                    Ok(token) => {
                        log::trace!(
                            "#{context_id} ai_auth: callout {token} to {}",
                            request.cluster
                        );
                        self.pending.borrow_mut().insert(
                            context_id,
                            Pending {
                                flight,
                                waiting: Waiting::Callout { token },
                            },
                        );
                        self.callouts.borrow_mut().insert(token, context_id);
                        Action::Pause
                    }
                    Err(status) => {
                        log::warn!(
                            "#{context_id} ai_auth: cannot call cluster {}: {status:?}",
                            request.cluster
                        );
                        let Some(now) = self.clock() else {
                            return internal_error(context_id, NO_CLOCK);
                        };
                        let result = match self.state.try_borrow_mut() {
                            Ok(mut state) => flow::on_callout_failed(
                                &self.config,
                                &mut state,
                                &SharedData,
                                flight,
                                now,
                            ),
                            Err(_) => return internal_error(context_id, "worker state busy"),
                        };
                        let (decision, next) = result;
                        self.perform(context_id, decision, next, site)
                    }
                }
            }
        }
    }

    /// Sends a gRPC check for `context_id` (or fails it as the stage says).
    fn send_grpc(
        &self,
        context_id: u32,
        call: crate::callout::GrpcCall,
        flight: Option<InFlight>,
        site: Site,
    ) -> Action {
        let Some(flight) = flight else {
            return internal_error(context_id, "no state for the gRPC call");
        };
        match hostcalls::grpc_dispatch(&call) {
            Ok(token) => {
                log::trace!(
                    "#{context_id} ai_auth: gRPC call {token} to {}",
                    call.target.cluster
                );
                self.pending.borrow_mut().insert(
                    context_id,
                    Pending {
                        flight,
                        waiting: Waiting::GrpcCall { token },
                    },
                );
                self.grpc_calls.borrow_mut().insert(token, context_id);
                Action::Pause
            }
            Err(status) => {
                log::warn!(
                    "#{context_id} ai_auth: cannot call cluster {} over gRPC: {status:?}",
                    call.target.cluster
                );
                let Some(now) = self.clock() else {
                    return internal_error(context_id, NO_CLOCK);
                };
                let result = match self.state.try_borrow_mut() {
                    Ok(mut state) => {
                        flow::on_callout_failed(&self.config, &mut state, &SharedData, flight, now)
                    }
                    Err(_) => return internal_error(context_id, "worker state busy"),
                };
                let (decision, next) = result;
                self.perform(context_id, decision, next, site)
            }
        }
    }

    /// A gRPC call ended (`reply`), whichever context it was delivered to.
    pub fn grpc_reply(&self, token: u32, reply: impl FnOnce() -> GrpcReply, site: Site) -> bool {
        let Some(context_id) = self.grpc_calls.borrow_mut().remove(&token) else {
            return false;
        };
        let Some(pending) = self.pending.borrow_mut().remove(&context_id) else {
            return true;
        };
        // Read the reply before switching to the stream's context.
        let reply = reply();
        let Some(now) = self.clock() else {
            self.fail_closed(context_id, site, NO_CLOCK);
            return true;
        };
        let (decision, next) =
            flow::on_grpc_response(&self.config, &SharedData, pending.flight, reply, now);
        self.perform(context_id, decision, next, site);
        true
    }

    fn body_ready(
        &self,
        context_id: u32,
        flight: InFlight,
        body: Vec<u8>,
        truncated: bool,
        site: Site,
    ) -> Action {
        let Some(now) = self.clock() else {
            return internal_error(context_id, NO_CLOCK);
        };
        let (decision, next) =
            flow::on_request_body(&self.config, &SharedData, flight, &body, truncated, now);
        self.perform(context_id, decision, next, site)
    }

    /// A chunk of the body arrived (body mode). Returns the action for it.
    pub fn on_body(&self, context_id: u32, body_size: usize, end_of_stream: bool) -> Action {
        let max = match self.pending.borrow().get(&context_id) {
            Some(Pending {
                waiting: Waiting::Body { max },
                ..
            }) => *max,
            Some(_) => return Action::Pause, // held while the auth service decides
            None => return Action::Continue,
        };
        let truncated = body_size > max;
        if !truncated && !end_of_stream {
            return Action::Pause; // Envoy buffers until the whole body is there
        }
        let Some(pending) = self.pending.borrow_mut().remove(&context_id) else {
            return Action::Continue;
        };
        let mut flight = pending.flight;
        flight.set_body_received(body_size);
        let body = hostcalls::request_body(body_size.min(max));
        self.body_ready(context_id, flight, body, truncated, Site::Callback)
    }

    /// A callout reply, whichever context it was delivered to.
    pub fn callout_reply(&self, token: u32, body_size: usize, site: Site) {
        let Some(context_id) = self.callouts.borrow_mut().remove(&token) else {
            return;
        };
        let Some(pending) = self.pending.borrow_mut().remove(&context_id) else {
            return;
        };
        // Read the reply before switching to the stream's context, and only
        // what the decision needs (each read is a call into the VM).
        let status = hostcalls::callout_status();
        let introspection_limit = pending.flight.introspection_reply_limit(&self.config);
        let authz = self
            .config
            .ext_authz
            .as_ref()
            .filter(|_| introspection_limit.is_none());
        let mut headers = if authz.is_some_and(|a| a.needs_reply_headers(status)) {
            hostcalls::callout_response_headers()
        } else {
            Vec::new()
        };
        if let Some(s) = status {
            headers.push((":status".to_string(), s.to_string()));
        }
        let body = if let Some(limit) = introspection_limit {
            hostcalls::callout_response_body(body_size.min(limit))
        } else if body_size > 0 && authz.is_some_and(|a| a.needs_reply_body(status)) {
            // A denial's body goes to the client; a runaway one is cut (as
            // Envoy's max_denied_response_body_bytes does).
            hostcalls::callout_response_body(body_size.min(crate::ext_authz::MAX_DENIED_BODY_BYTES))
        } else {
            Vec::new()
        };
        let reply = CalloutResponse::from_headers(headers, body);
        let Some(now) = self.clock() else {
            self.fail_closed(context_id, site, NO_CLOCK);
            return;
        };
        let result = match self.state.try_borrow_mut() {
            Ok(mut state) => flow::on_callout_response(
                &self.config,
                &mut state,
                &SharedData,
                pending.flight,
                reply,
                now,
            ),
            Err(_) => {
                self.fail_closed(context_id, site, "worker state busy");
                return;
            }
        };
        let (decision, next) = result;
        self.perform(context_id, decision, next, site);
    }

    /// Streams waiting for keys: run again those whose wait `event` ends
    /// (every tick counts one down; a stream's wait is over at zero).
    pub fn release_waiting_for_keys(&self, event: KeysEvent<'_>) {
        let ready: Vec<u32> = {
            let mut pending = self.pending.borrow_mut();
            let mut ready = Vec::new();
            for (id, p) in pending.iter_mut() {
                if let Waiting::Keys {
                    ticks_left,
                    refetch,
                } = &mut p.waiting
                {
                    // Keys of `providers` were loaded: the first keys after
                    // start are any provider's, a refetch's its own.
                    let mine = |providers: &[usize]| {
                        if refetch.is_empty() {
                            !providers.is_empty()
                        } else {
                            refetch.iter().any(|i| providers.contains(i))
                        }
                    };
                    let done = match event {
                        KeysEvent::Tick { loaded } => {
                            *ticks_left = ticks_left.saturating_sub(1);
                            *ticks_left == 0 || mine(loaded)
                        }
                        KeysEvent::Loaded(index) => mine(&[index]),
                        // Only a refetch's waiters: the first keys after
                        // start are retried with backoff within the wait.
                        KeysEvent::RefetchFailed(index) => refetch.contains(&index),
                    };
                    if done {
                        ready.push(*id);
                    }
                }
            }
            ready
        };
        for context_id in ready {
            let Some(pending) = self.pending.borrow_mut().remove(&context_id) else {
                continue;
            };
            self.run_again(context_id, pending.flight, Site::Root);
        }
    }

    /// The stages again for a request that waited for keys (or may not):
    /// this time missing keys or an unknown `kid` are answered.
    fn run_again(&self, context_id: u32, flight: InFlight, site: Site) -> Action {
        let Some(now) = self.clock() else {
            self.fail_closed(context_id, site, NO_CLOCK);
            return Action::Pause;
        };
        let result = match self.state.try_borrow_mut() {
            Ok(mut state) => Some(flow::on_keys_loaded(
                &self.config,
                &mut state,
                &SharedData,
                flight,
                now,
            )),
            Err(_) => None,
        };
        match result {
            Some((decision, next)) => self.perform(context_id, decision, next, site),
            None => {
                self.fail_closed(context_id, site, "worker state busy");
                Action::Pause
            }
        }
    }

    /// The stream ended: forget anything still waiting for it.
    pub fn forget(&self, context_id: u32) {
        if let Some(p) = self.pending.borrow_mut().remove(&context_id) {
            match p.waiting {
                Waiting::Callout { token } => {
                    self.callouts.borrow_mut().remove(&token);
                }
                Waiting::GrpcCall { token } => {
                    self.grpc_calls.borrow_mut().remove(&token);
                }
                Waiting::Body { .. } | Waiting::Keys { .. } => {}
            }
        }
        self.response_headers.borrow_mut().remove(&context_id);
    }

    /// The host's clock, read for every decision. Not only when some stage
    /// "needs" it: a stage that forgot to say so once injected expired
    /// upstream tokens, and a hostcall costs far less than that risk.
    /// `None` (the host cannot tell the time) fails the request closed.
    pub fn clock(&self) -> Option<u64> {
        hostcalls::now_secs()
    }

    pub fn is_waiting(&self, context_id: u32) -> bool {
        self.pending.borrow().contains_key(&context_id)
    }

    pub fn take_response_headers(&self, context_id: u32) -> Vec<(String, String)> {
        self.response_headers
            .borrow_mut()
            .remove(&context_id)
            .unwrap_or_default()
    }
}
