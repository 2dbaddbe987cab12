//! `log` records to the host's log (`proxy_log`), at the level Envoy runs
//! its `wasm` component with, so disabled levels cost no hostcall.

use super::abi::{self, LogLevel};

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        // A log line the host refuses is lost; there is nowhere to report it.
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger. Hostcalls are not allowed yet (`_initialize`), so
/// everything is let through until `follow_host_level` narrows it.
pub fn init() {
    // Fails only if a logger is already set, which is then ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
    // A panic aborts the VM (panic = "abort"); say why before it goes.
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(LogLevel::Critical, &format!("ai_auth: panic: {info}"));
    }));
}

/// Narrows the level to Envoy's, once hostcalls are allowed (configure).
pub fn follow_host_level() {
    let filter = match abi::log_level().unwrap_or(LogLevel::Info) {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Critical => log::LevelFilter::Off,
    };
    log::set_max_level(filter);
}
