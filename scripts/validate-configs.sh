#!/usr/bin/env bash
# Validates every shipped configuration against the built .wasm with
# `envoy --mode validate`, which runs the filter's configuration check (a
# plugin configuration the filter refuses fails here):
#   envoy/envoy.yaml                               the demo / docker compose gateway
#   envoy/istio/wasmplugin.yaml                    its pluginConfig
#   envoy/istio/envoyfilter.yaml                   its whole wasm HTTP filter
#   envoy/envoy-gateway/envoyextensionpolicy.yaml  its wasm[].config
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-$(scripts/setup.sh)}
FILTER_WASM=${FILTER_WASM:-$(scripts/build-wasm.sh)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

validate() {
  local name=$1 file=$2
  if ! OPENAI_API_KEY=sk-validate ANTHROPIC_API_KEY=sk-ant-validate AWS_ACCESS_KEY_ID=AKIAVALIDATE AWS_SECRET_ACCESS_KEY=validate KEYCLOAK_JWKS="$(cat envoy/demo/jwks.json)" \
      "$ENVOY_BIN" --mode validate -c "$file" --log-level error > "$out/log" 2>&1; then
    echo "validate: $name is refused:" >&2
    grep -E "ai_auth|error" "$out/log" | tail -n 5 >&2
    exit 1
  fi
  echo "validate: $name OK"
}

ADMIN_PORT=0 GATEWAY_PORT=0 GRPC_GATEWAY_PORT=0 FILTER_WASM=$FILTER_WASM scripts/render-demo-config.sh > "$out/envoy.yaml"
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
def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

# Each manifest's objects carry the fields their API requires (apiVersion,
# kind, metadata and the spec fields the CRD marks required, with the enum
# values it allows), so a typo fails here rather than at kubectl apply.
problems = []
def need(cond, where, what):
    if not cond:
        problems.append(f"{where}: {what}")
def ref_ok(ref):
    return isinstance(ref, dict) and all(ref.get(k) for k in ("group", "kind", "name"))
API = {
    "WasmPlugin": "extensions.istio.io/v1alpha1",
    "EnvoyFilter": "networking.istio.io/v1alpha3",
    "EnvoyExtensionPolicy": "gateway.envoyproxy.io/v1alpha1",
    "Backend": "gateway.envoyproxy.io/v1alpha1",
    "BackendTLSPolicy": "gateway.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
def check(path, d):
    kind = d.get("kind")
    where = f"{path} {kind}/{(d.get('metadata') or {}).get('name')}"
    need(kind in API, where, f"unexpected kind {kind!r}")
    need(d.get("apiVersion") == API.get(kind), where, f"apiVersion {d.get('apiVersion')!r}, expected {API.get(kind)!r}")
    need((d.get("metadata") or {}).get("name"), where, "metadata.name is required")
    spec = d.get("spec") or {}
    if kind == "WasmPlugin":
        need(str(spec.get("url", "")).startswith(("oci://", "https://", "file://")), where, "spec.url must be oci://, https:// or file://")
        need(spec.get("phase") in ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"), where, "spec.phase")
        need(spec.get("failStrategy") in ("FAIL_CLOSE", "FAIL_OPEN"), where, "spec.failStrategy")
        need(isinstance(spec.get("pluginConfig"), dict), where, "spec.pluginConfig must be an object")
        for e in (spec.get("vmConfig") or {}).get("env", []):
            need(e.get("name") and e.get("valueFrom", "INLINE") in ("INLINE", "HOST"), where, f"vmConfig.env {e}")
    elif kind == "EnvoyFilter":
        need(spec.get("configPatches"), where, "spec.configPatches is required")
        for p in spec.get("configPatches", []):
            need(p.get("applyTo") == "HTTP_FILTER", where, "applyTo HTTP_FILTER")
            need((p.get("match") or {}).get("context") in ("GATEWAY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "ANY"), where, "match.context")
            need((p.get("patch") or {}).get("operation") in ("INSERT_BEFORE", "INSERT_FIRST", "INSERT_AFTER", "ADD", "MERGE", "REPLACE", "REMOVE"), where, "patch.operation")
            need(((p.get("patch") or {}).get("value") or {}).get("name") == "envoy.filters.http.wasm", where, "patch.value.name")
    elif kind == "EnvoyExtensionPolicy":
        need(spec.get("targetRefs") and all(ref_ok(r) for r in spec["targetRefs"]), where, "spec.targetRefs need group, kind, name")
        for w in spec.get("wasm", []):
            code = w.get("code") or {}
            need(code.get("type") in ("HTTP", "Image", "ConfigMap"), where, "wasm[].code.type")
            need((code.get("image") or code.get("http") or {}).get("url"), where, "wasm[].code.<type>.url")
            need(isinstance(w.get("config"), dict), where, "wasm[].config must be an object")
    elif kind == "Backend":
        eps = spec.get("endpoints") or []
        need(eps, where, "spec.endpoints is required")
        for e in eps:
            fqdn = e.get("fqdn") or {}
            need(fqdn.get("hostname") and isinstance(fqdn.get("port"), int), where, "endpoints[].fqdn.hostname and port")
    elif kind == "BackendTLSPolicy":
        need(spec.get("targetRefs") and all(ref_ok(r) for r in spec["targetRefs"]), where, "spec.targetRefs need group, kind, name")
        v = spec.get("validation") or {}
        need(v.get("hostname"), where, "spec.validation.hostname is required")
        need(v.get("wellKnownCACertificates") == "System" or v.get("caCertificateRefs"), where, "spec.validation needs wellKnownCACertificates or caCertificateRefs")
    elif kind == "HTTPRoute":
        need(spec.get("parentRefs"), where, "spec.parentRefs")
        for r in spec.get("rules", []):
            for b in r.get("backendRefs", []):
                need(b.get("name") and (b.get("kind", "Service") != "Backend" or b.get("group") == "gateway.envoyproxy.io"), where, "backendRefs[] name, and group gateway.envoyproxy.io for a Backend")
                need(isinstance(b.get("port"), int), where, "backendRefs[].port")

istio_docs = docs("envoy/istio/wasmplugin.yaml") + docs("envoy/istio/envoyfilter.yaml")
eg_docs = docs("envoy/envoy-gateway/envoyextensionpolicy.yaml")
for d in istio_docs + eg_docs:
    check("manifest", d)
names = {(d["kind"], d["metadata"]["name"]) for d in eg_docs}
for d in eg_docs:
    for ref in (d.get("spec") or {}).get("targetRefs", []):
        need((ref["kind"], ref["name"]) in names, f"envoy-gateway {d['kind']}", f"targets {ref['kind']}/{ref['name']}, which the manifest does not define")
if problems:
    sys.exit("validate: manifest fields:\n  " + "\n  ".join(problems))
print("validate: manifest fields OK (" + ", ".join(sorted(d["kind"] for d in istio_docs + eg_docs)) + ")")

istio = next(d for d in istio_docs if d["kind"] == "WasmPlugin")
keys = [e["name"] for e in istio["spec"].get("vmConfig", {}).get("env", [])]
json.dump(bootstrap(istio["spec"]["pluginConfig"], keys), open(f"{out}/istio.json", "w"))
# The EnvoyFilter's whole HTTP filter (its typed config, plugin configuration
# string and VM options), with the module path pointed at the built .wasm.
envoyfilter = next(d for d in istio_docs if d["kind"] == "EnvoyFilter")
wasm_filter = envoyfilter["spec"]["configPatches"][0]["patch"]["value"]
wasm_filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = wasm
b = bootstrap({}, [])
b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0] = wasm_filter
json.dump(b, open(f"{out}/istio-envoyfilter.json", "w"))
eg = next(d for d in eg_docs if d["kind"] == "EnvoyExtensionPolicy")
w = eg["spec"]["wasm"][0]
json.dump(bootstrap(w["config"], w.get("env", {}).get("hostKeys", [])), open(f"{out}/envoy-gateway.json", "w"))
PY
validate envoy/istio/wasmplugin.yaml "$out/istio.json"
validate envoy/istio/envoyfilter.yaml "$out/istio-envoyfilter.json"
validate envoy/envoy-gateway/envoyextensionpolicy.yaml "$out/envoy-gateway.json"
