//! The keys of an API key provider as configured: `api_keys` inline, and/or
//! `api_keys_from` (a data source, typically an environment variable,
//! holding the same JSON list).

use super::{ApiKey, ApiKeys, KeyDigest};
use crate::jwt::token::Claims;
use crate::response::is_valid_header_value;
use crate::vocab::timestamp::RawTimestamp;
use crate::vocab::unique_map::UniqueMap;
use crate::vocab::{parse_json, ConfigError, DataSource, Environment};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longest name, tenant, label or model pattern: they go into headers and logs.
const MAX_TEXT: usize = 256;

/// One key's entry, as `new-api-key` prints it.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    name: String,
    /// SHA-256 of the key: 64 hex digits, or 43 base64url characters.
    sha256: String,
    tenant: Option<String>,
    expires_at: Option<RawTimestamp>,
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    labels: UniqueMap<String>,
}

/// Parses the configured hash; the reason never quotes it.
pub fn parse_digest(text: &str) -> Result<KeyDigest, String> {
    let bytes = if text.len() == 64 {
        decode_hex(text)
    } else {
        let trimmed = text.strip_suffix('=').unwrap_or(text);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(trimmed)
            .ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(KeyDigest::from_bytes)
        .ok_or_else(|| {
            "is not a SHA-256 hash: expected 64 hex digits or 43 base64url characters".to_string()
        })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let nibble = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((nibble(*hi)? * 16 + nibble(*lo)?) as u8),
            _ => None,
        })
        .collect()
}

fn text_field(value: &str, field: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > MAX_TEXT || !is_valid_header_value(value) {
        return Err(ConfigError::new(
            field,
            format!("must be 1 to {MAX_TEXT} characters without control characters"),
        ));
    }
    Ok(())
}

fn compile_key(raw: RawApiKey) -> Result<(KeyDigest, ApiKey), ConfigError> {
    text_field(&raw.name, "name")?;
    let digest = parse_digest(&raw.sha256).map_err(|e| ConfigError::new("sha256", e))?;
    let mut payload = Map::new();
    // `sub` too, so one claim names the caller whether a JWT or a key authenticated it.
    payload.insert("sub".into(), Value::String(raw.name.clone()));
    payload.insert("name".into(), Value::String(raw.name.clone()));
    if let Some(tenant) = raw.tenant {
        text_field(&tenant, "tenant")?;
        payload.insert("tenant".into(), Value::String(tenant));
    }
    let expires_at = raw
        .expires_at
        .map(|t| t.unix_seconds())
        .transpose()
        .map_err(|e| ConfigError::new("expires_at", e))?;
    if let Some(models) = raw.allowed_models {
        for (i, m) in models.iter().enumerate() {
            text_field(m, &format!("allowed_models[{i}]"))?;
        }
        payload.insert(
            "allowed_models".into(),
            Value::Array(models.into_iter().map(Value::String).collect()),
        );
    }
    if !raw.labels.0.is_empty() {
        let mut labels = Map::new();
        for (k, v) in raw.labels.0 {
            text_field(&v, &format!("labels.{k}"))?;
            if k.is_empty() || k.contains('.') {
                return Err(ConfigError::new(
                    format!("labels.{k}"),
                    "a label name must be non-empty and without dots (claims are dotted paths)",
                ));
            }
            labels.insert(k, Value::String(v));
        }
        payload.insert("labels".into(), Value::Object(labels));
    }
    let claims = Claims {
        iss: None,
        sub: Some(raw.name.clone()),
        aud: Vec::new(),
        exp: expires_at,
        nbf: None,
        iat: None,
        payload,
        payload_b64: String::new(),
    };
    Ok((
        digest,
        ApiKey {
            name: raw.name,
            expires_at,
            claims: Arc::new(claims),
        },
    ))
}

/// Reads the JSON list an `api_keys_from` source holds. Errors name the
/// entry and field, or where the JSON breaks; never the text (it holds
/// hashes or, by mistake, keys).
fn read_list(source: DataSource, env: &dyn Environment) -> Result<Vec<RawApiKey>, ConfigError> {
    parse_json(source.read(env)?.as_bytes())
}

/// Compiles the keys of one provider from its inline list and its source.
pub fn compile(
    inline: Option<Vec<RawApiKey>>,
    from: Option<DataSource>,
    env: &dyn Environment,
) -> Result<ApiKeys, ConfigError> {
    let mut keys = ApiKeys::default();
    let mut origins: Vec<String> = Vec::new();
    let mut add = |field: &str, list: Vec<RawApiKey>| -> Result<(), ConfigError> {
        for (i, raw) in list.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            let (digest, key) = compile_key(raw).map_err(|e| e.under(&at))?;
            if let Err(first) = keys.insert(digest, key) {
                let other = origins.get(first).cloned().unwrap_or_default();
                return Err(ConfigError::new(
                    format!("{at}.sha256"),
                    format!("the same key as {other}"),
                ));
            }
            origins.push(at);
        }
        Ok(())
    };
    if let Some(list) = inline {
        add("api_keys", list)?;
    }
    if let Some(source) = from {
        let list = read_list(source, env).map_err(|e| e.under("api_keys_from"))?;
        add("api_keys_from", list)?;
    }
    if keys.is_empty() {
        return Err(ConfigError::new(
            "api_keys",
            "an API key provider needs at least one key",
        ));
    }
    Ok(keys)
}
