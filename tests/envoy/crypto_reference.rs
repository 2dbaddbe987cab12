//! Differential test against a third implementation: Python's `cryptography`
//! (OpenSSL) makes keys and signatures, valid and tampered, and judges them;
//! our verifiers must give the same verdict on every case, every algorithm.
//! (The unit tests compare with jwt-simple; this compares with OpenSSL.)

use ai_auth_filter::jwt::keys::{decode_b64url, parse_jwks, Alg};
use ai_auth_testkit::envoy::repo_root;
use serde_json::Value;
use std::process::Command;

#[test]
fn verdicts_match_python_cryptography() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run scripts/setup.sh (it installs Python's cryptography into .venv)",
        python.display()
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = Command::new(&python)
        .arg(repo_root().join("tests/reference/signatures.py"))
        .args([&seed.to_string(), "16"])
        .output()
        .expect("run the Python reference");
    assert!(
        out.status.success(),
        "the Python reference failed (run scripts/setup.sh to install cryptography): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cases.len(), 13 * 16);
    let (mut valid, mut invalid) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let alg = Alg::from_name(case["alg"].as_str().unwrap()).unwrap();
        let jwks = serde_json::json!({"keys": [case["jwk"]]}).to_string();
        let keys = parse_jwks(&jwks)
            .unwrap_or_else(|e| panic!("seed {seed} case {i}: {e}"))
            .keys;
        let key = keys.candidates(alg, None).next().unwrap();
        let input = case["signing_input"].as_str().unwrap().as_bytes();
        let sig = decode_b64url(case["signature"].as_str().unwrap()).unwrap();
        let expected = case["valid"].as_bool().unwrap();
        assert_eq!(
            key.material.verify(alg, input, &sig),
            expected,
            "seed {seed} case {i} ({alg:?}): our verdict differs from OpenSSL's"
        );
        if expected {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(
        valid >= 13 * 8 && invalid > 13 * 4,
        "valid {valid}, invalid {invalid}"
    );
}
