//! Wire compatibility of the passthrough over gRPC with Envoy's own
//! `envoy.filters.http.ext_authz` in gRPC mode: one Envoy, one scripted
//! grpcio auth server, listeners in pairs (native / ours) with the same
//! settings. For the same client request and the same scripted answer, the
//! service must get equivalent `CheckRequest`s and the client and the
//! upstream must see the same result. What differs on purpose, or because
//! proxy-wasm cannot do what native does, is asserted as a known
//! difference (README, "ext_authz over gRPC"), never skipped.

use crate::support::*;
use ai_auth_testkit::grpc_authz::GrpcAuthServer;
use ai_auth_testkit::http::Recorded;
use serde_json::{json, Value};

const CLUSTER: &str = "authz_grpc";

/// Envoy's `ext_authz` in gRPC mode; `extra` merged into its config.
fn native(extra: &Value) -> Value {
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}, "timeout": "2s"},
        "transport_api_version": "V3"
    });
    merge(&mut config, extra);
    json!({"name": "envoy.filters.http.ext_authz", "typed_config": config})
}

/// Ours with the same service; `extra` merged into its `ext_authz`.
fn ours(extra: &Value) -> Value {
    let mut config = json!({
        "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}, "timeout": "2s"}
    });
    merge(&mut config, extra);
    bootstrap::wasm_filter(&json!({ "ext_authz": config }))
}

fn merge(into: &mut Value, extra: &Value) {
    for (k, v) in extra.as_object().unwrap() {
        into[k] = v.clone();
    }
}

/// `envoy.filters.http.buffer`, after either filter in body mode (ours
/// needs it to hold the body from the upstream until the decision).
fn buffer() -> Value {
    json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1048576}})
}

/// A route to the upstream; native's `context_extensions` come from the
/// route (`ExtAuthzPerRoute.check_settings`), ours from the stage.
fn route(context_extensions: &Value) -> Value {
    let mut r = bootstrap::route_to("upstream");
    if !context_extensions.is_null() {
        r["typed_per_filter_config"] = json!({"envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": context_extensions}}});
    }
    r
}

/// One configuration, as a native and an ours listener.
struct Pair {
    name: &'static str,
    /// Native's filters (ext_authz last).
    native: Vec<Value>,
    ours: Value,
    body: bool,
}

struct Bench {
    envoy: Envoy,
    auth: GrpcAuthServer,
    upstream: Server,
}

/// What one listener did with one request.
#[derive(Debug)]
struct Seen {
    check: Option<Value>,
    status: u16,
    client_headers: Vec<(String, String)>,
    body: String,
    upstream: Option<Recorded>,
}

impl Bench {
    fn start(pairs: &[Pair]) -> Bench {
        let auth = GrpcAuthServer::start().unwrap_or_else(|e| panic!("{e}"));
        let ext = json!({"gateway": "ai", "tenant": "t1"});
        let mut listeners = Vec::new();
        for p in pairs {
            for (side, filters) in [("native", &p.native), ("ours", &vec![p.ours.clone()])] {
                let mut filters = filters.clone();
                if p.body {
                    filters.push(buffer());
                }
                let ctx = if side == "native" { &ext } else { &Value::Null };
                listeners.push(bootstrap::listener(
                    &format!("{}_{side}", p.name),
                    filters,
                    vec![route(ctx)],
                ));
            }
        }
        let Gateway { envoy, upstream } = Gateway::start_listeners(
            listeners,
            vec![bootstrap::h2_cluster(CLUSTER, auth.port)],
            &Options::default(),
        );
        Bench {
            envoy,
            auth,
            upstream,
        }
    }

