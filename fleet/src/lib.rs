//! What every service of the fleet shares at run time, so that each binary's `main` stays short and the
//! services behave alike: the NATS connection and stream set-up (`nats`), log set-up, the shutdown
//! signal, the [`Secret`] type of passwords in configs, and the small ops HTTP port with `/healthz`, `/readyz` and `/metrics` that consumers serve
//! (`ops`). The contract itself (names, settings, events) stays in `schema`.

pub mod nats;
pub mod ops;
pub mod retry;
mod secret;

pub use secret::Secret;

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

/// Resolves on SIGTERM or Ctrl+C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
