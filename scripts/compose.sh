#!/usr/bin/env bash
# The demo gateway under docker compose, with images built here FROM scratch.
#
#   scripts/compose.sh          build the images, run the stack in the foreground;
#                               Ctrl-C stops it and removes its containers and network
#   scripts/compose.sh down     stop and remove the stack (containers, network)
#   scripts/compose.sh --check  build, then check: the documented answers and the
#                               openai / anthropic SDKs through it, Envoy's admin on
#                               127.0.0.1, Ctrl-C (stop time, each service ending on
#                               SIGTERM), `docker-compose down` and `compose.sh down`
#
# Ports (override with the variables): gateway 10000 (passthrough over HTTP),
# 10001 (GRPC_GATEWAY_PORT: passthrough over gRPC), identity provider 9901,
# Envoy admin 9900 (published on 127.0.0.1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

if ! docker info >/dev/null 2>&1; then
  echo "compose: Docker does not answer ('docker info' failed). Install Docker Engine and docker-compose and start the daemon." >&2
  exit 1
fi
project=ai-auth-demo
if command -v docker-compose >/dev/null 2>&1; then
  compose_bin=(docker-compose)
else
  compose_bin=(docker compose)
fi
compose=("${compose_bin[@]}" -p "$project" -f envoy/docker-compose.yaml)

GATEWAY_PORT=${GATEWAY_PORT:-10000}
GRPC_GATEWAY_PORT=${GRPC_GATEWAY_PORT:-10001}
IDP_PORT=${IDP_PORT:-9901}
ADMIN_PORT=${ADMIN_PORT:-9900}
export GATEWAY_PORT GRPC_GATEWAY_PORT IDP_PORT ADMIN_PORT

if [ "$mode" = down ]; then
  "${compose[@]}" down --remove-orphans --timeout 5
  exit 0
fi

build_images() {
  local envoy_bin filter_wasm ctx=.cache/docker
  envoy_bin=$(scripts/setup.sh)
  filter_wasm=$(scripts/build-wasm.sh)
  echo "compose: building the demo services" >&2
  cargo build --quiet -p ai-auth-testkit --bin demo-idp --bin mock-llm --bin demo-authz >&2
  rm -rf "$ctx"
  mkdir -p "$ctx/gateway/rootfs/etc/envoy" "$ctx/demo/rootfs/etc/demo"
  # A binary (without its debug sections) and every library it loads, at the
  # same paths, into a root filesystem.
  with_libs() {
    local bin=$1 root=$2 dest
    dest="$root/usr/local/bin/$(basename "$bin")"
    install -D -m 0755 "$bin" "$dest"
    strip --strip-debug "$dest" 2>/dev/null || true
    for lib in $(ldd "$bin" | grep -o '/[^ )]*'); do
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
  }
  with_libs "$envoy_bin" "$ctx/gateway/rootfs"
  install -m 0644 "$filter_wasm" "$ctx/gateway/rootfs/etc/envoy/ai_auth_filter.wasm"
  BIND=0.0.0.0 ADMIN_PORT=9900 GATEWAY_PORT=10000 GRPC_GATEWAY_PORT=10001 FILTER_WASM=/etc/envoy/ai_auth_filter.wasm \
    IDP_HOST=idp IDP_PORT=9901 LLM_HOST=mock-llm LLM_PORT=9902 AUTHZ_HOST=authz AUTHZ_PORT=9903 AUTHZ_GRPC_PORT=9904 \
    scripts/render-demo-config.sh > "$ctx/gateway/rootfs/etc/envoy/envoy.yaml"
  cat > "$ctx/gateway/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/envoy", "-c", "/etc/envoy/envoy.yaml", "--concurrency", "2", "--disable-hot-restart", "--log-level", "warn"]
DOCKERFILE
  for service in demo-idp mock-llm demo-authz; do
    with_libs "target/debug/$service" "$ctx/demo/rootfs"
  done
  install -m 0644 envoy/demo/idp-signing-key.pem "$ctx/demo/rootfs/etc/demo/idp-signing-key.pem"
  cat > "$ctx/demo/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
DOCKERFILE
  "${compose[@]}" build >&2
}