    fn send(
        &self,
        listener: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Seen {
        let calls = self.auth.count();
        self.upstream.clear();
        let r = http::request(self.envoy.port(listener), method, path, headers, body)
            .unwrap_or_else(|e| panic!("{listener}: {e}"));
        let check = (self.auth.count() > calls).then(|| self.auth.last().unwrap());
        let upstream = self.upstream.last();
        Seen {
            check,
            status: r.status,
            client_headers: r.headers.clone(),
            body: r.text(),
            upstream,
        }
    }
}

/// The pairs: fail closed, fail open, the body as `body` and as `raw_body`,
/// JWT claims in `metadata_context` (native: `jwt_authn` with
/// `payload_in_metadata` before `ext_authz` with `metadata_context_namespaces`),
/// the headers as `header_map` (`encode_raw_headers`), the top-level
/// `allowed_headers` / `disallowed_headers`, and all of it with a body.
fn pairs(key: &TestKey) -> Vec<Pair> {
    let ctx = json!({"context_extensions": {"gateway": "ai", "tenant": "t1"}});
    let with_ctx = |extra: Value| {
        let mut v = extra;
        merge(&mut v, &ctx);
        v
    };
    let open = json!({"failure_mode_allow": true, "failure_mode_allow_header_add": true});
    let body =
        json!({"with_request_body": {"max_request_bytes": 64, "allow_partial_message": true}});
    let bytes = json!({"with_request_body": {"max_request_bytes": 64, "allow_partial_message": true, "pack_as_bytes": true}});
    let raw = json!({"encode_raw_headers": true});
    // Pseudo-headers, a regex, `ignore_case` both ways: `X-Api-Key`
    // (case-sensitive) matches nothing, so x-api-key is still sent.
    let lists = json!({
        "allowed_headers": {"patterns": [{"prefix": "x-"}, {"exact": ":authority"},
            {"exact": ":path"}, {"exact": "User-Agent", "ignore_case": true}]},
        "disallowed_headers": {"patterns": [{"exact": "x-remove-me"},
            {"safe_regex": {"regex": "x-(plan|trace)"}}, {"exact": "X-Api-Key"},
            {"suffix": "-MULTI", "ignore_case": true}]}
    });
    let mut raw_body = lists.clone();
    merge(&mut raw_body, &raw);
    merge(&mut raw_body, &body);
    let provider = json!({"issuer": ISS, "audiences": [AUD],
        "local_jwks": {"inline_string": jwks(&[key]).to_string()}});
    let rules = json!([{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]);
    let mut native_provider = provider.clone();
    native_provider["payload_in_metadata"] = json!("idp");
    let native_jwt = json!({"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": native_provider}, "rules": rules}});
    let mut ours_jwt = ours(&ctx);
    let plugin: Value = serde_json::from_str(
        ours_jwt["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut plugin = plugin;
    plugin["jwt_authn"] = json!({"providers": {"idp": provider}, "rules": rules});
    ours_jwt = bootstrap::wasm_filter(&plugin);
    vec![
        Pair {
            name: "closed",
            native: vec![native(&json!({}))],
            ours: ours(&ctx),
            body: false,
        },
        Pair {
            name: "open",
            native: vec![native(&open)],
            ours: ours(&with_ctx(open.clone())),
            body: false,
        },
        Pair {
            name: "body",
            native: vec![native(&body)],
            ours: ours(&with_ctx(body.clone())),
            body: true,
        },
        Pair {
            name: "bytes",
            native: vec![native(&bytes)],
            ours: ours(&with_ctx(bytes.clone())),
            body: true,
        },
        Pair {
            name: "jwt",
            native: vec![
                native_jwt,
                native(&json!({"metadata_context_namespaces": ["envoy.filters.http.jwt_authn"]})),
            ],
            ours: ours_jwt,
            body: false,
        },
        Pair {
            name: "raw",
            native: vec![native(&raw)],
            ours: ours(&with_ctx(raw.clone())),
            body: false,
        },
        Pair {
            name: "lists",
            native: vec![native(&lists)],
            ours: ours(&with_ctx(lists.clone())),
            body: false,
        },
        Pair {
            name: "raw_body",
            native: vec![native(&raw_body)],
            ours: ours(&with_ctx(raw_body.clone())),
            body: true,
        },
    ]
}

fn header_option(key: &str, value: &str, action: i32) -> Value {
    json!({"header": {"key": key, "value": value}, "append_action": action})
}

/// The service's answers, each tried on every pair.
fn answers() -> Vec<(&'static str, Value)> {
    vec![
        ("allow", json!({})),
        (
            "allow_with_edits",
            json!({"response": {"status": {"code": 0}, "ok_response": {
                "headers": [
                    header_option("x-user-id", "42", 2),
                    header_option("x-trace", "from-authz", 0),
                    header_option("x-plan", "pro", 1),
                    header_option("x-tier", "gold", 1),
                    header_option("x-overwrite", "new", 3),
                    header_option("x-missing", "never", 3),
                    {"header": {"key": "x-list", "value": "c"}, "append": true},
                    {"header": {"key": "x-multi", "value": "z"}, "append": false},
                    header_option("X-Upper", "v", 2)
                ],
                "headers_to_remove": ["x-remove-me", "X-API-KEY", "host", ":method", ":path"],
                "response_headers_to_add": [
                    header_option("x-ratelimit-remaining", "99", 0),
                    header_option("x-ratelimit-remaining", "98", 0),
                    header_option("x-resp-set", "v", 2),
                    header_option("x-resp-absent", "never", 3),
                    header_option("content-type", "text/plain", 1)
                ],
                "query_parameters_to_set": [{"key": "api-version", "value": "2024-06-01"}, {"key": "new", "value": "v"}],
                "query_parameters_to_remove": ["debug"]
            }}}),
        ),
        (
            "allow_rewrites_path_and_host",
            json!({"response": {"status": {"code": 0}, "ok_response": {
                "headers": [
                    header_option(":path", "/admin?a=1", 2),
                    header_option("host", "other.example", 2)
                ],
                "query_parameters_to_set": [{"key": "b", "value": "2"}]
            }}}),
        ),
        (
            "deny_with_details",
            json!({"response": {"status": {"code": 7}, "denied_response": {
                "status": {"code": 401},
                "headers": [
                    {"header": {"key": "www-authenticate", "value": "Bearer realm=\"authz\""}},
                    {"header": {"key": "x-reason", "value": "a"}},
                    {"header": {"key": "x-reason", "value": "b"}, "append": true},
                    {"header": {"key": "content-type", "value": "application/json"}}
                ],
                "body": "{\"error\":\"who are you\"}"}}}),
        ),
        (
            "deny_body_no_status",
            json!({"response": {"status": {"code": 16}, "denied_response": {"body": "nope"}}}),
        ),
        ("deny_bare", json!({"response": {"status": {"code": 7}}})),
        (
            "unavailable",
            json!({"abort": {"code": 14, "details": "down"}}),
        ),
    ]
}

/// A request's `CheckRequest` with what must differ between two listeners
/// checked and taken out: the listener's port (in `host`, `:authority`,
/// `destination`), the client's port, the request id and time. The
/// entries of a `header_map` keep their order, their `raw_value` decoded.
fn comparable_check(check: &Value, port: u16, side: &str) -> Value {
    use base64::Engine;
    let mut c = check.clone();
    let a = &mut c["attributes"];
    let here = format!("127.0.0.1:{port}");
    let http = &mut a["request"]["http"];
    assert_eq!(http["host"], here.as_str(), "{side}: {check}");
    let request_id = if http.get("header_map").is_some() {
        // `encode_raw_headers`: no `headers` map; each value an entry,
        // only in `raw_value`.
        assert!(http.get("headers").is_none(), "{side}: {check}");
        let entries = http["header_map"]["headers"].as_array_mut().unwrap();
        for e in entries.iter_mut() {
            assert!(e.get("value").is_none(), "{side}: {check}");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["raw_value"].as_str().unwrap_or(""))
                .unwrap();
            e["raw_value"] = json!(String::from_utf8(raw).unwrap());
        }
        let value = |key: &str| -> Vec<String> {
            entries
                .iter()
                .filter(|e| e["key"] == key)
                .map(|e| e["raw_value"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(value(":authority"), [here.as_str()], "{side}: {check}");
        let ids = value("x-request-id");
        assert_eq!(ids.len(), 1, "{side}: {check}");
        entries.retain(|e| e["key"] != ":authority" && e["key"] != "x-request-id");
        ids.into_iter().next().unwrap()
    } else {
        assert_eq!(
            http["headers"][":authority"],
            here.as_str(),
            "{side}: {check}"
        );
        let headers = http["headers"].as_object_mut().unwrap();
        headers.remove(":authority");
        headers
            .remove("x-request-id")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(!request_id.is_empty(), "{side}: {check}");
    // Known difference: native's id is its stream id (a number), which
    // Envoy does not give a wasm filter; ours is the request's x-request-id.
    let id = http["id"].as_str().unwrap();
    if side == "native" {
        assert!(id.bytes().all(|b| b.is_ascii_digit()), "{check}");
    } else {
        assert_eq!(id, request_id, "{check}");
    }
    let obj = http.as_object_mut().unwrap();
    obj.remove("id");
    obj.remove("host");
    assert!(a["request"]["time"].as_str().is_some(), "{side}: {check}");
    a["request"].as_object_mut().unwrap().remove("time");
    let dst = &mut a["destination"]["address"]["socket_address"];
    assert_eq!(dst["port_value"], port, "{side}: {check}");
    dst.as_object_mut().unwrap().remove("port_value");
    let src = &mut a["source"]["address"]["socket_address"];
    assert!(src["port_value"].as_u64().unwrap() > 0, "{side}: {check}");
    src.as_object_mut().unwrap().remove("port_value");
    c
}

/// What the client and the upstream saw, less what differs per listener
/// and request (the port, the request id, Envoy's timing headers).
fn comparable_outcome(s: &Seen, port: u16) -> Value {
    let here = format!("127.0.0.1:{port}");
    let clean = |headers: &[(String, String)]| {
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.replace(&here, "HERE")))
            .filter(|(k, _)| {
                ![
                    "date",
                    "server",
                    "x-envoy-upstream-service-time",
                    "connection",
                    "content-length",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| {
                let v = if k == "x-request-id" {
                    "present".to_string()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        out.sort();
        out
    };
    json!({
        "status": s.status,
        "client_headers": clean(&s.client_headers),
        // An allowed request's body is the upstream's echo, compared below.
        "body": if s.upstream.is_none() { s.body.clone() } else { String::new() },
        "upstream": s.upstream.as_ref().map(|u| json!({
            "method": u.method, "path": u.path, "headers": clean(&u.headers),
            "body": String::from_utf8_lossy(&u.body)
        })),
    })
}

#[test]
fn grpc_wire_native_and_ours_agree() {
    let key = TestKey::ed25519("k");
    let b = Bench::start(&pairs(&key));
    let token = bearer(&key.sign(&claims()));
    let headers = |jwt: bool| {
        let mut h = vec![
            ("x-api-key", "k1"),
            ("x-multi", "a"),
            ("X-Multi", "b"),
            ("x-plan", "free"),
            ("x-overwrite", "old"),
            ("x-list", "a"),
            ("x-trace", "from-client"),
            ("x-remove-me", "secret"),
            ("x-envoy-auth-partial-body", "forged"),
            ("user-agent", "wire-test"),
        ];
        if jwt {
            h.push(("authorization", token.as_str()));
        }
        h
    };
    let small = br#"{"model":"gpt-4o-mini"}"#.to_vec();
    let large = vec![b'x'; 100];
    // (pair, method, body)
    let requests: Vec<(&str, &str, &[u8])> = vec![
        ("closed", "GET", b""),
        ("open", "GET", b""),
        ("jwt", "GET", b""),
        ("closed", "POST", &small),
        ("body", "POST", &small),
        ("bytes", "POST", &small),
        ("body", "POST", &large),
        ("bytes", "POST", &large),
        ("body", "GET", b""),
        ("raw", "GET", b""),
        ("raw", "POST", &small),
        ("lists", "GET", b""),
        ("raw_body", "POST", &small),
        ("raw_body", "POST", &large),
    ];
    let mut known = Vec::new();
    let mut compared = 0;
    for (answer, script) in answers() {
        b.auth.script(&script);
        for &(pair, method, body) in &requests {
            let what = format!("{answer} on {pair} {method} ({} bytes)", body.len());
            let h = headers(pair == "jwt");
            let path = "/v1/chat?debug=1&keep=yes&api-version=old";
            let (np, op) = (
                b.envoy.port(&format!("{pair}_native")),
                b.envoy.port(&format!("{pair}_ours")),
            );
            let n = b.send(&format!("{pair}_native"), method, path, &h, body);
            let o = b.send(&format!("{pair}_ours"), method, path, &h, body);
            // The CheckRequests.
            let (nc, oc) = (
                n.check
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: native sent no check")),
                o.check
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: ours sent no check")),
            );
            let (nc, oc) = (
                comparable_check(nc, np, "native"),
                comparable_check(oc, op, "ours"),
            );
            assert_eq!(
                oc,
                nc,
                "{what}: CheckRequest\nours:   {}\nnative: {}",
                serde_json::to_string_pretty(&oc).unwrap(),
                serde_json::to_string_pretty(&nc).unwrap()
            );
            // The settings under test did act (the two agree on what).
            let http = &nc["attributes"]["request"]["http"];
            if pair.starts_with("raw") {
                let entries = http["header_map"]["headers"].as_array().unwrap();
                let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
                if pair == "raw" {
                    // Repeats are not joined.
                    let multi = keys.iter().filter(|k| **k == "x-multi").count();
                    assert_eq!(multi, 2, "{what}: {http}");
                }
                if pair == "raw_body" && method == "POST" {
                    assert_eq!(
                        keys.last(),
                        Some(&"x-envoy-auth-partial-body"),
                        "{what}: {http}"
                    );
                }
            }
            if pair == "lists" || pair == "raw_body" {
                let names: Vec<String> = match http["headers"].as_object() {
                    Some(h) => h.keys().cloned().collect(),
                    None => http["header_map"]["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["key"].as_str().unwrap().to_string())
                        .collect(),
                };
                let has = |n: &str| names.iter().any(|k| k == n);
                assert!(
                    has("user-agent") && has("x-api-key") && has(":path"),
                    "{what}: {http}"
                );
                for gone in [
                    ":method",
                    ":scheme",
                    "x-plan",
                    "x-trace",
                    "x-remove-me",
                    "x-multi",
                ] {
                    assert!(!has(gone), "{what}: {gone} in {http}");
                }
            }
            // What the client and the upstream saw.
            let (mut no, mut oo) = (comparable_outcome(&n, np), comparable_outcome(&o, op));
            let bare_403 = n.status == 403 && n.body.is_empty();
            if bare_403 {
                // Known difference (on purpose, issue 13): where native
                // answers 403 with no body (a denial without details, or an
                // error with failure_mode_allow false), ours adds a JSON
                // error body an LLM client's SDK can show.
                assert_eq!(o.status, 403, "{what}");
                let code = serde_json::from_str::<Value>(&o.body).unwrap()["error"]["code"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let expected = if answer == "unavailable" {
                    "authorization_unavailable"
                } else {
                    "access_denied"
                };
                assert_eq!(code, expected, "{what}: {}", o.body);
                known.push(format!(
                    "{what}: 403 with our JSON body ({code}), native's empty"
                ));
                for v in [&mut no, &mut oo] {
                    v["body"] = json!("");
                    let h = v["client_headers"].as_array_mut().unwrap();
                    h.retain(|p| p[0] != "content-type");
                }
            }
            if answer == "allow_with_edits" {
                // Known difference (not matched yet): Envoy applies the
                // `append_action` of `response_headers_to_add`
                // (ADD_IF_ABSENT, OVERWRITE_IF_EXISTS...); ours adds each.
                let h = oo["client_headers"].as_array_mut().unwrap();
                let extra = [
                    json!(["x-resp-absent", "never"]),
                    json!(["content-type", "application/json,text/plain"]),
                ];
                for e in &extra {
                    assert!(h.contains(e), "{what}: {h:?}");
                }
                h.retain(|p| !extra.contains(p));
                h.push(json!(["content-type", "application/json"]));
                h.sort_by_key(|p| p.to_string());
                known.push(format!(
                    "{what}: response_headers_to_add actions not applied"
                ));
            }
            let edits_request =
                matches!(answer, "allow_with_edits" | "allow_rewrites_path_and_host");
            let body_mode = matches!(pair, "body" | "bytes" | "raw_body");
            if edits_request && body_mode && method == "POST" {
                // Known difference (README, with_request_body): Envoy's
                // proxy-wasm host lets no filter edit request headers once
                // it has read the body, so in body mode the answer's
                // request-header and query edits cannot be applied (the
                // response headers are).
                let (nu, ou) = (&no["upstream"], &oo["upstream"]);
                assert_eq!(ou["path"], path, "{what}");
                assert_ne!(nu, ou, "{what}");
                let hs = ou["headers"].as_array().unwrap();
                assert!(hs.contains(&json!(["x-remove-me", "secret"])), "{what}");
                assert!(hs.contains(&json!(["host", "HERE"])), "{what}");
                known.push(format!("{what}: upstream request not edited"));
                oo["upstream"] = no["upstream"].clone();
            }
            assert_eq!(
                oo,
                no,
                "{what}: the result\nours:   {}\nnative: {}",
                serde_json::to_string_pretty(&oo).unwrap(),
                serde_json::to_string_pretty(&no).unwrap()
            );
            compared += 1;
        }
    }
    eprintln!("compared {compared} request pairs; known differences: {known:#?}");
    assert_eq!(compared, answers().len() * requests.len());
}
