//! Configuration of `telemetry-alerter`: one typed struct, read from flags and environment variables.
//! The SMTP password is a [`Secret`]: never printed, not even by `--help` or `Debug`. The running
//! service's names mean here what they meant there: `ALERT_FAILURE_THRESHOLD` in percent, `ALERT_ENABLED`,
//! `ALERT_CHECK_INTERVAL_MIN` (for our `ALERT_EVAL_INTERVAL_MS`) and `SMTP_USE_TLS` (for our `SMTP_TLS`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fleet::config::{Alias, Env};
use fleet::ConfigError;
use schema::span::Span;

use crate::rules::Thresholds;

pub use fleet::Secret;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SmtpTls {
    /// Plain text (a local relay or a test sink only).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// Failure alerts from the live rollups in telemetry_stats: mails each alert and its resolution once,
/// across replicas and restarts, claimed in the KV bucket telemetry_alerts.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-alerter", version, about, long_about = None)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the ops port (/healthz, /readyz, /metrics): HOST:PORT, [IPv6]:PORT or :PORT. It
    /// never sends mail.
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9103", value_parser = fleet::config::listen_addr)]
    pub ops_addr: SocketAddr,

    /// Send mail. false: the rules are still evaluated and every alert is recorded (TELEMETRY_ALERTS,
    /// the dashboard), but no mail goes out.
    #[arg(long, env = "ALERT_ENABLED", default_value_t = true, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub alert_enabled: bool,

    /// Failure rate in percent (failed / (success + failed) x 100, 0..100) at or above which a rule
    /// fires.
    #[arg(long, env = "ALERT_FAILURE_THRESHOLD", default_value_t = 20.0)]
    pub alert_failure_threshold: f64,

    /// Decided installs (success + failed) a group needs in the window before its rate can fire.
    #[arg(long, env = "ALERT_MIN_INSTALLS", default_value_t = 10)]
    pub alert_min_installs: u64,

    /// Rollup window the rate rules read (must be one of the aggregator's WINDOWS), e.g. 24h.
    #[arg(long, env = "ALERT_WINDOW", default_value = "24h")]
    pub alert_window: Span,

    /// Minutes after an alert before the same rule and subject may alert again (fractions allowed).
    #[arg(long, env = "ALERT_COOLDOWN_MIN", default_value_t = 60.0)]
    pub alert_cooldown_min: f64,

    /// A firing rate resolves once below the threshold minus this many percentage points.
    #[arg(long, env = "ALERT_HYSTERESIS", default_value_t = 5.0)]
    pub alert_hysteresis: f64,

    /// Installs a new error signature needs within the aggregator's SIGNATURE_WINDOW to alert.
    #[arg(long, env = "ALERT_SIGNATURE_MIN_INSTALLS", default_value_t = 5)]
    pub alert_signature_min_installs: u64,

    /// An app's failure rate alerts only when at least this many distinct clients (random_id) started its
    /// installs in the window (the aggregator's `clients`): one client making up installs never mails.
    #[arg(long, env = "ALERT_MIN_CLIENTS", default_value_t = 5)]
    pub alert_min_clients: u32,

    /// Mails sent one by one per budget period (an hour), across replicas; the alerts beyond it are
    /// folded into one digest mail sent when the next period starts.
    #[arg(long, env = "ALERT_MAIL_BUDGET_PER_HOUR", default_value_t = 10)]
    pub alert_mail_budget_per_hour: u32,

    /// Length of the mail budget's period, in seconds (3600: the hour of ALERT_MAIL_BUDGET_PER_HOUR;
    /// shorter for tests and demos).
    #[arg(long, env = "ALERT_MAIL_BUDGET_PERIOD_SECS", default_value_t = 3600)]
    pub alert_mail_budget_period_secs: u64,

    /// Most apps whose rollups the alerter holds in memory; the aggregator tracks at most its
    /// MAX_TRACKED_APPS, this bounds the alerter on its own (beyond it new apps are ignored and counted
    /// in telemetry_alerter_apps_capped_total).
    #[arg(long, env = "ALERT_MAX_APPS", default_value_t = 2000)]
    pub alert_max_apps: usize,

    /// How often the rules are evaluated, in milliseconds (the running service's ALERT_CHECK_INTERVAL_MIN,
    /// in minutes, when this is unset).
    #[arg(long, env = "ALERT_EVAL_INTERVAL_MS", default_value_t = 1000)]
    pub alert_eval_interval_ms: u64,

    /// Longest pause between two attempts to send a mail, in seconds (backoff starts at 1 s).
    #[arg(long, env = "ALERT_RETRY_MAX_SECS", default_value_t = 30)]
    pub alert_retry_max_secs: u64,

    /// How long a replica owns a delivery it claimed without renewing it, in seconds; then another
    /// replica takes over. Must exceed the SMTP timeout and the retry pause.
    #[arg(long, env = "ALERT_LEASE_SECS", default_value_t = 120)]
    pub alert_lease_secs: u64,

    /// SMTP server host name.
    #[arg(long, env = "SMTP_HOST", default_value = "localhost")]
    pub smtp_host: String,

    /// SMTP server port.
    #[arg(long, env = "SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,

    /// SMTP user name; no authentication when unset.
    #[arg(long, env = "SMTP_USER")]
    pub smtp_user: Option<String>,

    /// SMTP password (never printed).
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<Secret>,

    /// Sender address, e.g. `Telemetry <telemetry@example.org>`.
    #[arg(long, env = "SMTP_FROM", default_value = "telemetry@localhost")]
    pub smtp_from: String,

    /// Recipients, comma-separated.
    #[arg(
        long,
        env = "SMTP_TO",
        value_delimiter = ',',
        default_value = "root@localhost"
    )]
    pub smtp_to: Vec<String>,

    /// Connection security: none, starttls or tls. Unset: the running service's SMTP_USE_TLS (true:
    /// starttls, or tls on port 465; false: none), else starttls.
    #[arg(long, env = "SMTP_TLS", value_enum, default_value_t = SmtpTls::Starttls)]
    pub smtp_tls: SmtpTls,

    /// Deadline of one SMTP attempt, in seconds.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 20)]
    pub smtp_timeout_secs: u64,

    /// Base URL of the web dashboard; mails link to DASHBOARD_URL/dashboard/apps/<app>.
    #[arg(long, env = "DASHBOARD_URL", default_value = "http://127.0.0.1:8081")]
    pub dashboard_url: String,

    /// Copies of the telemetry_alerts bucket and the TELEMETRY_ALERTS stream in a cluster.
    #[arg(long, env = "KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,

    #[command(flatten)]
    pub common: fleet::config::Common,
}