random_key() { echo "$1$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"; }
export OPENAI_API_KEY="${OPENAI_API_KEY:-$(random_key sk-demo-)}"
export ANTHROPIC_API_KEY="${ANTHROPIC_API_KEY:-$(random_key sk-ant-demo-)}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-AKIADEMO$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n' | tr a-f A-F)}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-$(random_key demo-aws-secret-)}"
gw="http://127.0.0.1:$GATEWAY_PORT"; gw_grpc="http://127.0.0.1:$GRPC_GATEWAY_PORT"; idp="http://127.0.0.1:$IDP_PORT"

if [ "$mode" = run ] || [ "$mode" = --run-built ]; then
  [ "$mode" = run ] && build_images
  echo "compose: gateway on $gw (passthrough over HTTP) and $gw_grpc (over gRPC), identity provider on $idp, Envoy admin on http://127.0.0.1:$ADMIN_PORT"
  echo "compose: Ctrl-C (or 'scripts/compose.sh down' elsewhere) stops the stack and removes it"
  # Ctrl-C reaches docker-compose too, which stops the containers (each
  # service ends on SIGTERM at once); then the containers and the network go.
  trap '"${compose[@]}" down --remove-orphans --timeout 5 >/dev/null 2>&1 || true' EXIT
  "${compose[@]}" up
  exit 0
fi

[ "$mode" = --check ] || { echo "usage: scripts/compose.sh [down | --check]" >&2; exit 2; }
build_images
work=.cache/compose-check
rm -rf "$work"; mkdir -p "$work"
failures=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
running() { docker ps -q --filter "label=com.docker.compose.project=$project" | wc -l; }
left_over() {
  echo "$(docker ps -aq --filter "label=com.docker.compose.project=$project" | wc -l) containers," \
       "$(docker network ls -q --filter "label=com.docker.compose.project=$project" | wc -l) networks"
}
wait_ready() {
  for _ in $(seq 1 150); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$gw/v1/models" || true)" = 401 ]; then
      probe=$(curl -s "$idp/token?sub=probe" || true)
      [ -n "$probe" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw/v1/models")" = 200 ] \
        && [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw_grpc/v1/models")" = 200 ] && return 0
    fi
    sleep 0.2
  done
  return 1
}
cleanup() { "${compose[@]}" down --remove-orphans --timeout 1 >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

# 1. The stack as a user runs it: `scripts/compose.sh` in the foreground of
# its own session (a terminal's process group), stopped by Ctrl-C (SIGINT to
# the whole group).
setsid bash -c 'echo $$ > "$1/pgid"; exec scripts/compose.sh --run-built' _ "$work" > "$work/up.log" 2>&1 &
if ! wait_ready; then
  fail "the stack did not become ready"; tail -n 30 "$work/up.log"; exit 1
fi
expect() {
  local want=$1 what=$2; shift 2
  local got; got=$(curl -s -o "$work/body" -w '%{http_code}' "$@" || true)
  if [ "$got" = "$want" ]; then ok "$want $what"; else fail "$what: expected $want, got $got: $(head -c 200 "$work/body")"; fi
}
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
expect 200 "valid token (compose)" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=alice")" -d "$body"
expect 401 "no token (compose)" "$gw/v1/chat/completions" -d "$body"
expect 403 "wrong audience (compose)" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?aud=other-api")" -d "$body"
expect 403 "denied by the auth service (compose)" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=mallory")" -d "$body"
expect 200 "valid token, passthrough over gRPC (compose)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=alice")" -d "$body"
if grep -q 'plan pro, checked over grpc' "$work/body"; then ok "the gRPC auth service's headers reached the provider (compose)"
else fail "the provider did not see the gRPC auth service's headers: $(head -c 200 "$work/body")"; fi
expect 403 "denied by the auth service over gRPC (compose)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=mallory")" -d "$body"
if grep -q 'the account of mallory is suspended' "$work/body"; then ok "the gRPC auth service's denial body reached the client (compose)"
else fail "not the gRPC auth service's denial: $(head -c 200 "$work/body")"; fi
expect 200 "Bedrock-shaped route, SigV4-signed by the gateway (compose)" "$gw/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse" -H "Authorization: Bearer $(curl -s "$idp/token?sub=alice")" -H "content-type: application/json" -d '{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}'
for transport in http grpc; do
  url=$gw; [ "$transport" = grpc ] && url=$gw_grpc
  if (cd tests/sdk && ../../.venv/bin/python demo_check.py "$url" "$idp" "$transport") > "$work/sdk-$transport.log" 2>&1; then
    ok "the openai and anthropic SDKs through the compose gateway, passthrough over $transport ($(tail -n 1 "$work/sdk-$transport.log"))"
  else
    fail "the SDKs through the compose gateway, passthrough over $transport:"; cat "$work/sdk-$transport.log"
  fi
