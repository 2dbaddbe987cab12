#!/usr/bin/env bash
# Builds the release filter and prints the .wasm path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --target wasm32-wasip1 -p ai-auth-filter --lib >&2
wasm=target/wasm32-wasip1/release/ai_auth_filter.wasm
echo "build-wasm: $wasm ($(stat -c %s "$wasm") bytes)" >&2
echo "$(pwd)/$wasm"
