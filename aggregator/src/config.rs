//! Configuration of `telemetry-aggregator`: one typed struct, read from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fleet::LogFormat;
use schema::span::Span;

use crate::rollup::RollupConfig;

/// Live rollups of the event stream: replays the longest window from TELEMETRY_EVENTS, follows it live,
/// publishes sliding-window statistics to the KV bucket telemetry_stats and times out stuck installs.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-aggregator", version, about, long_about = None)]
pub struct Config {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Address of the ops port (/healthz, /readyz, /metrics).
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9102")]
    pub ops_addr: SocketAddr,

    /// Rollup windows, comma-separated durations (s, m, h, d); the longest is replayed at start.
    #[arg(
        long,
        env = "WINDOWS",
        default_value = "1h,24h,7d",
        value_delimiter = ','
    )]
    pub windows: Vec<Span>,

    /// A signature is "new" when its first install lies within this duration (and nothing older in the
    /// longest window has it).
    #[arg(long, env = "SIGNATURE_WINDOW", default_value = "1h")]
    pub signature_window: Span,

    /// An install not final this long after its first event gets a synthetic `unknown`/`timeout` event.
    #[arg(long, env = "STUCK_AFTER", default_value = "1h")]
    pub stuck_after: Span,

    /// How often snapshots are computed and the changed keys written, in milliseconds.
    #[arg(long, env = "PUBLISH_INTERVAL_MS", default_value_t = 5000)]
    pub publish_interval_ms: u64,

    /// Length of the top lists (exit codes, categories, signatures), in entries.
    #[arg(long, env = "TOP_N", default_value_t = 10)]
    pub top_n: usize,

    /// Copies of the telemetry_stats bucket in a JetStream cluster (1 on a single server).
    #[arg(long, env = "KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,

    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `aggregator=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("WINDOWS is empty")]
    NoWindow,
    #[error("SIGNATURE_WINDOW ({0}) is longer than the longest window ({1})")]
    SignatureWindowTooLong(Span, Span),
    #[error("PUBLISH_INTERVAL_MS must be at least 50")]
    IntervalTooShort,
}

impl Config {
    /// Checks the settings and returns the rollup settings (windows sorted, without duplicates).
    pub fn rollup_config(&self) -> Result<RollupConfig, ConfigError> {
        let mut windows = self.windows.clone();
        windows.sort();
        windows.dedup();
        let longest = *windows.last().ok_or(ConfigError::NoWindow)?;
        if self.signature_window > longest {
            return Err(ConfigError::SignatureWindowTooLong(
                self.signature_window,
                longest,
            ));
        }
        if self.publish_interval_ms < 50 {
            return Err(ConfigError::IntervalTooShort);
        }
        Ok(RollupConfig {
            windows,
            signature_window: self.signature_window,
            top_n: self.top_n,
        })
    }

    pub fn publish_interval(&self) -> Duration {
        Duration::from_millis(self.publish_interval_ms)
    }

    /// Defaults, for tests and embedding: ops port on a free loopback port.
    pub fn for_nats(nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-aggregator"]);
        config.nats_url = nats_url.to_string();
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}