/// Subcommands; without one the alerter runs.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Sends a test mail with the SMTP_* settings and exits (non-zero when it fails).
    SendTest,
}

/// SMTP_USE_TLS as our SMTP_TLS: true is STARTTLS, or TLS from the first byte on port 465; false is
/// none.
pub fn smtp_use_tls(value: &str, env: &Env) -> Result<String, String> {
    let tls = fleet::config::boolean(value)?;
    let port_465 = env.get("SMTP_PORT").is_some_and(|p| p.trim() == "465");
    Ok(match (tls, port_465) {
        (true, true) => "tls",
        (true, false) => "starttls",
        (false, _) => "none",
    }
    .to_string())
}

impl fleet::config::Service for Config {
    const ALIASES: &'static [Alias] = &[
        Alias {
            ours: "ALERT_EVAL_INTERVAL_MS",
            theirs: "ALERT_CHECK_INTERVAL_MIN",
            convert: fleet::config::minutes_as_ms,
        },
        Alias {
            ours: "SMTP_TLS",
            theirs: "SMTP_USE_TLS",
            convert: smtp_use_tls,
        },
    ];

    fn common_mut(&mut self) -> &mut fleet::config::Common {
        &mut self.common
    }
}

impl Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(password) = &self.smtp_password {
            fleet::config::refuse_placeholder("SMTP_PASSWORD", password)?;
        }
        let t = self.alert_failure_threshold;
        if !(0.0..=100.0).contains(&t) {
            return Err(ConfigError::new(
                "ALERT_FAILURE_THRESHOLD",
                format!("must be a percentage within 0..=100, got {t}"),
            ));
        }
        let h = self.alert_hysteresis;
        if !(0.0..=t).contains(&h) {
            return Err(ConfigError::new(
                "ALERT_HYSTERESIS",
                format!("must be within 0..threshold (percentage points), got {h}"),
            ));
        }
        let cooldown = self.alert_cooldown_min;
        if cooldown.is_nan() || cooldown < 0.0 {
            return Err(ConfigError::new(
                "ALERT_COOLDOWN_MIN",
                format!("must not be negative, got {cooldown}"),
            ));
        }
        if self.alert_mail_budget_per_hour == 0 {
            return Err(ConfigError::new(
                "ALERT_MAIL_BUDGET_PER_HOUR",
                "must be at least 1 (ALERT_ENABLED=false sends no mail)",
            ));
        }
        if !(1..=86_400).contains(&self.alert_mail_budget_period_secs) {
            return Err(ConfigError::new(
                "ALERT_MAIL_BUDGET_PERIOD_SECS",
                format!(
                    "must be within 1..=86400, got {}",
                    self.alert_mail_budget_period_secs
                ),
            ));
        }
        if self.alert_max_apps == 0 {
            return Err(ConfigError::new("ALERT_MAX_APPS", "must be at least 1"));
        }
        let needed = self.smtp_timeout_secs + self.alert_retry_max_secs;
        if self.alert_lease_secs <= needed {
            return Err(ConfigError::new(
                "ALERT_LEASE_SECS",
                format!(
                    "({}) must exceed SMTP_TIMEOUT_SECS + ALERT_RETRY_MAX_SECS ({needed})",
                    self.alert_lease_secs
                ),
            ));
        }
        Ok(())
    }

    /// The rules' thresholds, rates as fractions (0..1) like the rollups'.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            failure_rate: self.alert_failure_threshold / 100.0,
            min_installs: self.alert_min_installs,
            hysteresis: self.alert_hysteresis / 100.0,
            signature_min_installs: self.alert_signature_min_installs,
            min_clients: self.alert_min_clients,
        }
    }

    /// The number of the mail budget period `at` lies in, and its start.
    pub fn budget_period(&self, at: time::OffsetDateTime) -> (i64, time::OffsetDateTime) {
        let secs = self.alert_mail_budget_period_secs.max(1) as i64;
        let period = at.unix_timestamp().div_euclid(secs);
        let start = time::OffsetDateTime::from_unix_timestamp(period * secs).unwrap_or(at);
        (period, start)
    }

    pub fn cooldown(&self) -> time::Duration {
        time::Duration::seconds_f64(self.alert_cooldown_min * 60.0)
    }

    pub fn lease(&self) -> time::Duration {
        time::Duration::seconds(self.alert_lease_secs as i64)
    }

    /// What the start-up log should say about these settings: mail off, a threshold that looks like a
    /// fraction.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.alert_enabled {
            out.push("ALERT_ENABLED=false: the rules are evaluated and alerts recorded, but no mail is sent");
        }
        if self.alert_failure_threshold <= 1.0 {
            out.push("ALERT_FAILURE_THRESHOLD is read as a percent (0..100): a value of 1 or less fires at 1 % or less");
        }
        out
    }

    pub fn eval_interval(&self) -> Duration {
        Duration::from_millis(self.alert_eval_interval_ms.max(50))
    }

    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.alert_retry_max_secs.max(1))
    }

    /// The dashboard page of an app, or the overview for the global and signature rules.
    pub fn dashboard_link(&self, app: Option<&str>) -> String {
        let base = self.dashboard_url.trim_end_matches('/');
        match app {
            Some(app) => format!("{base}/dashboard/apps/{}", fleet::percent::encode(app)),
            None => format!("{base}/dashboard"),
        }
    }

    /// Defaults, for tests and embedding: ops port on a free loopback port, plain SMTP.
    pub fn for_nats(nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-alerter"]);
        config.common.nats_url = nats_url.to_string();
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.smtp_tls = SmtpTls::None;
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fleet::config::Service;

    use super::*;

    #[test]
    fn the_table_of_operator_names_matches_what_the_alerter_reads() {
        assert_eq!(
            fleet::config::operator_names_read(&Config::command(), Config::ALIASES),
            fleet::config::operator_names_of("telemetry-alerter")
        );
    }

    #[test]
    fn smtp_use_tls_becomes_our_setting() {
        let check = |value: &str, port: Option<&str>, expected: Result<&str, ()>| {
            let env = Env::from_pairs(port.map(|p| ("SMTP_PORT", p)));
            assert_eq!(
                smtp_use_tls(value, &env).as_deref().map_err(|_| ()),
                expected,
                "{value} {port:?}"
            );
        };
        check("true", None, Ok("starttls"));
        check("true", Some("587"), Ok("starttls"));
        check("true", Some("465"), Ok("tls"));
        check("false", Some("465"), Ok("none"));
        check("0", None, Ok("none"));
        check("perhaps", None, Err(()));
    }

    #[test]
    fn the_threshold_is_a_percent() {
        let c = Config::for_nats("nats://x");
        assert_eq!(c.alert_failure_threshold, 20.0);
        assert!((c.thresholds().failure_rate - 0.2).abs() < 1e-12);
        assert!((c.thresholds().hysteresis - 0.05).abs() < 1e-12);
        assert!(c.warnings().is_empty());
        let mut c = Config::for_nats("nats://x");
        c.alert_failure_threshold = 0.2;
        c.alert_hysteresis = 0.1;
        assert!(c.check().is_ok());
        assert_eq!(c.warnings().len(), 1);
        c.alert_enabled = false;
        assert_eq!(c.warnings().len(), 2);
    }

    fn check(app: Option<&str>, expected: &str) {
        let mut c = Config::for_nats("nats://x");
        c.dashboard_url = "https://telemetry.example/".into();
        assert_eq!(c.dashboard_link(app), expected);
    }

    #[test]
    fn dashboard_links_encode_the_app() {
        check(
            Some("docker"),
            "https://telemetry.example/dashboard/apps/docker",
        );
        check(
            Some("Home Assistant"),
            "https://telemetry.example/dashboard/apps/Home%20Assistant",
        );
        check(None, "https://telemetry.example/dashboard");
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = Config::parse_from(["telemetry-alerter", "--smtp-password", "hunter2"]);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            c.smtp_password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        assert!(Config::for_nats("nats://x").check().is_ok());
        let mut c = Config::for_nats("nats://x");
        c.alert_failure_threshold = 150.0;
        assert_eq!(
            c.check().map_err(|e| e.to_string()),
            Err("ALERT_FAILURE_THRESHOLD must be a percentage within 0..=100, got 150".into())
        );
        let mut c = Config::for_nats("nats://x");
        c.alert_lease_secs = 10;
        assert_eq!(c.check().map_err(|e| e.setting), Err("ALERT_LEASE_SECS"));
    }
}
