//! AWS Signature Version 4 as a pure function: the canonical request of the
//! request as it leaves the filter (final method, path, query and signed
//! headers), the string to sign and the `Authorization` value.
//!
//! The rules are those AWS documents and botocore's `SigV4Auth` applies
//! (`tests/envoy/sigv4.rs` compares with botocore):
//! - path: dot segments and empty segments removed, then every byte but the
//!   unreserved ones and `/` percent-encoded, once more (for services other
//!   than S3 the path on the wire is encoded, and the canonical form encodes
//!   it again: `%3A` in a Bedrock model id becomes `%253A`);
//! - query: each `name=value` decoded then encoded with the unreserved set,
//!   sorted by name, then value;
//! - headers: names lowercase, values trimmed with inner whitespace runs as
//!   one space, repeated headers joined by `,`, sorted by name.

use crate::secret::Secret;
use crate::vocab::hex::{encode as hex, encode_upper, percent_decode};
use crate::vocab::sort_pairs;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The SHA-256 of an empty payload, in hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An access key pair, with the session token of temporary credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// What is signed: the request as it will reach the service.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInput {
    pub method: String,
    /// `:path` as sent, query included.
    pub path: String,
    /// Lowercase names and their values, every header to sign (`host`,
    /// `x-amz-date`, `x-amz-content-sha256`, ...); a repeated name is
    /// signed as one header with its values joined.
    pub headers: Vec<(String, String)>,
    /// Hex SHA-256 of the body.
    pub payload_sha256: String,
}

/// The session token is a secret: never printed.
impl std::fmt::Debug for SignInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| match n.as_str() {
                "x-amz-security-token" => (n.as_str(), "[redacted]"),
                _ => (n.as_str(), v.as_str()),
            })
            .collect();
        f.debug_struct("SignInput")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("payload_sha256", &self.payload_sha256)
            .finish()
    }
}

impl SignInput {
    /// The headers AWS requires (`host`, `x-amz-date`,
    /// `x-amz-content-sha256`, `x-amz-security-token` with a session token)
    /// and the configured extras, as they will be sent.
    pub fn for_request(
        method: &str,
        path: &str,
        host: &str,
        amz_date: &str,
        session_token: Option<&Secret>,
        extras: Vec<(String, String)>,
        payload_sha256: String,
    ) -> Self {
        let mut headers = vec![
            ("host".to_string(), host.to_string()),
            ("x-amz-date".to_string(), amz_date.to_string()),
            ("x-amz-content-sha256".to_string(), payload_sha256.clone()),
        ];
        if let Some(token) = session_token {
            headers.push((
                "x-amz-security-token".to_string(),
                token.expose().to_string(),
            ));
        }
        headers.extend(extras);
        SignInput {
            method: method.to_string(),
            path: path.to_string(),
            headers,
            payload_sha256,
        }
    }
}

/// `x-amz-date` for Unix time `now`: `YYYYMMDDTHHMMSSZ` (UTC).
pub fn amz_date(now: u64) -> String {
    let days = now / 86_400;
    let secs = now % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SigV4's URI encoding: unreserved characters as they are, every other
/// byte as `%XX` (uppercase); `/` kept when `keep_slash`.
pub fn uri_encode(text: &[u8], keep_slash: bool, out: &mut String) {
    for &b in text {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&encode_upper(std::slice::from_ref(&b)));
        }
    }
}

/// RFC 3986 5.2.4 dot segments removed, and empty segments too (AWS wants
/// `//` collapsed), as botocore's `remove_dot_segments`.
fn normalized_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical URI: the normalised path, encoded once more.
pub fn canonical_uri(path: &str) -> String {
    let mut out = String::new();
    uri_encode(normalized_path(path).as_bytes(), true, &mut out);
    out
}

/// The canonical query string: parameters decoded, encoded again, sorted.
pub fn canonical_query(query: &str) -> String {
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut n = String::new();
            uri_encode(&percent_decode(name), false, &mut n);
            let mut v = String::new();
            uri_encode(&percent_decode(value), false, &mut v);
            (n, v)
        })
        .collect();
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sort_pairs(&mut sorted, true);
    sorted
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as signed: trimmed, inner whitespace runs as one space.
fn canonical_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical headers block (each `name:value\n`) and the signed headers list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = canonical_value(value);
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => merged.push((name, vec![value])),
        }
    }
    let joined: Vec<(String, String)> = merged.into_iter().map(|(n, v)| (n, v.join(","))).collect();
    let mut sorted: Vec<&(String, String)> = joined.iter().collect();
    sort_pairs(&mut sorted, false);
    let block: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let names = sorted
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, names)
}

/// The canonical request and the signed headers list.
pub fn canonical_request(input: &SignInput) -> (String, String) {
    let (path, query) = input
        .path
        .split_once('?')
        .unwrap_or((input.path.as_str(), ""));
    // A fragment never reaches a server; Envoy refuses one anyway.
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let (block, signed) = canonical_headers(&input.headers);
    let request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query),
        block,
        signed,
        input.payload_sha256
    );
    (request, signed)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length: never reached.
        Err(_) => Vec::new(),
    }
}

/// The `Authorization` value for `input`, signed at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`, the `x-amz-date` among the signed headers).
pub fn authorization(
    input: &SignInput,
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let (canonical, signed) = canonical_request(input);
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let secret = format!("AWS4{}", creds.secret_access_key.expose());
    let key = [date, region, service, "aws4_request"]
        .iter()
        .fold(secret.into_bytes(), |key, part| hmac(&key, part.as_bytes()));
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        }
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(4_102_444_799), "20991231T235959Z");
    }

    /// The AWS SigV4 test suite's `get-vanilla` and `post-x-www-form-urlencoded`.
    #[test]
    fn aws_test_suite_vectors() {
        let input = SignInput {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            payload_sha256: EMPTY_SHA256.into(),
        };
        assert_eq!(
            authorization(&input, &creds(), "us-east-1", "service", "20150830T123600Z"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let body = b"Param1=value1";
        let input = SignInput {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            payload_sha256: sha256_hex(body),
        };
        assert_eq!(
            authorization(&input, &creds(), "us-east-1", "service", "20150830T123600Z"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn paths_queries_and_headers_are_canonical() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/invoke"
        );
        assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/.."), "/");
        assert_eq!(canonical_uri("/a b/é"), "/a%20b/%C3%A9");
        assert_eq!(
            canonical_query("b=2&a=2&a=1&c&d=%7e%20x+y&e=%zz"),
            "a=1&a=2&b=2&c=&d=~%20x%2By&e=%25zz"
        );
        assert_eq!(canonical_query(""), "");
        let (block, signed) = canonical_headers(&[
            ("X-B".into(), "  a   b ".into()),
            ("x-a".into(), "1".into()),
            ("x-b".into(), "c".into()),
        ]);
        assert_eq!(block, "x-a:1\nx-b:a b,c\n");
        assert_eq!(signed, "x-a;x-b");
    }
}
