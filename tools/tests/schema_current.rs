//! The committed JSON Schema is the one the configuration types generate:
//! a new configuration field fails here until the schema is regenerated.

#[test]
fn committed_schema_is_what_the_config_types_generate() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../envoy/ai-auth-filter.schema.json"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = serde_json::to_string_pretty(&ai_auth_filter::config::json_schema())
        .unwrap_or_default()
        + "\n";
    assert!(
        committed == generated,
        "envoy/ai-auth-filter.schema.json is not what the configuration types generate; regenerate it with\n  cargo run -q -p ai-auth-tools --bin config-schema > envoy/ai-auth-filter.schema.json"
    );
}
