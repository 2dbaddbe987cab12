//! Result-returning wrappers over the hostcalls we use.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::UNIX_EPOCH;

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
