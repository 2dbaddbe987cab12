//! Counters, named as Envoy's own filters name theirs. The core reports
//! which counters a request moved; the host owns the metric handles.

/// Prefix of every metric this filter defines. Envoy shows wasm metrics
/// under `wasmcustom.`, so `allowed` is `wasmcustom.ai_auth.jwt_authn.allowed`.
pub const PREFIX: &str = "ai_auth";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    JwtAllowed,
    JwtDenied,
    JwtCorsPreflightBypassed,
    JwtCacheHit,
    JwtCacheMiss,
    JwtSharedCacheHit,
    JwtSharedCacheMiss,
    JwtSharedCacheMalformed,
    JwtSignatureVerifications,
    CredentialsInjected,
    CredentialsPassedThrough,
    CredentialsDenied,
    ExtAuthzOk,
    ExtAuthzDenied,
    ExtAuthzError,
    ExtAuthzFailureModeAllowed,
    ExtAuthzDisabled,
    ExtAuthzCacheHit,
    ExtAuthzCacheMiss,
    JwksFetchSuccess,
    JwksFetchFailed,
    JwksKeySkipped,
    JwksRefetchUnknownKid,
    TokenFetchSuccess,
    TokenFetchFailed,
    ResourceMetadataServed,
    DpopVerified,
    DpopInvalid,
    DpopReplayed,
    DpopReplayCacheFull,
    CertificateBoundVerified,
    SenderConstraintFailed,
    ApiKeyValid,
    ApiKeyUnknown,
    ApiKeyExpired,
    ApiKeyMissing,
    ModelAllowed,
    ModelDenied,
    ModelUnreadable,
    IntrospectionCacheHit,
    IntrospectionCacheMiss,
    IntrospectionActive,
    IntrospectionInactive,
    IntrospectionFailed,
    Sigv4Signed,
    Sigv4BodyTooLarge,
    AwsCredentialsFetchSuccess,
    AwsCredentialsFetchFailed,
}

impl Counter {
    pub const ALL: [Counter; 48] = [
        Counter::JwtAllowed,
        Counter::JwtDenied,
        Counter::JwtCorsPreflightBypassed,
        Counter::JwtCacheHit,
        Counter::JwtCacheMiss,
        Counter::JwtSharedCacheHit,
        Counter::JwtSharedCacheMiss,
        Counter::JwtSharedCacheMalformed,
        Counter::JwtSignatureVerifications,
        Counter::CredentialsInjected,
        Counter::CredentialsPassedThrough,
        Counter::CredentialsDenied,
        Counter::ExtAuthzOk,
        Counter::ExtAuthzDenied,
        Counter::ExtAuthzError,
        Counter::ExtAuthzFailureModeAllowed,
        Counter::ExtAuthzDisabled,
        Counter::ExtAuthzCacheHit,
        Counter::ExtAuthzCacheMiss,
        Counter::JwksFetchSuccess,
        Counter::JwksFetchFailed,
        Counter::JwksKeySkipped,
        Counter::JwksRefetchUnknownKid,
        Counter::TokenFetchSuccess,
        Counter::TokenFetchFailed,
        Counter::ResourceMetadataServed,
        Counter::DpopVerified,
        Counter::DpopInvalid,
        Counter::DpopReplayed,
        Counter::DpopReplayCacheFull,
        Counter::CertificateBoundVerified,
        Counter::SenderConstraintFailed,
        Counter::ApiKeyValid,
        Counter::ApiKeyUnknown,
        Counter::ApiKeyExpired,
        Counter::ApiKeyMissing,
        Counter::ModelAllowed,
        Counter::ModelDenied,
        Counter::ModelUnreadable,
        Counter::IntrospectionCacheHit,
        Counter::IntrospectionCacheMiss,
        Counter::IntrospectionActive,
        Counter::IntrospectionInactive,
        Counter::IntrospectionFailed,
        Counter::Sigv4Signed,
        Counter::Sigv4BodyTooLarge,
        Counter::AwsCredentialsFetchSuccess,
        Counter::AwsCredentialsFetchFailed,
    ];

