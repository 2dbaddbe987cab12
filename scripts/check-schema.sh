#!/usr/bin/env bash
# Checks the JSON Schema of the plugin configuration, envoy/ai-auth-filter.schema.json:
#   1. it is the one the configuration types generate today (no drift);
#   2. every example configuration validates against it: the README's
#      configuration blocks, the manifests' and the demo's, and every
#      configuration a real Envoy accepted in the tests (recorded in
#      $AI_AUTH_CONFIG_CORPUS by the testkit when scripts/test.sh sets it);
#   3. the README's examples also load in Envoy (--mode validate, our .wasm);
#   4. each bad configuration of tests/fixtures/bad-configs/ is refused by
#      both the schema and the filter in Envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=${ENVOY_BIN:-$(scripts/setup.sh)}
FILTER_WASM=${FILTER_WASM:-$(scripts/build-wasm.sh)}
schema=envoy/ai-auth-filter.schema.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo run --quiet -p ai-auth-tools --bin config-schema > "$work/generated.json"
if ! diff -q "$work/generated.json" "$schema" >/dev/null; then
  diff -u "$schema" "$work/generated.json" | head -n 40 >&2
  echo "check-schema: FAIL $schema is not what the configuration types generate; regenerate it:" >&2
  echo "  cargo run -q -p ai-auth-tools --bin config-schema > $schema" >&2
  exit 1
fi
echo "check-schema: $schema is current"

FILTER_WASM=$FILTER_WASM scripts/render-demo-config.sh > "$work/demo-envoy.yaml"
.venv/bin/python - "$schema" "$work" "${AI_AUTH_CONFIG_CORPUS:-}" <<'PY'
import glob, json, os, re, sys, yaml
import jsonschema
schema_path, work, corpus = sys.argv[1:4]
validator = jsonschema.Draft202012Validator(json.load(open(schema_path)))
top = set(json.load(open(schema_path))["properties"])
good, failures = {}, []

# README blocks that are whole configurations (fragments are skipped: their
# top level is not made of the configuration's sections).
readme = open("README.md").read()
jwks = open("envoy/demo/jwks.json").read()
for n, block in enumerate(re.findall(r"```json\n(.*?)```", readme, re.S), 1):
    try:
        doc = json.loads(block.replace('"{\\"keys\\": [...]}"', json.dumps(jwks)))
    except json.JSONDecodeError:
        continue
    if isinstance(doc, dict) and doc and set(doc) <= top:
        good[f"README block {n}"] = doc
for path in ("envoy/istio/wasmplugin.yaml", "envoy/istio/envoyfilter.yaml", "envoy/envoy-gateway/envoyextensionpolicy.yaml"):
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        spec = d.get("spec", {})
        if "pluginConfig" in spec:
            good[path] = spec["pluginConfig"]
        for w in spec.get("wasm", []):
            good[path] = w["config"]
        for p in spec.get("configPatches", []):
            good[path] = json.loads(p["patch"]["value"]["typed_config"]["config"]["configuration"]["value"])
# The demo gateway: each listener's plugin configuration (passthrough over
# HTTP and over gRPC).
demo = yaml.safe_load(open(f"{work}/demo-envoy.yaml"))
for listener in demo["static_resources"]["listeners"]:
    for chain in listener["filter_chains"]:
        for f in chain["filters"][0]["typed_config"]["http_filters"]:
            if f["name"] == "envoy.filters.http.wasm":
                good[f"envoy/envoy.yaml listener {listener['name']}"] = json.loads(f["typed_config"]["config"]["configuration"]["value"])
if not any(k.startswith("envoy/envoy.yaml") for k in good):
    sys.exit("check-schema: FAIL no plugin configuration found in envoy/envoy.yaml")
recorded = sorted(glob.glob(os.path.join(corpus, "*.json"))) if corpus else []
for path in recorded:
    good[f"test config {os.path.basename(path)}"] = json.load(open(path))
