//! Opaque tokens by RFC 7662 introspection in the real Envoy, against a
//! scripted Keycloak-shaped introspection endpoint that counts its calls:
//! active tokens become identities (claim headers), answers are cached
//! across worker VMs, inactive and expired tokens are 401, an endpoint
//! that is down, slow or misbehaving is 503 (or as configured), never a
//! VM failure, and service comes back with the endpoint.

use crate::support::*;
use ai_auth_testkit::http::Action;
use ai_auth_testkit::misbehaving::{self, vm_failure_lines, Misbehavior};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PATH: &str = "/realms/ai/protocol/openid-connect/token/introspect";
const DISCOVERY: &str = "/realms/ai/.well-known/openid-configuration";
const CLIENT_ID: &str = "llm-gateway";
const CLIENT_SECRET: &str = "introspection-s3cret-5f2a";
const ACTIVE: &str = "kc-opaque-active-8b1e0c3d";
const ACTIVE_2: &str = "kc-opaque-active-second-77";
const INACTIVE: &str = "kc-opaque-revoked-2c4f";
const EXPIRED: &str = "kc-opaque-expired-9d0a";
/// The callout timeout the tests configure.
const TIMEOUT: Duration = Duration::from_millis(500);

/// How the endpoint behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Status(u16),
    Close,
    Slow,
    Misbehave(Misbehavior),
}

/// A Keycloak-shaped introspection endpoint: checks the gateway's Basic
/// client authentication, reads the form, answers as Keycloak 26 does.
struct Idp {
    server: Server,
    mode: Arc<Mutex<Mode>>,
}

fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn keycloak_answer(token: &str) -> Value {
    let now = now();
    let active = |sub: &str, user: &str, exp: u64| {
        json!({
            "exp": exp, "iat": now - 10, "jti": "onrtac:1b2c", "iss": ISS, "aud": [AUD, "account"],
            "sub": sub, "typ": "Bearer", "azp": "chat-app", "sid": "5e1d", "acr": "1",
            "realm_access": {"roles": ["default-roles-ai", "llm-user"]},
            "resource_access": {"account": {"roles": ["manage-account"]}},
            "scope": "openid profile chat", "email_verified": true,
            "client_id": "chat-app", "username": user, "preferred_username": user,
            "token_type": "Bearer", "active": true
        })
    };
    match token {
        ACTIVE => active("0b4c2c36-a7c5-4f4b", "alice", now + 300),
        ACTIVE_2 => active("7d1e9a40-55b2-4c1d", "bob", now + 300),
        // Keycloak answers `active: true` only for live tokens; an IdP
        // with a late clock may still say so for an expired one.
        EXPIRED => active("9f9f", "carol", now - 600),
        _ => json!({"active": false}),
    }
}

impl Idp {
    fn start() -> Idp {
        let mode = Arc::new(Mutex::new(Mode::Serve));
        let m = Arc::clone(&mode);
        let server = Server::start(move |r| {
            let good = || {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
                if r.header("authorization") != Some(format!("Basic {basic}").as_str()) {
                    return Action::json(401, &json!({"error": "invalid_client"}));
                }
                let f = form(&r.body);
                assert_eq!(
                    f.get("token_type_hint").map(String::as_str),
                    Some("access_token")
                );
                Action::json(
                    200,
                    &keycloak_answer(f.get("token").map_or("", String::as_str)),
                )
            };
            if r.path == DISCOVERY && r.method == "GET" {
                return Action::json(
                    200,
                    &json!({"issuer": ISS, "introspection_endpoint": format!("http://idp.test{PATH}"),
                            "jwks_uri": "http://idp.test/realms/ai/protocol/openid-connect/certs"}),
                );
            }
            if r.path != PATH || r.method != "POST" {
                return Action::status(404);
            }
            match *m.lock().unwrap() {
                Mode::Serve => good(),
                Mode::Status(s) => Action::json(s, &json!({"error": "unavailable"})),
                Mode::Close => Action::Close,
                Mode::Slow => Action::Delay(TIMEOUT * 3, Box::new(good())),
                Mode::Misbehave(kind) => {
                    let body = keycloak_answer(ACTIVE).to_string();
                    Misbehavior::action(kind, TIMEOUT, body.as_bytes())
                }
            }
        });
        Idp { server, mode }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == PATH)
            .count()
    }

    fn discoveries(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == DISCOVERY)
            .count()
    }

    fn calls_for(&self, token: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| form(&r.body).get("token").map(String::as_str) == Some(token))
            .count()
    }
}

