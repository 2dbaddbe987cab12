//! Every reason a JWT check can fail, and the one function that maps a reason
//! to the HTTP answer (RFC 6750).

use crate::response::LocalReply;

/// One variant per distinct outcome, as Envoy's `jwt_authn` `status.h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No token in any configured location.
    Missing,
    /// The token is not `header.payload.signature` in base64url without padding.
    BadFormat(&'static str),
    /// Header JSON invalid or lacking a required member.
    BadHeader(&'static str),
    /// Payload JSON invalid, or a registered claim of the wrong type.
    BadPayload(&'static str),
    /// `alg` is `none`, unknown, or not one Envoy's `jwt_authn` accepts.
    UnsupportedAlg,
    /// A header parameter we never trust (`jwk`, `jku`, `x5u`, `x5c`) or an unknown `crit`.
    ForbiddenHeader(&'static str),
    /// Too large for the configured limit.
    TooLarge,
    /// More than one token where one was expected (two `Authorization` lines...).
    MultipleTokens,
    /// `iss` does not match the provider.
    UnknownIssuer,
    /// `aud` has none of the allowed audiences.
    AudienceNotAllowed,
    Expired,
    NotYetValid,
    /// `require_expiration` and no `exp`.
    ExpirationRequired,
    /// `exp - iat` beyond `max_lifetime`, or `iat` missing when it is set.
    LifetimeTooLong,
    /// No key with this `kid`, or no key fitting the `alg`.
    UnknownKid,
    /// Signature does not verify.
    BadSignature,
    /// The `kid` names a JWKS entry the filter skipped (why, in short).
    UnusableKey(&'static str),
    /// Keys are not available (remote JWKS not fetched yet or failing).
    KeysUnavailable,
    /// A claim rule failed on a valid token.
    ClaimRuleFailed(String),
    /// The DPoP proof is missing, malformed, or does not hold (RFC 9449 4.3).
    InvalidDpopProof(&'static str),
    /// The token's sender constraint does not hold: a DPoP-bound token sent
    /// as a bearer token, a certificate-bound one over the wrong (or no)
    /// client certificate, or an unbound one where binding is required.
    SenderConstraint(&'static str),
    /// No API key in any location of an API key provider.
    ApiKeyMissing,
    /// Not the hash of any key of the API key provider.
    ApiKeyUnknown,
    /// A configured API key past its `expires_at`.
    ApiKeyExpired,
    /// The introspection endpoint says the token is not active (RFC 7662).
    TokenInactive,
    /// The introspection endpoint gave no usable answer; the status to send.
    IntrospectionFailed(u16),
    /// Not a denial: the token can only be judged by asking the
    /// introspection endpoint, which the flow does before running the stage again.
    IntrospectionPending,
}

/// What a failure turns into on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    /// RFC 6750 error code for `WWW-Authenticate`; `None` for a missing token.
    pub error: Option<&'static str>,
    pub description: String,
}

impl JwtError {
    /// Short text for `error_description` and logs (never token content).
    pub fn description(&self) -> String {
        match self {
            JwtError::Missing => "Jwt is missing".into(),
            JwtError::BadFormat(why) => format!("Jwt is malformed: {why}"),
            JwtError::BadHeader(why) => format!("Jwt header is invalid: {why}"),
            JwtError::BadPayload(why) => format!("Jwt payload is invalid: {why}"),
            JwtError::UnsupportedAlg => "Jwt alg is not supported".into(),
            JwtError::ForbiddenHeader(what) => format!("Jwt header {what} is not accepted"),
            JwtError::TooLarge => "Jwt is too large".into(),
            JwtError::MultipleTokens => "more than one Jwt in the request".into(),
            JwtError::UnknownIssuer => "Jwt issuer is not configured".into(),
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed".into(),
            JwtError::Expired => "Jwt is expired".into(),
            JwtError::NotYetValid => "Jwt not yet valid".into(),
            JwtError::ExpirationRequired => "Jwt has no expiration".into(),
            JwtError::LifetimeTooLong => "Jwt lifetime is longer than allowed".into(),
            JwtError::UnknownKid => "Jwks has no key matching the Jwt kid and alg".into(),
            JwtError::BadSignature => "Jwt verification fails".into(),
            JwtError::UnusableKey(why) => format!("Jwks key for the Jwt kid is not usable: {why}"),
            JwtError::KeysUnavailable => "Jwks is not available".into(),
            JwtError::ClaimRuleFailed(claim) => format!("claim {claim} does not satisfy the rule"),
            JwtError::InvalidDpopProof(why) => format!("DPoP proof is invalid: {why}"),
            JwtError::SenderConstraint(why) => (*why).to_string(),
            JwtError::ApiKeyMissing => "API key is missing".into(),
            JwtError::ApiKeyUnknown => "API key is not valid".into(),
            JwtError::ApiKeyExpired => "API key is expired".into(),
            JwtError::TokenInactive => "token is not active".into(),
            JwtError::IntrospectionFailed(_) => {
                "the token could not be checked (introspection failed)".into()
            }
            JwtError::IntrospectionPending => "token introspection in progress".into(),
        }
    }

    /// Short stable code for stats and Envoy response-code details.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Missing => "missing",
            JwtError::BadFormat(_) | JwtError::BadHeader(_) | JwtError::BadPayload(_) => {
                "malformed"
            }
            JwtError::UnsupportedAlg => "unsupported_alg",
            JwtError::ForbiddenHeader(_) => "forbidden_header",
            JwtError::TooLarge => "too_large",
            JwtError::MultipleTokens => "multiple_tokens",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::AudienceNotAllowed => "audience_not_allowed",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::ExpirationRequired => "expiration_required",
            JwtError::LifetimeTooLong => "lifetime_too_long",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::BadSignature => "bad_signature",
            JwtError::UnusableKey(_) => "unusable_key",
            JwtError::KeysUnavailable => "jwks_unavailable",
            JwtError::ClaimRuleFailed(_) => "claim_rule_failed",
            JwtError::InvalidDpopProof(_) => "invalid_dpop_proof",
            JwtError::SenderConstraint(_) => "sender_constraint",
            JwtError::ApiKeyMissing => "missing",
            JwtError::ApiKeyUnknown => "api_key_unknown",
            JwtError::ApiKeyExpired => "api_key_expired",
            JwtError::TokenInactive => "token_inactive",
            JwtError::IntrospectionFailed(_) => "introspection_failed",
            JwtError::IntrospectionPending => "introspection_pending",
        }
    }

    /// The one place that maps a reason to status and RFC 6750 error code.
    pub fn denial(&self) -> Denial {
        let (status, error) = match self {
            JwtError::Missing | JwtError::ApiKeyMissing => (401, None),
            JwtError::AudienceNotAllowed => (403, Some("invalid_token")),
            JwtError::ClaimRuleFailed(_) => (403, Some("insufficient_scope")),
            JwtError::InvalidDpopProof(_) => (401, Some("invalid_dpop_proof")),
            JwtError::IntrospectionFailed(status) if *status != 401 => {
                (*status, Some("temporarily_unavailable"))
            }
            JwtError::IntrospectionPending => (503, Some("temporarily_unavailable")),
            _ => (401, Some("invalid_token")),
        };
        Denial {
            status,
            error,
            description: self.description(),
        }
    }

    /// True for failures a token could not have caused on its own: used to
    /// choose which error to report when several providers failed.
    pub fn is_missing(&self) -> bool {
        matches!(self, JwtError::Missing | JwtError::ApiKeyMissing)
    }

    /// The credential may belong to another provider that reads the same
    /// location (a JWT of another issuer, a JWT where an API key provider
    /// also looks): under `allow_missing` it fails only when no provider
    /// accepts anything.
    pub fn is_not_for_this_provider(&self) -> bool {
        matches!(self, JwtError::UnknownIssuer | JwtError::ApiKeyUnknown)
    }
}

impl Denial {
    /// Builds the local reply: `WWW-Authenticate: Bearer` and the JSON body.
    /// Rules with more to say (DPoP, scopes, resource metadata) go through
    /// [`super::challenge::render`].
    pub fn to_reply(&self, realm: &str) -> LocalReply {
        super::challenge::render(
            self,
            realm,
            &super::challenge::RuleChallenge::default(),
            super::challenge::Scheme::Bearer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_has_no_error_code() {
        let r = JwtError::Missing.denial().to_reply("https://gw/v1");
        assert_eq!(r.status, 401);
        let h = r
            .headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .unwrap();
        assert_eq!(h.1, "Bearer realm=\"https://gw/v1\"");
    }

    #[test]
    fn expired_token_is_invalid_token() {
        let r = JwtError::Expired.denial().to_reply("r");
        assert_eq!(r.status, 401);
        let h = r
            .headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .unwrap();
        assert_eq!(
            h.1,
            "Bearer realm=\"r\", error=\"invalid_token\", error_description=\"Jwt is expired\""
        );
    }

    #[test]
    fn audience_and_claim_rules_are_forbidden() {
        assert_eq!(JwtError::AudienceNotAllowed.denial().status, 403);
        let d = JwtError::ClaimRuleFailed("realm_access.roles".into()).denial();
        assert_eq!((d.status, d.error), (403, Some("insufficient_scope")));
    }

    #[test]
    fn realm_cannot_inject_parameters() {
        let r = JwtError::Missing.denial().to_reply("x\", error=\"evil");
        let h = r
            .headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .unwrap();
        assert_eq!(h.1, "Bearer realm=\"x, error=evil\"");
    }
}
