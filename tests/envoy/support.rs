//! Shared fixtures for the Envoy suites.

pub use ai_auth_testkit::envoy::{bootstrap, Envoy, Options};
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

/// One listener per `(name, plugin)`: our filter alone (its VM given the
/// environment variables `env`), every route to the cluster "upstream".
pub fn wasm_listeners(listeners: Vec<(&str, Value)>, env: &[(&str, &str)]) -> Vec<Value> {
    listeners
        .into_iter()
        .map(|(name, plugin)| {
            bootstrap::listener(
                name,
                vec![bootstrap::wasm_filter_with_env(&plugin, env)],
                vec![bootstrap::route_to("upstream")],
            )
        })
        .collect()
}

/// Envoy's file access log on `listener`, one `format` line per request
/// (written on Envoy's flush interval, not at once).
pub fn access_log(listener: &mut Value, path: &std::path::Path, format: &str) {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
            "log_format": {"text_format_source": {"inline_string": format}}
        }
    }]);
}

/// Envoy's options with `concurrency` worker threads.
pub fn workers(concurrency: u32) -> Options {
    Options {
        concurrency,
        ..Default::default()
    }
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
        Self::start_listeners(
            wasm_listeners(vec![("main", plugin)], env),
            vec![],
            &Options::default(),
        )
    }

    /// Envoy with `listeners` (see [`wasm_listeners`]) in front of an echo
    /// upstream, the cluster "upstream", and `clusters` beside it.
    pub fn start_listeners(listeners: Vec<Value>, clusters: Vec<Value>, opts: &Options) -> Gateway {
        let upstream = Server::echo();
        let mut all = vec![bootstrap::cluster("upstream", upstream.port)];
        all.extend(clusters);
        let boot = bootstrap::bootstrap(listeners, all);
        let envoy = Envoy::start_with(&boot, opts).unwrap_or_else(|e| panic!("{e}"));
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
