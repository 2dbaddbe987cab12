//! The signature backends against Google's Wycheproof vectors and, on random
//! keys and messages, against the previous verifier (jwt-simple, which wraps
//! the `rsa`, `p256`, `p384` and `ed25519-compact` crates).
//!
//! Both drive `KeyMaterial` directly, with no JWT parsing in between.

use super::*;
use ai_auth_testkit::rng::Rng;
use std::collections::BTreeMap;
use wycheproof::TestResult;

/// Counts of vectors run for one family, printed for the record.
#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
}

/// Runs one vector: valid must verify, invalid must not; acceptable ones
/// are returned with the verdict so each family can pin its choice.
fn judge(
    tally: &mut Tally,
    acceptable: &mut Vec<(String, usize, bool)>,
    file: &str,
    tc_id: usize,
    comment: &str,
    expected: &TestResult,
    verdict: bool,
) {
    match expected {
        TestResult::Valid => {
            tally.valid += 1;
            assert!(
                verdict,
                "{file} tcId {tc_id} ({comment}): valid but rejected"
            );
        }
        TestResult::Invalid => {
            tally.invalid += 1;
            assert!(
                !verdict,
                "{file} tcId {tc_id} ({comment}): invalid but accepted"
            );
        }
        TestResult::Acceptable => {
            tally.acceptable += 1;
            acceptable.push((file.to_string(), tc_id, verdict));
        }
    }
}

fn rsa_alg(hash: wycheproof::HashFunction, pss: bool) -> Option<Alg> {
    use wycheproof::HashFunction::*;
    Some(match (hash, pss) {
        (Sha2_256, false) => Alg::RS256,
        (Sha2_384, false) => Alg::RS384,
        (Sha2_512, false) => Alg::RS512,
        (Sha2_256, true) => Alg::PS256,
        (Sha2_384, true) => Alg::PS384,
        (Sha2_512, true) => Alg::PS512,
        _ => return None,
    })
}

#[test]
fn wycheproof_rsa_pkcs1v15() {
    use wycheproof::rsa_pkcs1_verify::{TestName::*, TestSet};
    let mut tally = Tally::default();
    let mut acceptable = Vec::new();
    for name in [
        Rsa2048Sha256,
        Rsa2048Sha384,
        Rsa2048Sha512,
        Rsa3072Sha256,
        Rsa3072Sha384,
        Rsa3072Sha512,
        Rsa4096Sha256,
        Rsa4096Sha384,
        Rsa4096Sha512,
        Rsa8192Sha256,
        Rsa8192Sha384,
        Rsa8192Sha512,
    ] {
        let file = format!("{name:?}");
        let set = TestSet::load(name).unwrap();
        for group in set.test_groups {
            assert!(group.key_size >= 2048, "{file}");
            let alg = rsa_alg(group.hash, false).unwrap();
            let key = KeyMaterial::rsa(&group.key.n, &group.key.e)
                .unwrap_or_else(|e| panic!("{file}: key refused: {e}"));
            for t in &group.tests {
                let verdict = key.verify(alg, &t.msg, &t.sig);
                judge(
                    &mut tally,
                    &mut acceptable,
                    &file,
                    t.tc_id,
                    &t.comment,
                    &t.result,
                    verdict,
                );
            }
        }
    }
    println!("Wycheproof RSA PKCS#1 v1.5: {tally:?}");
    // The only "acceptable" vectors are tcId 8 of each file, flagged
    // MissingNull: a DigestInfo without the NULL parameters, which some
    // legacy signers produced. We refuse them: RFC 8017 9.2 encodes the
    // NULL, and we compare the whole expected block rather than parse
    // what the signature decrypts to.
    assert_eq!(acceptable.len(), 12);
    for (file, tc_id, verdict) in &acceptable {
        assert_eq!((*tc_id, *verdict), (8, false), "{file}");
    }
    assert!(tally.valid > 0 && tally.invalid > 0);
}

