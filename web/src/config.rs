//! The configuration of `telemetry-web`: one clap struct, every option an env var with its default and
//! unit. The ClickHouse password is a [`Secret`] whose `Debug` never shows it. The web listens on
//! `WEB_LISTEN_ADDR`: in the running service's env file `LISTEN_ADDR` is the public front door's address,
//! which the edge takes. Its `ENABLE_CACHE` and `CACHE_TTL_SECONDS` (for our `CACHE_TTL_SECS`) mean here
//! what they meant there.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fleet::config::Alias;
use fleet::ConfigError;

/// The read-only dashboard and JSON API of the telemetry fleet.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-web", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for HTTP (pages, API, /healthz, /readyz; /metrics is on WEB_OPS_ADDR): HOST:PORT,
    /// [IPv6]:PORT or :PORT. Not LISTEN_ADDR: that is the edge's.
    #[arg(long, env = "WEB_LISTEN_ADDR", default_value = "0.0.0.0:8081", value_parser = fleet::config::listen_addr)]
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
    /// Cache answers. false: every answer is computed from ClickHouse and the KV bucket when asked.
    #[arg(long, env = "ENABLE_CACHE", default_value_t = true, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub enable_cache: bool,
    /// Read whole past days of the dashboards' passes from the writer's per-day rollups (schema version
    /// 6) where they are up to date. false: every day from `installs_final` (same answers, slower).
    #[arg(long, env = "ROLLUP_READS", default_value_t = true, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub rollup_reads: bool,
    /// Seconds a cached answer counts as fresh; after that it is served stale while one refresh runs
    /// (the running service's CACHE_TTL_SECONDS when this is unset).
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 60)]
    pub cache_ttl_secs: u64,
    /// An answer that took long to compute stays fresh for at least this many times as long as it took
    /// (at most half of CACHE_MAX_STALE_SECS), so refreshing a view takes about 1/N of the time at
    /// most (2/N for the most read keys, renewed at half their freshness) however large today grows.
    /// 0: CACHE_TTL_SECS alone.
    #[arg(long, env = "CACHE_REFRESH_PACE", default_value_t = 10)]
    pub cache_refresh_pace: u32,
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
    /// Deadline for a client to send its request headers, milliseconds (the connection is closed after
    /// it); also how long an idle keep-alive connection stays open.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_read_timeout_ms: u64,
    /// Deadline for a whole request, milliseconds (503 after it). Longer than QUERY_TIMEOUT_SECS: a page
    /// runs a few queries in a row, each with that deadline.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 120_000)]
    pub request_timeout_ms: u64,
    /// Most connections open at once; beyond it a new connection takes the slot of the one that has
    /// waited longest (at least 1 s) for its client, or waits when every connection is busy.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Drain deadline for open requests at shutdown, seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Key of the public install ids (a keyed hash of the real ids; see web/README.md). Unset: a random
    /// key is drawn at start, so hashes and links change on restart; set it for stable links. Never
    /// printed.
    #[arg(
        long,
        env = "ID_HASH_KEY",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub id_hash_key: Secret,
    /// Most CSV exports streaming at once; one more is answered 503 at once, with Retry-After.
    #[arg(long, env = "CSV_MAX_CONCURRENT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub csv_max_concurrent: u32,
    /// Bytes of serialized answers the caches may hold, shared evenly by the caches of views.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Seconds between refreshes of the telemetry_installs_* gauges of `/metrics` (today, ProxmoxVE).
    #[arg(long, env = "METRICS_REFRESH_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_refresh_secs: u64,
    /// Password of the admin actions (`X-Admin-Password` header or JSON field `password`); never printed.
    /// Unset or empty: the admin routes answer 404. Known placeholders (`changeme`, `admin`, ...) are
    /// refused at start.
    #[arg(
        long,
        env = "ADMIN_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub admin_password: Secret,
    /// Wrong admin passwords a client address may send per minute; after that every admin request of that
    /// address answers 429 until the minute is over.
    #[arg(long, env = "ADMIN_MAX_FAILURES_PER_MIN", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_max_failures_per_min: u32,
    /// Deadline for the alerter's or the aggregator's answer to an admin request, seconds (504 after it;
    /// 503 for the cleanup status).
    #[arg(long, env = "ADMIN_REPLY_TIMEOUT_SECS", default_value_t = 30)]
    pub admin_reply_timeout_secs: u64,
    /// GitHub token for `POST /api/github/create-issue` (needs permission to open issues in
    /// GITHUB_OWNER/GITHUB_REPO); never printed. Unset: that route answers 503 `not_configured`.
    #[arg(
        long,
        env = "GITHUB_TOKEN",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub github_token: Secret,
    /// Owner (user or organisation) of the repository issues are opened in.
    #[arg(long, env = "GITHUB_OWNER")]
    pub github_owner: Option<String>,
    /// Repository issues are opened in.
    #[arg(long, env = "GITHUB_REPO")]
    pub github_repo: Option<String>,
    /// Base URL of the GitHub REST API (a GitHub Enterprise server's `https://HOST/api/v3`, or a fake in
    /// tests).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// Address of the ops port: /healthz, /readyz and /metrics (metrics are served only here, never on
    /// WEB_LISTEN_ADDR). HOST:PORT, [IPv6]:PORT or :PORT.
    #[arg(long, env = "WEB_OPS_ADDR", default_value = "0.0.0.0:9105", value_parser = fleet::config::listen_addr)]
    pub ops_addr: SocketAddr,
    /// NATS (live rollups from the `telemetry_stats` bucket, alerts from `TELEMETRY_ALERTS`) and logs.
    #[command(flatten)]
    pub common: fleet::config::Common,
    /// Script catalogue: a PocketBase URL (its collection `script_scripts`, or the URL of another
    /// collection) or a JSON file (a path, or an http(s) URL ending in .json) holding an array of
    /// {slug, type, script_created}. Unset: no catalogue (scripts count from their first install).
    #[arg(long, env = "SCRIPT_CATALOG_URL")]
    pub script_catalog_url: Option<String>,
    /// Seconds between reloads of the script catalogue (a failed one keeps the last good copy).
    #[arg(long, env = "SCRIPT_CATALOG_REFRESH_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub script_catalog_refresh_secs: u64,
    /// Seconds between refreshes of the dashboard's figures in the browser; 0: no refresh.
    #[arg(long, env = "DASHBOARD_REFRESH_SECS", default_value_t = 60)]
    pub dashboard_refresh_secs: u64,
    /// Most (app, type) rows of `/api/scripts` and the script analysis, the most installed first: app names
    /// are client text, and a flood of made-up names must not grow one answer (or its cache entry) without
    /// bound. `total_scripts` and `total_installs` count the rows listed.
    #[arg(long, env = "SCRIPTS_MAX_ROWS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub scripts_max_rows: u32,
}

