//! Each invalid configuration is refused when Envoy loads the filter, and
//! Envoy's log names the field and the reason.

use crate::support::*;
use serde_json::{json, Value};

fn provider(jwks_text: String) -> Value {
    json!({"issuer": ISS, "local_jwks": {"inline_string": jwks_text}})
}

fn good_jwks() -> String {
    jwks(&[&TestKey::ed25519("k")]).to_string()
}

fn refused(plugin: &str, env: &[(&str, &str)]) -> String {
    let upstream = Server::echo();
    let filter = bootstrap::wasm_filter_with_env(&json!(null), env);
    // The configuration is given as the raw string (duplicate keys must survive).
    let mut filter = filter;
    filter["typed_config"]["config"]["configuration"]["value"] = json!(plugin);
    let boot = bootstrap::bootstrap(
        vec![bootstrap::listener(
            "main",
            vec![filter],
            vec![bootstrap::route_to("upstream")],
        )],
        vec![bootstrap::cluster("upstream", upstream.port)],
    );
    Envoy::start_expect_failure(&boot).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn invalid_configurations_are_refused_with_the_field_named() {
    let rule = json!([{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]);
    let short_rsa = jwks(&[&TestKey::rsa_from("rsa1024.pem", "weak")]).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            json!({"jwt_authn": {"providers": {"idp": provider(good_jwks())}, "rules": rule, "bypass_cors": true}}).to_string(),
            "field `jwt_authn.bypass_cors`: unknown field `bypass_cors`",
        ),
        (
            "bad JWKS",
            json!({"jwt_authn": {"providers": {"idp": provider("{\"keys\": 5}".into())}, "rules": rule}}).to_string(),
            "field `jwt_authn.providers.idp.local_jwks`: a JWKS must be an object with a `keys` array",
        ),
        (
            "a JWKS whose only key is RSA under 2048 bits",
            json!({"jwt_authn": {"providers": {"idp": provider(short_rsa)}, "rules": rule}}).to_string(),
            "field `jwt_authn.providers.idp.local_jwks`: the JWKS has no usable signature key: keys[0] (kid \"weak\"): RSA modulus is 1024 bits; at least 2048 are required",
        ),
        (
            "duplicate provider",
            format!(
                r#"{{"jwt_authn": {{"providers": {{"idp": {p}, "idp": {p}}}, "rules": {rule}}}}}"#,
                p = provider(good_jwks())
            ),
            "field `jwt_authn.providers`: duplicate key `idp`",
        ),
        (
            "rule naming a missing provider",
            json!({"jwt_authn": {"providers": {"idp": provider(good_jwks())},
                   "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "okta"}}]}}).to_string(),
            "field `jwt_authn.rules[0].requires.provider_name`: provider `okta` is not defined in providers",
        ),
        (
            "invalid regex",
            json!({"jwt_authn": {"providers": {"idp": provider(good_jwks())},
                   "rules": [{"match": {"safe_regex": {"regex": "/v1/(chat"}}, "requires": {"provider_name": "idp"}}]}}).to_string(),
            "field `jwt_authn.rules[0].match.safe_regex.regex`: invalid regex `/v1/(chat`",
        ),
        (
            "a regex over the program size limit",
            json!({"jwt_authn": {"providers": {"idp": provider(good_jwks())},
                   "rules": [{"match": {"safe_regex": {"regex": "/v1/.{200}"}}, "requires": {"provider_name": "idp"}}]}}).to_string(),
            "field `jwt_authn.rules[0].match.safe_regex.regex`: regex `/v1/.{200}` compiles to",
        ),
        (
            "missing environment variable",
            json!({"jwt_authn": {"providers": {"idp": {"local_jwks": {"environment_variable": "IDP_JWKS"}}}, "rules": rule}}).to_string(),
            "field `jwt_authn.providers.idp.local_jwks.environment_variable`: environment variable `IDP_JWKS` is not set",
        ),
        (
            "remote JWKS without a URI scheme",
            json!({"jwt_authn": {"providers": {"idp": {"remote_jwks": {"http_uri": {"uri": "idp/jwks", "cluster": "idp"}}}}, "rules": rule}}).to_string(),
            "field `jwt_authn.providers.idp.remote_jwks.http_uri.uri`: must be an http:// or https:// URI with a host",
        ),
        // The host takes callout timeouts as u32 milliseconds: 4294967.297s would wrap to 1 ms.
        (
            "JWKS timeout beyond the host's range",
            json!({"jwt_authn": {"providers": {"idp": {"remote_jwks": {"http_uri": {"uri": "http://idp/jwks", "cluster": "idp", "timeout": "4294967.297s"}}}}, "rules": rule}}).to_string(),
            "field `jwt_authn.providers.idp.remote_jwks.http_uri.timeout`: 4294967.297s is longer than the host can represent",
        ),
        (
            "auth service timeout beyond the host's range",
            json!({"ext_authz": {"http_service": {"server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "4294967.296s"}}}}).to_string(),
            "field `ext_authz.http_service.server_uri.timeout`: 4294967.296s is longer than the host can represent",
        ),
        (
            "token endpoint timeout beyond the host's range",
            json!({"upstream_credentials": {"backends": {"azure": {"scheme": "azure_api_key", "oauth2": {
                "token_uri": {"uri": "http://login/token", "cluster": "entra", "timeout": 1e9},
                "client_id": "c", "client_secret": {"inline_string": "s"}}}},
                "routes": [{"match": {"prefix": "/"}, "backend": "azure"}]}}).to_string(),
            "field `upstream_credentials.backends.azure.oauth2.token_uri.timeout`: 1000000000s is longer than the host can represent",
        ),
        (
            "zero auth service timeout",
            json!({"ext_authz": {"http_service": {"server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "0s"}}}}).to_string(),
            "field `ext_authz.http_service.server_uri.timeout`: must be at least 1ms",
        ),
        ("not JSON", "{jwt_authn".to_string(), "invalid configuration: field `<root>`: not valid JSON: key must be a string at line 1 column 2"),
    ];
    for (name, plugin, expected) in cases {
        let log = refused(&plugin, &[]);
        let line = log
            .lines()
            .find(|l| l.contains("ai_auth: invalid configuration"))
            .unwrap_or_else(|| panic!("{name}: no configuration error in the log:\n{log}"));
        assert!(
            line.contains(expected),
            "{name}: expected `{expected}` in\n{line}"
        );
        assert!(!log.contains("panicked"), "{name}: the VM panicked:\n{log}");
    }
}

#[test]
fn jwks_from_an_environment_variable_is_accepted() {
    let key = TestKey::ed25519("k");
    let plugin = json!({"jwt_authn": {"providers": {"idp": {"issuer": ISS, "local_jwks": {"environment_variable": "IDP_JWKS"}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]}});
    let text = jwks(&[&key]).to_string();
    let gw = Gateway::start_with_env(plugin, &[("IDP_JWKS", &text)]);
    let r = gw.get("/", &[("authorization", &bearer(&key.sign(&claims())))]);
    assert_eq!(r.status, 200, "{}", r.text());
}
