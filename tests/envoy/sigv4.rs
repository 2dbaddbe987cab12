//! The `sigv4` backend in the real Envoy, against a mock Bedrock that
//! re-verifies every signature it receives with botocore
//! (tests/reference/aws_mock.py) and answers 403 on any mismatch: what
//! Envoy sent is exactly what the filter signed, body included. The
//! signature of a request with a body is published in filter state and
//! copied into the headers by `header_mutation` after the buffer filter.

use crate::support::*;
use ai_auth_testkit::envoy::{repo_root, Options};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const TOKEN_AKID: &str = "ASIAEXAMPLESESSION01";
pub const SESSION_TOKEN: &str = "FwoGZXIvYXdzSESSIONTOKEN//example+value=";
pub const MODEL_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke";

/// tests/reference/aws_mock.py: Bedrock verifying with botocore, STS from moto.
pub struct AwsMock {
    child: Child,
    _stdin: ChildStdin,
    pub bedrock: u16,
    pub sts: u16,
}

impl AwsMock {
    pub fn start() -> AwsMock {
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} not found: run scripts/setup.sh (it installs botocore and moto[server] into .venv)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(repo_root().join("tests/reference/aws_mock.py"))
            .arg(format!("{AKID}:{SECRET}"))
            .arg(format!("{TOKEN_AKID}:{SECRET}:{SESSION_TOKEN}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run tests/reference/aws_mock.py");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("aws_mock.py did not start (run scripts/setup.sh for botocore and moto[server]): {e}: {line:?}")
        });
        AwsMock {
            child,
            _stdin: stdin,
            bedrock: ports["bedrock"].as_u64().unwrap() as u16,
            sts: ports["sts"].as_u64().unwrap() as u16,
        }
    }

    /// The mock's state; `query` changes the STS front (`down=1`, `lifetime=N`).
    pub fn state(&self, query: &str) -> Value {
        http::get(self.sts, &format!("/_mock/state?{query}"), &[])
            .unwrap()
            .json()
    }
}

impl Drop for AwsMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn buffer_filter(max: usize) -> Value {
    json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": max}})
}

/// Copies the signature the filter published into the request headers.
pub fn header_mutation() -> Value {
    let copy = |header: &str, state: &str| {
        json!({"append": {"header": {"key": header, "value": format!("%FILTER_STATE(wasm.ai_auth.sigv4.{state}:PLAIN)%")},
                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}})
    };
    json!({"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [
            copy("authorization", "authorization"),
            copy("x-amz-content-sha256", "content_sha256")]}}})
}

pub fn sigv4_backend(credentials: Value, extra: Value) -> Value {
    let mut b = json!({"scheme": "sigv4", "sigv4": {
        "region": "us-east-1", "service": "bedrock",
        "host": "bedrock-runtime.us-east-1.amazonaws.com",
        "signed_headers": ["content-type"],
        "credentials": credentials}});
    for (k, v) in extra.as_object().unwrap() {
        b["sigv4"][k] = v.clone();
    }
    b
}

pub fn static_credentials() -> Value {
    json!({"access_key_id": {"environment_variable": "AWS_ACCESS_KEY_ID"},
           "secret_access_key": {"environment_variable": "AWS_SECRET_ACCESS_KEY"}})
}

pub struct Bedrock {
    pub envoy: Envoy,
    pub other: Server,
}

/// Envoy: our filter, the buffer filter, header_mutation, a Lua filter that
/// tampers with bodies on `/tamper/`, then the router; `/openai/` goes to
/// an echo upstream with a Bearer key (header_mutation must leave it).
pub fn start_envoy(
    plugin: Value,
    env: &[(&str, &str)],
    mock: &AwsMock,
    opts: &Options,
    extra_clusters: Vec<Value>,
) -> Bedrock {
    let other = Server::echo();
    let tamper = json!({"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string":
            "function envoy_on_request(h)\n  if string.find(h:headers():get(':path'), '/tamper/', 1, true) then\n    local b = h:body()\n    if b then b:setBytes('{\"tampered\":true}') end\n  end\nend\n"}}});
    let listener = bootstrap::listener(
        "main",
        vec![
            bootstrap::wasm_filter_with_env(&plugin, env),
            buffer_filter(4 * 1024 * 1024),
            header_mutation(),
            tamper,
        ],
        vec![
            json!({"match": {"prefix": "/openai/"}, "route": {"cluster": "other", "timeout": "30s"}}),
            bootstrap::route_to("bedrock"),
        ],
    );
    let mut clusters = vec![
        bootstrap::cluster("bedrock", mock.bedrock),
        bootstrap::cluster("other", other.port),
    ];
    clusters.extend(extra_clusters);
    let boot = bootstrap::bootstrap(vec![listener], clusters);
    let envoy = Envoy::start_with(&boot, opts).unwrap_or_else(|e| panic!("{e}"));
    Bedrock { envoy, other }
}

