//! A client token sent in more than one place, with `forward: false`:
//! nothing of any copy reaches the upstream, and a second, different token
//! never rides along with a valid one.

use crate::support::*;
use serde_json::json;

fn plugin(key: &TestKey) -> serde_json::Value {
    json!({"jwt_authn": {
        "providers": {"idp": {
            "issuer": ISS, "audiences": [AUD],
            "local_jwks": {"inline_string": jwks(&[key]).to_string()},
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
            "from_params": ["access_token"],
            "from_cookies": ["session"]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]
    }})
}

/// Envoy with the filter in front of a recording upstream.
fn start(key: &TestKey) -> (Envoy, Server) {
    let upstream = Server::recorder();
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![bootstrap::wasm_filter(&plugin(key))],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    (
        Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}")),
        upstream,
    )
}

/// What a request looked like, and what the test expects of it.
struct Case {
    what: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    status: u16,
}

#[test]
fn no_copy_of_a_token_and_no_second_token_reaches_the_upstream() {
    let key = TestKey::ed25519("k");
    let token = key.sign(&claims());
    let other = key.sign(&claims_with(json!({"sub": "mallory"})));
    let (envoy, upstream) = start(&key);
    let cases = vec![
        Case {
            what: "header and query",
            path: format!("/v1/chat?access_token={token}&stream=true"),
            headers: vec![("authorization", bearer(&token))],
            status: 200,
        },
        Case {
            what: "header and cookie",
            path: "/v1/chat".into(),
            headers: vec![
                ("authorization", bearer(&token)),
                ("cookie", format!("theme=dark; session={token}")),
            ],
            status: 200,
        },
        Case {
            what: "query and cookie",
            path: format!("/v1/chat?access_token={token}"),
            headers: vec![("cookie", format!("session={token}; theme=dark"))],
            status: 200,
        },
        Case {
            what: "query under an escaped name",
            path: format!("/v1/chat?access%5Ftoken={other}"),
            headers: vec![("authorization", bearer(&token))],
            status: 200,
        },
        Case {
            what: "two different tokens, header and query",
            path: format!("/v1/chat?access_token={other}"),
            headers: vec![("authorization", bearer(&token))],
            status: 401,
        },
        Case {
            what: "two different tokens, header and cookie",
            path: "/v1/chat".into(),
            headers: vec![
                ("authorization", bearer(&token)),
                ("cookie", format!("session={other}")),
            ],
            status: 401,
        },
    ];
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for case in &cases {
        upstream.clear();
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http::get(envoy.port("main"), &case.path, &headers).unwrap();
        let seen = upstream.last();
        let leaked: Vec<&str> = [("the token", &token), ("the other token", &other)]
            .into_iter()
            .filter(|(_, t)| {
                // Any recognisable piece: the signature segment is unique.
                let signature = t.rsplit('.').next().unwrap();
                seen.as_ref()
                    .is_some_and(|s| s.all_text().contains(signature))
            })
            .map(|(name, _)| name)
            .collect();
        report.push(format!(
            "{}: {} upstream={} leaked={leaked:?}",
            case.what,
            r.status,
            seen.as_ref()
                .map_or("-".into(), |s| s.path.chars().take(40).collect::<String>())
        ));
        if r.status != case.status {
            failures.push(format!("{}: {} {}", case.what, r.status, r.text()));
        }
        if !leaked.is_empty() {
            failures.push(format!("{}: {leaked:?} reached the upstream", case.what));
        }
        if case.status != 200 && seen.is_some() {
            failures.push(format!("{}: a refused request went upstream", case.what));
        }
        if case.status != 200 && error_of(&r).1 != "more than one Jwt in the request" {
            failures.push(format!("{}: {}", case.what, r.text()));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the provider still got from the first two: the rest of the request.
    upstream.clear();
    let r = http::get(
        envoy.port("main"),
        &format!("/v1/chat?access_token={token}&stream=true"),
        &[
            ("authorization", &bearer(&token)),
            ("cookie", &format!("theme=dark; session={token}")),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = upstream.last().unwrap();
    assert_eq!(seen.path, "/v1/chat?stream=true");
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert_eq!(seen.header("authorization"), None);
}

#[test]
fn a_hostile_mix_of_locations_never_carries_a_token_upstream() {
    // Many requests, each with the token in a random subset of the three
    // locations and sometimes a stale second token: whatever passes reaches
    // the upstream without any token.
    let key = TestKey::ed25519("k");
    let (envoy, upstream) = start(&key);
    let stale = key.sign(&claims_with(json!({"exp": now() - 600})));
    let mut signatures = vec![stale.rsplit('.').next().unwrap().to_string()];
    let (mut passed, mut refused) = (0, 0);
    let mut seed: u32 = 0x9e37_79b9;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..200 {
        let token = key.sign(&claims_with(json!({"jti": format!("r{i}")})));
        signatures.push(token.rsplit('.').next().unwrap().to_string());
        let bits = next();
        let pick = |bit: u32| {
            if bits & (1 << bit) != 0 {
                &stale
            } else {
                &token
            }
        };
        let mut path = "/v1/chat?x=1".to_string();
        let mut headers: Vec<(&str, String)> = Vec::new();
        if bits & 1 != 0 {
            headers.push(("authorization", bearer(pick(3))));
        }
        if bits & 2 != 0 {
            path.push_str(&format!("&access_token={}", pick(4)));
        }
        if bits & 4 != 0 || headers.is_empty() {
            headers.push(("cookie", format!("a=1; session={}", pick(5))));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http::get(envoy.port("main"), &path, &headers).unwrap();
        match r.status {
            200 => passed += 1,
            401 => refused += 1,
            s => panic!("status {s}: {}", r.text()),
        }
    }
    let requests = upstream.requests();
    let carrying = requests
        .iter()
        .filter(|r| {
            let text = r.all_text();
            signatures.iter().any(|s| text.contains(s.as_str()))
        })
        .count();
    eprintln!(
        "{passed} passed, {refused} refused; {carrying} of {} upstream requests carried a token",
        requests.len()
    );
    assert_eq!(requests.len(), passed);
    assert!(passed > 20 && refused > 20, "{passed} / {refused}");
    assert_eq!(carrying, 0);
}
