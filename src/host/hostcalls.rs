//! The hostcalls the adapter uses, in the adapter's terms, over `abi`.
//! Each returns the host's status as a `Result` or degrades safely
//! (documented per function); none can panic.

use super::abi::{self, BufferType, HostError, MapType, MetricType, StreamType};
use crate::callout::{self, CalloutRequest, GrpcCall, SharedStore, StoreWrite};
use std::time::Duration;

/// Seconds since the Unix epoch by the host's clock; `None` when the host
/// cannot tell. Never a made-up 0: at 0 every expiry lies in the future.
pub fn now_secs() -> Option<u64> {
    abi::current_time_nanos()
        .ok()
        .map(|nanos| nanos / 1_000_000_000)
        .filter(|secs| *secs > 0)
}

pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    Ok(abi::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)?.unwrap_or_default())
}

/// Request headers as bytes: values that are not UTF-8 must not abort the VM.
pub fn request_headers() -> Result<Vec<(String, Vec<u8>)>, HostError> {
    abi::get_map(MapType::HttpRequestHeaders)
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    abi::set_map_value(MapType::HttpRequestHeaders, name, value.map(str::as_bytes))
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostError> {
    abi::add_map_value(MapType::HttpRequestHeaders, name, value.as_bytes())
}

fn as_pairs(headers: &[(String, String)]) -> Vec<(&str, &[u8])> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect()
}

pub fn send_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), HostError> {
    abi::send_local_response(u32::from(status), &as_pairs(headers), body)
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    abi::define_metric(MetricType::Counter, name)
}

/// A counter the host refuses to move is not worth failing a request for.
pub fn increment(metric: u32) {
    let _ = abi::increment_metric(metric, 1);
}

