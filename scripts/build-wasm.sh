#!/usr/bin/env bash
# Builds the release filter, shrinks it with binaryen's wasm-opt and prints
# the path of the module every consumer loads (tests, bench, demo, compose,
# the OCI image): target/wasm32-wasip1/release/ai_auth_filter.opt.wasm.
# V8 compiles the whole module when Envoy starts a VM, so its size is
# start-up time (issue 14). wasm-opt is required (scripts/setup.sh installs
# it); without it this fails rather than hand out an unoptimized module.
# wasm-opt runs only when cargo's output or the flags below changed (their
# SHA-256 is kept next to the result).
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
# The --enable-* are the features rustc's wasm32-wasip1 target emits (the
# stripped module carries no target_features section for wasm-opt to read).
# --merge-similar-functions folds functions that differ only in constants
# (monomorphized copies) into one with a parameter: -12,113 bytes.
# --low-memory-unused lets loads and stores carry small constant offsets
# (wasm-ld leaves the first 1 KiB to the stack's far end or unused, never
# data reached through a wrapped address): -6,554. --converge repeats -Oz
# until nothing shrinks: -763 (issue 14; figures from 1,040,821 bytes).
opt_flags=(--low-memory-unused --merge-similar-functions -Oz --converge
  --enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types)
input_sha=$( (sha256sum "$raw" | cut -d' ' -f1; echo "${opt_flags[*]}") | sha256sum | cut -d' ' -f1)
if [ ! -f "$wasm" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$input_sha" ]; then
  rm -f "$stamp"
  wasm-opt "${opt_flags[@]}" "$raw" -o "$wasm.tmp"
  mv "$wasm.tmp" "$wasm"
  echo "$input_sha" > "$stamp"
fi
echo "build-wasm: $wasm ($(stat -c %s "$wasm") bytes; cargo's $(stat -c %s "$raw"))" >&2
echo "$(pwd)/$wasm"
