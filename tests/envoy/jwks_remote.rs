//! Remote JWKS in the real Envoy: keys fetched by the root context (directly
//! or through OIDC discovery), shared by the worker VMs, refreshed on an
//! unknown `kid`, kept while the identity provider fails.

use crate::support::*;
use ai_auth_testkit::http::Action;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake identity provider serves.
struct Idp {
    server: Server,
    jwks: Arc<Mutex<Option<Value>>>,
    /// Delay before answering a JWKS request.
    delay: Arc<Mutex<Duration>>,
}

impl Idp {
    fn start(keys: &[&TestKey]) -> Idp {
        let jwks = Arc::new(Mutex::new(Some(jwks_of(keys))));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let served = Arc::clone(&jwks);
        let slow = Arc::clone(&delay);
        let server = Server::start(move |r| match r.path.as_str() {
            "/realms/ai/.well-known/openid-configuration" => Action::json(
                200,
                &json!({"issuer": ISS, "jwks_uri": "http://idp.test/realms/ai/protocol/openid-connect/certs"}),
            ),
            "/realms/ai/protocol/openid-connect/certs" | "/jwks" => {
                let answer = match served.lock().unwrap().clone() {
                    Some(doc) => Action::json(200, &doc),
                    None => Action::status(500),
                };
                Action::Delay(*slow.lock().unwrap(), Box::new(answer))
            }
            _ => Action::status(404),
        });
        Idp {
            server,
            jwks,
            delay,
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
    let upstream = Server::echo();
    let ls = listeners
        .into_iter()
        .map(|(name, p)| {
            bootstrap::listener(
                name,
                vec![bootstrap::wasm_filter(&p)],
                vec![bootstrap::route_to("upstream")],
            )
        })
        .collect();
    let boot = bootstrap::bootstrap(
        ls,
        vec![
            bootstrap::cluster("upstream", upstream.port),
            bootstrap::cluster("idp", idp.server.port),
        ],
    );
    let opts = ai_auth_testkit::envoy::Options {
        concurrency,
        ..Default::default()
    };
    (
        Envoy::start_with(&boot, &opts).unwrap_or_else(|e| panic!("{e}")),
        upstream,
    )
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

#[test]
fn a_rotated_key_is_picked_up_on_its_first_unknown_kid() {
    let a = TestKey::rsa("key-a");
    let b = TestKey::ed25519("key-b");
    let idp = Idp::start(&[&a]);
    // A long cache: only the unknown kid can explain a refetch.
    let (envoy, _up) = start(
        &idp,
        vec![(
            "main",
            plugin(
                json!({"http_uri": {"uri": "http://idp.test/jwks", "cluster": "idp"}, "cache_duration": "3600s"}),
            ),
        )],
        1,
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
    idp.serve(&[&b]);
    let first = http::get(port, "/", &[("authorization", &token_b)]).unwrap();
    assert_eq!(
        first.status, 401,
        "the new kid is unknown until the refetch"
    );
    assert_eq!(
        error_of(&first).1,
        "Jwks has no key matching the Jwt kid and alg"
    );
    eventually(
        Duration::from_secs(5),
        "key b after the refetch",
        || http::get(port, "/", &[("authorization", &token_b)]).unwrap(),
        200,
    );
    // The retired key no longer verifies, even though its token was cached.
    let r = http::get(port, "/", &[("authorization", &token_a)]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
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
