//! RSA signature verification (RS256/384/512 and PS256/384/512) on
//! our Montgomery arithmetic (`montgomery`).
//!
//! The key is prepared once, when the JWKS is loaded: the modulus goes into
//! Montgomery parameters (R² mod n, -n⁻¹ mod 2^28), so a verification is one
//! conversion, `bits(e) - 1` squarings and `popcount(e) - 1` multiplications
//! (16 and 1 for e = 65537), the last of which, by the plain signature, also
//! leaves Montgomery form.
//!
//! Everything here handles public data (key, message, signature), so variable
//! time is fine; the final comparisons are constant-time anyway because they
//! cost nothing.

use super::montgomery::Modulus;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The SHA-2 functions JWS pairs with RSA (RFC 7518 3.3 and 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    Sha256,
    Sha384,
    Sha512,
}

/// Longest digest we produce (SHA-512).
const MAX_DIGEST_LEN: usize = 64;

/// A digest held inline: no allocation per hash.
struct DigestBytes {
    bytes: [u8; MAX_DIGEST_LEN],
    len: usize,
}

impl DigestBytes {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl RsaHash {
    pub fn output_len(self) -> usize {
        match self {
            RsaHash::Sha256 => 32,
            RsaHash::Sha384 => 48,
            RsaHash::Sha512 => 64,
        }
    }

    /// DER of `DigestInfo { algorithm, digest }` up to the digest bytes
    /// (RFC 8017 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            RsaHash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            RsaHash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            RsaHash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// Hash of the concatenation of `parts`.
    fn digest(self, parts: &[&[u8]]) -> DigestBytes {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8; MAX_DIGEST_LEN]) -> usize {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            let digest = hasher.finalize();
            for (dst, src) in out.iter_mut().zip(digest.iter()) {
                *dst = *src;
            }
            digest.len()
        }
        let mut bytes = [0u8; MAX_DIGEST_LEN];
        let len = match self {
            RsaHash::Sha256 => run::<Sha256>(parts, &mut bytes),
            RsaHash::Sha384 => run::<Sha384>(parts, &mut bytes),
            RsaHash::Sha512 => run::<Sha512>(parts, &mut bytes),
        };
        DigestBytes { bytes, len }
    }
}

/// An RSA public key prepared for verification.
#[derive(Clone)]
pub struct RsaPublicKey {
    /// The modulus and its Montgomery constants, computed once per key.
    modulus: Modulus,
    exponent: u32,
    /// Bit length of the modulus.
    bits: usize,
    /// Byte length of the modulus: every signature has exactly this length.
    len: usize,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaPublicKey({} bits, e = {})", self.bits, self.exponent)
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Bit length of a big-endian integer (leading zero bytes allowed).
pub fn bit_length(be: &[u8]) -> usize {
    let be = strip_leading_zeros(be);
    be.len() * 8 - be.first().map_or(0, |b| b.leading_zeros() as usize)
}

/// Constant-time equality of two byte strings of public length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl RsaPublicKey {
    /// Prepares `(n, e)` (big-endian, leading zeros allowed). Size limits
    /// are the caller's policy; this refuses only what cannot be an RSA key:
    /// an even or tiny modulus, an even exponent or e = 1, e ≥ 2^32.
    pub fn new(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_length(n);
        // Below this the PKCS#1 v1.5 block cannot hold a SHA-512 DigestInfo
        // with the minimum padding; real keys are far larger anyway.
        if bits < 1024 {
            return Err(format!("RSA modulus is {bits} bits, too small"));
        }
        let exponent = match e.len() {
            1..=4 => e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)),
            _ => 0,
        };
        if exponent < 3 || exponent % 2 == 0 {
            return Err(
                "RSA exponent `e` must be an odd number greater than 1 and below 2^32".into(),
            );
        }
        // The modulus is public: the variable-time setup is fine.
        let modulus = Modulus::new(n).ok_or("RSA modulus must be an odd number")?;
        Ok(RsaPublicKey {
            modulus,
            exponent,
            bits,
            len: n.len(),
        })
    }

    pub fn bits(&self) -> usize {
        self.bits
    }

    /// RSAVP1 (RFC 8017 5.2.2) with the I2OSP to the modulus length: `None`
    /// when the signature has the wrong length or its value is not below n.
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.len {
            return None;
        }
        self.modulus.pow(signature, self.exponent)
    }

    /// RSASSA-PKCS1-v1_5-VERIFY (RFC 8017 8.2.2): the expected encoded block
    /// is built and compared whole; the decrypted block is never parsed.
    pub fn verify_pkcs1v15(&self, hash: RsaHash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let digest = hash.digest(&[message]);
        let prefix = hash.digest_info_prefix();
        let t_len = prefix.len() + hash.output_len();
        // 0x00 0x01 PS 0x00 T with at least 8 bytes of PS (RFC 8017 9.2 step 3).
        let Some(padding_len) = self.len.checked_sub(t_len + 3) else {
            return false;
        };
        if padding_len < 8 {
            return false;
        }
        let mut expected = Vec::with_capacity(self.len);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + padding_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(prefix);
        expected.extend_from_slice(digest.as_slice());
        ct_eq(&em, &expected)
    }

    /// RSASSA-PSS-VERIFY (RFC 8017 8.1.2, EMSA-PSS-VERIFY 9.1.2) with MGF1
    /// over the same hash and a salt as long as the hash, as JWS requires
    /// (RFC 7518 3.5).
    pub fn verify_pss(&self, hash: RsaHash, message: &[u8], signature: &[u8]) -> bool {
        let Some(k_bytes) = self.public_op(signature) else {
            return false;
        };
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        // I2OSP(m, emLen): when emBits is a multiple of 8 the k-byte block
        // has one more leading byte, which must be zero.
        let Some(extra) = k_bytes.len().checked_sub(em_len) else {
            return false;
        };
        let (head, em) = k_bytes.split_at(extra.min(k_bytes.len()));
        if head.iter().any(|b| *b != 0) {
            return false;
        }
        emsa_pss_verify(hash, message, em, em_bits)
    }
}

