//! OAuth 2 client authentication (RFC 6749 2.3.1), as every callout to an
//! authorization server does it: the upstream token endpoint of
//! `upstream_credentials.oauth2` and the introspection endpoint (RFC 7662).
//! The secret lives in a [`Secret`] and goes only onto the wire.

use super::{ConfigError, DataSource, Environment};
use crate::secret::Secret;
use base64::Engine;
use serde::Deserialize;

/// How the client authenticates. `body`/`basic` are the names the OAuth 2
/// backends have always taken; the RFC 8414 names are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuthMethod {
    /// `client_id` and `client_secret` in the form body.
    #[serde(rename = "client_secret_post", alias = "body")]
    Post,
    /// `Authorization: Basic` of both, each form-urlencoded first.
    #[serde(rename = "client_secret_basic", alias = "basic")]
    Basic,
}

/// Written by hand: the derived schema would leave out the serde aliases.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ClientAuthMethod {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClientAuthMethod".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "OAuth 2 client authentication: the secret in the form body (`client_secret_post`, or `body`) or as HTTP Basic (`client_secret_basic`, or `basic`).",
            "enum": ["client_secret_post", "body", "client_secret_basic", "basic"]
        })
    }
}

/// A client's identity at an authorization server.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    secret: Secret,
    pub method: ClientAuthMethod,
}

impl ClientCredentials {
    /// Errors name `client_id` or `client_secret`.
    pub fn compile(
        client_id: String,
        client_secret: DataSource,
        method: ClientAuthMethod,
        env: &dyn Environment,
    ) -> Result<Self, ConfigError> {
        if client_id.is_empty() {
            return Err(ConfigError::new("client_id", "must not be empty"));
        }
        let secret = client_secret
            .read(env)
            .map_err(|e| e.under("client_secret"))?;
        if secret.is_empty() {
            return Err(ConfigError::new("client_secret", "the secret is empty"));
        }
        Ok(ClientCredentials {
            client_id,
            secret: Secret::new(secret),
            method,
        })
    }

    /// Adds the client's authentication to a form request: a header or two
    /// form fields. What it adds holds the secret: sent, never logged.
    pub fn authenticate(&self, headers: &mut Vec<(String, String)>, form: &mut Form) {
        match self.method {
            ClientAuthMethod::Post => {
                form.push("client_id", &self.client_id);
                form.push("client_secret", self.secret.expose());
            }
            ClientAuthMethod::Basic => {
                // RFC 6749 2.3.1: both parts form-urlencoded, then Basic.
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(self.secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push(("authorization".to_string(), format!("Basic {encoded}")));
            }
        }
    }
}

/// An `application/x-www-form-urlencoded` body being built.
#[derive(Default)]
pub struct Form(String);

impl Form {
    pub fn push(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(&form_encode(name));
        self.0.push('=');
        self.0.push_str(&form_encode(value));
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_bytes()
    }
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Form([redacted])")
    }
}

/// application/x-www-form-urlencoded.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(method: ClientAuthMethod) -> ClientCredentials {
        let source: DataSource =
            serde_json::from_value(serde_json::json!({"inline_string": "s3cr:t&"})).unwrap();
        ClientCredentials::compile("gate way".into(), source, method, &|_: &str| None).unwrap()
    }

    #[test]
    fn post_puts_both_in_the_form() {
        let (mut headers, mut form) = (Vec::new(), Form::default());
        form.push("token", "a b");
        creds(ClientAuthMethod::Post).authenticate(&mut headers, &mut form);
        assert!(headers.is_empty());
        assert_eq!(
            String::from_utf8(form.into_bytes()).unwrap(),
            "token=a+b&client_id=gate+way&client_secret=s3cr%3At%26"
        );
    }

    #[test]
    fn basic_encodes_each_part_first() {
        let (mut headers, mut form) = (Vec::new(), Form::default());
        creds(ClientAuthMethod::Basic).authenticate(&mut headers, &mut form);
        let expected = base64::engine::general_purpose::STANDARD.encode("gate+way:s3cr%3At%26");
        assert_eq!(
            headers,
            vec![("authorization".to_string(), format!("Basic {expected}"))]
        );
        assert!(form.into_bytes().is_empty());
    }

    #[test]
    fn both_names_of_each_method_are_accepted() {
        for (name, method) in [
            ("body", ClientAuthMethod::Post),
            ("client_secret_post", ClientAuthMethod::Post),
            ("basic", ClientAuthMethod::Basic),
            ("client_secret_basic", ClientAuthMethod::Basic),
        ] {
            let parsed: ClientAuthMethod = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, method, "{name}");
        }
        assert!(serde_json::from_value::<ClientAuthMethod>(serde_json::json!("jwt")).is_err());
    }

    #[test]
    fn secrets_are_never_printed() {
        let c = creds(ClientAuthMethod::Post);
        let mut form = Form::default();
        c.authenticate(&mut Vec::new(), &mut form);
        let shown = format!("{c:?} {form:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
    }
}
