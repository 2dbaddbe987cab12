//! Introspection: configuration, the request sent, reading answers
//! (Keycloak's shape), the shared cache, and the flow around the callout.

use super::*;
use crate::callout::{CalloutResponse, MemoryStore};
use crate::config::FilterConfig;
use crate::flow::{self, Decision, InFlight, Step, WorkerState};
use crate::request::RequestView;
use crate::response::HeaderOp;
use crate::stats::Counter;
use ai_auth_testkit::keys::{jwks, TestKey};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example/realms/ai";
const TOKEN: &str = "opaque-Zm9vYmFy.0123456789";

fn provider(extra: Value) -> Value {
    let mut p = json!({
        "issuer": ISS,
        "introspection": {
            "endpoint": {"uri": "http://idp.example/realms/ai/protocol/openid-connect/token/introspect",
                         "cluster": "idp", "timeout": "1s"},
            "client_id": "gateway",
            "client_secret": {"environment_variable": "INTROSPECTION_SECRET"}
        },
        "claim_to_headers": [{"header_name": "x-user", "claim_name": "preferred_username"},
                             {"header_name": "x-roles", "claim_name": "realm_access.roles"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "introspection" {
            for (ik, iv) in v.as_object().unwrap() {
                p["introspection"][ik] = iv.clone();
            }
        } else {
            p[k] = v.clone();
        }
    }
    p
}

fn compile_with(jwt_authn: Value) -> Result<FilterConfig, crate::vocab::ConfigError> {
    let env = |name: &str| (name == "INTROSPECTION_SECRET").then(|| "s3cret".to_string());
    let bytes = serde_json::to_vec(&json!({ "jwt_authn": jwt_authn })).unwrap();
    FilterConfig::from_json(&bytes, &env)
}

fn config(extra: Value) -> FilterConfig {
    compile_with(json!({
        "providers": {"idp": provider(extra)},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn error_path(jwt_authn: Value) -> String {
    match compile_with(jwt_authn) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{} {}", e.path, e.reason),
    }
}

/// Keycloak 26's answer for an active access token, as it comes.
fn keycloak_active(exp: u64) -> Value {
    json!({
        "exp": exp, "iat": NOW - 60, "jti": "onrtac:5f0c", "iss": ISS,
        "aud": "account", "sub": "0b4c2c36-a7c5-4f4b-9e40-4c5e0a9c1d11", "typ": "Bearer",
        "azp": "chat-app", "sid": "8d3b", "acr": "1",
        "allowed-origins": ["http://localhost:3000"],
        "realm_access": {"roles": ["default-roles-ai", "llm-user"]},
        "resource_access": {"account": {"roles": ["manage-account"]}},
        "scope": "openid profile chat", "email_verified": false,
        "client_id": "chat-app", "username": "alice", "preferred_username": "alice",
        "token_type": "Bearer", "active": true
    })
}

fn reply(status: u16, body: &Value) -> CalloutResponse {
    CalloutResponse {
        status: Some(status),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

fn req(token: &str) -> RequestView {
    RequestView::new(vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
        (":authority".into(), "gw.example".into()),
        ("authorization".into(), format!("Bearer {token}")),
        ("x-user".into(), "forged".into()),
    ])
}

struct Harness {
    cfg: FilterConfig,
    state: WorkerState,
    store: MemoryStore,
}

impl Harness {
    fn new(cfg: FilterConfig) -> Self {
        let state = WorkerState::new(&cfg);
        Harness {
            cfg,
            state,
            store: MemoryStore::default(),
        }
    }

    fn headers(&mut self, r: RequestView, now: u64) -> (Decision, Option<InFlight>) {
        flow::on_request_headers(&self.cfg, &mut self.state, &self.store, r, now)
    }

    fn answer(&mut self, flight: InFlight, reply: CalloutResponse, now: u64) -> Decision {
        let (d, next) =
            flow::on_callout_response(&self.cfg, &mut self.state, &self.store, flight, reply, now);
        assert!(next.is_none(), "{:?}", d.step);
        d
    }

    /// A request for `token` at `now`; `reply` answers the introspection
    /// call if one is made. Returns the final decision and whether a call was made.
    fn request(&mut self, token: &str, now: u64, reply: &CalloutResponse) -> (Decision, bool) {
        let (d, flight) = self.headers(req(token), now);
        match (&d.step, flight) {
            (Step::Callout(call), Some(flight)) => {
                assert_eq!(call.cluster, "idp");
                let counters = d.counters.clone();
                let mut last = self.answer(flight, reply.clone(), now);
                last.counters.extend(counters);
                (last, true)
            }
            (_, None) => (d, false),
            (step, Some(_)) => panic!("unexpected {step:?}"),
        }
    }
}

fn continued(d: &Decision) -> &[HeaderOp] {
    match &d.step {
        Step::Continue(ops) => ops,
        other => panic!("not continued: {other:?}"),
    }
}

fn replied(d: &Decision) -> (u16, String, Option<String>) {
    match &d.step {
        Step::Reply(r) => (
            r.status,
            String::from_utf8_lossy(&r.body).into_owned(),
            r.headers
                .iter()
                .find(|(k, _)| k == "www-authenticate")
                .map(|(_, v)| v.clone()),
        ),
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn the_request_is_a_form_post_with_the_clients_authentication() {
    let cfg = config(json!({}));
    let p = cfg.jwt_authn.as_ref().unwrap().providers[0]
        .introspection()
        .unwrap();
    let Endpoint::Configured(endpoint) = &p.introspection.endpoint else {
        panic!()
    };
    let call = p.introspection.request("a token/+=", endpoint);
    let header = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(
        header(":path"),
        Some("/realms/ai/protocol/openid-connect/token/introspect")
    );
    assert_eq!(header(":authority"), Some("idp.example"));
    assert_eq!(
        header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("gateway:s3cret");
    assert_eq!(
        header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        String::from_utf8(call.body.clone()).unwrap(),
        "token=a+token%2F%2B%3D&token_type_hint=access_token"
    );
    assert_eq!(call.timeout, Duration::from_secs(1));
    // client_secret_post: both in the form, no Authorization.
    let cfg = config(json!({"introspection": {"client_auth": "client_secret_post"}}));
    let p = cfg.jwt_authn.as_ref().unwrap().providers[0]
        .introspection()
        .unwrap();
    let Endpoint::Configured(endpoint) = &p.introspection.endpoint else {
        panic!()
    };
    let call = p.introspection.request("t", endpoint);
    assert!(call.headers.iter().all(|(k, _)| k != "authorization"));
    assert_eq!(
        String::from_utf8(call.body.clone()).unwrap(),
        "token=t&token_type_hint=access_token&client_id=gateway&client_secret=s3cret"
    );
    assert!(
        !format!("{p:?}").contains("s3cret"),
        "the secret is redacted"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_field() {
    let base = |p: Value| {
        json!({"providers": {"idp": p},
               "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]})
    };
    let cases = [
        (
            provider(json!({"introspection": {"endpoint": {"uri": "ftp://x", "cluster": "idp"}}})),
            "jwt_authn.providers.idp.introspection.endpoint.uri",
        ),
        (
            provider(json!({"introspection": {"client_secret": {"environment_variable": "NOPE"}}})),
            "jwt_authn.providers.idp.introspection.client_secret.environment_variable",
        ),
        (
            provider(
                json!({"introspection": {"discovery": {"uri": "http://idp/.well-known/openid-configuration", "cluster": "idp"}}}),
            ),
            "jwt_authn.providers.idp.introspection.endpoint",
        ),
        (
            provider(json!({"introspection": {"client_id": ""}})),
            "jwt_authn.providers.idp.introspection.client_id",
        ),
        (
            provider(json!({"introspection": {"status_on_error": 200}})),
            "jwt_authn.providers.idp.introspection.status_on_error",
        ),
        (
            provider(json!({"introspection": {"cache": {"max_entries": 0}}})),
            "jwt_authn.providers.idp.introspection.cache.max_entries",
        ),
        (
            provider(json!({"introspection": {"max_response_bytes": 0}})),
            "jwt_authn.providers.idp.introspection.max_response_bytes",
        ),
        (
            provider(json!({"local_jwks": {"inline_string": "{\"keys\":[]}"}})),
            "jwt_authn.providers.idp.local_jwks",
        ),
        (
            provider(json!({"forward_payload_header": "x-payload"})),
            "jwt_authn.providers.idp.forward_payload_header",
        ),
        (
            provider(json!({"api_keys": []})),
            "jwt_authn.providers.idp.introspection",
        ),
    ];
    for (p, path) in cases {
        let e = error_path(base(p));
        assert!(e.starts_with(&format!("{path} ")), "{path}: {e}");
    }
    let e = error_path(base(provider(
        json!({"introspection": {"client_auth": "private_key_jwt"}}),
    )));
    assert!(e.contains("client_auth"), "{e}");
}

#[test]
fn answers_are_read_as_keycloak_writes_them() {
    let cfg = config(json!({}));
    let p = &cfg.jwt_authn.as_ref().unwrap().providers[0]
        .introspection()
        .unwrap()
        .introspection;
    let Answer::Active(claims) = p.answer(&reply(200, &keycloak_active(NOW + 300))) else {
        panic!()
    };
    assert_eq!(claims.aud, ["account"]);
    assert_eq!(claims.iss.as_deref(), Some(ISS));
    assert_eq!(claims.exp, Some(NOW + 300));
    assert_eq!(claims.payload["scope"], "openid profile chat");
    assert_eq!(
        p.answer(&reply(200, &json!({"active": false}))),
        Answer::Inactive
    );
    let failed = |r: CalloutResponse| match p.answer(&r) {
        Answer::Failed(why) => why,
        other => panic!("{other:?}"),
    };
    assert!(failed(CalloutResponse::default()).contains("no valid answer"));
    let why = failed(reply(401, &json!({"error": "invalid_client\nforged line"})));
    assert!(why.contains("401") && !why.contains('\n'), "{why}");
    assert!(failed(reply(200, &json!({"active": "true"}))).contains("not a boolean"));
    assert!(failed(reply(200, &json!({"sub": "x"}))).contains("no `active`"));
    assert!(failed(reply(200, &json!(["active"]))).contains("not a JSON object"));
    let mut bad_aud = keycloak_active(NOW + 300);
    bad_aud["aud"] = json!(7);
    assert!(failed(reply(200, &bad_aud)).contains("aud"));
    let huge = json!({"active": true, "pad": "x".repeat(70 * 1024)});
    assert!(failed(reply(200, &huge)).contains("max_response_bytes"));
    let text = CalloutResponse {
        status: Some(200),
        headers: vec![],
        body: format!("<html>{}</html>", "\n".repeat(5000)).into_bytes(),
    };
    let why = failed(text);
    assert!(why.len() < 200 && !why.contains('\n'), "{why}");
}

#[test]
fn an_active_token_is_an_identity_and_its_answer_is_cached() {
    let mut h = Harness::new(config(json!({"audiences": ["account"]})));
    let active = reply(200, &keycloak_active(NOW + 300));
    let (d, called) = h.request(TOKEN, NOW, &active);
    assert!(called);
    let ops = continued(&d);
    assert!(ops.contains(&HeaderOp::remove("x-user")), "{ops:?}");
    assert!(ops.contains(&HeaderOp::set("x-user", "alice")), "{ops:?}");
    assert!(ops.contains(&HeaderOp::set("x-roles", "default-roles-ai,llm-user")));
    assert!(ops.contains(&HeaderOp::remove("authorization")));
    assert!(d.counters.contains(&Counter::IntrospectionActive));
    assert!(d
        .properties
        .iter()
        .any(|(k, v)| *k == crate::jwt::CALLER_PROPERTY && v.starts_with("0b4c2c36")));
    // The shared cache answers the next requests, in any VM: no call.
    let mut other_vm = WorkerState::new(&h.cfg);
    let (d, flight) =
        flow::on_request_headers(&h.cfg, &mut other_vm, &h.store, req(TOKEN), NOW + 5);
    assert!(flight.is_none());
    assert!(continued(&d).contains(&HeaderOp::set("x-user", "alice")));
    assert!(d.counters.contains(&Counter::IntrospectionCacheHit));
    // The cache holds no token.
    for (key, (value, _)) in h.store.0.borrow().iter() {
        let text = String::from_utf8_lossy(value);
        assert!(!key.contains(TOKEN) && !text.contains(TOKEN));
    }
}

#[test]
fn active_answers_live_until_exp_and_at_most_max_ttl() {
    let mut h = Harness::new(config(
        json!({"introspection": {"cache": {"max_ttl": "60s"}}}),
    ));
    let long = reply(200, &keycloak_active(NOW + 3600));
    assert!(h.request(TOKEN, NOW, &long).1);
    assert!(!h.request(TOKEN, NOW + 59, &long).1, "within max_ttl");
    assert!(h.request(TOKEN, NOW + 60, &long).1, "max_ttl is over");
    // A token expiring in 20 s is cached 20 s, not 60.
    let short = reply(200, &keycloak_active(NOW + 1020));
    let other = "another-opaque-token";
    assert!(h.request(other, NOW + 1000, &short).1);
    assert!(!h.request(other, NOW + 1019, &short).1);
    let (d, called) = h.request(other, NOW + 1020, &short);
    assert!(called, "past exp: asked again");
    continued(&d); // within the clock skew of 60 s
    let (d, _) = h.request(other, NOW + 1081, &short);
    let (status, body, challenge) = replied(&d);
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    assert!(challenge.unwrap().contains("invalid_token"));
}

#[test]
fn inactive_tokens_are_401_and_remembered_briefly() {
    let mut h = Harness::new(config(
        json!({"introspection": {"cache": {"inactive_ttl": "5s"}}}),
    ));
    let inactive = reply(200, &json!({"active": false}));
    let (d, called) = h.request(TOKEN, NOW, &inactive);
    assert!(called);
    let (status, body, challenge) = replied(&d);
    assert_eq!(status, 401);
    assert!(body.contains("not active"), "{body}");
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    assert!(d.counters.contains(&Counter::IntrospectionInactive));
    assert!(d.counters.contains(&Counter::JwtDenied));
    let (d, called) = h.request(TOKEN, NOW + 4, &inactive);
    assert!(!called, "remembered");
    assert_eq!(replied(&d).0, 401);
    assert!(h.request(TOKEN, NOW + 5, &inactive).1, "forgotten");
}

#[test]
fn endpoint_failures_are_503_never_cached_or_as_configured() {
    let mut h = Harness::new(config(json!({})));
    for failure in [
        CalloutResponse::default(),
        reply(500, &json!({"error": "down"})),
        reply(401, &json!({"error": "invalid_client"})),
        reply(200, &json!({"no": "active"})),
    ] {
        let (d, called) = h.request(TOKEN, NOW, &failure);
        assert!(called, "failures are not cached");
        let Step::Reply(r) = &d.step else { panic!() };
        assert_eq!(r.status, 503);
        assert!(r.headers.contains(&("retry-after".into(), "1".into())));
        assert!(r.headers.iter().all(|(k, _)| k != "www-authenticate"));
        assert!(d.counters.contains(&Counter::IntrospectionFailed));
    }
    // Recovery: the next answer is used at once.
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    continued(&d);
    let mut h = Harness::new(config(json!({"introspection": {"status_on_error": 401}})));
    let (d, _) = h.request(TOKEN, NOW, &CalloutResponse::default());
    let (status, _, challenge) = replied(&d);
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("invalid_token"));
    // A call the host cannot even send is a failure too.
    let mut h = Harness::new(config(json!({})));
    let (_, flight) = h.headers(req(TOKEN), NOW);
    let (d, next) = flow::on_callout_failed(&h.cfg, &mut h.state, &h.store, flight.unwrap(), NOW);
    assert!(next.is_none());
    assert_eq!(replied(&d).0, 503);
}

#[test]
fn issuer_audience_and_time_claims_are_checked_as_for_a_jwt() {
    let mut h = Harness::new(config(json!({"audiences": ["llm-gateway"]})));
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    assert_eq!(replied(&d).0, 403, "aud is account");
    let mut other_iss = keycloak_active(NOW + 300);
    other_iss["iss"] = json!("https://evil.example");
    let mut h = Harness::new(config(json!({})));
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &other_iss));
    assert!(replied(&d).1.contains("issuer"));
    let mut later = keycloak_active(NOW + 300);
    later["nbf"] = json!(NOW + 3600);
    let mut h = Harness::new(config(json!({})));
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &later));
    assert!(replied(&d).1.contains("not yet valid"));
    let mut no_exp = keycloak_active(0);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut h = Harness::new(config(json!({"require_expiration": true})));
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &no_exp));
    assert_eq!(replied(&d).0, 401);
    // Per-rule audiences apply too.
    let cfg = compile_with(json!({
        "providers": {"idp": provider(json!({}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_and_audiences":
            {"provider_name": "idp", "audiences": ["account"]}}}]
    }))
    .unwrap();
    let mut h = Harness::new(cfg);
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    continued(&d);
}

#[test]
fn claim_rules_see_the_answers_scope() {
    let cfg = compile_with(json!({
        "providers": {"idp": provider(json!({}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"},
                   "claim_rules": [{"claim": "scope", "contains": "admin"}]}]
    }))
    .unwrap();
    let mut h = Harness::new(cfg);
    let (d, _) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    let (status, _, challenge) = replied(&d);
    assert_eq!(status, 403);
    assert!(challenge.unwrap().contains("insufficient_scope"));
}

#[test]
fn a_valid_jwt_in_requires_any_needs_no_call_and_a_jwt_like_opaque_token_is_asked() {
    let key = TestKey::ed25519("k1");
    let cfg = compile_with(json!({
        "providers": {
            "jwt": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&key]).to_string()}},
            "idp": provider(json!({}))
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "jwt"}, {"provider_name": "idp"}]}}}]
    }))
    .unwrap();
    let mut h = Harness::new(cfg);
    let jwt = key.sign(&json!({"iss": ISS, "sub": "bob", "exp": NOW + 60}));
    let (d, called) = h.request(&jwt, NOW, &CalloutResponse::default());
    assert!(!called);
    continued(&d);
    let (d, called) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    assert!(called);
    assert!(continued(&d).contains(&HeaderOp::set("x-user", "alice")));
    // No token at all: 401 without a call.
    let (d, flight) = h.headers(
        RequestView::new(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/".into()),
            (":authority".into(), "gw".into()),
        ]),
        NOW,
    );
    assert!(flight.is_none());
    assert_eq!(replied(&d).0, 401);
}

