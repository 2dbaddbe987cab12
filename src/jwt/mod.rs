//! Stage 1: the client's JWT, verified in the filter.
//!
//! `authenticate` takes the compiled section, a request snapshot, the clock
//! and the per-VM verified-token cache (the shared one is in the store),
//! and says whether the request passes,
//! which header edits go with it, and which identities were verified.

pub mod cache;
pub mod challenge;
pub mod claims;
pub mod cnf;
pub mod config;
pub mod dpop;
pub mod error;
pub mod es256;
pub mod keys;
pub mod montgomery;
pub mod protected_resource;
pub mod replay;
pub mod rsa;
pub mod signature;
pub mod token;

use crate::apikeys::{ApiKeys, Rejection};
use crate::callout::SharedStore;
use crate::introspection::{Answer, Learnt, Needed, TokenDigest};
use crate::request::{cookie_header_without, path_without_params, RequestView};
use crate::response::{HeaderOp, LocalReply};
use crate::shared_cache::Lookup;
use crate::stats::Counter;
use cache::{SharedVerified, VerifiedCache};
use config::{
    IntrospectionProvider, JwtAuthn, JwtProvider, Location, Provider, ProviderKeys, ProviderKind,
    Requirement, Rule, TimeChecks,
};
use error::JwtError;
use keys::KeySet;
use std::sync::Arc;
use token::Claims;

/// Filter state key (`wasm.ai_auth.caller` in access logs): who called, for
/// cost attribution: the API key's name or the JWT's `sub`, never a credential.
pub const CALLER_PROPERTY: &str = "ai_auth.caller";

/// A value from a client or a claim, fit for a log line: printable, at most
/// 256 bytes.
pub fn loggable(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= 256).then_some(c)
        })
        .collect()
}

/// A credential verified by a provider: a JWT, or an API key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: String,
    pub claims: Arc<Claims>,
}

impl Identity {
    /// Who is calling, for cost attribution: the JWT's `sub`, or the API
    /// key's name (an API key's claims carry it as `sub` too).
    pub fn caller(&self) -> Option<&str> {
        self.claims.sub.as_deref()
    }
}

/// The JWT stage's answer for one request.
#[derive(Debug)]
pub struct JwtOutcome {
    /// `Ok` with the verified identities (possibly none), or the reason to deny.
    pub result: Result<Vec<Identity>, JwtError>,
    /// Edits for the upstream request (token removal, claim headers); applied only on `Ok`.
    pub header_ops: Vec<HeaderOp>,
    pub counters: Vec<Counter>,
    /// Which rule applied, for the debug log.
    pub rule: Option<usize>,
    /// Remote providers whose JWKS had no key for a token's `kid`: the root
    /// context refetches them (rate-limited), so a rotation at the IdP is
    /// picked up without waiting for `cache_duration`.
    pub refresh: Vec<usize>,
    /// The scheme the client presented its token with (for the challenge
    /// that carries the error).
    pub scheme: challenge::Scheme,
    /// With `Err(IntrospectionPending)`: the introspection call to make
    /// before running the stage again.
    pub introspect: Option<Needed>,
}

/// The `realm` of `WWW-Authenticate`: configured, or the request URL without
/// its query, as Envoy's `jwt_authn` writes it.
pub fn realm(cfg: &JwtAuthn, req: &RequestView) -> String {
    match &cfg.realm {
        Some(r) => r.clone(),
        None => {
            let scheme = if req.scheme().is_empty() {
                "http"
            } else {
                req.scheme()
            };
            let path: String = req.path_without_query().chars().take(256).collect();
            format!("{scheme}://{}{path}", req.authority())
        }
    }
}

