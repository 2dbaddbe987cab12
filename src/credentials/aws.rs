//! The `sigv4` backend scheme (AWS Bedrock, or any service that takes
//! SigV4): its configuration, the header edits made with the request
//! headers, and the signature made once the body's hash is known.
//!
//! Envoy 1.40 refuses request header edits from a wasm body callback, so
//! the signature of a request with a body is published in filter state
//! (`wasm.ai_auth.sigv4.authorization`, `wasm.ai_auth.sigv4.content_sha256`)
//! and `envoy.filters.http.header_mutation`, after `envoy.filters.http.buffer`,
//! copies it into the request headers.

use super::sigv4::{self, amz_date, AwsCredentials, SignInput, EMPTY_SHA256};
use super::sts::{RawWebIdentity, WebIdentity};
use crate::request::RequestView;
use crate::response::{is_valid_header_value, HeaderOp};
use crate::secret::Secret;
use crate::vocab::{header_name, ConfigError, DataSource, Environment};
use serde::Deserialize;
use std::sync::Arc;

/// Filter state keys (Envoy: `wasm.ai_auth.sigv4.*`) with the values to copy into headers.
pub const AUTHORIZATION_PROPERTY: &str = "ai_auth.sigv4.authorization";
pub const CONTENT_SHA256_PROPERTY: &str = "ai_auth.sigv4.content_sha256";
/// Headers the filter owns on a SigV4 request: a client's are removed.
pub const SIGV4_HEADERS: [&str; 3] = ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"];
const DEFAULT_SERVICE: &str = "bedrock";
const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const MAX_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    region: String,
    service: Option<String>,
    /// The Host that is signed and sent (`:authority` is set to it).
    host: String,
    /// Headers signed besides those AWS requires (e.g. `content-type`).
    #[serde(default)]
    signed_headers: Vec<String>,
    /// The largest body signed; a larger one is answered 413.
    max_body_bytes: Option<usize>,
    /// Static keys, inline or from environment variables.
    credentials: Option<RawStaticCredentials>,
    /// Temporary credentials from STS `AssumeRoleWithWebIdentity`.
    web_identity: Option<RawWebIdentity>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawStaticCredentials {
    access_key_id: DataSource,
    secret_access_key: DataSource,
    session_token: Option<DataSource>,
}

#[derive(Debug, Clone)]
pub struct SigV4 {
    pub region: String,
    pub service: String,
    pub host: String,
    pub signed_headers: Vec<String>,
    pub max_body_bytes: usize,
}

/// Where a SigV4 backend's credentials come from.
#[derive(Debug, Clone)]
pub enum AwsSource {
    Static(Arc<AwsCredentials>),
    /// Fetched by the root context, shared by the worker VMs.
    WebIdentity(WebIdentity),
}

fn label(value: &str, field: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ConfigError::new(
            field,
            "must be lowercase letters, digits and `-` (e.g. us-east-1, bedrock)",
        ));
    }
    Ok(())
}

fn secret_text(raw: DataSource, env: &dyn Environment, field: &str) -> Result<String, ConfigError> {
    let value = raw.read(env).map_err(|e| e.under(field))?;
    if value.is_empty() || value != value.trim() || !is_valid_header_value(&value) {
        // The reason never quotes the value: it may be a secret.
        return Err(ConfigError::new(
            field,
            "is empty, has surrounding whitespace or control characters",
        ));
    }
    Ok(value)
}

