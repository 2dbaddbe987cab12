//! Support for ai-auth-filter's tests, benchmarks and demo: the real Envoy
//! process, small HTTP servers and client, fixture keys that sign tokens,
//! the benchmark's load generator.

pub mod bedrock;
pub mod demo;
pub mod envoy;
pub mod grpc_authz;
pub mod http;
pub mod keys;
pub mod loadgen;
pub mod misbehaving;
pub mod providers;
pub mod rng;
pub mod sdk;
