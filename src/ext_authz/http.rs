//! The passthrough over HTTP, as Envoy's `ext_authz` `http_service`: the
//! check request and the reading of the service's answer. The decision
//! semantics are the stage's (`super`).

use super::cache::{DecisionKey, KeyHasher};
use super::config::{self, HttpSettings};
use super::{Allowed, AuthDecision, ErrorKind, ExtAuthz, PARTIAL_BODY_HEADER};
use crate::callout::{CalloutRequest, CalloutResponse};
use crate::jwt::claims::header_value;
use crate::jwt::Identity;
use crate::request::RequestView;
use crate::vocab::sort_pairs;

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

impl ExtAuthz {
    /// The request to the auth service, built from the request as the
    /// earlier stages left it.
    pub fn check_request(
        &self,
        svc: &HttpSettings,
        req: &RequestView,
        identities: &[Identity],
        body: Option<(&[u8], bool)>,
    ) -> CalloutRequest {
        let mut headers = vec![
            (":method".to_string(), req.method().to_string()),
            (
                ":path".to_string(),
                format!("{}{}", svc.path_prefix, req.path()),
            ),
            // Envoy sends the original host; a request without one (HTTP/1.0)
            // still needs an authority for the call.
            (
                ":authority".to_string(),
                if req.authority().is_empty() {
                    svc.server_uri.authority.clone()
                } else {
                    req.authority().to_string()
                },
            ),
        ];
        for (name, value) in req.headers() {
            let implicit = matches!(name.as_str(), "authorization" | "host");
            let allowed = implicit
                || self
                    .allowed_headers
                    .as_ref()
                    .is_some_and(|l| l.matches(name));
            if !allowed || name == "content-length" || self.disallowed_headers.matches(name) {
                continue;
            }
            // As Envoy: repeats joined with `,` (its CheckRequest's map),
            // or each its own line with `encode_raw_headers`.
            match headers.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) if !self.encode_raw_headers => {
                    v.push(',');
                    v.push_str(value);
                }
                _ => headers.push((name.clone(), value.clone())),
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
            cluster: svc.server_uri.cluster.clone(),
            headers,
            body,
            timeout: svc.server_uri.timeout,
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
        sort_pairs(&mut headers, false);
        for (name, value) in headers {
            h.field(name.as_bytes());
            h.field(value.as_bytes());
        }
        h.field(b"\0body");
        h.field(&check.body);
        Some(h.finish(cfg, req))
    }

    /// Maps the auth service's reply to a decision: 2xx allows, 3xx and 4xx
    /// deny, 1xx, 5xx, no answer and any status outside 100-599 are errors
    /// (only a real denial status is ever sent to the client).
    pub fn http_decide(&self, reply: &CalloutResponse) -> AuthDecision {
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
                AuthDecision::Allow(Allowed {
                    upstream_set: pick(&self.upstream_headers),
                    upstream_append: pick(&self.upstream_headers_to_append),
                    client: pick(&self.client_headers_on_success),
                    ..Allowed::default()
                })
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
}
