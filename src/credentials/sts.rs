//! AWS STS `AssumeRoleWithWebIdentity`: a web identity token (an OIDC
//! token, as EKS IRSA mounts one) exchanged for temporary credentials.
//! The call is an unsigned form POST; the XML answer is read strictly
//! (`xml.rs`). Fetched by the root context with the lifecycle every fetched
//! credential shares (`fetch.rs`).

use super::oauth2::{BackOff, RawBackOff};
use super::sigv4::AwsCredentials;
use super::xml::text_at;
use crate::callout::CalloutRequest;
use crate::response::is_valid_header_value;
use crate::secret::Secret;
use crate::vocab::client_auth::Form;
use crate::vocab::timestamp::parse_rfc3339;
use crate::vocab::{duration, quote, ConfigError, DataSource, Environment, HttpUri, RawHttpUri};
use serde::Deserialize;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_SESSION_NAME: &str = "ai-auth-filter";
/// STS's range for `DurationSeconds`.
const MIN_DURATION_SECS: u64 = 900;
const MAX_DURATION_SECS: u64 = 43_200;

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawWebIdentity {
    /// The role to assume, `arn:aws:iam::<account>:role/<name>`.
    role_arn: String,
    /// `RoleSessionName` (default `ai-auth-filter`).
    role_session_name: Option<String>,
    /// `DurationSeconds`: 900 s to 43200 s (default 3600 s).
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::vocab::duration::RawDuration>")
    )]
    duration: Option<Duration>,
    /// The STS endpoint, e.g. `https://sts.us-east-1.amazonaws.com/`, and its cluster.
    sts_uri: RawHttpUri,
    /// The web identity token (inline or from an environment variable).
    web_identity_token: DataSource,
    retry_back_off: Option<RawBackOff>,
}

#[derive(Debug, Clone)]
pub struct WebIdentity {
    uri: HttpUri,
    role_arn: String,
    session_name: String,
    duration_secs: u64,
    token: Secret,
    pub retry: BackOff,
}

impl WebIdentity {
    pub fn compile(raw: RawWebIdentity, env: &dyn Environment) -> Result<Self, ConfigError> {
        let uri = HttpUri::compile(raw.sts_uri, DEFAULT_TIMEOUT).map_err(|e| e.under("sts_uri"))?;
        if !raw.role_arn.starts_with("arn:") || !is_valid_header_value(&raw.role_arn) {
            return Err(ConfigError::new(
                "role_arn",
                "must be a role ARN, arn:aws:iam::<account>:role/<name>",
            ));
        }
        let session_name = raw
            .role_session_name
            .unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
        // STS: 2 to 64 of [\w+=,.@-].
        let name_ok = (2..=64).contains(&session_name.len())
            && session_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !name_ok {
            return Err(ConfigError::new(
                "role_session_name",
                "must be 2 to 64 letters, digits or _+=,.@-",
            ));
        }
        let duration_secs = match raw.duration {
            None => 3600,
            Some(d) if d.subsec_nanos() == 0 => d.as_secs(),
            Some(_) => 0,
        };
        if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration_secs) {
            return Err(ConfigError::new(
                "duration",
                "must be whole seconds between 900s and 43200s (STS's range)",
            ));
        }
        let token = raw
            .web_identity_token
            .read(env)
            .map_err(|e| e.under("web_identity_token"))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(ConfigError::new("web_identity_token", "the token is empty"));
        }
        let retry = BackOff::compile(raw.retry_back_off).map_err(|e| e.under("retry_back_off"))?;
        Ok(WebIdentity {
            uri,
            role_arn: raw.role_arn,
            session_name,
            duration_secs,
            token: Secret::new(token.to_string()),
            retry,
        })
    }

    /// The `AssumeRoleWithWebIdentity` call: a form POST, unsigned (the web
    /// identity token is the credential). Its body holds the token: sent,
    /// never logged.
    pub fn request(&self) -> CalloutRequest {
        let mut form = Form::default();
        form.push("Action", "AssumeRoleWithWebIdentity");
        form.push("Version", "2011-06-15");
        form.push("RoleArn", &self.role_arn);
        form.push("RoleSessionName", &self.session_name);
        form.push("DurationSeconds", &self.duration_secs.to_string());
        form.push("WebIdentityToken", self.token.expose());
        CalloutRequest {
            cluster: self.uri.cluster.clone(),
            headers: vec![
                (":method".to_string(), "POST".to_string()),
                (":path".to_string(), self.uri.path.clone()),
                (":authority".to_string(), self.uri.authority.clone()),
                (
                    "content-type".to_string(),
                    "application/x-www-form-urlencoded; charset=utf-8".to_string(),
                ),
                ("accept".to_string(), "text/xml".to_string()),
            ],
            body: form.into_bytes(),
            timeout: self.uri.timeout,
        }
    }
}