done
allowed=$(curl -s "http://127.0.0.1:$ADMIN_PORT/stats?filter=ai_auth.jwt_authn.allowed" | grep -o '[0-9]*$' || true)
if [ "${allowed:-0}" -gt 0 ]; then ok "Envoy's admin answers on 127.0.0.1:$ADMIN_PORT (jwt_authn.allowed: $allowed)"; else fail "no stats on 127.0.0.1:$ADMIN_PORT"; fi
published=$(docker port "$project"_gateway_1 9900/tcp 2>/dev/null || docker port "$project-gateway-1" 9900/tcp 2>/dev/null || true)
case "$published" in
  127.0.0.1:*) ok "the admin port is published on 127.0.0.1 only ($published)" ;;
  *) fail "the admin port is published as '$published', not on 127.0.0.1 only" ;;
esac

pgid=$(cat "$work/pgid")
# How each container ends: 0 (its own SIGTERM handler) or 143 (SIGTERM's
# default action, through the init) is a clean stop; 137 is a kill after
# the grace period.
docker events --filter "label=com.docker.compose.project=$project" --filter event=die \
  --format '{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}' > "$work/exits" 2>/dev/null &
events_pid=$!
sleep 0.5
start=$(date +%s.%N)
kill -INT -- "-$pgid"
for _ in $(seq 1 300); do [ "$(running)" = 0 ] && break; sleep 0.05; done
stopped=$(date +%s.%N)
for _ in $(seq 1 300); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
ended=$(date +%s.%N)
since() { awk -v a="$start" -v b="$1" 'BEGIN { printf "%.1f", b - a }'; }
echo "compose: Ctrl-C stopped the stack in $(since "$stopped") s; the script ended, containers and network removed, in $(since "$ended") s"
[ "$(running)" = 0 ] && ok "Ctrl-C stopped every container" || fail "containers still running after Ctrl-C"
[ "$(left_over)" = "0 containers, 0 networks" ] && ok "Ctrl-C left nothing behind" || fail "Ctrl-C left $(left_over)"
kill "$events_pid" 2>/dev/null || true
wait "$events_pid" 2>/dev/null || true
for service in gateway idp authz mock-llm; do
  code=$(grep -E "^${project}[_-]${service}[_-]1 " "$work/exits" | awk '{print $2}' | tail -n 1)
  case "$code" in
    0|143) ok "$service ended on SIGTERM (exit code $code)" ;;
    *) fail "$service did not end cleanly on SIGTERM (exit code '${code:-none}'; 137 is a kill after the grace period)" ;;
  esac
done

# 2. `docker-compose down` as a user types it, in the repository root.
"${compose[@]}" up -d >/dev/null 2>&1
wait_ready || fail "the stack did not start again"
(unset GATEWAY_PORT GRPC_GATEWAY_PORT IDP_PORT ADMIN_PORT; "${compose_bin[@]}" down --timeout 5 >/dev/null 2>&1)
[ "$(left_over)" = "0 containers, 0 networks" ] && ok "a plain '${compose_bin[*]} down' in the repository removes the stack" \
  || fail "a plain '${compose_bin[*]} down' left $(left_over)"

# 3. scripts/compose.sh down.
"${compose[@]}" up -d >/dev/null 2>&1
wait_ready || fail "the stack did not start again"
scripts/compose.sh down >/dev/null 2>&1
[ "$(left_over)" = "0 containers, 0 networks" ] && ok "scripts/compose.sh down removes the stack" \
  || fail "scripts/compose.sh down left $(left_over)"

if [ "$failures" -ne 0 ]; then
  "${compose[@]}" logs --tail 30 >&2 || true
  echo "compose check: $failures failure(s)"; exit 1
fi
echo "compose check: all answers as expected"