    /// Metric name without the `ai_auth.` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Counter::JwtAllowed => "jwt_authn.allowed",
            Counter::JwtDenied => "jwt_authn.denied",
            Counter::JwtCorsPreflightBypassed => "jwt_authn.cors_preflight_bypassed",
            Counter::JwtCacheHit => "jwt_authn.jwt_cache_hit",
            Counter::JwtCacheMiss => "jwt_authn.jwt_cache_miss",
            Counter::JwtSharedCacheHit => "jwt_authn.jwt_shared_cache_hit",
            Counter::JwtSharedCacheMiss => "jwt_authn.jwt_shared_cache_miss",
            Counter::JwtSharedCacheMalformed => "jwt_authn.jwt_shared_cache_malformed",
            Counter::JwtSignatureVerifications => "jwt_authn.signature_verifications",
            Counter::CredentialsInjected => "upstream_credentials.injected",
            Counter::CredentialsPassedThrough => "upstream_credentials.passed_through",
            Counter::CredentialsDenied => "upstream_credentials.denied",
            Counter::ExtAuthzOk => "ext_authz.ok",
            Counter::ExtAuthzDenied => "ext_authz.denied",
            Counter::ExtAuthzError => "ext_authz.error",
            Counter::ExtAuthzFailureModeAllowed => "ext_authz.failure_mode_allowed",
            Counter::ExtAuthzDisabled => "ext_authz.disabled",
            Counter::ExtAuthzCacheHit => "ext_authz.decision_cache_hit",
            Counter::ExtAuthzCacheMiss => "ext_authz.decision_cache_miss",
            Counter::JwksFetchSuccess => "jwt_authn.jwks_fetch_success",
            Counter::JwksFetchFailed => "jwt_authn.jwks_fetch_failed",
            Counter::JwksKeySkipped => "jwt_authn.jwks_key_skipped",
            Counter::JwksRefetchUnknownKid => "jwt_authn.jwks_refetch_unknown_kid",
            Counter::TokenFetchSuccess => "upstream_credentials.token_fetch_success",
            Counter::TokenFetchFailed => "upstream_credentials.token_fetch_failed",
            Counter::ResourceMetadataServed => "jwt_authn.resource_metadata_served",
            Counter::DpopVerified => "jwt_authn.dpop_verified",
            Counter::DpopInvalid => "jwt_authn.dpop_invalid",
            Counter::DpopReplayed => "jwt_authn.dpop_replayed",
            Counter::DpopReplayCacheFull => "jwt_authn.dpop_replay_cache_full",
            Counter::CertificateBoundVerified => "jwt_authn.certificate_bound_verified",
            Counter::SenderConstraintFailed => "jwt_authn.sender_constraint_failed",
            Counter::ApiKeyValid => "jwt_authn.api_key_valid",
            Counter::ApiKeyUnknown => "jwt_authn.api_key_unknown",
            Counter::ApiKeyExpired => "jwt_authn.api_key_expired",
            Counter::ApiKeyMissing => "jwt_authn.api_key_missing",
            Counter::ModelAllowed => "model_check.allowed",
            Counter::ModelDenied => "model_check.denied",
            Counter::ModelUnreadable => "model_check.unreadable",
            Counter::IntrospectionCacheHit => "jwt_authn.introspection_cache_hit",
            Counter::IntrospectionCacheMiss => "jwt_authn.introspection_cache_miss",
            Counter::IntrospectionActive => "jwt_authn.introspection_active",
            Counter::IntrospectionInactive => "jwt_authn.introspection_inactive",
            Counter::IntrospectionFailed => "jwt_authn.introspection_failed",
            Counter::Sigv4Signed => "upstream_credentials.sigv4_signed",
            Counter::Sigv4BodyTooLarge => "upstream_credentials.sigv4_body_too_large",
            Counter::AwsCredentialsFetchSuccess => {
                "upstream_credentials.aws_credentials_fetch_success"
            }
            Counter::AwsCredentialsFetchFailed => {
                "upstream_credentials.aws_credentials_fetch_failed"
            }
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_all() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
