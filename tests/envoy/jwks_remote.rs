//! Remote JWKS in the real Envoy: keys fetched by the root context (directly
//! or through OIDC discovery), shared by the worker VMs, refreshed on an
//! unknown `kid`, kept while the identity provider fails.

use crate::support::*;
use ai_auth_testkit::http::Action;
use ai_auth_testkit::misbehaving::{self, vm_failure_lines, Misbehavior};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake identity provider serves.
struct Idp {
    server: Server,
    jwks: Arc<Mutex<Option<Value>>>,
    /// Delay before answering a JWKS request.
    delay: Arc<Mutex<Duration>>,
    /// When set, every path answers this way (with its own good body).
    misbehave: Arc<Mutex<Option<Misbehavior>>>,
}

/// The callout timeout the misbehaving-IdP test configures.
const IDP_TIMEOUT: Duration = Duration::from_millis(500);

impl Idp {
    fn start(keys: &[&TestKey]) -> Idp {
        let jwks = Arc::new(Mutex::new(Some(jwks_of(keys))));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let misbehave = Arc::new(Mutex::new(None));
        let served = Arc::clone(&jwks);
        let slow = Arc::clone(&delay);
        let bad = Arc::clone(&misbehave);
        let server = Server::start(move |r| {
            let discovery = json!({"issuer": ISS, "jwks_uri": "http://idp.test/realms/ai/protocol/openid-connect/certs"});
            if let Some(kind) = *bad.lock().unwrap() {
                let good = match r.path.as_str() {
                    "/realms/ai/.well-known/openid-configuration" => discovery,
                    _ => served.lock().unwrap().clone().unwrap_or_default(),
                };
                return Misbehavior::action(kind, IDP_TIMEOUT, good.to_string().as_bytes());
            }
            match r.path.as_str() {
                "/realms/ai/.well-known/openid-configuration" => Action::json(200, &discovery),
                "/realms/ai/protocol/openid-connect/certs" | "/jwks" => {
                    let answer = match served.lock().unwrap().clone() {
                        Some(doc) => Action::json(200, &doc),
                        None => Action::status(500),
                    };
                    Action::Delay(*slow.lock().unwrap(), Box::new(answer))
                }
                _ => Action::status(404),
            }
        });
        Idp {
            server,
            jwks,
            delay,
            misbehave,
        }
    }

    fn serve(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() = Some(jwks_of(keys));
    }

    fn fail(&self) {
        *self.jwks.lock().unwrap() = None;
    }

    fn fetches(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

fn jwks_of(keys: &[&TestKey]) -> Value {
    let mut doc = jwks(keys);
    for k in doc["keys"].as_array_mut().unwrap() {
        k["use"] = json!("sig");
    }
    doc
}

fn plugin(remote: Value) -> Value {
    json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD], "remote_jwks": remote}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }})
}

fn start(idp: &Idp, listeners: Vec<(&str, Value)>, concurrency: u32) -> (Envoy, Server) {
    let gw = Gateway::start_listeners(
        wasm_listeners(listeners, &[]),
        vec![bootstrap::cluster("idp", idp.server.port)],
        &workers(concurrency),
    );
    (gw.envoy, gw.upstream)
}

