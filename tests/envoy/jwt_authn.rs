//! The JWT stage in the real Envoy: a table of tokens and the answers.

use crate::support::*;
use serde_json::{json, Value};

struct Keys {
    rsa: TestKey,
    p256: TestKey,
    p384: TestKey,
    p521: TestKey,
    ed: TestKey,
    hmac: TestKey,
}

fn keys() -> Keys {
    Keys {
        rsa: TestKey::rsa("rsa-1"),
        p256: TestKey::p256("ec-256"),
        p384: TestKey::p384("ec-384"),
        p521: TestKey::p521("ec-521"),
        ed: TestKey::ed25519("ed-1"),
        hmac: TestKey::hmac("hs-1", &[0x5a; 64]),
    }
}

fn envoy_vectors() -> Value {
    let path = fixtures_dir().join("vectors/envoy_test_common.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn plugin(k: &Keys) -> Value {
    let all = [&k.rsa, &k.p256, &k.p384, &k.p521, &k.ed, &k.hmac];
    let vectors = envoy_vectors();
    json!({"jwt_authn": {
        "providers": {
            "idp": {
                "issuer": ISS,
                "audiences": [AUD],
                "local_jwks": {"inline_string": jwks(&all).to_string()},
                "claim_to_headers": [
                    {"header_name": "x-user", "claim_name": "sub"},
                    {"header_name": "x-roles", "claim_name": "realm_access.roles"}
                ]
            },
            // envoyproxy/envoy test/extensions/filters/http/jwt_authn/test_common.h
            "envoy_example": {
                "issuer": vectors["issuer"],
                "audiences": vectors["audiences"],
                "local_jwks": {"inline_string": vectors["public_key_jwks"].to_string()},
                "from_headers": [{"name": "x-envoy-jwt", "value_prefix": "Bearer "}]
            }
        },
        "rules": [
            {"match": {"prefix": "/health"}},
            {"match": {"prefix": "/envoy-vectors/"}, "requires": {"provider_name": "envoy_example"}},
            {"match": {"prefix": "/admin/"}, "requires": {"provider_name": "idp"},
             "claim_rules": [{"claim": "realm_access.roles", "contains": "llm-admin"}]},
            {"match": {"prefix": "/v1/"}, "requires": {"provider_name": "idp"},
             "claim_rules": [{"claim": "realm_access.roles", "contains": "llm-user"}]}
        ]
    }})
}

struct Case {
    name: &'static str,
    token: String,
    status: u16,
    description: &'static str,
}

#[test]
fn tokens_against_the_real_envoy() {
    let k = keys();
    let gw = Gateway::start(plugin(&k));
    let c = claims();
    let mut cases = Vec::new();
    for (key, alg) in [
        (&k.rsa, "RS256"),
        (&k.rsa, "RS384"),
        (&k.rsa, "RS512"),
        (&k.rsa, "PS256"),
        (&k.rsa, "PS384"),
        (&k.rsa, "PS512"),
        (&k.p256, "ES256"),
        (&k.p384, "ES384"),
        (&k.p521, "ES512"),
        (&k.ed, "EdDSA"),
        (&k.hmac, "HS256"),
        (&k.hmac, "HS384"),
        (&k.hmac, "HS512"),
    ] {
        cases.push(Case {
            name: alg,
            token: key.sign_with(alg, &c),
            status: 200,
            description: "",
        });
    }
    let now = now();
    let rsa = &k.rsa;
    let tampered = {
        let t = rsa.sign(&c);
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.{}", b64([7u8; 256]))
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"}).to_string()),
        b64(c.to_string())
    );
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        rsa.jwk()["n"].as_str().unwrap(),
    )
    .unwrap();
    let confused = TestKey::hmac("rsa-1", &n).sign_with("HS256", &c);
    cases.extend([
        Case {
            name: "malformed",
            token: "abc.def".into(),
            status: 401,
            description: "Jwt is malformed: not three base64url segments",
        },
        Case {
            name: "expired",
            token: rsa.sign(&claims_with(json!({"exp": now - 120}))),
            status: 401,
            description: "Jwt is expired",
        },
        Case {
            name: "not yet valid",
            token: rsa.sign(&claims_with(json!({"nbf": now + 600}))),
            status: 401,
            description: "Jwt not yet valid",
        },
        Case {
            name: "bad issuer",
            token: rsa.sign(&claims_with(json!({"iss": "https://evil.test"}))),
            status: 401,
            description: "Jwt issuer is not configured",
        },
        Case {
            name: "bad audience",
            token: rsa.sign(&claims_with(json!({"aud": "other-api"}))),
            status: 403,
            description: "Audiences in Jwt are not allowed",
        },
        Case {
            name: "unknown kid",
            token: TestKey::rsa("rotated-away").sign(&c),
            status: 401,
            description: "Jwks has no key matching the Jwt kid and alg",
        },
        Case {
            name: "bad signature",
            token: tampered,
            status: 401,
            description: "Jwt verification fails",
        },
        Case {
            name: "alg none",
            token: none,
            status: 401,
            description: "Jwt is malformed: empty segment",
        },
        Case {
            name: "alg confusion",
            token: confused,
            status: 401,
            description: "Jwks has no key matching the Jwt kid and alg",
        },
        Case {
            name: "missing role",
            token: rsa.sign(&claims_with(json!({"realm_access": {"roles": ["guest"]}}))),
            status: 403,
            description: "claim realm_access.roles does not satisfy the rule",
        },
    ]);
    for case in &cases {
        let r = gw.post(
            "/v1/chat/completions",
            &[
                ("authorization", &bearer(&case.token)),
                ("x-user", "mallory"),
            ],
            b"{}",
        );
        assert_eq!(r.status, case.status, "{}: {}", case.name, r.text());
        if case.status == 200 {
            let seen = gw.upstream.last().unwrap();
            assert_eq!(
                seen.header("authorization"),
                None,
                "{}: token must not reach the upstream",
                case.name
            );
            assert_eq!(
                seen.headers_named("x-user"),
                ["alice"],
                "{}: claim header overwrites the client's",
                case.name
            );
            assert_eq!(seen.header("x-roles"), Some("llm-user"), "{}", case.name);
        } else {
            assert_eq!(error_of(&r).1, case.description, "{}", case.name);
            let challenge = r
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("{}: no WWW-Authenticate", case.name));
            let expected_error = if case.status == 403 && case.name == "missing role" {
                "insufficient_scope"
            } else {
                "invalid_token"
            };
            assert!(
                challenge.starts_with("Bearer realm=\""),
                "{}: {challenge}",
                case.name
            );
            assert!(
                challenge.contains(&format!("error=\"{expected_error}\"")),
                "{}: {challenge}",
                case.name
            );
            assert_eq!(error_of(&r).0, expected_error, "{}", case.name);
        }
    }
    // Stats, named as jwt_authn's.
    let allowed = gw.envoy.counter("jwt_authn.allowed");
    let denied = gw.envoy.counter("jwt_authn.denied");
    assert_eq!(allowed, 13);
    assert_eq!(denied as usize, cases.len() - 13);
}