/// A string attribute of the stream (`xds.cluster_name`, else the older `cluster_name`).
pub fn route_property(name: &str) -> Option<String> {
    let read = |path: &[&str]| {
        abi::get_property(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    };
    read(&["xds", name]).or_else(|| read(&[name]))
}

/// Addresses and protocol of the request, for a gRPC check.
pub fn connection_info() -> crate::ext_authz::grpc::Connection {
    let read = |path: &[&str]| {
        abi::get_property(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    };
    crate::ext_authz::grpc::Connection {
        source: read(&["source", "address"]),
        destination: read(&["destination", "address"]),
        protocol: read(&["request", "protocol"]),
        body_received: 0,
    }
}

/// Hex SHA-256 of the downstream TLS client certificate (Envoy's
/// `connection.sha256_peer_certificate_digest`); `None` without one.
pub fn peer_certificate_sha256() -> Option<String> {
    abi::get_property(&["connection", "sha256_peer_certificate_digest"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// Envoy stores it as filter state `wasm.<name>`, readable by access logs.
pub fn set_filter_state(name: &str, value: &str) {
    if let Err(status) = abi::set_property(&[name], Some(value.as_bytes())) {
        log::debug!("ai_auth: cannot set property {name}: {status:?}");
    }
}

pub fn resume_request() -> Result<(), HostError> {
    abi::continue_stream(StreamType::HttpRequest)
}

pub fn add_response_header(name: &str, value: &str) -> Result<(), HostError> {
    abi::add_map_value(MapType::HttpResponseHeaders, name, value.as_bytes())
}

/// The first `max` bytes of the buffered request body; empty if the host
/// has none.
pub fn request_body(max: usize) -> Vec<u8> {
    abi::get_buffer(BufferType::HttpRequestBody, 0, max)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The host counts call timeouts in u32 milliseconds; configurations
/// beyond that are refused at load, so saturating never changes a value.
fn timeout_millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

pub fn dispatch(request: &CalloutRequest) -> Result<u32, HostError> {
    let body = (!request.body.is_empty()).then_some(request.body.as_slice());
    abi::http_call(
        &request.cluster,
        &as_pairs(&request.headers),
        body,
        timeout_millis(request.timeout),
    )
}

/// Says so when a reply carries a `:status` that is no HTTP status.
fn note_invalid_status(raw: Option<&str>) {
    if let Some(note) = callout::invalid_status_note(raw) {
        log::debug!("ai_auth: callout {note}");
    }
}

/// Callout reply headers; values that are not UTF-8 are replaced. Empty
/// when there was no HTTP answer (the host then has no headers and says
/// `BadArgument` or `NotFound`).
pub fn callout_response_headers() -> Vec<(String, String)> {
    let headers: Vec<(String, String)> = abi::get_map(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    note_invalid_status(
        headers
            .iter()
            .find(|(k, _)| k == ":status")
            .map(|(_, v)| v.as_str()),
    );
    headers
}

/// `:status` of the callout reply; `None` when there was no valid HTTP
/// answer (the host has no headers after a failed call and says
/// `BadArgument` or `NotFound`; or the status is outside 100-599).
pub fn callout_status() -> Option<u16> {
    let raw = abi::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())?;
    note_invalid_status(Some(&raw));
    callout::parse_status(&raw)
}

/// Up to `size` bytes of the callout reply body; empty when there is none.
pub fn callout_response_body(size: usize) -> Vec<u8> {
    abi::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Sends a unary gRPC call; its reply comes to `proxy_on_grpc_receive`
/// (OK) or `proxy_on_grpc_close` (any other status).
pub fn grpc_dispatch(call: &GrpcCall) -> Result<u32, HostError> {
    let target = &call.target;
    let metadata: Vec<(&str, &[u8])> = target
        .initial_metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    // The host takes the target as bytes: a serialized GrpcService.
    abi::grpc_call(
        &target.upstream,
        &target.service,
        &target.method,
        &metadata,
        &call.message,
        timeout_millis(target.timeout),
    )
}

/// Up to `size` bytes of a gRPC reply message.
pub fn grpc_reply_message(size: usize) -> Vec<u8> {
    abi::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The status message of the gRPC call that just closed (remote text).
pub fn grpc_status_message() -> String {
    abi::get_status().map(|(_, m)| m).unwrap_or_default()
}

/// proxy-wasm shared data: one store for every VM of the plugin.
pub struct SharedData;

impl SharedStore for SharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        abi::get_shared_data(key)
            .ok()
            .and_then(|(value, _cas)| value)
    }

    fn set(&self, key: &str, value: &[u8]) {
        // A lost race (CAS mismatch) only costs a later cache miss.
        if let Err(status) = abi::set_shared_data(key, Some(value), None) {
            log::debug!("ai_auth: cannot store shared data: {status:?}");
        }
    }

    fn get_versioned(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match abi::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            Ok((None, Some(cas))) => Some((Vec::new(), cas)),
            _ => None,
        }
    }

    fn set_versioned(&self, key: &str, value: &[u8], version: u32) -> StoreWrite {
        match abi::set_shared_data(key, Some(value), Some(version)) {
            Ok(()) => StoreWrite::Written,
            Err(HostError::CAS_MISMATCH) => StoreWrite::Conflict,
            Err(status) => {
                log::debug!("ai_auth: cannot store shared data: {status:?}");
                StoreWrite::Failed
            }
        }
    }
}

pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    abi::set_tick_period_millis(u32::try_from(period.as_millis()).unwrap_or(u32::MAX))
}

/// A shared-data value and its version (CAS).
pub fn shared_data_with_cas(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    abi::get_shared_data(key)
}

pub fn set_shared(key: &str, value: &[u8]) {
    if let Err(status) = abi::set_shared_data(key, Some(value), None) {
        log::warn!("ai_auth: cannot store shared data {key}: {status:?}");
    }
}

/// Stores `value` only if the key is still at version `cas` (`None`: not
/// there yet); returns whether it was stored.
pub fn set_shared_if(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    abi::set_shared_data(key, Some(value), cas).is_ok()
}

pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    abi::set_effective_context(context_id)
}
