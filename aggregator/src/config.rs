//! Configuration of `telemetry-aggregator`: one typed struct, read from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fleet::ConfigError;
use schema::span::Span;

use crate::rollup::RollupConfig;

/// Live rollups of the event stream: replays the longest window from TELEMETRY_EVENTS, follows it live,
/// publishes sliding-window statistics to the KV bucket telemetry_stats and times out stuck installs.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-aggregator", version, about, long_about = None)]
pub struct Config {
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

    #[command(flatten)]
    pub common: fleet::config::Common,
}

impl Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.rollup_config().map(drop)
    }

    /// Checks the settings and returns the rollup settings (windows sorted, without duplicates, at
    /// least one).
    pub fn rollup_config(&self) -> Result<RollupConfig, ConfigError> {
        let mut windows = self.windows.clone();
        windows.sort();
        windows.dedup();
        let longest = *windows
            .last()
            .ok_or_else(|| ConfigError::new("WINDOWS", "is empty"))?;
        if self.signature_window > longest {
            return Err(ConfigError::new(
                "SIGNATURE_WINDOW",
                format!(
                    "({}) is longer than the longest window ({longest})",
                    self.signature_window
                ),
            ));
        }
        if self.publish_interval_ms < 50 {
            return Err(ConfigError::new(
                "PUBLISH_INTERVAL_MS",
                "must be at least 50",
            ));
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
        config.common.nats_url = nats_url.to_string();
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}
