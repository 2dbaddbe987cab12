//! Strict parsing of a compact JWS (RFC 7515) carrying JWT claims (RFC 7519).
//!
//! Stricter than Envoy where the RFCs say so: no `=` padding, no empty
//! segment, no unknown `crit`, no `alg: none` in any spelling, and the
//! header parameters that would let a token choose its own key (`jwk`, `jku`,
//! `x5u`) are refused outright.

use super::error::JwtError;
use super::keys::{decode_b64url, Alg};
use serde_json::{Map, Value};

/// Decoded header JSON larger than this is refused before parsing.
const MAX_HEADER_BYTES: usize = 4096;

/// A token that is well formed; its signature is not checked yet.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `base64url(header) "." base64url(payload)`: the bytes that were signed.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

/// The payload, with registered claims type-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    /// The whole payload, for claim rules and claim headers.
    pub payload: Map<String, Value>,
    /// The payload segment as received (base64url), for `forward_payload_header`.
    pub payload_b64: String,
}

fn is_b64url_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

pub fn parse(token: &str, max_len: usize) -> Result<ParsedToken<'_>, JwtError> {
    if token.len() > max_len {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat("not three base64url segments"));
    };
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        return Err(JwtError::BadFormat("empty segment"));
    }
    if !token.bytes().all(|b| b == b'.' || is_b64url_char(b)) {
        return Err(JwtError::BadFormat(
            "characters outside base64url (padding is not allowed)",
        ));
    }
    if h64.len() > MAX_HEADER_BYTES * 4 / 3 + 4 {
        return Err(JwtError::BadHeader("too large"));
    }
    let header_bytes = decode_b64url(h64).ok_or(JwtError::BadFormat("header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::BadHeader("not a JSON object"))?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::BadHeader(
            "`alg` is required and must be a string",
        ))?;
    let alg = Alg::from_name(alg_name).ok_or(JwtError::UnsupportedAlg)?;
    for forbidden in ["jwk", "jku", "x5u"] {
        if header.contains_key(forbidden) {
            return Err(JwtError::ForbiddenHeader(forbidden));
        }
    }
    // We implement no JWS extension, so any `crit` (even an empty one, which
    // RFC 7515 4.1.11 forbids) makes the token unacceptable.
    if header.contains_key("crit") {
        return Err(JwtError::ForbiddenHeader("crit"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::BadHeader("`kid` must be a string")),
    };
    let payload_bytes =
        decode_b64url(p64).ok_or(JwtError::BadFormat("payload is not base64url"))?;
    let payload: Map<String, Value> = serde_json::from_slice(&payload_bytes)
        .map_err(|_| JwtError::BadPayload("not a JSON object"))?;
    let signature = decode_b64url(s64).ok_or(JwtError::BadFormat("signature is not base64url"))?;
    let signing_input = token
        .get(..h64.len() + 1 + p64.len())
        .ok_or(JwtError::BadFormat("not three base64url segments"))?;
    let claims = Claims::from_payload(payload, p64)?;
    Ok(ParsedToken {
        alg,
        kid,
        signing_input,
        signature,
        claims,
    })
}