#[test]
fn wycheproof_rsa_pss() {
    use wycheproof::rsa_pss_verify::{TestName::*, TestSet};
    let mut tally = Tally::default();
    let mut acceptable = Vec::new();
    let mut groups_run = 0;
    for name in [
        RsaPss2048Sha256Mgf1SaltLen32,
        RsaPss2048Sha384Mgf1SaltLen48,
        RsaPss3072Sha256Mgf1SaltLen32,
        RsaPss4096Sha256Mgf1SaltLen32,
        RsaPss4096Sha384Mgf1SaltLen48,
        RsaPss4096Sha512Mgf1SaltLen64,
        RsaPssmisc,
    ] {
        let file = format!("{name:?}");
        let set = TestSet::load(name).unwrap();
        for group in set.test_groups {
            // JWS PS*: MGF1 with the same hash, salt as long as the hash.
            let Some(alg) = rsa_alg(group.hash, true) else {
                continue;
            };
            let h_len = match alg {
                Alg::PS256 => 32,
                Alg::PS384 => 48,
                _ => 64,
            };
            if group.mgf != wycheproof::Mgf::Mgf1
                || group.mgf_hash != Some(group.hash)
                || group.salt_size != h_len
                || group.key_size < 2048
            {
                continue;
            }
            groups_run += 1;
            let key = KeyMaterial::rsa(&group.key.n, &group.key.e)
                .unwrap_or_else(|e| panic!("{file}: key refused: {e}"));
            for t in &group.tests {
                let verdict = key.verify(alg, &t.msg, &t.sig);
                judge(
                    &mut tally,
                    &mut acceptable,
                    &file,
                    t.tc_id,
                    &t.comment,
                    &t.result,
                    verdict,
                );
            }
        }
    }
    println!("Wycheproof RSA-PSS (sLen = hLen, MGF1 same hash): {tally:?} in {groups_run} groups");
    // No "acceptable" vectors in these files; a release adding some must
    // get a decision here.
    assert_eq!(acceptable, vec![]);
    assert!(tally.valid > 0 && tally.invalid > 0);
}

#[test]
fn wycheproof_ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let mut tally = Tally::default();
    let mut acceptable = Vec::new();
    let set = TestSet::load(TestName::Ed25519).unwrap();
    for group in set.test_groups {
        let key = KeyMaterial::ed25519(&group.key.pk);
        for t in &group.tests {
            let verdict = key
                .as_ref()
                .is_ok_and(|k| k.verify(Alg::EdDSA, &t.msg, &t.sig));
            judge(
                &mut tally,
                &mut acceptable,
                "ed25519",
                t.tc_id,
                &t.comment,
                &t.result,
                verdict,
            );
        }
    }
    println!("Wycheproof Ed25519: {tally:?}");
    // No "acceptable" vectors in these files; a release adding some must
    // get a decision here.
    assert_eq!(acceptable, vec![]);
    assert!(tally.valid > 0 && tally.invalid > 0);
}

