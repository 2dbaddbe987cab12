#!/usr/bin/env bash
# Builds the OCI image Istio (WasmPlugin url: oci://...) and Envoy Gateway
# (EnvoyExtensionPolicy code.type: Image) pull: FROM scratch, one layer
# holding the filter as /plugin.wasm, Istio's "compat" image variant.
#
#   scripts/build-oci.sh            build ai-auth-filter:<version> (and :local) into the local Docker engine
#   scripts/build-oci.sh --check    build, then check that the image holds exactly the built module:
#                                   one layer, one file, plugin.wasm, with the .wasm's SHA-256
#
# Publish it with `docker tag ai-auth-filter:<version> <registry>/ai-auth-filter:<version>`
# and `docker push`; the manifests in envoy/ name registry.example.com.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}

if ! docker info >/dev/null 2>&1; then
  echo "oci: Docker does not answer ('docker info' failed). Install Docker Engine and start the daemon." >&2
  exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image=ai-auth-filter:$version
wasm=${FILTER_WASM:-$(scripts/build-wasm.sh)}
ctx=.cache/oci
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$wasm" "$ctx/plugin.wasm"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY plugin.wasm ./
DOCKERFILE
if ! docker build --quiet -t "$image" -t ai-auth-filter:local "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  exit 1
fi
echo "oci: built $image ($(stat -c %s "$ctx/plugin.wasm") bytes of wasm)" >&2

if [ "$mode" = --check ]; then
  saved=$(mktemp -d)
  trap 'rm -rf "$saved"' EXIT
  docker save "$image" -o "$saved/image.tar"
  .venv/bin/python - "$saved/image.tar" "$wasm" <<'PY'
import hashlib, io, json, sys, tarfile
image, wasm = sys.argv[1], sys.argv[2]
want = hashlib.sha256(open(wasm, "rb").read()).hexdigest()
with tarfile.open(image) as outer:
    manifest = json.load(outer.extractfile("manifest.json"))
    if len(manifest) != 1:
        sys.exit(f"oci: FAIL the saved image has {len(manifest)} manifests, expected 1")
    layers = manifest[0]["Layers"]
    if len(layers) != 1:
        sys.exit(f"oci: FAIL the image has {len(layers)} layers, expected 1 (Istio reads the module from the only layer)")
    layer = tarfile.open(fileobj=io.BytesIO(outer.extractfile(layers[0]).read()))
    files = [m for m in layer.getmembers() if m.isfile()]
    names = [m.name.lstrip("./") for m in files]
    if names != ["plugin.wasm"]:
        sys.exit(f"oci: FAIL the layer holds {names}, expected exactly ['plugin.wasm']")
    got = hashlib.sha256(layer.extractfile(files[0]).read()).hexdigest()
    if got != want:
        sys.exit(f"oci: FAIL plugin.wasm has SHA-256 {got}, the built module {want}")
print(f"ok oci image holds exactly the built module: plugin.wasm sha256:{want}")
PY
fi
echo "$image"
