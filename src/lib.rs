//! ai-auth-filter: the authentication layer of an AI gateway, as one Envoy
//! proxy-wasm HTTP filter.
//!
//! Request flow:
//! 1. The host adapter ([`host`], the only code that names the proxy-wasm ABI)
//!    snapshots the request headers into a [`request::RequestView`].
//! 2. [`flow::on_request_headers`] runs the stages in order with the compiled
//!    [`config::FilterConfig`], the clock and the worker's caches:
//!    [`jwt`] (client JWT verified in the filter), then passthrough auth,
//!    then upstream credentials.
//! 3. It returns a [`flow::Decision`]: continue with header edits, or reply
//!    locally (401/403 per RFC 6750 with a small JSON body).
//! 4. The adapter performs it and moves the counters in [`stats`].
//!
//! Everything but `host` is plain Rust with native unit tests.

pub mod apikeys;
pub mod callout;
pub mod config;
pub mod credentials;
pub mod ext_authz;
pub mod flow;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod models;
pub mod request;
pub mod response;
pub mod route;
pub mod secret;
pub mod shared_cache;
pub mod stats;
pub mod vocab;

#[cfg(target_arch = "wasm32")]
mod host;

/// The host adapter's wire formats are plain bytes: tested natively.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "host/pairs.rs"]
mod host_pairs;
