//! The functions the host calls (proxy-wasm ABI 0.2.1) and the table of
//! live contexts they dispatch to.
//!
//! Nothing here can panic: an unknown context id, a context that is busy
//! (the host called back while we were in it) or a host error is logged and
//! answered safely: a stream we cannot account for is failed closed, any
//! other callback does nothing.

use super::abi::Action;
use super::http::HttpFilter;
use super::logger;
use super::root::Root;
use super::stream::internal_error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::rc::Rc;

#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, Rc<Root>>,
    streams: HashMap<u32, Rc<HttpFilter>>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the context table; `None` if it is unavailable (busy, or
/// torn down), which callers treat like an unknown id.
fn with_contexts<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS
        .try_with(|cell| cell.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

fn root(context_id: u32) -> Option<Rc<Root>> {
    with_contexts(|c| c.roots.get(&context_id).map(Rc::clone)).flatten()
}

fn stream(context_id: u32) -> Option<Rc<HttpFilter>> {
    with_contexts(|c| c.streams.get(&context_id).map(Rc::clone)).flatten()
}

fn unknown(callback: &str, context_id: u32) {
    log::warn!("ai_auth: {callback} for unknown context {context_id}");
}

/// A request-side callback for a stream we do not know: it must not reach
/// the upstream unchecked.
fn unknown_stream(callback: &str, context_id: u32) -> u32 {
    unknown(callback, context_id);
    internal_error(context_id, "no state for this stream") as u32
}

/// The VM's entry point (a WASI reactor): run static constructors, then set
/// up what needs no hostcall.
#[no_mangle]
pub extern "C" fn _initialize() {
    extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker's constructor list, run once before anything else,
    // as the WASI reactor model requires.
    unsafe { __wasm_call_ctors() };
    logger::init();
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for buffers the host hands us; taken back by `abi`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        let created = with_contexts(|c| {
            c.roots
                .insert(context_id, Rc::new(Root::new(context_id)))
                .is_none()
        });
        if created != Some(true) {
            log::warn!("ai_auth: root context {context_id} created twice or table busy");
        }
        return;
    }
    // A stream of a root we do not know gets no configuration and fails
    // closed on its first request callback.
    let shared = root(root_context_id).and_then(|r| r.shared());
    let filter = Rc::new(HttpFilter::new(context_id, shared));
    if with_contexts(|c| c.streams.insert(context_id, filter)).is_none() {
        log::warn!("ai_auth: cannot record stream context {context_id}");
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    match root(context_id) {
        Some(root) => root.on_configure(),
        None => {
            unknown("proxy_on_configure", context_id);
            false
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    match root(context_id) {
        Some(root) => root.on_tick(),
        None => unknown("proxy_on_tick", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    match stream(context_id) {
        Some(s) => s.on_http_request_headers(num_headers, end_of_stream != 0) as u32,
        None => unknown_stream("proxy_on_request_headers", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> u32 {
    match stream(context_id) {
        Some(s) => s.on_http_request_body(body_size, end_of_stream != 0) as u32,
        None => unknown_stream("proxy_on_request_body", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, num_trailers: usize) -> u32 {
    match stream(context_id) {
        Some(s) => s.on_http_request_trailers(num_trailers) as u32,
        None => unknown_stream("proxy_on_request_trailers", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    match stream(context_id) {
        Some(s) => s.on_http_response_headers(num_headers, end_of_stream != 0) as u32,
        None => Action::Continue as u32,
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(
    _context_id: u32,
    _body_size: usize,
    _end_of_stream: u32,
) -> u32 {
    Action::Continue as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _num_trailers: usize) -> u32 {
    Action::Continue as u32
}

/// Envoy delivers every call's reply to the root context that sent it
/// (`http_call` acts for the root of the effective context).
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    if let Some(root) = root(context_id) {
        root.on_http_call_response(token, num_headers, body_size, num_trailers);
    } else if let Some(stream) = stream(context_id) {
        stream.on_http_call_response(token, num_headers, body_size, num_trailers);
    } else {
        unknown("proxy_on_http_call_response", context_id);
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(
    context_id: u32,
    token: u32,
    num_elements: usize,
) {
    match root(context_id) {
        Some(root) => root.on_grpc_receive_initial_metadata(token, num_elements),
        None => unknown("proxy_on_grpc_receive_initial_metadata", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, message_size: usize) {
    match root(context_id) {
        Some(root) => root.on_grpc_receive(token, message_size),
        None => unknown("proxy_on_grpc_receive", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(
    context_id: u32,
    token: u32,
    num_elements: usize,
) {
    match root(context_id) {
        Some(root) => root.on_grpc_receive_trailing_metadata(token, num_elements),
        None => unknown("proxy_on_grpc_receive_trailing_metadata", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status_code: u32) {
    match root(context_id) {
        Some(root) => root.on_grpc_close(token, status_code),
        None => unknown("proxy_on_grpc_close", context_id),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context_id: u32) {}

/// The context is finished: a stream forgets what waits for it. Always
/// done at once (`true`): nothing of ours needs the host to wait.
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
    if let Some(stream) = stream(context_id) {
        stream.on_done();
    }
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let removed = with_contexts(|c| {
        c.streams.remove(&context_id).is_some() || c.roots.remove(&context_id).is_some()
    });
    if removed != Some(true) {
        log::debug!("ai_auth: proxy_on_delete for unknown context {context_id}");
    }
}
