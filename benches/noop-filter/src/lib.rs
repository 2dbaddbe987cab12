//! The benchmark's floors: proxy-wasm HTTP filters that do the least a
//! filter of their kind can do, so the figures show what Envoy and V8 cost
//! by themselves.
//!
//! - plugin configuration `noop` (or empty): every request goes through untouched;
//! - `callout`: every request waits for one HTTP call to cluster `ext_authz`
//!   (the passthrough's minimum: dispatch, pause, resume), answer unread.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { callout: false }) });
}}

struct Root {
    callout: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config =
            proxy_wasm::hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
        self.callout = config.as_slice() == b"callout";
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            callout: self.callout,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    callout: bool,
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
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.callout {
            return Action::Continue;
        }
        let headers = vec![
            (":method", "GET"),
            (":path", "/v1/chat/completions"),
            (":authority", "authz.local"),
            ("x-api-key", "bench-key"),
        ];
        match proxy_wasm::hostcalls::dispatch_http_call(
            "ext_authz",
            headers,
            None,
            vec![],
            Duration::from_secs(1),
        ) {
            Ok(_) => Action::Pause,
            Err(_) => Action::Continue,
        }
    }
}
