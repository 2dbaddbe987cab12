//! The benchmark of issue 3: throughput and proxy CPU per request of
//! ai-auth-filter next to Envoy's own filters, all in one Envoy process.
//!
//! Usage:
//!
//! ```sh
//! scripts/bench.sh    # installs Envoy, builds the .wasm, then runs this in release mode
//! ```
//!
//! (or, with `ENVOY_BIN` and `FILTER_WASM` set or the defaults in place,
//! `cargo bench --bench envoy`). Knobs, from the environment:
//! `BENCH_ROUNDS` (3), `BENCH_SECONDS` (3, the measured window of one run),
//! `BENCH_WARMUP_SECONDS` (1), `BENCH_CONNECTIONS` (16), `BENCH_CONCURRENCY`
//! (1, the measured Envoy's `--concurrency`; start-up is always timed at 1) and `BENCH_ONLY`
//! (comma-separated variant names; `none` is always measured), `BENCH_STARTS`
//! (5, Envoy starts per configuration for the start-up figures of issue 14).
//!
//! One Envoy (`--concurrency 1` unless `BENCH_CONCURRENCY` says otherwise) gets one listener per variant; every route
//! answers with a `direct_response` 200, so no upstream adds noise and the
//! filter under test is all that differs from the `none` listener. Rounds
//! are interleaved (each round runs every variant once, in a rotated order)
//! and each variant reports its median. Printed per variant: requests per
//! second, its ratio to `none` of the same Envoy, Envoy's CPU time (utime +
//! stime of the process over the measured window) per request, the CPU it
//! adds over `none`, the throughput ratio that CPU implies for a saturated
//! worker (steadier than req/s when other processes share the machine), and
//! the load generator's own CPU per request (it must stay well below
//! Envoy's); then how much CPU other processes took during the windows (a
//! noise warning), the .wasm size and the targets of issue 3.
//! Every response is checked: a single non-2xx response or connection
//! failure fails the run (a 401 storm would look like a fast filter), and
//! each variant's counters must show it did what its name says (cache hits
//! or not). Targets are printed, never asserted.
//!
//! Besides the variants of issue 3, `wasm_no_jwt_required` (our filter on a
//! route that requires no JWT) shows the floor of our filter in this Envoy
//! (V8 calls per stream, the header snapshot): what the cache-hit variants
//! pay on top of it is the JWT path itself.
//!
//! Issue 14: `wasm_rs256_shared_hit` is `wasm_rs256_hit` with the local
//! verified-token cache off (`jwt_cache_size: 0`) and the shared one on:
//! every request is a hit in the cache the worker VMs share.
//!
//! Issue 16: `wasm_dpop_es256` / `wasm_dpop_eddsa` send the RS256 token of
//! `wasm_rs256_hit`, DPoP-bound (`cnf.jkt`), as `Authorization: DPoP` with a
//! fresh proof per request (made by the load generator, so its signing is
//! client CPU): what they add over `wasm_rs256_hit` is the proof check
//! (signature, `htm`/`htu`/`ath`/`iat`, thumbprint, the shared `jti`
//! replay cache).
//!
//! Issue 15: `wasm_apikey_1` / `wasm_apikey_10k` (an API key provider with
//! 1 or 10,000 hashed keys, the key in `x-api-key`) next to Envoy's own
//! `api_key_auth` with the same keys in plaintext (`native_api_key_auth`,
//! `native_api_key_auth_10k`); `wasm_model_check_2k` POSTs a 2 KiB chat
//! request to an API key route with a model check (and the buffer filter
//! after ours, as the README says), next to `buffer_post_2k` (the buffer
//! filter alone, the same POST; without it Envoy answers a direct_response
//! before the body and closes the connection, which measures reconnects) and
//! `wasm_apikey_1_post_2k` (the key only, and the buffer filter, the same
//! POST): the model check costs what it adds over the latter.
//!
//! Issue 9.4: `wasm_prefix_60k_path` and `wasm_regex_60k_path` send a 60 KB
//! path to our filter with a rule that matches it by prefix or by
//! `safe_regex` (`/re/[a-z]+(/.*)?`, the pattern of the issue);
//! `wasm_regex_hard_60k_path` uses `(.*a){20}` (also from the issue), which a
//! PikeVM pays dearly for. The regex's cost per request is the CPU of a
//! regex variant less the prefix variant's; printed after the targets.
//!
//! Issue 11: `native_ext_authz_grpc`, `wasm_ext_authz_grpc` and
//! `wasm_ext_authz_grpc_cache`: Envoy's `ext_authz` in gRPC mode and ours,
//! without and with the decision cache, against the same gRPC auth service
//! (the testkit's `demo-authz`, tonic, a process of its own: its CPU is not
//! Envoy's; compare by CPU per request). `wasm_grpc_callout_floor` is the least any
//! proxy-wasm filter pays for one gRPC call (the noop filter's
//! `grpc_callout` mode).
//!
//! To add a variant, push a `Variant` (name, HTTP filters before the router,
//! request headers, whether the filter refuses a request without them,
//! counter checks) in `variants`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use ai_auth_testkit::envoy::{self, bootstrap, Envoy, Options};
use ai_auth_testkit::http;
use ai_auth_testkit::keys::{jwks, TestKey};
use ai_auth_testkit::loadgen;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ISS: &str = "https://idp.test/realms/ai";
const AUD: &str = "llm-gateway";
const PATH: &str = "/v1/chat/completions";
/// Our filter's counters, as Envoy shows them.
const WASM_STATS: &str = "wasmcustom.ai_auth.jwt_authn";

/// What the counters must show after a run.
enum Check {
    /// The counter moves for (nearly) every response of the run.
    EveryRequest(String),
    /// The counter does not move.
    Never(String),
}

struct Variant {
    name: &'static str,
    /// HTTP filters before the router.
    filters: Vec<Value>,
    headers: Vec<(String, String)>,
    /// The filter refuses a request without `headers` (checked before timing).
    enforces: bool,
    checks: Vec<Check>,
    /// A POST of this body; empty: a GET.
    body: Vec<u8>,
    /// A DPoP proof made for each request with this key, for this token.
    dpop: Option<DpopClient>,
    /// The request's path; `None`: `PATH`.
    path: Option<String>,
}

impl Variant {
    fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(PATH)
    }
}

