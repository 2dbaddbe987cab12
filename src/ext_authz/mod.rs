//! Stage 2: passthrough auth. The filter asks an external auth service over
//! HTTP whether the request may go on, with the semantics of Envoy's
//! `ext_authz` `http_service`, plus what Envoy lacks: a decision cache, and
//! the service's identity headers stripped from the client's request.

pub mod cache;
pub mod config;

use crate::callout::{CalloutRequest, CalloutResponse};
use crate::jwt::claims::header_value;
use crate::jwt::Identity;
use crate::request::RequestView;
use crate::response::{HeaderOp, LocalReply};
use crate::stats::Counter;
use cache::{DecisionKey, KeyHasher};
pub use config::ExtAuthz;

/// Header Envoy's `ext_authz` adds when an auth-service error was let through.
pub const FAILURE_MODE_ALLOWED_HEADER: &str = "x-envoy-auth-failure-mode-allowed";
/// At most this much of a denial's body is read and sent to the client.
pub const MAX_DENIED_BODY_BYTES: usize = 64 * 1024;
/// Header telling the auth service whether the body it got was cut.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// Response headers never copied from the auth service's answer.
const HOP_BY_HOP: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// What the auth service said, before `failure_mode_allow` is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    Allow {
        /// Headers that overwrite the request's.
        upstream_set: Vec<(String, String)>,
        /// Headers appended to the request's.
        upstream_append: Vec<(String, String)>,
        /// Headers added to the client's response (`allowed_client_headers_on_success`).
        client: Vec<(String, String)>,
    },
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
}

impl ErrorKind {
    pub fn describe(self) -> String {
        match self {
            ErrorKind::NoResponse => {
                "no valid response (timeout, reset, not HTTP, or a status outside 100-599)".into()
            }
            ErrorKind::ServerError(s) => format!("auth service answered {s}"),
            ErrorKind::DispatchFailed => "the call could not be sent".into(),
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
    },
    Denied(LocalReply),
}

impl ExtAuthz {
    /// The request to the auth service, built from the request as the
    /// earlier stages left it.
    pub fn check_request(
        &self,
        req: &RequestView,
        identities: &[Identity],
        body: Option<(&[u8], bool)>,
    ) -> CalloutRequest {
        let mut headers = vec![
            (":method".to_string(), req.method().to_string()),
            (
                ":path".to_string(),
                format!("{}{}", self.path_prefix, req.path()),
            ),
            // Envoy sends the original host; a request without one (HTTP/1.0)
            // still needs an authority for the call.
            (
                ":authority".to_string(),
                if req.authority().is_empty() {
                    self.server_uri.authority.clone()
                } else {
                    req.authority().to_string()
                },
            ),
        ];
        for (name, value) in req.headers() {
            let implicit = matches!(name.as_str(), "authorization" | "host");
            if (implicit || self.allowed_headers.matches(name)) && name != "content-length" {
                headers.push((name.clone(), value.clone()));
            }
        }
        for (name, path) in &self.claims_to_headers {
            headers.retain(|(k, _)| k != name);
            if let Some(value) = identities
                .iter()
                .find_map(|id| id.claims.lookup(path).and_then(header_value))
            {
                headers.push((name.clone(), value));
            }
        }
        let body = match body {
            Some((bytes, partial)) => {
                headers.push((PARTIAL_BODY_HEADER.to_string(), partial.to_string()));
                bytes.to_vec()
            }
            None => Vec::new(),
        };
        headers.push(("content-length".to_string(), body.len().to_string()));
        for (k, v) in &self.headers_to_add {
            headers.retain(|(name, _)| name != k);
            headers.push((k.clone(), v.clone()));
        }
        CalloutRequest {
            cluster: self.server_uri.cluster.clone(),
            headers,
            body,
            timeout: self.server_uri.timeout,
        }
    }

