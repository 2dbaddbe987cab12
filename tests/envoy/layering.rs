//! The sans-I/O boundary: only src/host/ may name the proxy-wasm ABI, and
//! the filter uses no SDK (whose helpers panic on statuses they do not
//! expect, aborting the VM).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn in_host(path: &Path) -> bool {
    path.starts_with(src().join("host"))
}

/// Files under src/ whose text matches `offends`, outside src/host/ unless `everywhere`.
fn offenders(everywhere: bool, offends: impl Fn(&str) -> bool) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter(|p| everywhere || !in_host(p))
        .filter(|p| offends(&std::fs::read_to_string(p).unwrap()))
        .map(|p| p.display().to_string())
        .collect()
}

/// `proxy_` as the start of an identifier (`proxy_log`, `proxy_on_...`),
/// not inside another word.
fn names_the_abi(text: &str) -> bool {
    text.match_indices("proxy_").any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn only_the_host_adapter_names_the_abi() {
    let abi = offenders(false, names_the_abi);
    assert!(abi.is_empty(), "proxy_* named outside src/host/: {abi:?}");
    let imports = offenders(false, |t| {
        t.contains("extern \"C\"") || t.contains("#[link(")
    });
    assert!(
        imports.is_empty(),
        "host imports declared outside src/host/: {imports:?}"
    );
}

#[test]
fn the_filter_uses_no_sdk() {
    let sdk = offenders(true, |t| t.contains("proxy_wasm"));
    assert!(sdk.is_empty(), "the proxy-wasm SDK is named in: {sdk:?}");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    assert!(
        !dependencies.contains("proxy-wasm"),
        "the filter crate depends on the proxy-wasm SDK"
    );
}

#[test]
fn the_fence_sees_what_it_must() {
    assert!(names_the_abi("fn proxy_on_tick("));
    assert!(names_the_abi("(proxy_log)"));
    assert!(!names_the_abi("my_proxy_thing"));
    assert!(!names_the_abi("no abi here"));
}
