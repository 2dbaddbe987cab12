//! DPoP proofs (RFC 9449): a provider with a `dpop` block takes
//! `Authorization: DPoP <token>` with a `DPoP` proof header, and checks the
//! proof as §4.3 lists:
//!
//! - exactly one `DPoP` header, a compact JWS (strict base64url, three segments);
//! - `typ` is `dpop+jwt`; `alg` is asymmetric and accepted; no `crit`;
//! - `jwk` is a public key (a private member is refused) fitting `alg`,
//!   and the signature verifies with it (the signature backends of the
//!   JWT stage, keys prepared once per proof);
//! - `htm` is the request method, `htu` the request URI without query and
//!   fragment, both normalised as RFC 3986 §6.2.2 and §6.2.3 say;
//! - `iat` within `max_age` of now, either way;
//! - `jti` present (the replay cache is checked last, by the caller);
//! - `ath` and the key's RFC 7638 thumbprint are returned for the caller to
//!   compare with the access token and its `cnf.jkt` (`super::cnf`).
//!
//! DPoP-Nonce (§8, server-provided nonces) is not implemented: freshness
//! comes from the `iat` window and the shared `jti` replay cache.

use super::error::JwtError;
use super::keys::{decode_b64url, Alg};
use super::signature::KeyMaterial;
use crate::vocab::{duration, ConfigError};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Proofs longer than this are refused before decoding.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// `jti` longer than this is refused (RFC 9449 asks for 96 bits of randomness).
const MAX_JTI_BYTES: usize = 256;
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(3600);
pub const DEFAULT_REPLAY_ENTRIES: usize = 65536;
const MAX_REPLAY_ENTRIES: usize = 1 << 22;

/// Asymmetric algorithms a proof may use (RFC 9449 §4.2: never `none` nor a MAC).
const ASYMMETRIC: [Alg; 10] = [
    Alg::ES256,
    Alg::ES384,
    Alg::ES512,
    Alg::EdDSA,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
];

/// Wire form of a provider's `dpop` block.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// Only DPoP-bound tokens with a proof are accepted (no bearer tokens).
    #[serde(default)]
    required: bool,
    /// Accepted proof algorithms; default every asymmetric one we verify.
    algorithms: Option<Vec<String>>,
    /// How far `iat` may be from now, either way (default 60 s).
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    max_age: Option<Duration>,
    /// Proof ids the shared replay cache holds (default 65536).
    replay_cache_entries: Option<usize>,
}

/// A provider's DPoP settings, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dpop {
    pub required: bool,
    pub algs: Vec<Alg>,
    pub max_age: u64,
    pub replay_entries: usize,
}

