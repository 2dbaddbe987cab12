//! Key sets as real identity providers publish them: good signing keys next
//! to keys the filter cannot use (RFC 7517 5: ignore those). The good keys
//! verify, each unusable one is logged once and counted, a token naming one
//! is refused with the reason, and a key without `kid` verifies tokens of
//! its algorithm whatever their `kid`.

use crate::support::*;
use ai_auth_testkit::http::Action;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The signing keys that are fine, and the entries that are not.
struct Mix {
    rsa: TestKey,
    /// Published without `kid`.
    kidless: TestKey,
    weak: TestKey,
    /// (kid, entry, the reason a token naming it gets)
    unusable: Vec<(&'static str, Value)>,
}

fn mix() -> Mix {
    let rsa = TestKey::rsa("good-rsa");
    let kidless = TestKey::ed25519("no-kid-published");
    let weak = TestKey::rsa_from("rsa1024.pem", "weak-rsa");
    let p521 = TestKey::p521("bad-p521");
    let mut bad_p521 = p521.jwk();
    // One byte short: a coordinate that is not a P-521 field element.
    let x = bad_p521["x"].as_str().unwrap().to_string();
    bad_p521["x"] = json!(&x[..x.len() - 2]);
    let mut enc = TestKey::rsa("enc-1").jwk();
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let unusable = vec![
        ("weak-rsa", weak.jwk()),
        ("bad-p521", bad_p521),
        ("enc-1", enc),
        (
            "k1",
            json!({"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AQAB", "y": "AQAB"}),
        ),
        ("pqc", json!({"kty": "ML-DSA", "kid": "pqc", "pub": "AQAB"})),
        (
            "short-hs",
            json!({"kty": "oct", "kid": "short-hs", "k": b64(b"too short")}),
        ),
    ];
    Mix {
        rsa,
        kidless,
        weak,
        unusable,
    }
}

impl Mix {
    fn jwks(&self) -> Value {
        let mut kidless = self.kidless.jwk();
        kidless.as_object_mut().unwrap().remove("kid");
        let mut keys = vec![self.rsa.jwk(), kidless];
        keys.extend(self.unusable.iter().map(|(_, k)| k.clone()));
        json!({ "keys": keys })
    }

    /// How many warning lines name each unusable key.
    fn log_lines_per_kid(&self, log: &str) -> Vec<(&'static str, usize)> {
        self.unusable
            .iter()
            .map(|(kid, _)| (*kid, skip_lines(log, kid)))
            .collect()
    }

    /// One line and one count per unusable key, whatever the number of
    /// VMs (3 here) and fetches.
    fn assert_each_reported_once(&self, lines: &[(&str, usize)], skipped: u64) {
        for (kid, n) in lines {
            assert_eq!(*n, 1, "{kid} logged {n} times");
        }
        assert_eq!(skipped, self.unusable.len() as u64);
    }

    fn only_unusable(&self) -> Value {
        json!({"keys": self.unusable.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>()})
    }
}

fn plugin(keys: Value) -> Value {
    let mut provider = json!({"issuer": ISS, "audiences": [AUD]});
    let field = if keys.get("http_uri").is_some() {
        "remote_jwks"
    } else {
        "local_jwks"
    };
    provider[field] = keys;
    json!({"jwt_authn": {
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }})
}

fn start(plugin: &Value, idp_port: Option<u16>) -> (Envoy, Server) {
    let upstream = Server::echo();
    let mut clusters = vec![bootstrap::cluster("upstream", upstream.port)];
    if let Some(port) = idp_port {
        clusters.push(bootstrap::cluster("idp", port));
    }
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(plugin)],
            vec![bootstrap::route_to("upstream")],
        )],
        clusters,
    );
    let opts = ai_auth_testkit::envoy::Options {
        concurrency: 2,
        ..Default::default()
    };
    let envoy = Envoy::start_with(&boot, &opts).unwrap_or_else(|e| panic!("{e}"));
    (envoy, upstream)
}