/// A DPoP client: its key and its DPoP-bound access token.
#[derive(Clone)]
struct DpopClient {
    key: Arc<TestKey>,
    token: String,
    jti_prefix: String,
    counter: Arc<AtomicU64>,
}

fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638 thumbprint of a public key (EC or OKP).
fn thumbprint(key: &TestKey) -> String {
    let jwk = key.jwk();
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        _ => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
    };
    b64url(Sha256::digest(canonical))
}

impl DpopClient {
    fn new(key: TestKey, token: String) -> DpopClient {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        DpopClient {
            key: Arc::new(key),
            token,
            jti_prefix: format!("{nanos:x}"),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `Authorization: DPoP` and a fresh proof for a GET of `PATH` on `port`.
    fn headers(&self, port: u16) -> Vec<(String, String)> {
        let mut jwk = self.key.jwk();
        jwk.as_object_mut().unwrap().remove("kid");
        let header = json!({"typ": "dpop+jwt", "alg": self.key.alg(), "jwk": jwk});
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let payload = json!({"jti": format!("{}-{n}", self.jti_prefix), "htm": "GET",
            "htu": format!("http://127.0.0.1:{port}{PATH}"), "iat": iat,
            "ath": b64url(Sha256::digest(self.token.as_bytes()))});
        let proof = self.key.sign_raw(self.key.alg(), &header, &payload);
        vec![
            ("authorization".into(), format!("DPoP {}", self.token)),
            ("dpop".into(), proof),
        ]
    }
}

struct Settings {
    rounds: usize,
    window: Duration,
    warmup: Duration,
    connections: usize,
    /// Envoy's worker threads (`--concurrency`) for the measured Envoy.
    concurrency: u32,
    only: Option<Vec<String>>,
}

fn env_number(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|n| *n > 0.0)
            .ok_or_else(|| format!("{name}={v:?}: expected a positive number")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        Ok(Settings {
            rounds: env_number("BENCH_ROUNDS", 3.0)? as usize,
            window: Duration::from_secs_f64(env_number("BENCH_SECONDS", 3.0)?),
            warmup: Duration::from_secs_f64(env_number("BENCH_WARMUP_SECONDS", 1.0)?),
            connections: env_number("BENCH_CONNECTIONS", 16.0)? as usize,
            concurrency: env_number("BENCH_CONCURRENCY", 1.0)? as u32,
            only: std::env::var("BENCH_ONLY")
                .ok()
                .map(|s| s.split(',').map(|n| n.trim().to_string()).collect()),
        })
    }
}

struct Tokens {
    jwks: String,
    rs256: String,
    es256: String,
    eddsa: String,
    /// DPoP clients with an ES256 and an EdDSA key, each with an RS256
    /// token bound to its key.
    dpop_es256: DpopClient,
    dpop_eddsa: DpopClient,
}

fn tokens() -> Tokens {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::p256("ec-256");
    let ed = TestKey::ed25519("ed-1");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Valid well past the longest run.
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 6 * 3600,
                        "realm_access": {"roles": ["llm-user"]}, "scope": "openid chat"});
    let bound = |key: TestKey| {
        let mut c = claims.clone();
        c["cnf"] = json!({"jkt": thumbprint(&key)});
        let token = rsa.sign(&c);
        DpopClient::new(key, token)
    };
    Tokens {
        jwks: jwks(&[&rsa, &ec, &ed]).to_string(),
        rs256: rsa.sign(&claims),
        es256: ec.sign(&claims),
        eddsa: ed.sign(&claims),
        dpop_es256: bound(TestKey::p256("client-es256")),
        dpop_eddsa: bound(TestKey::ed25519("client-ed")),
    }
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

/// Envoy's own `jwt_authn`: one provider with the inline JWKS, required on "/".
fn native_jwt(t: &Tokens, cache: bool) -> Value {
    let mut provider = json!({
        "issuer": ISS,
        "audiences": [AUD],
        "local_jwks": {"inline_string": t.jwks},
        "forward": false
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 100});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"idp": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
        }
    })
}

