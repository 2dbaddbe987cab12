//! An OpenAI-compatible mock provider for the demo. It answers
//! `POST /v1/chat/completions` and `GET /v1/models` like OpenAI, and rejects
//! a wrong or missing provider key with OpenAI's 401.
//!
//! Usage: mock-llm <port>   (the expected key is $OPENAI_API_KEY)

use ai_auth_testkit::http::{Action, Server};
use serde_json::json;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: mock-llm <port>");
            std::process::exit(2);
        });
    let expected = std::env::var("OPENAI_API_KEY").unwrap_or_else(|_| {
        eprintln!("mock-llm: set OPENAI_API_KEY to the key the provider accepts");
        std::process::exit(2);
    });
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let server = Server::start_on_addr(&bind, port, move |r| {
        let authorized = r.header("authorization") == Some(format!("Bearer {expected}").as_str());
        if !authorized {
            let shown = r
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|k| format!("{}***", k.chars().take(3).collect::<String>()))
                .unwrap_or_default();
            return Action::json(
                401,
                &json!({"error": {
                "message": format!("Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."),
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
            );
        }
        let path = r.path.split('?').next().unwrap_or("");
        match (r.method.as_str(), path) {
            ("POST", "/v1/chat/completions") => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let model = body["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
                let user = r.header("x-user").unwrap_or("unknown").to_string();
                Action::json(
                    200,
                    &json!({
                        "id": "chatcmpl-demo", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": format!("Hello {user}, this is the mock provider.")}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
                    }),
                )
            }
            ("GET", "/v1/models") => Action::json(
                200,
                &json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "mock"}]}),
            ),
            _ => Action::json(
                404,
                &json!({"error": {"message": "Unknown request URL", "type": "invalid_request_error", "code": "unknown_url"}}),
            ),
        }
    });
    eprintln!("mock-llm: listening on port {}", server.port);
    loop {
        std::thread::park();
    }
}
