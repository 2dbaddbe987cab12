//! The passthrough over gRPC: Envoy's `envoy.service.auth.v3.Authorization/Check`,
//! built as Envoy's `ext_authz` builds it and answered as Envoy reads it.
//! Only building the check and reading the answer live here; the decision
//! semantics are the stage's (`super`).

use super::cache::{DecisionKey, KeyHasher};
use super::config::GrpcSettings;
use super::proto::{
    Address, AttributeContext, CheckRequest, CheckResponse, EnvoyGrpc, GrpcService, HeaderMap,
    HeaderValue, HeaderValueOption, HttpRequest, ListValue, Metadata, Peer, Request, SocketAddress,
    Struct, Timestamp, Value,
};
use super::{Allowed, AuthDecision, ErrorKind, ExtAuthz, PARTIAL_BODY_HEADER};
use crate::callout::{GrpcCall, GrpcReply, GrpcTarget};
use crate::jwt::Identity;
use crate::request::RequestView;
use crate::response::is_valid_header_value;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const SERVICE: &str = "envoy.service.auth.v3.Authorization";
pub const METHOD: &str = "Check";
/// The namespace Envoy's `jwt_authn` publishes verified claims under.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";
/// A `CheckResponse` longer than this is an error (they are small; a
/// denial's body is capped at `MAX_DENIED_BODY_BYTES` anyway).
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Where the checks of one `grpc_service` go: the host's target (a
/// serialized `GrpcService` naming the cluster and `:authority`), the
/// method, metadata and timeout.
pub fn target(
    cluster: &str,
    authority: &str,
    initial_metadata: &[(String, String)],
    timeout: Duration,
) -> GrpcTarget {
    GrpcTarget {
        cluster: cluster.to_string(),
        upstream: GrpcService {
            envoy_grpc: Some(EnvoyGrpc {
                cluster_name: cluster.to_string(),
                authority: authority.to_string(),
            }),
        }
        .encode_to_vec(),
        service: SERVICE.to_string(),
        method: METHOD.to_string(),
        initial_metadata: initial_metadata.to_vec(),
        timeout,
    }
}

