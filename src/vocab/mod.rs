//! The shared vocabulary of the configuration: errors that name the field,
//! data sources, durations, header names, `HttpUri`, and how remote text is
//! quoted in a log line (`quote`), hex and percent-escapes (`hex`). A leaf: it imports no
//! stage, and every stage (and `config`, which assembles them) imports it.

pub mod client_auth;
pub mod duration;
mod error;
pub mod hex;
mod http_uri;
mod json_tree;
mod quote;
pub mod timestamp;
pub mod unique_map;

pub use error::{parse_json, ConfigError};
pub use http_uri::{callout_timeout, split_uri, HttpUri, RawHttpUri};
pub(crate) use json_tree::Json;
pub use quote::{quote, quote_bytes, MAX_QUOTED_CHARS};
use serde::Deserialize;

/// Sorts name/value pairs by name, keeping the order of equal names, or by
/// name then value. Every such sort goes through here because each distinct
/// `sort_by` is its own copy of std's stable sort, about 3.5 KB of the
/// `.wasm` (issue 14).
pub fn sort_pairs(pairs: &mut [&(String, String)], then_by_value: bool) {
    pairs.sort_by(|a, b| {
        let by_name = a.0.cmp(&b.0);
        if then_by_value {
            by_name.then_with(|| a.1.cmp(&b.1))
        } else {
            by_name
        }
    });
}

/// Where secrets and JWKS given as `environment_variable` are looked up:
/// in the VM, the variables Envoy passes through `vm_config.environment_variables`.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (inside the VM: what Envoy passed to it).
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Environment for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Envoy's `DataSource`, the variants that make sense inside a VM: the text
/// inline, or in an environment variable Envoy passes to the VM.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    inline_string: Option<String>,
    environment_variable: Option<String>,
}

impl DataSource {
    /// The text. Errors name the field relative to the data source.
    pub fn read(self, env: &dyn Environment) -> Result<String, ConfigError> {
        match (self.inline_string, self.environment_variable) {
            (Some(text), None) => Ok(text),
            (None, Some(var)) => env.var(&var).ok_or_else(|| {
                ConfigError::new(
                    "environment_variable",
                    format!(
                        "environment variable `{var}` is not set in the VM (vm_config.environment_variables)"
                    ),
                )
            }),
            _ => Err(ConfigError::new(
                "",
                "exactly one of inline_string, environment_variable must be set",
            )),
        }
    }
}

/// A header name as configured, lowercased; refused unless it is a plain token.
pub fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if valid {
        Ok(lower)
    } else {
        Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid header name"),
        ))
    }
}