#[test]
fn the_cache_is_bounded_by_max_entries() {
    let mut h = Harness::new(config(
        json!({"introspection": {"cache": {"max_entries": 4}}}),
    ));
    let active = reply(200, &keycloak_active(NOW + 300));
    for i in 0..200 {
        h.request(&format!("token-{i}"), NOW, &active);
    }
    let entries = h
        .store
        .0
        .borrow()
        .keys()
        .filter(|k| k.starts_with("ai_auth.introspection."))
        .count();
    assert!(entries <= 4, "{entries}");
}

#[test]
fn oversized_tokens_are_refused_without_a_call() {
    let cfg = compile_with(json!({
        "max_token_size": 64,
        "providers": {"idp": provider(json!({}))},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }))
    .unwrap();
    let mut h = Harness::new(cfg);
    let (d, called) = h.request(&"x".repeat(65), NOW, &CalloutResponse::default());
    assert!(!called);
    assert_eq!(replied(&d).0, 401);
}

#[test]
fn the_answers_claims_choose_the_upstream_key() {
    let env = |name: &str| (name == "INTROSPECTION_SECRET").then(|| "s3cret".to_string());
    let bytes = serde_json::to_vec(&json!({
        "jwt_authn": {
            "providers": {"idp": provider(json!({}))},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
        },
        "upstream_credentials": {
            "backends": {"openai": {"scheme": "openai", "secret_by_claim": {"claim": "azp",
                "secrets": {"chat-app": {"inline_string": "sk-up-chat"}}}}},
            "routes": [{"match": {"prefix": "/"}, "backend": "openai"}]
        }
    }))
    .unwrap();
    let mut h = Harness::new(FilterConfig::from_json(&bytes, &env).unwrap());
    let (d, called) = h.request(TOKEN, NOW, &reply(200, &keycloak_active(NOW + 300)));
    assert!(called);
    let ops = continued(&d);
    assert!(
        ops.iter()
            .any(|op| matches!(op, HeaderOp::SetSecret(name, s)
            if name == "authorization" && s.expose() == "Bearer sk-up-chat")),
        "{ops:?}"
    );
}

