//! Upstream OAuth 2 tokens against a token endpoint that misbehaves the way
//! real ones do: down at start, down midway, slow, 503, malformed JSON, an
//! empty 200, every kind of the misbehaving-service corpus, and short-lived
//! (4 s) tokens. With the credentials stage alone and in every chain, the
//! provider must only ever see a token the endpoint issued and that is still
//! valid when the request reaches it: never an expired one, never the
//! client's credential, never none (503 meanwhile); and when the endpoint
//! comes back, the next retry (at most `retry_back_off.max_interval` later)
//! gets a token (issue 10.6).

use crate::support::*;
use ai_auth_testkit::http::Action;
use ai_auth_testkit::misbehaving::{self, vm_failure_lines};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The endpoint's tokens live this long (`expires_in`).
const LIFETIME_SECS: u64 = 4;
const CLIENT_SECRET: &str = "entra-client-secret-9d1c";
const CLIENT_CREDENTIAL: &str = "Bearer client-credential-must-not-leak";
/// The token request's timeout, as configured.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(3);
/// The backoff cap the test configures: after the endpoint comes back, a
/// token must arrive within this (plus a tick and a client's pause).
const MAX_RETRY_SECS: u64 = 2;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// How the token endpoint answers, phase by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A fresh token of `LIFETIME_SECS`.
    Issue,
    /// The connection is closed without an answer.
    Down,
    Status503,
    MalformedJson,
    /// `200` with an empty body.
    Empty200,
    /// A token issued on arrival, the answer sent 1.5 s later (the token's
    /// lifetime runs while the answer travels).
    Slow,
    /// Each request gets the next kind of the misbehaving-service corpus
    /// (cut body, stall, reset, huge body, garbage, statuses outside
    /// 100-599), with a well-formed token reply as the body where the kind
    /// sends one: a token that was never valid.
    Corpus,
}

/// The scripted token endpoint: every token it issued, with its expiry.
struct TokenEndpoint {
    server: Server,
    mode: Arc<Mutex<Mode>>,
    expiry_ms: Arc<Mutex<HashMap<String, u128>>>,
}

