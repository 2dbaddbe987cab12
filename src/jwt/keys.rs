//! JWKS documents turned into keys indexed by `kid` and algorithm.
//!
//! A key is only ever used with the algorithms its type allows (an `oct` key
//! for HS*, an RSA key for RS*/PS*, ...), so an HS256 token can never be
//! checked against the bytes of an RSA public key. Keys are parsed and
//! prepared once, when the JWKS is loaded, never per request.

use super::signature::KeyMaterial;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Every JWS algorithm Envoy's `jwt_authn` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub const ALL: [Alg; 13] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// Exact, case-sensitive names (RFC 7518): `none`, `None`, `rs256` are not algorithms.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }
}

/// One usable key from a JWKS.
#[derive(Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when the JWKS states one: the key is used for nothing else.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
}

impl Jwk {
    pub fn fits(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.material.fits(alg)
    }
}

/// The keys of one provider.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
    /// `kid`s of entries that were skipped, with why: a token naming one
    /// gets that reason rather than "unknown kid".
    unusable: Vec<(String, &'static str)>,
    /// Which load this is (remote keys are reloaded); part of the
    /// verified-token cache key.
    generation: u64,
    /// SHA-256 of the JWKS document: the same on every VM that loaded the
    /// same keys, so part of the shared verified-token cache key.
    fingerprint: [u8; 32],
}

/// Tokens without a `kid` are tried against at most this many keys, so a
/// forged kid-less token cannot make us run a signature check per key of a
/// large JWKS.
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;

impl KeySet {
    pub fn from_keys(keys: Vec<Jwk>) -> Self {
        KeySet {
            keys,
            unusable: Vec::new(),
            generation: 0,
            fingerprint: [0; 32],
        }
    }

    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys to try for a token, all fitting its `alg`: with a `kid`, the
    /// keys of that `kid`, then the first few keys without one (`kid` is a
    /// hint, RFC 7515 4.1.4, and `jwt_authn` tries a kid-less key for any
    /// token); without a `kid`, the first few keys.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        let named = self
            .keys
            .iter()
            .filter(move |k| kid.is_some() && k.kid.as_deref() == kid && k.fits(alg));
        let others = self
            .keys
            .iter()
            .filter(move |k| (kid.is_none() || k.kid.is_none()) && k.fits(alg))
            .take(MAX_KEYS_TRIED_WITHOUT_KID);
        named.chain(others)
    }

    /// Whether a key carries this `kid` (whatever its algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Why the entry with this `kid` was skipped, if one was.
    pub fn unusable_reason(&self, kid: &str) -> Option<&'static str> {
        self.unusable
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, why)| *why)
    }
}

/// An entry of a JWKS the filter cannot use (RFC 7517 5: ignored, not fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its position in `keys`.
    pub index: usize,
    /// Its `kid`, as the JWKS wrote it (remote text: escape before logging).
    pub kid: Option<String>,
    /// A short, fixed reason, fit for a client's error description.
    pub kind: &'static str,
    /// The detail, for the log: our words, with any value from the JWKS
    /// quoted and cut short.
    pub detail: String,
}