fn provider(extra: Value) -> Value {
    let mut intro = json!({
        "endpoint": {"uri": format!("http://idp.test{PATH}"), "cluster": "idp", "timeout": "0.5s"},
        "client_id": CLIENT_ID,
        "client_secret": {"environment_variable": "INTROSPECTION_SECRET"},
        "cache": {"inactive_ttl": "2s"}
    });
    for (k, v) in extra.as_object().unwrap() {
        intro[k] = v.clone();
    }
    json!({
        "issuer": ISS, "audiences": [AUD], "introspection": intro,
        "claim_to_headers": [{"header_name": "x-user", "claim_name": "preferred_username"},
                             {"header_name": "x-roles", "claim_name": "realm_access.roles"}]
    })
}

fn plugin(extra: Value) -> Value {
    json!({"jwt_authn": {
        "providers": {"opaque": provider(extra)},
        "rules": [
            {"match": {"prefix": "/admin"}, "requires": {"provider_name": "opaque"},
             "claim_rules": [{"claim": "scope", "contains": "admin"}]},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "opaque"}}
        ]
    }})
}

fn start(idp: &Idp, listeners: Vec<(&str, Value)>, concurrency: u32) -> (Envoy, Server) {
    let gw = Gateway::start_listeners(
        wasm_listeners(listeners, &[("INTROSPECTION_SECRET", CLIENT_SECRET)]),
        vec![bootstrap::cluster("idp", idp.server.port)],
        &workers(concurrency),
    );
    (gw.envoy, gw.upstream)
}

fn get(envoy: &Envoy, listener: &str, token: &str) -> Response {
    http::get(
        envoy.port(listener),
        "/v1/models",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user", "forged"),
        ],
    )
    .unwrap()
}