fn static_plugin(extra: Value) -> Value {
    json!({"upstream_credentials": {
        "backends": {
            "bedrock": sigv4_backend(static_credentials(), extra),
            "openai": {"scheme": "openai", "secret": {"inline_string": "sk-openai-test"}}},
        "routes": [
            {"match": {"prefix": "/openai/"}, "backend": "openai"},
            {"match": {"prefix": "/"}, "backend": "bedrock"}]}})
}

const ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", AKID),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
];

pub fn post(port: u16, path: &str, body: &[u8]) -> Response {
    http::request(
        port,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer client-jwt-must-not-reach-aws"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ],
        body,
    )
    .unwrap()
}

#[test]
fn signed_requests_are_verified_by_botocore_behind_envoy() {
    let mock = AwsMock::start();
    let mut gw = start_envoy(
        static_plugin(json!({"max_body_bytes": 65536})),
        &ENV,
        &mock,
        &Options::default(),
        vec![],
    );
    let port = gw.envoy.port("main");
    let json_body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"Hello \u00e9"}]}"#;
    let mut sent = 0;
    for (method, path, body) in [
        ("POST", MODEL_PATH, &json_body[..]),
        ("POST", "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", &json_body[..]),
        ("POST", "/model/with%20space/invoke", &b"{}"[..]),
        ("POST", "/model/m%3A0/invoke?b=2&a=%7e&a=1&key=client-key", &json_body[..]),
        ("POST", MODEL_PATH, &b""[..]),
        ("GET", "/foundation-models?byProvider=anthropic&byOutputModality=TEXT", &b""[..]),
        ("GET", "/a/./b/../foundation-models", &b""[..]),
    ] {
        let r = http::request(
            port,
            method,
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer client-jwt-must-not-reach-aws"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ("x-amz-date", "20000101T000000Z"),
            ],
            body,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        sent += 1;
    }
    // A body of 1 MiB of JSON, above the 64 KiB signed: 413, never sent.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000));
    let r = post(port, MODEL_PATH, big.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(error_of(&r).0, "payload_too_large");
    // A body changed after the signature (Lua after header_mutation): 403 from AWS.
    let r = post(port, "/tamper/model/m/invoke", json_body);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("x-amz-content-sha256 is not the SHA-256"),
        "{}",
        r.text()
    );

    let state = mock.state("");
    let seen = state["bedrock"].as_array().unwrap();
    assert_eq!(seen.len(), sent + 1, "{state}");
    for s in &seen[..sent] {
        assert!(s["reason"].is_null(), "{s}");
        assert_eq!(
            s["headers"]["host"], "bedrock-runtime.us-east-1.amazonaws.com",
            "{s}"
        );
        assert!(
            !s["path"].as_str().unwrap().contains("key=client-key"),
            "{s}"
        );
    }
    // The empty body signed the empty hash (the payload hash is checked above).
    assert_eq!(
        seen[4]["headers"]["x-amz-content-sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let c = |n: &str| gw.envoy.counter(&format!("upstream_credentials.{n}"));
    assert_eq!(c("sigv4_signed"), sent as u64 + 1);
    assert_eq!(c("sigv4_body_too_large"), 1);

    // Another backend on the same listener: header_mutation leaves its key alone.
    let r = http::request(
        port,
        "POST",
        "/openai/v1/chat",
        &[("authorization", "Bearer client")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let rec = gw.other.last().unwrap();
    assert_eq!(
        rec.headers_named("authorization"),
        vec!["Bearer sk-openai-test"]
    );
    assert!(rec.header("x-amz-content-sha256").is_none());

    // No secret in Envoy's debug log or in a client response.
    let log = gw.envoy.stop();
    assert!(
        log.contains("upstream_credentials: backend=bedrock"),
        "debug log is on"
    );
    assert!(!log.contains(SECRET) && !log.contains("wJalrXUtnFEMI"));
}

#[test]
fn a_session_token_is_sent_and_signed() {
    let mock = AwsMock::start();
    let creds = json!({"access_key_id": {"inline_string": TOKEN_AKID},
                       "secret_access_key": {"environment_variable": "AWS_SECRET_ACCESS_KEY"},
                       "session_token": {"environment_variable": "AWS_SESSION_TOKEN"}});
    let plugin = json!({"upstream_credentials": {
        "backends": {"bedrock": sigv4_backend(creds, json!({}))},
        "routes": [{"match": {"prefix": "/"}, "backend": "bedrock"}]}});
    let mut gw = start_envoy(
        plugin,
        &[
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
        ],
        &mock,
        &Options::default(),
        vec![],
    );
    let port = gw.envoy.port("main");
    let r = post(port, MODEL_PATH, br#"{"messages":[]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(SESSION_TOKEN));
    let r = http::get(
        port,
        "/foundation-models",
        &[("x-amz-security-token", "client-token")],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let state = mock.state("");
    for s in state["bedrock"].as_array().unwrap() {
        assert!(s["reason"].is_null(), "{s}");
        assert_eq!(s["headers"]["x-amz-security-token"], SESSION_TOKEN);
    }
    let log = gw.envoy.stop();
    assert!(!log.contains(SESSION_TOKEN) && !log.contains(SECRET));
}

/// After a passthrough check (headers held for the auth service's answer),
/// the request with a body is still signed once the body is there.
#[test]
fn signed_after_the_passthrough_answers() {
    let mock = AwsMock::start();
    let auth = Server::start(|_| http::Action::status(200));
    let mut plugin = static_plugin(json!({}));
    plugin["ext_authz"] = json!({"http_service": {
        "server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "2s"}}});
    let gw = start_envoy(
        plugin,
        &ENV,
        &mock,
        &Options::default(),
        vec![bootstrap::cluster("authz", auth.port)],
    );
    let port = gw.envoy.port("main");
    for body in [
        &br#"{"messages":[{"role":"user","content":"hi"}]}"#[..],
        b"",
    ] {
        let r = post(port, MODEL_PATH, body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(auth.count(), 2);
    let state = mock.state("");
    assert_eq!(state["bedrock"].as_array().unwrap().len(), 2);
    for s in state["bedrock"].as_array().unwrap() {
        assert!(s["reason"].is_null(), "{s}");
    }
}

const WEB_IDENTITY_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWk6Z3cifQ.c2ln";

fn sts_plugin() -> Value {
    let web_identity = json!({
        "role_arn": "arn:aws:iam::123456789012:role/bedrock-invoke",
        "role_session_name": "ai-gateway",
        "duration": "900s",
        "sts_uri": {"uri": "http://sts.amazonaws.com/", "cluster": "sts", "timeout": "2s"},
        "web_identity_token": {"environment_variable": "AWS_WEB_IDENTITY_TOKEN"},
        "retry_back_off": {"base_interval": "1s", "max_interval": "2s"}});
    let mut backend = sigv4_backend(json!(null), json!({}));
    backend["sigv4"]
        .as_object_mut()
        .unwrap()
        .remove("credentials");
    backend["sigv4"]["web_identity"] = web_identity;
    json!({"upstream_credentials": {
        "backends": {"bedrock": backend},
        "routes": [{"match": {"prefix": "/"}, "backend": "bedrock"}]}})
}

fn start_sts_gateway(mock: &AwsMock) -> Bedrock {
    let opts = Options {
        concurrency: 2,
        ..Default::default()
    };
    start_envoy(
        sts_plugin(),
        &[("AWS_WEB_IDENTITY_TOKEN", WEB_IDENTITY_TOKEN)],
        mock,
        &opts,
        vec![bootstrap::cluster("sts", mock.sts)],
    )
}

/// Waits until `f` holds, at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// STS `AssumeRoleWithWebIdentity` (moto's server): the temporary
/// credentials sign the requests; two worker VMs share one fetch.
#[test]
fn web_identity_credentials_from_sts_sign_requests() {
    let mock = AwsMock::start();
    let mut gw = start_sts_gateway(&mock);
    let port = gw.envoy.port("main");
    assert!(
        eventually(Duration::from_secs(15), || gw
            .envoy
            .counter("upstream_credentials.aws_credentials_fetch_success")
            >= 1),
        "no STS fetch"
    );
    // The other worker VM loads what the first published at its next tick.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..3 {
        let r = post(
            port,
            MODEL_PATH,
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let r = http::get(port, "/foundation-models", &[]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    std::thread::sleep(Duration::from_secs(2));
    let state = mock.state("");
    assert_eq!(
        state["sts_calls"], 1,
        "one fetch for the Envoy's worker VMs: {}",
        state["sts_calls"]
    );
    assert_eq!(state["web_identity_tokens"][0], WEB_IDENTITY_TOKEN);
    let seen = state["bedrock"].as_array().unwrap();
    assert_eq!(seen.len(), 6);
    for s in seen {
        assert!(s["reason"].is_null(), "{s}");
        let auth = s["authorization"].as_str().unwrap();
        assert!(
            auth.contains("Credential=ASIA"),
            "temporary credentials: {auth}"
        );
        assert!(s["headers"]["x-amz-security-token"].is_string());
    }
    assert_eq!(
        gw.envoy
            .counter("upstream_credentials.aws_credentials_fetch_success"),
        1
    );
    let log = gw.envoy.stop();
    assert!(!log.contains(WEB_IDENTITY_TOKEN));
    let token = seen[0]["headers"]["x-amz-security-token"].as_str().unwrap();
    assert!(!log.contains(token), "session token in the log");
}

/// Short-lived credentials are refreshed ahead of their Expiration (one
/// fetch per refresh for two worker VMs); STS down: 503 with Retry-After
/// once they are near expiry, then recovery without restart.
#[test]
fn web_identity_credentials_refresh_ahead_of_expiry_and_recover() {
    let mock = AwsMock::start();
    mock.state("lifetime=6");
    let gw = start_sts_gateway(&mock);
    let port = gw.envoy.port("main");
    assert!(eventually(Duration::from_secs(15), || gw
        .envoy
        .counter("upstream_credentials.aws_credentials_fetch_success")
        >= 1));
    std::thread::sleep(Duration::from_secs(1));
    let calls_at_start = mock.state("")["sts_calls"].as_u64().unwrap();
    let t0 = Instant::now();
    let mut statuses = std::collections::HashMap::new();
    while t0.elapsed() < Duration::from_secs(12) {
        let r = http::get(port, "/foundation-models", &[]).unwrap();
        *statuses.entry(r.status).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = mock.state("");
    let calls = state["sts_calls"].as_u64().unwrap() - calls_at_start;
    // 6 s credentials refreshed at half-life: about 4 fetches in 12 s, for
    // the whole Envoy (two worker VMs would make 8 each on their own).
    eprintln!("{calls} STS calls in 12 s for 2 worker VMs; statuses {statuses:?}");
    assert!((3..=6).contains(&calls), "{calls} STS calls in 12 s");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    let keys: std::collections::HashSet<&str> = state["bedrock"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["reason"].is_null(), "{s}");
            let auth = s["authorization"].as_str().unwrap();
            auth.split("Credential=")
                .nth(1)
                .unwrap()
                .split('/')
                .next()
                .unwrap()
        })
        .collect();
    assert!(keys.len() >= 3, "refreshed credentials were used: {keys:?}");

    // STS down: once the last credentials are near expiry, 503 + Retry-After.
    mock.state("down=1");
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = http::get(port, "/foundation-models", &[]).unwrap();
            r.status == 503
                && r.header("retry-after") == Some("1")
                && error_of(&r).0 == "upstream_credential_unavailable"
        }),
        "no 503 while STS is down"
    );
    assert!(
        gw.envoy
            .counter("upstream_credentials.aws_credentials_fetch_failed")
            >= 1
    );
    // STS back: signed requests again, without a restart.
    mock.state("down=0");
    assert!(
        eventually(Duration::from_secs(10), || http::get(
            port,
            "/foundation-models",
            &[]
        )
        .unwrap()
        .status
            == 200),
        "no recovery after STS came back"
    );
}
