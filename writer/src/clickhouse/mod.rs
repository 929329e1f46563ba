//! The ClickHouse sink: applies the versioned migrations of [`schema`] at start, inserts each batch into
//! `events` in one RowBinary INSERT (the materialized view folds it into `installs`), and, when retention
//! is on, deletes old installs whole. Values only reach SQL through the client's `?` binding.

pub mod rollup;
pub mod schema;
pub mod settle;

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::sql::Identifier;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::retention::Policy;
use crate::sink::{Sink, SinkError};
use ::schema::Event;

/// `max_query_size` of a retention deletion: its text holds up to `RETENTION_MAX_PER_RUN` ids of at
/// most 64 bytes each, beyond ClickHouse's default of 256 KiB.
const RETENTION_MAX_QUERY_SIZE: usize = 128 << 20;

/// The tables retention deletes an install from, in order.
const RETENTION_TABLES: [&str; 8] = [
    "events",
    "install_first",
    "installs_settled",
    "installs_resettled",
    "installs_moved",
    "install_touches",
    "installs_by_random_id",
    "installs",
];

/// ClickHouse exception codes that mean "this data is wrong", not "the server is unwell": a batch that
/// gets one is split to find the event to blame.
const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
];

/// Connection settings of the sink.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub user: String,
    pub password: crate::config::Secret,
    pub database: String,
    pub write_timeout: Duration,
    /// Apply migrations up to this version only; 0: all.
    pub migrate_to: u32,
}

/// Writes events to ClickHouse.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
    database: String,
    write_timeout: Duration,
    migrate_to: u32,
    /// Start (Unix seconds) of the running insert the settle last warned about (shared by clones).
    held_warning: Arc<AtomicU32>,
}

/// An error of a ClickHouse call outside the write path (migrations, retention).
#[derive(Debug, thiserror::Error)]
#[error("clickhouse: {0}")]
pub struct ChError(#[from] clickhouse::error::Error);

/// One row of `events`, in the column order of the table.
#[derive(clickhouse::Row, Serialize)]
struct EventRow<'a> {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    #[serde(with = "clickhouse::serde::time::datetime")]
    received_at: OffsetDateTime,
    received_ms: u64,
    execution_id: &'a str,
    random_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    nsapp: &'a str,
    status: &'static str,
    ct_type: Option<u8>,
    disk_size: Option<u32>,
    core_count: Option<u16>,
    ram_size: Option<u32>,
    os_type: Option<&'a str>,
    os_version: Option<&'a str>,
    pve_version: Option<&'a str>,
    method: Option<&'a str>,
    exit_code: Option<u8>,
    error: Option<&'a str>,
    error_category: Option<&'static str>,
    error_signature: Option<&'a str>,
    install_duration: Option<u32>,
    cpu_vendor: Option<&'static str>,
    cpu_model: Option<&'a str>,
    gpu_vendor: Option<&'static str>,
    gpu_model: Option<&'a str>,
    gpu_passthrough: Option<&'static str>,
    ram_speed: Option<&'a str>,
    repo_source: &'static str,
    synthetic: u8,
    rescued: Vec<&'static str>,
    repo_slug: Option<&'a str>,
    has_arm: Option<u8>,
    arch: Option<&'a str>,
}

