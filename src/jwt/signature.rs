//! Signature verification, one backend per algorithm family, chosen when the
//! key is loaded.
//!
//! - RS*/PS*: our own `rsa` module on `montgomery`, the modulus prepared
//!   (Montgomery form) once per key.
//! - EdDSA: `ed25519-dalek`, strict verification.
//! - ES256: our own pass (`es256`) on RustCrypto's `p256` keys and scalars;
//!   a JWKS key gets per-key tables, a one-off key (a DPoP proof's) a small
//!   table per call. ES384/ES512: RustCrypto's `p384`/`p521`.
//! - HS*: RustCrypto's `hmac`, constant-time tag comparison.
//!
//! Our own code has already parsed the token strictly and checked the claims
//! and times before any of this runs, so a backend sees only
//! `(alg, signing input, signature bytes)`.

use super::keys::Alg;
use super::rsa::{RsaHash, RsaPublicKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// Smallest RSA modulus we accept (RFC 7518 section 3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus we accept: bounds the cost of one verification.
pub const MAX_RSA_BITS: usize = 8192;

/// The curve's ECDSA public key from its affine coordinates, as
/// `from_sec1_bytes` reads an uncompressed point: each coordinate below the
/// field's modulus, the point on the curve and not the identity. Built from
/// the coordinates directly, so SEC1's compressed-point branch (a square
/// root per curve, about 19 KB of the .wasm) is not linked (issue 14).
macro_rules! ec_key {
    ($curve:ident, $x:expr, $y:expr) => {{
        use $curve::elliptic_curve::point::AffineCoordinates;
        match (
            $curve::FieldBytes::try_from($x),
            $curve::FieldBytes::try_from($y),
        ) {
            (Ok(x), Ok(y)) => {
                Option::<$curve::AffinePoint>::from($curve::AffinePoint::from_coordinates(&x, &y))
                    .and_then(|point| $curve::ecdsa::VerifyingKey::from_affine(point).ok())
            }
            _ => None,
        }
    }};
}

/// A public (or, for HS*, shared) key ready to verify.
pub enum KeyMaterial {
    Rsa(Box<RsaPublicKey>),
    P256(Box<P256Key>),
    P384(Box<p384::ecdsa::VerifyingKey>),
    P521(Box<p521::ecdsa::VerifyingKey>),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
    Hmac(Box<HmacKey>),
}

/// A P-256 key, with its verification tables once it is known to live.
pub struct P256Key {
    key: p256::ecdsa::VerifyingKey,
    prepared: Option<super::es256::PreparedKey>,
}

/// An HMAC secret; never printed.
pub struct HmacKey(Vec<u8>);

impl std::fmt::Debug for KeyMaterial {
    // Never prints key bytes: an HMAC key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            KeyMaterial::Rsa(k) => return write!(f, "RSA({} bits)", k.bits()),
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::P521(_) => "EC P-521",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
            KeyMaterial::Hmac(_) => "oct (redacted)",
        };
        f.write_str(kind)
    }
}

