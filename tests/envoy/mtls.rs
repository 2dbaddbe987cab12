//! Certificate-bound tokens (RFC 8705) in the real Envoy: a TLS listener that
//! asks for client certificates (a CA, a server and two client certificates
//! made at test time by Python's `cryptography`, tests/reference/mtls.py),
//! and a token bound to client certificate A presented with A, with B, and
//! with none.

use crate::support::*;
use ai_auth_testkit::envoy::repo_root;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run scripts/setup.sh (it installs Python's cryptography into .venv)",
        python.display()
    );
    python
}

fn reference(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/reference/mtls.py"))
        .args(args)
        .output()
        .expect("run tests/reference/mtls.py");
    assert!(
        out.status.success(),
        "tests/reference/mtls.py {args:?} failed (run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Tls {
    dir: PathBuf,
    /// `x5t#S256` of client certificates `a` and `b`.
    a: String,
    b: String,
}

impl Tls {
    fn make() -> Tls {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ai-auth-mtls-{}-{n}-{}", std::process::id(), now()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = reference(&["certs", dir.to_str().unwrap()]);
        Tls {
            a: out["x5t#S256"]["a"].as_str().unwrap().to_string(),
            b: out["x5t#S256"]["b"].as_str().unwrap().to_string(),
            dir,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Our filter behind a listener that asks for (and validates) a client
/// certificate but lets a client without one connect.
fn start(tls: &Tls, plugin: &Value) -> (Envoy, Server) {
    let upstream = Server::echo();
    let mut listener = bootstrap::listener(
        "mtls",
        vec![bootstrap::wasm_filter(plugin)],
        vec![bootstrap::route_to("upstream")],
    );
    listener["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": false,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": tls.file("server.pem")},
                                      "private_key": {"filename": tls.file("server-key.pem")}}],
                "validation_context": {"trusted_ca": {"filename": tls.file("ca.pem")}}
            }
        }
    });
    let boot = bootstrap::bootstrap(
        vec![listener],
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    (
        Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}")),
        upstream,
    )
}

/// POST over TLS, with client certificate `who` (`a`, `b`) or none.
fn post(envoy: &Envoy, tls: &Tls, authorization: &str, who: Option<&str>) -> Response {
    request(
        envoy,
        tls,
        "POST",
        "/v1/chat/completions",
        authorization,
        who,
    )
}

fn request(
    envoy: &Envoy,
    tls: &Tls,
    method: &str,
    path: &str,
    authorization: &str,
    who: Option<&str>,
) -> Response {
    let port = envoy.port("mtls").to_string();
    let ca = tls.file("ca.pem");
    let mut args = vec![
        "request",
        port.as_str(),
        ca.as_str(),
        method,
        path,
        authorization,
    ];
    let (cert, key);
    if let Some(who) = who {
        cert = tls.file(&format!("client-{who}.pem"));
        key = tls.file(&format!("client-{who}-key.pem"));
        args.push(&cert);
        args.push(&key);
    }
    let out = reference(&args);
    Response {
        status: out["status"].as_u64().unwrap() as u16,
        headers: out["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
            .collect(),
        body: out["body"].as_str().unwrap().as_bytes().to_vec(),
    }
}

fn plugin(idp: &TestKey, certificate_bound: Value) -> Value {
    json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD],
                              "local_jwks": {"inline_string": jwks(&[idp]).to_string()},
                              "certificate_bound_tokens": certificate_bound}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"},
                   "protected_resource": {"resource": "https://gw.example.com/"}}]
    }})
}

fn bound_to(idp: &TestKey, x5t: &str) -> String {
    bearer(&idp.sign(&claims_with(json!({"cnf": {"x5t#S256": x5t}}))))
}

fn assert_refused(r: &Response, why: &str) {
    assert_eq!(r.status, 401, "{why}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains(why),
        "{challenge}"
    );
}

#[test]
fn a_certificate_bound_token_needs_its_certificate() {
    let tls = Tls::make();
    let idp = TestKey::ed25519("idp");
    let (envoy, upstream) = start(&tls, &plugin(&idp, json!({})));
    let token = bound_to(&idp, &tls.a);

    let r = post(&envoy, &tls, &token, Some("a"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.count(), 1);
    assert_refused(
        &post(&envoy, &tls, &token, Some("b")),
        "bound to another client certificate",
    );
    assert_refused(
        &post(&envoy, &tls, &token, None),
        "the connection presented none",
    );
    // Client B with its own token is fine: the binding follows the certificate.
    let r = post(&envoy, &tls, &bound_to(&idp, &tls.b), Some("b"));
    assert_eq!(r.status, 200, "{}", r.text());
    // An unbound token passes unless binding is required.
    let unbound = bearer(&idp.sign(&claims()));
    assert_eq!(post(&envoy, &tls, &unbound, None).status, 200);
    assert_eq!(upstream.count(), 3);
    assert_eq!(envoy.counter("jwt_authn.certificate_bound_verified"), 2);
    assert_eq!(envoy.counter("jwt_authn.sender_constraint_failed"), 2);
    // The metadata says certificate-bound tokens are supported.
    let doc = request(
        &envoy,
        &tls,
        "GET",
        "/.well-known/oauth-protected-resource",
        "",
        None,
    );
    assert_eq!(doc.status, 200, "{}", doc.text());
    assert_eq!(
        doc.json()["tls_client_certificate_bound_access_tokens"],
        true
    );
}

#[test]
fn binding_can_be_required() {
    let tls = Tls::make();
    let idp = TestKey::ed25519("idp");
    let (envoy, _upstream) = start(&tls, &plugin(&idp, json!({"required": true})));
    let unbound = bearer(&idp.sign(&claims()));
    assert_refused(
        &post(&envoy, &tls, &unbound, Some("a")),
        "requires certificate-bound tokens",
    );
    assert_eq!(
        post(&envoy, &tls, &bound_to(&idp, &tls.a), Some("a")).status,
        200
    );
}