impl Claims {
    pub fn from_payload(payload: Map<String, Value>, payload_b64: &str) -> Result<Self, JwtError> {
        let string = |name: &'static str| -> Result<Option<String>, JwtError> {
            match payload.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(JwtError::BadPayload(match name {
                    "iss" => "`iss` must be a string",
                    _ => "`sub` must be a string",
                })),
            }
        };
        // NumericDate: a JSON number of seconds. Fractions are accepted
        // (RFC 7519 2) and truncated; negatives and non-numbers are not.
        let time = |name: &'static str| -> Result<Option<u64>, JwtError> {
            match payload.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => {
                    if let Some(v) = n.as_u64() {
                        Ok(Some(v))
                    } else {
                        match n.as_f64() {
                            Some(f) if (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
                            _ => Err(JwtError::BadPayload(
                                "time claims must be non-negative numbers",
                            )),
                        }
                    }
                }
                Some(_) => Err(JwtError::BadPayload("time claims must be numbers")),
            }
        };
        let aud = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(JwtError::BadPayload(
                    "`aud` must be a string or an array of strings",
                ))?,
            Some(_) => {
                return Err(JwtError::BadPayload(
                    "`aud` must be a string or an array of strings",
                ))
            }
        };
        Ok(Claims {
            iss: string("iss")?,
            sub: string("sub")?,
            aud,
            exp: time("exp")?,
            nbf: time("nbf")?,
            iat: time("iat")?,
            payload_b64: payload_b64.to_string(),
            payload,
        })
    }

    /// Looks a claim up by path (`realm_access.roles` is two steps).
    pub fn lookup(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.payload.get(first)?;
        for step in rest {
            value = value.as_object()?.get(step)?;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"i","aud":["a","b"],"exp":10,"nbf":1,"sub":"s","realm_access":{"roles":["r"]}}"#,
        );
        let p = parse(&t, 8192).unwrap();
        assert_eq!(p.alg, Alg::RS256);
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.claims.aud, ["a", "b"]);
        assert_eq!(p.claims.exp, Some(10));
        assert_eq!(p.signature, b"sig");
        let path = vec!["realm_access".to_string(), "roles".to_string()];
        assert_eq!(p.claims.lookup(&path), Some(&serde_json::json!(["r"])));
    }

    #[test]
    fn rejects_malformed_shapes() {
        let good = token(r#"{"alg":"RS256"}"#, r#"{}"#);
        let cases: Vec<(String, &str)> = vec![
            ("a.b".into(), "two segments"),
            ("a.b.c.d".into(), "four segments"),
            (format!("{good}."), "trailing dot"),
            (
                format!(".{}", good.split_once('.').unwrap().1),
                "empty header",
            ),
            (good.replacen(".c2ln", ".", 1), "empty signature"),
            (format!("{}=", good), "padding"),
            (good.replace('c', "+"), "non-url alphabet"),
            ("....".into(), "only dots"),
            ("".into(), "empty"),
            ("é.é.é".into(), "non-ascii"),
        ];
        for (t, what) in cases {
            assert!(
                matches!(parse(&t, 8192), Err(JwtError::BadFormat(_))),
                "{what}: {:?}",
                parse(&t, 8192)
            );
        }
    }

    #[test]
    fn rejects_alg_none_in_every_spelling() {
        for alg in ["none", "None", "NONE", "nOnE", ""] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(
                parse(&t, 8192).unwrap_err(),
                JwtError::UnsupportedAlg,
                "{alg}"
            );
        }
        let t = token(r#"{"alg":null}"#, "{}");
        assert!(matches!(parse(&t, 8192), Err(JwtError::BadHeader(_))));
    }

    #[test]
    fn rejects_self_keyed_and_critical_headers() {
        for h in [
            r#"{"alg":"RS256","jwk":{"kty":"oct","k":"AA"}}"#,
            r#"{"alg":"RS256","jku":"https://evil/jwks"}"#,
            r#"{"alg":"RS256","x5u":"https://evil/cert"}"#,
            r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","b64":false,"crit":["b64"]}"#,
        ] {
            assert!(
                matches!(
                    parse(&token(h, "{}"), 8192),
                    Err(JwtError::ForbiddenHeader(_))
                ),
                "{h}"
            );
        }
    }

    #[test]
    fn registered_claims_are_type_checked() {
        for p in [
            r#"{"exp":"1"}"#,
            r#"{"exp":-1}"#,
            r#"{"iss":1}"#,
            r#"{"aud":[1]}"#,
            r#"{"aud":{}}"#,
            r#"[]"#,
            r#"not json"#,
        ] {
            let t = token(r#"{"alg":"HS256"}"#, p);
            assert!(
                matches!(parse(&t, 8192), Err(JwtError::BadPayload(_))),
                "{p}"
            );
        }
        let t = token(r#"{"alg":"HS256"}"#, r#"{"exp":1.9e9}"#);
        assert_eq!(parse(&t, 8192).unwrap().claims.exp, Some(1_900_000_000));
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let t = token(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"x":"{}"}}"#, "a".repeat(10_000)),
        );
        assert_eq!(parse(&t, 4096).unwrap_err(), JwtError::TooLarge);
    }
}
