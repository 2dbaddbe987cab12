//! The proxy-wasm adapter: the only code that names the ABI.
//!
//! It reads what the core needs from the host (configuration, headers,
//! clock), calls the core, and performs the decision. It is our own thin
//! layer over the raw ABI (no SDK): `abi` declares the host's functions and
//! returns every status as a `Result`, `exports` is what the host calls and
//! dispatches to the root and stream objects without ever panicking (a
//! panic aborts the VM and every later request on that worker gets 503).

mod abi;
mod exports;
mod hostcalls;
mod http;
mod keys;
mod logger;
mod pairs;
mod root;
mod stream;
mod tokens;
