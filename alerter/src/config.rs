//! Configuration of `telemetry-alerter`: one typed struct, read from flags and environment variables.
//! The SMTP password is a [`Secret`]: never printed, not even by `--help` or `Debug`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
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

    /// Address of the ops port (/healthz, /readyz, /metrics). It never sends mail.
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9103")]
    pub ops_addr: SocketAddr,

    /// Failure rate (failed / (success + failed), 0..1) at or above which a rule fires.
    #[arg(long, env = "ALERT_FAILURE_THRESHOLD", default_value_t = 0.20)]
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

    /// A firing rate resolves once below threshold minus this (0..1).
    #[arg(long, env = "ALERT_HYSTERESIS", default_value_t = 0.05)]
    pub alert_hysteresis: f64,

    /// Installs a new error signature needs within the aggregator's SIGNATURE_WINDOW to alert.
    #[arg(long, env = "ALERT_SIGNATURE_MIN_INSTALLS", default_value_t = 5)]
    pub alert_signature_min_installs: u64,

    /// How often the rules are evaluated, in milliseconds.
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

    /// Connection security: none, starttls or tls.
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

impl Config {
    /// Checks the settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        let t = self.alert_failure_threshold;
        if !(0.0..=1.0).contains(&t) {
            return Err(ConfigError::new(
                "ALERT_FAILURE_THRESHOLD",
                format!("must be within 0..=1, got {t}"),
            ));
        }
        let h = self.alert_hysteresis;
        if !(0.0..=t).contains(&h) {
            return Err(ConfigError::new(
                "ALERT_HYSTERESIS",
                format!("must be within 0..threshold, got {h}"),
            ));
        }
        let cooldown = self.alert_cooldown_min;
        if cooldown.is_nan() || cooldown < 0.0 {
            return Err(ConfigError::new(
                "ALERT_COOLDOWN_MIN",
                format!("must not be negative, got {cooldown}"),
            ));
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

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            failure_rate: self.alert_failure_threshold,
            min_installs: self.alert_min_installs,
            hysteresis: self.alert_hysteresis,
            signature_min_installs: self.alert_signature_min_installs,
        }
    }

    pub fn cooldown(&self) -> time::Duration {
        time::Duration::seconds_f64(self.alert_cooldown_min * 60.0)
    }

    pub fn lease(&self) -> time::Duration {
        time::Duration::seconds(self.alert_lease_secs as i64)
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
            Some(app) => format!("{base}/dashboard/apps/{}", url_path_segment(app)),
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

/// Percent-encodes everything but unreserved characters (app names have spaces and capitals).
fn url_path_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        c.alert_failure_threshold = 1.5;
        assert_eq!(
            c.check().map_err(|e| e.to_string()),
            Err("ALERT_FAILURE_THRESHOLD must be within 0..=1, got 1.5".into())
        );
        let mut c = Config::for_nats("nats://x");
        c.alert_lease_secs = 10;
        assert_eq!(c.check().map_err(|e| e.setting), Err("ALERT_LEASE_SECS"));
    }
}
