//! What the core asks the host to do with a request: header edits or a local reply.
//!
//! The filter's own errors are structured ([`ErrorBody`]: status, code,
//! description) and rendered to bytes here only, in the shape the request's
//! clients read ([`ErrorFormat`], chosen by the flow from the configuration).

use crate::secret::Secret;
use serde::Deserialize;

/// One edit of the request headers before the request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value of the header with this one (`:path` included).
    Set(String, String),
    /// Add a value, keeping those already present.
    Append(String, String),
    /// Remove every value of the header.
    Remove(String),
    /// Like `Set`, for a value that is a secret: printed as `[redacted]`.
    SetSecret(String, Secret),
}

impl HeaderOp {
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> Self {
        HeaderOp::Set(name.into(), value.into())
    }

    pub fn remove(name: impl Into<String>) -> Self {
        HeaderOp::Remove(name.into())
    }

    pub fn name(&self) -> &str {
        match self {
            HeaderOp::Set(n, _)
            | HeaderOp::Append(n, _)
            | HeaderOp::Remove(n)
            | HeaderOp::SetSecret(n, _) => n,
        }
    }
}

/// The JSON shape of the filter's own error bodies (`error_format`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorFormat {
    /// `{"error": {"message", "type", "param", "code"}}`, which OpenAI's SDKs
    /// and OpenAI-compatible clients (LangChain, LiteLLM, the Vercel AI SDK) show.
    #[default]
    Openai,
    /// `{"type": "error", "error": {"type", "message"}}`, as Anthropic's API answers.
    Anthropic,
    /// RFC 6749 section 5.2: `{"error": <code>, "error_description": <description>}`.
    Oauth2,
}

impl ErrorFormat {
    /// The error body in this shape. `code` is machine-readable
    /// (`invalid_token`), `description` names the cause, never a credential.
    pub fn render(self, status: u16, code: &str, description: &str) -> Vec<u8> {
        let body = match self {
            ErrorFormat::Openai => serde_json::json!({"error": {
                "message": description,
                "type": openai_type(status),
                "param": null,
                "code": code,
            }}),
            ErrorFormat::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": anthropic_type(status), "message": description},
            }),
            ErrorFormat::Oauth2 => {
                serde_json::json!({"error": code, "error_description": description})
            }
        };
        body.to_string().into_bytes()
    }
}

/// OpenAI's `error.type` for a status (its SDKs map the status to the
/// exception class; the type is informative).
fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's documented `error.type` values.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// One of the filter's own errors, before it is given its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable: `invalid_token`, `insufficient_scope`, `access_denied`...
    pub code: String,
    /// Names the cause (never a token or a key).
    pub description: String,
}

/// A response sent by the filter itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The bytes sent. For one of our errors, rendered from `error` in the
    /// default shape until [`LocalReply::in_format`] gives it the request's.
    pub body: Vec<u8>,
    /// Our own error; `None` for a body sent as it came (the auth service's denial).
    pub error: Option<ErrorBody>,
    /// Short reason for Envoy's response-code details and our debug log.
    pub details: String,
}

impl LocalReply {
    /// One of the filter's errors, with a JSON body in the default shape
    /// (OpenAI's); the flow renders it again in the request's `error_format`.
    pub fn json_error(status: u16, error: &str, description: &str) -> Self {
        LocalReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: ErrorFormat::default().render(status, error, description),
            error: Some(ErrorBody {
                code: error.to_string(),
                description: description.to_string(),
            }),
            details: format!("{error}: {description}"),
        }
    }

    /// The same reply with its error body in `format` (a reply whose body
    /// is not ours, or already in that shape, is left as it is).
    pub fn in_format(mut self, format: ErrorFormat) -> Self {
        if format != ErrorFormat::default() {
            if let Some(e) = &self.error {
                self.body = format.render(self.status, &e.code, &e.description);
            }
        }
        self
    }

    /// A successful JSON answer of the filter's own (a metadata document).
    pub fn json(status: u16, body: String) -> Self {
        LocalReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
            error: None,
            details: "local_document".into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// True when the value can be put in a header as is: no control characters
/// (CR, LF, NUL, ...), which Envoy would refuse.
pub fn is_valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Keeps only the characters RFC 6750 allows inside a quoted
/// `WWW-Authenticate` parameter (no `"` or `\`, printable ASCII).
pub fn quoted_param_safe(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(*c, ' '..='~') && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(r: &LocalReply) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn json_error_is_openai_shaped_by_default() {
        let r = LocalReply::json_error(401, "invalid_token", "Jwt is expired");
        assert_eq!(
            json(&r),
            serde_json::json!({"error": {"message": "Jwt is expired",
                "type": "authentication_error", "param": null, "code": "invalid_token"}})
        );
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert_eq!(r.clone().in_format(ErrorFormat::Openai), r);
    }

    #[test]
    fn anthropic_and_oauth2_shapes() {
        let r = LocalReply::json_error(
            403,
            "insufficient_scope",
            "claim roles does not satisfy the rule",
        )
        .in_format(ErrorFormat::Anthropic);
        assert_eq!(
            json(&r),
            serde_json::json!({"type": "error", "error": {"type": "permission_error",
                "message": "claim roles does not satisfy the rule"}})
        );
        let r = LocalReply::json_error(401, "invalid_token", "Jwt is expired")
            .in_format(ErrorFormat::Oauth2);
        assert_eq!(
            json(&r),
            serde_json::json!({"error": "invalid_token", "error_description": "Jwt is expired"})
        );
    }

    #[test]
    fn error_types_follow_the_status() {
        for (status, openai, anthropic) in [
            (401, "authentication_error", "authentication_error"),
            (403, "permission_error", "permission_error"),
            (413, "invalid_request_error", "request_too_large"),
            (429, "rate_limit_error", "rate_limit_error"),
            (500, "server_error", "api_error"),
            (503, "server_error", "api_error"),
        ] {
            let r = LocalReply::json_error(status, "c", "d");
            assert_eq!(json(&r)["error"]["type"], openai, "{status}");
            let r = r.in_format(ErrorFormat::Anthropic);
            assert_eq!(json(&r)["error"]["type"], anthropic, "{status}");
        }
    }

    #[test]
    fn a_body_that_is_not_ours_keeps_its_bytes() {
        let r = LocalReply {
            status: 403,
            headers: Vec::new(),
            body: b"denied by policy".to_vec(),
            error: None,
            details: String::new(),
        };
        assert_eq!(r.clone().in_format(ErrorFormat::Anthropic), r);
    }

    #[test]
    fn header_value_validation() {
        assert!(is_valid_header_value("abc def\tx"));
        assert!(!is_valid_header_value("a\r\nb"));
        assert!(!is_valid_header_value("a\0"));
    }

    #[test]
    fn quoted_params_drop_quotes_and_controls() {
        assert_eq!(quoted_param_safe("a\"b\\c\nd é"), "abcd ");
    }
}
