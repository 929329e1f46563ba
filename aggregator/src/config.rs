//! Configuration of `telemetry-aggregator`: one typed struct, read from flags and environment variables.
//! The running service's cleanup of stuck installs is ours: `CLEANUP_ENABLED`, `CLEANUP_INTERVAL_MIN`,
//! and `CLEANUP_STUCK_HOURS` for our `STUCK_AFTER`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fleet::config::Alias;
use fleet::ConfigError;
use schema::span::Span;

use crate::rollup::{Limits, RollupConfig};

/// Live rollups of the event stream: replays the longest window from TELEMETRY_EVENTS, follows it live,
/// publishes sliding-window statistics to the KV bucket telemetry_stats and times out stuck installs.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-aggregator", version, about, long_about = None)]
pub struct Config {
    /// Address of the ops port (/healthz, /readyz, /metrics): HOST:PORT, [IPv6]:PORT or :PORT.
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9102", value_parser = fleet::config::listen_addr)]
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

    /// An install not final this long after its first event gets a synthetic `unknown`/`timeout` event
    /// (the running service's CLEANUP_STUCK_HOURS, in hours, when this is unset).
    #[arg(long, env = "STUCK_AFTER", default_value = "1h")]
    pub stuck_after: Span,

    /// Time out stuck installs (see STUCK_AFTER); false: they stay in progress.
    #[arg(long, env = "CLEANUP_ENABLED", default_value_t = true, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub cleanup_enabled: bool,

    /// How often stuck installs are looked for, in minutes (fractions allowed); unset: at every
    /// publish (PUBLISH_INTERVAL_MS).
    #[arg(long, env = "CLEANUP_INTERVAL_MIN")]
    pub cleanup_interval_min: Option<f64>,

    /// How often snapshots are computed and the changed keys written, in milliseconds.
    #[arg(long, env = "PUBLISH_INTERVAL_MS", default_value_t = 5000)]
    pub publish_interval_ms: u64,

    /// Length of the top lists (exit codes, categories, signatures), in entries.
    #[arg(long, env = "TOP_N", default_value_t = 10)]
    pub top_n: usize,

    /// An app gets its own rollups (key, index line) once this many distinct clients (random_id) started
    /// it within the longest window; the installs of other names are summed as `other` in the index.
    #[arg(long, env = "MIN_DISTINCT_INSTALLS", default_value_t = 3)]
    pub min_distinct_installs: u32,

    /// Most apps with their own rollups, most installs first; beyond it names are summed as `other`
    /// (counted in telemetry_aggregator_names_capped_total). Bounds the memory and the KV keys that
    /// made-up app names can take.
    #[arg(long, env = "MAX_TRACKED_APPS", default_value_t = 2000)]
    pub max_tracked_apps: usize,

    /// Most error signatures named in top lists and signatures.new, most installs first.
    #[arg(long, env = "MAX_TRACKED_SIGNATURES", default_value_t = 20000)]
    pub max_tracked_signatures: usize,

    /// Most installs not final whose full merge state is kept (about 1.4 KB each). Past it the oldest
    /// lose theirs: they still count, in progress, and follow their final event, but get no synthetic
    /// timeout (counted in telemetry_aggregator_states_shed_total). Bounds the memory a flood of
    /// installs that never end can take.
    #[arg(long, env = "MAX_PENDING_STATES", default_value_t = 200_000)]
    pub max_pending_states: usize,

    /// Copies of the telemetry_stats bucket in a JetStream cluster (1 on a single server).
    #[arg(long, env = "KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,

    #[command(flatten)]
    pub common: fleet::config::Common,
}

impl fleet::config::Service for Config {
    const ALIASES: &'static [Alias] = &[Alias {
        ours: "STUCK_AFTER",
        theirs: "CLEANUP_STUCK_HOURS",
        convert: fleet::config::hours_as_secs,
    }];

    fn common_mut(&mut self) -> &mut fleet::config::Common {
        &mut self.common
    }
}

impl Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(minutes) = self.cleanup_interval_min {
            if !(minutes > 0.0 && minutes <= 525_600.0) {
                return Err(ConfigError::new(
                    "CLEANUP_INTERVAL_MIN",
                    format!(
                        "must be a number of minutes within 0..=525600 (a year), got {minutes}"
                    ),
                ));
            }
        }
        self.rollup_config().map(drop)
    }

    /// How often stuck installs are looked for: `None` when cleanup is off, zero for every publish.
    pub fn cleanup_interval(&self) -> Option<Duration> {
        if !self.cleanup_enabled {
            return None;
        }
        Some(self.cleanup_interval_min.map_or(Duration::ZERO, |m| {
            Duration::from_secs_f64(m.max(0.0) * 60.0)
        }))
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
        if !(1..=64).contains(&self.min_distinct_installs) {
            return Err(ConfigError::new(
                "MIN_DISTINCT_INSTALLS",
                format!("must be within 1..=64, got {}", self.min_distinct_installs),
            ));
        }
        for (setting, value) in [
            ("MAX_TRACKED_APPS", self.max_tracked_apps),
            ("MAX_TRACKED_SIGNATURES", self.max_tracked_signatures),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(ConfigError::new(
                    setting,
                    format!("must be within 1..=1000000, got {value}"),
                ));
            }
        }
        Ok(RollupConfig {
            windows,
            signature_window: self.signature_window,
            top_n: self.top_n,
            limits: Limits {
                min_clients: self.min_distinct_installs,
                max_apps: self.max_tracked_apps,
                max_signatures: self.max_tracked_signatures,
            },
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fleet::config::Service;

    use super::*;

    #[test]
    fn the_table_of_operator_names_matches_what_the_aggregator_reads() {
        assert_eq!(
            fleet::config::operator_names_read(&Config::command(), Config::ALIASES),
            fleet::config::operator_names_of("telemetry-aggregator")
        );
    }

    fn check(args: &[&str], expected: Result<Option<Duration>, &str>) {
        let config = Config::try_parse_from(
            std::iter::once("telemetry-aggregator").chain(args.iter().copied()),
        )
        .expect("parses");
        let got = config
            .check()
            .map(|()| config.cleanup_interval())
            .map_err(|e| e.setting);
        assert_eq!(got, expected, "{args:?}");
    }

    #[test]
    fn cleanup_settings() {
        check(&[], Ok(Some(Duration::ZERO)));
        check(&["--cleanup-enabled", "false"], Ok(None));
        check(
            &["--cleanup-interval-min", "0.5"],
            Ok(Some(Duration::from_secs(30))),
        );
        check(
            &["--cleanup-interval-min", "0"],
            Err("CLEANUP_INTERVAL_MIN"),
        );
        check(&["--stuck-after", "2h"], Ok(Some(Duration::ZERO)));
    }
}