/// Our filter with the same provider; `cache_size` `None` keeps the default cache.
fn wasm_jwt(t: &Tokens, cache_size: Option<usize>) -> Value {
    wasm_jwt_rule(
        t,
        cache_size,
        json!({"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}),
    )
}

fn wasm_jwt_rule(t: &Tokens, cache_size: Option<usize>, rule: Value) -> Value {
    let mut jwt = json!({
        "providers": {"idp": {
            "issuer": ISS,
            "audiences": [AUD],
            "local_jwks": {"inline_string": t.jwks},
            "forward": false
        }},
        "rules": [rule]
    });
    if let Some(n) = cache_size {
        jwt["jwt_cache_config"] = json!({"jwt_cache_size": n});
    }
    bootstrap::wasm_filter(&json!({ "jwt_authn": jwt }))
}

/// benches/noop-filter's .wasm, next to ours (scripts/bench.sh builds both),
/// in mode `noop` or `callout`.
fn floor_wasm_filter(mode: &str) -> Value {
    let ours = envoy::filter_wasm().unwrap_or_else(|e| panic!("{e}"));
    let noop = ours.with_file_name("ai_auth_noop_filter.wasm");
    assert!(
        noop.is_file(),
        "{} not found: run scripts/bench.sh",
        noop.display()
    );
    let mut filter = bootstrap::wasm_filter(&json!({}));
    filter["typed_config"]["config"]["name"] = json!(mode);
    filter["typed_config"]["config"]["root_id"] = json!("floor");
    filter["typed_config"]["config"]["configuration"]["value"] = json!(mode);
    filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
        json!(noop.display().to_string());
    filter
}

fn variants(t: &Tokens) -> Vec<Variant> {
    let native_stat =
        |listener: &str, counter: &str| format!("http.{listener}.jwt_authn.{counter}");
    let wasm_stat = |counter: &str| format!("{WASM_STATS}.{counter}");
    let mut v = vec![
        Variant {
            name: "none",
            filters: vec![],
            headers: bearer(&t.rs256),
            enforces: false,
            checks: vec![],
            body: Vec::new(),
            dpop: None,
            path: None,
        },
        Variant {
            name: "native_jwt_cache",
            filters: vec![native_jwt(t, true)],
            headers: bearer(&t.rs256),
            enforces: true,
            checks: vec![
                Check::EveryRequest(native_stat("native_jwt_cache", "allowed")),
                Check::EveryRequest(native_stat("native_jwt_cache", "jwt_cache_hit")),
            ],
            body: Vec::new(),
            dpop: None,
            path: None,
        },
        // The floor of any wasm filter: a proxy-wasm filter that does nothing
        // (benches/noop-filter), in the same V8.
        Variant {
            name: "wasm_noop",
            filters: vec![floor_wasm_filter("noop")],
            headers: bearer(&t.rs256),
            enforces: false,
            checks: vec![],
            body: Vec::new(),
            dpop: None,
            path: None,
        },
        // Diagnostic: our filter on a route that requires no JWT. The floor of
        // any wasm filter in V8 (VM calls per stream, the header snapshot);
        // the cache-hit variants cannot go below it.
        Variant {
            name: "wasm_no_jwt_required",
            filters: vec![wasm_jwt_rule(t, None, json!({"match": {"prefix": "/"}}))],
            headers: bearer(&t.rs256),
            enforces: false,
            checks: vec![
                Check::Never(wasm_stat("jwt_cache_hit")),
                Check::Never(wasm_stat("jwt_cache_miss")),
            ],
            body: Vec::new(),
            dpop: None,
            path: None,
        },
    ];
    // Native `jwt_authn` without its cache for every algorithm we verify,
    // so each of our cache-miss rows has its native reference (issue 14).
    for (name, token) in [
        ("native_jwt_nocache", &t.rs256),
        ("native_jwt_es256_nocache", &t.es256),
        ("native_jwt_eddsa_nocache", &t.eddsa),
    ] {
        v.push(Variant {
            name,
            filters: vec![native_jwt(t, false)],
            headers: bearer(token),
            enforces: true,
            checks: vec![
                Check::EveryRequest(native_stat(name, "allowed")),
                Check::Never(native_stat(name, "jwt_cache_hit")),
            ],
            body: Vec::new(),
            dpop: None,
            path: None,
        });
    }
    // Passthrough auth (issue 4) against the same auth service, a second
    // Envoy that answers 200 to requests carrying x-api-key, 403 otherwise.
    let api_key = vec![("x-api-key".to_string(), "bench-key".to_string())];
    let authz_stat = |counter: &str| format!("wasmcustom.ai_auth.ext_authz.{counter}");
    v.push(Variant {
        name: "native_ext_authz",
        filters: vec![native_ext_authz()],
        headers: api_key.clone(),
        enforces: true,
        checks: vec![Check::EveryRequest(
            "http.native_ext_authz.ext_authz.ok".into(),
        )],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    // The floor of any proxy-wasm passthrough: one call, answer unread, resume.
    v.push(Variant {
        name: "wasm_callout_floor",
        filters: vec![floor_wasm_filter("callout")],
        headers: api_key.clone(),
        enforces: false,
        checks: vec![],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    v.push(Variant {
        name: "wasm_ext_authz",
        filters: vec![wasm_ext_authz(false)],
        headers: api_key.clone(),
        enforces: true,
        checks: vec![
            Check::EveryRequest(authz_stat("ok")),
            Check::Never(authz_stat("decision_cache_hit")),
        ],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    v.push(Variant {
        name: "wasm_ext_authz_cache",
        filters: vec![wasm_ext_authz(true)],
        headers: api_key.clone(),
        enforces: true,
        checks: vec![Check::EveryRequest(authz_stat("decision_cache_hit"))],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    // Passthrough over gRPC (issue 11): Envoy's ext_authz in gRPC mode and
    // ours against the same gRPC auth service (`start_grpc_auth_service`).
    v.push(Variant {
        name: "native_ext_authz_grpc",
        filters: vec![native_ext_authz_grpc()],
        headers: api_key.clone(),
        enforces: true,
        checks: vec![Check::EveryRequest(
            "http.native_ext_authz_grpc.ext_authz.ok".into(),
        )],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    // The floor of any proxy-wasm gRPC passthrough: one gRPC call, answer unread, resume.
    v.push(Variant {
        name: "wasm_grpc_callout_floor",
        filters: vec![floor_wasm_filter("grpc_callout")],
        headers: api_key.clone(),
        enforces: false,
        checks: vec![],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    v.push(Variant {
        name: "wasm_ext_authz_grpc",
        filters: vec![wasm_ext_authz_grpc(false)],
        headers: api_key.clone(),
        enforces: true,
        checks: vec![
            Check::EveryRequest(authz_stat("ok")),
            Check::Never(authz_stat("decision_cache_hit")),
        ],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    v.push(Variant {
        name: "wasm_ext_authz_grpc_cache",
        filters: vec![wasm_ext_authz_grpc(true)],
        headers: api_key,
        enforces: true,
        checks: vec![Check::EveryRequest(authz_stat("decision_cache_hit"))],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    for (alg, token) in [
        ("rs256", &t.rs256),
        ("es256", &t.es256),
        ("eddsa", &t.eddsa),
    ] {
        v.push(Variant {
            name: leak(format!("wasm_{alg}_miss")),
            filters: vec![wasm_jwt(t, Some(0))],
            headers: bearer(token),
            enforces: true,
            checks: vec![
                Check::EveryRequest(wasm_stat("allowed")),
                Check::Never(wasm_stat("jwt_cache_hit")),
            ],
            body: Vec::new(),
            dpop: None,
            path: None,
        });
        v.push(Variant {
            name: leak(format!("wasm_{alg}_hit")),
            filters: vec![wasm_jwt(t, None)],
            headers: bearer(token),
            enforces: true,
            checks: vec![
                Check::EveryRequest(wasm_stat("allowed")),
                Check::EveryRequest(wasm_stat("jwt_cache_hit")),
            ],
            body: Vec::new(),
            dpop: None,
            path: None,
        });
    }
    // Issue 14: a hit in the verified-token cache the worker VMs share (the
    // local cache off, so every request reads the shared entry).
    v.push(Variant {
        name: "wasm_rs256_shared_hit",
        filters: vec![wasm_jwt_shared_only(t)],
        headers: bearer(&t.rs256),
        enforces: true,
        checks: vec![
            Check::EveryRequest(wasm_stat("jwt_shared_cache_hit")),
            Check::Never(wasm_stat("jwt_cache_hit")),
        ],
        body: Vec::new(),
        dpop: None,
        path: None,
    });
    // DPoP (issue 16): the token of wasm_rs256_hit, bound to the client's key.
    for (alg, client) in [("es256", &t.dpop_es256), ("eddsa", &t.dpop_eddsa)] {
        v.push(Variant {
            name: leak(format!("wasm_dpop_{alg}")),
            filters: vec![wasm_dpop(t)],
            headers: vec![],
            enforces: true,
            checks: vec![
                Check::EveryRequest(wasm_stat("dpop_verified")),
                Check::EveryRequest(wasm_stat("jwt_cache_hit")),
            ],
            body: Vec::new(),
            dpop: Some(client.clone()),
            path: None,
        });
    }
    // API keys (issue 15), ours next to Envoy's api_key_auth.
    let keys = api_keys(10_000);
    let used = vec![("x-api-key".to_string(), keys[7777 % keys.len()].clone())];
    let first = vec![("x-api-key".to_string(), keys[0].clone())];
    for (name, n, headers) in [("1", 1, &first), ("10k", 10_000, &used)] {
        v.push(Variant {
            name: leak(format!("wasm_apikey_{name}")),
            filters: vec![wasm_api_keys(&keys[..n], false)],
            headers: headers.clone(),
            enforces: true,
            checks: vec![Check::EveryRequest(wasm_stat("api_key_valid"))],
            body: Vec::new(),
            dpop: None,
            path: None,
        });
        v.push(Variant {
            name: leak(if n == 1 {
                "native_api_key_auth".to_string()
            } else {
                format!("native_api_key_auth_{name}")
            }),
            filters: vec![native_api_key_auth(&keys[..n])],
            headers: headers.clone(),
            enforces: true,
            checks: vec![],
            body: Vec::new(),
            dpop: None,
            path: None,
        });
    }
    // The model check (issue 15) on a 2 KiB chat request.
    let body = chat_body(2048);
    v.push(Variant {
        name: "buffer_post_2k",
        filters: vec![buffer_filter()],
        headers: vec![("content-type".into(), "application/json".into())],
        enforces: false,
        checks: vec![],
        body: body.clone(),
        dpop: None,
        path: None,
    });
    let mut json_key = first.clone();
    json_key.push(("content-type".into(), "application/json".into()));
    v.push(Variant {
        name: "wasm_apikey_1_post_2k",
        filters: vec![wasm_api_keys(&keys[..1], false), buffer_filter()],
        headers: json_key.clone(),
        enforces: true,
        checks: vec![
            Check::EveryRequest(wasm_stat("api_key_valid")),
            Check::Never("wasmcustom.ai_auth.model_check.allowed".into()),
        ],
        body: body.clone(),
        dpop: None,
        path: None,
    });
    v.push(Variant {
        name: "wasm_model_check_2k",
        filters: vec![wasm_api_keys(&keys[..1], true), buffer_filter()],
        headers: json_key,
        enforces: true,
        checks: vec![
            Check::EveryRequest(wasm_stat("api_key_valid")),
            Check::EveryRequest("wasmcustom.ai_auth.model_check.allowed".into()),
        ],
        body,
        dpop: None,
        path: None,
    });
    // Issue 9.4: the cost of a route regex on a 60 KB path, next to a prefix
    // rule on the same path (the floor: the path into the VM and back).
    let long_path = format!("/re/{}", "a".repeat(60 * 1000 - 4));
    for (name, matcher) in [
        ("wasm_prefix_60k_path", json!({"prefix": "/re/"})),
        (
            "wasm_regex_60k_path",
            json!({"safe_regex": {"regex": "/re/[a-z]+(/.*)?"}}),
        ),
        (
            "wasm_regex_hard_60k_path",
            json!({"safe_regex": {"regex": "(.*a){20}"}}),
        ),
    ] {
        v.push(Variant {
            name,
            filters: vec![wasm_jwt_rule(t, None, json!({ "match": matcher }))],
            headers: vec![],
            enforces: false,
            checks: vec![Check::Never(wasm_stat("jwt_cache_miss"))],
            body: Vec::new(),
            dpop: None,
            path: Some(long_path.clone()),
        });
    }
    v
}

/// Our filter with the RS256 provider of `wasm_rs256_hit`, taking DPoP
/// proofs. The proof window is short and the replay cache large, so the
/// cache never fills at benchmark rates (the README says how to size it).
fn wasm_dpop(t: &Tokens) -> Value {
    bootstrap::wasm_filter(&json!({"jwt_authn": {
        "providers": {"idp": {
            "issuer": ISS,
            "audiences": [AUD],
            "local_jwks": {"inline_string": t.jwks},
            "forward": false,
            "dpop": {"required": true, "algorithms": ["ES256", "EdDSA"], "max_age": "5s",
                     "replay_cache_entries": 1 << 20}
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }}))
}

/// Issue 14: the RS256 provider of `wasm_rs256_hit` with the local
/// verified-token cache off and the shared one on.
fn wasm_jwt_shared_only(t: &Tokens) -> Value {
    bootstrap::wasm_filter(&json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "audiences": [AUD],
                              "local_jwks": {"inline_string": t.jwks}, "forward": false}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        "jwt_cache_config": {"jwt_cache_size": 0, "jwt_shared_cache_size": 100}
    }}))
}

/// `n` distinct client keys.
fn api_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("sk-gw-bench-{i:05}-7f3a9c"))
        .collect()
}

/// Our API key provider with these keys (as hashes), key in `x-api-key`;
/// with `model_check`, every key may use `gpt-4o*` and the rule checks it.
fn wasm_api_keys(keys: &[String], model_check: bool) -> Value {
    let entries: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let hex: String = Sha256::digest(k.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            json!({"name": format!("app-{i}"), "tenant": "acme", "sha256": hex,
                   "allowed_models": ["gpt-4o*"]})
        })
        .collect();
    let mut rule = json!({"match": {"prefix": "/"}, "requires": {"provider_name": "keys"}});
    if model_check {
        rule["model_check"] = json!({});
    }
    bootstrap::wasm_filter(&json!({"jwt_authn": {
        "providers": {"keys": {"api_keys": entries, "from_headers": [{"name": "x-api-key"}]}},
        "rules": [rule]
    }}))
}

/// Envoy's own `api_key_auth` with the same keys, in plaintext.
fn native_api_key_auth(keys: &[String]) -> Value {
    let credentials: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"key": k, "client": format!("app-{i}")}))
        .collect();
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": [{"header": "x-api-key"}]
        }
    })
}

fn buffer_filter() -> Value {
    json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1048576}})
}

/// An OpenAI chat request of `size` bytes, `model` first as clients send it.
fn chat_body(size: usize) -> Vec<u8> {
    let head = r#"{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    format!(
        "{head}{}{tail}",
        &"lorem ipsum ".repeat(fill / 12 + 1)[..fill]
    )
    .into_bytes()
}

/// Envoy's `ext_authz` with an HTTP service, as the passthrough variants use it.
fn native_ext_authz() -> Value {
    json!({
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": {
                "server_uri": {"uri": "http://authz.local", "cluster": "ext_authz", "timeout": "1s"},
                "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-api-key"}]}}
            },
            "transport_api_version": "V3"
        }
    })
}