#[test]
fn wycheproof_ecdsa_p1363() {
    use wycheproof::ecdsa::{TestName::*, TestSet};
    let mut tallies = BTreeMap::new();
    let mut acceptable = Vec::new();
    for (name, crv, alg) in [
        (EcdsaSecp256r1Sha256P1363, "P-256", Alg::ES256),
        (EcdsaSecp384r1Sha384P1363, "P-384", Alg::ES384),
        (EcdsaSecp521r1Sha512P1363, "P-521", Alg::ES512),
    ] {
        let file = format!("{name:?}");
        let tally: &mut Tally = tallies.entry(crv).or_default();
        let set = TestSet::load(name).unwrap();
        for group in set.test_groups {
            let point = &group.key.key;
            assert_eq!(point.first(), Some(&0x04), "{file}: uncompressed point");
            let (x, y) = point[1..].split_at((point.len() - 1) / 2);
            let key = KeyMaterial::ec(crv, x, y);
            // A JWKS key is verified with its prepared tables (P-256): both
            // ways must give the same verdict on every vector.
            let prepared = KeyMaterial::ec(crv, x, y).map(KeyMaterial::prepared);
            // P-256 keys, one-off and prepared, go through our own pass:
            // the crate's verifier is a second reference on every vector.
            let crate_key = (crv == "P-256")
                .then(|| p256::ecdsa::VerifyingKey::from_sec1_bytes(point).ok())
                .flatten();
            for t in &group.tests {
                let verdict = key.as_ref().is_ok_and(|k| k.verify(alg, &t.msg, &t.sig));
                let prepared_verdict = prepared
                    .as_ref()
                    .is_ok_and(|k| k.verify(alg, &t.msg, &t.sig));
                assert_eq!(
                    verdict, prepared_verdict,
                    "{file} tcId {}: the prepared key disagrees",
                    t.tc_id
                );
                if crv == "P-256" {
                    use p256::ecdsa::signature::Verifier;
                    let crate_verdict = crate_key.as_ref().is_some_and(|k| {
                        t.sig.len() == 64
                            && p256::ecdsa::Signature::from_slice(&t.sig)
                                .is_ok_and(|sig| k.verify(&t.msg, &sig).is_ok())
                    });
                    assert_eq!(
                        verdict, crate_verdict,
                        "{file} tcId {}: p256's verifier disagrees",
                        t.tc_id
                    );
                }
                judge(
                    tally,
                    &mut acceptable,
                    &file,
                    t.tc_id,
                    &t.comment,
                    &t.result,
                    verdict,
                );
            }
        }
    }
    println!("Wycheproof ECDSA P1363: {tallies:?}");
    // No "acceptable" vectors in these files; a release adding some must
    // get a decision here.
    assert_eq!(acceptable, vec![]);
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    ai_auth_testkit::keys::b64(bytes)
}

/// A random JWT signing input for `alg`: random claims of random length.
fn random_signing_input(rng: &mut Rng, alg: Alg) -> String {
    let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, alg.name());
    let len = 1 + rng.below(300);
    let claims = format!(
        r#"{{"sub":"{}","n":{}}}"#,
        b64(rng.bytes(len)),
        rng.next_u64() >> 12
    );
    format!("{}.{}", b64(header), b64(claims))
}

/// The ways a signature or its input are tampered with; index 0 is "not at all".
fn tampered(rng: &mut Rng, input: &str, sig: &[u8], case: usize) -> (String, Vec<u8>) {
    let mut input = input.to_string();
    let mut sig = sig.to_vec();
    match case {
        0 => {}
        1 => {
            let i = rng.below(sig.len());
            sig[i] ^= 1 << rng.below(8);
        }
        2 => {
            let i = rng.below(sig.len());
            sig[i] = sig[i].wrapping_add(1 + rng.below(255) as u8);
        }
        3 => {
            sig.pop();
        }
        4 => sig.push(0),
        5 => sig.insert(0, 0),
        6 => sig = rng.bytes(sig.len()),
        7 => {
            // Another claims character: the signed bytes change.
            let dot = input.find('.').unwrap();
            let i = dot + 1 + rng.below(input.len() - dot - 1);
            let c = input.as_bytes()[i];
            let replacement = if c == b'A' { "B" } else { "A" };
            input.replace_range(i..=i, replacement);
        }
        _ => unreachable!(),
    }
    (input, sig)
}
const TAMPER_CASES: usize = 8;

fn jwt_simple_options() -> Option<jwt_simple::prelude::VerificationOptions> {
    Some(jwt_simple::prelude::VerificationOptions {
        accept_future: true,
        max_header_length: Some(usize::MAX),
        ..Default::default()
    })
}