impl KeyMaterial {
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let bits = super::rsa::bit_length(n);
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
        // The modulus goes into Montgomery form here, once per key.
        RsaPublicKey::new(n, e).map(|k| KeyMaterial::Rsa(Box::new(k)))
    }

    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Result<Self, String> {
        let size = match crv {
            "P-256" => 32,
            "P-384" => 48,
            "P-521" => 66,
            other => {
                return Err(format!(
                    "EC curve {} is not supported",
                    crate::vocab::quote(other)
                ))
            }
        };
        if x.len() != size || y.len() != size {
            return Err(format!(
                "EC coordinates for {crv} must be {size} bytes each"
            ));
        }
        let off_curve = || format!("EC point is not on {crv}");
        Ok(match crv {
            "P-256" => KeyMaterial::P256(Box::new(P256Key {
                key: ec_key!(p256, x, y).ok_or_else(off_curve)?,
                prepared: None,
            })),
            "P-384" => KeyMaterial::P384(Box::new(ec_key!(p384, x, y).ok_or_else(off_curve)?)),
            _ => KeyMaterial::P521(Box::new(ec_key!(p521, x, y).ok_or_else(off_curve)?)),
        })
    }

    /// The key with what makes each verification cheaper computed now: for
    /// keys that verify many tokens (a JWKS's), not a proof's one-off key.
    /// Costs about one verification, once.
    pub fn prepared(self) -> Self {
        match self {
            KeyMaterial::P256(k) => KeyMaterial::P256(Box::new(P256Key {
                prepared: super::es256::PreparedKey::new(&k.key),
                key: k.key,
            })),
            other => other,
        }
    }

    pub fn ed25519(x: &[u8]) -> Result<Self, String> {
        let bytes: &[u8; 32] = x
            .try_into()
            .map_err(|_| "Ed25519 key must be 32 bytes".to_string())?;
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
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
        Ok(KeyMaterial::Hmac(Box::new(HmacKey(k.to_vec()))))
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
        ) || matches!((self, alg), (KeyMaterial::Hmac(k), HS384) if k.0.len() >= 48)
            || matches!((self, alg), (KeyMaterial::Hmac(k), HS512) if k.0.len() >= 64)
    }

    /// Verifies `signature` over `signing_input` with `alg`; a key that does
    /// not fit `alg` verifies nothing.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], signature: &[u8]) -> bool {
        use Alg::*;
        if !self.fits(alg) {
            return false;
        }
        match (self, alg) {
            (KeyMaterial::Rsa(k), RS256) => {
                k.verify_pkcs1v15(RsaHash::Sha256, signing_input, signature)
            }
            (KeyMaterial::Rsa(k), RS384) => {
                k.verify_pkcs1v15(RsaHash::Sha384, signing_input, signature)
            }
            (KeyMaterial::Rsa(k), RS512) => {
                k.verify_pkcs1v15(RsaHash::Sha512, signing_input, signature)
            }
            (KeyMaterial::Rsa(k), PS256) => k.verify_pss(RsaHash::Sha256, signing_input, signature),
            (KeyMaterial::Rsa(k), PS384) => k.verify_pss(RsaHash::Sha384, signing_input, signature),
            (KeyMaterial::Rsa(k), PS512) => k.verify_pss(RsaHash::Sha512, signing_input, signature),
            (KeyMaterial::P256(k), ES256) => match &k.prepared {
                Some(prepared) => prepared.verify(signing_input, signature),
                None => super::es256::verify_one_off(&k.key, signing_input, signature),
            },
            (KeyMaterial::P384(k), ES384) => verify_p384(k, signing_input, signature),
            (KeyMaterial::P521(k), ES512) => verify_p521(k, signing_input, signature),
            (KeyMaterial::Ed25519(k), EdDSA) => verify_ed25519(k, signing_input, signature),
            (KeyMaterial::Hmac(k), HS256) => {
                verify_hmac::<Hmac<Sha256>>(&k.0, signing_input, signature)
            }
            (KeyMaterial::Hmac(k), HS384) => {
                verify_hmac::<Hmac<Sha384>>(&k.0, signing_input, signature)
            }
            (KeyMaterial::Hmac(k), HS512) => {
                verify_hmac::<Hmac<Sha512>>(&k.0, signing_input, signature)
            }
            _ => false,
        }
    }
}

/// ES384 per RFC 7518 3.4: SHA-384, signature is R || S, 48 bytes each.
pub fn verify_p384(key: &p384::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    use p384::ecdsa::signature::Verifier;
    signature.len() == 96
        && p384::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

/// ES512 per RFC 7518 3.4: SHA-512, signature is R || S, 66 bytes each.
pub fn verify_p521(key: &p521::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    signature.len() == 132
        && p521::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|sig| key.verify(message, &sig).is_ok())
}

/// EdDSA (RFC 8037): Ed25519 with strict verification, which refuses
/// non-canonical S, small-order R and weak (small-order) keys.
pub fn verify_ed25519(key: &ed25519_dalek::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(bytes) = <&[u8; 64]>::try_from(signature) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(bytes);
    key.verify_strict(message, &sig).is_ok()
}

/// HS* per RFC 7518 3.2: the whole tag, compared in constant time.
fn verify_hmac<M: Mac + KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(tag).is_ok()
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
