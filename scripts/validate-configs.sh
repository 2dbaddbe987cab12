#!/usr/bin/env bash
# Validates every shipped Envoy config against the built .wasm with
# `envoy --mode validate` (the filter's on_configure runs, so a plugin
# configuration the filter refuses fails here).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-$(scripts/setup.sh)}
FILTER_WASM=${FILTER_WASM:-$(scripts/build-wasm.sh)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sed -e "s|{{BIND}}|127.0.0.1|g" -e "s|{{ADMIN_PORT}}|0|g" -e "s|{{GATEWAY_PORT}}|0|g" \
    -e "s|{{FILTER_WASM}}|$FILTER_WASM|g" -e "s|{{LLM_HOST}}|127.0.0.1|g" -e "s|{{LLM_PORT}}|9902|g" \
    envoy/envoy.yaml > "$out/envoy.yaml"
OPENAI_API_KEY=sk-validate "$ENVOY_BIN" --mode validate -c "$out/envoy.yaml" --log-level error >/dev/null
echo "validate: envoy/envoy.yaml OK"