impl SigV4 {
    pub fn compile(raw: RawSigV4, env: &dyn Environment) -> Result<(Self, AwsSource), ConfigError> {
        label(&raw.region, "region")?;
        let service = raw.service.unwrap_or_else(|| DEFAULT_SERVICE.into());
        label(&service, "service")?;
        let host_ok = !raw.host.is_empty()
            && raw
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !host_ok {
            return Err(ConfigError::new(
                "host",
                "must be a host name, with a port if it is not the scheme's default",
            ));
        }
        let mut signed_headers = Vec::new();
        for (i, h) in raw.signed_headers.iter().enumerate() {
            let field = format!("signed_headers[{i}]");
            let name = header_name(h, &field)?;
            if name == "host" || name == "authorization" || name.starts_with("x-amz-") {
                return Err(ConfigError::new(
                    field,
                    format!("`{name}` is set by the filter; list only other headers"),
                ));
            }
            if !signed_headers.contains(&name) {
                signed_headers.push(name);
            }
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("at most {MAX_MAX_BODY_BYTES}"),
            ));
        }
        let source = match (raw.credentials, raw.web_identity) {
            (None, Some(w)) => AwsSource::WebIdentity(
                WebIdentity::compile(w, env).map_err(|e| e.under("web_identity"))?,
            ),
            (Some(c), None) => {
                let access_key_id = secret_text(c.access_key_id, env, "credentials.access_key_id")?;
                let secret_access_key = Secret::new(secret_text(
                    c.secret_access_key,
                    env,
                    "credentials.secret_access_key",
                )?);
                let session_token = c
                    .session_token
                    .map(|t| secret_text(t, env, "credentials.session_token"))
                    .transpose()?
                    .map(Secret::new);
                AwsSource::Static(Arc::new(AwsCredentials {
                    access_key_id,
                    secret_access_key,
                    session_token,
                }))
            }
            _ => {
                return Err(ConfigError::new(
                    "",
                    "exactly one of credentials, web_identity must be set",
                ))
            }
        };
        Ok((
            SigV4 {
                region: raw.region,
                service,
                host: raw.host,
                signed_headers,
                max_body_bytes,
            },
            source,
        ))
    }

    /// The edits made with the request headers (after the client's
    /// credentials were stripped, in `ops`) and what is left to sign.
    /// `req` is the request before `ops`.
    pub fn prepare(
        &self,
        req: &RequestView,
        ops: &mut Vec<HeaderOp>,
        creds: Arc<AwsCredentials>,
        now: u64,
    ) -> PendingSignature {
        let date = amz_date(now);
        for h in SIGV4_HEADERS {
            ops.push(HeaderOp::remove(h));
        }
        ops.push(HeaderOp::set(":authority", self.host.clone()));
        ops.push(HeaderOp::set("x-amz-date", date.clone()));
        if let Some(token) = &creds.session_token {
            ops.push(HeaderOp::SetSecret(
                "x-amz-security-token".into(),
                token.clone(),
            ));
        }
        // The request as it will leave: every edit made before the signature.
        let mut after = req.clone();
        after.apply(ops);
        let extras = self
            .signed_headers
            .iter()
            .flat_map(|name| {
                after
                    .header_values(name)
                    .map(|v| (name.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        PendingSignature {
            method: after.method().to_string(),
            path: after.path().to_string(),
            host: self.host.clone(),
            amz_date: date,
            extras,
            creds,
            region: self.region.clone(),
            service: self.service.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// A request prepared for signing, waiting for its body's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignature {
    method: String,
    path: String,
    host: String,
    amz_date: String,
    extras: Vec<(String, String)>,
    creds: Arc<AwsCredentials>,
    region: String,
    service: String,
    pub max_body_bytes: usize,
}

/// The body-dependent headers: `x-amz-content-sha256` and `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub content_sha256: String,
    pub authorization: Secret,
}

impl PendingSignature {
    pub fn sign(&self, body: &[u8]) -> Signature {
        let content_sha256 = if body.is_empty() {
            EMPTY_SHA256.to_string()
        } else {
            sigv4::sha256_hex(body)
        };
        let input = SignInput::for_request(
            &self.method,
            &self.path,
            &self.host,
            &self.amz_date,
            self.creds.session_token.as_ref(),
            self.extras.clone(),
            content_sha256.clone(),
        );
        let authorization = sigv4::authorization(
            &input,
            &self.creds,
            &self.region,
            &self.service,
            &self.amz_date,
        );
        Signature {
            content_sha256,
            authorization: Secret::new(authorization),
        }
    }
}

impl Signature {
    /// Set directly, with the request headers (a request without a body).
    pub fn header_ops(&self) -> Vec<HeaderOp> {
        vec![
            HeaderOp::set("x-amz-content-sha256", self.content_sha256.clone()),
            HeaderOp::SetSecret("authorization".into(), self.authorization.clone()),
        ]
    }

    /// For `header_mutation` to copy (a request with a body).
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        vec![
            (CONTENT_SHA256_PROPERTY, self.content_sha256.clone()),
            (
                AUTHORIZATION_PROPERTY,
                self.authorization.expose().to_string(),
            ),
        ]
    }
}
