//! JWKS documents turned into keys indexed by `kid` and algorithm.
//!
//! A key is only ever used with the algorithms its type allows (an `oct` key
//! for HS*, an RSA key for RS*/PS*, ...), so an HS256 token can never be
//! checked against the bytes of an RSA public key. Keys are parsed and
//! prepared once, when the JWKS is loaded, never per request.

use super::signature::KeyMaterial;
use base64::Engine;
use serde_json::Value;

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
    /// Which load this is (remote keys are reloaded); part of the
    /// verified-token cache key.
    generation: u64,
}

/// Tokens without a `kid` are tried against at most this many keys, so a
/// forged kid-less token cannot make us run a signature check per key of a
/// large JWKS.
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 4;

impl KeySet {
    pub fn from_keys(keys: Vec<Jwk>) -> Self {
        KeySet {
            keys,
            generation: 0,
        }
    }

    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys to try for a token: those with its `kid` when it has one (and
    /// fitting its `alg`), otherwise the first few that fit its `alg`.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        let limit = if kid.is_some() {
            usize::MAX
        } else {
            MAX_KEYS_TRIED_WITHOUT_KID
        };
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
            .take(limit)
    }
}

/// What loading a JWKS gave: the keys, and the entries deliberately skipped
/// (encryption keys, algorithms we do not verify) with the reason.
#[derive(Debug)]
pub struct LoadedJwks {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

/// Parses a JWKS document. An entry that claims to be a signing key but is
/// malformed (bad base64, short RSA modulus, point off the curve) is an
/// error naming the entry; entries for other uses are skipped.
pub fn parse_jwks(text: &str) -> Result<LoadedJwks, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWKS must be an object with a `keys` array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match parse_jwk(entry) {
            Ok(Some(jwk)) => keys.push(jwk),
            Ok(None) => skipped.push(format!("keys[{i}]: not a signature key we verify")),
            Err(e) => return Err(format!("keys[{i}]: {e}")),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable signature key".into());
    }
    Ok(LoadedJwks {
        keys: KeySet::from_keys(keys),
        skipped,
    })
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

fn parse_jwk(entry: &Value) -> Result<Option<Jwk>, String> {
    if !entry.is_object() {
        return Err("must be an object".into());
    }
    let kty = str_member(entry, "kty")?.ok_or("`kty` is required")?;
    if let Some(usage) = str_member(entry, "use")? {
        if usage != "sig" {
            return Ok(None);
        }
    }
    let alg = match str_member(entry, "alg")? {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(a) => Some(a),
            // An encryption algorithm (RSA-OAEP...) or one Envoy does not verify.
            None => return Ok(None),
        },
    };
    let kid = str_member(entry, "kid")?.map(str::to_string);
    let material = match kty {
        "RSA" => KeyMaterial::rsa(&b64_member(entry, "n")?, &b64_member(entry, "e")?)?,
        "EC" => {
            let crv = str_member(entry, "crv")?.ok_or("`crv` is required for an EC key")?;
            KeyMaterial::ec(crv, &b64_member(entry, "x")?, &b64_member(entry, "y")?)?
        }
        "OKP" => {
            let crv = str_member(entry, "crv")?.ok_or("`crv` is required for an OKP key")?;
            if crv != "Ed25519" {
                return Ok(None);
            }
            KeyMaterial::ed25519(&b64_member(entry, "x")?)?
        }
        "oct" => KeyMaterial::hmac(&b64_member(entry, "k")?)?,
        _ => return Ok(None),
    };
    if let Some(a) = alg {
        if !material.fits(a) {
            return Err(format!("`alg` {} does not fit a `{kty}` key", a.name()));
        }
    }
    Ok(Some(Jwk { kid, alg, material }))
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

    #[test]
    fn encryption_keys_are_skipped() {
        let jwks = r#"{"keys": [
            {"kty": "oct", "k": "aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg", "kid": "h"},
            {"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": "AQAB"}
        ]}"#;
        let loaded = parse_jwks(jwks).unwrap();
        assert_eq!(loaded.keys.len(), 1);
        assert_eq!(loaded.skipped.len(), 2);
    }

    #[test]
    fn malformed_signing_keys_are_errors() {
        let short_rsa = r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#;
        let err = parse_jwks(short_rsa).unwrap_err();
        assert!(err.starts_with("keys[0]:") && err.contains("2048"), "{err}");
        assert!(parse_jwks(r#"{"keys": [{"kty": "oct", "k": "a=="}]}"#).is_err());
        let short_hmac = parse_jwks(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err();
        assert!(short_hmac.contains("256 bits"), "{short_hmac}");
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
}
