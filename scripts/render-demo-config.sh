#!/usr/bin/env bash
# Renders envoy/envoy.yaml (the demo gateway) to stdout, filling its
# {{...}} placeholders from these variables (defaults: the local demo):
#   BIND ADMIN_PORT GATEWAY_PORT GRPC_GATEWAY_PORT FILTER_WASM
#   IDP_HOST IDP_PORT AUTHZ_HOST AUTHZ_PORT AUTHZ_GRPC_PORT LLM_HOST LLM_PORT
# Used by scripts/demo.sh, scripts/compose.sh and scripts/validate-configs.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rendered=$(sed -e "s|{{BIND}}|${BIND:-127.0.0.1}|g" \
    -e "s|{{ADMIN_PORT}}|${ADMIN_PORT:-9900}|g" \
    -e "s|{{GATEWAY_PORT}}|${GATEWAY_PORT:-10000}|g" \
    -e "s|{{GRPC_GATEWAY_PORT}}|${GRPC_GATEWAY_PORT:-10001}|g" \
    -e "s|{{FILTER_WASM}}|${FILTER_WASM:?the path of the .wasm}|g" \
    -e "s|{{IDP_HOST}}|${IDP_HOST:-127.0.0.1}|g" -e "s|{{IDP_PORT}}|${IDP_PORT:-9901}|g" \
    -e "s|{{LLM_HOST}}|${LLM_HOST:-127.0.0.1}|g" -e "s|{{LLM_PORT}}|${LLM_PORT:-9902}|g" \
    -e "s|{{AUTHZ_HOST}}|${AUTHZ_HOST:-127.0.0.1}|g" -e "s|{{AUTHZ_PORT}}|${AUTHZ_PORT:-9903}|g" \
    -e "s|{{AUTHZ_GRPC_PORT}}|${AUTHZ_GRPC_PORT:-9904}|g" \
    envoy/envoy.yaml)
if left=$(grep -o '{{[A-Z_]*}}' <<<"$rendered"); then
  echo "render-demo-config: placeholders left unfilled: $left" >&2
  exit 1
fi
printf '%s\n' "$rendered"
