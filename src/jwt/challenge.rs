//! `WWW-Authenticate` challenges of the JWT stage: RFC 6750 §3 for
//! `Bearer`, RFC 9449 §7.1 for `DPoP`, with RFC 9728's `resource_metadata`
//! on routes that publish protected-resource metadata.
//!
//! What a rule's challenges say besides the error (its schemes, the
//! scopes its claim rules ask for, where its metadata is) is worked out
//! at load; per request only the realm and the error are added.

use super::error::Denial;
use crate::response::{quoted_param_safe, LocalReply};

/// The parts of a rule's challenges known at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChallenge {
    /// A `Bearer` challenge: some provider of the rule takes bearer tokens.
    pub bearer: bool,
    /// A `DPoP` challenge with these `algs`: some provider takes DPoP.
    pub dpop_algs: Option<String>,
    /// RFC 6750 `scope`: the scope values the rule's claim rules ask for.
    pub scope: Option<String>,
    /// RFC 9728 `resource_metadata`: the URL of the route's metadata.
    pub resource_metadata: Option<String>,
}

impl Default for RuleChallenge {
    fn default() -> Self {
        RuleChallenge {
            bearer: true,
            dpop_algs: None,
            scope: None,
            resource_metadata: None,
        }
    }
}

/// Which scheme an error concerns, so its `error` goes on that challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// The local reply for a denial: the JSON body and one `WWW-Authenticate`
/// line per scheme the route accepts. The error code goes on the challenge
/// of the scheme the client used (`DPoP` for proof errors).
pub fn render(denial: &Denial, realm: &str, rule: &RuleChallenge, used: Scheme) -> LocalReply {
    let mut reply = LocalReply::json_error(
        denial.status,
        denial.error.unwrap_or("missing_token"),
        &denial.description,
    );
    let error_on = match (used, rule.bearer, rule.dpop_algs.is_some()) {
        (Scheme::Dpop, _, true) | (Scheme::Bearer, false, true) => Scheme::Dpop,
        _ => Scheme::Bearer,
    };
    if rule.bearer || rule.dpop_algs.is_none() {
        reply = reply.with_header(
            "www-authenticate",
            challenge(
                "Bearer",
                denial,
                realm,
                rule,
                None,
                error_on == Scheme::Bearer,
            ),
        );
    }
    if let Some(algs) = &rule.dpop_algs {
        reply = reply.with_header(
            "www-authenticate",
            challenge(
                "DPoP",
                denial,
                realm,
                rule,
                Some(algs),
                error_on == Scheme::Dpop,
            ),
        );
    }
    reply
}

fn challenge(
    scheme: &str,
    denial: &Denial,
    realm: &str,
    rule: &RuleChallenge,
    algs: Option<&str>,
    with_error: bool,
) -> String {
    let mut params = vec![("realm", quoted_param_safe(realm))];
    if let (true, Some(error)) = (with_error, denial.error) {
        params.push(("error", error.to_string()));
        params.push(("error_description", quoted_param_safe(&denial.description)));
    }
    if let Some(algs) = algs {
        params.push(("algs", algs.to_string()));
    }
    if let Some(scope) = &rule.scope {
        params.push(("scope", quoted_param_safe(scope)));
    }
    if let Some(url) = &rule.resource_metadata {
        params.push(("resource_metadata", quoted_param_safe(url)));
    }
    let params: Vec<String> = params
        .into_iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    format!("{scheme} {}", params.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenges(reply: &LocalReply) -> Vec<&str> {
        reply
            .headers
            .iter()
            .filter(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn denial(error: Option<&'static str>) -> Denial {
        Denial {
            status: 401,
            error,
            description: "Jwt is expired".into(),
        }
    }

    #[test]
    fn metadata_and_scope_join_the_bearer_challenge() {
        let rule = RuleChallenge {
            scope: Some("chat embed".into()),
            resource_metadata: Some("https://gw/.well-known/oauth-protected-resource/v1".into()),
            ..Default::default()
        };
        let r = render(&denial(None), "https://gw/v1/x", &rule, Scheme::Bearer);
        assert_eq!(
            challenges(&r),
            ["Bearer realm=\"https://gw/v1/x\", scope=\"chat embed\", resource_metadata=\"https://gw/.well-known/oauth-protected-resource/v1\""]
        );
        let r = render(&denial(Some("invalid_token")), "r", &rule, Scheme::Bearer);
        assert!(challenges(&r)[0].starts_with(
            "Bearer realm=\"r\", error=\"invalid_token\", error_description=\"Jwt is expired\", scope="
        ));
    }

    #[test]
    fn dpop_errors_go_on_the_dpop_challenge() {
        let rule = RuleChallenge {
            dpop_algs: Some("ES256 EdDSA".into()),
            ..Default::default()
        };
        let r = render(
            &denial(Some("invalid_dpop_proof")),
            "r",
            &rule,
            Scheme::Dpop,
        );
        assert_eq!(
            challenges(&r),
            [
                "Bearer realm=\"r\"",
                "DPoP realm=\"r\", error=\"invalid_dpop_proof\", error_description=\"Jwt is expired\", algs=\"ES256 EdDSA\""
            ]
        );
        let only_dpop = RuleChallenge {
            bearer: false,
            ..rule
        };
        let r = render(&denial(None), "r", &only_dpop, Scheme::Bearer);
        assert_eq!(challenges(&r), ["DPoP realm=\"r\", algs=\"ES256 EdDSA\""]);
    }
}
