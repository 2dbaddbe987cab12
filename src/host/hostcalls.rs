//! Result-returning wrappers over the hostcalls we use.

use crate::callout::{CalloutRequest, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Envoy's level for the `wasm` component, so disabled levels cost no hostcall.
pub fn host_log_level() -> LogLevel {
    hostcalls::get_log_level().unwrap_or(LogLevel::Info)
}

/// Seconds since the Unix epoch by the host's clock.
pub fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

pub fn plugin_configuration() -> Result<Vec<u8>, Status> {
    Ok(hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)?.unwrap_or_default())
}

/// Request headers as bytes: values that are not UTF-8 must not abort the VM
/// (the SDK's string variant unwraps `from_utf8`).
pub fn request_headers() -> Result<Vec<(String, Vec<u8>)>, Status> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), Status> {
    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value.map(str::as_bytes))
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::add_map_value_bytes(MapType::HttpRequestHeaders, name, value.as_bytes())
}

pub fn send_response(status: u16, headers: &[(String, String)], body: &[u8]) -> Result<(), Status> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hostcalls::send_http_response(u32::from(status), headers, Some(body))
}

pub fn define_counter(name: &str) -> Result<u32, Status> {
    hostcalls::define_metric(MetricType::Counter, name)
}

pub fn increment(metric: u32) {
    let _ = hostcalls::increment_metric(metric, 1);
}

/// A string attribute of the stream (`xds.cluster_name`, else the older `cluster_name`).
pub fn route_property(name: &str) -> Option<String> {
    let read = |path: Vec<&str>| {
        hostcalls::get_property(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    };
    read(vec!["xds", name]).or_else(|| read(vec![name]))
}

/// Envoy stores it as filter state `wasm.<name>`, readable by access logs.
pub fn set_filter_state(name: &str, value: &str) {
    if let Err(status) = hostcalls::set_property(vec![name], Some(value.as_bytes())) {
        log::debug!("ai_auth: cannot set property {name}: {status:?}");
    }
}

pub fn resume_request() -> Result<(), Status> {
    hostcalls::resume_http_request()
}

pub fn add_response_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value.as_bytes())
}

/// The first `max` bytes of the buffered request body.
pub fn request_body(max: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max)
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn dispatch(request: &CalloutRequest) -> Result<u32, Status> {
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = (!request.body.is_empty()).then_some(request.body.as_slice());
    hostcalls::dispatch_http_call(&request.cluster, headers, body, vec![], request.timeout)
}

/// Callout reply headers; values that are not UTF-8 are replaced, never unwrapped.
pub fn callout_response_headers() -> Vec<(String, String)> {
    hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// `:status` of the callout reply; `None` when there was no HTTP answer.
pub fn callout_status() -> Option<u16> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
}

pub fn callout_response_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// proxy-wasm shared data: one store for every VM of the plugin.
pub struct SharedData;

impl SharedStore for SharedData {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        hostcalls::get_shared_data(key)
            .ok()
            .and_then(|(value, _cas)| value)
    }

    fn set(&self, key: &str, value: &[u8]) {
        // A lost race (CAS mismatch) only costs a later cache miss.
        if let Err(status) = hostcalls::set_shared_data(key, Some(value), None) {
            log::debug!("ai_auth: cannot store shared data: {status:?}");
        }
    }
}

pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    hostcalls::set_tick_period(period)
}

/// A shared-data value and its version (CAS).
pub fn shared_data_with_cas(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    hostcalls::get_shared_data(key)
}

pub fn set_shared(key: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_shared_data(key, Some(value), None) {
        log::warn!("ai_auth: cannot store shared data {key}: {status:?}");
    }
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    hostcalls::set_effective_context(context_id)
}