/// Our passthrough with the same service and headers; optionally the decision cache.
fn wasm_ext_authz(cache: bool) -> Value {
    let mut authz = json!({
        "http_service": {
            "server_uri": {"uri": "http://authz.local", "cluster": "ext_authz", "timeout": "1s"},
            "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-api-key"}]}}
        }
    });
    if cache {
        authz["decision_cache"] = json!({"key_headers": ["x-api-key"], "ttl": "3600s"});
    }
    bootstrap::wasm_filter(&json!({ "ext_authz": authz }))
}

/// Envoy's `ext_authz` in gRPC mode (V3), as the gRPC passthrough variants use it.
fn native_ext_authz_grpc() -> Value {
    json!({
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "grpc_service": {"envoy_grpc": {"cluster_name": "ext_authz_grpc"}, "timeout": "1s"},
            "transport_api_version": "V3"
        }
    })
}

/// Our passthrough over gRPC with the same service; optionally the decision cache.
fn wasm_ext_authz_grpc(cache: bool) -> Value {
    let mut authz = json!({
        "grpc_service": {"envoy_grpc": {"cluster_name": "ext_authz_grpc"}, "timeout": "1s"}
    });
    if cache {
        authz["decision_cache"] = json!({"ttl": "3600s"});
    }
    bootstrap::wasm_filter(&json!({ "ext_authz": authz }))
}

