//! DPoP (RFC 9449) in the real Envoy, with proofs and key thumbprints made
//! by a reference JOSE library (Python's joserfc, tests/reference/dpop.py):
//! valid proofs pass once; wrong `htm`, `htu`, `ath`, a stale `iat`, a
//! replayed `jti` (also across two worker VMs), a private `jwk`, `alg: none`
//! and HS256 proofs, a token bound to another key, and a bound token sent as
//! `Bearer` are all refused with the RFC's challenges.

use crate::support::*;
use ai_auth_testkit::envoy::{repo_root, Options};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The client side: tests/reference/dpop.py, one process per test.
pub struct DpopClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DpopClient {
    pub fn start() -> DpopClient {
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} not found: run scripts/setup.sh (it installs joserfc into .venv)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(repo_root().join("tests/reference/dpop.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the DPoP reference client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        DpopClient {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let out: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!("the DPoP reference answered {line:?}: run scripts/setup.sh to install joserfc")
        });
        assert!(out.get("error").is_none(), "{cmd} -> {out}");
        out
    }

    /// A new key of type `kty` (`EC`, `OKP`, `RSA`); returns its RFC 7638 thumbprint.
    pub fn key(&mut self, name: &str, kty: &str) -> String {
        let out = self.call(json!({"op": "key", "name": name, "kty": kty}));
        out["thumbprint"].as_str().unwrap().to_string()
    }

    /// A proof by key `name`; `extra` adds or overrides fields of the command.
    pub fn proof(&mut self, name: &str, htm: &str, htu: &str, token: &str, extra: Value) -> String {
        let mut cmd = json!({"op": "proof", "key": name, "htm": htm, "htu": htu, "token": token});
        for (k, v) in extra.as_object().unwrap() {
            cmd[k] = v.clone();
        }
        self.call(cmd)["proof"].as_str().unwrap().to_string()
    }
}

impl Drop for DpopClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PATH: &str = "/v1/chat/completions";

fn plugin(idp: &TestKey) -> Value {
    let keys = jwks(&[idp]).to_string();
    json!({"jwt_authn": {
        "providers": {
            "agents": {"issuer": ISS, "audiences": [AUD], "local_jwks": {"inline_string": keys},
                       "dpop": {"algorithms": ["ES256", "EdDSA", "RS256", "PS256"]},
                       "claim_to_headers": [{"header_name": "x-agent", "claim_name": "sub"}]},
            "strict": {"issuer": ISS, "audiences": [AUD], "local_jwks": {"inline_string": keys},
                       "dpop": {"required": true, "algorithms": ["ES256"]}}
        },
        "rules": [
            {"match": {"prefix": "/strict/"}, "requires": {"provider_name": "strict"},
             "protected_resource": {"resource": "https://gw.example.com/strict"}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "agents"}}
        ]
    }})
}

/// An access token bound to the key with this thumbprint (`None`: unbound).
fn token(idp: &TestKey, jkt: Option<&str>) -> String {
    let mut c = claims_with(json!({"sub": "agent-7"}));
    if let Some(jkt) = jkt {
        c["cnf"] = json!({ "jkt": jkt });
    }
    idp.sign(&c)
}

fn challenge<'a>(r: &'a Response, scheme: &str) -> Option<&'a str> {
    r.headers_named("www-authenticate")
        .into_iter()
        .find(|l| l.starts_with(&format!("{scheme} ")))
}

fn assert_invalid_proof(r: &Response, why: &str) {
    assert_eq!(r.status, 401, "{why}: {}", r.text());
    let dpop = challenge(r, "DPoP").unwrap_or_else(|| panic!("{why}: {:?}", r.headers));
    assert!(
        dpop.contains("error=\"invalid_dpop_proof\"")
            && dpop.contains("algs=\"ES256 EdDSA RS256 PS256\""),
        "{why}: {dpop}"
    );
    assert!(
        dpop.contains(why),
        "{why} should be the description: {dpop}"
    );
    assert!(
        challenge(r, "Bearer").is_some_and(|b| !b.contains("error=")),
        "the Bearer challenge carries no error: {:?}",
        r.headers
    );
}

