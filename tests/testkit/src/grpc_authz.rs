//! A real gRPC auth server (Python `grpcio`, `tests/grpc/authz_server.py`)
//! implementing Envoy's `envoy.service.auth.v3.Authorization/Check`,
//! scripted per test: it records every `CheckRequest` (as JSON) and answers
//! as the current script says. A missing `grpcio` is a failure that says
//! how to install it, never a skip.

use crate::envoy::repo_root;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct GrpcAuthServer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl GrpcAuthServer {
    pub fn start() -> Result<GrpcAuthServer, String> {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let has_grpc = Command::new(&python)
            .args(["-c", "import grpc, grpc_tools"])
            .status()
            .is_ok_and(|s| s.success());
        if !has_grpc {
            return Err(format!(
                "{} cannot import grpc and grpc_tools: run scripts/setup.sh (installs grpcio and grpcio-tools into .venv)",
                python.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "ai-auth-grpc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(&python)
            .arg(root.join("tests/grpc/authz_server.py"))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("the gRPC auth server did not start: {line:?}"))?;
        Ok(GrpcAuthServer { port, dir, child })
    }

    /// What the server does from the next call on (see authz_server.py).
    pub fn script(&self, script: &Value) {
        let tmp = self.dir.join("script.json.tmp");
        std::fs::write(&tmp, script.to_string()).unwrap();
        std::fs::rename(&tmp, self.dir.join("script.json")).unwrap();
    }

    /// Answer OK with this `ok_response` (and `dynamic_metadata`, if any).
    pub fn allow_with(&self, ok_response: Value) {
        self.script(&json!({"response": {"status": {"code": 0}, "ok_response": ok_response}}));
    }

    /// Every call so far: `{"request": CheckRequest as JSON, "metadata": {...}}`.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.calls().len()
    }

    /// The last `CheckRequest`.
    pub fn last(&self) -> Option<Value> {
        self.calls().pop().map(|c| c["request"].clone())
    }
}

impl Drop for GrpcAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
