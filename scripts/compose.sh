#!/usr/bin/env bash
# The demo gateway under docker compose, with images built here FROM scratch.
#
#   scripts/compose.sh          build the images, run the stack (Ctrl-C stops it)
#   scripts/compose.sh --check  build, start, check the documented answers, stop
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

if ! docker info >/dev/null 2>&1; then
  echo "compose: Docker does not answer ('docker info' failed). Install Docker Engine and docker-compose and start the daemon." >&2
  exit 1
fi
compose=(docker-compose)
command -v docker-compose >/dev/null 2>&1 || compose=(docker compose)

ENVOY_BIN=$(scripts/setup.sh)
FILTER_WASM=$(scripts/build-wasm.sh)
echo "compose: building the demo services" >&2
cargo build --quiet --release -p ai-auth-testkit --bin demo-idp --bin mock-llm >&2

ctx=.cache/docker
rm -rf "$ctx"
mkdir -p "$ctx/gateway/rootfs/etc/envoy" "$ctx/demo/rootfs/etc/demo"

# A binary and every library it loads, at the same paths, into a root filesystem.
with_libs() {
  local bin=$1 root=$2
  install -D -m 0755 "$bin" "$root/usr/local/bin/$(basename "$bin")"
  for lib in $(ldd "$bin" | grep -o '/[^ )]*'); do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

with_libs "$ENVOY_BIN" "$ctx/gateway/rootfs"
install -m 0644 "$FILTER_WASM" "$ctx/gateway/rootfs/etc/envoy/ai_auth_filter.wasm"
sed -e "s|{{BIND}}|0.0.0.0|g" -e "s|{{ADMIN_PORT}}|9900|g" -e "s|{{GATEWAY_PORT}}|10000|g" \
    -e "s|{{FILTER_WASM}}|/etc/envoy/ai_auth_filter.wasm|g" -e "s|{{LLM_HOST}}|mock-llm|g" -e "s|{{IDP_HOST}}|idp|g" -e "s|{{IDP_PORT}}|9901|g" -e "s|{{LLM_PORT}}|9902|g" \
    envoy/envoy.yaml > "$ctx/gateway/rootfs/etc/envoy/envoy.yaml"
cat > "$ctx/gateway/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/envoy", "-c", "/etc/envoy/envoy.yaml", "--concurrency", "2", "--disable-hot-restart", "--log-level", "warn"]
DOCKERFILE

with_libs target/release/demo-idp "$ctx/demo/rootfs"
with_libs target/release/mock-llm "$ctx/demo/rootfs"
install -m 0644 envoy/demo/idp-signing-key.pem "$ctx/demo/rootfs/etc/demo/idp-signing-key.pem"
cat > "$ctx/demo/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
DOCKERFILE

export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-demo-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')}"
GATEWAY_PORT=${GATEWAY_PORT:-10000}
IDP_PORT=${IDP_PORT:-9901}
export GATEWAY_PORT IDP_PORT
project=ai-auth-demo
"${compose[@]}" -p "$project" -f envoy/docker-compose.yaml build >&2

if [ "$mode" != "--check" ]; then
  echo "compose: gateway on http://127.0.0.1:$GATEWAY_PORT, identity provider on http://127.0.0.1:$IDP_PORT (see README for curl lines)"
  exec "${compose[@]}" -p "$project" -f envoy/docker-compose.yaml up
fi

trap '"${compose[@]}" -p "$project" -f envoy/docker-compose.yaml down --timeout 2 >/dev/null 2>&1 || true' EXIT
"${compose[@]}" -p "$project" -f envoy/docker-compose.yaml up -d >&2
gw="http://127.0.0.1:$GATEWAY_PORT"; idp="http://127.0.0.1:$IDP_PORT"
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$gw/v1/models" || true)
  if [ "$code" = 401 ]; then
    probe=$(curl -s "$idp/token?sub=probe" || true)
    [ -n "$probe" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw/v1/models")" = 200 ] && break
  fi
  sleep 0.2
done
failures=0
expect() {
  local want=$1 what=$2; shift 2
  local got; got=$(curl -s -o /dev/null -w '%{http_code}' "$@" || true)
  if [ "$got" = "$want" ]; then echo "ok   $want $what"; else echo "FAIL $what: expected $want, got $got"; failures=$((failures + 1)); fi
}
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
expect 200 "valid token (compose)" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=alice")" -d "$body"
expect 401 "no token (compose)" "$gw/v1/chat/completions" -d "$body"
expect 403 "wrong audience (compose)" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?aud=other-api")" -d "$body"
if [ "$failures" -ne 0 ]; then
  "${compose[@]}" -p "$project" -f envoy/docker-compose.yaml logs --tail 30 >&2 || true
  echo "compose check: $failures failure(s)"; exit 1
fi
echo "compose check: all answers as expected"