impl Dpop {
    pub fn compile(raw: RawDpop) -> Result<Self, ConfigError> {
        let algs = match raw.algorithms {
            None => ASYMMETRIC.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(ConfigError::new("algorithms", "must not be empty"))
            }
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| match Alg::from_name(name) {
                    Some(a) if ASYMMETRIC.contains(&a) => Ok(a),
                    _ => Err(ConfigError::new(
                        format!("algorithms[{i}]"),
                        format!("`{name}` is not an asymmetric algorithm we verify (RFC 9449 4.2)"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let max_age = raw.max_age.unwrap_or(DEFAULT_MAX_AGE);
        if max_age < Duration::from_secs(1) || max_age > MAX_MAX_AGE {
            return Err(ConfigError::new(
                "max_age",
                "must be between 1 s and 3600 s",
            ));
        }
        let replay_entries = raw.replay_cache_entries.unwrap_or(DEFAULT_REPLAY_ENTRIES);
        if !(super::replay::BUCKET..=MAX_REPLAY_ENTRIES).contains(&replay_entries) {
            return Err(ConfigError::new(
                "replay_cache_entries",
                format!(
                    "must be between {} and {MAX_REPLAY_ENTRIES}",
                    super::replay::BUCKET
                ),
            ));
        }
        Ok(Dpop {
            required: raw.required,
            algs,
            max_age: max_age.as_secs(),
            replay_entries,
        })
    }
}

/// A proof whose signature, method, URI and time hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint (base64url SHA-256) of the proof's key.
    pub thumbprint: String,
    pub jti: String,
    pub iat: u64,
    /// `ath`, the hash of the access token the proof was made for.
    pub ath: Option<String>,
}

/// What the proof is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    pub method: &'a str,
    /// The request's URI, `scheme://authority/path` (a query is ignored).
    pub uri: &'a str,
    pub now: u64,
}

fn invalid(why: &'static str) -> JwtError {
    JwtError::InvalidDpopProof(why)
}

/// Checks the proof in `headers` (every `DPoP` header value of the request).
pub fn verify(cfg: &Dpop, headers: &[&str], req: ProofRequest<'_>) -> Result<Proof, JwtError> {
    let proof = match headers {
        [] => return Err(invalid("the DPoP header is missing")),
        [one] => one.trim(),
        _ => return Err(invalid("more than one DPoP header")),
    };
    if proof.len() > MAX_PROOF_BYTES {
        return Err(invalid("the proof is too large"));
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header = json_object(h64).ok_or(invalid("the header is not base64url JSON"))?;
    let payload = json_object(p64).ok_or(invalid("the payload is not base64url JSON"))?;
    let signature = decode_b64url(s64).ok_or(invalid("the signature is not base64url"))?;

    let typ = header.get("typ").and_then(Value::as_str);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return Err(invalid("typ must be dpop+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(invalid("alg is missing or not supported"))?;
    if !ASYMMETRIC.contains(&alg) {
        return Err(invalid("alg must be asymmetric"));
    }
    if !cfg.algs.contains(&alg) {
        return Err(invalid("alg is not accepted"));
    }
    if header.contains_key("crit") {
        return Err(invalid("crit is not accepted"));
    }
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(invalid("jwk is missing"))?;
    let (key, thumbprint) = public_key(jwk)?;
    if !key.fits(alg) {
        return Err(invalid("jwk does not fit alg"));
    }
    let signing_input = proof
        .get(..h64.len() + 1 + p64.len())
        .ok_or(invalid("not a compact JWS"))?;
    if !key.verify(alg, signing_input.as_bytes(), &signature) {
        return Err(invalid("the signature does not verify with jwk"));
    }

    let text = |name| payload.get(name).and_then(Value::as_str);
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or(invalid("jti is missing"))?;
    if text("htm") != Some(req.method) {
        return Err(invalid("htm is not the request method"));
    }
    let htu = text("htu").ok_or(invalid("htu is missing"))?;
    match (normalize_uri(htu), normalize_uri(req.uri)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(invalid("htu is not the request URI")),
    }
    let iat = payload
        .get("iat")
        .and_then(Value::as_f64)
        .filter(|t| *t >= 0.0 && *t < 1.8e19)
        .ok_or(invalid("iat is missing"))? as u64;
    if iat.saturating_add(cfg.max_age) < req.now || iat > req.now.saturating_add(cfg.max_age) {
        return Err(invalid("iat is outside the accepted window"));
    }
    let ath = match payload.get("ath") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("ath must be a string")),
    };
    Ok(Proof {
        thumbprint,
        jti: jti.to_string(),
        iat,
        ath,
    })
}

/// `ath`: base64url SHA-256 of the access token (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    if segment.is_empty() || segment.len() > MAX_PROOF_BYTES {
        return None;
    }
    serde_json::from_slice(&decode_b64url(segment)?).ok()
}

/// The proof's public key and its RFC 7638 thumbprint. A private member
/// (`d`, RSA's primes and CRT values, a symmetric `k`) refuses the proof:
/// the client just disclosed its key.
fn public_key(jwk: &Map<String, Value>) -> Result<(KeyMaterial, String), JwtError> {
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
        return Err(invalid("jwk holds a private key"));
    }
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| member(name).and_then(decode_b64url);
    let unusable = || invalid("jwk is not a usable public key");
    let kty = member("kty").ok_or(invalid("jwk has no kty"))?;
    // RFC 7638 §3.2: the required members only, in lexicographic order.
    let (key, canonical) = match kty {
        "EC" => {
            let crv = member("crv").ok_or_else(unusable)?;
            let (x, y) = (
                bytes("x").ok_or_else(unusable)?,
                bytes("y").ok_or_else(unusable)?,
            );
            let key = KeyMaterial::ec(crv, &x, &y).map_err(|_| unusable())?;
            let canonical = canonical_json(&[
                ("crv", crv),
                ("kty", "EC"),
                ("x", member("x").unwrap_or_default()),
                ("y", member("y").unwrap_or_default()),
            ]);
            (key, canonical)
        }
        "RSA" => {
            let (n, e) = (
                bytes("n").ok_or_else(unusable)?,
                bytes("e").ok_or_else(unusable)?,
            );
            let key = KeyMaterial::rsa(&n, &e).map_err(|_| unusable())?;
            let canonical = canonical_json(&[
                ("e", member("e").unwrap_or_default()),
                ("kty", "RSA"),
                ("n", member("n").unwrap_or_default()),
            ]);
            (key, canonical)
        }
        "OKP" if member("crv") == Some("Ed25519") => {
            let x = bytes("x").ok_or_else(unusable)?;
            let key = KeyMaterial::ed25519(&x).map_err(|_| unusable())?;
            let canonical = canonical_json(&[
                ("crv", "Ed25519"),
                ("kty", "OKP"),
                ("x", member("x").unwrap_or_default()),
            ]);
            (key, canonical)
        }
        "oct" => return Err(invalid("jwk holds a private key")),
        _ => return Err(unusable()),
    };
    let thumbprint =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(canonical));
    Ok((key, thumbprint))
}

/// `{"a":"..","b":".."}` with no whitespace; the values were decoded as
/// base64url or are fixed names, so they need no escaping.
fn canonical_json(members: &[(&str, &str)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// RFC 3986 §6.2.2 (case, percent-encoding, dot segments) and §6.2.3
/// (default port, empty path) normalisation of an http(s) URI, without its
/// query and fragment. `None` for anything else.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = rest.get(..end)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    if let Some(stripped) = authority.strip_suffix(default_port) {
        authority = stripped.to_string();
    } else if let Some(stripped) = authority.strip_suffix(':') {
        authority = stripped.to_string();
    }
    let path = remove_dot_segments(&percent_normalize(path)?);
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    Some(format!("{scheme}://{authority}{path}"))
}

/// Decodes percent-encoded unreserved characters and upper-cases the hex
/// of the rest; `None` for a malformed escape.
fn percent_normalize(path: &str) -> Option<String> {
    // Envoy only hands ASCII paths; a non-ASCII `htu` is compared as it is.
    if !path.is_ascii() {
        return Some(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let value = crate::vocab::hex::byte(bytes.get(i + 1..i + 3)?)?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&crate::vocab::hex::encode_upper(&[value]));
            }
            i += 3;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    output.push("");
                }
            }
            ".." => {
                if output.len() > 1 {
                    output.pop();
                }
                if i == last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    output.join("/")
}

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod tests;
