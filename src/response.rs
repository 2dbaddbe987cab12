//! What the core asks the host to do with a request: header edits or a local reply.

use crate::secret::Secret;

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

/// A response sent by the filter itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Short reason for Envoy's response-code details and our debug log.
    pub details: String,
}

impl LocalReply {
    /// A reply with the small JSON body every denial carries:
    /// `{"error": ..., "error_description": ...}`.
    pub fn json_error(status: u16, error: &str, description: &str) -> Self {
        let body = serde_json::json!({ "error": error, "error_description": description });
        LocalReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            details: format!("{error}: {description}"),
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

    #[test]
    fn json_error_body_is_small_json() {
        let r = LocalReply::json_error(401, "invalid_token", "Jwt is expired");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "invalid_token");
        assert_eq!(v["error_description"], "Jwt is expired");
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/json".into())));
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