/// Polls until `get` answers `status`, for at most `limit`.
fn eventually(
    limit: Duration,
    what: &str,
    mut get: impl FnMut() -> Response,
    status: u16,
) -> Response {
    let deadline = Instant::now() + limit;
    loop {
        let r = get();
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {} after {limit:?}: {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn keys_come_from_the_idp_directly_or_through_discovery() {
    let a = TestKey::rsa("key-a");
    let idp = Idp::start(&[&a]);
    let (envoy, _up) = start(
        &idp,
        vec![
            (
                "direct",
                plugin(
                    json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp", "timeout": "1s"}}),
                ),
            ),
            (
                "discovery",
                plugin(
                    json!({"http_uri": {"uri": "http://idp.test/realms/ai/.well-known/openid-configuration",
                                           "cluster": "idp", "timeout": "1s"}, "discovery": true}),
                ),
            ),
        ],
        2,
    );
    let token = bearer(&a.sign(&claims()));
    for listener in ["direct", "discovery"] {
        let port = envoy.port(listener);
        eventually(
            Duration::from_secs(10),
            listener,
            || http::get(port, "/v1/models", &[("authorization", &token)]).unwrap(),
            200,
        );
    }
    assert!(idp.fetches("/realms/ai/.well-known/openid-configuration") >= 1);
    assert!(idp.fetches("/realms/ai/protocol/openid-connect/certs") >= 1);
    // Shared across VMs: serving many requests fetches nothing more.
    let before = idp.fetches("/jwks");
    for _ in 0..40 {
        assert_eq!(
            http::get(
                envoy.port("direct"),
                "/v1/models",
                &[("authorization", &token)]
            )
            .unwrap()
            .status,
            200
        );
    }
    assert_eq!(
        idp.fetches("/jwks"),
        before,
        "requests never fetch keys themselves"
    );
    assert!(
        before <= 3,
        "each VM fetches at most once at start (3 VMs: main thread and two workers): {before}"
    );
    assert!(envoy.counter("jwt_authn.jwks_fetch_success") >= 2);
}

#[test]
fn requests_before_the_first_fetch_wait_for_the_keys() {
    let a = TestKey::rsa("key-a");
    let idp = Idp::start(&[&a]);
    *idp.delay.lock().unwrap() = Duration::from_millis(3000);
    let (mut envoy, _up) = start(
        &idp,
        vec![(
            "main",
            plugin(
                json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp", "timeout": "5s"}}),
            ),
        )],
        1,
    );
    // Sent as soon as Envoy is ready, while the (slow) first fetch is in
    // flight: held, not refused.
    let t0 = Instant::now();
    let r = http::get(
        envoy.port("main"),
        "/",
        &[("authorization", &bearer(&a.sign(&claims())))],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "answered once the keys came: {:?}",
        t0.elapsed()
    );
    assert_eq!(envoy.counter("jwt_authn.denied"), 0);
    // A token for no key of the provider still fails at once.
    let r = http::get(
        envoy.port("main"),
        "/",
        &[("authorization", "Bearer a.b.c")],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let log = envoy.stop();
    assert!(
        log.contains("jwt_authn: waiting for the remote keys"),
        "the first request must have been held"
    );
}

#[test]
fn a_held_request_goes_on_through_the_passthrough() {
    // Released by the root context, the request still makes its
    // passthrough call and resumes on the answer.
    let a = TestKey::ed25519("key-a");
    let idp = Idp::start(&[&a]);
    // The IdP answers slowly: the request surely arrives before the keys.
    *idp.delay.lock().unwrap() = Duration::from_millis(1500);
    let auth = Server::start(|_| Action::status(200).with_header("x-user-id", "42"));
    let upstream = Server::echo();
    let mut p = plugin(json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp"}}));
    p["ext_authz"] = json!({"http_service": {
        "server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "1s"},
        "authorization_response": {"allowed_upstream_headers": {"patterns": [{"exact": "x-user-id"}]}}}});
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(&p)],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![
            bootstrap::cluster("upstream", upstream.port),
            bootstrap::cluster("idp", idp.server.port),
            bootstrap::cluster("authz", auth.port),
        ],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    let r = http::get(
        envoy.port("main"),
        "/",
        &[("authorization", &bearer(&a.sign(&claims())))],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(auth.count(), 1);
    assert_eq!(upstream.last().unwrap().header("x-user-id"), Some("42"));
}

/// Sends these requests at once, each on its own connection (so both
/// worker VMs get some); returns each answer and how long it took.
fn all_at_once(port: u16, tokens: Vec<String>) -> Vec<(Response, Duration)> {
    let barrier = Arc::new(std::sync::Barrier::new(tokens.len()));
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                let r = http::get(port, "/", &[("authorization", &token)]).unwrap();
                (r, t.elapsed())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_rotated_key_passes_on_its_first_request() {
    let a = TestKey::rsa("key-a");
    let b = TestKey::ed25519("key-b");
    let idp = Idp::start(&[&a]);
    // A long cache: only the unknown kid can explain a refetch. Two worker
    // VMs: a request on either waits for the one refetch.
    let (envoy, _up) = start(
        &idp,
        vec![(
            "main",
            plugin(
                json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp"}, "cache_duration": "3600s"}),
            ),
        )],
        2,
    );
    let port = envoy.port("main");
    let token_a = bearer(&a.sign(&claims()));
    let token_b = bearer(&b.sign(&claims()));
    eventually(
        Duration::from_secs(10),
        "key a",
        || http::get(port, "/", &[("authorization", &token_a)]).unwrap(),
        200,
    );
    // Both VMs have loaded key a (each loads what the other published on
    // its next tick): no first fetch is still to come.
    std::thread::sleep(Duration::from_secs(1));
    let before = idp.fetches("/jwks");
    // The IdP rotates, and answers slowly: the first requests signed with
    // the new key arrive together while the refetch runs.
    idp.serve(&[&b]);
    *idp.delay.lock().unwrap() = Duration::from_millis(400);
    let answers = all_at_once(port, vec![token_b.clone(); 6]);
    let statuses: Vec<u16> = answers.iter().map(|(r, _)| r.status).collect();
    let waits: Vec<u128> = answers.iter().map(|(_, d)| d.as_millis()).collect();
    let refetches = idp.fetches("/jwks") - before;
    eprintln!("first requests with the new kid: statuses {statuses:?}, ms {waits:?}, refetches {refetches}");
    for (r, _) in &answers {
        assert_eq!(
            r.status,
            200,
            "the first token of a rotated key: {}",
            r.text()
        );
    }
    assert_eq!(
        refetches, 1,
        "one refetch for every waiting request, across VMs"
    );
    assert!(envoy.counter("jwt_authn.jwks_refetch_unknown_kid") == 1);
    // The retired key no longer verifies, even though its token was cached:
    // at once on the VM that refetched, and on the other worker VM from its
    // next tick (it loads the published set within 500 ms).
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..10 {
        let r = http::get(port, "/", &[("authorization", &token_a)]).unwrap();
        assert_eq!(r.status, 401, "{}", r.text());
    }
}

#[test]
fn a_flood_of_unknown_kids_refetches_within_the_rate_limit() {
    let a = TestKey::ed25519("key-a");
    let idp = Idp::start(&[&a]);
    let (envoy, _up) = start(
        &idp,
        vec![(
            "main",
            plugin(
                json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp"}, "cache_duration": "3600s"}),
            ),
        )],
        2,
    );
    let port = envoy.port("main");
    let token_a = bearer(&a.sign(&claims()));
    eventually(
        Duration::from_secs(10),
        "key a",
        || http::get(port, "/", &[("authorization", &token_a)]).unwrap(),
        200,
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = idp.fetches("/jwks");
    *idp.delay.lock().unwrap() = Duration::from_millis(300);
    // 4 clients, each token with a kid never seen before.
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..60 {
                    let forged = TestKey::ed25519(&format!("forged-{c}-{i}"));
                    let token = bearer(&forged.sign(&claims()));
                    let t = Instant::now();
                    let r = http::get(port, "/", &[("authorization", &token)]).unwrap();
                    out.push((r.status, t.elapsed()));
                }
                out
            })
        })
        .collect();
    let answers: Vec<(u16, Duration)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let refetches = idp.fetches("/jwks") - before;
    let held: Vec<u128> = answers
        .iter()
        .map(|(_, d)| d.as_millis())
        .filter(|ms| *ms >= 250)
        .collect();
    eprintln!(
        "{} forged kids in {elapsed:?}: {refetches} refetch(es) at the IdP, held for the refetch (ms): {held:?}",
        answers.len()
    );
    let held = held.len();
    for (status, _) in &answers {
        assert_eq!(*status, 401);
    }
    assert_eq!(refetches, 1, "at most one refetch per 30 s, plugin-wide");
    assert!(
        held <= 8,
        "only requests that came while the refetch ran wait: {held}"
    );
    // Inside the window a new kid is answered at once.
    let forged = TestKey::ed25519("forged-late");
    let t = Instant::now();
    let r = http::get(
        port,
        "/",
        &[("authorization", &bearer(&forged.sign(&claims())))],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        error_of(&r).1,
        "Jwks has no key matching the Jwt kid and alg"
    );
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let r = http::get(port, "/", &[("authorization", &token_a)]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn keys_are_kept_while_the_idp_fails_and_fetched_once_it_is_back() {
    let a = TestKey::ed25519("key-a");
    let idp = Idp::start(&[&a]);
    idp.fail();
    let (envoy, _up) = start(
        &idp,
        vec![(
            "main",
            plugin(
                json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp"}, "cache_duration": "1s"}),
            ),
        )],
        1,
    );
    let port = envoy.port("main");
    let token = bearer(&a.sign(&claims()));
    // No keys yet: a clear 401, and the filter keeps serving.
    let r = eventually(
        Duration::from_secs(5),
        "no keys",
        || http::get(port, "/", &[("authorization", &token)]).unwrap(),
        401,
    );
    assert_eq!(error_of(&r).1, "Jwks is not available");
    idp.serve(&[&a]);
    eventually(
        Duration::from_secs(10),
        "keys after the IdP recovers",
        || http::get(port, "/", &[("authorization", &token)]).unwrap(),
        200,
    );
    idp.fail();
    // Well past cache_duration, with every refetch failing: the keys held still serve.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        http::get(port, "/", &[("authorization", &token)])
            .unwrap()
            .status,
        200
    );
    assert!(envoy.counter("jwt_authn.jwks_fetch_failed") >= 2);
}

#[test]
fn a_misbehaving_idp_never_takes_the_gateway_down() {
    let a = TestKey::ed25519("key-a");
    let idp = Idp::start(&[&a]);
    let remote = |uri: &str, discovery: bool| {
        json!({"http_uri": {"uri": uri, "cluster": "idp", "timeout": "0.5s"},
               "discovery": discovery, "cache_duration": "1s"})
    };
    // One worker: the requests below and its root's fetches share one VM.
    let (mut envoy, _up) = start(
        &idp,
        vec![
            ("direct", plugin(remote("http://idp.test/jwks", false))),
            (
                "discovery",
                plugin(remote(
                    "http://idp.test/realms/ai/.well-known/openid-configuration",
                    true,
                )),
            ),
        ],
        1,
    );
    let token = bearer(&a.sign(&claims()));
    let get = |listener: &str| {
        http::get(
            envoy.port(listener),
            "/v1/models",
            &[("authorization", &token)],
        )
        .unwrap()
    };
    for listener in ["direct", "discovery"] {
        eventually(Duration::from_secs(10), listener, || get(listener), 200);
    }
    let mut seen = Vec::new();
    for kind in misbehaving::ALL {
        let name = kind.name();
        let failed = envoy.counter("jwt_authn.jwks_fetch_failed");
        *idp.misbehave.lock().unwrap() = Some(kind);
        // Both listeners' fetches (JWKS directly; discovery's first step)
        // fail, in every VM, at least twice; meanwhile the keys already
        // loaded keep serving.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut statuses = Vec::new();
        while envoy.counter("jwt_authn.jwks_fetch_failed") < failed + 4 {
            assert!(Instant::now() < deadline, "{name}: fetches did not fail");
            statuses.push(get("direct").status);
            statuses.push(get("discovery").status);
            std::thread::sleep(Duration::from_millis(200));
        }
        statuses.push(get("direct").status);
        statuses.push(get("discovery").status);
        seen.push(format!("{name}: {statuses:?}"));
        assert!(
            statuses.iter().all(|s| *s == 200),
            "{name}: loaded keys must keep serving: {statuses:?}"
        );
        // Back to a good IdP: fetched again (which also ends the backoff).
        let fetched = envoy.counter("jwt_authn.jwks_fetch_success");
        *idp.misbehave.lock().unwrap() = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while envoy.counter("jwt_authn.jwks_fetch_success") < fetched + 2 {
            assert!(Instant::now() < deadline, "{name}: no fetch after it");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("observed: {seen:#?}");
    // A hostile document: a curve name of 30 KB that forges log lines. The
    // fetch fails (logged), the keys held keep serving.
    let failed = envoy.counter("jwt_authn.jwks_fetch_failed");
    let forged = "\n[2099-01-01 00:00:00.000][1][critical][main] forged line".repeat(500);
    *idp.jwks.lock().unwrap() = Some(json!({"keys": [
        {"kty": "EC", "crv": format!("P-999{forged}"), "x": "AQAB", "y": "AQAB", "kid": "bad"}]}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while envoy.counter("jwt_authn.jwks_fetch_failed") < failed + 2 {
        assert!(
            Instant::now() < deadline,
            "the hostile JWKS was not fetched"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get("direct").status, 200);
    assert_eq!(get("discovery").status, 200);
    let log = envoy.stop();
    let failures = vm_failure_lines(&log);
    assert!(failures.is_empty(), "the VM failed: {failures:#?}");
    // Remote text reaches the log only quoted, escaped and short.
    let forged_lines = log
        .lines()
        .filter(|l| l.contains("forged line") && !l.contains("wasm log"))
        .count();
    assert_eq!(forged_lines, 0, "remote text forged log lines");
    let quoted = log
        .lines()
        .find(|l| l.contains("EC curve"))
        .unwrap_or_default();
    assert!(
        quoted.contains("\"P-999\\n[2099"),
        "the curve is quoted, escaped: {quoted}"
    );
    assert!(
        quoted.len() < 600,
        "the line stays short: {} bytes",
        quoted.len()
    );
}
