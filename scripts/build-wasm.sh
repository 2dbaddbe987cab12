#!/usr/bin/env bash
# Builds the release filter, shrinks it with binaryen's wasm-opt and prints
# the path of the module every consumer loads (tests, bench, demo, compose,
# the OCI image): target/wasm32-wasip1/release/ai_auth_filter.opt.wasm.
# V8 compiles the whole module when Envoy starts a VM, so its size is
# start-up time (issue 14). wasm-opt is required (scripts/setup.sh installs
# it); without it this fails rather than hand out an unoptimized module.
# wasm-opt runs only when cargo's output changed (its SHA-256 is kept next
# to the result).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --target wasm32-wasip1 -p ai-auth-filter --lib >&2
raw=target/wasm32-wasip1/release/ai_auth_filter.wasm
wasm=target/wasm32-wasip1/release/ai_auth_filter.opt.wasm
stamp=$wasm.input-sha256

if ! command -v wasm-opt >/dev/null; then
  echo "build-wasm: wasm-opt not found: run scripts/setup.sh (installs Debian's binaryen) or apt-get install -y binaryen" >&2
  exit 1
fi
input_sha=$(sha256sum "$raw" | cut -d' ' -f1)
if [ ! -f "$wasm" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$input_sha" ]; then
  rm -f "$stamp"
  # The features rustc's wasm32-wasip1 target emits (the stripped module
  # carries no target_features section for wasm-opt to read).
  wasm-opt -Oz \
    --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
    "$raw" -o "$wasm.tmp"
  mv "$wasm.tmp" "$wasm"
  echo "$input_sha" > "$stamp"
fi
echo "build-wasm: $wasm ($(stat -c %s "$wasm") bytes; cargo's $(stat -c %s "$raw"))" >&2
echo "$(pwd)/$wasm"