    /// The decision-cache key of a check request as it will be sent: every
    /// header (names in order, the values of one name in theirs), the
    /// cluster and the body, then the configured `key_headers` of the
    /// client's request. `None` when the cache is off or has no secret.
    pub fn http_cache_key(&self, check: &CalloutRequest, req: &RequestView) -> Option<DecisionKey> {
        let cfg = self.decision_cache.as_ref()?;
        let mut h = KeyHasher::new(cfg.secret.as_ref()?, "http")?;
        h.field(check.cluster.as_bytes());
        let mut headers: Vec<&(String, String)> = check.headers.iter().collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in headers {
            h.field(name.as_bytes());
            h.field(value.as_bytes());
        }
        h.field(b"\0body");
        h.field(&check.body);
        Some(h.finish(cfg, req))
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

    /// Maps the auth service's reply to a decision: 2xx allows, 3xx and 4xx
    /// deny, 1xx, 5xx, no answer and any status outside 100-599 are errors
    /// (only a real denial status is ever sent to the client).
    pub fn decide(&self, reply: &CalloutResponse) -> AuthDecision {
        let Some(status) = reply.status else {
            return AuthDecision::Error(ErrorKind::NoResponse);
        };
        let copyable = |name: &str| !HOP_BY_HOP.contains(&name) && !name.starts_with(':');
        match status {
            200..=299 => {
                let pick = |list: &config::HeaderList| -> Vec<(String, String)> {
                    reply
                        .headers
                        .iter()
                        .filter(|(k, _)| copyable(k) && list.matches(k))
                        .cloned()
                        .collect()
                };
                AuthDecision::Allow {
                    upstream_set: pick(&self.upstream_headers),
                    upstream_append: pick(&self.upstream_headers_to_append),
                    client: pick(&self.client_headers_on_success),
                }
            }
            500..=599 => AuthDecision::Error(ErrorKind::ServerError(status)),
            300..=499 => {
                // Envoy: with no allowed_client_headers, every header goes to the client.
                let headers = reply
                    .headers
                    .iter()
                    .filter(|(k, _)| {
                        copyable(k)
                            && k != "host"
                            && self.client_headers.as_ref().is_none_or(|l| l.matches(k))
                    })
                    .cloned()
                    .collect();
                AuthDecision::Deny {
                    status,
                    headers,
                    body: reply.body.clone(),
                }
            }
            // 1xx here, or a status `CalloutResponse` would not have let through.
            _ => AuthDecision::Error(ErrorKind::NoResponse),
        }
    }

    /// Applies `failure_mode_allow` and turns a decision into edits or a reply.
    /// An error becomes an allow only here, and only when configured.
    pub fn resolve(
        &self,
        decision: &AuthDecision,
        req: &RequestView,
        counters: &mut Vec<Counter>,
    ) -> Verdict {
        match decision {
            AuthDecision::Allow {
                upstream_set,
                upstream_append,
                client,
            } => {
                counters.push(Counter::ExtAuthzOk);
                let mut ops = self.strip_service_owned_headers(req);
                ops.extend(
                    upstream_set
                        .iter()
                        .map(|(k, v)| HeaderOp::set(k.clone(), v.clone())),
                );
                ops.extend(
                    upstream_append
                        .iter()
                        .map(|(k, v)| HeaderOp::Append(k.clone(), v.clone())),
                );
                Verdict::Allowed {
                    ops,
                    client_headers: client.clone(),
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

    /// Whether deciding on a reply with this status needs its headers: a
    /// denial (they may go to the client), or an allow when header lists or
    /// the cache (`Cache-Control`) use them. Reading them costs a call into
    /// the VM per reply, so the host asks first.
    pub fn needs_reply_headers(&self, status: Option<u16>) -> bool {
        match status {
            Some(200..=299) => {
                self.upstream_headers.is_set()
                    || self.upstream_headers_to_append.is_set()
                    || self.client_headers_on_success.is_set()
                    || self.decision_cache.is_some()
            }
            // 5xx is an error whatever the headers.
            Some(s) => s < 500,
            None => false,
        }
    }

    /// Only a denial carries the service's body to the client.
    pub fn needs_reply_body(&self, status: Option<u16>) -> bool {
        matches!(status, Some(s) if !(200..=299).contains(&s) && s < 500)
    }

    /// Whether the stage runs for this request (per-route `disabled`).
    pub fn enabled_for(&self, req: &RequestView) -> bool {
        self.rules
            .iter()
            .find(|(route, _)| route.matches(req))
            .is_none_or(|(_, disabled)| !disabled)
    }
}

#[cfg(test)]
mod tests;
