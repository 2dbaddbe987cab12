//! One HTTP stream: snapshot the headers, run the core, and hand anything
//! asynchronous to the shared continuation logic in `stream`.

use super::abi::Action;
use super::hostcalls::{self, SharedData};
use super::root::Shared;
use super::stream::{internal_error, Site};
use crate::flow;
use crate::request::RequestView;
use std::rc::Rc;

pub struct HttpFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl HttpFilter {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        HttpFilter { context_id, shared }
    }

    fn waiting(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.is_waiting(self.context_id))
    }
}

/// The stream callbacks, dispatched by `exports`; they take `&self` so a
/// host calling back into a stream cannot find it borrowed.
impl HttpFilter {
    /// Replies delivered to the stream itself (Envoy sends them to the root;
    /// the ABI allows either).
    pub fn on_http_call_response(
        &self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            shared.callout_reply(token_id, body_size, Site::Async);
        }
    }

    pub fn on_done(&self) {
        if let Some(shared) = &self.shared {
            shared.forget(self.context_id);
        }
    }

    pub fn on_http_request_headers(&self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_ref().map(Rc::clone) else {
            return internal_error(self.context_id, "no configuration");
        };
        let headers = match hostcalls::request_headers() {
            Ok(h) => h,
            Err(status) => {
                return internal_error(
                    self.context_id,
                    &format!("cannot read request headers: {status:?}"),
                )
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
        if shared
            .config
            .jwt_authn
            .as_ref()
            .is_some_and(|j| j.needs_peer_certificate())
        {
            request.set_peer_certificate_sha256(hostcalls::peer_certificate_sha256());
        }
        if shared
            .config
            .ext_authz
            .as_ref()
            .is_some_and(|a| a.is_grpc())
        {
            request.set_connection(hostcalls::connection_info());
        }
        request.set_has_body(!end_of_stream);
        let Some(now) = shared.clock() else {
            return internal_error(self.context_id, super::stream::NO_CLOCK);
        };
        let (decision, flight) = match shared.state.try_borrow_mut() {
            Ok(mut state) => {
                flow::on_request_headers(&shared.config, &mut state, &SharedData, request, now)
            }
            Err(_) => return internal_error(self.context_id, "worker state busy"),
        };
        shared.perform(self.context_id, decision, flight, Site::Callback)
    }

    pub fn on_http_request_body(&self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.shared {
            Some(shared) => shared.on_body(self.context_id, body_size, end_of_stream),
            None => Action::Continue,
        }
    }

    pub fn on_http_request_trailers(&self, _num_trailers: usize) -> Action {
        if self.waiting() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    pub fn on_http_response_headers(&self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(shared) = &self.shared {
            for (name, value) in shared.take_response_headers(self.context_id) {
                if let Err(status) = hostcalls::add_response_header(&name, &value) {
                    log::debug!(
                        "#{} ai_auth: cannot add response header {name}: {status:?}",
                        self.context_id
                    );
                }
            }
        }
        Action::Continue
    }
}