/// The credentials in a 200 answer and their `Expiration` (Unix seconds).
pub fn parse(body: &[u8]) -> Result<(AwsCredentials, u64), String> {
    let doc = std::str::from_utf8(body).map_err(|_| "STS answer is not UTF-8".to_string())?;
    let field = |name: &str| {
        text_at(
            doc,
            &[
                "AssumeRoleWithWebIdentityResponse",
                "AssumeRoleWithWebIdentityResult",
                "Credentials",
                name,
            ],
        )
        .map_err(|e| format!("STS answer: {name}: {}", quote(&e)))
    };
    let access_key_id = field("AccessKeyId")?;
    if access_key_id.len() < 16
        || access_key_id.len() > 128
        || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "STS answer: AccessKeyId {} is not an access key id",
            quote(&access_key_id)
        ));
    }
    let secret = field("SecretAccessKey")?;
    let token = field("SessionToken")?;
    // Never quoted: they are secrets.
    for (name, value) in [("SecretAccessKey", &secret), ("SessionToken", &token)] {
        if value.is_empty() || !is_valid_header_value(value) {
            return Err(format!("STS answer: {name} is empty or not a header value"));
        }
    }
    let expiration_text = field("Expiration")?;
    let expiration = parse_rfc3339(&expiration_text).ok_or_else(|| {
        format!(
            "STS answer: Expiration {} is not a timestamp",
            quote(&expiration_text)
        )
    })?;
    Ok((
        AwsCredentials {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: Some(Secret::new(token)),
        },
        expiration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callout::CalloutResponse;
    use crate::credentials::fetch::{Credential, CredentialFetcher, Fetched, Source};
    use serde_json::{json, Value};

    fn web_identity(extra: Value) -> Result<WebIdentity, ConfigError> {
        let mut raw = json!({
            "role_arn": "arn:aws:iam::123456789012:role/bedrock",
            "sts_uri": {"uri": "https://sts.us-east-1.amazonaws.com/", "cluster": "sts"},
            "web_identity_token": {"environment_variable": "AWS_WEB_IDENTITY_TOKEN"}
        });
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        let env =
            |n: &str| (n == "AWS_WEB_IDENTITY_TOKEN").then(|| "eyJ.web+id/token=".to_string());
        WebIdentity::compile(serde_json::from_value(raw).unwrap(), &env)
    }

    fn answer(akid: &str, expiration: &str) -> CalloutResponse {
        CalloutResponse {
            status: Some(200),
            headers: vec![],
            body: format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>secret/+=</SecretAccessKey><SessionToken>tok&amp;en</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
            )
            .into_bytes(),
        }
    }

    #[test]
    fn the_call_is_an_unsigned_form_post() {
        let req = web_identity(json!({"role_session_name": "gw", "duration": "900s"}))
            .unwrap()
            .request();
        assert_eq!(
            String::from_utf8(req.body).unwrap(),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbedrock&RoleSessionName=gw&DurationSeconds=900&WebIdentityToken=eyJ.web%2Bid%2Ftoken%3D"
        );
        assert!(req.headers.contains(&(":path".into(), "/".into())));
        assert!(req.headers.iter().all(|(k, _)| k != "authorization"));
        assert_eq!(req.cluster, "sts");
    }

    #[test]
    fn configuration_is_checked_naming_the_field() {
        for (extra, field) in [
            (json!({"role_arn": "bedrock"}), "role_arn"),
            (json!({"role_session_name": "a b"}), "role_session_name"),
            (json!({"duration": "60s"}), "duration"),
            (json!({"duration": "50000s"}), "duration"),
            (
                json!({"web_identity_token": {"environment_variable": "NOPE"}}),
                "web_identity_token.environment_variable",
            ),
            (
                json!({"sts_uri": {"uri": "sts", "cluster": "sts"}}),
                "sts_uri.uri",
            ),
        ] {
            assert_eq!(
                web_identity(extra.clone()).unwrap_err().path,
                field,
                "{extra}"
            );
        }
    }

    #[test]
    fn credentials_live_until_expiration_and_refresh_at_half_life() {
        let w = web_identity(json!({})).unwrap();
        let mut f = CredentialFetcher::new([Some(Source::Sts(w))].into_iter());
        assert!(f.is_aws(0));
        assert_eq!(f.due(1_764_748_800).len(), 1);
        // Expiration one hour after the request was sent.
        let Fetched::Lease { lease, refresh_at } = f.on_reply(
            0,
            &answer("ASIAIOSFODNN7EXAMPLE", "2025-12-03T09:00:00Z"),
            1_764_748_801,
        ) else {
            panic!("expected credentials");
        };
        assert_eq!(lease.expires_at, 1_764_752_400);
        assert_eq!(lease.usable_until, 1_764_752_390);
        assert_eq!(refresh_at, 1_764_748_800 + 1800);
        let Credential::Aws(c) = &lease.credential else {
            panic!()
        };
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(c.session_token.as_ref().unwrap().expose(), "tok&en");
        assert_eq!(format!("{c:?}").matches("[redacted]").count(), 2);
    }

    #[test]
    fn bad_answers_fail_and_back_off() {
        let w = web_identity(json!({})).unwrap();
        let mut f = CredentialFetcher::new([Some(Source::Sts(w))].into_iter());
        let error = CalloutResponse {
            status: Some(403),
            headers: vec![],
            body: b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"
                .to_vec(),
        };
        let forged = format!("ASIA\n[critical] forged{}", "x".repeat(300));
        for (i, (r, now)) in [
            (error, 0),
            (answer("short", "2030-01-01T00:00:00Z"), 1),
            (answer(&forged, "2030-01-01T00:00:00Z"), 3),
            (answer("ASIAIOSFODNN7EXAMPLE", "yesterday"), 7),
            (answer("ASIAIOSFODNN7EXAMPLE", "1970-01-01T00:00:10Z"), 15),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(f.due(now).len(), 1, "attempt {i}");
            let Fetched::Failed(reason) = f.on_reply(0, &r, now) else {
                panic!("attempt {i} must fail");
            };
            assert!(!reason.contains('\n') && reason.len() < 250, "{reason}");
            assert!(!reason.contains("secret/+="), "{reason}");
        }
        assert!(f.due(24).is_empty(), "fifth failure waits the 10 s cap");
        assert_eq!(f.due(25).len(), 1);
    }
}
