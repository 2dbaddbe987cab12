//! Stage 2: passthrough auth. The filter asks an external auth service
//! whether the request may go on, with the semantics of Envoy's `ext_authz`
//! over either transport (`http_service`: [`http`], `grpc_service`:
//! [`grpc`]), plus what Envoy lacks: a decision cache, and the service's
//! identity headers stripped from the client's request. The decision
//! semantics live here, shared: [`AuthDecision`], `failure_mode_allow`,
//! `status_on_error`, header stripping, the cache, per-route rules, claims
//! to the service. A transport only builds the check and reads the answer.

pub mod cache;
pub mod config;
pub mod grpc;
pub mod http;
pub mod proto;

use crate::callout::{CalloutRequest, GrpcCall};
use crate::jwt::claims::header_value;
use crate::jwt::Identity;
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use crate::stats::Counter;
use cache::DecisionKey;
pub use config::ExtAuthz;
use config::Transport;
use std::collections::BTreeMap;

/// Header Envoy's `ext_authz` adds when an auth-service error was let through.
pub const FAILURE_MODE_ALLOWED_HEADER: &str = "x-envoy-auth-failure-mode-allowed";
/// At most this much of a denial's body is read and sent to the client.
pub const MAX_DENIED_BODY_BYTES: usize = 64 * 1024;
/// Header telling the auth service whether the body it got was cut.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// Filter state with the service's `dynamic_metadata` (JSON), for access logs.
pub const METADATA_PROPERTY: &str = "ai_auth.ext_authz.dynamic_metadata";

/// What an allow does, in the order Envoy's `ext_authz` applies it:
/// overwrite, add, append to an existing value, add if absent, overwrite
/// if present, then remove; then the query; `client` goes to the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Headers that overwrite the request's.
    pub upstream_set: Vec<(String, String)>,
    /// Headers added to the request's (another value of the name).
    pub upstream_append: Vec<(String, String)>,
    /// Appended to an existing header's value with `,`; nothing when absent.
    pub upstream_append_existing: Vec<(String, String)>,
    pub upstream_add_if_absent: Vec<(String, String)>,
    pub upstream_overwrite_if_exists: Vec<(String, String)>,
    /// Removed from the request (never pseudo-headers nor `host`).
    pub upstream_remove: Vec<String>,
    /// Headers added to the client's response.
    pub client: Vec<(String, String)>,
    /// Query parameters set (replacing any of the name) and removed.
    pub query_set: Vec<(String, String)>,
    pub query_remove: Vec<String>,
    /// The service's dynamic metadata as JSON, for filter state.
    pub metadata: Option<String>,
}

/// What the auth service said, before `failure_mode_allow` is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    Allow(Allowed),
    Deny {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No usable answer. Turned into a denial (`status_on_error`) or, only
    /// through `failure_mode_allow`, into an allow.
    Error(ErrorKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Timeout, reset, connection refused, a reply that was not HTTP or
    /// whose status is not one (outside 100-599).
    NoResponse,
    /// The service answered 5xx.
    ServerError(u16),
    /// The host could not send the call (unknown cluster...).
    DispatchFailed,
    /// The gRPC call failed with this status (timeout, unavailable...).
    GrpcStatus(u32),
    /// A gRPC reply that is no `CheckResponse` (or too large).
    Malformed,
}

/// The check for one request, in its transport.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Http(CalloutRequest),
    Grpc(GrpcCall),
}

/// A header name the filter will put on a request: lowercase token characters.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

impl ErrorKind {
    pub fn describe(self) -> String {
        match self {
            ErrorKind::NoResponse => {
                "no valid response (timeout, reset, not HTTP, or a status outside 100-599)".into()
            }
            ErrorKind::ServerError(s) => format!("auth service answered {s}"),
            ErrorKind::DispatchFailed => "the call could not be sent".into(),
            ErrorKind::GrpcStatus(code) => format!("the gRPC call failed with status {code}"),
            ErrorKind::Malformed => "the reply is not a CheckResponse".into(),
        }
    }
}

/// The auth service's denial as it sent it. When it sent a 4xx without a body, the
/// client gets one of ours instead (in the request's error format), so an
/// SDK has a reason to show; the service's headers go with either (but
/// `content-type` then describes our body).
fn denial(status: u16, headers: &[(String, String)], body: &[u8]) -> LocalReply {
    let details = format!("ext_authz_denied_{status}");
    if body.is_empty() && (400..500).contains(&status) {
        let mut reply = LocalReply::json_error(
            status,
            "access_denied",
            "the authorization service denied the request",
        );
        reply.headers.extend(
            headers
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
                .cloned(),
        );
        reply.details = details;
        return reply;
    }
    LocalReply {
        status,
        headers: headers.to_vec(),
        body: body.to_vec(),
        error: None,
        details,
    }
}

/// The stage's answer once `failure_mode_allow` has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        ops: Vec<HeaderOp>,
        client_headers: Vec<(String, String)>,
        /// For filter state ([`METADATA_PROPERTY`]).
        metadata: Option<String>,
    },
    Denied(LocalReply),
}

