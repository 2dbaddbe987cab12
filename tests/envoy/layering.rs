//! The sans-I/O boundary: only src/host/ may name proxy_wasm.

use std::path::Path;

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "host")
                && path.parent().is_some_and(|p| p.ends_with("src"))
            {
                continue;
            }
            visit(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("proxy_wasm") {
                offenders.push(path.display().to_string());
            }
        }
    }
}

#[test]
fn only_the_host_adapter_names_proxy_wasm() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    visit(&src, &mut offenders);
    assert!(
        offenders.is_empty(),
        "proxy_wasm named outside src/host/: {offenders:?}"
    );
}
