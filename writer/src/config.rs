//! Configuration of `telemetry-writer`: one typed struct, read from flags and environment variables.
//! Secrets (the ClickHouse and PocketBase passwords) are wrapped in [`Secret`], whose `Debug` and
//! `Display` never show the value. The running service's `PB_IDENTITY` stands for `PB_EMAIL`; its
//! `RETENTION_ENABLED` and `RETENTION_DAYS` mean what they meant there (contract §7: off by default).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet::config::Alias;
use fleet::ConfigError;

use crate::retention::Policy;

/// The async-nats client deadlocks with more than 5000 pending acks of any kind; stay well below.
pub const MAX_ACK_PENDING_LIMIT: i64 = 4096;

/// Which stores this process writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkChoice {
    Clickhouse,
    Pocketbase,
    All,
}

impl SinkChoice {
    pub fn clickhouse(self) -> bool {
        matches!(self, SinkChoice::Clickhouse | SinkChoice::All)
    }

    pub fn pocketbase(self) -> bool {
        matches!(self, SinkChoice::Pocketbase | SinkChoice::All)
    }
}

pub use fleet::Secret;

/// The telemetry writer: reads accepted events from NATS JetStream and stores them in ClickHouse (every
/// event, plus the merged install state) and PocketBase (one record per install), exactly once.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-writer", version, about, long_about = None)]
pub struct Config {
    /// Which stores to write: clickhouse, pocketbase or all (each has its own durable consumer).
    #[arg(long, env = "WRITER_SINK", value_enum, default_value_t = SinkChoice::All)]
    pub sink: SinkChoice,

    /// Prefix of the durable consumer names (`<prefix>-clickhouse`, `<prefix>-pocketbase`); replicas
    /// that share it share the work.
    #[arg(long, env = "WRITER_CONSUMER_PREFIX", default_value = "writer", value_parser = parse_name)]
    pub consumer_prefix: String,

    /// ClickHouse HTTP interface.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,

    /// ClickHouse user.
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,

    /// ClickHouse password (default: empty).
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub clickhouse_password: Secret,

