//! `new-api-key`: makes a random client API key and its configuration entry.
//!
//! ```sh
//! cargo run -q -p ai-auth-tools --bin new-api-key -- --name search-team \
//!     --tenant acme --allowed-models 'gpt-4o*,claude-3-5-*' --label team=search \
//!     --expires-at 2026-12-31T00:00:00Z
//! ```
//!
//! Prints two lines on stdout: the key (shown once: give it to the caller,
//! it is stored nowhere), then the JSON entry to paste into a provider's
//! `api_keys` list (or the list an `api_keys_from` variable holds), which
//! has only the key's SHA-256. Guidance goes to stderr. The entry is checked
//! with the filter's own configuration parser before anything is printed.

use ai_auth_filter::config::FilterConfig;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::process::ExitCode;

const USAGE: &str =
    "usage: new-api-key --name NAME [--tenant TENANT] [--allowed-models 'gpt-4o*,claude-*']
                   [--expires-at 2026-12-31T00:00:00Z | UNIX_SECONDS] [--label KEY=VALUE]...
                   [--prefix sk-gw-] [--hash hex|base64url]";

struct Args {
    entry: Map<String, Value>,
    prefix: String,
    base64url: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut entry = Map::new();
    let mut labels = Map::new();
    let mut models: Vec<Value> = Vec::new();
    let mut prefix = "sk-gw-".to_string();
    let mut base64url = false;
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--name" => {
                entry.insert("name".into(), json!(value));
            }
            "--tenant" => {
                entry.insert("tenant".into(), json!(value));
            }
            "--allowed-models" => models.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(|m| json!(m)),
            ),
            "--expires-at" => {
                let at = match value.parse::<u64>() {
                    Ok(secs) => json!(secs),
                    Err(_) => json!(value),
                };
                entry.insert("expires_at".into(), at);
            }
            "--label" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--label {value}: expected KEY=VALUE"))?;
                labels.insert(k.to_string(), json!(v));
            }
            "--prefix" => prefix = value,
            "--hash" => {
                base64url = match value.as_str() {
                    "hex" => false,
                    "base64url" => true,
                    other => return Err(format!("--hash {other}: expected hex or base64url")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !entry.contains_key("name") {
        return Err("--name is required".into());
    }
    if !models.is_empty() {
        entry.insert("allowed_models".into(), Value::Array(models));
    }
    if !labels.is_empty() {
        entry.insert("labels".into(), Value::Object(labels));
    }
    Ok(Args {
        entry,
        prefix,
        base64url,
    })
}

fn new_key(prefix: &str) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn run() -> Result<(), String> {
    let mut args = parse_args(std::env::args().skip(1))?;
    let key = new_key(&args.prefix)?;
    let digest = Sha256::digest(key.as_bytes());
    let hash = if args.base64url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    } else {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    };
    args.entry.insert("sha256".into(), json!(hash));
    let entry = Value::Object(args.entry);
    // The filter's own parser judges the entry, so what is printed loads.
    let probe = json!({"jwt_authn": {
        "providers": {"keys": {"api_keys": [entry]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}}]
    }});
    let no_env = |_: &str| None;
    FilterConfig::from_json(probe.to_string().as_bytes(), &no_env).map_err(|e| {
        e.to_string()
            .replace("jwt_authn.providers.keys.api_keys[0].", "")
    })?;
    eprintln!("new-api-key: the key (shown once; give it to the caller, it is stored nowhere):");
    println!("{key}");
    eprintln!("new-api-key: its configuration entry (paste into a provider's api_keys list):");
    println!("{entry}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => {
            eprintln!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("new-api-key: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
