//! The proxy-wasm ABI 0.2.1 imports (module `env`) and their safe wrappers.
//!
//! The only place that declares the host's functions. Every wrapper returns
//! the host's status as a `Result`: no status is "unexpected" (the SDK
//! panicked on those, which aborts the VM), nothing is indexed or unwrapped,
//! and every buffer the host allocated in our memory (through
//! `proxy_on_memory_allocate`) is taken back and freed.

use super::pairs;
use std::fmt;
use std::ptr::{null, null_mut};

/// A status the host answered other than `Ok` (or a map we could not
/// serialize or parse, as `SerializationFailure` / `ParseFailure`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    pub const NOT_FOUND: HostError = HostError(1);
    pub const SERIALIZATION_FAILURE: HostError = HostError(3);
    pub const PARSE_FAILURE: HostError = HostError(4);
    pub const CAS_MISMATCH: HostError = HostError(8);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => return None,
        })
    }
}

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "status {}", self.0),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<pairs::Malformed> for HostError {
    fn from(_: pairs::Malformed) -> Self {
        HostError::PARSE_FAILURE
    }
}

type HostResult<T> = Result<T, HostError>;

fn check(status: u32) -> HostResult<()> {
    match status {
        0 => Ok(()),
        other => Err(HostError(other)),
    }
}

/// What a stream callback answers the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    PluginConfiguration = 7,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpResponseHeaders = 2,
    #[allow(dead_code)]
    GrpcReceiveInitialMetadata = 4,
    #[allow(dead_code)]
    GrpcReceiveTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum StreamType {
    HttpRequest = 0,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
}

// Statuses and enums cross as plain u32: a value the host adds later must
// not be undefined behaviour in a Rust enum.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
    #[allow(dead_code)]
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
    #[allow(dead_code)]
    fn proxy_grpc_cancel(token: u32) -> u32;
    #[allow(dead_code)]
    fn proxy_grpc_close(token: u32) -> u32;
    #[allow(dead_code)]
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Takes ownership of a buffer the host allocated with
/// `proxy_on_memory_allocate` (a boxed byte slice of exactly `size`).
/// Null means "no value".
///
/// # Safety
/// `data` is null or came from `proxy_on_memory_allocate(size)`, and is
/// handed back once.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the allocation is a `Box<[u8]>` of `size` bytes (align 1),
    // which is a Vec with length and capacity `size`.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Calls a hostcall that returns a buffer through two out-pointers; the
/// buffer is freed whatever happens next.
fn returned_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    check(call(&mut data, &mut size))?;
    // SAFETY: on Ok the host wrote null or a buffer it allocated through us.
    Ok(unsafe { take_host_buffer(data, size) })
}

/// Pointer and length of an optional byte slice, null when absent.
fn raw(bytes: Option<&[u8]>) -> (*const u8, usize) {
    bytes.map_or((null(), 0), |b| (b.as_ptr(), b.len()))
}