/// The answer to a request the stage denied on rule `rule`: the JSON body
/// and the rule's `WWW-Authenticate` challenges.
pub fn denial_reply(
    cfg: &JwtAuthn,
    rule: Option<usize>,
    error: &JwtError,
    req: &RequestView,
    used: challenge::Scheme,
) -> LocalReply {
    let denial = error.denial();
    if denial.status != 401 && denial.error == Some("temporarily_unavailable") {
        // Not the client's fault: no challenge, and a hint to retry.
        return LocalReply::json_error(
            denial.status,
            "temporarily_unavailable",
            &denial.description,
        )
        .with_header("retry-after", "1".into());
    }
    let default = challenge::RuleChallenge::default();
    let rule = rule
        .and_then(|i| cfg.rules.get(i))
        .map_or(&default, |r| &r.challenge);
    challenge::render(&denial, &realm(cfg, req), rule, used)
}

fn is_cors_preflight(req: &RequestView) -> bool {
    req.method() == "OPTIONS"
        && req.header("origin").is_some_and(|o| !o.is_empty())
        && req
            .header("access-control-request-method")
            .is_some_and(|m| !m.is_empty())
}

/// Keys of remote providers as this VM has them, indexed like the providers.
pub type RemoteKeys = [Option<Arc<KeySet>>];

/// With local keys only and a fresh shared store (tests).
#[cfg(test)]
pub fn authenticate(
    cfg: &JwtAuthn,
    req: &RequestView,
    now: u64,
    cache: &mut VerifiedCache,
) -> JwtOutcome {
    authenticate_with(
        cfg,
        req,
        now,
        cache,
        &[],
        &crate::callout::MemoryStore::default(),
        &Learnt::default(),
    )
}

/// `learnt`: introspection answers and endpoints the flow got for this request.
pub fn authenticate_with(
    cfg: &JwtAuthn,
    req: &RequestView,
    now: u64,
    cache: &mut VerifiedCache,
    remote: &RemoteKeys,
    store: &dyn SharedStore,
    learnt: &Learnt,
) -> JwtOutcome {
    let mut outcome = JwtOutcome {
        result: Ok(Vec::new()),
        header_ops: Vec::new(),
        counters: Vec::new(),
        rule: None,
        refresh: Vec::new(),
        scheme: challenge::Scheme::Bearer,
        introspect: None,
    };
    if cfg.bypass_cors_preflight && is_cors_preflight(req) {
        outcome.counters.push(Counter::JwtCorsPreflightBypassed);
        return outcome;
    }
    let Some((index, rule)) = cfg
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.route.matches(req))
    else {
        return outcome;
    };
    outcome.rule = Some(index);
    let Some(requirement) = &rule.requirement else {
        // Headers claims would fill must not come from the client either.
        outcome.header_ops = claim_header_removals(cfg);
        return outcome;
    };
    let mut eval = Evaluation::new(cfg, req, now, cache, remote, store, learnt);
    let mut result = eval.requirement(requirement);
    let identities: Vec<Identity> = eval.identities();
    if result.is_ok() {
        result = check_claim_rules(rule, &identities);
    }
    outcome.scheme = eval.scheme();
    outcome.counters.append(&mut eval.counters);
    outcome.counters.append(&mut eval.binder.counters);
    outcome.refresh = std::mem::take(&mut eval.refresh);
    match result {
        Ok(()) => {
            outcome.counters.push(Counter::JwtAllowed);
            outcome.header_ops = eval.header_ops();
            outcome.result = Ok(identities);
        }
        Err(JwtError::IntrospectionPending) if eval.needed.is_some() => {
            outcome.introspect = eval.needed.take();
            outcome.result = Err(JwtError::IntrospectionPending);
        }
        Err(JwtError::IntrospectionPending) => {
            // Cannot happen (whoever says "pending" says what to ask);
            // fail closed rather than loop.
            outcome.counters.push(Counter::JwtDenied);
            outcome.result = Err(JwtError::IntrospectionFailed(503));
        }
        Err(e) => {
            outcome.counters.push(Counter::JwtDenied);
            outcome.result = Err(e);
        }
    }
    outcome
}