/// The gRPC auth service of the gRPC passthrough variants: the testkit's
/// `demo-authz` (tonic) with the benchmark's policy (`AUTHZ_BENCH_API_KEY`:
/// OK when `x-api-key` is `bench-key`, else PERMISSION_DENIED), its own
/// process (its CPU is not Envoy's). The tests' grpcio server held these
/// variants near 500-1,000 req/s, Envoy mostly idle, and its CPU per
/// request then swung with the pace (cold caches, no batching) rather than
/// with the filter.
struct BenchAuthz {
    child: std::process::Child,
    grpc_port: u16,
}

impl Drop for BenchAuthz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn start_grpc_auth_service() -> Result<BenchAuthz, String> {
    // target/release/deps/envoy-<hash> -> target/release/demo-authz
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("demo-authz"))
        .filter(|b| b.is_file())
        .ok_or("demo-authz not found next to the benchmark: run scripts/bench.sh (builds it)")?;
    let (http_port, grpc_port) = (free_port()?, free_port()?);
    let child = std::process::Command::new(&bin)
        .arg(http_port.to_string())
        .arg(grpc_port.to_string())
        .env("AUTHZ_BENCH_API_KEY", "bench-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let server = BenchAuthz { child, grpc_port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "demo-authz did not listen on {grpc_port} within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// The auth service of the passthrough variants: its own Envoy (so its CPU is
/// not counted as the proxy's), 200 when `x-api-key` is present, else 403.
fn start_auth_service() -> Result<Envoy, String> {
    let routes = vec![
        json!({"match": {"prefix": "/", "headers": [{"name": "x-api-key", "present_match": true}]},
               "direct_response": {"status": 200}}),
        json!({"match": {"prefix": "/"}, "direct_response": {"status": 403}}),
    ];
    let boot = bootstrap::bootstrap(vec![bootstrap::listener("authz", vec![], routes)], vec![]);
    Envoy::start_with(
        &boot,
        &Options {
            concurrency: 1,
            log_level: "warn",
            wasm_log_level: "warn",
        },
    )
}

/// A target is met only when both the req/s ratio and the CPU ratio reach it:
/// on a noisy machine one of them alone can flatter a variant.
fn verdict(rps_ratio: f64, cpu_ratio: f64, target: f64) -> &'static str {
    if rps_ratio >= target && cpu_ratio >= target {
        "met"
    } else {
        "NOT MET"
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Clock ticks per second of /proc/<pid>/stat times.
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses: state is field 3,
    // utime 14 and stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// user + nice + system time of the whole machine, in clock ticks.
fn machine_busy_ticks() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let cpu = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() == 3 {
        Ok(f.iter().sum())
    } else {
        Err(format!("unexpected /proc/stat line {cpu:?}"))
    }
}

/// CPU times at one edge of the measured window.
#[derive(Debug, Clone, Copy)]
struct Mark {
    envoy: u64,
    client: u64,
    machine: u64,
}

impl Mark {
    fn now(envoy_pid: u32) -> Result<Mark, String> {
        Ok(Mark {
            envoy: cpu_ticks(envoy_pid)?,
            client: cpu_ticks(std::process::id())?,
            machine: machine_busy_ticks()?,
        })
    }
}

#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    cpu_us_per_req: f64,
    /// The load generator's own CPU per request: shows it is not the bottleneck.
    client_us_per_req: f64,
    /// CPU cores that other processes used during the window: noise.
    other_cores: f64,
}

