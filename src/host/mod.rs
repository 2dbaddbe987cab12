//! The proxy-wasm adapter: the only code that names `proxy_wasm`.
//!
//! It reads what the core needs from the host (configuration, headers,
//! clock), calls the core, and performs the decision. Every hostcall goes
//! through `proxy_wasm::hostcalls` and its `Status` is handled: the SDK's
//! trait defaults unwrap, and a panic would abort the VM.

mod hostcalls;
mod http;
mod keys;
mod root;
mod stream;
mod tokens;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // A panic aborts the VM (panic = "abort"); say why before it goes.
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("ai_auth: panic: {info}"));
    }));
    // Hostcalls are not allowed here; the root context narrows the level
    // to Envoy's once it may ask.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