fn check_claim_rules(rule: &Rule, identities: &[Identity]) -> Result<(), JwtError> {
    let Some(first_rule) = rule.claim_rules.first() else {
        return Ok(());
    };
    if identities.is_empty() {
        return Err(JwtError::Missing);
    }
    let mut failed = first_rule;
    for identity in identities {
        match rule
            .claim_rules
            .iter()
            .find(|r| !r.is_satisfied_by(&identity.claims))
        {
            None => return Ok(()),
            Some(r) => failed = r,
        }
    }
    Err(JwtError::ClaimRuleFailed(failed.claim_name()))
}

fn claim_header_removals(cfg: &JwtAuthn) -> Vec<HeaderOp> {
    let mut ops = Vec::new();
    for p in &cfg.providers {
        for (header, _) in &p.claim_to_headers {
            ops.push(HeaderOp::remove(header.clone()));
        }
        if let Some(h) = p.jwt().and_then(|j| j.forward_payload_header.as_ref()) {
            ops.push(HeaderOp::remove(h.clone()));
        }
    }
    ops
}

/// Where a token was found, to remove it later.
#[derive(Debug, Clone)]
struct Found {
    token: String,
    location: Location,
}

/// State of one requirement evaluation: each provider's token is extracted
/// and verified at most once, whatever the requirement tree.
struct Evaluation<'a> {
    cfg: &'a JwtAuthn,
    req: &'a RequestView,
    now: u64,
    cache: &'a mut VerifiedCache,
    remote: &'a RemoteKeys,
    found: Vec<Option<Result<Option<Found>, JwtError>>>,
    verified: Vec<Option<Result<Arc<Claims>, JwtError>>>,
    /// Providers whose token's binding (DPoP, certificate) held.
    bound: Vec<bool>,
    binder: cnf::Binder<'a>,
    counters: Vec<Counter>,
    refresh: Vec<usize>,
    store: &'a dyn SharedStore,
    /// Introspection answers and endpoints got for this request.
    learnt: &'a Learnt,
    /// The first introspection call this evaluation needs.
    needed: Option<Needed>,
}

impl<'a> Evaluation<'a> {
    fn new(
        cfg: &'a JwtAuthn,
        req: &'a RequestView,
        now: u64,
        cache: &'a mut VerifiedCache,
        remote: &'a RemoteKeys,
        store: &'a dyn SharedStore,
        learnt: &'a Learnt,
    ) -> Self {
        let n = cfg.providers.len();
        Evaluation {
            cfg,
            req,
            now,
            cache,
            remote,
            found: vec![None; n],
            verified: vec![None; n],
            bound: vec![false; n],
            binder: cnf::Binder::new(req, now, store, &cfg.namespace),
            counters: Vec::new(),
            refresh: Vec::new(),
            store,
            learnt,
            needed: None,
        }
    }

    /// The provider's keys: its own, or what the root context fetched.
    fn keys(&self, index: usize, provider: &'a JwtProvider) -> Result<&'a KeySet, JwtError> {
        match &provider.keys {
            ProviderKeys::Local(keys) => Ok(keys),
            ProviderKeys::Remote(_) => self
                .remote
                .get(index)
                .and_then(Option::as_deref)
                .ok_or(JwtError::KeysUnavailable),
        }
    }

    fn provider(&self, index: usize) -> Result<&'a Provider, JwtError> {
        // Indexes come from the compiled config; a miss would be our bug, not the client's.
        self.cfg.providers.get(index).ok_or(JwtError::UnknownIssuer)
    }