impl TokenEndpoint {
    fn start() -> TokenEndpoint {
        let mode = Arc::new(Mutex::new(Mode::Down));
        let expiry_ms = Arc::new(Mutex::new(HashMap::new()));
        let issued = Arc::new(AtomicUsize::new(0));
        let corpus_turn = AtomicUsize::new(0);
        let (m, e) = (Arc::clone(&mode), Arc::clone(&expiry_ms));
        let server = Server::start(move |r| {
            let body = String::from_utf8_lossy(&r.body);
            if !body.contains(&format!("client_secret={CLIENT_SECRET}")) {
                return Action::json(401, &json!({"error": "invalid_client"}));
            }
            let issue = || {
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("entra-token-{n}");
                let expiry = unix_ms() + u128::from(LIFETIME_SECS) * 1000;
                e.lock().unwrap().insert(token.clone(), expiry);
                Action::json(
                    200,
                    &json!({"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME_SECS}),
                )
            };
            match *m.lock().unwrap() {
                Mode::Issue => issue(),
                Mode::Down => Action::Close,
                Mode::Status503 => Action::status(503),
                Mode::MalformedJson => Action::Respond {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: br#"{"access_token": "entra-tok"#.to_vec(),
                },
                Mode::Empty200 => Action::status(200),
                Mode::Slow => Action::Delay(Duration::from_millis(1500), Box::new(issue())),
                Mode::Corpus => {
                    let turn = corpus_turn.fetch_add(1, Ordering::SeqCst);
                    let kind = misbehaving::ALL[turn % misbehaving::ALL.len()];
                    let never_issued = json!({"access_token": "corpus-token-never-issued",
                        "token_type": "Bearer", "expires_in": LIFETIME_SECS});
                    kind.action(TOKEN_TIMEOUT, never_issued.to_string().as_bytes())
                }
            }
        });
        TokenEndpoint {
            server,
            mode,
            expiry_ms,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// What a provider received: when, and the credential headers.
#[derive(Debug, Clone)]
struct Arrival {
    at_ms: u128,
    authorization: Vec<String>,
}

fn provider(arrivals: &Arc<Mutex<Vec<Arrival>>>) -> Server {
    let log = Arc::clone(arrivals);
    Server::start(move |r| {
        log.lock().unwrap().push(Arrival {
            at_ms: unix_ms(),
            authorization: r
                .headers_named("authorization")
                .into_iter()
                .map(str::to_string)
                .collect(),
        });
        Action::json(200, &json!({"object": "chat.completion", "choices": []}))
    })
}

/// One chain in front of the credentials stage.
struct Chain {
    name: &'static str,
    plugin: Value,
    /// Whether the client must send a JWT.
    jwt: bool,
}

fn chains(key: &TestKey) -> Vec<Chain> {
    let credentials = json!({
        "backends": {"azure": {"scheme": "bearer", "oauth2": {
            "token_uri": {"uri": "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token", "cluster": "entra", "timeout": format!("{}s", TOKEN_TIMEOUT.as_secs())},
            "client_id": "gateway-app",
            "client_secret": {"environment_variable": "ENTRA_CLIENT_SECRET"},
            "scopes": ["https://cognitiveservices.azure.com/.default"],
            "retry_back_off": {"base_interval": "1s", "max_interval": format!("{MAX_RETRY_SECS}s")}}}},
        "routes": [{"backend": "azure"}]
    });
    let jwt = json!({
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD],
            "local_jwks": {"inline_string": jwks(&[key]).to_string()},
            "from_headers": [{"name": "x-client-jwt"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    });
    let authz = json!({"http_service": {
        "server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "2s"}}});
    vec![
        Chain {
            name: "credentials",
            plugin: json!({"upstream_credentials": credentials}),
            jwt: false,
        },
        Chain {
            name: "jwt_credentials",
            plugin: json!({"jwt_authn": jwt, "upstream_credentials": credentials}),
            jwt: true,
        },
        Chain {
            name: "authz_credentials",
            plugin: json!({"ext_authz": authz, "upstream_credentials": credentials}),
            jwt: false,
        },
        Chain {
            name: "all_three",
            plugin: json!({"jwt_authn": jwt, "ext_authz": authz, "upstream_credentials": credentials}),
            jwt: true,
        },
    ]
}

#[test]
fn no_expired_token_ever_reaches_the_provider_whatever_the_endpoint_does() {
    let key = TestKey::ed25519("client-key");
    let endpoint = TokenEndpoint::start();
    let authz = Server::start(|_| Action::status(200));
    let chains = chains(&key);
    let arrivals: Vec<Arc<Mutex<Vec<Arrival>>>> = chains
        .iter()
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let providers: Vec<Server> = arrivals.iter().map(provider).collect();
    let mut listeners = Vec::new();
    let mut clusters = vec![
        bootstrap::cluster("entra", endpoint.server.port),
        bootstrap::cluster("authz", authz.port),
    ];
    for (chain, upstream) in chains.iter().zip(&providers) {
        let cluster = format!("provider_{}", chain.name);
        listeners.push(bootstrap::listener(
            chain.name,
            vec![bootstrap::wasm_filter_with_env(
                &chain.plugin,
                &[("ENTRA_CLIENT_SECRET", CLIENT_SECRET)],
            )],
            vec![bootstrap::route_to(&cluster)],
        ));
        clusters.push(bootstrap::cluster(&cluster, upstream.port));
    }
    let opts = ai_auth_testkit::envoy::Options {
        concurrency: 2,
        wasm_log_level: "info",
        ..Default::default()
    };
    let mut envoy = Envoy::start_with(&bootstrap::bootstrap(listeners, clusters), &opts)
        .unwrap_or_else(|e| panic!("{e}"));

    // Clients keep sending, one per chain, for the whole script.
    let stop = Arc::new(AtomicBool::new(false));
    let client_jwt = key.sign(&claims_with(json!({"exp": now() + 600})));
    let clients: Vec<_> = chains
        .iter()
        .map(|chain| {
            let port = envoy.port(chain.name);
            let (stop, jwt, name, needs_jwt) =
                (Arc::clone(&stop), client_jwt.clone(), chain.name, chain.jwt);
            std::thread::spawn(move || {
                let mut statuses: HashMap<u16, usize> = HashMap::new();
                while !stop.load(Ordering::SeqCst) {
                    let mut headers = vec![("authorization", CLIENT_CREDENTIAL)];
                    if needs_jwt {
                        headers.push(("x-client-jwt", jwt.as_str()));
                    }
                    let r =
                        http::post_json(port, "/openai/deployments/gpt/chat/completions", &headers);
                    assert!(
                        r.status == 200
                            || (r.status == 503 && r.header("retry-after") == Some("1")),
                        "{name}: {} {}",
                        r.status,
                        r.text()
                    );
                    assert!(
                        !r.text().contains("entra-token"),
                        "{name}: a token reached the client"
                    );
                    *statuses.entry(r.status).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(40));
                }
                statuses
            })
        })
        .collect();

    // Each failure outlasts a token's lifetime, so tokens expire during it;
    // each recovery is longer than the backoff cap.
    let script = [
        (Mode::Down, 5),
        (Mode::Issue, 6),
        (Mode::Status503, 7),
        (Mode::Issue, 6),
        (Mode::MalformedJson, 7),
        (Mode::Issue, 6),
        (Mode::Empty200, 7),
        (Mode::Issue, 6),
        (Mode::Slow, 7),
        // The corpus's stalls end with the token request's timeout, within
        // the next phase: the comeback after it is timed from a quiet line.
        (Mode::Corpus, 9),
        (Mode::Down, 7),
        (Mode::Issue, 6),
    ];
    let t0 = Instant::now();
    // When the endpoint came back after failing (unix ms).
    let mut comebacks = Vec::new();
    let mut failing = false;
    for (mode, secs) in script {
        endpoint.set(mode);
        if mode == Mode::Issue && failing {
            comebacks.push(unix_ms());
        }
        failing = !matches!(mode, Mode::Issue | Mode::Slow);
        std::thread::sleep(Duration::from_secs(secs));
    }
    stop.store(true, Ordering::SeqCst);
    let statuses: Vec<HashMap<u16, usize>> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = t0.elapsed();

    let expiry = endpoint.expiry_ms.lock().unwrap().clone();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for ((chain, arrivals), statuses) in chains.iter().zip(&arrivals).zip(&statuses) {
        let arrivals = arrivals.lock().unwrap().clone();
        // Milliseconds from the token's expiry to its arrival at the
        // provider (negative: before), for the arrival closest to expiry.
        let mut worst_past_ms: Option<i128> = None;
        let mut expired = 0;
        // Per comeback: the first arrival with a token issued after it.
        let mut recovered_ms: Vec<Option<u128>> = vec![None; comebacks.len()];
        for a in &arrivals {
            let token = match a.authorization.as_slice() {
                [one] => one.strip_prefix("Bearer ").unwrap_or(one),
                other => {
                    failures.push(format!("{}: the provider got {other:?}", chain.name));
                    continue;
                }
            };
            let Some(expires) = expiry.get(token) else {
                failures.push(format!(
                    "{}: {token:?} is not a token the endpoint issued",
                    chain.name
                ));
                continue;
            };
            let past = a.at_ms as i128 - *expires as i128;
            expired += usize::from(past >= 0);
            let issued_at = expires - u128::from(LIFETIME_SECS) * 1000;
            for (back, recovered) in comebacks.iter().zip(recovered_ms.iter_mut()) {
                if issued_at >= *back && recovered.is_none() {
                    *recovered = Some(a.at_ms - back);
                }
            }
            worst_past_ms = Some(worst_past_ms.map_or(past, |w| w.max(past)));
        }
        report.push(format!(
            "{}: {} requests upstream ({expired} with an expired token), statuses {statuses:?}, \
             closest to expiry: {}, first token after each comeback (ms): {recovered_ms:?}",
            chain.name,
            arrivals.len(),
            worst_past_ms.map_or("-".into(), |w| format!("{w} ms past expiry")),
        ));
        // The retry after the endpoint is back gets a token: at most the
        // backoff cap, a root tick (500 ms) and a client's pause later.
        let bound_ms = u128::from(MAX_RETRY_SECS) * 1000 + 1000;
        for (i, r) in recovered_ms.iter().enumerate() {
            if r.is_none_or(|ms| ms > bound_ms) {
                failures.push(format!(
                    "{}: comeback {i}: no token upstream within {bound_ms} ms ({r:?})",
                    chain.name
                ));
            }
        }
        if let Some(w) = worst_past_ms.filter(|w| *w >= 0) {
            failures.push(format!(
                "{}: a token reached the provider {w} ms past its expiry",
                chain.name
            ));
        }
        // The script exercised both sides: tokens were injected, and
        // requests were refused while there was none.
        for status in [200, 503] {
            if statuses.get(&status).copied().unwrap_or(0) < 20 {
                failures.push(format!("{}: too few {status}: {statuses:?}", chain.name));
            }
        }
    }
    eprintln!(
        "after {elapsed:?}, {} tokens issued:\n{}",
        expiry.len(),
        report.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(envoy.counter("upstream_credentials.token_fetch_failed") >= 5);
    let log = envoy.stop();
    for secret in [CLIENT_SECRET, "entra-token-1", "corpus-token-never-issued"] {
        assert!(!log.contains(secret), "a secret reached Envoy's log");
    }
    let vm_failures = vm_failure_lines(&log);
    assert!(vm_failures.is_empty(), "{vm_failures:#?}");
}