#[test]
fn proofs_from_a_reference_client() {
    let idp = TestKey::rsa("idp");
    let gw = Gateway::start(plugin(&idp));
    let mut client = DpopClient::start();
    let htu = format!("http://127.0.0.1:{}{PATH}", gw.port());
    let jkt = client.key("agent", "EC");
    let bound = token(&idp, Some(&jkt));
    let send = |token: &str, proof: Option<&str>, scheme: &str| {
        let auth = format!("{scheme} {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(p) = proof {
            headers.push(("dpop", p));
        }
        gw.post(PATH, &headers, b"{}")
    };

    // Valid: passes, and neither the token nor the proof goes upstream.
    let proof = client.proof("agent", "POST", &htu, &bound, json!({}));
    let r = send(&bound, Some(&proof), "DPoP");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = gw.upstream.last().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("dpop"), None);
    assert_eq!(seen.header("x-agent"), Some("agent-7"));

    // The same proof again: its jti was seen.
    assert_invalid_proof(&send(&bound, Some(&proof), "DPoP"), "jti replayed");

    // Each other way a proof can fail.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"htm": "GET"}), "htm is not the request method"),
        (
            json!({"htu": format!("http://127.0.0.1:{}/v1/embeddings", gw.port())}),
            "htu is not the request URI",
        ),
        (
            json!({"htu": "http://gw.example.com/v1/chat/completions"}),
            "htu is not the request URI",
        ),
        (
            json!({"ath": b64(b"not the hash of this token, 32 b")}),
            "ath does not match the access token",
        ),
        (json!({"ath": null}), "ath is missing"),
        (
            json!({"iat": now() - 300}),
            "iat is outside the accepted window",
        ),
        (
            json!({"iat": now() + 300}),
            "iat is outside the accepted window",
        ),
        (json!({"private_jwk": true}), "jwk holds a private key"),
        (json!({"unsigned": true}), "alg is missing or not supported"),
        (json!({"hmac": true}), "alg must be asymmetric"),
        (json!({"typ": "JWT"}), "typ must be dpop+jwt"),
    ];
    for (extra, why) in cases {
        let htm = extra["htm"].as_str().unwrap_or("POST").to_string();
        let htu = extra["htu"].as_str().map_or(htu.clone(), str::to_string);
        let proof = client.proof("agent", &htm, &htu, &bound, extra);
        assert_invalid_proof(&send(&bound, Some(&proof), "DPoP"), why);
    }
    assert_invalid_proof(&send(&bound, None, "DPoP"), "the DPoP header is missing");

    // A proof by another key than the token is bound to: a stolen token.
    client.key("thief", "OKP");
    let stolen = client.proof("thief", "POST", &htu, &bound, json!({}));
    assert_invalid_proof(
        &send(&bound, Some(&stolen), "DPoP"),
        "the token is bound to another key",
    );

    // The bound token as a bearer token: refused on the Bearer challenge.
    let r = send(&bound, None, "Bearer");
    assert_eq!(r.status, 401);
    let bearer = challenge(&r, "Bearer").unwrap();
    assert!(bearer.contains("error=\"invalid_token\""), "{bearer}");
    assert!(bearer.contains("DPoP-bound"), "{bearer}");
    let dpop = challenge(&r, "DPoP").unwrap();
    assert!(!dpop.contains("error="), "{dpop}");

    // RSA and EdDSA keys work as well; PS256 with the same RSA key too.
    for (name, kty, alg) in [
        ("rsa", "RSA", "RS256"),
        ("rsa", "RSA", "PS256"),
        ("ed", "OKP", "EdDSA"),
    ] {
        let jkt = client.key(name, kty);
        let t = token(&idp, Some(&jkt));
        let p = client.proof(name, "POST", &htu, &t, json!({ "alg": alg }));
        assert_eq!(send(&t, Some(&p), "DPoP").status, 200, "{alg}");
    }
    // An unbound token still works as Bearer on this provider.
    assert_eq!(send(&token(&idp, None), None, "Bearer").status, 200);

    assert!(gw.envoy.counter("jwt_authn.dpop_verified") >= 4);
    assert!(gw.envoy.counter("jwt_authn.dpop_invalid") >= 14);
    assert_eq!(gw.envoy.counter("jwt_authn.dpop_replayed"), 1);
    assert!(gw.envoy.counter("jwt_authn.sender_constraint_failed") >= 1);
}

