//! Shared fixtures for the Envoy suites.

pub use ai_auth_testkit::envoy::{bootstrap, Envoy};
pub use ai_auth_testkit::http::{self, Response, Server};
pub use ai_auth_testkit::keys::{b64, fixtures_dir, jwks, TestKey};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ISS: &str = "https://idp.test/realms/ai";
pub const AUD: &str = "llm-gateway";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a well-behaved IdP issues, valid for five minutes.
pub fn claims() -> Value {
    let now = now();
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 300,
           "realm_access": {"roles": ["llm-user"]}, "scope": "openid chat"})
}

pub fn claims_with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// Envoy with our filter in front of an echo upstream on listener "main".
pub struct Gateway {
    pub envoy: Envoy,
    pub upstream: Server,
}

impl Gateway {
    pub fn start(plugin: Value) -> Gateway {
        Self::start_with_env(plugin, &[])
    }

    pub fn start_with_env(plugin: Value, env: &[(&str, &str)]) -> Gateway {
        let upstream = Server::echo();
        let boot = bootstrap::bootstrap(
            vec![bootstrap::listener(
                "main",
                vec![bootstrap::wasm_filter_with_env(&plugin, env)],
                vec![bootstrap::route_to("upstream")],
            )],
            vec![bootstrap::cluster("upstream", upstream.port)],
        );
        let envoy = Envoy::start(&boot).unwrap_or_else(|e| panic!("{e}"));
        Gateway { envoy, upstream }
    }

    pub fn port(&self) -> u16 {
        self.envoy.port("main")
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(self.port(), path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http::request(self.port(), "POST", path, headers, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}

/// The `error.code` and `error.message` of one of the filter's error
/// bodies in the default (OpenAI) shape.
pub fn error_of(r: &Response) -> (String, String) {
    let body = r.json();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&body["error"]["code"]),
        text(&body["error"]["message"]),
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