/// EMSA-PSS-VERIFY (RFC 8017 9.1.2) with sLen = hLen and MGF1 of `hash`.
fn emsa_pss_verify(hash: RsaHash, message: &[u8], em: &[u8], em_bits: usize) -> bool {
    let h_len = hash.output_len();
    let s_len = h_len;
    let em_len = em.len();
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Step 4.
    if em.last() != Some(&0xbc) {
        return false;
    }
    // Step 5.
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let Some(h) = rest.get(..h_len) else {
        return false;
    };
    // Step 6: the bits above emBits must be zero.
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shr(unused_bits as u32).unwrap_or(0);
    if masked_db.first().is_none_or(|b| b & !top_mask != 0) {
        return false;
    }
    // Steps 7-9.
    let mut db = masked_db.to_vec();
    mgf1_xor(hash, h, &mut db);
    if let Some(first) = db.first_mut() {
        *first &= top_mask;
    }
    // Step 10: PS (zeros) then 0x01, then the salt.
    let ps_len = em_len - h_len - s_len - 2;
    let (ps, one_and_salt) = db.split_at(ps_len);
    if ps.iter().any(|b| *b != 0) || one_and_salt.first() != Some(&0x01) {
        return false;
    }
    let salt = one_and_salt.get(1..).unwrap_or_default();
    if salt.len() != s_len {
        return false;
    }
    // Steps 12-14.
    let m_hash = hash.digest(&[message]);
    let h_prime = hash.digest(&[&[0u8; 8], m_hash.as_slice(), salt]);
    ct_eq(h, h_prime.as_slice())
}

