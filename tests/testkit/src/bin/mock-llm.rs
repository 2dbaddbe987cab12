//! Mock LLM providers for the demo, in one process: OpenAI-shaped
//! (`/v1/chat/completions`, `/v1/models`, key in `Authorization: Bearer`)
//! and Anthropic-shaped (`/v1/messages`, key in `x-api-key`, and
//! `anthropic-version` required). Both stream when asked and reject a wrong
//! key with the real API's 401 (see `ai_auth_testkit::providers`).
//!
//! Usage: mock-llm <port>   (the keys it accepts: $OPENAI_API_KEY, $ANTHROPIC_API_KEY)
//! Ends on SIGTERM or SIGINT.

use ai_auth_testkit::demo;
use ai_auth_testkit::providers::{handler, Keys};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("mock-llm: set {name} to the key the provider accepts");
        std::process::exit(2);
    })
}

fn main() {
    demo::block_termination();
    let port = demo::port_arg("mock-llm <port>");
    let keys = Keys {
        openai: required_env("OPENAI_API_KEY"),
        anthropic: required_env("ANTHROPIC_API_KEY"),
    };
    demo::serve("mock-llm", port, handler(keys));
}
