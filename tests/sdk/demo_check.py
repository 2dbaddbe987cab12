"""The demo gateway driven by the official `openai` and `anthropic` Python
SDKs, as an application would use it: the whole chain (JWT, the demo auth
service, the provider key) for both providers, streams included, and the
errors each SDK raises. Run by `scripts/demo.sh --check` (so by .ci/run).

Usage: demo_check.py <gateway URL> <identity provider URL> <http | grpc>
The last argument is the transport of the gateway's passthrough: the demo
auth service names it in a header the mock provider's answer repeats, so a
check that went over the other transport, or none, fails here.
Prints one line per check and `N passed, N failed`; exits 1 on a failure.
"""

import base64
import json
import sys
import time
import urllib.request

from sdk_calls import run


def token(idp, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{idp}/token?{query}", timeout=10) as r:
        return r.read().decode()


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def main():
    gateway, idp, transport = sys.argv[1], sys.argv[2], sys.argv[3]
    v1 = f"{gateway}/v1"
    alice = token(idp, sub="alice")
    expired = token(idp, sub="alice", expires_in=-300)
    audience = token(idp, sub="alice", aud="other-api")
    guest = token(idp, sub="alice", roles="guest")
    mallory = token(idp, sub="mallory")

    def openai(key, call):
        return {"sdk": "openai", "base_url": v1, "api_key": key, "call": call}

    def anthropic(key, call, bearer=False):
        return {"sdk": "anthropic", "base_url": gateway, "api_key": key, "call": call, "auth_token": bearer}

    greeting = f"Hello alice (plan pro, checked over {transport}), this is the mock provider."
    # (what, call, check of the result)
    checks = [
        ("openai chat.completions.create", openai(alice, "chat"),
         lambda r: r["ok"] and r["text"] == greeting),
        ("openai chat.completions.create(stream=True): at least 2 chunks", openai(alice, "chat_stream"),
         lambda r: r["ok"] and r["chunks"] >= 2 and r["text"] == greeting),
        ("openai models.list", openai(alice, "models"),
         lambda r: r["ok"] and "gpt-4o-mini" in r["models"]),
        ("anthropic messages.create (JWT as x-api-key)", anthropic(alice, "messages"),
         lambda r: r["ok"] and r["text"] == greeting),
        ("anthropic messages.stream: at least 2 text chunks", anthropic(alice, "messages_stream"),
         lambda r: r["ok"] and r["chunks"] >= 2 and r["text"] == greeting and r["stop_reason"] == "end_turn"),
        ("anthropic messages.create (JWT as Authorization: Bearer)", anthropic(alice, "messages", bearer=True),
         lambda r: r["ok"] and r["text"] == greeting),
        ("openai: expired token raises AuthenticationError naming it", openai(expired, "chat"),
         lambda r: r["exception"] == "AuthenticationError" and "Jwt is expired" in r["message"]),
        ("openai: wrong audience raises PermissionDeniedError naming it", openai(audience, "chat"),
         lambda r: r["exception"] == "PermissionDeniedError" and "Audiences in Jwt are not allowed" in r["message"]),
        ("openai: missing role raises PermissionDeniedError naming it", openai(guest, "chat_stream"),
         lambda r: r["exception"] == "PermissionDeniedError" and "realm_access.roles" in r["message"]),
        ("anthropic: expired token raises AuthenticationError (authentication_error)", anthropic(expired, "messages"),
         lambda r: r["exception"] == "AuthenticationError" and "Jwt is expired" in r["message"]
         and r["body"]["error"]["type"] == "authentication_error"),
        ("anthropic: missing role raises PermissionDeniedError", anthropic(guest, "messages_stream"),
         lambda r: r["exception"] == "PermissionDeniedError" and "realm_access.roles" in r["message"]),
        ("openai: the auth service's denial reaches the SDK as it sent it", openai(mallory, "chat"),
         lambda r: r["exception"] == "PermissionDeniedError" and "the account of mallory is suspended" in r["message"]),
        ("anthropic: the auth service's denial, Anthropic-shaped", anthropic(mallory, "messages"),
         lambda r: r["exception"] == "PermissionDeniedError" and r["body"]["error"]["type"] == "permission_error"
         and "suspended" in r["message"]),
    ]
    started = time.monotonic()
    results = [run(call) for _, call, _ in checks]
    elapsed = time.monotonic() - started
    passed = failed = 0
    for (what, _, check), result in zip(checks, results):
        try:
            good = bool(check(result))
        except (KeyError, TypeError):
            good = False
        if good:
            passed += 1
            print(f"ok   {what}")
        else:
            failed += 1
            print(f"FAIL {what}: {json.dumps(result)[:400]}")
    lifetime = claims(alice)["exp"] - int(time.time())
    if 3500 <= lifetime <= 3600:
        passed += 1
        print(f"ok   demo tokens last an hour by default ({lifetime} s left)")
    else:
        failed += 1
        print(f"FAIL demo tokens should last an hour, this one has {lifetime} s left")
    for secret in (alice, expired, mallory):
        if any(secret in json.dumps(r) for r in results):
            failed += 1
            print("FAIL a client token came back in an answer")
    print(f"sdk calls took {elapsed:.1f} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
