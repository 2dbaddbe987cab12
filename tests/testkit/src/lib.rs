//! Support for ai-auth-filter's tests, benchmarks and demo.

pub mod keys;
