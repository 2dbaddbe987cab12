#!/usr/bin/env bash
# The benchmark of issue 3: one Envoy (--concurrency 1; BENCH_CONCURRENCY=2 for two workers) with a listener per
# variant (no filter; Envoy's jwt_authn RS256 with and without its cache; this
# filter RS256 / ES256 / EdDSA on a cache miss and a cache hit), measured in
# interleaved rounds by the Rust load generator of the testkit. Prints req/s,
# the ratio to no filter, Envoy CPU µs per request, the .wasm size and the
# targets. Takes a few minutes; fails on any non-2xx response.
#
#   scripts/bench.sh
#   BENCH_ROUNDS=5 BENCH_SECONDS=5 scripts/bench.sh        # longer, steadier
#   BENCH_ONLY=wasm_rs256_hit,native_jwt_cache scripts/bench.sh
#
# Other knobs: BENCH_WARMUP_SECONDS (1), BENCH_CONNECTIONS (16). Details at
# the top of benches/envoy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN=$(scripts/setup.sh)
FILTER_WASM=$(scripts/build-wasm.sh)
export ENVOY_BIN FILTER_WASM
# The floor variant's filter, built next to ours.
cargo build --quiet --release --target wasm32-wasip1 -p ai-auth-noop-filter >&2
# The gRPC passthrough variants' auth service (tonic), in the bench profile
# (target/release, next to the benchmark).
cargo build --quiet --profile bench -p ai-auth-testkit --bin demo-authz >&2

echo "== building the benchmark (release)" >&2
cargo bench --quiet --bench envoy --no-run >&2
echo "== running it" >&2
exec cargo bench --quiet --bench envoy
