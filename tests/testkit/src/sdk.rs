//! The official `openai` and `anthropic` Python SDKs, driven through
//! `tests/sdk/sdk_calls.py` with the `.venv` that scripts/setup.sh fills.
//! Missing SDKs are a failure that says how to install them, never a skip.

use crate::envoy::repo_root;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every call together may take this long (each SDK call has its own 20 s timeout).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the calls (see `tests/sdk/sdk_calls.py`) and returns one result per call.
pub fn run_calls(calls: &Value) -> Result<Vec<Value>, String> {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    if !python.is_file() {
        return Err(format!(
            "{} not found: run scripts/setup.sh (creates .venv with the openai and anthropic SDKs)",
            python.display()
        ));
    }
    let mut child = Command::new(&python)
        .arg(root.join("tests/sdk/sdk_calls.py"))
        .arg(calls.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    // Read both pipes while the child runs, so a long output cannot block it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the SDK calls took more than {RUN_TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("sdk_calls.py failed ({status}): {err}"));
    }
    let results: Value =
        serde_json::from_str(&out).map_err(|e| format!("sdk_calls.py printed {out:?}: {e}"))?;
    results
        .as_array()
        .cloned()
        .ok_or_else(|| format!("sdk_calls.py printed {out:?}"))
}