#[test]
fn a_cnf_in_the_answer_binds_the_token_as_a_jwts_does() {
    let der = b"client certificate A";
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    let mut bound = keycloak_active(NOW + 300);
    bound["cnf"] = json!({"x5t#S256": x5t});
    let with_cert = |h: &mut Harness, cert: Option<&str>| {
        let mut r = req(TOKEN);
        r.set_peer_certificate_sha256(cert.map(str::to_string));
        let (d, flight) = h.headers(r, NOW);
        match flight {
            Some(f) => h.answer(f, reply(200, &bound), NOW),
            None => d,
        }
    };
    let mut h = Harness::new(config(json!({"certificate_bound_tokens": {}})));
    continued(&with_cert(&mut h, Some(&hex)));
    let d = with_cert(&mut h, Some(&"ab".repeat(32)));
    assert_eq!(replied(&d).0, 401);
    let d = with_cert(&mut h, None);
    assert_eq!(replied(&d).0, 401);
    // A provider that does not check the binding refuses a bound token.
    let mut h = Harness::new(config(json!({})));
    let d = with_cert(&mut h, Some(&hex));
    assert_eq!(replied(&d).0, 401, "{:?}", d.step);
}

/// Keycloak's discovery document (the members that matter here).
fn discovery_doc(issuer: &str) -> Value {
    json!({"issuer": issuer,
           "token_endpoint": "https://kc.example/realms/ai/protocol/openid-connect/token",
           "introspection_endpoint": "https://kc.example/realms/ai/protocol/openid-connect/token/introspect",
           "jwks_uri": "https://kc.example/realms/ai/protocol/openid-connect/certs"})
}

