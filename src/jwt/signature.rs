//! Signature verification, one backend per algorithm family, chosen when the
//! key is loaded.
//!
//! jwt-simple checks RS*, PS*, ES256, ES384, EdDSA and HS*; ES512, which
//! jwt-simple lacks, is checked with RustCrypto's `p521`. Our own code has
//! already parsed the token strictly and checked the claims before any of
//! this runs; jwt-simple re-checks `exp`/`nbf` with the same clock and skew.

use super::keys::Alg;
use jwt_simple::prelude::*;

/// Smallest RSA modulus we accept (RFC 7518 section 3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus we accept: bounds the cost of one verification.
pub const MAX_RSA_BITS: usize = 8192;

/// A public (or, for HS*, shared) key ready to verify.
pub enum KeyMaterial {
    Rsa(Box<RsaKeys>),
    P256(Box<ES256PublicKey>),
    P384(Box<ES384PublicKey>),
    P521(Box<p521::ecdsa::VerifyingKey>),
    Ed25519(Box<Ed25519PublicKey>),
    Hmac(Box<HmacKeys>),
}

/// jwt-simple has one type per RSA algorithm; all are built from the key once.
pub struct RsaKeys {
    bits: usize,
    rs256: RS256PublicKey,
    rs384: RS384PublicKey,
    rs512: RS512PublicKey,
    ps256: PS256PublicKey,
    ps384: PS384PublicKey,
    ps512: PS512PublicKey,
}

pub struct HmacKeys {
    len: usize,
    hs256: HS256Key,
    hs384: HS384Key,
    hs512: HS512Key,
}

impl std::fmt::Debug for KeyMaterial {
    // Never prints key bytes: an HMAC key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            KeyMaterial::Rsa(k) => return write!(f, "RSA({} bits)", k.bits),
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::P521(_) => "EC P-521",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
            KeyMaterial::Hmac(_) => "oct (redacted)",
        };
        f.write_str(kind)
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

