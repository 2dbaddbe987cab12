//! Hostile input never takes the filter down: after a burst of bad tokens
//! and headers, a good request still gets 200 from the same VM.

use crate::support::*;
use serde_json::json;

#[test]
fn hostile_burst_then_a_good_request() {
    let key = TestKey::rsa("k");
    let plugin = json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&key]).to_string()},
                              "from_cookies": ["session"], "from_params": ["access_token"],
                              "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                              "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }});
    let mut gw = Gateway::start(plugin);
    let port = gw.port();
    let dots = ".".repeat(8000);
    let big = "A".repeat(60 * 1024);
    let huge_b64 = format!(
        "{}.{}.{}",
        b64("{\"alg\":\"RS256\"}"),
        "e".repeat(20000),
        "x".repeat(20000)
    );
    let nested = format!(
        "{}.{}.c2ln",
        b64("{\"alg\":\"RS256\",\"kid\":\"k\"}"),
        b64(format!("{}1{}", "[".repeat(5000), "]".repeat(5000)))
    );
    let texts: Vec<String> = vec![
        format!("Bearer {dots}"),
        format!("Bearer {big}"),
        format!("Bearer {huge_b64}"),
        format!("Bearer {nested}"),
        "Bearer ....".into(),
        "Bearer a.b.c".into(),
        "Bearer e30.e30.e30".into(),
        "Bearer eyJhbGciOiJub25lIn0.e30.".into(),
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4NDQ2NzQ0MDczNzA5NTUxNjE2fQ.c2ln".into(),
        "Bearer ".into(),
        "Bearer".into(),
        "Basic Zm9vOmJhcg==".into(),
    ];
    let mut statuses = Vec::new();
    for t in &texts {
        let r = http::get(port, "/v1/x", &[("authorization", t)]);
        statuses.push(r.map(|r| r.status).unwrap_or(0));
    }
    // Raw bytes: invalid UTF-8 and binary in the token header, a cookie and the query.
    let raw_requests: Vec<Vec<u8>> = vec![
        b"GET /v1/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\nauthorization: Bearer \xff\xfe\xfd.\x80\x81.\xc3\x28\r\n\r\n".to_vec(),
        b"GET /v1/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\nauthorization: Bearer \x01\x02\x03\r\n\r\n".to_vec(),
        b"GET /v1/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncookie: session=\xff\xff; a=\x80\r\n\r\n".to_vec(),
        b"GET /v1/x?access_token=%ff%00&access_token=\xff HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n".to_vec(),
        b"GET /v1/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\nauthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n".to_vec(),
    ];
    for raw in &raw_requests {
        statuses.push(http::request_raw(port, raw).map(|r| r.status).unwrap_or(0));
    }
    for s in &statuses {
        // 401 from us, or 400/431 when Envoy's codec refuses the request first.
        assert!(matches!(s, 400 | 401 | 431), "statuses: {statuses:?}");
    }
    assert!(
        statuses.iter().filter(|s| **s == 401).count() >= 12,
        "statuses: {statuses:?}"
    );
    let good = gw.get("/v1/x", &[("authorization", &bearer(&key.sign(&claims())))]);
    assert_eq!(good.status, 200, "the VM must still serve: {}", good.text());
    assert_eq!(gw.upstream.last().unwrap().header("x-user"), Some("alice"));
    let log = gw.envoy.stop();
    assert!(!log.contains("panicked"), "a panic was logged");
    assert!(
        !log.contains(&key.sign(&claims())[..40]),
        "a token reached the log"
    );
}

/// The testkit stops every Envoy it started with SIGTERM (its Drop, then
/// SIGKILL only after a bounded wait): Envoy with the filter loaded, having
/// served, exits on SIGTERM by itself, through its own shutdown.
#[test]
fn envoy_with_the_filter_exits_on_sigterm() {
    let key = TestKey::rsa("k");
    let mut gw = Gateway::start(json!({"jwt_authn": {
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }}));
    let r = gw.get("/v1/x", &[("authorization", &bearer(&key.sign(&claims())))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        gw.envoy.terminate(std::time::Duration::from_secs(30)),
        "Envoy did not exit on SIGTERM; log:\n{}",
        gw.envoy.log_tail(40)
    );
    assert!(
        gw.envoy.log().contains("caught ENVOY_SIGTERM"),
        "{}",
        gw.envoy.log_tail(40)
    );
}
