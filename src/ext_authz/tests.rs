use super::*;
use crate::callout::CalloutResponse;
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

fn http_check(authz: &ExtAuthz, r: &RequestView, body: Option<(&[u8], bool)>) -> CalloutRequest {
    match authz.check(r, &[], body, 0).0 {
        Check::Http(call) => call,
        other => panic!("{other:?}"),
    }
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
    let call = http_check(authz, &r, None);
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
    let ok = authz.http_decide(&reply(
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
        AuthDecision::Allow(Allowed {
            upstream_set: vec![("x-user-id".into(), "42".into())],
            upstream_append: vec![("x-trace".into(), "t1".into())],
            client: vec![("x-ratelimit-remaining".into(), "9".into())],
            ..Allowed::default()
        })
    );
    assert!(matches!(
        authz.http_decide(&reply(204, &[], "")),
        AuthDecision::Allow(_)
    ));
    let deny = authz.http_decide(&reply(
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
        authz.http_decide(&reply(302, &[("location", "/login")], "")),
        AuthDecision::Deny { status: 302, .. }
    ));
    assert_eq!(
        authz.http_decide(&reply(503, &[], "")),
        AuthDecision::Error(ErrorKind::ServerError(503))
    );
    assert_eq!(
        authz.http_decide(&CalloutResponse::default()),
        AuthDecision::Error(ErrorKind::NoResponse)
    );
    // A status outside 100-599 is never a denial sent to the client: the
    // reply parser refuses it, and so does `decide` if one got through.
    for status in ["600", "999", "1000", "ok"] {
        let parsed = CalloutResponse::from_headers(vec![(":status".into(), status.into())], vec![]);
        assert_eq!(
            authz.http_decide(&parsed),
            AuthDecision::Error(ErrorKind::NoResponse),
            "{status}"
        );
    }
    for status in [100, 600, 999, 1000, u16::MAX] {
        assert_eq!(
            authz.http_decide(&reply(status, &[], "")),
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
    let d =
        cfg.ext_authz
            .as_ref()
            .unwrap()
            .http_decide(&reply(403, &[("x-a", "1"), ("x-b", "2")], ""));
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
    let decision = AuthDecision::Allow(Allowed {
        upstream_set: vec![("x-user-id".into(), "42".into())],
        ..Allowed::default()
    });
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
    let resolve = |r: CalloutResponse| match authz.resolve(
        &authz.http_decide(&r),
        &req(&[]),
        &mut Vec::new(),
    ) {
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
        authz.check(&r, &[], body, 0).1.unwrap()
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

mod grpc_transport {
    use super::*;
    use crate::callout::GrpcReply;
    use crate::ext_authz::grpc::Connection;
    use crate::ext_authz::proto::{self, CheckRequest, CheckResponse};
    use prost::Message;

    fn grpc(extra: Value) -> FilterConfig {
        let mut v = json!({"grpc_service": {"envoy_grpc": {"cluster_name": "authz", "authority": "authz.internal"},
            "timeout": "0.3s", "initial_metadata": [{"key": "x-tenant", "value": "t1"}]}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        config(v)
    }

    fn grpc_request(headers: &[(&str, &str)]) -> RequestView {
        let mut r = req(headers);
        r.set_connection(Connection {
            source: Some("10.0.0.1:5555".into()),
            destination: Some("[::1]:10000".into()),
            protocol: Some("HTTP/2".into()),
            body_received: 0,
        });
        r.set_has_body(true);
        r
    }

    fn sent(
        authz: &ExtAuthz,
        r: &RequestView,
        body: Option<(&[u8], bool)>,
    ) -> (CheckRequest, GrpcCall) {
        let Check::Grpc(call) = authz.check(r, &[], body, 1_700_000_000).0 else {
            panic!("not gRPC")
        };
        (CheckRequest::decode(call.message.as_slice()).unwrap(), call)
    }

    fn http_of(check: CheckRequest) -> proto::HttpRequest {
        check.attributes.unwrap().request.unwrap().http.unwrap()
    }

    fn answer(authz: &ExtAuthz, response: &CheckResponse) -> AuthDecision {
        authz.grpc_decide(&GrpcReply::Message(response.encode_to_vec()))
    }

    fn option(key: &str, value: &str, action: i32) -> proto::HeaderValueOption {
        proto::HeaderValueOption {
            header: Some(proto::HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append: None,
            append_action: action,
        }
    }

    #[test]
    fn config_takes_exactly_one_service() {
        let both = json!({"ext_authz": {"grpc_service": {"envoy_grpc": {"cluster_name": "a"}},
            "http_service": {"server_uri": {"uri": "http://a", "cluster": "a", "timeout": "1s"}}}});
        for bad in [both, json!({"ext_authz": {}})] {
            let e =
                FilterConfig::from_json(bad.to_string().as_bytes(), &|_: &str| None).unwrap_err();
            assert!(
                e.to_string()
                    .contains("exactly one of http_service, grpc_service"),
                "{e}"
            );
        }
        let http_ext = json!({"ext_authz": base(json!({"context_extensions": {"a": "b"}}))});
        let e =
            FilterConfig::from_json(http_ext.to_string().as_bytes(), &|_: &str| None).unwrap_err();
        assert!(e.to_string().contains("context_extensions"), "{e}");
        let slow = json!({"ext_authz": {"grpc_service": {"envoy_grpc": {"cluster_name": "a"}, "timeout": "5000000s"}}});
        let e = FilterConfig::from_json(slow.to_string().as_bytes(), &|_: &str| None).unwrap_err();
        assert!(e.to_string().contains("grpc_service.timeout"), "{e}");
    }

    #[test]
    fn the_check_request_is_the_one_envoy_builds() {
        let cfg = grpc(json!({"context_extensions": {"team": "ml", "tier": "base"},
            "rules": [{"match": {"prefix": "/v1/chat"}, "context_extensions": {"tier": "chat"}}],
            "with_request_body": {"max_request_bytes": 8, "allow_partial_message": true}}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let r = grpc_request(&[
            ("x-api-key", "k1"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-request-id", "rid-1"),
            (PARTIAL_BODY_HEADER, "spoofed"),
        ]);
        let (check, call) = sent(authz, &r, Some((b"{\"m\":1}", true)));
        assert_eq!(call.target.service, "envoy.service.auth.v3.Authorization");
        assert_eq!(call.target.method, "Check");
        assert_eq!(call.target.timeout, std::time::Duration::from_millis(300));
        assert_eq!(
            call.target.initial_metadata,
            [("x-tenant".to_string(), "t1".to_string())]
        );
        let target = proto::GrpcService::decode(call.target.upstream.as_slice()).unwrap();
        assert_eq!(target.envoy_grpc.as_ref().unwrap().cluster_name, "authz");
        assert_eq!(target.envoy_grpc.unwrap().authority, "authz.internal");
        let a = check.attributes.unwrap();
        let http = a.request.as_ref().unwrap().http.as_ref().unwrap();
        assert_eq!(http.method, "POST");
        assert_eq!(http.path, "/v1/chat?x=1");
        assert_eq!(http.host, "gw.example");
        assert_eq!(http.protocol, "HTTP/2");
        assert_eq!(http.id, "rid-1");
        assert_eq!(
            http.headers.get(":path").map(String::as_str),
            Some("/v1/chat?x=1")
        );
        assert_eq!(http.headers.get("accept").map(String::as_str), Some("a,b"));
        assert_eq!(
            http.headers.get(PARTIAL_BODY_HEADER).map(String::as_str),
            Some("true")
        );
        assert_eq!(http.body, "{\"m\":1}");
        assert!(http.raw_body.is_empty());
        assert_eq!(a.request.unwrap().time.unwrap().seconds, 1_700_000_000);
        let source = a.source.unwrap().address.unwrap().socket_address.unwrap();
        assert_eq!(
            (source.address.as_str(), source.port_value),
            ("10.0.0.1", 5555)
        );
        let dest = a
            .destination
            .unwrap()
            .address
            .unwrap()
            .socket_address
            .unwrap();
        assert_eq!((dest.address.as_str(), dest.port_value), ("::1", 10000));
        assert_eq!(
            a.context_extensions.get("tier").map(String::as_str),
            Some("chat")
        );
        assert_eq!(
            a.context_extensions.get("team").map(String::as_str),
            Some("ml")
        );
        // pack_as_bytes: the body as bytes.
        let cfg =
            grpc(json!({"with_request_body": {"max_request_bytes": 8, "pack_as_bytes": true}}));
        let (check, _) = sent(
            cfg.ext_authz.as_ref().unwrap(),
            &r,
            Some((b"\xff\x00", false)),
        );
        let http = check.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.raw_body, b"\xff\x00");
        assert!(http.body.is_empty());
    }

    /// Found by the wire comparison with native `ext_authz`
    /// (tests/envoy/ext_authz_grpc_wire.rs).
    #[test]
    fn size_metadata_and_service_as_native_sends_them() {
        let cfg = grpc(json!({}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        // `size` is what Envoy has received of the body when it checks:
        // nothing at the headers, whatever the content-length says.
        let r = grpc_request(&[("content-length", "13")]);
        let (check, call) = sent(authz, &r, None);
        let a = check.attributes.unwrap();
        assert_eq!(a.request.unwrap().http.unwrap().size, 0);
        // Both metadata contexts are sent, empty (field present on the wire).
        assert_eq!(a.metadata_context, Some(proto::Metadata::default()));
        assert_eq!(a.route_metadata_context, Some(proto::Metadata::default()));
        assert!(
            call.message.windows(2).any(|w| w == [0x5a, 0x00]),
            "field 11, empty"
        );
        assert!(
            call.message.windows(2).any(|w| w == [0x6a, 0x00]),
            "field 13, empty"
        );
        assert!(a.source.unwrap().service.is_empty());
        // With the body: its buffered length.
        let (check, _) = sent(authz, &r, Some((b"0123456789", false)));
        assert_eq!(http_of(check).size, 10);
        // A cut body: every byte Envoy had received.
        let mut r = grpc_request(&[]);
        r.set_body_received(100);
        let (check, _) = sent(authz, &r, Some((b"0123456789", true)));
        assert_eq!(http_of(check).size, 100);
        // A request without a body: no body, no partial-body header.
        let mut r = grpc_request(&[]);
        r.set_has_body(false);
        let (check, _) = sent(authz, &r, Some((b"", false)));
        let http = http_of(check);
        assert!(!http.headers.contains_key(PARTIAL_BODY_HEADER), "{http:?}");
        assert_eq!(http.size, 0);
        // The downstream's service cluster names the source.
        let r = grpc_request(&[("x-envoy-downstream-service-cluster", "frontend")]);
        let (check, _) = sent(authz, &r, None);
        assert_eq!(
            check.attributes.unwrap().source.unwrap().service,
            "frontend"
        );
    }

    /// Envoy's denial applies the headers without `append` (the last of a
    /// name wins) and drops those with `append: true`.
    #[test]
    fn a_denials_headers_as_envoy_sends_them() {
        let cfg = grpc(json!({}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let mut appended = option("x-reason", "b", 0);
        appended.append = Some(proto::BoolValue { value: true });
        let response = CheckResponse {
            status: Some(proto::RpcStatus {
                code: 7,
                ..Default::default()
            }),
            denied_response: Some(proto::DeniedHttpResponse {
                status: Some(proto::HttpStatus { code: 401 }),
                headers: vec![
                    option("x-reason", "a", 0),
                    appended,
                    option("x-one", "1", 0),
                    option("x-one", "2", 0),
                ],
                body: "no".into(),
            }),
            ..Default::default()
        };
        let AuthDecision::Deny {
            status, headers, ..
        } = answer(authz, &response)
        else {
            panic!()
        };
        assert_eq!(status, 401);
        assert_eq!(
            headers,
            [
                ("x-reason".to_string(), "a".to_string()),
                ("x-one".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn the_cache_key_ignores_only_what_differs_per_request() {
        let cfg = grpc(json!({"decision_cache": {"ttl": "30s"}}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let key = |headers: &[(&str, &str)], port: u16, now: u64| {
            let mut r = grpc_request(headers);
            r.set_connection(Connection {
                source: Some(format!("10.0.0.1:{port}")),
                ..r.connection().clone()
            });
            authz.check(&r, &[], None, now).1.unwrap()
        };
        let base = key(&[("x-api-key", "a"), ("x-request-id", "1")], 1000, 1);
        assert_eq!(
            base,
            key(&[("x-api-key", "a"), ("x-request-id", "2")], 2000, 9)
        );
        assert_ne!(
            base,
            key(&[("x-api-key", "b"), ("x-request-id", "1")], 1000, 1)
        );
        assert_ne!(base, key(&[("x-api-key", "a"), ("cookie", "c")], 1000, 1));
    }

    /// The key is computed with the per-request fields taken out of the
    /// check; the check sent still carries every one of them.
    #[test]
    fn the_check_sent_with_the_cache_on_is_the_check_without_it() {
        let cached = grpc(json!({"decision_cache": {"ttl": "30s"}}));
        let plain = grpc(json!({}));
        let r = grpc_request(&[("x-api-key", "a"), ("x-request-id", "rid-7")]);
        let (with_cache, call) = sent(cached.ext_authz.as_ref().unwrap(), &r, None);
        let (without, _) = sent(plain.ext_authz.as_ref().unwrap(), &r, None);
        assert_eq!(with_cache, without);
        let a = with_cache.attributes.unwrap();
        let request = a.request.unwrap();
        assert_eq!(request.time.unwrap().seconds, 1_700_000_000);
        let http = request.http.unwrap();
        assert_eq!(http.id, "rid-7");
        assert_eq!(
            http.headers.get("x-request-id").map(String::as_str),
            Some("rid-7")
        );
        let port = a
            .source
            .unwrap()
            .address
            .unwrap()
            .socket_address
            .unwrap()
            .port_value;
        assert_eq!(port, 5555);
        assert_eq!(call.target.cluster, "authz");
    }

    /// Envoy 1.40 reads only `append` on `ok_response.headers`
    /// (`append_action` is ignored: everything else overwrites or adds) and
    /// lets the service set `:path` and `host`; it never removes them (the
    /// wire comparison in tests/envoy/ext_authz_grpc_wire.rs shows it).
    #[test]
    fn allow_answers_become_edits_as_envoy_applies_them() {
        let cfg = grpc(json!({}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let mut overwrite_via_append = option("x-old", "no", 0);
        overwrite_via_append.append = Some(proto::BoolValue { value: false });
        let mut append_existing = option("x-list", "c", 0);
        append_existing.append = Some(proto::BoolValue { value: true });
        let response = CheckResponse {
            status: Some(proto::RpcStatus::default()),
            ok_response: Some(proto::OkHttpResponse {
                headers: vec![
                    option("x-user-id", "42", 2),
                    option("x-trace", "t2", 0),
                    option("x-present", "kept", 1),
                    option("x-absent", "added", 1),
                    option("x-overwrite", "new", 3),
                    option("x-nothing", "never", 3),
                    overwrite_via_append,
                    append_existing,
                    option(":path", "/admin", 2),
                    option("host", "evil", 2),
                    option("x-bad", "a\r\nb", 2),
                ],
                headers_to_remove: vec!["authorization".into(), ":method".into(), "Host".into()],
                response_headers_to_add: vec![option("x-ratelimit-remaining", "9", 0)],
                query_parameters_to_set: vec![proto::QueryParameter {
                    key: "api-version".into(),
                    value: "2024 06".into(),
                }],
                query_parameters_to_remove: vec!["x".into()],
                dynamic_metadata: None,
            }),
            dynamic_metadata: Some(proto::Struct {
                fields: [(
                    "plan".to_string(),
                    crate::ext_authz::grpc::to_value(&json!("pro")),
                )]
                .into(),
            }),
            ..Default::default()
        };
        let decision = answer(authz, &response);
        let r = req(&[
            ("authorization", "Bearer t"),
            ("x-trace", "t1"),
            ("x-present", "orig"),
            ("x-overwrite", "old"),
            ("x-old", "old"),
            ("x-list", "a,b"),
        ]);
        let Verdict::Allowed {
            ops,
            client_headers,
            metadata,
        } = authz.resolve(&decision, &r, &mut Vec::new())
        else {
            panic!("{decision:?}")
        };
        let mut seen = r.clone();
        seen.apply(&ops);
        let values = |n: &str| {
            seen.header_values(n)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(values("x-user-id"), ["42"]);
        assert_eq!(values("x-trace"), ["t2"]);
        assert_eq!(values("x-present"), ["kept"]);
        assert_eq!(values("x-absent"), ["added"]);
        assert_eq!(values("x-overwrite"), ["new"]);
        assert_eq!(values("x-nothing"), ["never"]);
        assert_eq!(values("x-old"), ["no"]);
        assert_eq!(values("x-list"), ["a,b,c"]);
        assert!(values("authorization").is_empty());
        assert!(values("x-bad").is_empty());
        // `:path` set, then the query edited on it (sorted by name, as Envoy).
        assert_eq!(seen.path(), "/admin?api-version=2024%2006");
        assert_eq!(seen.method(), "POST");
        assert_eq!(values("host"), ["evil"]);
        assert!(!ops
            .iter()
            .any(|op| matches!(op, HeaderOp::Remove(n) if n == "host" || n.starts_with(':'))));
        assert_eq!(
            client_headers,
            [("x-ratelimit-remaining".to_string(), "9".to_string())]
        );
        assert_eq!(metadata.as_deref(), Some("{\"plan\":\"pro\"}"));
        // The decision survives the cache's wire form.
        let bytes = super::super::cache::tests_support::encode(&decision).unwrap();
        assert_eq!(
            super::super::cache::tests_support::decode(&bytes),
            Some(decision)
        );
    }

    #[test]
    fn denials_errors_and_malformed_replies() {
        let cfg = grpc(json!({}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let denied = CheckResponse {
            status: Some(proto::RpcStatus {
                code: 7,
                message: "no".into(),
            }),
            denied_response: Some(proto::DeniedHttpResponse {
                status: Some(proto::HttpStatus { code: 429 }),
                headers: vec![option("retry-after", "1", 0), option("retry-after", "2", 0)],
                body: "slow down".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            answer(authz, &denied),
            AuthDecision::Deny {
                status: 429,
                headers: vec![("retry-after".into(), "2".into())],
                body: b"slow down".to_vec()
            }
        );
        let bare = CheckResponse {
            status: Some(proto::RpcStatus {
                code: 16,
                message: String::new(),
            }),
            ..Default::default()
        };
        assert!(
            matches!(answer(authz, &bare), AuthDecision::Deny { status: 403, ref body, .. } if body.is_empty())
        );
        let odd_status = CheckResponse {
            status: Some(proto::RpcStatus {
                code: 7,
                message: String::new(),
            }),
            denied_response: Some(proto::DeniedHttpResponse {
                status: Some(proto::HttpStatus { code: 1000 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            answer(authz, &odd_status),
            AuthDecision::Deny { status: 403, .. }
        ));
        // No status at all is OK (proto3 default), as in Envoy.
        assert!(matches!(
            answer(authz, &CheckResponse::default()),
            AuthDecision::Allow(_)
        ));
        for garbage in [
            vec![0xff; 5],
            vec![0x0a, 0x10],
            b"\x0a\x02\x08".to_vec(),
            vec![0x0a; 300 * 1024],
        ] {
            assert_eq!(
                authz.grpc_decide(&GrpcReply::Message(garbage)),
                AuthDecision::Error(ErrorKind::Malformed)
            );
        }
        assert_eq!(
            authz.grpc_decide(&GrpcReply::Failed {
                code: 14,
                message: "down".into()
            }),
            AuthDecision::Error(ErrorKind::GrpcStatus(14))
        );
        // Unknown fields are skipped.
        let mut bytes = CheckResponse::default().encode_to_vec();
        bytes.extend_from_slice(&[0xa2, 0x06, 0x01, 0x00]);
        assert!(matches!(
            authz.grpc_decide(&GrpcReply::Message(bytes)),
            AuthDecision::Allow(_)
        ));
    }

    /// `encode_raw_headers`: Envoy's `header_map`, one entry per value in
    /// the request's order (pseudo-headers first), the value as
    /// `raw_value` bytes, `value` empty; `headers` stays empty.
    #[test]
    fn encode_raw_headers_sends_each_value_in_header_map() {
        let cfg = grpc(json!({"encode_raw_headers": true,
            "with_request_body": {"max_request_bytes": 8, "allow_partial_message": true}}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let r = grpc_request(&[
            ("accept", "a"),
            ("x-api-key", "k1"),
            ("accept", "b"),
            (PARTIAL_BODY_HEADER, "spoofed"),
        ]);
        let (check, _) = sent(authz, &r, Some((b"{}", false)));
        let http = http_of(check);
        assert!(http.headers.is_empty(), "{http:?}");
        let map = http.header_map.unwrap();
        let entries: Vec<(&str, &str, &[u8])> = map
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str(), h.raw_value.as_slice()))
            .collect();
        assert_eq!(
            entries,
            [
                (":method", "", b"POST".as_slice()),
                (":path", "", b"/v1/chat?x=1"),
                (":authority", "", b"gw.example"),
                ("accept", "", b"a"),
                ("x-api-key", "", b"k1"),
                ("accept", "", b"b"),
                (PARTIAL_BODY_HEADER, "", b"false"),
            ]
        );
        // The field is sent even when no header is (Envoy creates it).
        let cfg = grpc(json!({"encode_raw_headers": true,
            "allowed_headers": {"patterns": []}}));
        let (check, _) = sent(cfg.ext_authz.as_ref().unwrap(), &r, None);
        assert_eq!(http_of(check).header_map, Some(proto::HeaderMap::default()));
        // Off (the default): no header_map at all.
        let (check, _) = sent(grpc(json!({})).ext_authz.as_ref().unwrap(), &r, None);
        assert_eq!(http_of(check).header_map, None);
    }

    /// Envoy's top-level `allowed_headers` / `disallowed_headers` over
    /// gRPC: disallowed first, then only the allowed (none added by
    /// default), pseudo-headers included; patterns are case-sensitive
    /// unless `ignore_case`. The request's own fields stay.
    #[test]
    fn allowed_and_disallowed_headers_choose_what_the_check_carries() {
        let r = grpc_request(&[
            ("x-api-key", "k1"),
            ("x-secret", "s"),
            ("x-internal-a", "i"),
            ("accept", "a"),
            ("user-agent", "u"),
        ]);
        let keys = |extra: Value, raw: bool| -> Vec<String> {
            let mut extra = extra;
            extra["encode_raw_headers"] = json!(raw);
            let cfg = grpc(extra);
            let (check, _) = sent(cfg.ext_authz.as_ref().unwrap(), &r, None);
            let http = http_of(check);
            assert_eq!(http.path, "/v1/chat?x=1");
            assert_eq!(http.host, "gw.example");
            assert_eq!(http.method, "POST");
            match http.header_map {
                Some(map) => map.headers.into_iter().map(|h| h.key).collect(),
                None => http.headers.into_keys().collect(),
            }
        };
        let both = json!({
            "allowed_headers": {"patterns": [{"prefix": "x-"}, {"exact": ":path"},
                {"exact": "ACCEPT", "ignore_case": true}]},
            "disallowed_headers": {"patterns": [{"exact": "x-secret"},
                {"safe_regex": {"regex": "x-internal-.*"}}]}
        });
        for raw in [false, true] {
            let mut got = keys(both.clone(), raw);
            got.sort();
            assert_eq!(got, [":path", "accept", "x-api-key"], "raw: {raw}");
            // Case-sensitive without ignore_case (names are lowercase).
            let upper = json!({"allowed_headers": {"patterns": [{"exact": "X-Api-Key"}]}});
            assert!(keys(upper, raw).is_empty(), "raw: {raw}");
            // Disallowed alone: everything else goes.
            let only_deny =
                json!({"disallowed_headers": {"patterns": [{"prefix": ":"}, {"suffix": "-key"}]}});
            let mut got = keys(only_deny, raw);
            got.sort();
            assert_eq!(
                got,
                ["accept", "user-agent", "x-internal-a", "x-secret"],
                "raw: {raw}"
            );
        }
        let bad = json!({"ext_authz": {"grpc_service": {"envoy_grpc": {"cluster_name": "a"}},
            "disallowed_headers": {"patterns": [{"safe_regex": {"regex": "("}}]}}});
        let e = FilterConfig::from_json(bad.to_string().as_bytes(), &|_: &str| None).unwrap_err();
        assert!(
            e.path
                .starts_with("ext_authz.disallowed_headers.patterns[0]"),
            "{e}"
        );
    }

    /// With `header_map`, the decision cache still leaves the request id
    /// out of the key, and the check sent keeps it.
    #[test]
    fn the_cache_key_leaves_out_the_request_id_in_header_map() {
        let cfg = grpc(json!({"decision_cache": {"ttl": "30s"}, "encode_raw_headers": true}));
        let authz = cfg.ext_authz.as_ref().unwrap();
        let key =
            |headers: &[(&str, &str)]| authz.check(&grpc_request(headers), &[], None, 1).1.unwrap();
        let base = key(&[("x-api-key", "a"), ("x-request-id", "1")]);
        assert_eq!(base, key(&[("x-api-key", "a"), ("x-request-id", "2")]));
        assert_ne!(base, key(&[("x-api-key", "b"), ("x-request-id", "1")]));
        let r = grpc_request(&[("x-request-id", "rid-7")]);
        let (check, _) = sent(authz, &r, None);
        let map = http_of(check).header_map.unwrap();
        assert!(
            map.headers
                .iter()
                .any(|h| h.key == "x-request-id" && h.raw_value == b"rid-7"),
            "{map:?}"
        );
    }
}

/// Over HTTP, Envoy takes the top-level `allowed_headers` as it takes
/// `authorization_request.allowed_headers` (refusing both at once) and
/// leaves out `disallowed_headers`, the defaults (`authorization`) too
/// (tests/envoy/ext_authz_http.rs compares with native).
#[test]
fn top_level_header_lists_over_http() {
    let mut v = base(json!({
        "allowed_headers": {"patterns": [{"exact": "x-api-key"}, {"exact": "X-Tenant-Id"}]},
        "disallowed_headers": {"patterns": [{"exact": "authorization"}, {"prefix": "x-drop"}]}
    }));
    let both = v.clone();
    v["http_service"]["authorization_request"]
        .as_object_mut()
        .unwrap()
        .remove("allowed_headers");
    let cfg = config(v.clone());
    let authz = cfg.ext_authz.as_ref().unwrap();
    let r = req(&[
        ("authorization", "Bearer t"),
        ("x-api-key", "k"),
        ("x-tenant-id", "acme"),
        ("x-drop-me", "d"),
    ]);
    let call = http_check(authz, &r, None);
    let h = &call.headers;
    assert_eq!(header(h, "x-api-key"), Some("k"));
    // Case-sensitive: `X-Tenant-Id` matches no (lowercase) name.
    assert_eq!(header(h, "x-tenant-id"), None);
    assert_eq!(header(h, "authorization"), None);
    assert_eq!(header(h, "x-drop-me"), None);
    assert_eq!(header(h, ":path"), Some("/check/v1/chat?x=1"));
    let bad = |v: Value| {
        FilterConfig::from_json(
            &serde_json::to_vec(&json!({"ext_authz": v})).unwrap(),
            &|_: &str| None,
        )
        .unwrap_err()
    };
    let e = bad(both);
    assert_eq!(e.path, "ext_authz.allowed_headers", "{e}");
    let mut pseudo = v.clone();
    pseudo["disallowed_headers"] = json!({"patterns": [{"prefix": ":p"}]});
    let e = bad(pseudo);
    assert_eq!(e.path, "ext_authz.disallowed_headers", "{e}");
    assert!(e.to_string().contains(":path"), "{e}");
    // Repeats joined with `,` (Envoy's CheckRequest map), each its own
    // line with encode_raw_headers (Envoy then copies its header_map).
    let r = req(&[("x-api-key", "a"), ("accept", "x"), ("x-api-key", "b")]);
    let values = |cfg: &FilterConfig| -> Vec<String> {
        let call = http_check(cfg.ext_authz.as_ref().unwrap(), &r, None);
        call.headers
            .into_iter()
            .filter(|(k, _)| k == "x-api-key")
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(values(&config(v.clone())), ["a,b"]);
    let mut raw = v;
    raw["encode_raw_headers"] = json!(true);
    assert_eq!(values(&config(raw)), ["a", "b"]);
}