#[test]
fn an_active_opaque_token_is_an_identity_and_its_answer_is_shared_by_the_worker_vms() {
    let idp = Idp::start();
    let (mut envoy, upstream) = start(&idp, vec![("main", plugin(json!({})))], 2);
    let r = get(&envoy, "main", ACTIVE);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.last().unwrap();
    assert_eq!(
        seen.header("x-user"),
        Some("alice"),
        "the answer's claim, not the client's"
    );
    assert_eq!(seen.header("x-roles"), Some("default-roles-ai,llm-user"));
    assert_eq!(seen.header("authorization"), None, "the token is stripped");
    assert_eq!(idp.calls_for(ACTIVE), 1);
    // Many more requests on new connections (spread over both workers): the
    // shared cache answers, the endpoint is not asked again.
    for _ in 0..30 {
        let r = get(&envoy, "main", ACTIVE);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(idp.calls_for(ACTIVE), 1, "answers are cached across VMs");
    assert!(envoy.counter("jwt_authn.introspection_cache_hit") >= 30);
    assert_eq!(envoy.counter("jwt_authn.introspection_active"), 1);
    // Another token is another call; the first stays cached.
    assert_eq!(get(&envoy, "main", ACTIVE_2).status, 200);
    assert_eq!(upstream.last().unwrap().header("x-user"), Some("bob"));
    assert_eq!(idp.calls(), 2);
    // Claim rules see the answer's `scope`.
    let r = http::get(
        envoy.port("main"),
        "/admin/users",
        &[("authorization", &format!("Bearer {ACTIVE}"))],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let log = envoy.stop();
    for secret in [ACTIVE, ACTIVE_2, CLIENT_SECRET] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn inactive_and_expired_tokens_are_401_and_inactive_answers_are_remembered_briefly() {
    let idp = Idp::start();
    let (envoy, upstream) = start(&idp, vec![("main", plugin(json!({})))], 1);
    let r = get(&envoy, "main", INACTIVE);
    assert_eq!(r.status, 401, "{}", r.text());
    let challenge = r.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(error_of(&r).1.contains("not active"), "{}", r.text());
    assert_eq!(get(&envoy, "main", INACTIVE).status, 401);
    assert_eq!(idp.calls_for(INACTIVE), 1, "the inactive answer is cached");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(get(&envoy, "main", INACTIVE).status, 401);
    assert_eq!(idp.calls_for(INACTIVE), 2, "for inactive_ttl (2 s) only");
    // `active: true` but past its `exp` (and the clock skew): refused.
    let r = get(&envoy, "main", EXPIRED);
    assert_eq!(r.status, 401);
    assert!(error_of(&r).1.contains("expired"), "{}", r.text());
    // No token: 401, no call.
    let before = idp.calls();
    let r = http::get(envoy.port("main"), "/v1/models", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(idp.calls(), before);
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    assert_eq!(envoy.counter("jwt_authn.introspection_inactive"), 2);
}

#[test]
fn an_endpoint_down_or_slow_is_503_until_it_recovers_and_401_where_configured() {
    let idp = Idp::start();
    let (mut envoy, _upstream) = start(
        &idp,
        vec![
            ("main", plugin(json!({}))),
            ("strict", plugin(json!({"status_on_error": 401}))),
        ],
        1,
    );
    for (mode, what) in [
        (Mode::Status(500), "500"),
        (Mode::Status(401), "a 401 to the gateway"),
        (Mode::Close, "connection closed"),
        (Mode::Slow, "slower than the timeout"),
    ] {
        idp.set(mode);
        let before = idp.calls();
        let r = get(&envoy, "main", ACTIVE);
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"), "{what}");
        assert_eq!(r.header("www-authenticate"), None, "{what}");
        let r = get(&envoy, "main", ACTIVE);
        assert_eq!(r.status, 503, "{what}");
        assert_eq!(idp.calls() - before, 2, "{what}: failures are never cached");
        let r = get(&envoy, "strict", ACTIVE);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    // The endpoint is back: the next request is served.
    idp.set(Mode::Serve);
    let r = get(&envoy, "main", ACTIVE);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(envoy.counter("jwt_authn.introspection_failed") >= 12);
    let log = envoy.stop();
    assert!(
        log.contains("introspection for provider 0 failed"),
        "the failure is logged"
    );
    assert!(
        vm_failure_lines(&log).is_empty(),
        "{:?}",
        vm_failure_lines(&log)
    );
}

#[test]
fn a_misbehaving_endpoint_never_takes_the_vm_down() {
    let idp = Idp::start();
    let (mut envoy, _upstream) = start(&idp, vec![("main", plugin(json!({})))], 1);
    for kind in misbehaving::ALL {
        idp.set(Mode::Misbehave(kind));
        let r = get(&envoy, "main", ACTIVE);
        assert_eq!(r.status, 503, "{}: {}", kind.name(), r.text());
        // The same worker VM goes on serving.
        idp.set(Mode::Serve);
        let r = get(&envoy, "main", ACTIVE_2);
        assert_eq!(r.status, 200, "after {}: {}", kind.name(), r.text());
    }
    let log = envoy.stop();
    assert!(
        vm_failure_lines(&log).is_empty(),
        "{:?}",
        vm_failure_lines(&log)
    );
    // Remote text is quoted and escaped: no line of the log starts with
    // what the endpoint sent.
    assert!(!log.lines().any(|l| l.starts_with("{\"exp\"")));
}

#[test]
fn the_endpoint_comes_from_oidc_discovery_read_once_for_every_worker() {
    let idp = Idp::start();
    let mut p = plugin(json!({}));
    let intro = &mut p["jwt_authn"]["providers"]["opaque"]["introspection"];
    intro.as_object_mut().unwrap().remove("endpoint");
    intro["discovery"] =
        json!({"uri": format!("http://idp.test{DISCOVERY}"), "cluster": "idp", "timeout": "0.5s"});
    let (envoy, upstream) = start(&idp, vec![("main", p)], 2);
    let r = get(&envoy, "main", ACTIVE);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().unwrap().header("x-user"), Some("alice"));
    assert_eq!((idp.discoveries(), idp.calls()), (1, 1));
    // Other tokens on new connections (both workers): the endpoint is
    // shared, the document is not read again.
    for _ in 0..10 {
        assert_eq!(get(&envoy, "main", ACTIVE_2).status, 200);
        assert_eq!(get(&envoy, "main", INACTIVE).status, 401);
    }
    assert_eq!(idp.discoveries(), 1);
    assert_eq!(idp.calls_for(ACTIVE_2), 1);
}