fn discovering() -> FilterConfig {
    let mut p = provider(json!({}));
    p["introspection"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    p["introspection"]["discovery"] = json!({"uri": "http://idp.example/realms/ai/.well-known/openid-configuration",
                                             "cluster": "idp", "timeout": "1s"});
    compile_with(json!({
        "providers": {"idp": p},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn header<'a>(call: &'a crate::callout::CalloutRequest, name: &str) -> Option<&'a str> {
    call.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_endpoint_comes_from_oidc_discovery_once_for_every_vm() {
    let mut h = Harness::new(discovering());
    // First the discovery document, then the endpoint it names.
    let (d, flight) = h.headers(req(TOKEN), NOW);
    let Step::Callout(call) = &d.step else {
        panic!("{:?}", d.step)
    };
    assert_eq!(header(call, ":method"), Some("GET"));
    assert_eq!(
        header(call, ":path"),
        Some("/realms/ai/.well-known/openid-configuration")
    );
    let (d, flight) = flow::on_callout_response(
        &h.cfg,
        &mut h.state,
        &h.store,
        flight.unwrap(),
        reply(200, &discovery_doc(ISS)),
        NOW,
    );
    let Step::Callout(call) = &d.step else {
        panic!("{:?}", d.step)
    };
    assert_eq!(header(call, ":method"), Some("POST"));
    assert_eq!(header(call, ":authority"), Some("kc.example"));
    assert_eq!(
        header(call, ":path"),
        Some("/realms/ai/protocol/openid-connect/token/introspect")
    );
    assert_eq!(call.cluster, "idp", "through the configured cluster");
    let d = h.answer(
        flight.unwrap(),
        reply(200, &keycloak_active(NOW + 300)),
        NOW,
    );
    assert!(continued(&d).contains(&HeaderOp::set("x-user", "alice")));
    // Another token in another VM: the shared endpoint, no discovery.
    let mut other_vm = WorkerState::new(&h.cfg);
    let (d, _) =
        flow::on_request_headers(&h.cfg, &mut other_vm, &h.store, req("other-token"), NOW + 1);
    let Step::Callout(call) = &d.step else {
        panic!("{:?}", d.step)
    };
    assert_eq!(header(call, ":method"), Some("POST"));
    // Read again once DISCOVERY_TTL_SECS is over.
    let (d, _) = h.headers(req("third-token"), NOW + DISCOVERY_TTL_SECS);
    let Step::Callout(call) = &d.step else {
        panic!("{:?}", d.step)
    };
    assert_eq!(header(call, ":method"), Some("GET"));
}

#[test]
fn a_failed_or_foreign_discovery_is_an_introspection_failure() {
    let mut wrong_endpoint = discovery_doc(ISS);
    wrong_endpoint["introspection_endpoint"] = json!("ftp://x/\nforged");
    let mut no_endpoint = discovery_doc(ISS);
    no_endpoint
        .as_object_mut()
        .unwrap()
        .remove("introspection_endpoint");
    for bad in [
        CalloutResponse::default(),
        reply(500, &json!({})),
        reply(200, &discovery_doc("https://evil.example")),
        reply(200, &wrong_endpoint),
        reply(200, &no_endpoint),
    ] {
        let mut h = Harness::new(discovering());
        let (_, flight) = h.headers(req(TOKEN), NOW);
        let d = h.answer(flight.unwrap(), bad.clone(), NOW);
        assert_eq!(replied(&d).0, 503, "{bad:?}");
        assert!(d.counters.contains(&Counter::IntrospectionFailed));
        // Nothing was remembered: the next request discovers again.
        let (d, _) = h.headers(req(TOKEN), NOW);
        let Step::Callout(call) = &d.step else {
            panic!("{:?}", d.step)
        };
        assert_eq!(header(call, ":method"), Some("GET"));
    }
}