/// Medians of one variant's runs.
struct Summary {
    rps: f64,
    min: f64,
    max: f64,
    cpu: f64,
    client: f64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        let rps: Vec<f64> = samples.iter().map(|x| x.rps).collect();
        Summary {
            min: rps.iter().copied().fold(f64::INFINITY, f64::min),
            max: rps.iter().copied().fold(0.0, f64::max),
            rps: median(rps),
            cpu: median(samples.iter().map(|x| x.cpu_us_per_req).collect()),
            client: median(samples.iter().map(|x| x.client_us_per_req).collect()),
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn stat(stats: &HashMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

fn check_counters(
    v: &Variant,
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    responses: u64,
) -> Result<(), String> {
    for c in &v.checks {
        match c {
            Check::EveryRequest(name) => {
                if !after.contains_key(name) {
                    return Err(format!("{}: Envoy has no counter {name}", v.name));
                }
                let moved = stat(after, name) - stat(before, name);
                // The run's first requests may miss a cache; nothing else may.
                if (moved as f64) < responses as f64 * 0.99 || moved > responses {
                    return Err(format!(
                        "{}: {name} moved by {moved} for {responses} responses",
                        v.name
                    ));
                }
            }
            Check::Never(name) => {
                let moved = stat(after, name) - stat(before, name);
                if moved != 0 {
                    return Err(format!("{}: {name} moved by {moved}, expected 0", v.name));
                }
            }
        }
    }
    Ok(())
}

/// Issue 14: Envoy's time from spawn to `/ready` (the harness polls it every
/// 50 ms) with one listener and no filter, the no-op wasm filter, or ours
/// with the JWT configuration of the `wasm_rs256_*` variants; `BENCH_STARTS`
/// starts of each (5), interleaved, medians in ms.
fn startup_ms(t: &Tokens, starts: usize) -> Result<Vec<(&'static str, f64)>, String> {
    let configs = [
        ("none", vec![]),
        ("wasm_noop", vec![floor_wasm_filter("noop")]),
        ("ai_auth", vec![wasm_jwt(t, None)]),
    ];
    let mut times = vec![Vec::new(); configs.len()];
    for round in 0..starts {
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let (name, filters) = &configs[i];
            let boot = bootstrap::bootstrap(
                vec![bootstrap::listener(
                    name,
                    filters.clone(),
                    vec![bootstrap::direct_response(200, "ok")],
                )],
                vec![],
            );
            let opts = Options {
                concurrency: 1,
                log_level: "warn",
                wasm_log_level: "warn",
            };
            let t0 = Instant::now();
            let envoy = Envoy::start_with(&boot, &opts)?;
            times[i].push(t0.elapsed().as_secs_f64() * 1e3);
            drop(envoy);
        }
    }
    Ok(configs
        .iter()
        .zip(times)
        .map(|((name, _), ts)| (*name, median(ts)))
        .collect())
}

fn run() -> Result<(), String> {
    let s = Settings::from_env()?;
    let wasm = envoy::filter_wasm()?;
    let wasm = wasm.canonicalize().unwrap_or(wasm);
    let wasm_size = std::fs::metadata(&wasm).map_err(|e| e.to_string())?.len();
    let t = tokens();
    let starts = env_number("BENCH_STARTS", 5.0)? as usize;
    eprintln!("bench: start-up, {starts} starts per configuration");
    let startup = startup_ms(&t, starts)?;
    let mut all = variants(&t);
    if let Some(only) = &s.only {
        for name in only {
            if !all.iter().any(|v| v.name == name) {
                let names: Vec<&str> = all.iter().map(|v| v.name).collect();
                return Err(format!("BENCH_ONLY: no variant {name:?} (have {names:?})"));
            }
        }
        all.retain(|v| v.name == "none" || only.iter().any(|n| n == v.name));
    }

    let listeners = all
        .iter()
        .map(|v| {
            let mut l = bootstrap::listener(
                v.name,
                v.filters.clone(),
                vec![bootstrap::direct_response(200, "ok")],
            );
            // Room for the 60 KB paths (Envoy's default is 60 KiB of headers).
            l["filter_chains"][0]["filters"][0]["typed_config"]["max_request_headers_kb"] =
                json!(96);
            l
        })
        .collect();
    let auth_service = start_auth_service()?;
    let mut clusters = vec![bootstrap::cluster("ext_authz", auth_service.port("authz"))];
    // Started only when a gRPC variant runs.
    let _grpc_auth_service = if all.iter().any(|v| v.name.contains("_grpc")) {
        let server = start_grpc_auth_service()?;
        clusters.push(bootstrap::h2_cluster("ext_authz_grpc", server.grpc_port));
        Some(server)
    } else {
        None
    };
    let boot = bootstrap::bootstrap(listeners, clusters);
    let envoy = Envoy::start_with(
        &boot,
        &Options {
            concurrency: s.concurrency,
            log_level: "warn",
            wasm_log_level: "warn",
        },
    )?;
    let version = http::get(envoy.admin_port, "/server_info", &[])
        .map(|r| r.json()["version"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into());
    let version = version.split('/').nth(1).unwrap_or(&version).to_string();

    // Before anything is timed: every variant answers 200 to its request,
    // and every filter refuses the request without its headers.
    for v in &all {
        let port = envoy.port(v.name);
        let mut owned = v.headers.clone();
        if let Some(d) = &v.dpop {
            owned.extend(d.headers(port));
        }
        let headers: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let method = if v.body.is_empty() { "GET" } else { "POST" };
        let r = http::request(port, method, v.path(), &headers, &v.body)?;
        if r.status != 200 {
            return Err(format!(
                "{}: preflight answered {}: {}",
                v.name,
                r.status,
                r.text()
            ));
        }
        if v.enforces {
            let r = http::request(port, method, v.path(), &[], &v.body)?;
            if (200..300).contains(&r.status) {
                return Err(format!(
                    "{}: answered {} without credentials: the filter is not enforcing",
                    v.name, r.status
                ));
            }
        }
    }

    let ticks = clock_ticks_per_sec();
    let pid = envoy.pid();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); all.len()];
    let n = all.len();
    eprintln!(
        "bench: {} variants x {} rounds x ({:?} warm-up + {:?}), {} connections",
        n, s.rounds, s.warmup, s.window, s.connections
    );
    for round in 0..s.rounds {
        let shift = round * n / s.rounds.max(1);
        for k in 0..n {
            let i = (k + shift) % n;
            let v = &all[i];
            let mut cfg = loadgen::Config::new(envoy.port(v.name), v.path());
            cfg.headers = v.headers.clone();
            cfg.body = v.body.clone();
            if let Some(d) = v.dpop.clone() {
                let (base, port) = (cfg.clone(), envoy.port(v.name));
                cfg.request_maker = Some(loadgen::RequestMaker(Arc::new(move || {
                    let mut c = base.clone();
                    c.headers.extend(d.headers(port));
                    c.request_bytes()
                })));
            }
            cfg.connections = s.connections;
            cfg.warmup = s.warmup;
            cfg.duration = s.window;
            let before = envoy.stats();
            let mut marks = Vec::new();
            let report = loadgen::run_measured(&cfg, || marks.push(Mark::now(pid)));
            let after = envoy.stats();
            if !report.is_clean() {
                return Err(format!(
                    "{} (round {}): {} non-2xx of {} responses (e.g. status {:?}), failures: {:?}\n--- Envoy log tail ---\n{}",
                    v.name,
                    round + 1,
                    report.total_errors,
                    report.total_requests,
                    report.sample_error_status,
                    report.failures,
                    envoy.log_tail(30)
                ));
            }
            check_counters(v, &before, &after, report.total_requests)?;
            let (m0, m1) = match marks.as_slice() {
                [Ok(a), Ok(b)] => (*a, *b),
                _ => return Err(format!("reading CPU times: {marks:?}")),
            };
            let per_req = |t: u64| t as f64 / ticks * 1e6 / report.requests as f64;
            let others = (m1.machine - m0.machine)
                .saturating_sub(m1.envoy - m0.envoy)
                .saturating_sub(m1.client - m0.client);
            let sample = Sample {
                rps: report.requests_per_sec(),
                cpu_us_per_req: per_req(m1.envoy - m0.envoy),
                client_us_per_req: per_req(m1.client - m0.client),
                other_cores: others as f64 / ticks / report.elapsed.as_secs_f64(),
            };
            eprintln!(
                "bench: round {}/{} {:<20} {:>9.0} req/s  {:>7.1} Envoy CPU us/req  {:>5.1} client CPU us/req  {:.2} other cores",
                round + 1,
                s.rounds,
                v.name,
                sample.rps,
                sample.cpu_us_per_req,
                sample.client_us_per_req,
                sample.other_cores
            );
            samples[i].push(sample);
        }
    }

    let med: Vec<Summary> = samples.iter().map(|ss| Summary::of(ss)).collect();
    let none = all.iter().position(|v| v.name == "none").unwrap();
    let (none_rps, none_cpu) = (med[none].rps, med[none].cpu);

    println!();
    println!(
        "ai-auth-filter benchmark: Envoy {version} (--concurrency {}, direct_response 200), {} keep-alive connections,",
        s.concurrency, s.connections
    );
    println!(
        "{} interleaved rounds of {:.1} s (+{:.1} s warm-up) per variant, medians. CPU: Envoy's utime+stime over the window;",
        s.rounds,
        s.window.as_secs_f64(),
        s.warmup.as_secs_f64()
    );
    println!("x none CPU: none's CPU per request over the variant's, the throughput ratio of a saturated");
    println!(
        "worker, steadier than req/s on a busy machine. client: the load generator's own CPU."
    );
    println!();
    println!(
        "{:<20} {:>8} {:>17} {:>7} {:>11} {:>13} {:>11} {:>14}",
        "variant",
        "req/s",
        "(min-max)",
        "x none",
        "CPU us/req",
        "extra us/req",
        "x none CPU",
        "client us/req"
    );
    for (i, v) in all.iter().enumerate() {
        let m = &med[i];
        println!(
            "{:<20} {:>8.0} {:>17} {:>6.2}x {:>11.1} {:>13} {:>10.2}x {:>14.1}",
            v.name,
            m.rps,
            format!("({:.0}-{:.0})", m.min, m.max),
            m.rps / none_rps,
            m.cpu,
            if i == none {
                "-".to_string()
            } else {
                format!("{:+.1}", m.cpu - none_cpu)
            },
            none_cpu / m.cpu,
            m.client
        );
    }
    let other: Vec<f64> = samples.iter().flatten().map(|x| x.other_cores).collect();
    let other_mean = other.iter().sum::<f64>() / other.len().max(1) as f64;
    let other_max = other.iter().copied().fold(0.0, f64::max);
    println!();
    println!(
        "other processes used {other_mean:.2} CPU cores on average during the windows (max {other_max:.2}) of {} available{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if other_mean > 0.1 {
            ": the machine was not quiet, figures are noisy"
        } else {
            ""
        }
    );
    println!();
    println!("filter .wasm: {wasm_size} bytes ({})", wasm.display());
    println!();
    println!("issue 14 (size and start-up; Envoy spawn to /ready, median of {starts} starts, polled every 50 ms):");
    let budget = 900_000;
    println!(
        "  .wasm {wasm_size} bytes, target <= {budget}: {}",
        if wasm_size <= budget {
            "met"
        } else {
            "NOT met"
        }
    );
    let none_ms = startup.first().map_or(f64::NAN, |s| s.1);
    for (name, ms) in &startup {
        println!(
            "  start-up {name:<10} {ms:>7.0} ms  {:.2}x none",
            ms / none_ms
        );
    }
    if let Some((_, ours)) = startup.iter().find(|s| s.0 == "ai_auth") {
        let r = ours / none_ms;
        println!(
            "  ai_auth start-up {r:.2}x none, target <= 1.30x: {}",
            if r <= 1.3 { "met" } else { "NOT met" }
        );
    }
    println!();
    println!("targets (issue 3):");
    let ratios = |name: &str| {
        all.iter()
            .position(|v| v.name == name)
            .map(|i| (med[i].rps / none_rps, none_cpu / med[i].cpu))
    };
    for alg in ["rs256", "es256", "eddsa"] {
        let name = format!("wasm_{alg}_hit");
        if let Some((r, c)) = ratios(&name) {
            println!(
                "  {name:<20} {r:.2}x none ({c:.2}x by CPU), target >= 0.85x: {}",
                verdict(r, c, 0.85)
            );
        }
    }
    for (name, reference) in [("native_jwt_nocache", 0.58), ("native_jwt_cache", 0.95)] {
        if let Some((r, c)) = ratios(name) {
            println!(
                "  {name:<20} {r:.2}x none ({c:.2}x by CPU), reference: about {reference:.2}x"
            );
        }
    }
    for alg in ["rs256", "es256", "eddsa"] {
        let name = format!("wasm_{alg}_miss");
        if let Some((r, c)) = ratios(&name) {
            println!(
                "  {name:<20} {r:.2}x none ({c:.2}x by CPU), cache miss: reported as measured"
            );
        }
    }
    if let Some(floor) = ratios("wasm_noop") {
        println!(
            "  {:<20} {:.2}x none ({:.2}x by CPU): a proxy-wasm filter that does nothing, the ceiling for any wasm variant",
            "wasm_noop", floor.0, floor.1
        );
    }
    println!();
    let cpu = |name: &str| all.iter().position(|v| v.name == name).map(|i| med[i].cpu);
    let extra = |name: &str, over: &str| Some(cpu(name)? - cpu(over)?);
    println!("targets (issue 4):");
    if let (Some(ours), Some(native)) = (ratios("wasm_ext_authz"), ratios("native_ext_authz")) {
        let (r, c) = (ours.0 / native.0, ours.1 / native.1);
        println!(
            "  {:<20} {r:.2}x native_ext_authz ({c:.2}x by CPU), target >= 0.95x: {}",
            "wasm_ext_authz",
            verdict(r, c, 0.95)
        );
    }
    if let Some((r, c)) = ratios("wasm_ext_authz_cache") {
        println!(
            "  {:<20} {r:.2}x none ({c:.2}x by CPU), target >= 0.85x: {}",
            "wasm_ext_authz_cache",
            verdict(r, c, 0.85)
        );
    }
    if let Some((r, c)) = ratios("native_ext_authz") {
        println!(
            "  {:<20} {r:.2}x none ({c:.2}x by CPU), reference: about 0.60x",
            "native_ext_authz"
        );
    }
    println!();
    println!("targets (issue 11, the passthrough over gRPC):");
    if let (Some(ours), Some(native)) = (
        ratios("wasm_ext_authz_grpc"),
        ratios("native_ext_authz_grpc"),
    ) {
        let (r, c) = (ours.0 / native.0, ours.1 / native.1);
        println!(
            "  {:<26} {r:.2}x native_ext_authz_grpc ({c:.2}x by CPU), target >= 0.95x: {}",
            "wasm_ext_authz_grpc",
            verdict(r, c, 0.95)
        );
    }
    for name in [
        "native_ext_authz_grpc",
        "wasm_grpc_callout_floor",
        "wasm_ext_authz_grpc",
        "wasm_ext_authz_grpc_cache",
    ] {
        if let (Some((r, c)), Some(e)) = (ratios(name), extra(name, "none")) {
            println!("  {name:<26} {r:.2}x none ({c:.2}x by CPU), {e:+.1} us/req over none");
        }
    }
    println!();
    println!("issue 16 (DPoP against a plain Bearer token, same RS256 token cached):");
    for (name, miss) in [
        ("wasm_dpop_es256", "wasm_es256_miss"),
        ("wasm_dpop_eddsa", "wasm_eddsa_miss"),
    ] {
        if let (Some((r, c)), Some(e)) = (ratios(name), extra(name, "wasm_rs256_hit")) {
            println!(
                "  {name:<20} {r:.2}x none ({c:.2}x by CPU), {e:+.1} us/req over wasm_rs256_hit"
            );
        }
        if let Some(m) = extra(miss, "wasm_rs256_hit") {
            println!(
                "  {:<20} (one signature check alone: {miss} {m:+.1} us/req over wasm_rs256_hit)",
                ""
            );
        }
    }
    println!();
    println!("issue 15 (API keys and the model check, extra Envoy CPU per request):");
    for (name, over) in [
        ("wasm_apikey_1", "none"),
        ("native_api_key_auth", "none"),
        ("wasm_apikey_10k", "none"),
        ("native_api_key_auth_10k", "none"),
        ("wasm_apikey_1_post_2k", "buffer_post_2k"),
        ("wasm_model_check_2k", "buffer_post_2k"),
        ("wasm_model_check_2k", "wasm_apikey_1_post_2k"),
    ] {
        if let Some(e) = extra(name, over) {
            println!("  {name:<24} {e:+.1} us/req over {over}");
        }
    }
    for (ours, native) in [
        ("wasm_apikey_1", "native_api_key_auth"),
        ("wasm_apikey_10k", "native_api_key_auth_10k"),
    ] {
        if let (Some(o), Some(n)) = (ratios(ours), ratios(native)) {
            println!(
                "  {ours:<24} {:.2}x {native} ({:.2}x by CPU)",
                o.0 / n.0,
                o.1 / n.1
            );
        }
    }
    println!();
    println!("issue 9.4 (route regex on a 60 KB path, extra Envoy CPU per request):");
    for name in ["wasm_regex_60k_path", "wasm_regex_hard_60k_path"] {
        if let Some(e) = extra(name, "wasm_prefix_60k_path") {
            println!("  {name:<24} {e:+.1} us/req over wasm_prefix_60k_path");
        }
    }
    println!();
    println!("issue 14 (signatures, hit path, in this run):");
    let ratio_line = |label: &str, a: &str, over_a: &str, b: &str, over_b: &str, target: f64| {
        if let (Some(x), Some(y)) = (extra(a, over_a), extra(b, over_b)) {
            let r = x / y;
            let met = if r <= target { "met" } else { "NOT met" };
            println!("  {label:<40} {x:+.1} / {y:+.1} us = {r:.2}x, target <= {target:.2}x: {met}");
        }
    };
    ratio_line(
        "es256 miss / rs256 miss",
        "wasm_es256_miss",
        "none",
        "wasm_rs256_miss",
        "none",
        1.5,
    );
    ratio_line(
        "rs256 miss / native rs256 (no cache)",
        "wasm_rs256_miss",
        "none",
        "native_jwt_nocache",
        "none",
        4.0,
    );
    for alg in ["es256", "eddsa"] {
        if let (Some(x), Some(y)) = (
            extra(&format!("wasm_{alg}_miss"), "none"),
            extra(&format!("native_jwt_{alg}_nocache"), "none"),
        ) {
            println!(
                "  {:<40} {x:+.1} / {y:+.1} us = {:.2}x (reported)",
                format!("{alg} miss / native {alg} (no cache)"),
                x / y
            );
        }
    }
    for (name, target) in [("wasm_rs256_hit", 3.0), ("wasm_no_jwt_required", 1.0)] {
        if let Some(e) = extra(name, "wasm_noop") {
            let met = if e <= target { "met" } else { "NOT met" };
            println!("  {name:<40} {e:+.1} us over wasm_noop, target <= +{target:.0}: {met}");
        }
    }
    if let Some(e) = extra("wasm_rs256_shared_hit", "wasm_noop") {
        println!(
            "  {:<40} {e:+.1} us over wasm_noop (reported)",
            "wasm_rs256_shared_hit"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