#[test]
fn a_provider_that_requires_dpop() {
    let idp = TestKey::rsa("idp");
    let gw = Gateway::start(plugin(&idp));
    let mut client = DpopClient::start();
    let jkt = client.key("agent", "EC");
    let path = "/strict/v1/chat/completions";
    let htu = format!("http://127.0.0.1:{}{path}", gw.port());

    // No token: only the DPoP challenge, with its algorithms and the metadata.
    let r = gw.post(path, &[], b"{}");
    assert_eq!(r.status, 401);
    assert!(challenge(&r, "Bearer").is_none(), "{:?}", r.headers);
    let dpop = challenge(&r, "DPoP").unwrap();
    assert!(dpop.contains("algs=\"ES256\""), "{dpop}");
    assert!(
        dpop.contains("resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/strict\""),
        "{dpop}"
    );
    // The metadata says DPoP is required, with which algorithms.
    let doc = gw
        .get("/.well-known/oauth-protected-resource/strict", &[])
        .json();
    assert_eq!(doc["dpop_bound_access_tokens_required"], true);
    assert_eq!(doc["dpop_signing_alg_values_supported"], json!(["ES256"]));

    // An unbound bearer token: refused, the error on the DPoP challenge.
    let unbound = bearer(&token(&idp, None));
    let r = gw.post(path, &[("authorization", &unbound)], b"{}");
    assert_eq!(r.status, 401);
    let dpop = challenge(&r, "DPoP").unwrap();
    assert!(dpop.contains("error=\"invalid_token\""), "{dpop}");

    // Only ES256 proofs here.
    let bound = token(&idp, Some(&jkt));
    let auth = format!("DPoP {bound}");
    let p = client.proof("agent", "POST", &htu, &bound, json!({}));
    let r = gw.post(path, &[("authorization", &auth), ("dpop", &p)], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let ed_jkt = client.key("ed", "OKP");
    let ed_bound = token(&idp, Some(&ed_jkt));
    let auth = format!("DPoP {ed_bound}");
    let p = client.proof("ed", "POST", &htu, &ed_bound, json!({}));
    let r = gw.post(path, &[("authorization", &auth), ("dpop", &p)], b"{}");
    assert_eq!(r.status, 401);
    assert!(challenge(&r, "DPoP")
        .unwrap()
        .contains("alg is not accepted"));
}

#[test]
fn a_proof_replayed_to_another_worker_vm_is_refused() {
    let idp = TestKey::rsa("idp");
    let upstream = Server::echo();
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(&plugin(&idp))],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    let envoy = Envoy::start_with(
        &boot,
        &Options {
            concurrency: 2,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = envoy.port("main");
    let mut client = DpopClient::start();
    let jkt = client.key("agent", "EC");
    let bound = token(&idp, Some(&jkt));
    let htu = format!("http://127.0.0.1:{port}{PATH}");
    let proof = client.proof("agent", "POST", &htu, &bound, json!({}));
    let auth = format!("DPoP {bound}");
    let served_by = |worker: u32| envoy.connections_by_worker(worker);
    // The same proof on new connections until both workers have had it:
    // exactly one answer may be 200, wherever it landed.
    let (mut accepted, mut sent) = (0, 0);
    while (served_by(0) == 0 || served_by(1) == 0 || sent < 4) && sent < 200 {
        let r = http::request(
            port,
            "POST",
            PATH,
            &[("authorization", &auth), ("dpop", &proof)],
            b"{}",
        )
        .unwrap();
        match r.status {
            200 => accepted += 1,
            401 => assert!(
                r.headers_named("www-authenticate")
                    .iter()
                    .any(|h| h.contains("jti replayed")),
                "{:?}",
                r.headers
            ),
            other => panic!("unexpected {other}: {}", r.text()),
        }
        sent += 1;
    }
    assert!(
        served_by(0) > 0 && served_by(1) > 0,
        "both workers must serve for this test ({sent} requests)"
    );
    assert_eq!(
        accepted, 1,
        "one worker accepted the proof; the other saw it in the shared replay cache ({sent} requests)"
    );
    assert_eq!(envoy.counter("jwt_authn.dpop_replayed"), sent - 1);
}
