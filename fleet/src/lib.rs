//! What every service of the fleet shares at run time, so that each binary's `main` stays short and the
//! services behave alike: the common config options, the config error and its exit code (`config`), log
//! set-up, the Prometheus recorder (`metrics`), the NATS connection, stream set-up and flush (`nats`),
//! retries (`retry`), the shutdown token and signal (`shutdown`), the HTTP serve loop with its deadlines
//! and connection cap (`http`), a log line at most once per period (`every`), the ops routes `/healthz`, `/readyz` and `/metrics` (`ops`), and the
//! client address behind trusted proxies (`client`), and the [`Secret`] type of passwords in configs. The contract itself (names, settings, events) stays in `schema`.

pub mod client;
pub mod config;
pub mod every;
pub mod http;
mod linger;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod percent;
pub mod retry;
pub mod secret;
pub mod shutdown;

pub use config::ConfigError;
pub use every::Every;
pub use secret::Secret;
pub use shutdown::Shutdown;

use clap::ValueEnum;

/// Log format: text for people, json for log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Log set-up shared by the binaries: text or JSON lines on stderr, filtered by `level`
/// (tracing EnvFilter syntax).
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
