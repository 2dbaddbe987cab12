//! Mock LLM providers for the demo, in one process: OpenAI-shaped
//! (`/v1/chat/completions`, `/v1/models`, key in `Authorization: Bearer`)
//! and Anthropic-shaped (`/v1/messages`, key in `x-api-key`, and
//! `anthropic-version` required). Both stream when asked and reject a wrong
//! key with the real API's 401 (see `ai_auth_testkit::providers`); and
//! Bedrock-shaped (`/model/{id}/converse`, AWS SigV4 verified, AWS's 403).
//!
//! Usage: mock-llm <port>   (the keys it accepts: $OPENAI_API_KEY, $ANTHROPIC_API_KEY,
//! and $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY for the signatures)
//! Ends on SIGTERM or SIGINT.

use ai_auth_testkit::bedrock::AwsCredentials;
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
        aws: AwsCredentials {
            access_key_id: required_env("AWS_ACCESS_KEY_ID"),
            secret_access_key: required_env("AWS_SECRET_ACCESS_KEY"),
        },
    };
    demo::serve("mock-llm", port, handler(keys));
}