impl ExtAuthz {
    /// Applies `failure_mode_allow` and turns a decision into edits or a reply.
    /// An error becomes an allow only here, and only when configured.
    pub fn resolve(
        &self,
        decision: &AuthDecision,
        req: &RequestView,
        counters: &mut Vec<Counter>,
    ) -> Verdict {
        match decision {
            AuthDecision::Allow(allowed) => {
                counters.push(Counter::ExtAuthzOk);
                let mut ops = self.strip_service_owned_headers(req);
                ops.extend(allowed_ops(allowed, req));
                Verdict::Allowed {
                    ops,
                    client_headers: allowed.client.clone(),
                    metadata: allowed.metadata.clone(),
                }
            }
            AuthDecision::Deny {
                status,
                headers,
                body,
            } => {
                counters.push(Counter::ExtAuthzDenied);
                Verdict::Denied(denial(*status, headers, body))
            }
            AuthDecision::Error(kind) => {
                counters.push(Counter::ExtAuthzError);
                if self.failure_mode_allow {
                    counters.push(Counter::ExtAuthzFailureModeAllowed);
                    let mut ops = self.strip_service_owned_headers(req);
                    if self.failure_mode_allow_header_add {
                        ops.push(HeaderOp::set(FAILURE_MODE_ALLOWED_HEADER, "true"));
                    }
                    Verdict::Allowed {
                        ops,
                        client_headers: Vec::new(),
                        metadata: None,
                    }
                } else {
                    let mut reply = LocalReply::json_error(
                        self.status_on_error,
                        "authorization_unavailable",
                        "the authorization service did not give a usable answer",
                    );
                    reply.details = format!("ext_authz_error: {}", kind.describe());
                    Verdict::Denied(reply)
                }
            }
        }
    }

    /// Headers the auth service owns (`allowed_upstream_headers`) never come
    /// from the client, whether or not the service sets them this time.
    pub fn strip_service_owned_headers(&self, req: &RequestView) -> Vec<HeaderOp> {
        let mut names: Vec<&str> = req
            .headers()
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| self.upstream_headers.matches(k))
            .collect();
        names.dedup();
        names.into_iter().map(HeaderOp::remove).collect()
    }

    pub fn is_grpc(&self) -> bool {
        matches!(self.transport, Transport::Grpc(_))
    }

    /// Whether the stage runs for this request (per-route `disabled`).
    pub fn enabled_for(&self, req: &RequestView) -> bool {
        self.rules
            .iter()
            .find(|r| r.route.matches(req))
            .is_none_or(|r| !r.disabled)
    }

    /// `context_extensions` for this request: the stage's, then the first
    /// matching rule's over them.
    pub fn context_extensions_for(&self, req: &RequestView) -> BTreeMap<String, String> {
        let mut out = self.context_extensions.clone();
        if let Some(rule) = self.rules.iter().find(|r| r.route.matches(req)) {
            out.extend(rule.context_extensions.clone());
        }
        out
    }

    /// The check for this request in the configured transport, and its
    /// decision-cache key (when the cache is on), computed from the check
    /// as it will be sent.
    pub fn check(
        &self,
        req: &RequestView,
        identities: &[Identity],
        body: Option<(&[u8], bool)>,
        now: u64,
    ) -> (Check, Option<DecisionKey>) {
        match &self.transport {
            Transport::Http(svc) => {
                let call = self.check_request(svc, req, identities, body);
                let key = self.http_cache_key(&call, req);
                (Check::Http(call), key)
            }
            Transport::Grpc(svc) => {
                let mut message = self.grpc_check_request(req, identities, body, now);
                let key = self.grpc_cache_key(svc, &mut message, req);
                (Check::Grpc(self.grpc_call(svc, &message)), key)
            }
        }
    }

    /// The claim headers of the passthrough on the client's request: the
    /// verified claim's value, or removed when the claim is absent, so a
    /// client-sent header of that name never goes on (as the JWT stage's
    /// own claim headers).
    pub fn claim_header_ops(&self, identities: &[Identity]) -> Vec<HeaderOp> {
        self.claims_to_headers
            .iter()
            .map(|(name, path)| {
                match identities
                    .iter()
                    .find_map(|id| id.claims.lookup(path).and_then(header_value))
                {
                    Some(value) => HeaderOp::set(name.clone(), value),
                    None => HeaderOp::remove(name.clone()),
                }
            })
            .collect()
    }
}

/// The header and query edits of an allow, resolved against the request
/// as it is now (for the conditional kinds).
fn allowed_ops(a: &Allowed, req: &RequestView) -> Vec<HeaderOp> {
    let mut ops = Vec::new();
    let mut view = req.clone();
    let push = |op: HeaderOp, view: &mut RequestView, ops: &mut Vec<HeaderOp>| {
        view.apply(std::slice::from_ref(&op));
        ops.push(op);
    };
    for (k, v) in &a.upstream_set {
        push(HeaderOp::set(k.clone(), v.clone()), &mut view, &mut ops);
    }
    for (k, v) in &a.upstream_append {
        push(HeaderOp::Append(k.clone(), v.clone()), &mut view, &mut ops);
    }
    for (k, v) in &a.upstream_append_existing {
        let current: Vec<&str> = view.header_values(k).collect();
        if !current.is_empty() {
            let joined = format!("{},{v}", current.join(","));
            push(HeaderOp::set(k.clone(), joined), &mut view, &mut ops);
        }
    }
    for (k, v) in &a.upstream_add_if_absent {
        if view.header(k).is_none() {
            push(HeaderOp::Append(k.clone(), v.clone()), &mut view, &mut ops);
        }
    }
    for (k, v) in &a.upstream_overwrite_if_exists {
        if view.header(k).is_some() {
            push(HeaderOp::set(k.clone(), v.clone()), &mut view, &mut ops);
        }
    }
    for k in &a.upstream_remove {
        push(HeaderOp::remove(k.clone()), &mut view, &mut ops);
    }
    if !a.query_set.is_empty() || !a.query_remove.is_empty() {
        let path =
            crate::request::path_with_query_edits(view.path(), &a.query_set, &a.query_remove);
        if path != view.path() {
            push(HeaderOp::set(":path", path), &mut view, &mut ops);
        }
    }
    ops
}

#[cfg(test)]
mod tests;
