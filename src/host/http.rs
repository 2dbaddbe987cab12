//! One HTTP stream: snapshot the headers, run the core, perform each step,
//! and call back into the core with the body or the callout reply.

use super::hostcalls::{self, SharedData};
use super::root::Shared;
use crate::callout::CalloutResponse;
use crate::flow::{self, Decision, InFlight, Step};
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

enum Phase {
    /// Nothing pending: the request goes on (or was answered).
    Done,
    /// Buffering the body for the auth service.
    Body { flight: InFlight, max_bytes: usize },
    /// Waiting for the callout with this token.
    Callout { flight: InFlight, token: u32 },
}

pub struct HttpFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    phase: Phase,
    /// Headers for the client's response (`allowed_client_headers_on_success`).
    response_headers: Vec<(String, String)>,
}

impl HttpFilter {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        HttpFilter {
            context_id,
            shared,
            phase: Phase::Done,
            response_headers: Vec::new(),
        }
    }

    /// Fail closed: when the host refuses an edit (a token we must strip
    /// stays in place), the request must not go upstream.
    fn internal_error(&mut self, what: &str) -> Action {
        log::warn!("#{} ai_auth: {what}; answering 500", self.context_id);
        self.phase = Phase::Done;
        let reply = LocalReply::json_error(
            500,
            "internal_error",
            "the gateway could not process the request",
        );
        self.reply(&reply)
    }

    fn reply(&self, reply: &LocalReply) -> Action {
        if let Err(status) = hostcalls::send_response(reply.status, &reply.headers, &reply.body) {
            log::error!(
                "#{} ai_auth: cannot send the local reply: {status:?}",
                self.context_id
            );
        }
        Action::Pause
    }

    fn apply(&self, ops: &[HeaderOp]) -> Result<(), String> {
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

    /// Performs a decision. `flight` is the in-flight state when the step
    /// asks for something; `resume` when called from a callout reply, where
    /// the paused request must be resumed explicitly (inside a request
    /// callback, returning `Continue` is the resumption).
    fn perform(
        &mut self,
        shared: &Shared,
        decision: Decision,
        flight: Option<InFlight>,
        resume: bool,
    ) -> Action {
        for counter in &decision.counters {
            shared.count(*counter);
        }
        if !decision.log.is_empty() {
            log::debug!("#{} {}", self.context_id, decision.log);
        }
        for (name, value) in &decision.properties {
            hostcalls::set_filter_state(name, value);
        }
        match decision.step {
            Step::Continue(ops) => {
                self.phase = Phase::Done;
                if let Err(e) = self.apply(&ops) {
                    return self.internal_error(&e);
                }
                self.response_headers = decision.response_headers;
                if resume {
                    if let Err(status) = hostcalls::resume_request() {
                        log::warn!(
                            "#{} ai_auth: cannot resume the request: {status:?}",
                            self.context_id
                        );
                    }
                }
                Action::Continue
            }
            Step::Reply(reply) => {
                self.phase = Phase::Done;
                self.reply(&reply)
            }
            Step::BufferBody { max_bytes } => match flight {
                Some(flight) => {
                    self.phase = Phase::Body { flight, max_bytes };
                    Action::Pause
                }
                None => self.internal_error("no state to buffer the body with"),
            },
            Step::Callout(request) => {
                let Some(flight) = flight else {
                    return self.internal_error("no state for the callout");
                };
                match hostcalls::dispatch(&request) {
                    Ok(token) => {
                        self.phase = Phase::Callout { flight, token };
                        Action::Pause
                    }
                    Err(status) => {
                        log::warn!(
                            "#{} ai_auth: cannot call cluster {}: {status:?}",
                            self.context_id,
                            request.cluster
                        );
                        let decision = flow::on_callout_failed(&shared.config, flight);
                        self.perform(shared, decision, None, resume)
                    }
                }
            }
        }
    }

    fn body_ready(
        &mut self,
        shared: &Shared,
        body: &[u8],
        truncated: bool,
        resume: bool,
    ) -> Action {
        let Phase::Body { flight, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return Action::Continue;
        };
        let (decision, next) = flow::on_request_body(
            &shared.config,
            &SharedData,
            flight,
            body,
            truncated,
            hostcalls::now_secs(),
        );
        self.perform(shared, decision, next, resume)
    }
}

impl Context for HttpFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(shared) = self.shared.as_ref().map(Rc::clone) else {
            return;
        };
        let flight = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Callout { flight, token } if token == token_id => flight,
            other => {
                self.phase = other;
                return;
            }
        };
        let headers = hostcalls::callout_response_headers();
        let body = hostcalls::callout_response_body(body_size);
        let reply = CalloutResponse::from_headers(headers, body);
        let decision = flow::on_callout_response(
            &shared.config,
            &SharedData,
            flight,
            reply,
            hostcalls::now_secs(),
        );
        let action = self.perform(&shared, decision, None, true);
        // A local reply was sent, or the request resumed; nothing else to do.
        let _ = action;
    }
}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_ref().map(Rc::clone) else {
            return self.internal_error("no configuration");
        };
        let headers = match hostcalls::request_headers() {
            Ok(h) => h,
            Err(status) => {
                return self.internal_error(&format!("cannot read request headers: {status:?}"))
            }
        };
        let mut request = RequestView::from_bytes(headers);
        if shared
            .config
            .upstream_credentials
            .as_ref()
            .is_some_and(|c| c.needs_route_info)
        {
            request.set_route_info(
                hostcalls::route_property("cluster_name"),
                hostcalls::route_property("route_name"),
            );
        }
        let now = hostcalls::now_secs();
        let (decision, flight) = match shared.state.try_borrow_mut() {
            Ok(mut state) => {
                flow::on_request_headers(&shared.config, &mut state, &SharedData, request, now)
            }
            Err(_) => return self.internal_error("worker state busy"),
        };
        let action = self.perform(&shared, decision, flight, false);
        // A request without a body: the body it has is the empty one.
        if end_of_stream && matches!(self.phase, Phase::Body { .. }) {
            return self.body_ready(&shared, &[], false, false);
        }
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_ref().map(Rc::clone) else {
            return Action::Continue;
        };
        match &self.phase {
            Phase::Done => Action::Continue,
            // Held while the auth service decides (Envoy's StopIterationAndWatermark).
            Phase::Callout { .. } => Action::Pause,
            Phase::Body { max_bytes, .. } => {
                let max = *max_bytes;
                if body_size > max {
                    let body = hostcalls::request_body(max);
                    return self.body_ready(&shared, &body, true, false);
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = hostcalls::request_body(body_size);
                self.body_ready(&shared, &body, false, false)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.phase {
            Phase::Done => Action::Continue,
            _ => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if let Err(status) = hostcalls::add_response_header(&name, &value) {
                log::debug!(
                    "#{} ai_auth: cannot add response header {name}: {status:?}",
                    self.context_id
                );
            }
        }
        Action::Continue
    }
}
