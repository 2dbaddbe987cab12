//! Differential test of SigV4 against botocore's `SigV4Auth`, which nobody
//! here wrote: for a table of requests at a fixed time, our canonical
//! request, payload hash and Authorization equal botocore's.

use ai_auth_filter::credentials::sigv4::{
    amz_date, authorization, canonical_request, sha256_hex, AwsCredentials, SignInput,
};
use ai_auth_filter::secret::Secret;
use ai_auth_testkit::envoy::repo_root;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs tests/reference/sigv4.py on `cases`; fails saying how to get botocore.
pub fn botocore_sign(cases: &[Value]) -> Vec<Value> {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run scripts/setup.sh (it installs botocore into .venv)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(repo_root().join("tests/reference/sigv4.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the botocore reference");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the botocore reference failed (run scripts/setup.sh to install botocore): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const TIME: u64 = 1_764_748_800 + 7 * 3600 + 41 * 60 + 5; // 2025-12-03T07:41:05Z

struct Case {
    method: &'static str,
    /// As sent on the wire, query included.
    wire: String,
    /// For botocore: the path, and the decoded parameters when the wire
    /// query is not in canonical form (botocore signs a URL's query as it is).
    boto_path: String,
    params: Option<Vec<(&'static str, &'static str)>>,
    body: &'static str,
    token: Option<&'static str>,
    extras: Vec<(&'static str, &'static str)>,
}

fn case(method: &'static str, wire: &str, body: &'static str) -> Case {
    Case {
        method,
        wire: wire.into(),
        boto_path: wire.into(),
        params: None,
        body,
        token: None,
        extras: vec![],
    }
}

fn cases() -> Vec<Case> {
    let json_body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"Hello é ✓"}]}"#;
    let mut out = vec![
        case("GET", "/", ""),
        case("GET", "/foundation-models", ""),
        case(
            "POST",
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
            json_body,
        ),
        case(
            "POST",
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
            json_body,
        ),
        case(
            "POST",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-2-1b-instruct-v1%3A0/converse",
            json_body,
        ),
        case("POST", "/model/a:b/invoke", "{}"),
        case("POST", "/model/with%20space/invoke", ""),
        case("POST", "/model/%C3%A9t%C3%A9/invoke", "x"),
        case("GET", "/a/./b/../c//d/", ""),
        case("GET", "/reserved/%21%24%26%27%28%29%2A%2B%2C%3B%3D%40", ""),
        case("GET", "/tilde~and-dash_dot.", ""),
        case("GET", "/list?b=2&a=1", ""),
        case("GET", "/list?a=2&a=1&a=10", ""),
        case("GET", "/list?empty=&flag=&z=%20", ""),
        case("GET", "/list?nextToken=abc%2Fdef%3D%3D&maxResults=10", ""),
        case("GET", "/list?k=%E2%9C%93%C3%A9", ""),
        case("GET", "/list?Upper=1&lower=2&_under=3", ""),
        case("PUT", "/x", "not json at all\n\twith whitespace  "),
        case("DELETE", "/x/y", ""),
    ];
    // Wire queries that are not in canonical form: botocore gets the
    // decoded parameters and encodes them itself.
    for (wire, params) in [
        (
            "/list?q=a%3ab&r=%7e&s=x:y",
            vec![("q", "a:b"), ("r", "~"), ("s", "x:y")],
        ),
        (
            "/list?name=%c3%a9&sp=a%20b&plus=a%2Bb",
            vec![("name", "é"), ("sp", "a b"), ("plus", "a+b")],
        ),
        (
            "/list?arn=arn:aws:bedrock:us-east-1::foundation-model/x&b=[1]",
            vec![
                ("arn", "arn:aws:bedrock:us-east-1::foundation-model/x"),
                ("b", "[1]"),
            ],
        ),
        ("/list?%61=1&a=0", vec![("a", "1"), ("a", "0")]),
    ] {
        let mut c = case("GET", wire, "");
        c.boto_path = wire.split('?').next().unwrap().into();
        c.params = Some(params);
        out.push(c);
    }
    // With a session token, and with extra signed headers.
    let n = out.len();
    for i in [1, 2, 11, 18] {
        let mut c = case(out[i].method, &out[i].wire, out[i].body);
        c.token = Some("FwoGZXIvYXdzEJr//////////wEaDOKEN+with/slash=and==");
        out.push(c);
    }
    let mut c = case("POST", "/model/m%3A0/invoke", json_body);
    c.extras = vec![
        ("content-type", "application/json"),
        ("accept", "  application/json  "),
    ];
    out.push(c);
    let mut c = case("POST", "/model/m%3A0/invoke", json_body);
    c.token = Some("IQoJb3JpZ2luX2VjEJ");
    c.extras = vec![
        ("content-type", "application/json"),
        ("x-amzn-bedrock-trace", "ENABLED"),
    ];
    out.push(c);
    assert!(out.len() > n);
    out
}

#[test]
fn signatures_equal_botocore() {
    let creds = |token: Option<&str>| AwsCredentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
        session_token: token.map(|t| Secret::new(t.into())),
    };
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let table = cases();
    let requests: Vec<Value> = table
        .iter()
        .map(|c| {
            let mut v = json!({
                "method": c.method, "host": host, "path": c.boto_path, "body": c.body,
                "headers": c.extras, "time": TIME, "service": "bedrock", "region": "us-east-1",
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "session_token": c.token,
            });
            if let Some(p) = &c.params {
                v["params"] = json!(p);
            }
            v
        })
        .collect();
    let reference = botocore_sign(&requests);
    assert_eq!(reference.len(), table.len());
    for (c, r) in table.iter().zip(&reference) {
        let date = amz_date(TIME);
        assert_eq!(r["x_amz_date"], date.as_str());
        let payload = sha256_hex(c.body.as_bytes());
        assert_eq!(r["payload_sha256"], payload.as_str(), "{}", c.wire);
        let creds = creds(c.token);
        let extras = c
            .extras
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let input = SignInput::for_request(
            c.method,
            &c.wire,
            host,
            &date,
            creds.session_token.as_ref(),
            extras,
            payload,
        );
        assert_eq!(
            canonical_request(&input).0,
            r["canonical_request"].as_str().unwrap(),
            "{} {}",
            c.method,
            c.wire
        );
        assert_eq!(
            authorization(&input, &creds, "us-east-1", "bedrock", &date),
            r["authorization"].as_str().unwrap(),
            "{} {}",
            c.method,
            c.wire
        );
    }
    eprintln!("{} requests signed as botocore signs them", table.len());
}
