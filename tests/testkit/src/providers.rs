//! Mock LLM providers for the demo: an OpenAI-shaped API
//! (`POST /v1/chat/completions`, `GET /v1/models`), an Anthropic-shaped
//! one (`POST /v1/messages`) and a Bedrock-shaped one (`POST
//! /model/{id}/converse`, SigV4-checked: see `bedrock`). Each checks its key as the real API does and
//! answers with the real API's error when it is wrong; both stream
//! (`"stream": true`) the way their SDKs read it: OpenAI's `data:` chunks
//! ending in `data: [DONE]`, Anthropic's named events.

use crate::http::{Action, Recorded};
use serde_json::{json, Value};
use std::time::Duration;

/// The keys the providers accept (the gateway injects them; clients never hold them).
#[derive(Debug, Clone)]
pub struct Keys {
    pub openai: String,
    pub anthropic: String,
    /// The AWS credentials a Bedrock-shaped request must be signed with.
    pub aws: crate::bedrock::AwsCredentials,
}

/// Pause between two streamed events: enough for a client to see them arrive apart.
const STREAM_GAP: Duration = Duration::from_millis(20);

/// One handler for both APIs, chosen by path.
pub fn handler(keys: Keys) -> impl Fn(&Recorded) -> Action + Send + Sync + 'static {
    move |r| {
        let path = r.path.split('?').next().unwrap_or("");
        if path == "/v1/messages" {
            anthropic_key(&keys.anthropic, r).unwrap_or_else(|| anthropic(r))
        } else if path.starts_with("/model/") {
            crate::bedrock::converse(&keys.aws, r)
        } else {
            openai_key(&keys.openai, r).unwrap_or_else(|| openai(r))
        }
    }
}

/// Both APIs without their key checks, for tests that look at the key the
/// upstream got themselves (per-tenant keys, for example).
pub fn any_key(r: &Recorded) -> Action {
    let path = r.path.split('?').next().unwrap_or("");
    if path == "/v1/messages" {
        anthropic(r)
    } else {
        openai(r)
    }
}

/// What the mock answers: it names the user, the plan and the transport of
/// the auth service's check that the gateway passed on, so a demo can see
/// the whole chain worked.
fn reply_words(r: &Recorded) -> Vec<String> {
    let user = r.header("x-user").unwrap_or("unknown");
    let plan = match (r.header("x-user-plan"), r.header("x-authz-transport")) {
        (Some(plan), Some(transport)) => format!(" (plan {plan}, checked over {transport})"),
        (Some(plan), None) => format!(" (plan {plan})"),
        (None, _) => String::new(),
    };
    format!("Hello {user}{plan}, this is the mock provider.")
        .split_inclusive(' ')
        .map(str::to_string)
        .collect()
}

fn request_json(r: &Recorded) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_default()
}

fn sse(chunks: Vec<String>) -> Action {
    Action::Stream {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/event-stream".into()),
            ("cache-control".into(), "no-cache".into()),
        ],
        chunks: chunks.into_iter().map(String::into_bytes).collect(),
        gap: STREAM_GAP,
    }
}

/// OpenAI's 401 when the key is not `key`.
fn openai_key(key: &str, r: &Recorded) -> Option<Action> {
    let authorization = r.header("authorization");
    if authorization == Some(format!("Bearer {key}").as_str()) {
        return None;
    }
    let shown = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| format!("{}***", k.chars().take(3).collect::<String>()))
        .unwrap_or_default();
    Some(Action::json(
        401,
        &json!({"error": {
            "message": format!("Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ))
}

fn openai(r: &Recorded) -> Action {
    let path = r.path.split('?').next().unwrap_or("");
    match (r.method.as_str(), path) {
        ("POST", "/v1/chat/completions") => {
            let body = request_json(r);
            let model = body["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
            let words = reply_words(r);
            if body["stream"] == json!(true) {
                let chunk = |delta: Value, finish: Value| {
                    let c = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk",
                        "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                    format!("data: {c}\n\n")
                };
                let mut events = vec![chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                )];
                events.extend(
                    words
                        .iter()
                        .map(|w| chunk(json!({"content": w}), Value::Null)),
                );
                events.push(chunk(json!({}), json!("stop")));
                events.push("data: [DONE]\n\n".into());
                return sse(events);
            }
            Action::json(
                200,
                &json!({
                    "id": "chatcmpl-demo", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": words.concat()}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": words.len(), "total_tokens": 5 + words.len()}
                }),
            )
        }
        ("GET", "/v1/models") => Action::json(
            200,
            &json!({"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "mock"},
                {"id": "gpt-4o", "object": "model", "created": 1_700_000_000, "owned_by": "mock"}]}),
        ),
        _ => Action::json(
            404,
            &json!({"error": {"message": "Unknown request URL", "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
        ),
    }
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> Action {
    Action::json(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Anthropic's 401 when the key is not `key`.
fn anthropic_key(key: &str, r: &Recorded) -> Option<Action> {
    (r.header("x-api-key") != Some(key))
        .then(|| anthropic_error(401, "authentication_error", "invalid x-api-key"))
}

fn anthropic(r: &Recorded) -> Action {
    if r.header("anthropic-version").is_none() {
        return anthropic_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    if r.method != "POST" {
        return anthropic_error(404, "not_found_error", "Not found");
    }
    let body = request_json(r);
    let model = body["model"]
        .as_str()
        .unwrap_or("claude-sonnet-4-5")
        .to_string();
    let words = reply_words(r);
    let message = |content: Value, stop: Value, output_tokens: usize| {
        json!({"id": "msg_demo", "type": "message", "role": "assistant", "model": model,
               "content": content, "stop_reason": stop, "stop_sequence": null,
               "usage": {"input_tokens": 5, "output_tokens": output_tokens}})
    };
    if body["stream"] == json!(true) {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let mut events = vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ];
        events.extend(words.iter().map(|w| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
            )
        }));
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": words.len()}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        return sse(events);
    }
    Action::json(
        200,
        &message(
            json!([{"type": "text", "text": words.concat()}]),
            json!("end_turn"),
            words.len(),
        ),
    )
}