impl std::fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "keys[{}]", self.index)?;
        if let Some(kid) = &self.kid {
            write!(f, " (kid {})", quoted(kid))?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Text from a JWKS as a log or error message may show it: the shared
/// short, escaped quoting of remote text.
fn quoted(text: &str) -> String {
    crate::vocab::quote(text)
}

/// What loading a JWKS gave: the keys, and the entries skipped with why.
#[derive(Debug)]
pub struct LoadedJwks {
    pub keys: KeySet,
    pub skipped: Vec<SkippedKey>,
}

/// Parses a JWKS document. Each entry the filter cannot use (encryption
/// keys, other algorithms, key types or curves, keys under the size policy,
/// malformed members) is skipped with its reason (RFC 7517 5: such keys
/// SHOULD be ignored); only a document that is not a JWKS, or a JWKS with no
/// usable key at all, is an error.
pub fn parse_jwks(text: &str) -> Result<LoadedJwks, String> {
    // from_slice, as every runtime parse: each serde_json reader type is
    // another copy of the parser in the .wasm (issue 14).
    let doc: Value =
        serde_json::from_slice(text.as_bytes()).map_err(|e| format!("not valid JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWKS must be an object with a `keys` array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match parse_jwk(entry) {
            Ok(jwk) => keys.push(jwk),
            Err(Unusable(kind, detail)) => skipped.push(SkippedKey {
                index,
                kid: entry.get("kid").and_then(Value::as_str).map(str::to_string),
                kind,
                detail,
            }),
        }
    }
    if keys.is_empty() {
        let why: Vec<String> = skipped.iter().take(4).map(|s| s.to_string()).collect();
        return Err(if why.is_empty() {
            "the JWKS has no usable signature key".to_string()
        } else {
            format!("the JWKS has no usable signature key: {}", why.join("; "))
        });
    }
    let unusable = skipped
        .iter()
        .filter_map(|s| Some((s.kid.clone()?, s.kind)))
        .collect();
    Ok(LoadedJwks {
        keys: KeySet {
            keys,
            unusable,
            generation: 0,
            fingerprint: Sha256::digest(text.as_bytes()).into(),
        },
        skipped,
    })
}

/// Why an entry is not used: a short fixed kind, and the detail.
struct Unusable(&'static str, String);

const MALFORMED: &str = "malformed key";

fn malformed(detail: String) -> Unusable {
    Unusable(MALFORMED, detail)
}

fn str_member<'a>(entry: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match entry.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

fn b64_member(entry: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = str_member(entry, name)?.ok_or_else(|| format!("`{name}` is required"))?;
    decode_b64url(text).ok_or_else(|| format!("`{name}` is not base64url without padding"))
}

/// Strict base64url: no padding, no other alphabet, canonical trailing bits.
pub fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

fn parse_jwk(entry: &Value) -> Result<Jwk, Unusable> {
    if !entry.is_object() {
        return Err(malformed("must be an object".into()));
    }
    let member = |name: &str| str_member(entry, name).map_err(malformed);
    let b64 = |name: &str| b64_member(entry, name).map_err(malformed);
    let kid = member("kid")?.map(str::to_string);
    let kty = member("kty")?.ok_or_else(|| malformed("`kty` is required".into()))?;
    if let Some(usage) = member("use")? {
        if usage != "sig" {
            return Err(Unusable(
                "not a signature key",
                format!("`use` is {}", quoted(usage)),
            ));
        }
    }
    let alg = match member("alg")? {
        None => None,
        // An encryption algorithm (RSA-OAEP...) or one Envoy does not verify.
        Some(name) => Some(Alg::from_name(name).ok_or_else(|| {
            Unusable(
                "algorithm not supported",
                format!(
                    "`alg` {} is not a signature algorithm we verify",
                    quoted(name)
                ),
            )
        })?),
    };
    let unsupported_curve = |crv: &str| {
        Unusable(
            "curve not supported",
            format!("{kty} curve {} is not supported", quoted(crv)),
        )
    };
    let material = match kty {
        "RSA" => {
            let n = b64("n")?;
            let kind = match super::rsa::bit_length(&n) {
                bits if bits < super::signature::MIN_RSA_BITS => "RSA key under 2048 bits",
                bits if bits > super::signature::MAX_RSA_BITS => "RSA key over 8192 bits",
                _ => MALFORMED,
            };
            KeyMaterial::rsa(&n, &b64("e")?).map_err(|d| Unusable(kind, d))?
        }
        "EC" => {
            let crv = member("crv")?
                .ok_or_else(|| malformed("`crv` is required for an EC key".into()))?;
            if !["P-256", "P-384", "P-521"].contains(&crv) {
                return Err(unsupported_curve(crv));
            }
            KeyMaterial::ec(crv, &b64("x")?, &b64("y")?)
                .map_err(malformed)?
                .prepared()
        }
        "OKP" => {
            let crv = member("crv")?
                .ok_or_else(|| malformed("`crv` is required for an OKP key".into()))?;
            if crv != "Ed25519" {
                return Err(unsupported_curve(crv));
            }
            KeyMaterial::ed25519(&b64("x")?).map_err(malformed)?
        }
        "oct" => {
            let k = b64("k")?;
            let kind = if k.len() < 32 {
                "HMAC key under 256 bits"
            } else {
                MALFORMED
            };
            KeyMaterial::hmac(&k).map_err(|d| Unusable(kind, d))?
        }
        other => {
            return Err(Unusable(
                "key type not supported",
                format!("`kty` {} is not supported", quoted(other)),
            ))
        }
    };
    if let Some(a) = alg {
        if !material.fits(a) {
            return Err(malformed(format!(
                "`alg` {} does not fit a `{kty}` key",
                a.name()
            )));
        }
    }
    Ok(Jwk { kid, alg, material })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_are_exact() {
        assert_eq!(Alg::from_name("RS256"), Some(Alg::RS256));
        assert_eq!(Alg::from_name("EdDSA"), Some(Alg::EdDSA));
        for bad in [
            "none", "None", "NONE", "rs256", "HS256 ", "ES256K", "Ed25519", "",
        ] {
            assert_eq!(Alg::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn strict_base64url() {
        assert_eq!(decode_b64url("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(decode_b64url("AQ=="), None);
        assert_eq!(decode_b64url("A+/B"), None);
        // Non-canonical trailing bits.
        assert_eq!(decode_b64url("AR"), None);
    }

    const GOOD_ED: &str = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "good", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn unusable_keys_are_skipped_with_their_reason() {
        // Every kind of entry an IdP may publish that we cannot use, next to a good one.
        let p521_bad_x = format!(
            r#"{{"kty": "EC", "crv": "P-521", "kid": "p521", "x": "{}", "y": "{}"}}"#,
            "A".repeat(87),
            "A".repeat(88)
        );
        let entries = [
            (r#"{"kty": "RSA", "kid": "rsa1024", "n": "AQAB", "e": "AQAB"}"#.to_string(), "RSA key under 2048 bits"),
            (r#"{"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc", "n": "AQAB", "e": "AQAB"}"#.to_string(), "not a signature key"),
            (r#"{"kty": "RSA", "alg": "RSA-OAEP-256", "kid": "oaep", "n": "AQAB", "e": "AQAB"}"#.to_string(), "algorithm not supported"),
            (r#"{"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AQAB", "y": "AQAB"}"#.to_string(), "curve not supported"),
            (r#"{"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "AQAB"}"#.to_string(), "curve not supported"),
            (r#"{"kty": "PQC", "kid": "future"}"#.to_string(), "key type not supported"),
            (r#"{"kty": "oct", "kid": "short", "k": "c2VjcmV0"}"#.to_string(), "HMAC key under 256 bits"),
            (p521_bad_x, "malformed key"),
            (r#"{"kty": "oct", "kid": "pad", "k": "a=="}"#.to_string(), "malformed key"),
            (r#"{"kid": "no-kty"}"#.to_string(), "malformed key"),
            (r#""not an object""#.to_string(), "malformed key"),
            (r#"{"kty": "oct", "alg": "RS256", "kid": "misfit", "k": "c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWE"}"#.to_string(), "malformed key"),
        ];
        let mut all: Vec<&str> = entries.iter().map(|(e, _)| e.as_str()).collect();
        all.insert(3, GOOD_ED);
        let loaded = parse_jwks(&format!(r#"{{"keys": [{}]}}"#, all.join(","))).unwrap();
        assert_eq!(loaded.keys.len(), 1);
        let kinds: Vec<&str> = loaded.skipped.iter().map(|s| s.kind).collect();
        let expected: Vec<&str> = entries.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, expected);
        let first = loaded.skipped[0].to_string();
        assert!(
            first.starts_with("keys[0] (kid \"rsa1024\"): RSA modulus is"),
            "{first}"
        );
        assert_eq!(loaded.skipped[3].index, 4, "indexes count the good key too");
        assert_eq!(
            loaded.keys.unusable_reason("short"),
            Some("HMAC key under 256 bits")
        );
        assert_eq!(loaded.keys.unusable_reason("good"), None);
        assert!(loaded.keys.has_kid("good"));
    }

    #[test]
    fn remote_text_in_reasons_is_escaped_and_short() {
        let evil_kid = format!("k\\u001b[31m\\n{}", "x".repeat(300));
        let jwks = format!(
            r#"{{"keys": [{GOOD_ED}, {{"kty": "EC", "crv": "P-256\r\nevil", "kid": "{evil_kid}", "x": "AQAB", "y": "AQAB"}}]}}"#
        );
        let loaded = parse_jwks(&jwks).unwrap();
        let line = loaded.skipped[0].to_string();
        assert!(
            !line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'),
            "{line}"
        );
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn a_set_with_no_usable_key_is_an_error_naming_why() {
        let short_rsa = r#"{"keys": [{"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"}]}"#;
        let err = parse_jwks(short_rsa).unwrap_err();
        assert!(
            err.starts_with(
                "the JWKS has no usable signature key: keys[0] (kid \"weak\"): RSA modulus is"
            ),
            "{err}"
        );
        assert!(err.contains("2048"), "{err}");
        assert!(parse_jwks(r#"{"keys": [{"kty": "oct", "k": "a=="}]}"#).is_err());
        assert!(parse_jwks(r#"{"keys": []}"#).is_err());
        assert!(parse_jwks(r#"[]"#).is_err());
        assert!(parse_jwks("not json").is_err());
    }

    #[test]
    fn remote_key_members_reach_the_log_short_and_escaped() {
        // A hostile JWKS: a curve name of 60 KB with newlines (a forged log
        // line). The error, logged as the fetch's failure, quotes a prefix.
        let crv = format!("P-999{}", "\n[critical] forged".repeat(3000));
        let jwks =
            serde_json::json!({"keys": [{"kty": "EC", "crv": crv, "x": "AQAB", "y": "AQAB"}]});
        let err = parse_jwks(&jwks.to_string()).unwrap_err();
        assert!(err.contains("EC curve \"P-999\\n[critical]"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(err.len() < 250, "{} bytes", err.len());
    }

    #[test]
    fn key_alg_must_fit_key_type() {
        let jwks = r#"{"keys": [{"kty": "oct", "alg": "RS256", "k": "c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWE"}]}"#;
        assert!(parse_jwks(jwks).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn candidates_follow_kid_and_alg() {
        let jwks = r#"{"keys": [
            {"kty": "oct", "kid": "a", "k": "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYQ"},
            {"kty": "oct", "kid": "b", "alg": "HS384", "k": "YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYg"}
        ]}"#;
        let keys = parse_jwks(jwks).unwrap().keys;
        assert_eq!(keys.candidates(Alg::HS256, Some("a")).count(), 1);
        assert_eq!(keys.candidates(Alg::HS256, Some("b")).count(), 0);
        assert_eq!(keys.candidates(Alg::HS384, None).count(), 2);
        assert_eq!(keys.candidates(Alg::HS256, None).count(), 1);
        assert_eq!(keys.candidates(Alg::RS256, None).count(), 0);
        assert_eq!(keys.candidates(Alg::HS256, Some("zzz")).count(), 0);
    }

    #[test]
    fn kid_less_keys_are_tried_for_any_kid_within_the_bound() {
        let key = |kid: &str, fill: char| {
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(fill.to_string().repeat(32));
            match kid {
                "" => format!(r#"{{"kty": "oct", "k": "{k}"}}"#),
                kid => format!(r#"{{"kty": "oct", "kid": "{kid}", "k": "{k}"}}"#),
            }
        };
        let entries: Vec<String> = [
            ("a", 'a'),
            ("", 'b'),
            ("", 'c'),
            ("", 'd'),
            ("", 'e'),
            ("", 'f'),
        ]
        .iter()
        .map(|(kid, fill)| key(kid, *fill))
        .collect();
        let keys = parse_jwks(&format!(r#"{{"keys": [{}]}}"#, entries.join(",")))
            .unwrap()
            .keys;
        let kids = |kid| -> Vec<Option<String>> {
            keys.candidates(Alg::HS256, kid)
                .map(|k| k.kid.clone())
                .collect()
        };
        // Its own key first, then kid-less ones up to the bound.
        let named = kids(Some("a"));
        assert_eq!(named.len(), 1 + MAX_KEYS_TRIED_WITHOUT_KID);
        assert_eq!(named[0].as_deref(), Some("a"));
        assert_eq!(kids(Some("rotated")).len(), MAX_KEYS_TRIED_WITHOUT_KID);
        assert!(kids(Some("rotated")).iter().all(Option::is_none));
        assert_eq!(kids(None).len(), MAX_KEYS_TRIED_WITHOUT_KID);
        assert_eq!(keys.candidates(Alg::RS256, Some("rotated")).count(), 0);
    }
}