    fn requirement(&mut self, requirement: &Requirement) -> Result<(), JwtError> {
        match requirement {
            Requirement::Provider {
                provider,
                audiences,
            } => self
                .provider_check(*provider, audiences.as_deref())
                .map(|_| ()),
            Requirement::Any(list) => {
                let mut errors = Vec::new();
                for r in list {
                    match self.requirement(r) {
                        Ok(()) => return Ok(()),
                        Err(e) => errors.push(e),
                    }
                }
                // An answer still to come may yet meet the requirement.
                if errors.contains(&JwtError::IntrospectionPending) {
                    return Err(JwtError::IntrospectionPending);
                }
                // Report what went wrong with a token before "no token".
                let reported = errors.iter().position(|e| !e.is_missing()).unwrap_or(0);
                Err(errors
                    .into_iter()
                    .nth(reported)
                    .unwrap_or(JwtError::Missing))
            }
            Requirement::All(list) => list.iter().try_for_each(|r| self.requirement(r)),
            Requirement::AllowMissing | Requirement::AllowMissingOrFailed => {
                let tolerate_failure = matches!(requirement, Requirement::AllowMissingOrFailed);
                let mut first_error = None;
                let mut not_ours = None;
                let mut any_ok = false;
                for index in 0..self.cfg.providers.len() {
                    // An API key provider looks at each of its locations itself.
                    let is_key = matches!(
                        self.cfg.providers.get(index).map(|p| &p.kind),
                        Some(ProviderKind::ApiKeys(_))
                    );
                    let present = if is_key {
                        Ok(Some(()))
                    } else {
                        self.extract(index).map(|f| f.map(|_| ()))
                    };
                    match present {
                        Ok(None) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                        Ok(Some(())) => match self.provider_check(index, None) {
                            Ok(_) => any_ok = true,
                            // Its answer decides, even when failure is tolerated
                            // (a valid token still yields its claims).
                            Err(JwtError::IntrospectionPending) => {
                                return Err(JwtError::IntrospectionPending)
                            }
                            Err(e) if e.is_missing() => {}
                            Err(e) if e.is_not_for_this_provider() => {
                                not_ours.get_or_insert(e);
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        },
                    }
                }
                if tolerate_failure {
                    return Ok(());
                }
                if let Some(e) = first_error {
                    return Err(e);
                }
                match not_ours {
                    Some(e) if !any_ok => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    fn provider_check(
        &mut self,
        index: usize,
        audiences: Option<&[String]>,
    ) -> Result<Arc<Claims>, JwtError> {
        let provider = self.provider(index)?;
        let configured = match &provider.kind {
            ProviderKind::Jwt(jwt) => &jwt.audiences,
            ProviderKind::Introspection(intro) => &intro.audiences,
            ProviderKind::ApiKeys(keys) => return self.check_api_key(index, provider, keys),
        };
        let found = self.extract(index)?.ok_or(JwtError::Missing)?;
        let claims = self.verify(index, &found.token)?;
        let allowed = audiences.unwrap_or(configured);
        if !allowed.is_empty() && !claims.aud.iter().any(|a| allowed.contains(a)) {
            return Err(JwtError::AudienceNotAllowed);
        }
        self.bind(index, provider, &found, &claims)?;
        Ok(claims)
    }

    /// The token's sender constraint, checked once per provider. A token
    /// whose binding fails is no identity at all, whatever the requirement.
    fn bind(
        &mut self,
        index: usize,
        provider: &Provider,
        found: &Found,
        claims: &Claims,
    ) -> Result<(), JwtError> {
        if self.bound.get(index) == Some(&true) {
            return Ok(());
        }
        match self
            .binder
            .check(provider, found.location.is_dpop(), &found.token, claims)
        {
            Ok(()) => {
                if let Some(slot) = self.bound.get_mut(index) {
                    *slot = true;
                }
                Ok(())
            }
            Err(e) => {
                if let Some(slot) = self.verified.get_mut(index) {
                    *slot = Some(Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// `DPoP` when a token came with that scheme.
    fn scheme(&self) -> challenge::Scheme {
        let dpop = self
            .found
            .iter()
            .any(|f| matches!(f, Some(Ok(Some(found))) if found.location.is_dpop()));
        if dpop {
            challenge::Scheme::Dpop
        } else {
            challenge::Scheme::Bearer
        }
    }

    fn extract(&mut self, index: usize) -> Result<Option<Found>, JwtError> {
        if let Some(Some(memo)) = self.found.get(index) {
            return memo.clone();
        }
        let provider = self.provider(index)?;
        let result = find_token(provider, self.req);
        if let Some(slot) = self.found.get_mut(index) {
            *slot = Some(result.clone());
        }
        result
    }

    fn verify(&mut self, index: usize, token: &str) -> Result<Arc<Claims>, JwtError> {
        if let Some(Some(memo)) = self.verified.get(index) {
            return memo.clone();
        }
        let result = self.verify_uncached(index, token);
        if let Some(slot) = self.verified.get_mut(index) {
            *slot = Some(result.clone());
        }
        result
    }

    /// An API key may sit in any of the provider's locations, next to a
    /// JWT in another (`Authorization: Bearer <jwt>` and `x-api-key`): each
    /// location's value is tried, the first configured key wins, else the
    /// first location's reason. Memoised like a JWT verification.
    fn check_api_key(
        &mut self,
        index: usize,
        provider: &'a Provider,
        keys: &'a ApiKeys,
    ) -> Result<Arc<Claims>, JwtError> {
        if let Some(Some(memo)) = self.verified.get(index) {
            return memo.clone();
        }
        let mut result = Err(JwtError::ApiKeyMissing);
        for location in &provider.locations {
            let presented = match token_at(location, self.req) {
                Ok(Some(t)) => keys.check(t, self.now).map_err(|r| match r {
                    Rejection::Unknown => JwtError::ApiKeyUnknown,
                    Rejection::Expired => JwtError::ApiKeyExpired,
                }),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match presented {
                Ok(key) => {
                    result = Ok(Arc::clone(&key.claims));
                    break;
                }
                Err(e) if result.as_ref().is_err_and(JwtError::is_missing) => result = Err(e),
                Err(_) => {}
            }
        }
        self.counters.push(match &result {
            Ok(_) => Counter::ApiKeyValid,
            Err(JwtError::ApiKeyExpired) => Counter::ApiKeyExpired,
            Err(e) if e.is_missing() => Counter::ApiKeyMissing,
            Err(_) => Counter::ApiKeyUnknown,
        });
        if let Some(slot) = self.verified.get_mut(index) {
            *slot = Some(result.clone());
        }
        result
    }

    fn verify_uncached(&mut self, index: usize, token: &str) -> Result<Arc<Claims>, JwtError> {
        match &self.provider(index)?.kind {
            ProviderKind::Jwt(jwt) => self.verify_jwt(index, jwt, token),
            ProviderKind::Introspection(intro) => self.introspect(index, intro, token),
            // Checked by `check_api_key`, never through here.
            ProviderKind::ApiKeys(_) => Err(JwtError::ApiKeyMissing),
        }
    }

    /// An opaque token: the answer got for this request, else the cached
    /// one, else the endpoint must be asked (`IntrospectionPending`, and
    /// the call in `needed`). An active answer is checked as a JWT's claims.
    fn introspect(
        &mut self,
        index: usize,
        provider: &'a IntrospectionProvider,
        token: &str,
    ) -> Result<Arc<Claims>, JwtError> {
        if token.len() > self.cfg.max_token_size {
            return Err(JwtError::TooLarge);
        }
        let intro = &provider.introspection;
        let digest = TokenDigest::of(token);
        let fresh = self
            .learnt
            .answers
            .iter()
            .find(|f| f.provider == index && f.digest == digest)
            .map(|f| f.answer.clone());
        let answer = match fresh {
            Some(answer) => answer,
            None => match intro.cached(&self.cfg.namespace, index, self.store, &digest, self.now) {
                Some(answer) => {
                    self.counters.push(Counter::IntrospectionCacheHit);
                    answer
                }
                None => {
                    self.counters.push(Counter::IntrospectionCacheMiss);
                    if self.needed.is_none() {
                        let ns = &self.cfg.namespace;
                        let endpoint = intro.endpoint_now(
                            ns,
                            index,
                            self.store,
                            &self.learnt.endpoints,
                            self.now,
                        );
                        let (discovery, request) = match endpoint {
                            Some(e) => (false, intro.request(token, &e)),
                            None => match intro.discovery_request() {
                                Some(r) => (true, r),
                                None => {
                                    return Err(JwtError::IntrospectionFailed(
                                        intro.status_on_error,
                                    ))
                                }
                            },
                        };
                        self.needed = Some(Needed {
                            provider: index,
                            digest,
                            discovery,
                            request,
                        });
                    }
                    return Err(JwtError::IntrospectionPending);
                }
            },
        };
        let claims = match answer {
            Answer::Active(claims) => claims,
            Answer::Inactive => return Err(JwtError::TokenInactive),
            Answer::Failed(_) => return Err(JwtError::IntrospectionFailed(intro.status_on_error)),
        };
        if let Some(issuer) = &provider.issuer {
            if claims.iss.as_ref() != Some(issuer) {
                return Err(JwtError::UnknownIssuer);
            }
        }
        check_times(provider.times, &claims, self.now)?;
        Ok(claims)
    }

    fn verify_jwt(
        &mut self,
        index: usize,
        provider: &'a JwtProvider,
        token: &str,
    ) -> Result<Arc<Claims>, JwtError> {
        // Missing remote keys only matter once the token itself holds up:
        // a malformed or expired token fails at once, keys or not.
        let keys = self.keys(index, provider);
        // The generation keeps a token verified with rotated-away keys from hitting.
        let key = keys
            .as_ref()
            .ok()
            .and_then(|k| self.cache.key(index, k.generation(), token));
        if let Some(key) = &key {
            if let Some(claims) = self.cache.get(key, token, self.now, provider.clock_skew) {
                self.counters.push(Counter::JwtCacheHit);
                check_times(provider.times(), &claims, self.now)?;
                return Ok(claims);
            }
            self.counters.push(Counter::JwtCacheMiss);
        }
        let parsed = token::parse(token, self.cfg.max_token_size)?;
        if let Some(issuer) = &provider.issuer {
            if parsed.claims.iss.as_ref() != Some(issuer) {
                return Err(JwtError::UnknownIssuer);
            }
        }
        check_times(provider.times(), &parsed.claims, self.now)?;
        let keys = keys?;
        // Another worker VM may have verified this very token already.
        let shared =
            SharedVerified::new(self.cfg).and_then(|s| Some((s.key(index, keys, token)?, s)));
        if let Some((shared_key, shared)) = &shared {
            match shared.get(self.store, shared_key, self.now) {
                Lookup::Hit(_) => {
                    self.counters.push(Counter::JwtSharedCacheHit);
                    let claims = Arc::new(parsed.claims);
                    if let Some(key) = key {
                        self.cache.insert(key, token, Arc::clone(&claims));
                    }
                    return Ok(claims);
                }
                Lookup::Miss => self.counters.push(Counter::JwtSharedCacheMiss),
                Lookup::Malformed => {
                    self.counters.push(Counter::JwtSharedCacheMiss);
                    self.counters.push(Counter::JwtSharedCacheMalformed);
                }
            }
        }
        let kid = parsed.kid.as_deref();
        let mut tried = 0;
        let verified = keys.candidates(parsed.alg, kid).any(|k| {
            tried += 1;
            self.counters.push(Counter::JwtSignatureVerifications);
            k.material.verify(
                parsed.alg,
                parsed.signing_input.as_bytes(),
                &parsed.signature,
            )
        });
        if !verified {
            // A `kid` no key carries (kid-less keys may have been tried):
            // a key the JWKS had but we skipped, or one the IdP has just
            // rotated in, so look again (rate-limited).
            if let Some(kid) = kid.filter(|k| !keys.has_kid(k)) {
                if let Some(why) = keys.unusable_reason(kid) {
                    return Err(JwtError::UnusableKey(why));
                }
            } else if tried > 0 {
                return Err(JwtError::BadSignature);
            }
            if matches!(provider.keys, ProviderKeys::Remote(_)) {
                self.refresh.push(index);
            }
            return Err(JwtError::UnknownKid);
        }
        let claims = Arc::new(parsed.claims);
        if let Some(key) = key {
            self.cache.insert(key, token, Arc::clone(&claims));
        }
        if let Some((shared_key, shared)) = &shared {
            shared.insert(self.store, shared_key, &claims, provider.clock_skew);
        }
        Ok(claims)
    }

    fn identities(&self) -> Vec<Identity> {
        self.verified
            .iter()
            .zip(&self.cfg.providers)
            .filter_map(|(v, p)| match v {
                Some(Ok(claims)) => Some(Identity {
                    provider: p.name.clone(),
                    claims: Arc::clone(claims),
                }),
                _ => None,
            })
            .collect()
    }

    /// Where tokens must not go upstream: every location of every provider
    /// with `forward: false` that the requirement looked at, whatever each
    /// holds (RFC 6750 2: one method per request; a copy or a second token
    /// elsewhere must not slip through), except a location a verified
    /// `forward: true` provider took its token from.
    fn token_locations_to_strip(&self) -> Vec<&'a Location> {
        let providers = &self.cfg.providers;
        let kept: Vec<&Location> = providers
            .iter()
            .enumerate()
            .filter(|(i, p)| p.forward && matches!(self.verified.get(*i), Some(Some(Ok(_)))))
            .filter_map(|(i, _)| match self.found.get(i) {
                Some(Some(Ok(Some(found)))) => Some(&found.location),
                _ => None,
            })
            .collect();
        let mut strip: Vec<&Location> = Vec::new();
        for (index, provider) in providers.iter().enumerate() {
            // An API key provider's locations go whether or not it was
            // consulted (a `requires_any` may have been met first): a key
            // is a long-lived secret.
            let consulted = matches!(self.found.get(index), Some(Some(_)))
                || matches!(provider.kind, ProviderKind::ApiKeys(_));
            if provider.forward || !consulted {
                continue;
            }
            for location in &provider.locations {
                let carried_elsewhere = |l: &&Location| l.same_carrier(location);
                if !kept.iter().any(carried_elsewhere) && !strip.iter().any(carried_elsewhere) {
                    strip.push(location);
                }
            }
        }
        strip
    }

    /// Claim headers (removed first, so a client cannot supply them), then
    /// token removal for providers with `forward: false`, then claim values.
    fn header_ops(&self) -> Vec<HeaderOp> {
        let mut ops = claim_header_removals(self.cfg);
        let mut params: Vec<&str> = Vec::new();
        let mut cookies: Vec<&str> = Vec::new();
        for location in self.token_locations_to_strip() {
            match location {
                Location::Header { name, .. } => ops.push(HeaderOp::remove(name.clone())),
                Location::Param(p) => params.push(p),
                Location::Cookie(c) => cookies.push(c),
            }
        }
        let mut sets = Vec::new();
        for (index, provider) in self.cfg.providers.iter().enumerate() {
            let Some(Some(Ok(claims))) = self.verified.get(index) else {
                continue;
            };
            if !provider.forward
                && provider.dpop.is_some()
                && !ops.contains(&HeaderOp::remove("dpop"))
            {
                // The proof was for us; it is no use upstream.
                ops.push(HeaderOp::remove("dpop"));
            }
            for (header, path) in &provider.claim_to_headers {
                if let Some(value) = claims.lookup(path).and_then(claims::header_value) {
                    sets.push(HeaderOp::set(header.clone(), value));
                }
            }
            if let Some(h) = provider
                .jwt()
                .and_then(|j| j.forward_payload_header.as_ref())
            {
                sets.push(HeaderOp::set(h.clone(), claims.payload_b64.clone()));
            }
        }
        if let Some(path) = path_without_params(self.req.path(), &params) {
            ops.push(HeaderOp::set(":path", path));
        }
        if !cookies.is_empty() {
            let all: Vec<&str> = self.req.header_values("cookie").collect();
            if let Some(rest) = cookie_header_without(&all.join("; "), &cookies) {
                ops.push(if rest.is_empty() {
                    HeaderOp::remove("cookie")
                } else {
                    HeaderOp::set("cookie", rest)
                });
            }
        }
        ops.extend(sets);
        ops
    }
}

fn check_times(provider: TimeChecks, claims: &Claims, now: u64) -> Result<(), JwtError> {
    let skew = provider.clock_skew;
    match claims.exp {
        // `exp: 0` is 1970: expired, not "no expiry" as Envoy reads it.
        Some(exp) if now > exp.saturating_add(skew) => return Err(JwtError::Expired),
        None if provider.require_expiration || provider.max_lifetime.is_some() => {
            return Err(JwtError::ExpirationRequired)
        }
        _ => {}
    }
    if let Some(nbf) = claims.nbf {
        if now.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let (Some(max), Some(exp)) = (provider.max_lifetime, claims.exp) {
        let start = claims.iat.or(claims.nbf).unwrap_or(now);
        if exp.saturating_sub(start) > max {
            return Err(JwtError::LifetimeTooLong);
        }
    }
    Ok(())
}

/// The provider's token: the first location that holds one. Two tokens in
/// one location (two `Authorization` lines, `?access_token=` twice) are
/// refused, and so are two different tokens in two locations: only one is
/// verified, and the other must not reach the upstream as if it had been
/// (Envoy verifies every token it extracts; RFC 6750 2 allows one method).
/// The same token in two locations is one token (every copy is stripped).
fn find_token(provider: &Provider, req: &RequestView) -> Result<Option<Found>, JwtError> {
    let mut first: Option<Found> = None;
    for location in &provider.locations {
        let Some(token) = token_at(location, req)? else {
            continue;
        };
        match &first {
            None => {
                first = Some(Found {
                    token: token.to_string(),
                    location: location.clone(),
                })
            }
            Some(found) if found.token != token => return Err(JwtError::MultipleTokens),
            Some(_) => {}
        }
    }
    if first.as_ref().is_some_and(|f| f.token.is_empty()) {
        return Err(JwtError::BadFormat("empty token"));
    }
    Ok(first)
}

/// The token at one location, if there is one (two in one location are refused).
fn token_at<'r>(location: &'r Location, req: &'r RequestView) -> Result<Option<&'r str>, JwtError> {
    let tokens: Vec<&str> = match location {
        Location::Header { name, prefix } => req
            .header_values(name)
            .filter_map(|v| strip_prefix(v, prefix.as_deref()))
            .collect(),
        Location::Param(name) => req.query_params(name).collect(),
        Location::Cookie(name) => req.cookies(name).collect(),
    };
    match tokens.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.trim())),
        _ => Err(JwtError::MultipleTokens),
    }
}

/// `Bearer` and other schemes match case-insensitively (RFC 9110 11.1).
fn strip_prefix<'v>(value: &'v str, prefix: Option<&str>) -> Option<&'v str> {
    let Some(prefix) = prefix else {
        return Some(value);
    };
    match value.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => value.get(prefix.len()..),
        // "Bearer" with no token at all still counts as an (empty) token.
        _ => value
            .trim_end()
            .eq_ignore_ascii_case(prefix.trim_end())
            .then_some(""),
    }
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
