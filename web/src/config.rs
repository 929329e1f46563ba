//! The configuration of `telemetry-web`: one clap struct, every option an env var with its default and
//! unit. The ClickHouse password is a [`Secret`] whose `Debug` never shows it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fleet::LogFormat;

/// The read-only dashboard and JSON API of the telemetry fleet.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-web", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for HTTP (pages, API, /healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// ClickHouse HTTP URL.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// ClickHouse user.
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password (never printed).
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub clickhouse_password: Secret,
    /// ClickHouse database holding `installs_final` and `events_final` (written by telemetry-writer).
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "telemetry")]
    pub clickhouse_database: String,
    /// NATS server URL(s): live rollups from the `telemetry_stats` bucket, alerts from `TELEMETRY_ALERTS`.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Seconds a cached answer counts as fresh; after that it is served stale while one refresh runs.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 60)]
    pub cache_ttl_secs: u64,
    /// Seconds a stale answer may still be served while its refresh runs; older entries are dropped.
    #[arg(long, env = "CACHE_MAX_STALE_SECS", default_value_t = 3600)]
    pub cache_max_stale_secs: u64,
    /// Most cached answers (each a page of figures; a few KB).
    #[arg(long, env = "CACHE_CAPACITY", default_value_t = 2000)]
    pub cache_capacity: u64,
    /// Seconds between refreshes of the popular keys (those read since the last round).
    #[arg(long, env = "CACHE_REFRESH_SECS", default_value_t = 30)]
    pub cache_refresh_secs: u64,
    /// How many of the most read keys each refresh round renews.
    #[arg(long, env = "CACHE_REFRESH_TOP", default_value_t = 20)]
    pub cache_refresh_top: usize,
    /// Fill the cache with the default views at start (dashboard and errors of every period).
    #[arg(long, env = "CACHE_WARMUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub cache_warmup: bool,
    /// Deadline of one ClickHouse query, seconds (a slower one answers 503).
    #[arg(long, env = "QUERY_TIMEOUT_SECS", default_value_t = 60)]
    pub query_timeout_secs: u64,
    /// Rows per page of the installation log (the `limit` parameter may ask for up to 500).
    #[arg(long, env = "PAGE_SIZE", default_value_t = 50)]
    pub page_size: u32,
    /// Most rows of one CSV export.
    #[arg(long, env = "CSV_MAX_ROWS", default_value_t = 100_000)]
    pub csv_max_rows: u32,
    /// Most alert records read from `TELEMETRY_ALERTS` (the newest).
    #[arg(long, env = "ALERTS_MAX", default_value_t = 200)]
    pub alerts_max: usize,
    /// Drain deadline for open requests at shutdown, seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// The defaults with ClickHouse and NATS at the given URLs, listening on a free loopback port (tests).
    pub fn for_servers(clickhouse_url: &str, nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-web"]);
        config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.clickhouse_url = clickhouse_url.to_string();
        config.nats_url = nats_url.to_string();
        config
    }

    /// Rejects settings that cannot work, with a message naming the option.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.cache_ttl_secs > 0, "CACHE_TTL_SECS must be at least 1");
        anyhow::ensure!(
            self.cache_max_stale_secs >= self.cache_ttl_secs,
            "CACHE_MAX_STALE_SECS must be at least CACHE_TTL_SECS"
        );
        anyhow::ensure!(
            (1..=500).contains(&self.page_size),
            "PAGE_SIZE must be within 1..=500"
        );
        anyhow::ensure!(
            !self.clickhouse_database.is_empty(),
            "CLICKHOUSE_DATABASE must not be empty"
        );
        Ok(())
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    pub fn cache_max_stale(&self) -> Duration {
        Duration::from_secs(self.cache_max_stale_secs)
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

pub use fleet::Secret;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_password_is_hidden() {
        let mut config = Config::for_servers("http://127.0.0.1:1", "nats://127.0.0.1:2");
        config.check().expect("defaults");
        config.clickhouse_password = "hunter2".parse().expect("secret");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.clickhouse_database, "telemetry");
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut config = Config::for_servers("http://127.0.0.1:1", "nats://127.0.0.1:2");
        config.cache_max_stale_secs = 1;
        assert!(config.check().is_err());
    }
}