/// The request facts Envoy puts in a `CheckRequest` that are not headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// `ip:port` of the downstream peer (`source.address`).
    pub source: Option<String>,
    /// `ip:port` the downstream connected to (`destination.address`).
    pub destination: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`... (`request.protocol`).
    pub protocol: Option<String>,
    /// Body bytes Envoy had buffered when the body was read (`request.size`,
    /// which may exceed what a cut body sends).
    pub body_received: usize,
}

fn peer(address: Option<&str>) -> Option<Peer> {
    let address = address?;
    // `ip:port`, `[v6]:port`.
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Peer {
        address: Some(Address {
            socket_address: Some(SocketAddress {
                protocol: 0,
                address: host.to_string(),
                port_value: port.parse().unwrap_or(0),
            }),
        }),
        ..Default::default()
    })
}

/// A `header_map` entry as Envoy writes it: the value only in `raw_value`.
fn raw_header(name: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: name.to_string(),
        value: String::new(),
        raw_value: value.as_bytes().to_vec(),
    }
}

/// A JSON value as `google.protobuf.Value`.
pub fn to_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let mut out = Value::default();
    match v {
        J::Null => out.null_value = Some(0),
        J::Bool(b) => out.bool_value = Some(*b),
        J::Number(n) => out.number_value = Some(n.as_f64().unwrap_or(0.0)),
        J::String(s) => out.string_value = Some(s.clone()),
        J::Array(a) => {
            out.list_value = Some(ListValue {
                values: a.iter().map(to_value).collect(),
            })
        }
        J::Object(o) => out.struct_value = Some(to_struct(o)),
    }
    out
}

fn to_struct(o: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

/// `google.protobuf.Struct` as JSON (for filter state).
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    if let Some(s) = &v.struct_value {
        return struct_to_json(s);
    }
    if let Some(l) = &v.list_value {
        return J::Array(l.values.iter().map(value_to_json).collect());
    }
    if let Some(s) = &v.string_value {
        return J::String(s.clone());
    }
    if let Some(b) = v.bool_value {
        return J::Bool(b);
    }
    if let Some(n) = v.number_value {
        return serde_json::Number::from_f64(n).map_or(J::Null, J::Number);
    }
    J::Null
}

impl ExtAuthz {
    /// The `CheckRequest` for this request, as Envoy's `ext_authz` builds
    /// it: the request headers `allowed_headers` and `disallowed_headers`
    /// let through (pseudo-headers included, names lowercase; repeats
    /// joined with `,` in `headers`, or each its own `header_map` entry
    /// with `encode_raw_headers`), method, path, host, scheme, protocol, the
    /// addresses, `context_extensions`, the verified JWT claims as
    /// `jwt_authn` metadata, and the body when configured.
    pub fn grpc_check_request(
        &self,
        req: &RequestView,
        identities: &[Identity],
        body: Option<(&[u8], bool)>,
        now: u64,
    ) -> CheckRequest {
        // A request without a body has nothing buffered: Envoy then sends
        // neither the body nor the partial-body header, even in body mode.
        let body = body.filter(|_| req.has_body());
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        // `encode_raw_headers`: each value its own entry, in the request's
        // order, pseudo-headers first (as Envoy iterates its header map).
        let mut raw = self.encode_raw_headers.then(HeaderMap::default);
        let all = req
            .pseudo_headers()
            .filter(|(_, v)| !v.is_empty())
            .chain(req.headers().iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (name, value) in all {
            // A client's x-envoy-auth-partial-body never reaches the service.
            if name == PARTIAL_BODY_HEADER
                || self.disallowed_headers.matches(name)
                || self
                    .allowed_headers
                    .as_ref()
                    .is_some_and(|l| !l.matches(name))
            {
                continue;
            }
            if let Some(map) = &mut raw {
                map.headers.push(raw_header(name, value));
                continue;
            }
            headers
                .entry(name.to_string())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
        let mut http = HttpRequest {
            id: req.header("x-request-id").unwrap_or_default().to_string(),
            method: req.method().to_string(),
            path: req.path().to_string(),
            host: req.authority().to_string(),
            scheme: req.scheme().to_string(),
            protocol: req.connection().protocol.clone().unwrap_or_default(),
            // Envoy sends the bytes it has received of the request: none
            // when the check goes at the headers, the buffered body else.
            size: body.map_or(0, |(bytes, _)| {
                i64::try_from(bytes.len().max(req.connection().body_received)).unwrap_or(i64::MAX)
            }),
            ..Default::default()
        };
        if let Some((bytes, partial)) = body {
            let flag = if partial { "true" } else { "false" };
            match &mut raw {
                Some(map) => map.headers.push(raw_header(PARTIAL_BODY_HEADER, flag)),
                None => {
                    headers.insert(PARTIAL_BODY_HEADER.to_string(), flag.to_string());
                }
            }
            if self
                .with_request_body
                .as_ref()
                .is_some_and(|b| b.pack_as_bytes)
            {
                http.raw_body = bytes.to_vec();
            } else {
                http.body = String::from_utf8_lossy(bytes).into_owned();
            }
        }
        http.headers = headers;
        http.header_map = raw;
        let mut jwt = Struct::default();
        for id in identities {
            jwt.fields
                .entry(id.provider.clone())
                .or_insert_with(|| Value {
                    struct_value: Some(to_struct(&id.claims.payload)),
                    ..Default::default()
                });
        }
        // Present even when empty, as Envoy sends it.
        let mut metadata_context = Metadata::default();
        if !jwt.fields.is_empty() {
            metadata_context
                .filter_metadata
                .insert(JWT_AUTHN_NAMESPACE.to_string(), jwt);
        }
        let mut source = peer(req.connection().source.as_deref());
        // Envoy names the downstream's service cluster in `source.service`.
        if let (Some(p), Some(service)) = (
            source.as_mut(),
            req.header("x-envoy-downstream-service-cluster"),
        ) {
            p.service = service.to_string();
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                source,
                destination: peer(req.connection().destination.as_deref()),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: i64::try_from(now).unwrap_or(i64::MAX),
                        nanos: 0,
                    }),
                    http: Some(http),
                }),
                context_extensions: self.context_extensions_for(req),
                metadata_context: Some(metadata_context),
                route_metadata_context: Some(Metadata::default()),
            }),
        }
    }

    /// The decision-cache key of a check: the `CheckRequest` as it will be
    /// sent, with what differs for every request of one caller left out
    /// (the request id, the time, the client's port), and the call's
    /// target and metadata; then the configured `key_headers`.
    pub fn grpc_cache_key(
        &self,
        svc: &GrpcSettings,
        check: &mut CheckRequest,
        req: &RequestView,
    ) -> Option<DecisionKey> {
        let cfg = self.decision_cache.as_ref()?;
        let mut h = KeyHasher::new(cfg.secret.as_ref()?, "grpc")?;
        h.field(svc.cluster.as_bytes());
        h.field(svc.authority.as_bytes());
        for (k, v) in &svc.initial_metadata {
            h.field(k.as_bytes());
            h.field(v.as_bytes());
        }
        // Taken out of the check for the key's encoding and put back (no
        // copy of the whole message per request).
        let varying = take_varying(check);
        h.field(b"\0check");
        h.field(&check.encode_to_vec());
        put_back_varying(check, varying);
        Some(h.finish(cfg, req))
    }

    /// The call to send for a check.
    pub fn grpc_call(&self, svc: &GrpcSettings, check: &CheckRequest) -> GrpcCall {
        GrpcCall {
            target: Arc::clone(&svc.target),
            message: check.encode_to_vec(),
        }
    }

    /// Reads the service's answer. `OK` allows; any other code denies (with
    /// `denied_response`, 403 and empty when unset); a failed call, a reply
    /// that is not a `CheckResponse` or is too large, is an error.
    pub fn grpc_decide(&self, reply: &GrpcReply) -> AuthDecision {
        let bytes = match reply {
            GrpcReply::Message(bytes) => bytes,
            GrpcReply::Failed { code, .. } => {
                return AuthDecision::Error(ErrorKind::GrpcStatus(*code))
            }
        };
        if bytes.len() > MAX_REPLY_BYTES {
            return AuthDecision::Error(ErrorKind::Malformed);
        }
        let Ok(response) = CheckResponse::decode(bytes.as_slice()) else {
            return AuthDecision::Error(ErrorKind::Malformed);
        };
        let code = response.status.as_ref().map_or(0, |s| s.code);
        if code != 0 {
            let denied = response.denied_response.unwrap_or_default();
            let status = denied
                .status
                .map(|s| s.code)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (200..=599).contains(c))
                .unwrap_or(403);
            // As Envoy's local reply: each header replaces any of its name;
            // one with `append: true` is not sent at all (Envoy keeps those
            // apart and applies only the others to a denial).
            let mut headers = Vec::new();
            for option in &denied.headers {
                if option.append.as_ref().is_some_and(|a| a.value) {
                    continue;
                }
                if let Some((name, value)) = header_option(option) {
                    headers.retain(|(k, _): &(String, String)| *k != name);
                    headers.push((name, value));
                }
            }
            let mut body = denied.body.into_bytes();
            body.truncate(super::MAX_DENIED_BODY_BYTES);
            return AuthDecision::Deny {
                status,
                headers,
                body,
            };
        }
        let ok = response.ok_response.unwrap_or_default();
        let mut allowed = Allowed::default();
        // Envoy reads only the deprecated `append` here, not `append_action`
        // (ext_authz_grpc_impl.cc, copyHeaderFieldIntoResponse): true appends
        // to an existing value, anything else overwrites or adds. Any name,
        // `:path` and `host` included (then routed anew), as Envoy does.
        for option in &ok.headers {
            let Some((name, value)) = header_option(option) else {
                continue;
            };
            if option.append.as_ref().is_some_and(|a| a.value) {
                allowed.upstream_append_existing.push((name, value));
            } else {
                allowed.upstream_set.push((name, value));
            }
        }
        allowed.upstream_remove = ok
            .headers_to_remove
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| !h.starts_with(':') && h != "host" && super::is_header_name(h))
            .collect();
        allowed.client = ok
            .response_headers_to_add
            .iter()
            .filter_map(header_option)
            .collect();
        allowed.query_set = ok
            .query_parameters_to_set
            .iter()
            .filter(|q| !q.key.is_empty())
            .map(|q| (q.key.clone(), q.value.clone()))
            .collect();
        allowed.query_remove = ok.query_parameters_to_remove.clone();
        allowed.metadata = ok
            .dynamic_metadata
            .as_ref()
            .or(response.dynamic_metadata.as_ref())
            .filter(|m| !m.fields.is_empty())
            .map(|m| struct_to_json(m).to_string());
        AuthDecision::Allow(allowed)
    }
}

/// What differs for every request of one caller: the time, the request
/// id (field and header), the client's port.
#[derive(Default)]
struct Varying {
    time: Option<Timestamp>,
    id: String,
    request_id_header: Option<String>,
    /// `header_map` positions of `x-request-id` and their values.
    request_id_raw: Vec<(usize, Vec<u8>)>,
    port: u32,
}

fn take_varying(check: &mut CheckRequest) -> Varying {
    let mut v = Varying::default();
    if let Some(attributes) = &mut check.attributes {
        if let Some(request) = &mut attributes.request {
            v.time = request.time.take();
            if let Some(http) = &mut request.http {
                v.id = std::mem::take(&mut http.id);
                v.request_id_header = http.headers.remove("x-request-id");
                if let Some(map) = &mut http.header_map {
                    for (i, h) in map.headers.iter_mut().enumerate() {
                        if h.key == "x-request-id" {
                            v.request_id_raw.push((i, std::mem::take(&mut h.raw_value)));
                        }
                    }
                }
            }
        }
        let source = attributes.source.as_mut().and_then(|p| p.address.as_mut());
        if let Some(socket) = source.and_then(|a| a.socket_address.as_mut()) {
            v.port = std::mem::take(&mut socket.port_value);
        }
    }
    v
}

fn put_back_varying(check: &mut CheckRequest, v: Varying) {
    if let Some(attributes) = &mut check.attributes {
        if let Some(request) = &mut attributes.request {
            request.time = v.time;
            if let Some(http) = &mut request.http {
                http.id = v.id;
                if let Some(value) = v.request_id_header {
                    http.headers.insert("x-request-id".to_string(), value);
                }
                if let Some(map) = &mut http.header_map {
                    for (i, value) in v.request_id_raw {
                        if let Some(h) = map.headers.get_mut(i) {
                            h.raw_value = value;
                        }
                    }
                }
            }
        }
        let source = attributes.source.as_mut().and_then(|p| p.address.as_mut());
        if let Some(socket) = source.and_then(|a| a.socket_address.as_mut()) {
            socket.port_value = v.port;
        }
    }
}

/// A header option's name and value (`raw_value` when `value` is empty);
/// `None` for a name or value no header may carry.
fn header_option(option: &HeaderValueOption) -> Option<(String, String)> {
    let header = option.header.as_ref()?;
    let name = header.key.to_ascii_lowercase();
    let value = if header.value.is_empty() && !header.raw_value.is_empty() {
        String::from_utf8(header.raw_value.clone()).ok()?
    } else {
        header.value.clone()
    };
    if !super::is_header_name(&name) && !name.starts_with(':') || !is_valid_header_value(&value) {
        return None;
    }
    Some((name, value))
}
