//! Sender-constrained tokens: the `cnf` claim (RFC 7800) binds a token to
//! a DPoP key (`jkt`, RFC 9449 §6) or to a client certificate (`x5t#S256`,
//! RFC 8705 §3). The binding is checked on every use, cached token or not,
//! so a stolen token is useless without the key or the certificate.
//!
//! A bound token is only ever accepted by a provider configured to check
//! its kind of binding: a DPoP-bound token at a provider without `dpop`, or
//! a certificate-bound one at a provider without `certificate_bound_tokens`,
//! is refused rather than taken as a bearer token.

use super::config::Provider;
use super::dpop::{self, Dpop, Proof, ProofRequest};
use super::error::JwtError;
use super::keys::decode_b64url;
use super::replay::{self, ReplayCache, Seen};
use super::token::Claims;
use crate::callout::SharedStore;
use crate::request::RequestView;
use crate::stats::Counter;
use serde::Deserialize;
use serde_json::Value;

/// Wire form of `certificate_bound_tokens` (RFC 8705).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawCertificateBound {
    /// Only certificate-bound tokens are accepted.
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateBound {
    pub required: bool,
}

impl CertificateBound {
    pub fn compile(raw: RawCertificateBound) -> Self {
        CertificateBound {
            required: raw.required,
        }
    }
}

fn constraint(why: &'static str) -> JwtError {
    JwtError::SenderConstraint(why)
}

/// The `cnf` members we check.
#[derive(Debug, Default)]
struct Confirmation<'a> {
    jkt: Option<&'a str>,
    x5t_s256: Option<&'a str>,
}

fn confirmation(claims: &Claims) -> Result<Confirmation<'_>, JwtError> {
    let Some(cnf) = claims.payload.get("cnf") else {
        return Ok(Confirmation::default());
    };
    let cnf = cnf
        .as_object()
        .ok_or(JwtError::BadPayload("`cnf` must be an object"))?;
    let member = |name: &str| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(JwtError::BadPayload("`cnf` members must be strings")),
    };
    Ok(Confirmation {
        jkt: member("jkt")?,
        x5t_s256: member("x5t#S256")?,
    })
}

/// Per-request state of the binding checks: the proof is verified once
/// per DPoP setting, and its id recorded once, whatever the requirement
/// tree asks.
pub struct Binder<'a> {
    req: &'a RequestView,
    now: u64,
    store: &'a dyn SharedStore,
    namespace: &'a str,
    proofs: Vec<(Dpop, Result<Proof, JwtError>)>,
    recorded: Vec<[u8; 16]>,
    pub counters: Vec<Counter>,
}

impl<'a> Binder<'a> {
    pub fn new(
        req: &'a RequestView,
        now: u64,
        store: &'a dyn SharedStore,
        namespace: &'a str,
    ) -> Self {
        Binder {
            req,
            now,
            store,
            namespace,
            proofs: Vec::new(),
            recorded: Vec::new(),
            counters: Vec::new(),
        }
    }

    /// Checks the binding of a verified token (`dpop_scheme`: it came as
    /// `Authorization: DPoP`).
    pub fn check(
        &mut self,
        provider: &Provider,
        dpop_scheme: bool,
        token: &str,
        claims: &Claims,
    ) -> Result<(), JwtError> {
        let cnf = confirmation(claims)?;
        let result = self
            .certificate(provider, cnf.x5t_s256)
            .and_then(|()| self.dpop(provider, dpop_scheme, token, cnf.jkt));
        match &result {
            Err(JwtError::InvalidDpopProof(_)) => self.counters.push(Counter::DpopInvalid),
            Err(JwtError::SenderConstraint(_)) => {
                self.counters.push(Counter::SenderConstraintFailed)
            }
            _ => {}
        }
        result
    }