if corpus and not recorded:
    sys.exit(f"check-schema: FAIL no configuration was recorded in {corpus} (did the Envoy tests run?)")

for name, doc in good.items():
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        failures.append(f"{name}: at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}")
bad = sorted(glob.glob("tests/fixtures/bad-configs/*.json"))
if not bad:
    sys.exit("check-schema: FAIL tests/fixtures/bad-configs/ is empty")
for path in bad:
    if validator.is_valid(json.load(open(path))):
        failures.append(f"{path}: the schema accepts a configuration the filter refuses")
if failures:
    sys.exit("check-schema: FAIL\n  " + "\n  ".join(failures))
print(f"check-schema: the schema accepts {len(good)} example configurations "
      f"({len(recorded)} recorded from the Envoy tests) and refuses the {len(bad)} bad ones")
# For Envoy: the README's examples (which must load) and the bad corpus (which must not).
json.dump({k: v for k, v in good.items() if k.startswith("README")}, open(f"{work}/readme.json", "w"))
PY

# Loads one plugin configuration in Envoy's validate mode with our .wasm;
# the environment variables the examples name are set.
envoy_validate() {
  local config_file=$1 out=$2
  .venv/bin/python - "$FILTER_WASM" "$config_file" "$out.bootstrap.json" <<'PY'
import json, sys
wasm, config_file, out = sys.argv[1:4]
keys = ["KEYCLOAK_JWKS", "OPENAI_API_KEY", "AZURE_OPENAI_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "ACME_KEY", "SHARED_KEY", "GATEWAY_API_KEYS"]
filt = {"name": "envoy.filters.http.wasm", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    "config": {"name": "ai_auth", "root_id": "ai_auth",
               "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": open(config_file).read()},
               "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}},
                             "environment_variables": {"host_env_keys": keys}}}}}
hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
       "stat_prefix": "gateway",
       "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
       "http_filters": [filt, {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
json.dump({"static_resources": {"listeners": [{"name": "gateway",
    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}]}},
    open(out, "w"))
PY
  OPENAI_API_KEY=sk-example AZURE_OPENAI_KEY=az-example ANTHROPIC_API_KEY=sk-ant-example GEMINI_API_KEY=g-example \
    ACME_KEY=acme-example SHARED_KEY=shared-example GATEWAY_API_KEYS='[]' KEYCLOAK_JWKS="$(cat envoy/demo/jwks.json)" \
    "$ENVOY_BIN" --mode validate -c "$out.bootstrap.json" --log-level error > "$out.log" 2>&1
}

.venv/bin/python -c "
import json, sys
for i, (name, doc) in enumerate(json.load(open('$work/readme.json')).items()):
    open(f'$work/readme-{i}.json', 'w').write(json.dumps(doc)); print(name)
" > "$work/readme-names"
i=0
while read -r name; do
  if ! envoy_validate "$work/readme-$i.json" "$work/readme-$i"; then
    grep -E "invalid configuration|error" "$work/readme-$i.log" | head -n 3 >&2
    echo "check-schema: FAIL $name does not load in Envoy" >&2
    exit 1
  fi
  i=$((i + 1))
done < "$work/readme-names"
echo "check-schema: the README's $i configuration examples load in Envoy"
n=0
for bad in tests/fixtures/bad-configs/*.json; do
  if envoy_validate "$bad" "$work/bad"; then
    echo "check-schema: FAIL Envoy loads $bad, which the filter should refuse" >&2
    exit 1
  fi
  if ! grep -q "invalid configuration" "$work/bad.log"; then
    grep -E "error" "$work/bad.log" | head -n 3 >&2
    echo "check-schema: FAIL $bad was refused, but not by the filter's configuration check" >&2
    exit 1
  fi
  n=$((n + 1))
done
echo "ok check-schema: the schema is current; examples accepted; $n bad configurations refused by the schema and by the filter in Envoy"