    /// ClickHouse database, created if missing (letters, digits and `_`).
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "telemetry", value_parser = parse_name)]
    pub clickhouse_database: String,

    /// Apply the ClickHouse schema migrations up to this version only (default 0: all of them). For
    /// benchmarks and rehearsals of an upgrade; a later start without it applies the rest.
    #[arg(long, env = "CLICKHOUSE_MIGRATE_TO", default_value_t = 0)]
    pub clickhouse_migrate_to: u32,

    /// PocketBase base URL.
    #[arg(long, env = "PB_URL", default_value = "http://127.0.0.1:8090")]
    pub pb_url: String,

    /// PocketBase superuser e-mail (or a user of an auth collection, see --pb-auth-collection); the
    /// running service's PB_IDENTITY when this is unset.
    #[arg(long, env = "PB_EMAIL", default_value = "")]
    pub pb_email: String,

    /// Password of --pb-email (default: empty).
    #[arg(
        long,
        env = "PB_PASSWORD",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub pb_password: Secret,

    /// Auth collection of --pb-email; `_superusers` can create the collection and enable the batch API.
    #[arg(long, env = "PB_AUTH_COLLECTION", default_value = "_superusers", value_parser = parse_name)]
    pub pb_auth_collection: String,

    /// PocketBase collection with one record per install, created if missing.
    #[arg(long, env = "PB_TARGET_COLLECTION", default_value = "telemetry", value_parser = parse_name)]
    pub pb_target_collection: String,

    /// Requests per PocketBase batch call (the batch API's `maxRequests` is raised to this).
    #[arg(long, env = "PB_BATCH_REQUESTS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pb_batch_requests: u32,

    /// Lifetime of the PocketBase writer lease, in seconds; a standby takes over this long after the
    /// active writer died. Renewed every third of it.
    #[arg(long, env = "LEASE_TTL_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_ttl_secs: u64,

    /// Copies of the dead-letter stream and the lease bucket when this writer creates them (3 in a
    /// JetStream cluster, 1 on a single server).
    #[arg(long, env = "KV_REPLICAS", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5))]
    pub kv_replicas: usize,

    /// Delete old installs (contract §7). Off by default: the data is kept indefinitely, as the running
    /// service promises its users.
    #[arg(long, env = "RETENTION_ENABLED", default_value_t = false, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub retention_enabled: bool,

    /// With RETENTION_ENABLED: installs whose first event is older than this many days are deleted,
    /// whole, from every store.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub retention_days: u32,

    /// Most installs (ClickHouse) or records (PocketBase) one retention run deletes; the next run goes on.
    #[arg(long, env = "RETENTION_MAX_PER_RUN", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub retention_max_per_run: u32,

    /// Let retention delete from a PocketBase collection this fleet did not create (the running
    /// service's own). Off: such a collection is never touched.
    #[arg(long, env = "RETENTION_FOREIGN_COLLECTION", default_value_t = false, action = clap::ArgAction::Set, value_parser = fleet::config::boolean)]
    pub retention_foreign_collection: bool,

    /// How often retention runs, in seconds.
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,

    /// How often the ClickHouse settle job merges the installs touched since its last watermark into
    /// `installs_settled`, in seconds.
    #[arg(long, env = "SETTLE_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub settle_interval_secs: u64,

    /// How far behind ClickHouse's clock the settle watermark stays at least, in seconds; it also stays
    /// before the start of every insert ClickHouse is still running, however long that takes. Installs
    /// touched since the watermark are merged from `events` at every read, so a longer lag makes every
    /// read dearer.
    #[arg(long, env = "SETTLE_LAG_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub settle_lag_secs: u64,

    /// How often the ClickHouse rollup job takes the per-day snapshots of the dashboards' passes that
    /// are missing or out of date, in seconds; 0: never (the web then reads every day from the installs).
    #[arg(long, env = "ROLLUP_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub rollup_interval_secs: u64,

    /// Most events per write. Each write to ClickHouse creates a part of `events` (about 110 files) and
    /// of each table its views feed, at a cost that hardly depends on its rows: fewer, larger writes.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Longest wait for a batch to fill once its first event arrived, in milliseconds.
    #[arg(long, env = "BATCH_MAX_WAIT_MS", default_value_t = 500)]
    pub batch_max_wait_ms: u64,

    /// Un-acked events per consumer (JetStream's max_ack_pending), at most 4096; at least BATCH_SIZE
    /// is sensible.
    #[arg(long, env = "MAX_ACK_PENDING", default_value_t = 4096, value_parser = clap::value_parser!(i64).range(1..=MAX_ACK_PENDING_LIMIT))]
    pub max_ack_pending: i64,

    /// How long JetStream waits for an ack before redelivering, in seconds; longer than a flush.
    #[arg(long, env = "ACK_WAIT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ack_wait_secs: u64,

    /// Deadline of one write to a store, in seconds; a write that takes longer counts as the store down.
    #[arg(long, env = "WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub write_timeout_secs: u64,

    /// Longest pause between retries of a store that is down, in milliseconds (exponential from 100 ms).
    #[arg(long, env = "RETRY_MAX_DELAY_MS", default_value_t = 5000)]
    pub retry_max_delay_ms: u64,

    /// Deadline for finishing the current batch at shutdown, in seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,

    /// Address of the ops port (/healthz, /readyz, /metrics): HOST:PORT, [IPv6]:PORT or :PORT.
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9101", value_parser = fleet::config::listen_addr)]
    pub ops_addr: SocketAddr,

    #[command(flatten)]
    pub common: fleet::config::Common,

    /// Let the writer change the definition of a PocketBase collection it did not create: add the
    /// fields and the index it lists at start (`would change: …`). Without it, it writes the fields the
    /// collection has. A collection the writer created is its own to change.
    #[arg(long, env = "PB_ALLOW_SCHEMA_CHANGES", default_value_t = false, action = clap::ArgAction::Set)]
    pub pb_allow_schema_changes: bool,

    /// Let the writer change PocketBase's settings: enable the batch API (or raise its limits) to
    /// PB_BATCH_REQUESTS per call. Without it, records are written one request each, unless the batch
    /// API is already enabled.
    #[arg(long, env = "PB_ALLOW_SETTINGS_CHANGES", default_value_t = false, action = clap::ArgAction::Set)]
    pub pb_allow_settings_changes: bool,
}

/// Names that end up as identifiers (database, collection, consumer): letters, digits and `_`, starting
/// with a letter or `_`, at most 64 bytes, so every store and NATS take them as they are.
pub fn parse_name(s: &str) -> Result<String, String> {
    let first_ok = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let ok = first_ok && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be letters, digits and '_', starting with a letter or '_', at most 64".into())
    }
}

