//! One HTTP stream: snapshot the headers, run the core, perform the decision.

use super::hostcalls;
use super::root::Shared;
use crate::flow::{self, Step};
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct HttpFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl HttpFilter {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        HttpFilter { context_id, shared }
    }

    /// Fail closed: when the host refuses an edit (a token we must strip
    /// stays in place), the request must not go upstream.
    fn internal_error(&self, what: &str) -> Action {
        log::warn!("#{} ai_auth: {what}; answering 500", self.context_id);
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
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
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
        let decision = match shared.state.try_borrow_mut() {
            Ok(mut state) => flow::on_request_headers(&shared.config, &mut state, request, now),
            Err(_) => return self.internal_error("worker state busy"),
        };
        for counter in &decision.counters {
            shared.count(*counter);
        }
        log::debug!("#{} {}", self.context_id, decision.log);
        for (name, value) in &decision.properties {
            hostcalls::set_filter_state(name, value);
        }
        match &decision.step {
            Step::Continue(ops) => match self.apply(ops) {
                Ok(()) => Action::Continue,
                Err(e) => self.internal_error(&e),
            },
            Step::Reply(reply) => self.reply(reply),
        }
    }
}
