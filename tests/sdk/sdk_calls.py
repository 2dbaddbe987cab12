"""Calls made with the official `openai` and `anthropic` Python SDKs, as an
LLM client would make them through the gateway; one JSON result per call.

Used by the Envoy tests (what an SDK shows for each of the filter's errors)
and by `scripts/demo.sh --check` (the demo gateway, end to end). The SDKs are
installed into .venv by scripts/setup.sh (pinned versions).

Input: a JSON list of calls, as the first argument or on stdin:
  {"sdk": "openai" | "anthropic", "base_url": "...", "api_key": "...",
   "call": "chat" | "chat_stream" | "models" | "messages" | "messages_stream",
   "auth_token": true,   (anthropic only: send the key as Authorization: Bearer, not x-api-key)
   "model": "..."}       (optional: the model asked for)
Output: a JSON list, one result per call:
  {"ok": true, "text": "...", "chunks": N, "models": [...]}
  {"ok": false, "exception": "AuthenticationError", "status": 401, "message": str(e), "body": e.body}
"""

import json
import sys

try:
    import anthropic
    import openai
except ImportError as e:  # a test that needs the SDKs fails, saying how to get them
    sys.stderr.write(f"sdk_calls: {e}; run scripts/setup.sh (installs openai and anthropic into .venv)\n")
    sys.exit(3)

MESSAGES = [{"role": "user", "content": "Hello"}]


def openai_call(client, call, model):
    model = model or "gpt-4o-mini"
    if call == "chat":
        r = client.chat.completions.create(model=model, messages=MESSAGES)
        return {"text": r.choices[0].message.content, "model": r.model}
    if call == "chat_stream":
        pieces = []
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        return {"text": "".join(pieces), "chunks": len(pieces)}
    if call == "models":
        return {"models": [m.id for m in client.models.list()]}
    raise ValueError(f"unknown openai call {call}")


def anthropic_call(client, call, model):
    model = model or "claude-sonnet-4-5"
    if call == "messages":
        r = client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
        return {"text": "".join(b.text for b in r.content if b.type == "text"), "model": r.model}
    if call == "messages_stream":
        pieces = []
        with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
            for text in stream.text_stream:
                pieces.append(text)
            final = stream.get_final_message()
        return {"text": "".join(pieces), "chunks": len(pieces), "stop_reason": final.stop_reason}
    raise ValueError(f"unknown anthropic call {call}")


def run(spec):
    sdk = spec["sdk"]
    try:
        if sdk == "openai":
            client = openai.OpenAI(base_url=spec["base_url"], api_key=spec["api_key"], max_retries=0, timeout=20)
            result = openai_call(client, spec["call"], spec.get("model"))
        else:
            key = {"auth_token": spec["api_key"]} if spec.get("auth_token") else {"api_key": spec["api_key"]}
            client = anthropic.Anthropic(base_url=spec["base_url"], max_retries=0, timeout=20, **key)
            result = anthropic_call(client, spec["call"], spec.get("model"))
        return {"ok": True, **result}
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        return {"ok": False, "exception": type(e).__name__, "status": e.status_code,
                "message": str(e), "body": e.body}
    except (openai.APIError, anthropic.APIError) as e:
        return {"ok": False, "exception": type(e).__name__, "status": None, "message": str(e), "body": None}


def main():
    calls = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    print(json.dumps([run(c) for c in calls]))


if __name__ == "__main__":
    main()