/// Compares our verdict and jwt-simple's on every tampering of `cases`
/// signatures made by `sign`; returns how many were compared and accepted.
fn compare<S, R>(
    rng: &mut Rng,
    key: &KeyMaterial,
    alg: Alg,
    cases: usize,
    sign: S,
    reference: R,
) -> (usize, usize)
where
    S: Fn(&[u8]) -> Vec<u8>,
    R: Fn(&str) -> bool,
{
    let (mut compared, mut accepted) = (0, 0);
    for _ in 0..cases {
        let input = random_signing_input(rng, alg);
        let sig = sign(input.as_bytes());
        for case in 0..TAMPER_CASES {
            let (input, sig) = tampered(rng, &input, &sig, case);
            if sig.is_empty() {
                continue;
            }
            let ours = key.verify(alg, input.as_bytes(), &sig);
            let token = format!("{input}.{}", b64(&sig));
            let theirs = reference(&token);
            assert_eq!(
                ours,
                theirs,
                "{} case {case}: ours {ours}, jwt-simple {theirs}\n{token}",
                alg.name()
            );
            if case == 0 {
                assert!(ours, "{}: untampered signature rejected", alg.name());
            }
            compared += 1;
            accepted += usize::from(ours);
        }
    }
    (compared, accepted)
}

fn rsa_fixture(file: &str) -> ::rsa::RsaPrivateKey {
    use ::rsa::pkcs8::DecodePrivateKey;
    let path = ai_auth_testkit::keys::fixtures_dir()
        .join("keys")
        .join(file);
    ::rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rsa_sign(key: &::rsa::RsaPrivateKey, alg: Alg, input: &[u8]) -> Vec<u8> {
    use ::rsa::sha2::{Sha256, Sha384, Sha512};
    use ::rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    use ::rsa::{pkcs1v15, pss};
    let key = key.clone();
    let mut rng = rand_core::OsRng;
    match alg {
        Alg::RS256 => pkcs1v15::SigningKey::<Sha256>::new(key)
            .sign(input)
            .to_vec(),
        Alg::RS384 => pkcs1v15::SigningKey::<Sha384>::new(key)
            .sign(input)
            .to_vec(),
        Alg::RS512 => pkcs1v15::SigningKey::<Sha512>::new(key)
            .sign(input)
            .to_vec(),
        Alg::PS256 => pss::SigningKey::<Sha256>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        Alg::PS384 => pss::SigningKey::<Sha384>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        Alg::PS512 => pss::SigningKey::<Sha512>::new(key)
            .sign_with_rng(&mut rng, input)
            .to_vec(),
        _ => unreachable!(),
    }
}

#[test]
fn differential_rsa_against_jwt_simple() {
    use ::rsa::traits::PublicKeyParts;
    use jwt_simple::prelude::*;
    let mut rng = Rng(0x5eed_0001);
    // Two fixture keys and a fresh 3072-bit one (generation is slow; the
    // Wycheproof files cover 3072 to 8192 bits too).
    let mut keys = vec![rsa_fixture("rsa2048.pem"), rsa_fixture("rsa2048-b.pem")];
    keys.push(::rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 3072).unwrap());
    let (mut compared, mut accepted) = (0, 0);
    for private in &keys {
        let (n, e) = (private.n().to_bytes_be(), private.e().to_bytes_be());
        let ours = KeyMaterial::rsa(&n, &e).unwrap();
        for alg in [
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ] {
            let reference = |token: &str| -> bool {
                macro_rules! check {
                    ($t:ty) => {
                        <$t>::from_components(&n, &e)
                            .unwrap()
                            .verify_token::<NoCustomClaims>(token, jwt_simple_options())
                            .is_ok()
                    };
                }
                match alg {
                    Alg::RS256 => check!(RS256PublicKey),
                    Alg::RS384 => check!(RS384PublicKey),
                    Alg::RS512 => check!(RS512PublicKey),
                    Alg::PS256 => check!(PS256PublicKey),
                    Alg::PS384 => check!(PS384PublicKey),
                    _ => check!(PS512PublicKey),
                }
            };
            let (c, a) = compare(
                &mut rng,
                &ours,
                alg,
                10,
                |m| rsa_sign(private, alg, m),
                reference,
            );
            compared += c;
            accepted += a;
        }
    }
    println!("RSA differential: {compared} verdicts compared, {accepted} accepted by both");
}