impl fleet::config::Service for Config {
    const ALIASES: &'static [Alias] = &[Alias::same("CACHE_TTL_SECS", "CACHE_TTL_SECONDS")];

    fn common_mut(&mut self) -> &mut fleet::config::Common {
        &mut self.common
    }
}

impl Config {
    /// The defaults with ClickHouse and NATS at the given URLs, listening on a free loopback port (tests).
    pub fn for_servers(clickhouse_url: &str, nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-web"]);
        config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.clickhouse_url = clickhouse_url.to_string();
        config.common.nats_url = nats_url.to_string();
        config
    }

    /// Rejects settings that cannot work, with a message naming the option.
    pub fn check(&self) -> Result<(), ConfigError> {
        fleet::config::refuse_placeholder("CLICKHOUSE_PASSWORD", &self.clickhouse_password)?;
        let refuse = |setting, problem: &str| Err(ConfigError::new(setting, problem));
        if self.cache_ttl_secs == 0 {
            return refuse("CACHE_TTL_SECS", "must be at least 1");
        }
        if self.cache_max_stale_secs < self.cache_ttl_secs {
            return refuse("CACHE_MAX_STALE_SECS", "must be at least CACHE_TTL_SECS");
        }
        if !(1..=500).contains(&self.page_size) {
            return refuse("PAGE_SIZE", "must be within 1..=500");
        }
        if self.clickhouse_database.is_empty() {
            return refuse("CLICKHOUSE_DATABASE", "must not be empty");
        }
        if self.request_timeout() <= self.query_timeout() {
            return refuse(
                "REQUEST_TIMEOUT_MS",
                "must be longer than QUERY_TIMEOUT_SECS, or a slow query is cut before its own deadline",
            );
        }
        fleet::config::refuse_placeholder("ADMIN_PASSWORD", &self.admin_password)?;
        if self.admin_reply_timeout_secs == 0 {
            return refuse("ADMIN_REPLY_TIMEOUT_SECS", "must be at least 1");
        }
        for (setting, value) in [
            ("GITHUB_OWNER", &self.github_owner),
            ("GITHUB_REPO", &self.github_repo),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| !crate::admin::is_github_name(v))
            {
                return refuse(
                    setting,
                    "must be a GitHub name: letters, digits, '-', '_' and '.'",
                );
            }
        }
        if !(self.github_api_url.starts_with("https://")
            || self.github_api_url.starts_with("http://"))
        {
            return refuse("GITHUB_API_URL", "must be an http:// or https:// URL");
        }
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

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The bounds of the HTTP server; a request past its deadline is answered 503 `unavailable`.
    pub fn limits(&self) -> fleet::http::Limits {
        fleet::http::Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: self.request_timeout(),
            timeout_response: crate::http::timeout_response,
            max_connections: self.max_connections as usize,
            drain_timeout: self.shutdown_timeout(),
        }
    }
}

