//! Prints the JSON Schema of the plugin configuration, derived from the
//! filter's configuration types (the committed copy is
//! `envoy/ai-auth-filter.schema.json`; `scripts/check-schema.sh` checks it is current).

fn main() {
    match serde_json::to_string_pretty(&ai_auth_filter::config::json_schema()) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("config-schema: {e}");
            std::process::exit(1);
        }
    }
}