#[test]
fn differential_ecdsa_against_jwt_simple() {
    use jwt_simple::prelude::*;
    let mut rng = Rng(0x5eed_0002);
    let (mut compared, mut accepted) = (0, 0);
    for _ in 0..16 {
        let signer = loop {
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&rng.bytes(32)) {
                break k;
            }
        };
        let point = signer.verifying_key().to_sec1_point(false);
        let (x, y) = point.as_bytes()[1..].split_at(32);
        let plain = KeyMaterial::ec("P-256", x, y).unwrap();
        let ours = KeyMaterial::ec("P-256", x, y).unwrap().prepared();
        let theirs = ES256PublicKey::from_bytes(point.as_bytes()).unwrap();
        let sign = |m: &[u8]| {
            use p256::ecdsa::signature::Signer;
            let s: p256::ecdsa::Signature = signer.sign(m);
            s.to_bytes().to_vec()
        };
        let reference = |t: &str| {
            theirs
                .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                .is_ok()
        };
        for key in [&plain, &ours] {
            let (c, a) = compare(&mut rng, key, Alg::ES256, 4, sign, reference);
            compared += c;
            accepted += a;
        }
        // (r, n - s) is valid ECDSA too: JWS does not ask for low S, and
        // both verifiers must give the same answer.
        let input = random_signing_input(&mut rng, Alg::ES256);
        let sig = p256::ecdsa::Signature::from_slice(&sign(input.as_bytes())).unwrap();
        let (r, s) = sig.split_scalars();
        let flipped = p256::ecdsa::Signature::from_scalars(r, -s)
            .unwrap()
            .to_bytes();
        let token = format!("{input}.{}", b64(flipped));
        let verdict = ours.verify(Alg::ES256, input.as_bytes(), &flipped);
        assert_eq!(verdict, reference(&token), "high/low S flipped");
        assert!(verdict, "the other S is a valid signature too");
    }
    for _ in 0..8 {
        let signer = loop {
            if let Ok(k) = p384::ecdsa::SigningKey::from_slice(&rng.bytes(48)) {
                break k;
            }
        };
        let point = signer.verifying_key().to_sec1_point(false);
        let (x, y) = point.as_bytes()[1..].split_at(48);
        let ours = KeyMaterial::ec("P-384", x, y).unwrap();
        let theirs = ES384PublicKey::from_bytes(point.as_bytes()).unwrap();
        let sign = |m: &[u8]| {
            use p384::ecdsa::signature::Signer;
            let s: p384::ecdsa::Signature = signer.sign(m);
            s.to_bytes().to_vec()
        };
        let reference = |t: &str| {
            theirs
                .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                .is_ok()
        };
        let (c, a) = compare(&mut rng, &ours, Alg::ES384, 4, sign, reference);
        compared += c;
        accepted += a;
    }
    println!("ECDSA differential: {compared} verdicts compared, {accepted} accepted by both");
}