/// Milliseconds since the Unix epoch (0 before it, which no event is).
pub fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl<'a> EventRow<'a> {
    fn new(e: &'a Event) -> EventRow<'a> {
        EventRow {
            event_id: e.event_id,
            received_at: e.received_at,
            received_ms: unix_ms(e.received_at),
            execution_id: &e.execution_id,
            random_id: &e.random_id,
            kind: e.kind.as_str(),
            nsapp: &e.nsapp,
            status: e.status.as_str(),
            ct_type: e.ct_type,
            disk_size: e.disk_size,
            core_count: e.core_count,
            ram_size: e.ram_size,
            os_type: e.os_type.as_deref(),
            os_version: e.os_version.as_deref(),
            pve_version: e.pve_version.as_deref(),
            method: e.method.as_deref(),
            exit_code: e.exit_code,
            error: e.error.as_deref(),
            error_category: e.error_category.map(|c| c.as_str()),
            error_signature: e.error_signature.as_deref(),
            install_duration: e.install_duration,
            cpu_vendor: e.cpu_vendor.map(|v| v.as_str()),
            cpu_model: e.cpu_model.as_deref(),
            gpu_vendor: e.gpu_vendor.map(|v| v.as_str()),
            gpu_model: e.gpu_model.as_deref(),
            gpu_passthrough: e.gpu_passthrough.map(|v| v.as_str()),
            ram_speed: e.ram_speed.as_deref(),
            repo_source: e.repo_source.as_str(),
            synthetic: u8::from(e.synthetic),
            rescued: e.rescued.iter().map(|r| r.as_str()).collect(),
            repo_slug: e.repo_slug.as_deref(),
            has_arm: e.has_arm.map(u8::from),
            arch: e.arch.as_deref(),
        }
    }
}

impl ClickHouseSink {
    /// A sink for `settings`; no I/O until the first call.
    pub fn new(settings: &Settings) -> ClickHouseSink {
        let mut client = clickhouse::Client::default()
            .with_url(&settings.url)
            .with_user(&settings.user);
        if !settings.password.is_empty() {
            client = client.with_password(settings.password.expose());
        }
        ClickHouseSink {
            client,
            database: settings.database.clone(),
            write_timeout: settings.write_timeout,
            migrate_to: settings.migrate_to,
            held_warning: Arc::default(),
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Whether the database is (or is being migrated) at schema `version` or later: `migrate_to` is 0
    /// (the newest) or at least `version`.
    fn schema_at_least(&self, version: u32) -> bool {
        self.migrate_to == 0 || self.migrate_to >= version
    }

    /// One statement (of this crate's constants) with every `?` bound to the database identifier.
    fn in_database(&self, sql: &str) -> clickhouse::query::Query {
        let mut query = self.client.query(sql);
        for _ in 0..sql.matches('?').count() {
            query = query.bind(Identifier(&self.database));
        }
        query
    }

    /// Runs one statement (of this crate's constants) with every `?` bound to the database identifier.
    async fn execute(&self, sql: &str) -> Result<(), ChError> {
        self.in_database(sql).execute().await?;
        Ok(())
    }

    /// Creates the database and applies every migration not yet recorded. Returns how many were applied;
    /// a second start applies none. Concurrent starts are harmless: every step is idempotent (a column two
    /// writers add at once fails for one of them, whose retry then finds it).
    pub async fn migrate(&self) -> Result<usize, ChError> {
        self.client
            .query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(Identifier(&self.database))
            .execute()
            .await?;
        self.execute(&schema::render(schema::MIGRATIONS_TABLE))
            .await?;
        let applied: Vec<u32> = self
            .client
            .query("SELECT DISTINCT version FROM ?.schema_migrations ORDER BY version")
            .bind(Identifier(&self.database))
            .fetch_all()
            .await?;
        let mut count = 0;
        for migration in schema::MIGRATIONS {
            if applied.contains(&migration.version)
                || (self.migrate_to > 0 && migration.version > self.migrate_to)
            {
                continue;
            }
            for step in migration.steps {
                if let schema::Step::AddColumn { table, column, .. } = step {
                    if self.has_column(table, column).await? {
                        continue;
                    }
                }
                if let schema::Step::When { when, .. } = step {
                    let mut query = self.client.query(when);
                    for _ in 0..when.matches('?').count() {
                        query = query.bind(&self.database);
                    }
                    if query.fetch_one::<u64>().await? == 0 {
                        continue;
                    }
                }
                self.execute(&step.sql()).await?;
            }
            self.client
                .query("INSERT INTO ?.schema_migrations (version, name, applied_at) SELECT ?, ?, now()")
                .bind(Identifier(&self.database))
                .bind(migration.version)
                .bind(migration.name)
                .execute()
                .await?;
            tracing::info!(
                database = %self.database,
                version = migration.version,
                name = migration.name,
                "clickhouse migration applied"
            );
            count += 1;
        }
        Ok(count)
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool, ChError> {
        let count: u64 = self
            .client
            .query(
                "SELECT toUInt64(count()) FROM system.columns \
                 WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(&self.database)
            .bind(table)
            .bind(column)
            .fetch_one()
            .await?;
        Ok(count > 0)
    }

    async fn insert(&self, events: &[Event]) -> Result<(), clickhouse::error::Error> {
        let table = format!("`{}`.events", self.database);
        let mut insert = self
            .client
            .insert::<EventRow<'_>>(&table)?
            .with_timeouts(Some(self.write_timeout), Some(self.write_timeout));
        for event in events {
            insert.write(&EventRow::new(event)).await?;
        }
        insert.end().await
    }

    /// Deletes, whole, up to `policy.max_per_run` installs whose first event is older than
    /// `policy.days` before `now`: every one of their events, whatever the day, their settled rows and
    /// their states in the tables of versions 1–3 (a mutation per table, `ALTER TABLE … DELETE`, with the
    /// install ids bound as one array). Returns how many installs it started deleting. Mutations run in
    /// the background; while one of an earlier run is still running, a run deletes nothing (so it never
    /// picks the same installs twice).
    pub async fn retention(&self, now: OffsetDateTime, policy: &Policy) -> Result<usize, ChError> {
        if self.retention_pending().await? {
            tracing::info!(database = %self.database, "retention waits for the deletions of its last run");
            return Ok(0);
        }
        let cutoff = policy.cutoff(now);
        let found: Vec<(String, u32)> = self
            .client
            .query(
                "SELECT execution_id, toUInt32(started_at) FROM ?.installs_final \
                 WHERE started_at < toDateTime(?) ORDER BY execution_id LIMIT ?",
            )
            .bind(Identifier(&self.database))
            // `started_at` is the first event's second: one that started in the cutoff's own second
            // stays until the next run.
            .bind(u32::try_from(cutoff.unix_timestamp().max(0)).unwrap_or(u32::MAX))
            .bind(policy.max_per_run as u64)
            .fetch_all()
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        // The first day they touch: an install's settled rows started on its day or later.
        let low = found
            .iter()
            .map(|(_, started)| *started / 86_400)
            .min()
            .unwrap_or(0);
        let ids: Vec<String> = found.into_iter().map(|(id, _)| id).collect();
        // `events` first, then the settled rows: `installs_final` is where the next run finds what is
        // left to delete.
        for table in RETENTION_TABLES {
            let since = match table {
                "installs_moved" => 7,
                "install_first" => 8,
                _ => 0,
            };
            if !self.schema_at_least(since) {
                continue;
            }
            self.client
                .query("ALTER TABLE ?.? DELETE WHERE execution_id IN (SELECT arrayJoin(?))")
                .bind(Identifier(&self.database))
                .bind(Identifier(table))
                .bind(&ids)
                .with_option("max_query_size", RETENTION_MAX_QUERY_SIZE.to_string())
                .execute()
                .await?;
        }
        // After the deletions are under way: the rollup job takes no snapshot while they run, and every
        // snapshot of a day from `low` on taken before is out of date from here on (schema version 6).
        if self.schema_at_least(6) {
            self.client
                .query("INSERT INTO ?.settled_blocks (low, blocks) VALUES (?, 1)")
                .bind(Identifier(&self.database))
                .bind(low)
                .execute()
                .await?;
        }
        tracing::info!(database = %self.database, installs = ids.len(), cutoff = %cutoff, "retention deleting installs");
        Ok(ids.len())
    }

    /// True while a deletion of retention (a mutation of one of [`RETENTION_TABLES`]) is still running.
    pub async fn retention_pending(&self) -> Result<bool, ChError> {
        let pending: u64 = self
            .client
            .query(
                "SELECT count() FROM system.mutations \
                 WHERE database = ? AND has(?, table) AND is_done = 0",
            )
            .bind(&self.database)
            .bind(RETENTION_TABLES.as_slice())
            .fetch_one()
            .await?;
        Ok(pending > 0)
    }

    /// True when the server answers.
    pub async fn ping(&self) -> bool {
        self.client.query("SELECT 1").execute().await.is_ok()
    }
}

/// Sorts an error of the write path into retry or reject.
pub fn classify(error: &clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error;
    match error {
        Error::BadResponse(text) => match exception_code(text) {
            Some(code) if DATA_ERROR_CODES.contains(&code) => SinkError::Rejected(text.clone()),
            _ => SinkError::Unavailable(text.clone()),
        },
        // The row could not even be serialized: no server will take it.
        Error::Custom(text) => SinkError::Rejected(text.clone()),
        other => SinkError::Unavailable(other.to_string()),
    }
}

/// The `Code: NN` of a ClickHouse exception text.
fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    async fn write(&self, events: &[Event]) -> Result<(), SinkError> {
        match tokio::time::timeout(self.write_timeout, self.insert(events)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(SinkError::Unavailable(format!(
                "insert took longer than {:?}",
                self.write_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_retry_and_reject() {
        use clickhouse::error::Error;
        let check = |e: Error, reject: bool| {
            let got = classify(&e);
            assert_eq!(matches!(got, SinkError::Rejected(_)), reject, "{got:?}");
        };
        check(
            Error::BadResponse("Code: 27, e.displayText() = DB::Exception: Cannot parse".into()),
            true,
        );
        check(
            Error::BadResponse("Code: 252, e.displayText() = DB::Exception: Too many parts".into()),
            false,
        );
        check(
            Error::BadResponse("Code: 60. DB::Exception: Table doesn't exist".into()),
            false,
        );
        check(Error::BadResponse("502 Bad Gateway".into()), false);
        check(Error::TimedOut, false);
    }

    #[test]
    fn unix_ms_keeps_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(unix_ms(t), 1_700_000_000_123);
    }
}