impl KeyMaterial {
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let n = strip_leading_zeros(n);
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required"
            ));
        }
        if bits > MAX_RSA_BITS {
            return Err(format!(
                "RSA modulus is {bits} bits; at most {MAX_RSA_BITS} are accepted"
            ));
        }
        let e = strip_leading_zeros(e);
        let e_is_odd = e.last().is_some_and(|b| b & 1 == 1);
        if e.len() > 4 || !e_is_odd || e == [1] {
            return Err(
                "RSA exponent `e` must be an odd number greater than 1 and below 2^32".into(),
            );
        }
        let bad = |_| "RSA key could not be loaded".to_string();
        Ok(KeyMaterial::Rsa(Box::new(RsaKeys {
            bits,
            rs256: RS256PublicKey::from_components(n, e).map_err(bad)?,
            rs384: RS384PublicKey::from_components(n, e).map_err(bad)?,
            rs512: RS512PublicKey::from_components(n, e).map_err(bad)?,
            ps256: PS256PublicKey::from_components(n, e).map_err(bad)?,
            ps384: PS384PublicKey::from_components(n, e).map_err(bad)?,
            ps512: PS512PublicKey::from_components(n, e).map_err(bad)?,
        })))
    }

    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Result<Self, String> {
        let size = match crv {
            "P-256" => 32,
            "P-384" => 48,
            "P-521" => 66,
            other => return Err(format!("EC curve `{other}` is not supported")),
        };
        if x.len() != size || y.len() != size {
            return Err(format!(
                "EC coordinates for {crv} must be {size} bytes each"
            ));
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let off_curve = || format!("EC point is not on {crv}");
        Ok(match crv {
            "P-256" => KeyMaterial::P256(Box::new(
                ES256PublicKey::from_bytes(&point).map_err(|_| off_curve())?,
            )),
            "P-384" => KeyMaterial::P384(Box::new(
                ES384PublicKey::from_bytes(&point).map_err(|_| off_curve())?,
            )),
            _ => KeyMaterial::P521(Box::new(
                p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| off_curve())?,
            )),
        })
    }

    pub fn ed25519(x: &[u8]) -> Result<Self, String> {
        if x.len() != 32 {
            return Err("Ed25519 key must be 32 bytes".into());
        }
        Ed25519PublicKey::from_bytes(x)
            .map(|k| KeyMaterial::Ed25519(Box::new(k)))
            .map_err(|_| "Ed25519 key could not be loaded".into())
    }

    pub fn hmac(k: &[u8]) -> Result<Self, String> {
        // RFC 7518 3.2: a key at least as long as the hash output.
        if k.len() < 32 {
            return Err(format!(
                "an HMAC key must be at least 256 bits (RFC 7518 3.2); this one is {} bits",
                k.len() * 8
            ));
        }
        Ok(KeyMaterial::Hmac(Box::new(HmacKeys {
            len: k.len(),
            hs256: HS256Key::from_bytes(k),
            hs384: HS384Key::from_bytes(k),
            hs512: HS512Key::from_bytes(k),
        })))
    }

    /// Whether this key type may verify `alg` (prevents algorithm confusion).
    pub fn fits(&self, alg: Alg) -> bool {
        use Alg::*;
        matches!(
            (self, alg),
            (
                KeyMaterial::Rsa(_),
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (KeyMaterial::P256(_), ES256)
                | (KeyMaterial::P384(_), ES384)
                | (KeyMaterial::P521(_), ES512)
                | (KeyMaterial::Ed25519(_), EdDSA)
                | (KeyMaterial::Hmac(_), HS256)
        ) || matches!((self, alg), (KeyMaterial::Hmac(k), HS384) if k.len >= 48)
            || matches!((self, alg), (KeyMaterial::Hmac(k), HS512) if k.len >= 64)
    }

    /// Verifies the signature of `token` (whose signing input and decoded
    /// signature are given too). `now` and `skew_secs` are the caller's,
    /// so jwt-simple's own time checks agree with ours.
    pub fn verify(
        &self,
        alg: Alg,
        token: &str,
        signing_input: &[u8],
        signature: &[u8],
        now: u64,
        skew_secs: u64,
    ) -> bool {
        let options = || {
            Some(VerificationOptions {
                accept_future: true,
                time_tolerance: Some(Duration::from_secs(skew_secs)),
                artificial_time: Some(UnixTimeStamp::from_secs(now)),
                max_token_length: None,
                max_header_length: Some(usize::MAX),
                ..Default::default()
            })
        };
        use Alg::*;
        match (self, alg) {
            (KeyMaterial::Rsa(k), RS256) => k
                .rs256
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Rsa(k), RS384) => k
                .rs384
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Rsa(k), RS512) => k
                .rs512
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Rsa(k), PS256) => k
                .ps256
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Rsa(k), PS384) => k
                .ps384
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Rsa(k), PS512) => k
                .ps512
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::P256(k), ES256) => {
                k.verify_token::<NoCustomClaims>(token, options()).is_ok()
            }
            (KeyMaterial::P384(k), ES384) => {
                k.verify_token::<NoCustomClaims>(token, options()).is_ok()
            }
            (KeyMaterial::P521(k), ES512) => verify_p521(k, signing_input, signature),
            (KeyMaterial::Ed25519(k), EdDSA) => {
                k.verify_token::<NoCustomClaims>(token, options()).is_ok()
            }
            (KeyMaterial::Hmac(k), HS256) => k
                .hs256
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Hmac(k), HS384) => k
                .hs384
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            (KeyMaterial::Hmac(k), HS512) => k
                .hs512
                .verify_token::<NoCustomClaims>(token, options())
                .is_ok(),
            _ => false,
        }
    }
}

/// ES512 per RFC 7518 3.4: SHA-512, signature is R || S, 66 bytes each.
fn verify_p521(key: &p521::ecdsa::VerifyingKey, signing_input: &[u8], signature: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    if signature.len() != 132 {
        return false;
    }
    match p521::ecdsa::Signature::from_slice(signature) {
        Ok(sig) => key.verify(signing_input, &sig).is_ok(),
        Err(_) => false,
    }
}