/// The answers for the mix, and how often each unusable key was logged.
fn check_answers(envoy: &Envoy, m: &Mix) {
    let port = envoy.port("main");
    let get =
        |token: &str| http::get(port, "/v1/models", &[("authorization", &bearer(token))]).unwrap();
    assert_eq!(get(&m.rsa.sign(&claims())).status, 200, "the good RSA key");
    // The kid-less key verifies a token whatever kid it carries.
    for kid in ["no-kid-published", "rotated-2025", "weak-rsa"] {
        let t = m
            .kidless
            .sign_raw("EdDSA", &json!({"alg": "EdDSA", "kid": kid}), &claims());
        assert_eq!(get(&t).status, 200, "kid-less key, token kid {kid}");
    }
    let t = m
        .kidless
        .sign_raw("EdDSA", &json!({"alg": "EdDSA"}), &claims());
    assert_eq!(get(&t).status, 200, "kid-less key, token without kid");
    // A token signed by a skipped key: 401 with the reason.
    let r = get(&m.weak.sign(&claims()));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        error_of(&r).1,
        "Jwks key for the Jwt kid is not usable: RSA key under 2048 bits"
    );
}

fn skip_lines(log: &str, kid: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("key skipped") && l.contains(&format!("(kid \"{kid}\")")))
        .count()
}

#[test]
fn an_inline_jwks_with_unusable_keys_loads_its_good_ones() {
    let m = mix();
    let (mut envoy, _up) = start(
        &plugin(json!({"inline_string": m.jwks().to_string()})),
        None,
    );
    check_answers(&envoy, &m);
    let skipped = envoy.counter("jwt_authn.jwks_key_skipped");
    let log = envoy.stop();
    let lines = m.log_lines_per_kid(&log);
    eprintln!("inline: jwks_key_skipped={skipped}, log lines per kid {lines:?}");
    m.assert_each_reported_once(&lines, skipped);
}

#[test]
fn a_remote_jwks_with_unusable_keys_serves_its_good_ones_and_survives_a_bad_set() {
    let m = mix();
    let served = Arc::new(Mutex::new(m.jwks()));
    let doc = Arc::clone(&served);
    let idp = Server::start(move |_| Action::json(200, &doc.lock().unwrap()));
    let remote = json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp", "timeout": "2s"},
                        "cache_duration": "1s"});
    let (mut envoy, _up) = start(&plugin(remote), Some(idp.port));
    let port = envoy.port("main");
    let good = bearer(&m.rsa.sign(&claims()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http::get(port, "/", &[("authorization", &good)])
        .unwrap()
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the good keys never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    check_answers(&envoy, &m);
    // Refetched every second for a while: the same set is reported once.
    std::thread::sleep(Duration::from_millis(3500));
    let fetches_with_mix = idp.count();
    // A set with no usable key is a failed fetch: the last good keys stay.
    *served.lock().unwrap() = m.only_unusable();
    let failed_before = envoy.counter("jwt_authn.jwks_fetch_failed");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        http::get(port, "/", &[("authorization", &good)])
            .unwrap()
            .status,
        200
    );
    let failed = envoy.counter("jwt_authn.jwks_fetch_failed") - failed_before;
    let skipped = envoy.counter("jwt_authn.jwks_key_skipped");
    let log = envoy.stop();
    let lines = m.log_lines_per_kid(&log);
    eprintln!(
        "remote: {fetches_with_mix} fetches of the mix, then {failed} failed fetches of the unusable-only set; \
         jwks_key_skipped={skipped}, log lines per kid {lines:?}"
    );
    assert!(fetches_with_mix >= 3, "{fetches_with_mix}");
    assert!(failed >= 1);
    m.assert_each_reported_once(&lines, skipped);
    assert!(
        log.contains("the JWKS has no usable signature key"),
        "the failed fetch says why"
    );
}