pub fn log(level: LogLevel, message: &str) -> HostResult<()> {
    // SAFETY: the message is a live slice for the duration of the call.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// Envoy's level for the `wasm` component.
pub fn log_level() -> HostResult<LogLevel> {
    let mut level: u32 = 0;
    // SAFETY: `level` outlives the call.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

pub fn current_time_nanos() -> HostResult<u64> {
    let mut nanos: u64 = 0;
    // SAFETY: `nanos` outlives the call.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

pub fn set_tick_period_millis(millis: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Up to `max` bytes of a buffer from `start`; `None` when the host has no
/// such buffer here (`NotFound`) or it is empty.
pub fn get_buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let result = returned_buffer(|data, size| {
        // SAFETY: the out-pointers are live locals of `returned_buffer`.
        unsafe { proxy_get_buffer_bytes(kind as u32, start, max, data, size) }
    });
    match result {
        Err(HostError::NOT_FOUND) => Ok(None),
        other => other,
    }
}

/// Every pair of a header map, values as bytes (they need not be UTF-8).
/// Names that are not UTF-8 are replaced, never unwrapped.
pub fn get_map(kind: MapType) -> HostResult<Vec<(String, Vec<u8>)>> {
    let bytes = returned_buffer(|data, size| {
        // SAFETY: the out-pointers are live locals of `returned_buffer`.
        unsafe { proxy_get_header_map_pairs(kind as u32, data, size) }
    })?
    .unwrap_or_default();
    Ok(pairs::decode(&bytes)?
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect())
}

/// One header's value; `Ok(None)` when it is absent.
pub fn get_map_value(kind: MapType, name: &str) -> HostResult<Option<Vec<u8>>> {
    let result = returned_buffer(|data, size| {
        // SAFETY: `name` is live; the out-pointers are live locals.
        unsafe { proxy_get_header_map_value(kind as u32, name.as_ptr(), name.len(), data, size) }
    });
    match result {
        Ok(value) => Ok(Some(value.unwrap_or_default())),
        Err(HostError::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets `name` to `value` (replacing every value), or removes it for `None`.
pub fn set_map_value(kind: MapType, name: &str, value: Option<&[u8]>) -> HostResult<()> {
    // SAFETY: the slices are live for the duration of the call.
    check(unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                kind as u32,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(kind as u32, name.as_ptr(), name.len()),
        }
    })
}

pub fn add_map_value(kind: MapType, name: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: the slices are live for the duration of the call.
    check(unsafe {
        proxy_add_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// A property by path; `Ok(None)` when the host has none.
pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = pairs::property_path(path);
    let result = returned_buffer(|data, size| {
        // SAFETY: `path` is live; the out-pointers are live locals.
        unsafe { proxy_get_property(path.as_ptr(), path.len(), data, size) }
    });
    match result {
        Err(HostError::NOT_FOUND) => Ok(None),
        other => other,
    }
}

pub fn set_property(path: &[&str], value: Option<&[u8]>) -> HostResult<()> {
    let path = pairs::property_path(path);
    let (value, value_len) = raw(value);
    // SAFETY: the path and value are live for the duration of the call.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value, value_len) })
}

/// A shared-data value and its version (CAS); `(None, None)` when absent.
pub fn get_shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
    let mut cas: u32 = 0;
    let result = returned_buffer(|data, size| {
        // SAFETY: `key` and `cas` are live; the out-pointers are live locals.
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas) }
    });
    match result {
        Ok(value) => Ok((value, (cas != 0).then_some(cas))),
        Err(HostError::NOT_FOUND) => Ok((None, None)),
        Err(e) => Err(e),
    }
}

/// Stores a shared-data value; with `cas`, only over that version
/// (`CAS_MISMATCH` otherwise).
pub fn set_shared_data(key: &str, value: Option<&[u8]>, cas: Option<u32>) -> HostResult<()> {
    let (value, value_len) = raw(value);
    // SAFETY: the key and value are live for the duration of the call.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value, value_len, cas.unwrap_or(0))
    })
}

pub fn continue_stream(kind: StreamType) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(kind as u32) })
}

/// Answers the current stream locally (no gRPC status).
pub fn send_local_response(status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> HostResult<()> {
    let headers = pairs::encode(headers).map_err(|_| HostError::SERIALIZATION_FAILURE)?;
    // SAFETY: the body and headers are live for the duration of the call.
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Sends an HTTP call to `cluster`; returns its token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
    timeout_millis: u32,
) -> HostResult<u32> {
    let headers = pairs::encode(headers).map_err(|_| HostError::SERIALIZATION_FAILURE)?;
    let trailers =
        pairs::encode::<&[u8], &[u8]>(&[]).map_err(|_| HostError::SERIALIZATION_FAILURE)?;
    let (body, body_len) = raw(body);
    let mut token: u32 = 0;
    // SAFETY: every slice and `token` are live for the duration of the call.
    check(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body,
            body_len,
            trailers.as_ptr(),
            trailers.len(),
            timeout_millis,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Sends a unary gRPC call (`message` is the serialized request); returns
/// its token. The reply arrives in `proxy_on_grpc_receive` / `_close`.
pub fn grpc_call(
    cluster: &[u8],
    service: &str,
    method: &str,
    initial_metadata: &[(&str, &[u8])],
    message: &[u8],
    timeout_millis: u32,
) -> HostResult<u32> {
    let metadata = pairs::encode(initial_metadata).map_err(|_| HostError::SERIALIZATION_FAILURE)?;
    let mut token: u32 = 0;
    // SAFETY: every slice and `token` are live for the duration of the call.
    check(unsafe {
        proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout_millis,
            &mut token,
        )
    })?;
    Ok(token)
}

#[allow(dead_code)] // the passthrough over gRPC builds on it
pub fn grpc_cancel(token: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_grpc_cancel(token) })
}

#[allow(dead_code)] // the passthrough over gRPC builds on it
pub fn grpc_close(token: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_grpc_close(token) })
}

/// The status of the last gRPC reply: code and message (lossy UTF-8).
pub fn get_status() -> HostResult<(u32, String)> {
    let mut code: u32 = 0;
    let message = returned_buffer(|data, size| {
        // SAFETY: `code` and the out-pointers are live for the call.
        unsafe { proxy_get_status(&mut code, data, size) }
    })?
    .unwrap_or_default();
    Ok((code, String::from_utf8_lossy(&message).into_owned()))
}

/// Makes `context_id` the context later hostcalls of this callback act on.
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context_id) })
}

pub fn define_metric(kind: MetricType, name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    // SAFETY: `name` and `id` are live for the duration of the call.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> HostResult<()> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, offset) })
}