    fn certificate(&mut self, provider: &Provider, x5t_s256: Option<&str>) -> Result<(), JwtError> {
        let Some(settings) = provider.certificate_bound else {
            return match x5t_s256 {
                Some(_) => Err(constraint(
                    "Jwt is bound to a client certificate; this provider does not check client certificates",
                )),
                None => Ok(()),
            };
        };
        let Some(thumbprint) = x5t_s256 else {
            return match settings.required {
                true => Err(constraint(
                    "this provider requires certificate-bound tokens (cnf x5t#S256)",
                )),
                false => Ok(()),
            };
        };
        let Some(digest) = self.req.peer_certificate_sha256() else {
            return Err(constraint(
                "Jwt is bound to a client certificate and the connection presented none",
            ));
        };
        let bound = decode_b64url(thumbprint)
            .ok_or(JwtError::BadPayload("`cnf` x5t#S256 is not base64url"))?;
        if crate::vocab::hex::decode(digest).is_some_and(|presented| presented == bound) {
            self.counters.push(Counter::CertificateBoundVerified);
            Ok(())
        } else {
            Err(constraint(
                "Jwt is bound to another client certificate than the connection's",
            ))
        }
    }

    fn dpop(
        &mut self,
        provider: &Provider,
        dpop_scheme: bool,
        token: &str,
        jkt: Option<&str>,
    ) -> Result<(), JwtError> {
        let Some(settings) = &provider.dpop else {
            return match jkt {
                Some(_) => Err(constraint(
                    "Jwt is DPoP-bound; this provider does not accept DPoP",
                )),
                None => Ok(()),
            };
        };
        if !dpop_scheme {
            return match (jkt, settings.required) {
                (Some(_), _) => Err(constraint(
                    "Jwt is DPoP-bound and must be sent with the DPoP scheme and a proof",
                )),
                (None, true) => Err(constraint("this provider requires DPoP-bound tokens")),
                (None, false) => Ok(()),
            };
        }
        let proof = self.proof(settings)?;
        match &proof.ath {
            None => return Err(JwtError::InvalidDpopProof("ath is missing")),
            Some(ath) if *ath != dpop::access_token_hash(token) => {
                return Err(JwtError::InvalidDpopProof(
                    "ath does not match the access token",
                ))
            }
            Some(_) => {}
        }
        match jkt {
            None => {
                return Err(constraint(
                    "Jwt sent with the DPoP scheme is not DPoP-bound (no cnf jkt)",
                ))
            }
            Some(jkt) if jkt != proof.thumbprint => {
                return Err(JwtError::InvalidDpopProof(
                    "the token is bound to another key",
                ))
            }
            Some(_) => {}
        }
        self.record(settings, &proof)
    }

    /// The request's proof under these settings, verified once.
    fn proof(&mut self, settings: &Dpop) -> Result<Proof, JwtError> {
        if let Some((_, memo)) = self.proofs.iter().find(|(d, _)| d == settings) {
            return memo.clone();
        }
        let headers: Vec<&str> = self.req.header_values("dpop").collect();
        let scheme = match self.req.scheme() {
            "" => "http",
            s => s,
        };
        let uri = format!(
            "{scheme}://{}{}",
            self.req.authority(),
            self.req.path_without_query()
        );
        let request = ProofRequest {
            method: self.req.method(),
            uri: &uri,
            now: self.now,
        };
        let result = dpop::verify(settings, &headers, request);
        self.proofs.push((settings.clone(), result.clone()));
        result
    }

    /// The proof's id goes into the shared replay cache, once per request.
    fn record(&mut self, settings: &Dpop, proof: &Proof) -> Result<(), JwtError> {
        let id = replay::id(&proof.thumbprint, &proof.jti);
        if self.recorded.contains(&id) {
            return Ok(());
        }
        let cache = ReplayCache::new(self.namespace, settings.replay_entries);
        // After this the proof's iat is out of the window: it cannot be accepted again.
        let expires_at = proof.iat.saturating_add(settings.max_age).saturating_add(1);
        match cache.check_and_record(self.store, &id, expires_at, self.now) {
            Seen::Fresh => {
                self.recorded.push(id);
                self.counters.push(Counter::DpopVerified);
                Ok(())
            }
            Seen::Replayed => {
                self.counters.push(Counter::DpopReplayed);
                Err(JwtError::InvalidDpopProof(
                    "the proof was used before (jti replayed)",
                ))
            }
            Seen::Full => {
                self.counters.push(Counter::DpopReplayCacheFull);
                Err(JwtError::InvalidDpopProof(
                    "the replay cache is full; retry with a new proof later",
                ))
            }
            Seen::Unavailable => Err(JwtError::InvalidDpopProof(
                "the replay cache is unavailable",
            )),
        }
    }
}

#[cfg(test)]
#[path = "cnf_tests.rs"]
mod tests;