#[test]
fn missing_token_and_public_routes() {
    let gw = Gateway::start(plugin(&keys()));
    let r = gw.get("/v1/models", &[]);
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"http://127.0.0.1:"),
        "{challenge}"
    );
    assert!(
        !challenge.contains("error="),
        "RFC 6750 3.1: no error code without credentials: {challenge}"
    );
    assert_eq!(error_of(&r).1, "Jwt is missing");
    assert_eq!(gw.upstream.count(), 0);
    let r = gw.get("/health", &[("x-user", "mallory")]);
    assert_eq!(r.status, 200);
    // Even on a public route, identity headers never come from the client.
    assert_eq!(gw.upstream.last().unwrap().header("x-user"), None);
}

#[test]
fn query_token_is_stripped_and_bearer_is_case_insensitive() {
    let k = keys();
    let gw = Gateway::start(plugin(&k));
    let token = k.ed.sign(&claims());
    let r = gw.get(&format!("/v1/models?limit=5&access_token={token}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.upstream.last().unwrap().path, "/v1/models?limit=5");
    let r = gw.get(
        "/v1/models",
        &[("authorization", &format!("bEARER {token}"))],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn verified_token_cache_hits_on_reuse() {
    let k = keys();
    let gw = Gateway::start(plugin(&k));
    let token = k.rsa.sign(&claims());
    for _ in 0..3 {
        assert_eq!(
            gw.get("/v1/models", &[("authorization", &bearer(&token))])
                .status,
            200
        );
    }
    assert_eq!(gw.envoy.counter("jwt_authn.jwt_cache_miss"), 1);
    assert_eq!(gw.envoy.counter("jwt_authn.jwt_cache_hit"), 2);
}

#[test]
fn envoy_test_common_vectors() {
    let gw = Gateway::start(plugin(&keys()));
    let vectors = envoy_vectors();
    let mut checked = 0;
    for t in vectors["tokens"].as_array().unwrap() {
        let (name, token) = (t["name"].as_str().unwrap(), t["token"].as_str().unwrap());
        let expected = match t["expected"].as_str().unwrap() {
            "valid" => (200, ""),
            "expired" => (401, "Jwt is expired"),
            "bad_audience" => (403, "Audiences in Jwt are not allowed"),
            "bad_issuer" => (401, "Jwt issuer is not configured"),
            // Our check order verifies the signature before anything the
            // signature covers would be trusted: tokens whose signature does
            // not verify in the source file fail as such.
            "not_yet_valid" | "other:signature_verification_fail" => (401, ""),
            _ => continue,
        };
        let r = gw.get("/envoy-vectors/x", &[("x-envoy-jwt", &bearer(token))]);
        assert_eq!(r.status, expected.0, "{name}: {}", r.text());
        if !expected.1.is_empty() {
            assert_eq!(error_of(&r).1, expected.1, "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} vectors checked");
}

/// Issue 9.4: a route regex on a 60 KB path costs little in the VM (a lazy
/// DFA scans it once; regex-lite's PikeVM took 61-68 ms per request with
/// this pattern), next to a prefix rule on the same path; the regex sees the
/// path without its query.
#[test]
fn route_regexes_are_cheap_on_long_paths_and_ignore_the_query() {
    let key = TestKey::ed25519("k");
    let plugin = |matcher: Value| {
        json!({"jwt_authn": {
            "providers": {"idp": {"issuer": ISS, "audiences": [AUD],
                "local_jwks": {"inline_string": jwks(&[&key]).to_string()}}},
            "rules": [
                {"match": matcher, "requires": {"provider_name": "idp"}},
                {"match": {"prefix": "/"}}
            ]
        }})
    };
    let upstream = Server::echo();
    let listeners = [
        ("regex", json!({"safe_regex": {"regex": "(.*a){20}"}})),
        ("prefix", json!({"prefix": "/aaaaaaaaaaaaaaaaaaaa"})),
    ]
    .into_iter()
    .map(|(name, matcher)| {
        let mut l = bootstrap::listener(
            name,
            vec![bootstrap::wasm_filter(&plugin(matcher))],
            vec![bootstrap::route_to("upstream")],
        );
        l["filter_chains"][0]["filters"][0]["typed_config"]["max_request_headers_kb"] = json!(96);
        l
    })
    .collect();
    let boot = bootstrap::bootstrap(
        listeners,
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
    let long = format!("/{}", "a".repeat(60 * 1000));
    let token = bearer(&key.sign(&claims()));
    let mut per_request = Vec::new();
    for name in ["regex", "prefix"] {
        let port = envoy.port(name);
        assert_eq!(http::get(port, &long, &[]).unwrap().status, 401, "{name}");
    }
    // Interleaved, so both see the same machine.
    let n = 20;
    let mut took = [std::time::Duration::ZERO; 2];
    for _ in 0..n {
        for (i, name) in ["regex", "prefix"].iter().enumerate() {
            let start = std::time::Instant::now();
            let r = http::get(envoy.port(name), &long, &[("authorization", &token)]).unwrap();
            took[i] += start.elapsed();
            assert_eq!(r.status, 200, "{name}: {}", r.text());
        }
    }
    per_request.extend(took.iter().map(|t| *t / n));
    eprintln!(
        "60 KB path, per request: (.*a){{20}} rule {:?}, prefix rule {:?}",
        per_request[0], per_request[1]
    );
    assert!(
        per_request[0] < per_request[1] * 2 + std::time::Duration::from_millis(5),
        "the regex rule costs {:?} per request, the prefix rule {:?}",
        per_request[0],
        per_request[1]
    );
    // The query is not part of what the regex sees.
    let port = envoy.port("regex");
    let r = http::get(port, &format!("/b?q={}", "a".repeat(100)), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get(port, &format!("/{}?q=b", "a".repeat(20)), &[]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
}
