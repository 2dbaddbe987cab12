#!/usr/bin/env bash
# Validates every shipped configuration against the built .wasm with
# `envoy --mode validate`, which runs the filter's configuration check (a
# plugin configuration the filter refuses fails here):
#   envoy/envoy.yaml                               the demo / docker compose gateway
#   envoy/istio/wasmplugin.yaml                    its pluginConfig
#   envoy/envoy-gateway/envoyextensionpolicy.yaml  its wasm[].config
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-$(scripts/setup.sh)}
FILTER_WASM=${FILTER_WASM:-$(scripts/build-wasm.sh)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

validate() {
  local name=$1 file=$2
  if ! OPENAI_API_KEY=sk-validate ANTHROPIC_API_KEY=sk-ant-validate KEYCLOAK_JWKS="$(cat envoy/demo/jwks.json)" \
      "$ENVOY_BIN" --mode validate -c "$file" --log-level error > "$out/log" 2>&1; then
    echo "validate: $name is refused:" >&2
    grep -E "ai_auth|error" "$out/log" | tail -n 5 >&2
    exit 1
  fi
  echo "validate: $name OK"
}

ADMIN_PORT=0 GATEWAY_PORT=0 FILTER_WASM=$FILTER_WASM scripts/render-demo-config.sh > "$out/envoy.yaml"
validate envoy/envoy.yaml "$out/envoy.yaml"

# The Kubernetes manifests: their plugin configuration in a minimal bootstrap,
# with the environment variables they read passed as host keys.
.venv/bin/python - "$FILTER_WASM" "$out" <<'PY'
import json, sys, yaml
wasm, out = sys.argv[1], sys.argv[2]
def bootstrap(config, keys):
    return {
        "static_resources": {"listeners": [{
            "name": "gateway",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "gateway",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [
                        {"name": "envoy.filters.http.wasm", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {"name": "ai_auth", "root_id": "ai_auth",
                                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)},
                                       "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}},
                                                     "environment_variables": {"host_env_keys": keys}}}}},
                        {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}
istio = yaml.safe_load(open("envoy/istio/wasmplugin.yaml"))
keys = [e["name"] for e in istio["spec"].get("vmConfig", {}).get("env", [])]
json.dump(bootstrap(istio["spec"]["pluginConfig"], keys), open(f"{out}/istio.json", "w"))
eg = yaml.safe_load(open("envoy/envoy-gateway/envoyextensionpolicy.yaml"))
w = eg["spec"]["wasm"][0]
json.dump(bootstrap(w["config"], w.get("env", {}).get("hostKeys", [])), open(f"{out}/envoy-gateway.json", "w"))
PY
validate envoy/istio/wasmplugin.yaml "$out/istio.json"
validate envoy/envoy-gateway/envoyextensionpolicy.yaml "$out/envoy-gateway.json"
