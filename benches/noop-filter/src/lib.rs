//! The benchmark's floors: proxy-wasm HTTP filters that do the least a
//! filter of their kind can do, so the figures show what Envoy and V8 cost
//! by themselves.
//!
//! - plugin configuration `noop` (or empty): every request goes through untouched;
//! - `callout`: every request waits for one HTTP call to cluster `ext_authz`
//!   (the passthrough's minimum: dispatch, pause, resume), answer unread;
//! - `grpc_callout`: the same with one gRPC call of
//!   `envoy.service.auth.v3.Authorization/Check` (an empty `CheckRequest`)
//!   to cluster `ext_authz_grpc`, the gRPC passthrough's minimum.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Noop }) });
}}

#[derive(Clone, Copy)]
enum Mode {
    Noop,
    Callout,
    GrpcCallout,
}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config =
            proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
        self.mode = match config.as_slice() {
            b"callout" => Mode::Callout,
            b"grpc_callout" => Mode::GrpcCallout,
            _ => Mode::Noop,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    mode: Mode,
}

impl Context for Floor {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let _ = proxy_wasm::hostcalls::resume_http_request();
    }

    fn on_grpc_call_response(&mut self, _token: u32, _status_code: u32, _response_size: usize) {
        let _ = proxy_wasm::hostcalls::resume_http_request();
    }
}

/// `envoy.config.core.v3.GrpcService` naming the cluster (what Envoy's
/// proxy-wasm host takes as a gRPC call's upstream), encoded by hand.
fn grpc_upstream(cluster: &str) -> Vec<u8> {
    let name = cluster.as_bytes();
    let mut out = vec![0x0a, (name.len() + 2) as u8, 0x0a, name.len() as u8];
    out.extend_from_slice(name);
    out
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let dispatched = match self.mode {
            Mode::Noop => return Action::Continue,
            Mode::Callout => self.http_callout(),
            Mode::GrpcCallout => proxy_wasm::hostcalls::dispatch_grpc_call(
                &String::from_utf8_lossy(&grpc_upstream("ext_authz_grpc")),
                "envoy.service.auth.v3.Authorization",
                "Check",
                vec![],
                Some(&[]),
                Duration::from_secs(1),
            )
            .is_ok(),
        };
        if dispatched {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Floor {
    fn http_callout(&self) -> bool {
        let headers = vec![
            (":method", "GET"),
            (":path", "/v1/chat/completions"),
            (":authority", "authz.local"),
            ("x-api-key", "bench-key"),
        ];
        proxy_wasm::hostcalls::dispatch_http_call(
            "ext_authz",
            headers,
            None,
            vec![],
            Duration::from_secs(1),
        )
        .is_ok()
    }
}