pub use fleet::Secret;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fleet::config::Service;

    use super::*;

    #[test]
    fn the_table_of_operator_names_matches_what_the_web_reads() {
        assert_eq!(
            fleet::config::operator_names_read(&Config::command(), Config::ALIASES),
            fleet::config::operator_names_of("telemetry-web")
        );
    }

    #[test]
    fn the_web_listens_on_its_own_address() {
        let config = Config::parse_from(["telemetry-web", "--listen-addr", ":8081"]);
        assert_eq!(config.listen_addr, SocketAddr::from(([0, 0, 0, 0], 8081)));
        let arg = Config::command();
        let env: Vec<_> = arg.get_arguments().filter_map(|a| a.get_env()).collect();
        assert!(env.iter().any(|e| *e == "WEB_LISTEN_ADDR"));
        assert!(
            !env.iter().any(|e| *e == "LISTEN_ADDR"),
            "LISTEN_ADDR is the edge's"
        );
    }

    #[test]
    fn defaults_are_valid_and_the_password_is_hidden() {
        let mut config = Config::for_servers("http://127.0.0.1:1", "nats://127.0.0.1:2");
        config.check().expect("defaults");
        config.clickhouse_password = "hunter2".parse().expect("secret");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.clickhouse_database, "telemetry");
    }

    fn check(tweak: impl FnOnce(&mut Config), refused: Option<&str>) {
        let mut config = Config::for_servers("http://127.0.0.1:1", "nats://127.0.0.1:2");
        tweak(&mut config);
        assert_eq!(config.check().map_err(|e| e.setting).err(), refused);
    }

    #[test]
    fn bad_settings_are_refused() {
        check(|_| {}, None);
        check(|c| c.cache_max_stale_secs = 1, Some("CACHE_MAX_STALE_SECS"));
        check(|c| c.page_size = 501, Some("PAGE_SIZE"));
        check(
            |c| c.request_timeout_ms = 60_000,
            Some("REQUEST_TIMEOUT_MS"),
        );
        check(
            |c| {
                c.query_timeout_secs = 300;
                c.request_timeout_ms = 600_000;
            },
            None,
        );
    }

    #[test]
    fn admin_and_github_settings_are_checked_and_never_printed() {
        check(
            |c| c.admin_password = Secret::new("s3cret-admin-pass"),
            None,
        );
        for placeholder in ["changeme", "CHANGE_ME", "admin", "Password", "change-me"] {
            check(
                |c| c.admin_password = Secret::new(placeholder),
                Some("ADMIN_PASSWORD"),
            );
        }
        check(|c| c.github_owner = Some("community-scripts".into()), None);
        check(|c| c.github_repo = Some("a/b".into()), Some("GITHUB_REPO"));
        check(
            |c| c.github_api_url = "ftp://x".into(),
            Some("GITHUB_API_URL"),
        );
        check(
            |c| c.admin_reply_timeout_secs = 0,
            Some("ADMIN_REPLY_TIMEOUT_SECS"),
        );
        let mut config = Config::for_servers("http://127.0.0.1:1", "nats://127.0.0.1:2");
        config.admin_password = Secret::new("s3cret-admin-pass");
        config.github_token = Secret::new("ghp_tokenvalue");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret-admin-pass") && !printed.contains("ghp_tokenvalue"));
    }
}