impl fleet::config::Service for Config {
    const ALIASES: &'static [Alias] = &[Alias::same("PB_EMAIL", "PB_IDENTITY")];

    fn common_mut(&mut self) -> &mut fleet::config::Common {
        &mut self.common
    }
}

impl Config {
    /// The retention policy, `None` when retention is off.
    pub fn retention(&self) -> Option<Policy> {
        self.retention_enabled.then_some(Policy {
            days: self.retention_days,
            max_per_run: self.retention_max_per_run as usize,
            foreign_collection: self.retention_foreign_collection,
        })
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn retry_max_delay(&self) -> Duration {
        Duration::from_millis(self.retry_max_delay_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    pub fn settle_interval(&self) -> Duration {
        Duration::from_secs(self.settle_interval_secs)
    }

    pub fn settle_lag(&self) -> Duration {
        Duration::from_secs(self.settle_lag_secs)
    }

    /// How often the rollup job runs; `None`: never.
    pub fn rollup_interval(&self) -> Option<Duration> {
        (self.rollup_interval_secs > 0).then(|| Duration::from_secs(self.rollup_interval_secs))
    }

    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs.max(1))
    }

    /// The durable consumer of a sink.
    pub fn consumer_name(&self, sink: &str) -> String {
        format!("{}-{sink}", self.consumer_prefix)
    }

    /// Checks what clap cannot: settings that only make sense together.
    pub fn check(&self) -> Result<(), ConfigError> {
        fleet::config::refuse_placeholder("CLICKHOUSE_PASSWORD", &self.clickhouse_password)?;
        fleet::config::refuse_placeholder("PB_PASSWORD", &self.pb_password)?;
        if self.sink.pocketbase() && (self.pb_email.is_empty() || self.pb_password.is_empty()) {
            return Err(ConfigError::new(
                "PB_EMAIL and PB_PASSWORD",
                "are required for the pocketbase sink (PB_IDENTITY for PB_EMAIL; or set WRITER_SINK=clickhouse)",
            ));
        }
        if self.write_timeout() >= self.ack_wait() {
            return Err(ConfigError::new(
                "ACK_WAIT_SECS",
                "must be longer than WRITE_TIMEOUT_SECS, or batches are redelivered while being written",
            ));
        }
        Ok(())
    }

    /// A configuration for tests and embedding: loopback ops port, defaults otherwise.
    pub fn for_nats(nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-writer"]);
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
    fn the_table_of_operator_names_matches_what_the_writer_reads() {
        assert_eq!(
            fleet::config::operator_names_read(&Config::command(), Config::ALIASES),
            fleet::config::operator_names_of("telemetry-writer")
        );
    }

    #[test]
    fn retention_is_off_by_default_and_reads_the_running_services_names() {
        let config = Config::for_nats("nats://127.0.0.1:1");
        assert_eq!(config.retention(), None);
        assert_eq!(config.retention_days, 365);
        let config = Config::parse_from([
            "telemetry-writer",
            "--retention-enabled",
            "true",
            "--retention-max-per-run",
            "7",
        ]);
        assert_eq!(
            config.retention(),
            Some(Policy {
                days: 365,
                max_per_run: 7,
                foreign_collection: false
            })
        );
        assert!(
            Config::try_parse_from(["telemetry-writer", "--retention-enabled", "sometimes"])
                .is_err()
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = Config::parse_from([
            "telemetry-writer",
            "--pb-password",
            "hunter2-pb",
            "--clickhouse-password",
            "hunter2-ch",
        ]);
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(config.pb_password.expose(), "hunter2-pb");
    }

    #[test]
    fn names_are_checked() {
        let check = |name: &str, ok: bool| assert_eq!(parse_name(name).is_ok(), ok, "{name}");
        check("telemetry", true);
        check("_t1", true);
        check("1abc", false);
        check("a-b", false);
        check("a`b", false);
        check("a.b", false);
        check("", false);
    }

    #[test]
    fn pocketbase_needs_credentials() {
        let config = Config::for_nats("nats://127.0.0.1:1");
        assert!(config.check().is_err());
        let mut config = config;
        config.sink = SinkChoice::Clickhouse;
        assert!(config.check().is_ok());
    }
}
