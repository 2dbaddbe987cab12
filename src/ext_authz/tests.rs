use super::*;
use crate::callout::MemoryStore;
use crate::config::FilterConfig;
use crate::flow::{self, Step, WorkerState};
use serde_json::{json, Value};

fn config(authz: Value) -> FilterConfig {
    let bytes = serde_json::to_vec(&json!({ "ext_authz": authz })).unwrap();
    let mut cfg =
        FilterConfig::from_json(&bytes, &|_: &str| None).unwrap_or_else(|e| panic!("{e}"));
    flow::prepare_shared_data(&mut cfg, &MemoryStore::default());
    cfg
}

fn base(extra: Value) -> Value {
    let mut v = json!({
        "http_service": {
            "server_uri": {"uri": "http://authz", "cluster": "ext_authz", "timeout": "0.5s"},
            "path_prefix": "/check",
            "authorization_request": {
                "allowed_headers": {"patterns": [{"exact": "x-api-key"}, {"prefix": "x-tenant"}]},
                "headers_to_add": [{"key": "x-gateway", "value": "ai-auth"}]
            },
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"exact": "x-user-id"}, {"exact": "x-plan"}]},
                "allowed_upstream_headers_to_append": {"patterns": [{"exact": "x-trace"}]},
                "allowed_client_headers": {"patterns": [{"exact": "www-authenticate"}, {"exact": "location"}]},
                "allowed_client_headers_on_success": {"patterns": [{"exact": "x-ratelimit-remaining"}]}
            }
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn req(headers: &[(&str, &str)]) -> RequestView {
    let mut all = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/v1/chat?x=1".to_string()),
        (":authority".to_string(), "gw.example".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestView::new(all)
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> CalloutResponse {
    CalloutResponse {
        status: Some(status),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn check_request_carries_only_what_envoy_sends() {
    let cfg = config(base(json!({})));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let r = req(&[
        ("authorization", "Bearer t"),
        ("x-api-key", "k"),
        ("x-tenant-id", "acme"),
        ("cookie", "secret=1"),
        ("x-other", "no"),
        ("content-length", "12"),
    ]);
    let call = authz.check_request(&r, &[], None);
    assert_eq!(call.cluster, "ext_authz");
    assert_eq!(call.timeout, std::time::Duration::from_millis(500));
    let h = &call.headers;
    assert_eq!(header(h, ":method"), Some("POST"));
    assert_eq!(header(h, ":path"), Some("/check/v1/chat?x=1"));
    assert_eq!(header(h, ":authority"), Some("gw.example"));
    assert_eq!(header(h, "authorization"), Some("Bearer t"));
    assert_eq!(header(h, "x-api-key"), Some("k"));
    assert_eq!(header(h, "x-tenant-id"), Some("acme"));
    assert_eq!(header(h, "x-gateway"), Some("ai-auth"));
    assert_eq!(header(h, "content-length"), Some("0"));
    assert_eq!(header(h, "cookie"), None);
    assert_eq!(header(h, "x-other"), None);
    assert!(call.body.is_empty());
}

#[test]
fn replies_map_to_decisions() {
    let cfg = config(base(json!({})));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let ok = authz.decide(&reply(
        200,
        &[
            ("x-user-id", "42"),
            ("x-trace", "t1"),
            ("x-secret-internal", "no"),
            ("x-ratelimit-remaining", "9"),
            ("content-length", "0"),
        ],
        "",
    ));
    assert_eq!(
        ok,
        AuthDecision::Allow {
            upstream_set: vec![("x-user-id".into(), "42".into())],
            upstream_append: vec![("x-trace".into(), "t1".into())],
            client: vec![("x-ratelimit-remaining".into(), "9".into())],
        }
    );
    assert!(matches!(
        authz.decide(&reply(204, &[], "")),
        AuthDecision::Allow { .. }
    ));
    let deny = authz.decide(&reply(
        401,
        &[("www-authenticate", "Basic"), ("x-internal", "no")],
        "who?",
    ));
    assert_eq!(
        deny,
        AuthDecision::Deny {
            status: 401,
            headers: vec![("www-authenticate".into(), "Basic".into())],
            body: b"who?".to_vec()
        }
    );
    assert!(matches!(
        authz.decide(&reply(302, &[("location", "/login")], "")),
        AuthDecision::Deny { status: 302, .. }
    ));
    assert_eq!(
        authz.decide(&reply(503, &[], "")),
        AuthDecision::Error(ErrorKind::ServerError(503))
    );
    assert_eq!(
        authz.decide(&CalloutResponse::default()),
        AuthDecision::Error(ErrorKind::NoResponse)
    );
    // A status outside 100-599 is never a denial sent to the client: the
    // reply parser refuses it, and so does `decide` if one got through.
    for status in ["600", "999", "1000", "ok"] {
        let parsed = CalloutResponse::from_headers(vec![(":status".into(), status.into())], vec![]);
        assert_eq!(
            authz.decide(&parsed),
            AuthDecision::Error(ErrorKind::NoResponse),
            "{status}"
        );
    }
    for status in [100, 600, 999, 1000, u16::MAX] {
        assert_eq!(
            authz.decide(&reply(status, &[], "")),
            AuthDecision::Error(ErrorKind::NoResponse),
            "{status}"
        );
    }
}

#[test]
fn without_allowed_client_headers_every_header_reaches_the_client_on_deny() {
    let mut v = base(json!({}));
    v["http_service"]["authorization_response"]
        .as_object_mut()
        .unwrap()
        .remove("allowed_client_headers");
    let cfg = config(v);
    let d = cfg
        .ext_authz
        .as_ref()
        .unwrap()
        .decide(&reply(403, &[("x-a", "1"), ("x-b", "2")], ""));
    assert!(matches!(d, AuthDecision::Deny { headers, .. } if headers.len() == 2));
}

#[test]
fn errors_allow_only_through_failure_mode_allow() {
    let closed = config(base(json!({"status_on_error": {"code": 503}})));
    let authz = closed.ext_authz.as_ref().unwrap();
    let mut counters = Vec::new();
    let v = authz.resolve(
        &AuthDecision::Error(ErrorKind::NoResponse),
        &req(&[]),
        &mut counters,
    );
    match v {
        Verdict::Denied(r) => {
            assert_eq!(r.status, 503);
            // Our error (the client's SDK shows it), not the service's.
            assert_eq!(r.error.unwrap().code, "authorization_unavailable");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(counters, vec![Counter::ExtAuthzError]);

    let open = config(base(
        json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true}),
    ));
    let authz = open.ext_authz.as_ref().unwrap();
    let mut counters = Vec::new();
    let v = authz.resolve(
        &AuthDecision::Error(ErrorKind::ServerError(500)),
        &req(&[("x-user-id", "spoofed")]),
        &mut counters,
    );
    match v {
        Verdict::Allowed { ops, .. } => {
            assert!(ops.contains(&HeaderOp::set(FAILURE_MODE_ALLOWED_HEADER, "true")));
            assert!(
                ops.contains(&HeaderOp::remove("x-user-id")),
                "spoofed identity removed even when failing open"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        counters,
        vec![Counter::ExtAuthzError, Counter::ExtAuthzFailureModeAllowed]
    );
}

#[test]
fn identity_headers_are_the_services_alone() {
    let cfg = config(base(json!({})));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let r = req(&[("x-user-id", "spoofed"), ("x-plan", "gold")]);
    let decision = AuthDecision::Allow {
        upstream_set: vec![("x-user-id".into(), "42".into())],
        upstream_append: vec![],
        client: vec![],
    };
    let Verdict::Allowed { ops, .. } = authz.resolve(&decision, &r, &mut Vec::new()) else {
        panic!()
    };
    let mut seen = r.clone();
    seen.apply(&ops);
    assert_eq!(seen.header_values("x-user-id").collect::<Vec<_>>(), ["42"]);
    assert_eq!(
        seen.header("x-plan"),
        None,
        "the service did not set it, so the client's is dropped"
    );
}

#[test]
fn per_route_disable() {
    let cfg = config(base(
        json!({"rules": [{"match": {"prefix": "/health"}, "disabled": true}]}),
    ));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let health = RequestView::new(vec![(":path".into(), "/health".into())]);
    assert!(!authz.enabled_for(&health));
    assert!(authz.enabled_for(&req(&[])));
}

#[test]
fn flow_calls_out_then_continues_and_caches() {
    let cfg = config(base(
        json!({"decision_cache": {"key_headers": ["x-api-key"], "ttl": "30s"}}),
    ));
    let mut state = WorkerState::new(&cfg);
    let store = MemoryStore::default();
    let r = || req(&[("x-api-key", "k1"), ("x-user-id", "spoofed")]);
    let (d, flight) = flow::on_request_headers(&cfg, &mut state, &store, r(), 100);
    let Step::Callout(call) = d.step else {
        panic!("{:?}", d.step)
    };
    assert_eq!(header(&call.headers, ":path"), Some("/check/v1/chat?x=1"));
    assert!(d.counters.contains(&Counter::ExtAuthzCacheMiss));
    let d = flow::on_callout_response(
        &cfg,
        &mut WorkerState::new(&cfg),
        &store,
        flight.unwrap(),
        reply(200, &[("x-user-id", "42")], ""),
        100,
    )
    .0;
    let Step::Continue(ops) = d.step else {
        panic!()
    };
    assert!(ops.contains(&HeaderOp::set("x-user-id", "42")));
    assert!(d.counters.contains(&Counter::ExtAuthzOk));

    // Same key: answered from the cache, no callout.
    let (d, flight) = flow::on_request_headers(&cfg, &mut state, &store, r(), 110);
    assert!(flight.is_none());
    assert!(d.counters.contains(&Counter::ExtAuthzCacheHit));
    let Step::Continue(ops) = d.step else {
        panic!()
    };
    assert!(ops.contains(&HeaderOp::remove("x-user-id")));
    assert!(ops.contains(&HeaderOp::set("x-user-id", "42")));

    // Another key misses; after the TTL the first misses too.
    let (d, _) =
        flow::on_request_headers(&cfg, &mut state, &store, req(&[("x-api-key", "k2")]), 110);
    assert!(matches!(d.step, Step::Callout(_)));
    let (d, _) = flow::on_request_headers(&cfg, &mut state, &store, r(), 131);
    assert!(matches!(d.step, Step::Callout(_)));
}

#[test]
fn errors_are_never_cached() {
    let cfg = config(base(
        json!({"decision_cache": {"key_headers": ["x-api-key"], "ttl": "30s", "denied_ttl": "5s"}}),
    ));
    let mut state = WorkerState::new(&cfg);
    let store = MemoryStore::default();
    let (_, flight) =
        flow::on_request_headers(&cfg, &mut state, &store, req(&[("x-api-key", "k")]), 0);
    let d = flow::on_callout_response(
        &cfg,
        &mut WorkerState::new(&cfg),
        &store,
        flight.unwrap(),
        reply(503, &[], ""),
        0,
    )
    .0;
    assert!(matches!(d.step, Step::Reply(ref r) if r.status == 403));
    let (d, _) = flow::on_request_headers(&cfg, &mut state, &store, req(&[("x-api-key", "k")]), 1);
    assert!(
        matches!(d.step, Step::Callout(_)),
        "an error must not be served from the cache"
    );
}

fn body_config(extra: Value) -> FilterConfig {
    let mut v = base(extra);
    v["http_service"]["authorization_response"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k.starts_with("allowed_client"));
    config(v)
}

#[test]
fn body_mode_releases_headers_then_decides_on_the_body() {
    let strict = body_config(json!({"with_request_body": {"max_request_bytes": 4}}));
    let mut state = WorkerState::new(&strict);
    let store = MemoryStore::default();
    let mut r = req(&[("x-user-id", "spoofed")]);
    r.set_has_body(true);
    let (d, flight) = flow::on_request_headers(&strict, &mut state, &store, r, 0);
    match d.step {
        Step::ContinueAndBufferBody { ops, max_bytes } => {
            assert_eq!(max_bytes, 4);
            assert!(ops.is_empty(), "{ops:?}");
        }
        other => panic!("{other:?}"),
    }
    let (d, _) = flow::on_request_body(&strict, &store, flight.unwrap(), b"abcd", true, 0);
    assert!(matches!(d.step, Step::Reply(ref r) if r.status == 413));

    let partial = body_config(
        json!({"with_request_body": {"max_request_bytes": 4, "allow_partial_message": true}}),
    );
    let mut r = req(&[]);
    r.set_has_body(true);
    let (_, flight) =
        flow::on_request_headers(&partial, &mut WorkerState::new(&partial), &store, r, 0);
    let (d, flight) = flow::on_request_body(&partial, &store, flight.unwrap(), b"abcd", true, 0);
    let Step::Callout(call) = d.step else {
        panic!()
    };
    assert_eq!(call.body, b"abcd");
    assert_eq!(header(&call.headers, PARTIAL_BODY_HEADER), Some("true"));
    assert_eq!(header(&call.headers, "content-length"), Some("4"));
    // Allowed: nothing left to edit, the held body goes on.
    let d = flow::on_callout_response(
        &partial,
        &mut WorkerState::new(&partial),
        &store,
        flight.unwrap(),
        reply(200, &[], ""),
        0,
    )
    .0;
    assert_eq!(d.step, Step::Continue(vec![]));

    // Without a body, the check happens on the headers with an empty body.
    let (d, _) = flow::on_request_headers(
        &partial,
        &mut WorkerState::new(&partial),
        &store,
        req(&[]),
        0,
    );
    let Step::Callout(call) = d.step else {
        panic!()
    };
    assert_eq!(header(&call.headers, PARTIAL_BODY_HEADER), Some("false"));
}

#[test]
fn body_mode_refuses_what_it_cannot_do() {
    let e = FilterConfig::from_json(
        &serde_json::to_vec(
            &json!({"ext_authz": base(json!({"with_request_body": {"max_request_bytes": 4}}))}),
        )
        .unwrap(),
        &|_: &str| None,
    )
    .unwrap_err();
    assert_eq!(
        e.path,
        "ext_authz.http_service.authorization_response.allowed_upstream_headers"
    );
    assert!(e.reason.contains("with_request_body"), "{e}");
}

#[test]
fn configuration_errors_name_the_field() {
    let bad = |v: Value| {
        FilterConfig::from_json(
            &serde_json::to_vec(&json!({"ext_authz": v})).unwrap(),
            &|_: &str| None,
        )
        .unwrap_err()
    };
    let mut v = base(json!({}));
    v["http_service"]["server_uri"]["uri"] = json!("authz:9000");
    assert_eq!(bad(v).path, "ext_authz.http_service.server_uri.uri");
    let mut v = base(json!({}));
    v["http_service"]["authorization_request"]["allowed_headers"]["patterns"][0] =
        json!({"safe_regex": {"regex": "("}});
    let e = bad(v);
    assert!(
        e.path.starts_with(
            "ext_authz.http_service.authorization_request.allowed_headers.patterns[0]"
        ),
        "{e}"
    );
    assert_eq!(
        bad(base(json!({"status_on_error": {"code": 99}}))).path,
        "ext_authz.status_on_error"
    );
}

#[test]
fn a_denial_keeps_the_services_body_and_an_empty_one_gets_ours() {
    let cfg = config(base(json!({})));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let resolve =
        |r: CalloutResponse| match authz.resolve(&authz.decide(&r), &req(&[]), &mut Vec::new()) {
            Verdict::Denied(reply) => reply,
            other => panic!("{other:?}"),
        };
    let own = resolve(reply(
        403,
        &[("www-authenticate", "Basic")],
        r#"{"error": "quota"}"#,
    ));
    assert_eq!(own.body, br#"{"error": "quota"}"#);
    assert_eq!(own.error, None, "the service's body is sent as it came");
    let empty = resolve(reply(401, &[("www-authenticate", "Basic")], ""));
    assert_eq!(empty.status, 401);
    assert_eq!(empty.error.unwrap().code, "access_denied");
    assert_eq!(header(&empty.headers, "www-authenticate"), Some("Basic"));
    assert_eq!(
        header(&empty.headers, "content-type"),
        Some("application/json")
    );
    // A redirect without a body stays as the service sent it.
    let redirect = resolve(reply(302, &[("location", "/login")], ""));
    assert!(redirect.body.is_empty() && redirect.error.is_none());
}

#[test]
fn the_cache_key_covers_everything_the_service_is_shown() {
    // No key_headers at all: the key still separates whatever the check
    // request carries (issue 9.2).
    let cfg = config(base(json!({"decision_cache": {"ttl": "30s"}})));
    let authz = cfg.ext_authz.as_ref().unwrap();
    let key = |headers: &[(&str, &str)], body: Option<(&[u8], bool)>| {
        let r = req(headers);
        let check = authz.check_request(&r, &[], body);
        authz.http_cache_key(&check, &r).unwrap()
    };
    let base_key = key(&[("authorization", "Bearer a")], None);
    assert_eq!(base_key, key(&[("authorization", "Bearer a")], None));
    assert_ne!(base_key, key(&[("authorization", "Bearer b")], None));
    assert_ne!(
        base_key,
        key(&[("authorization", "Bearer a"), ("x-api-key", "k")], None)
    );
    assert_ne!(
        base_key,
        key(&[("authorization", "Bearer a"), ("x-tenant-id", "t")], None)
    );
    assert_ne!(
        base_key,
        key(&[("authorization", "Bearer a")], Some((b"{}", false)))
    );
    assert_ne!(
        key(&[], Some((b"{}", false))),
        key(&[], Some((b"{}", true))),
        "a cut body is another check"
    );
    // Headers the service is not shown do not split decisions.
    assert_eq!(
        base_key,
        key(&[("authorization", "Bearer a"), ("cookie", "c")], None)
    );
    // The order of different headers does not matter; the values of one do.
    assert_eq!(
        key(&[("x-api-key", "k"), ("x-tenant-id", "t")], None),
        key(&[("x-tenant-id", "t"), ("x-api-key", "k")], None)
    );
}

#[test]
fn a_configured_key_secret_is_read_and_checked() {
    let with = |secret: Value| {
        let bytes = serde_json::to_vec(&json!({ "ext_authz": base(json!({"decision_cache": {"ttl": "30s", "key_secret": secret}})) })).unwrap();
        FilterConfig::from_json(&bytes, &|name: &str| {
            (name == "CACHE_SECRET").then(|| "0123456789abcdef0123".to_string())
        })
    };
    let cfg = with(json!({"environment_variable": "CACHE_SECRET"})).unwrap();
    let cache = cfg.ext_authz.unwrap().decision_cache.unwrap();
    assert!(cache.secret.is_some());
    assert!(!format!("{cache:?}").contains("0123456789"));
    let e = with(json!({"inline_string": "short"})).unwrap_err();
    assert!(e.to_string().contains("decision_cache.key_secret"), "{e}");
    let e = with(json!({"environment_variable": "UNSET"})).unwrap_err();
    assert!(e.to_string().contains("decision_cache.key_secret"), "{e}");
}