/// S + L (the group order) is the same scalar, non-canonical: both refuse it.
fn with_s_plus_order(sig: &[u8]) -> Vec<u8> {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(out[32 + i]) + u16::from(*l) + carry;
        out[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

#[test]
fn differential_ed25519_against_jwt_simple() {
    use jwt_simple::prelude::*;
    let mut rng = Rng(0x5eed_0003);
    let (mut compared, mut accepted) = (0, 0);
    for _ in 0..32 {
        let seed: [u8; 32] = rng.bytes(32).try_into().unwrap();
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let ours = KeyMaterial::ed25519(pair.pk.as_ref()).unwrap();
        let theirs = Ed25519PublicKey::from_bytes(pair.pk.as_ref()).unwrap();
        let reference = |t: &str| {
            theirs
                .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                .is_ok()
        };
        let sign = |m: &[u8]| pair.sk.sign(m, None).to_vec();
        let (c, a) = compare(&mut rng, &ours, Alg::EdDSA, 4, sign, reference);
        compared += c;
        accepted += a;
        let input = random_signing_input(&mut rng, Alg::EdDSA);
        let malleated = with_s_plus_order(&sign(input.as_bytes()));
        let token = format!("{input}.{}", b64(&malleated));
        assert!(!ours.verify(Alg::EdDSA, input.as_bytes(), &malleated));
        assert!(!reference(&token));
    }
    println!("Ed25519 differential: {compared} verdicts compared, {accepted} accepted by both");
}

#[test]
fn differential_hmac_against_jwt_simple() {
    use jwt_simple::prelude::*;
    let mut rng = Rng(0x5eed_0004);
    let (mut compared, mut accepted) = (0, 0);
    for len in [32, 48, 64, 100] {
        let secret = rng.bytes(len);
        let ours = KeyMaterial::hmac(&secret).unwrap();
        for alg in [Alg::HS256, Alg::HS384, Alg::HS512] {
            if !ours.fits(alg) {
                continue;
            }
            let reference = |t: &str| match alg {
                Alg::HS256 => HS256Key::from_bytes(&secret)
                    .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                    .is_ok(),
                Alg::HS384 => HS384Key::from_bytes(&secret)
                    .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                    .is_ok(),
                _ => HS512Key::from_bytes(&secret)
                    .verify_token::<NoCustomClaims>(t, jwt_simple_options())
                    .is_ok(),
            };
            let sign = |m: &[u8]| {
                let t = TestKeyHmac(&secret);
                t.sign(alg, m)
            };
            let (c, a) = compare(&mut rng, &ours, alg, 8, sign, reference);
            compared += c;
            accepted += a;
        }
    }
    println!("HMAC differential: {compared} verdicts compared, {accepted} accepted by both");
}

/// HMAC tags from the testkit's independent implementation.
struct TestKeyHmac<'a>(&'a [u8]);

impl TestKeyHmac<'_> {
    fn sign(&self, alg: Alg, input: &[u8]) -> Vec<u8> {
        ai_auth_testkit::keys::TestKey::hmac("k", self.0).sign_bytes(alg.name(), input)
    }
}

#[test]
fn a_key_never_verifies_another_family() {
    let hmac = KeyMaterial::hmac(&[7u8; 64]).unwrap();
    for alg in Alg::ALL {
        if !matches!(alg, Alg::HS256 | Alg::HS384 | Alg::HS512) {
            assert!(!hmac.verify(alg, b"x", &[0u8; 64]), "{}", alg.name());
        }
    }
}

/// RFC 7515 A.1-A.4, RFC 7520 4.1-4.4 and RFC 8037 A.4 (each vector names
/// its source in tests/fixtures/vectors/rfc_vectors.json): every published
/// signature verifies with its published key through the JWKS loader, and a
/// changed byte in the input or the signature does not.
#[test]
fn rfc_jws_example_vectors() {
    use base64::Engine;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vectors/rfc_vectors.json"
    );
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = vectors.as_array().unwrap();
    assert_eq!(vectors.len(), 9);
    for v in vectors {
        let source = v["source"].as_str().unwrap();
        let alg = crate::jwt::keys::Alg::from_name(v["alg"].as_str().unwrap()).unwrap();
        let jwks = serde_json::json!({"keys": [v["jwk"]]}).to_string();
        let keys = crate::jwt::keys::parse_jwks(&jwks)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
            .keys;
        let key = keys
            .candidates(alg, None)
            .next()
            .unwrap_or_else(|| panic!("{source}: no key for {alg:?}"));
        let input = v["signing_input"].as_str().unwrap().as_bytes().to_vec();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v["signature_b64url"].as_str().unwrap())
            .unwrap();
        assert!(
            key.material.verify(alg, &input, &sig),
            "{source}: valid vector rejected"
        );
        let mut bad_input = input.clone();
        bad_input[0] ^= 1;
        assert!(
            !key.material.verify(alg, &bad_input, &sig),
            "{source}: tampered input accepted"
        );
        let mut bad_sig = sig.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        assert!(
            !key.material.verify(alg, &input, &bad_sig),
            "{source}: tampered signature accepted"
        );
    }
}