/// XORs `out` with MGF1(seed, out.len()) (RFC 8017 B.2.1).
fn mgf1_xor(hash: RsaHash, seed: &[u8], out: &mut [u8]) {
    let mut counter: u32 = 0;
    for chunk in out.chunks_mut(hash.output_len()) {
        let block = hash.digest(&[seed, &counter.to_be_bytes()]);
        for (o, m) in chunk.iter_mut().zip(block.as_slice()) {
            *o ^= m;
        }
        counter = counter.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_key(file: &str) -> ::rsa::RsaPrivateKey {
        use ::rsa::pkcs8::DecodePrivateKey;
        let path = ai_auth_testkit::keys::fixtures_dir()
            .join("keys")
            .join(file);
        ::rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn prepared(key: &::rsa::RsaPrivateKey) -> RsaPublicKey {
        use ::rsa::traits::PublicKeyParts;
        RsaPublicKey::new(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap()
    }

    fn sign_pkcs1(key: &::rsa::RsaPrivateKey, msg: &[u8]) -> Vec<u8> {
        use ::rsa::signature::{SignatureEncoding, Signer};
        ::rsa::pkcs1v15::SigningKey::<::rsa::sha2::Sha256>::new(key.clone())
            .sign(msg)
            .to_vec()
    }

    /// Raw RSA with the private key: lets a test sign any block it likes.
    fn raw_sign(key: &::rsa::RsaPrivateKey, block: &[u8]) -> Vec<u8> {
        use ::rsa::hazmat::rsa_decrypt_and_check;
        use ::rsa::traits::PublicKeyParts;
        let m = ::rsa::BigUint::from_bytes_be(block);
        let s = rsa_decrypt_and_check::<rand_core::OsRng>(key, None, &m).unwrap();
        let mut out = s.to_bytes_be();
        while out.len() < key.size() {
            out.insert(0, 0);
        }
        out
    }

    #[test]
    fn pkcs1v15_accepts_a_good_signature_and_rejects_tampering() {
        let key = fixture_key("rsa2048.pem");
        let public = prepared(&key);
        assert_eq!(public.bits(), 2048);
        let sig = sign_pkcs1(&key, b"hello");
        assert!(public.verify_pkcs1v15(RsaHash::Sha256, b"hello", &sig));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"hellp", &sig));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha384, b"hello", &sig));
        assert!(!public.verify_pss(RsaHash::Sha256, b"hello", &sig));
        let mut flipped = sig.clone();
        flipped[100] ^= 1;
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"hello", &flipped));
    }

    #[test]
    fn signature_length_and_range_are_checked() {
        let key = fixture_key("rsa2048.pem");
        let public = prepared(&key);
        let sig = sign_pkcs1(&key, b"m");
        // A leading zero byte added or one stripped: same integer, wrong length.
        let mut longer = vec![0u8];
        longer.extend_from_slice(&sig);
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &longer));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &sig[1..]));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &[]));
        // s + n has the same value mod n but is out of range (when it fits).
        use ::rsa::traits::PublicKeyParts;
        let s_plus_n = ::rsa::BigUint::from_bytes_be(&sig) + key.n();
        let bytes = s_plus_n.to_bytes_be();
        if bytes.len() == sig.len() {
            assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &bytes));
        }
        let n_bytes = key.n().to_bytes_be();
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &n_bytes));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"m", &vec![0xff; 256]));
    }

    /// Blocks a lenient parser would take (Bleichenbacher 2006 style
    /// garbage after the digest, short padding, missing NULL) are refused
    /// because the whole block is compared.
    #[test]
    fn pkcs1v15_forged_block_shapes_are_refused() {
        let key = fixture_key("rsa2048.pem");
        let public = prepared(&key);
        let digest = RsaHash::Sha256.digest(&[b"msg"]);
        let prefix = RsaHash::Sha256.digest_info_prefix();
        let build = |padding: usize, t: &[u8], trailer: &[u8]| {
            let mut b = vec![0x00, 0x01];
            b.extend(std::iter::repeat_n(0xff, padding));
            b.push(0x00);
            b.extend_from_slice(t);
            b.extend_from_slice(trailer);
            b
        };
        let mut t = prefix.to_vec();
        t.extend_from_slice(digest.as_slice());
        let good = build(256 - 3 - t.len(), &t, &[]);
        assert!(public.verify_pkcs1v15(RsaHash::Sha256, b"msg", &raw_sign(&key, &good)));
        // Garbage after the digest, padding shortened to make room.
        let garbage = build(256 - 3 - t.len() - 8, &t, &[0xab; 8]);
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"msg", &raw_sign(&key, &garbage)));
        // DigestInfo without the NULL parameters.
        let mut no_null = vec![
            0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x04, 0x20,
        ];
        no_null.extend_from_slice(digest.as_slice());
        let block = build(256 - 3 - no_null.len(), &no_null, &[]);
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"msg", &raw_sign(&key, &block)));
        // Block type 2 instead of 1.
        let mut type2 = good.clone();
        type2[1] = 0x02;
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"msg", &raw_sign(&key, &type2)));
    }

    #[test]
    fn pss_round_trip_for_every_hash() {
        use ::rsa::signature::{RandomizedSigner, SignatureEncoding};
        let key = fixture_key("rsa2048-b.pem");
        let public = prepared(&key);
        let mut rng = rand_core::OsRng;
        let sig256 = ::rsa::pss::SigningKey::<::rsa::sha2::Sha256>::new(key.clone())
            .sign_with_rng(&mut rng, b"x")
            .to_vec();
        let sig384 = ::rsa::pss::SigningKey::<::rsa::sha2::Sha384>::new(key.clone())
            .sign_with_rng(&mut rng, b"x")
            .to_vec();
        let sig512 = ::rsa::pss::SigningKey::<::rsa::sha2::Sha512>::new(key.clone())
            .sign_with_rng(&mut rng, b"x")
            .to_vec();
        assert!(public.verify_pss(RsaHash::Sha256, b"x", &sig256));
        assert!(public.verify_pss(RsaHash::Sha384, b"x", &sig384));
        assert!(public.verify_pss(RsaHash::Sha512, b"x", &sig512));
        assert!(!public.verify_pss(RsaHash::Sha384, b"x", &sig256));
        assert!(!public.verify_pss(RsaHash::Sha256, b"y", &sig256));
        assert!(!public.verify_pkcs1v15(RsaHash::Sha256, b"x", &sig256));
    }

    #[test]
    fn pss_with_another_salt_length_is_refused() {
        use ::rsa::signature::{RandomizedSigner, SignatureEncoding};
        let key = fixture_key("rsa2048.pem");
        let public = prepared(&key);
        let mut rng = rand_core::OsRng;
        for salt_len in [0, 20, 31, 33, 64] {
            let sig = ::rsa::pss::SigningKey::<::rsa::sha2::Sha256>::new_with_salt_len(
                key.clone(),
                salt_len,
            )
            .sign_with_rng(&mut rng, b"x")
            .to_vec();
            assert!(
                !public.verify_pss(RsaHash::Sha256, b"x", &sig),
                "{salt_len}"
            );
        }
    }

    #[test]
    fn keys_that_cannot_be_rsa_are_refused() {
        let key = fixture_key("rsa2048.pem");
        use ::rsa::traits::PublicKeyParts;
        let n = key.n().to_bytes_be();
        assert!(RsaPublicKey::new(&n, &[1, 0, 1]).is_ok());
        assert!(RsaPublicKey::new(&n, &[0, 0, 1, 0, 1]).is_ok());
        assert!(RsaPublicKey::new(&n, &[3]).is_ok());
        assert!(RsaPublicKey::new(&n, &[1]).is_err());
        assert!(RsaPublicKey::new(&n, &[2]).is_err());
        assert!(RsaPublicKey::new(&n, &[]).is_err());
        assert!(RsaPublicKey::new(&n, &[1, 0, 0, 0, 1]).is_err());
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(RsaPublicKey::new(&even, &[1, 0, 1]).is_err());
        assert!(RsaPublicKey::new(&[0xff; 64], &[1, 0, 1]).is_err());
    }

    #[test]
    fn small_exponents_work() {
        // e = 3 and e = 0xffff_ffff exercise the square-and-multiply loop.
        let key = fixture_key("rsa2048.pem");
        use ::rsa::traits::PublicKeyParts;
        let n = key.n().to_bytes_be();
        for e in [3u32, 17, 0xffff_ffff] {
            let public = RsaPublicKey::new(&n, &e.to_be_bytes()).unwrap();
            let s = ::rsa::BigUint::from_bytes_be(&[0x12; 200]);
            let expected = s.modpow(&::rsa::BigUint::from(e), key.n());
            let mut sig = s.to_bytes_be();
            while sig.len() < 256 {
                sig.insert(0, 0);
            }
            let got = public.public_op(&sig).unwrap();
            let mut want = expected.to_bytes_be();
            while want.len() < 256 {
                want.insert(0, 0);
            }
            assert_eq!(got, want, "e = {e}");
        }
    }
}
