//! Fixture keys (tests/fixtures/keys, test-only) that sign arbitrary JWS
//! headers and payloads, so tests can build every hostile token shape.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn read_pem(name: &str) -> String {
    let path = fixtures_dir().join("keys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub enum Signer {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Ed25519(ed25519_compact::KeyPair),
    Hmac(Vec<u8>),
}

/// A key with its `kid`, able to sign for the algorithms of its type.
pub struct TestKey {
    pub kid: String,
    pub signer: Signer,
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        Self::rsa_from("rsa2048.pem", kid)
    }

    pub fn rsa_from(file: &str, kid: &str) -> Self {
        Self::rsa_pem(&read_pem(file), kid).unwrap()
    }

    /// An RSA key from PKCS#8 PEM text.
    pub fn rsa_pem(pem: &str, kid: &str) -> Result<Self, String> {
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| format!("RSA PEM: {e}"))?;
        Ok(TestKey {
            kid: kid.into(),
            signer: Signer::Rsa(Box::new(key)),
        })
    }

    pub fn p256(kid: &str) -> Self {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&read_pem("p256.pem")).unwrap();
        TestKey {
            kid: kid.into(),
            signer: Signer::P256(key),
        }
    }

    pub fn p384(kid: &str) -> Self {
        use p384::pkcs8::DecodePrivateKey;
        let key = p384::ecdsa::SigningKey::from_pkcs8_pem(&read_pem("p384.pem")).unwrap();
        TestKey {
            kid: kid.into(),
            signer: Signer::P384(key),
        }
    }

    pub fn p521(kid: &str) -> Self {
        use p521::pkcs8::DecodePrivateKey;
        let secret = p521::SecretKey::from_pkcs8_pem(&read_pem("p521.pem")).unwrap();
        let key = p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes()).unwrap();
        TestKey {
            kid: kid.into(),
            signer: Signer::P521(key),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let kp = ed25519_compact::KeyPair::from_pem(&read_pem("ed25519.pem")).unwrap();
        TestKey {
            kid: kid.into(),
            signer: Signer::Ed25519(kp),
        }
    }

    pub fn hmac(kid: &str, secret: &[u8]) -> Self {
        TestKey {
            kid: kid.into(),
            signer: Signer::Hmac(secret.to_vec()),
        }
    }

    /// The default algorithm for this key type.
    pub fn alg(&self) -> &'static str {
        match &self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::P256(_) => "ES256",
            Signer::P384(_) => "ES384",
            Signer::P521(_) => "ES512",
            Signer::Ed25519(_) => "EdDSA",
            Signer::Hmac(_) => "HS256",
        }
    }

    /// The public JWK (for HMAC, the `oct` key itself).
    pub fn jwk(&self) -> Value {
        let mut jwk = match &self.signer {
            Signer::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                json!({"kty": "RSA", "n": b64(k.n().to_bytes_be()), "e": b64(k.e().to_bytes_be())})
            }
            Signer::P256(k) => {
                let p = k.verifying_key().to_sec1_point(false);
                ec_jwk("P-256", p.as_bytes())
            }
            Signer::P384(k) => {
                let p = k.verifying_key().to_sec1_point(false);
                ec_jwk("P-384", p.as_bytes())
            }
            Signer::P521(k) => {
                let p = p521::ecdsa::VerifyingKey::from(k).to_sec1_point(false);
                ec_jwk("P-521", p.as_bytes())
            }
            Signer::Ed25519(kp) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.pk.as_ref())})
            }
            Signer::Hmac(k) => json!({"kty": "oct", "k": b64(k)}),
        };
        jwk["kid"] = json!(self.kid);
        jwk
    }

    /// Signs `signing_input` with `alg` (which must fit the key type).
    pub fn sign_bytes(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        match (&self.signer, alg) {
            (Signer::Rsa(k), _) => rsa_sign(k, alg, input),
            (Signer::P256(k), _) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            (Signer::P384(k), _) => {
                use p384::ecdsa::signature::Signer as _;
                let s: p384::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            (Signer::P521(k), _) => {
                use p521::ecdsa::signature::Signer as _;
                let s: p521::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            (Signer::Ed25519(kp), _) => kp.sk.sign(input, None).to_vec(),
            (Signer::Hmac(k), "HS384") => hmac_sha512::sha384::HMAC::mac(input, k).to_vec(),
            (Signer::Hmac(k), "HS512") => hmac_sha512::HMAC::mac(input, k).to_vec(),
            (Signer::Hmac(k), _) => hmac_sha256::HMAC::mac(input, k).to_vec(),
        }
    }

    /// A compact JWS with the default header (`alg`, `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(self.alg(), claims)
    }

    pub fn sign_with(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "kid": self.kid, "typ": "JWT"});
        self.sign_raw(alg, &header, claims)
    }

    /// Any header and payload, signed with `alg`.
    pub fn sign_raw(&self, alg: &str, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = self.sign_bytes(alg, input.as_bytes());
        format!("{input}.{}", b64(sig))
    }
}

fn ec_jwk(crv: &str, sec1: &[u8]) -> Value {
    let coord = (sec1.len() - 1) / 2;
    let x = &sec1[1..1 + coord];
    let y = &sec1[1 + coord..];
    json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
}

fn rsa_sign(key: &rsa::RsaPrivateKey, alg: &str, input: &[u8]) -> Vec<u8> {
    use rsa::sha2::{Sha256, Sha384, Sha512};
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer as _};
    let key = key.clone();
    let mut rng = rand_core::OsRng;
    match alg {
        "RS384" => rsa::pkcs1v15::SigningKey::<Sha384>::new(key)
            .sign(input)
            .to_vec(),
        "RS512" => rsa::pkcs1v15::SigningKey::<Sha512>::new(key)
            .sign(input)
            .to_vec(),
        "PS256" => rsa::pss::SigningKey::<Sha256>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        "PS384" => rsa::pss::SigningKey::<Sha384>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        "PS512" => rsa::pss::SigningKey::<Sha512>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        _ => rsa::pkcs1v15::SigningKey::<Sha256>::new(key)
            .sign(input)
            .to_vec(),
    }
}

/// A JWKS document from keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}
