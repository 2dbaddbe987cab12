//! A Bedrock-shaped mock for the demo: `POST /model/{modelId}/converse`
//! answers as the Converse API does, and only to a request whose AWS
//! Signature Version 4 verifies with the demo's credentials (the header
//! values and body Envoy actually sent, canonicalised as AWS does for
//! bedrock-runtime), otherwise with AWS's 403. The differential tests of the
//! filter's signer use botocore; this mock lets the demo show the same
//! end to end without Python.

use crate::http::{Action, Recorded};
use hmac_sha256::{Hash, HMAC};
use serde_json::{json, Value};

/// The credentials the mock accepts (the gateway signs with them; clients never hold them).
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4's UriEncode: every byte but the unreserved ones as %XX.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the request's signature does not verify, or None when it does.
pub fn verify(creds: &AwsCredentials, r: &Recorded) -> Option<String> {
    let auth = r.header("authorization")?;
    let rest = match auth.strip_prefix("AWS4-HMAC-SHA256 ") {
        Some(rest) => rest,
        None => return Some("Authorization is not AWS4-HMAC-SHA256".into()),
    };
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name))
            .map(str::to_string)
    };
    let (Some(credential), Some(signed), Some(signature)) = (
        field("Credential="),
        field("SignedHeaders="),
        field("Signature="),
    ) else {
        return Some("Authorization lacks Credential, SignedHeaders or Signature".into());
    };
    let mut scope_parts = credential.splitn(2, '/');
    let key_id = scope_parts.next().unwrap_or("");
    let scope = scope_parts.next().unwrap_or("");
    if key_id != creds.access_key_id {
        return Some("The security token included in the request is invalid.".into());
    }
    let body_hash = hex(&Hash::hash(&r.body));
    if r.header("x-amz-content-sha256") != Some(body_hash.as_str()) {
        return Some("x-amz-content-sha256 is not the SHA-256 of the body".into());
    }
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    // bedrock-runtime is not S3: the path as sent is encoded once more.
    let canonical_uri = uri_encode(path, true);
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let values = r.headers_named(name);
        if values.is_empty() {
            return Some(format!("signed header {name} is missing"));
        }
        let value = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(",");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed}\n{body_hash}",
        r.method
    );
    let amz_date = r.header("x-amz-date").unwrap_or("");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Hash::hash(canonical_request.as_bytes()))
    );
    let mut key = HMAC::mac(
        scope.split('/').next().unwrap_or("").as_bytes(),
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
    )
    .to_vec();
    for part in scope.split('/').skip(1) {
        key = HMAC::mac(part.as_bytes(), &key).to_vec();
    }
    let expected = hex(&HMAC::mac(string_to_sign.as_bytes(), &key));
    if expected != signature {
        return Some("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into());
    }
    None
}

/// `POST /model/{modelId}/converse`, signature checked first.
pub fn converse(creds: &AwsCredentials, r: &Recorded) -> Action {
    let json_reply = |status: u16, body: Value| Action::Respond {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    };
    match r.header("authorization") {
        None => return json_reply(403, json!({"message": "Missing Authentication Token"})),
        Some(_) => {
            if let Some(why) = verify(creds, r) {
                return json_reply(403, json!({ "message": why }));
            }
        }
    }
    let model = r
        .path
        .strip_prefix("/model/")
        .and_then(|p| p.split('/').next())
        .map(percent_decode)
        .unwrap_or_default();
    let user = r.header("x-user").unwrap_or("unknown");
    let asked: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let turns = asked["messages"].as_array().map_or(0, Vec::len);
    json_reply(
        200,
        json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": format!("Hello {user}, this is the mock Bedrock ({model}); the gateway signed your request with SigV4.")}
            ]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 4 * turns, "outputTokens": 14, "totalTokens": 4 * turns + 14},
            "metrics": {"latencyMs": 1}
        }),
    )
}
