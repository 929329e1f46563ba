//! Exact figures from ClickHouse: the views of the dashboard, computed from the writer's `installs_final`
//! (one row per install) and `events` tables. Every value is bound with the client's `?`; the only text
//! formatted into SQL is the database identifier (bound as an identifier) and the fixed sort column and
//! direction of [`crate::params::SortColumn`] and [`crate::params::Order`]. Every result column is cast to
//! a plain type in SQL, so the RowBinary rows read the same on ClickHouse 18.16 and current releases.
//!
//! Each view is computed in as few passes as possible: the categorical counts of a view come from one
//! `ARRAY JOIN` pass (`schema::rollup`, whole past days from the per-day rollups, see [`crate::rollup`]),
//! and lists ("the latest N") take their candidates from `events` (partition-pruned by time, the last day,
//! week and month first: [`windows`]) and read only those installs back, with
//! `enable_optimize_predicate_expression` so that `execution_id IN (…)` reaches the view's inner query.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use clickhouse::sql::Identifier;
use serde::Deserialize;

use crate::config::Config;
use crate::ids::{IdHasher, PublicId};
use crate::metrics;
use crate::model::*;
use crate::params::{RecordsQuery, Scope};
use std::sync::Arc;

/// The filter of the records page and the CSV export; [`bind_records_filter`] binds its values.
const RECORDS_FILTER: &str = "started_at >= toDateTime(?) AND (? = '' OR repo_source = ?) \
     AND (? = '' OR repo_slug = ?) \
     AND (? = '' OR nsapp = ?) AND (? = '' OR status = ?) \
     AND (? = '' OR os_type = ?) AND (? = '' OR type = ?)";

/// Binds the values of [`RECORDS_FILTER`] for `q` at `now`.
fn bind_records_filter(
    query: clickhouse::query::Query,
    q: &RecordsQuery,
    now: i64,
) -> clickhouse::query::Query {
    query
        .bind(q.scope.period.since(now))
        .bind_filter(q.scope.repo.sql_value())
        .bind_filter(q.scope.slug.sql_value())
        .bind_filter(q.app.as_deref().unwrap_or(""))
        .bind_filter(q.status.map_or("", |s| s.as_str()))
        .bind_filter(q.os.as_deref().unwrap_or(""))
        .bind_filter(q.kind.map_or("", |k| k.as_str()))
}

/// Binds the value of an optional filter, written `(? = '' OR column = ?)` in the SQL: the value twice,
/// and the empty string matches every row.
pub trait BindFilter {
    fn bind_filter(self, value: &str) -> Self;
}

impl BindFilter for clickhouse::query::Query {
    fn bind_filter(self, value: &str) -> Self {
        self.bind(value).bind(value)
    }
}

/// Why the web is not ready ([`Db::ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// ClickHouse does not answer (or not within 2 s).
    Unreachable,
    /// The writer has not yet created this release's schema (a new database, or an upgrade under way).
    Migrating,
}

impl NotReady {
    /// The `/readyz` text.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::Unreachable => "clickhouse not reachable",
            NotReady::Migrating => "waiting for the writer's clickhouse migrations",
        }
    }
}

/// A failed ClickHouse call; the web answers 503 for it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("clickhouse: {0}")]
    Query(#[from] clickhouse::error::Error),
    #[error("clickhouse query took longer than {0:?}")]
    Timeout(Duration),
}

/// The ClickHouse side of the web: a client and the database name.
#[derive(Clone)]
pub struct Db {
    client: clickhouse::Client,
    database: String,
    timeout: Duration,
    ids: Arc<IdHasher>,
    rollup_reads: bool,
}

/// Most computations of one view by [`Db::steady`].
pub const STEADY_READS: usize = 3;

/// How many latest installs the overview lists.
pub const RECENT: usize = 10;
/// How many rows the top lists keep.
pub const TOP: usize = 15;
/// How many latest failures the app and timed-out lists show.
pub const FAILURES: u64 = 20;
/// How many latest errors the error analysis lists (the running service's `recent_errors`).
pub const RECENT_ERRORS: u64 = 100;
/// Installs not final this long after their first event count as stuck (the aggregator's default).
pub const STUCK_AFTER_SECS: i64 = schema::rollup::STUCK_AFTER_SECS;

const FINAL_FAILURES: &str = "('failed', 'aborted', 'unknown')";

/// `?, ?, …`: `n` placeholders (at least one), for a literal list each of whose values is bound.
fn placeholders(n: usize) -> String {
    vec!["?"; n.max(1)].join(", ")
}

/// The failures among `n` candidate ids, newest first. Binds: the database, the `n` ids, the limit. At
/// most [`RECENT_ERRORS`] ids, so it stays under [`MAX_READ_SQL`] in one read (tested).
fn failures_sql(n: usize) -> String {
    format!(
        "SELECT execution_id, nsapp, type, status, toInt16(ifNull(toInt16(exit_code), -1)) AS exit_code, \
         ifNull(error_category, '') AS error_category, ifNull(error_signature, '') AS error_signature, \
         ifNull(error, '') AS error, toUInt32(ifNull(toUnixTimestamp(finished_at), 0)) AS finished_at, \
         toUInt32(toUnixTimestamp(started_at)) AS started_at \
         FROM ?.installs_final WHERE {} AND status IN {FINAL_FAILURES} \
         ORDER BY finished_at DESC, execution_id LIMIT ?",
        ids_in(n)
    )
}

/// The longest SQL (bound values included) a read sends. The `clickhouse` crate sends a longer SELECT as
/// a POST with `readonly=1`, and ClickHouse refuses that setting for a user whose profile already makes
/// it read-only (`readonly = 2`, the web's user), so such a read would fail. A little under the crate's
/// 8,192 bytes: it appends the output format.
pub(crate) const MAX_READ_SQL: usize = 8_000;

/// `execution_id IN (?, ?, …)` with `n` placeholders (at least one), each bound to one id. Through
/// `installs_final` (with `enable_optimize_predicate_expression`) a literal list reaches the settled rows
/// as a key condition, so with the start times bound too ([`Started`]) a lookup reads a few granules; a
/// bound array with `has(?, execution_id)` is no key condition there and reads every install's columns.
pub(crate) fn ids_in(n: usize) -> String {
    format!("execution_id IN ({})", placeholders(n))
}

/// The starts of the windows a "latest N" read of the period from `since` tries in turn: the last day,
/// week and 30 days, then the whole period. Where a window already holds N rows, they are the period's
/// latest N (every row outside it is older than every row in it), and the read stays in the partitions
/// or granules of that window.
pub(crate) fn windows(since: i64, now: i64) -> Vec<i64> {
    let mut out: Vec<i64> = [86_400, 7 * 86_400, 30 * 86_400]
        .iter()
        .map(|w| now - w)
        .filter(|&start| start > since)
        .collect();
    out.push(since);
    out
}

/// When the installs a lookup reads started, as far as the caller knows. `installs_settled` is ordered
/// by `(started_at, execution_id)`, so a known start turns the lookup into a few granules' read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Started<'a> {
    Unknown,
    /// At or after this Unix second.
    Since(i64),
    /// At one of these Unix seconds (at least one; an empty list reads as `Unknown`).
    At(&'a [u32]),
}

/// Which figures a pass computes (the passes of `schema::rollup`).
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The overview: distributions and resource trends.
    Overview,
    /// The failure analysis: exit codes, signatures, stuck installs.
    Failures,
    /// One app: both, minus the hardware distributions it does not show.
    App,
}

impl Pass {
    fn of(self) -> &'static schema::rollup::Pass {
        match self {
            Pass::Overview => &schema::rollup::API_OVERVIEW,
            Pass::Failures => &schema::rollup::API_FAILURES,
            Pass::App => &schema::rollup::API_APP,
        }
    }
}

/// The columns of one install as the log lists it.
const RECORD_COLUMNS: &str = "
    execution_id, nsapp, type, status, repo_source, ifNull(repo_slug, '') AS repo_slug,
    ifNull(os_type, '') AS os_type, ifNull(os_version, '') AS os_version,
    ifNull(pve_version, '') AS pve_version, ifNull(method, '') AS method,
    toInt16(ifNull(toInt16(exit_code), -1)) AS exit_code, ifNull(error_category, '') AS error_category,
    toUInt32(toUnixTimestamp(started_at)) AS started_at,
    toUInt32(ifNull(toUnixTimestamp(finished_at), 0)) AS finished_at,
    toInt64(ifNull(toInt64(duration), -1)) AS duration,
    toInt32(ifNull(toInt32(core_count), -1)) AS core_count,
    toInt64(ifNull(toInt64(ram_size), -1)) AS ram_size,
    toInt64(ifNull(toInt64(disk_size), -1)) AS disk_size";

/// One row of a pass: the sums of the overview pass are, in order, cores, RAM, disk and durations
/// (sum and count of each), of the `day` keys.
type DimRow = crate::rollup::PassRow;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RecordRow {
    execution_id: String,
    nsapp: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    repo_source: String,
    repo_slug: String,
    os_type: String,
    os_version: String,
    pve_version: String,
    method: String,
    exit_code: i16,
    error_category: String,
    started_at: u32,
    finished_at: u32,
    duration: i64,
    core_count: i32,
    ram_size: i64,
    disk_size: i64,
}

impl RecordRow {
    /// The record with its public id (see [`crate::ids`]).
    fn public(self, ids: &IdHasher) -> Record {
        let r = self;
        let exit_code = u8::try_from(r.exit_code).ok();
        Record {
            exit_description: exit_code
                .filter(|_| is_failure(&r.status))
                .map(|c| schema::exit_codes::describe(c).into_owned()),
            execution_id: ids.install(&r.execution_id, i64::from(r.started_at)),
            nsapp: r.nsapp,
            kind: r.kind,
            status: r.status,
            repo_source: r.repo_source,
            repo_slug: non_empty(r.repo_slug),
            os_type: non_empty(r.os_type),
            os_version: non_empty(r.os_version),
            pve_version: non_empty(r.pve_version),
            method: non_empty(r.method),
            exit_code,
            error_category: non_empty(r.error_category),
            started_at: timestamp(r.started_at),
            finished_at: (r.finished_at > 0).then(|| timestamp(r.finished_at)),
            duration: u32::try_from(r.duration).ok(),
            core_count: u16::try_from(r.core_count).ok(),
            ram_size: u32::try_from(r.ram_size).ok(),
            disk_size: u32::try_from(r.disk_size).ok(),
        }
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct DetailRow {
    random_id: String,
    error: String,
    error_signature: String,
    last_seen_at: u32,
    install_duration: i64,
    cpu_vendor: String,
    cpu_model: String,
    gpu_vendor: String,
    gpu_model: String,
    gpu_passthrough: String,
    ram_speed: String,
    ct_type: i16,
    events: u64,
    arch: String,
    has_arm: i16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct EventRow {
    event_id: String,
    received_at: u32,
    status: String,
    synthetic: u8,
    exit_code: i16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Candidate {
    execution_id: String,
    #[allow(dead_code)]
    at: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct FailureRow {
    execution_id: String,
    nsapp: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    exit_code: i16,
    error_category: String,
    error_signature: String,
    error: String,
    finished_at: u32,
    started_at: u32,
}

impl Db {
    pub fn new(config: &Config) -> Db {
        let mut client = clickhouse::Client::default()
            .with_url(&config.clickhouse_url)
            .with_user(&config.clickhouse_user)
            // Lets `execution_id IN (…)` reach the inner GROUP BY of `installs_final` (default on in current
            // releases, off in 18.16).
            .with_option("enable_optimize_predicate_expression", "1");
        if !config.clickhouse_password.is_empty() {
            client = client.with_password(config.clickhouse_password.expose());
        }
        Db {
            client,
            database: config.clickhouse_database.clone(),
            timeout: config.query_timeout(),
            ids: Arc::new(IdHasher::new(config.id_hash_key.expose())),
            rollup_reads: config.rollup_reads,
        }
    }

    /// A query whose first `?` is the database.
    pub(crate) fn query(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(sql).bind(Identifier(&self.database))
    }

    /// Reads the installs of `ids` (at least one) with `columns` from `installs_final`, in no order: see
    /// [`ids_in`]. `started` narrows the read to where the installs started, when the caller knows.
    fn by_ids(
        &self,
        columns: &str,
        ids: &[String],
        started: Started<'_>,
    ) -> clickhouse::query::Query {
        let mut sql = format!(
            "SELECT {columns} FROM ?.installs_final WHERE {}",
            ids_in(ids.len())
        );
        let started = match started {
            Started::At([]) => Started::Unknown,
            other => other,
        };
        match started {
            Started::Unknown => {}
            Started::Since(_) => sql.push_str(" AND started_at >= toDateTime(?)"),
            Started::At(at) => {
                sql.push_str(&format!(" AND started_at IN ({})", placeholders(at.len())));
            }
        }
        let q = ids
            .iter()
            .fold(self.query(&sql), |q, id| q.bind(id.as_str()));
        match started {
            Started::Unknown => q,
            Started::Since(since) => q.bind(since),
            Started::At(at) => at.iter().fold(q, |q, t| q.bind(*t)),
        }
    }

    /// The rows of `columns` for the installs of `ids` (see [`Db::by_ids`]), read in as many lookups as
    /// keep each one's SQL within [`MAX_READ_SQL`], one after another; each lookup is timed as `what`.
    pub(crate) async fn fetch_by_ids<T>(
        &self,
        what: &'static str,
        columns: &str,
        ids: &[String],
        started: Started<'_>,
    ) -> Result<Vec<T>, DbError>
    where
        T: clickhouse::Row + for<'b> Deserialize<'b>,
    {
        let mut rows = Vec::with_capacity(ids.len());
        for run in self.by_ids_runs(columns, ids, started) {
            rows.extend(self.timed(what, run.fetch_all::<T>()).await?);
        }
        Ok(rows)
    }

    /// The lookups of [`Db::by_ids`] for `ids`, split in halves until each one's SQL fits in
    /// [`MAX_READ_SQL`] (a page of 500 installs is a few lookups; one install, one).
    fn by_ids_runs(
        &self,
        columns: &str,
        ids: &[String],
        started: Started<'_>,
    ) -> Vec<clickhouse::query::Query> {
        let query = self.by_ids(columns, ids, started);
        if ids.len() < 2 || query.sql_display().to_string().len() <= MAX_READ_SQL {
            return vec![query];
        }
        let half = ids.len() / 2;
        let (first, second) = ids.split_at(half);
        // The starts go with their ids when there is one per id; any other list is kept whole.
        let (first_started, second_started) = match started {
            Started::At(at) if at.len() == ids.len() => {
                (Started::At(&at[..half]), Started::At(&at[half..]))
            }
            other => (other, other),
        };
        let mut runs = self.by_ids_runs(columns, first, first_started);
        runs.extend(self.by_ids_runs(columns, second, second_started));
        runs
    }

    /// A query with nothing bound yet (bind [`Db::identifier`] where `?.table` comes).
    pub(crate) fn raw(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query(sql)
    }

    /// The database, to bind as an identifier.
    pub(crate) fn identifier(&self) -> Identifier<'_> {
        Identifier(&self.database)
    }

    /// Whether passes read whole past days from the rollups ([`crate::rollup`]).
    pub(crate) fn rollup_reads(&self) -> bool {
        self.rollup_reads
    }

    /// The hasher of public ids.
    pub fn ids(&self) -> &IdHasher {
        &self.ids
    }

    /// The writer's settle watermark (Unix seconds; 0 before the first).
    async fn watermark(&self) -> Result<u32, DbError> {
        self.timed(
            "watermark",
            self.client
                .query("SELECT toUInt32(max(watermark)) FROM ?.settle_watermark")
                .bind(Identifier(&self.database))
                .fetch_one::<u32>(),
        )
        .await
    }

    /// Computes a view with `read` and computes it again, up to [`STEADY_READS`] times in all, while the
    /// writer's settle watermark moved during the computation. A read of `installs_final` that overlaps
    /// the record of a watermark can miss (or count twice) the installs that settle took, because the
    /// view's branches can each read another watermark (writer README, "Reads during a settle"); a read
    /// during which the watermark stayed put cannot. After the last try the last answer is served.
    pub async fn steady<T, F, Fut>(&self, read: F) -> Result<T, DbError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, DbError>>,
    {
        let mut before = self.watermark().await?;
        let mut tries = 1;
        loop {
            let answer = read().await?;
            let after = self.watermark().await?;
            if after == before || tries == STEADY_READS {
                return Ok(answer);
            }
            ::metrics::counter!(metrics::REREADS).increment(1);
            before = after;
            tries += 1;
        }
    }

    /// Runs one read with the deadline and the query metrics.
    pub(crate) async fn timed<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, fut).await;
        ::metrics::histogram!(metrics::QUERY_SECONDS, "query" => what)
            .record(started.elapsed().as_secs_f64());
        ::metrics::counter!(metrics::QUERIES, "query" => what).increment(1);
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                ::metrics::counter!(metrics::QUERY_ERRORS, "query" => what).increment(1);
                Err(e.into())
            }
            Err(_) => {
                ::metrics::counter!(metrics::QUERY_ERRORS, "query" => what).increment(1);
                Err(DbError::Timeout(self.timeout))
            }
        }
    }

    /// `Ok` when ClickHouse answers, the writer's view exists and the writer's migrations reached this
    /// release's schema ([`schema::names::CLICKHOUSE_SCHEMA_VERSION`]; a newer one is fine); else why not.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let probe = async {
            let tables: u64 = self
                .client
                .query(
                    "SELECT toUInt64(count()) FROM system.tables \
                     WHERE database = ? AND name IN ('installs_final', 'schema_migrations')",
                )
                .bind(&self.database)
                .fetch_one()
                .await?;
            if tables < 2 {
                return Ok(Err(NotReady::Migrating));
            }
            let version: u32 = self
                .client
                .query("SELECT toUInt32(max(version)) FROM ?.schema_migrations")
                .bind(Identifier(&self.database))
                .fetch_one()
                .await?;
            Ok::<_, clickhouse::error::Error>(
                if version >= schema::names::CLICKHOUSE_SCHEMA_VERSION {
                    Ok(())
                } else {
                    Err(NotReady::Migrating)
                },
            )
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => Err(NotReady::Unreachable),
        }
    }

    async fn dims(
        &self,
        pass: Pass,
        scope: Scope,
        app: &str,
        now: i64,
    ) -> Result<Vec<DimRow>, DbError> {
        let filter = crate::rollup::Filter {
            since: scope.period.since(now),
            repo: scope.repo.sql_value(),
            slug: scope.slug.sql_value(),
            app,
        };
        self.pass(pass.of(), filter, now).await
    }

    /// The overview of `/dashboard` and `/api/dashboard`.
    pub async fn dashboard(&self, scope: Scope, now: i64) -> Result<Dashboard, DbError> {
        let (rows, recent) = tokio::try_join!(
            self.dims(Pass::Overview, scope, "", now),
            self.recent(scope, now)
        )?;
        let dims = Dims::new(&rows);
        Ok(Dashboard::build(scope, now, &dims, recent))
    }

    /// The failure analysis of `/dashboard/errors` and `/api/errors`.
    pub async fn errors(&self, scope: Scope, now: i64) -> Result<Errors, DbError> {
        let (rows, timeouts, recent) = tokio::try_join!(
            self.dims(Pass::Failures, scope, "", now),
            self.failures(scope, None, true, now, FAILURES),
            self.failures(scope, None, false, now, RECENT_ERRORS)
        )?;
        let dims = Dims::new(&rows);
        Ok(Errors::build(scope, now, &dims, timeouts, recent))
    }

    /// One app's page.
    pub async fn app(&self, nsapp: &str, scope: Scope, now: i64) -> Result<AppView, DbError> {
        let (rows, failures) = tokio::try_join!(
            self.dims(Pass::App, scope, nsapp, now),
            self.failures(scope, Some(nsapp), false, now, FAILURES)
        )?;
        let dims = Dims::new(&rows);
        Ok(AppView::build(nsapp, scope, now, &dims, failures))
    }

    /// Reads the given installs back from `installs_final` (the inner query filters by id).
    async fn records_by_id(
        &self,
        ids: &[String],
        started: Started<'_>,
    ) -> Result<Vec<RecordRow>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.fetch_by_ids("records_by_id", RECORD_COLUMNS, ids, started)
            .await
    }

    /// The latest installs started in the period. Candidates are the installs with an event in the last
    /// day (or since the period's start if later), ranked by their first event there; an install whose
    /// true start lies before that window is dropped after reading it back, so what is left is exact. When
    /// fewer than [`RECENT`] remain, the whole period is read.
    async fn recent(&self, scope: Scope, now: i64) -> Result<Vec<Record>, DbError> {
        let since = scope.period.since(now);
        let window = since.max(now - 86_400);
        let repo = scope.repo.sql_value();
        let slug = scope.slug.sql_value();
        let fut = self
            .query(
                "SELECT execution_id, toUInt64(min(received_ms)) AS at FROM ?.events \
                 WHERE received_at >= toDateTime(?) AND (? = '' OR repo_source = ?) \
                 AND (? = '' OR repo_slug = ?) \
                 GROUP BY execution_id ORDER BY at DESC, execution_id LIMIT 60",
            )
            .bind(window)
            .bind_filter(repo)
            .bind_filter(slug)
            .fetch_all::<Candidate>();
        let ids: Vec<String> = self
            .timed("recent_candidates", fut)
            .await?
            .into_iter()
            .map(|c| c.execution_id)
            .collect();
        let mut records: Vec<Record> = self
            .records_by_id(&ids, Started::Since(window))
            .await?
            .into_iter()
            .map(|r| r.public(&self.ids))
            .filter(|r| r.started_at.unix >= window)
            .filter(|r| {
                scope
                    .repo
                    .0
                    .is_none_or(|repo| r.repo_source == repo.as_str())
            })
            .filter(|r| {
                scope
                    .slug
                    .get()
                    .is_none_or(|slug| r.repo_slug.as_deref() == Some(slug))
            })
            .collect();
        if records.len() < RECENT {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM ?.installs_final \
                 WHERE started_at >= toDateTime(?) AND (? = '' OR repo_source = ?) \
                 AND (? = '' OR repo_slug = ?) \
                 ORDER BY started_at DESC, execution_id LIMIT ?"
            );
            let fut = self
                .query(&sql)
                .bind(since)
                .bind_filter(repo)
                .bind_filter(slug)
                .bind(RECENT as u64)
                .fetch_all::<RecordRow>();
            records = self
                .timed("recent_full", fut)
                .await?
                .into_iter()
                .map(|r| r.public(&self.ids))
                .collect();
        }
        records.sort_by(|a, b| {
            b.started_at
                .unix
                .cmp(&a.started_at.unix)
                .then_with(|| a.execution_id.cmp(&b.execution_id))
        });
        records.truncate(RECENT);
        Ok(records)
    }

    /// The latest `limit` failed, aborted or unknown installs of the period (of one app, or the timed-out
    /// ones), with their masked log excerpt. Candidates (twice `limit`) come from the final events in
    /// `events`; each is read back from `installs_final` so that status and outcome are the merged ones.
    async fn failures(
        &self,
        scope: Scope,
        app: Option<&str>,
        timed_out_only: bool,
        now: i64,
        limit: u64,
    ) -> Result<Vec<Failure>, DbError> {
        let since = scope.period.since(now);
        let repo = scope.repo.sql_value();
        let slug = scope.slug.sql_value();
        let app = app.unwrap_or("");
        let wanted = limit * 2;
        let mut found = Vec::new();
        for start in windows(since, now) {
            let fut = self
                .query(&format!(
                    "SELECT execution_id, toUInt64(max(received_ms)) AS at FROM ?.events \
                     WHERE received_at >= toDateTime(?) AND status IN {FINAL_FAILURES} \
                     AND (? = '' OR repo_source = ?) AND (? = '' OR repo_slug = ?) AND (? = '' OR nsapp = ?) \
                     AND (? = 0 OR synthetic = 1) \
                     GROUP BY execution_id ORDER BY at DESC, execution_id LIMIT ?"
                ))
                .bind(start)
                .bind_filter(repo)
                .bind_filter(slug)
                .bind_filter(app)
                .bind(u8::from(timed_out_only))
                .bind(wanted)
                .fetch_all::<Candidate>();
            found = self.timed("failure_candidates", fut).await?;
            if found.len() as u64 >= wanted {
                break;
            }
        }
        let ids: Vec<String> = found.into_iter().map(|c| c.execution_id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let fut = self.query(&failures_sql(ids.len()));
        let fut = ids
            .iter()
            .fold(fut, |q, id| q.bind(id.as_str()))
            .bind(limit)
            .fetch_all::<FailureRow>();
        let rows = self.timed("failures", fut).await?;
        Ok(rows
            .into_iter()
            .filter(|r| !timed_out_only || r.error_category == "timeout")
            .map(|r| {
                let exit_code = u8::try_from(r.exit_code).ok();
                Failure {
                    execution_id: self.ids.install(&r.execution_id, i64::from(r.started_at)),
                    nsapp: r.nsapp,
                    kind: r.kind,
                    status: r.status,
                    exit_description: exit_code
                        .map(|c| schema::exit_codes::describe(c).into_owned()),
                    exit_code,
                    error_category: non_empty(r.error_category),
                    error_signature: non_empty(r.error_signature),
                    log_excerpt: excerpt(&r.error),
                    finished_at: (r.finished_at > 0).then(|| timestamp(r.finished_at)),
                }
            })
            .collect())
    }

    /// One page of the installation log: the ids of the page first (only the filter and sort columns
    /// are computed for every install), then those installs in full.
    pub async fn records(&self, q: &RecordsQuery, now: i64) -> Result<RecordsPage, DbError> {
        let bind = |query| bind_records_filter(query, q, now);
        let count_sql =
            format!("SELECT toUInt64(count()) FROM ?.installs_final WHERE {RECORDS_FILTER}");
        let total = self
            .timed(
                "records_count",
                bind(self.query(&count_sql)).fetch_one::<u64>(),
            )
            .await?;
        let offset = u64::from(q.page - 1) * u64::from(q.limit);
        let column = q.sort.sql();
        let direction = q.order.sql();
        // Sort column and direction are constants of `SortColumn` and `Order`, never request text.
        let page_sql = format!(
            "SELECT execution_id, toUInt64(toUInt32(started_at)) AS at FROM ?.installs_final WHERE {RECORDS_FILTER} \
             ORDER BY {column} {direction}, execution_id {direction} LIMIT ? OFFSET ?"
        );
        let page: Vec<Candidate> = self
            .timed(
                "records_page",
                bind(self.query(&page_sql))
                    .bind(u64::from(q.limit))
                    .bind(offset)
                    .fetch_all::<Candidate>(),
            )
            .await?;
        let started: Vec<u32> = page
            .iter()
            .map(|c| u32::try_from(c.at).unwrap_or(u32::MAX))
            .collect();
        let ids: Vec<String> = page.into_iter().map(|c| c.execution_id).collect();
        let mut by_id: HashMap<String, RecordRow> = self
            .records_by_id(&ids, Started::At(&started))
            .await?
            .into_iter()
            .map(|r| (r.execution_id.clone(), r))
            .collect();
        let records = ids
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(|r| r.public(&self.ids))
            .collect();
        Ok(RecordsPage {
            total,
            page: q.page,
            limit: q.limit,
            pages: total.div_ceil(u64::from(q.limit)).max(1),
            sort: q.sort.as_str(),
            order: q.order.as_str(),
            records,
        })
    }

    /// Every install of the filter for the CSV export, in the filter's order, at most `max` rows, read
    /// one by one while the answer streams.
    pub fn export(&self, q: &RecordsQuery, now: i64, max: u32) -> Result<Export, DbError> {
        let column = q.sort.sql();
        let direction = q.order.sql();
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM ?.installs_final WHERE {RECORDS_FILTER} \
             ORDER BY {column} {direction}, execution_id {direction} LIMIT ?"
        );
        let fut = bind_records_filter(self.query(&sql), q, now)
            .bind(u64::from(max))
            .fetch::<RecordRow>()?;
        ::metrics::counter!(metrics::QUERIES, "query" => "export").increment(1);
        Ok(Export {
            cursor: fut,
            ids: self.ids.clone(),
            timeout: self.timeout,
        })
    }

    /// The real install id behind a public one, read from the `events` partitions of its day (and the
    /// days beside it): never a scan of all history.
    /// Also returns when it started (Unix seconds), for [`Db::detail`].
    pub async fn resolve(&self, public: &str) -> Result<Option<(String, u32)>, DbError> {
        #[derive(Debug, clickhouse::Row, Deserialize)]
        struct Id {
            execution_id: String,
        }
        let Some(id) = PublicId::parse(public) else {
            return Ok(None);
        };
        let day = |d: i64| crate::legacy::params::day_text(d * 86_400);
        let fut = self
            .query(
                "SELECT DISTINCT execution_id FROM ?.events \
                 WHERE received_at >= toDateTime(toDate(?)) AND received_at < toDateTime(toDate(?) + 1) \
                 AND sipHash64(concat(?, execution_id)) = ? \
                 LIMIT 10",
            )
            .bind(day(id.day - 1))
            .bind(day(id.day + 1))
            .bind(self.ids.key())
            .bind(id.hash)
            .fetch_all::<Id>();
        let candidates = self.timed("resolve", fut).await?;
        // The day of the public id is the UTC day of the first event: check it on the merged install.
        for c in candidates {
            let rows = self
                .records_by_id(
                    std::slice::from_ref(&c.execution_id),
                    Started::Since((id.day - 1) * 86_400),
                )
                .await?;
            if let Some(r) = rows
                .iter()
                .find(|r| self.ids.install(&r.execution_id, i64::from(r.started_at)) == public)
            {
                return Ok(Some((c.execution_id, r.started_at)));
            }
        }
        Ok(None)
    }

    /// One install with its events, or `None`; `started_at` is when it started (from [`Db::resolve`]).
    pub async fn detail(
        &self,
        execution_id: &str,
        started_at: u32,
    ) -> Result<Option<Detail>, DbError> {
        let ids = [execution_id.to_string()];
        let at = [started_at];
        let Some(record) = self
            .records_by_id(&ids, Started::At(&at))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let record = record.public(&self.ids);
        let fut = self
            .query(
                "SELECT random_id, ifNull(error, '') AS error, ifNull(error_signature, '') AS error_signature, \
                 toUInt32(toUnixTimestamp(last_seen_at)) AS last_seen_at, \
                 toInt64(ifNull(toInt64(install_duration), -1)) AS install_duration, \
                 ifNull(cpu_vendor, '') AS cpu_vendor, ifNull(cpu_model, '') AS cpu_model, \
                 ifNull(gpu_vendor, '') AS gpu_vendor, ifNull(gpu_model, '') AS gpu_model, \
                 ifNull(gpu_passthrough, '') AS gpu_passthrough, ifNull(ram_speed, '') AS ram_speed, \
                 toInt16(ifNull(toInt16(ct_type), -1)) AS ct_type, toUInt64(events) AS events, \
                 ifNull(arch, '') AS arch, toInt16(ifNull(toInt16(has_arm), -1)) AS has_arm \
                 FROM ?.installs_final WHERE execution_id = ? AND started_at = toDateTime(?)",
            )
            .bind(execution_id)
            .bind(started_at)
            .fetch_optional::<DetailRow>();
        let Some(more) = self.timed("detail", fut).await? else {
            return Ok(None);
        };
        let fut = self
            .query(
                "SELECT DISTINCT toString(event_id) AS event_id, toUInt32(toUnixTimestamp(received_at)) AS received_at, \
                 status, toUInt8(synthetic) AS synthetic, toInt16(ifNull(toInt16(exit_code), -1)) AS exit_code \
                 FROM ?.events WHERE execution_id = ? ORDER BY received_at, event_id LIMIT 100",
            )
            .bind(execution_id)
            .fetch_all::<EventRow>();
        let events = self
            .timed("detail_events", fut)
            .await?
            .into_iter()
            .map(|e| DetailEvent {
                event_id: e.event_id,
                received_at: timestamp(e.received_at),
                status: e.status,
                synthetic: e.synthetic == 1,
                exit_code: u8::try_from(e.exit_code).ok(),
            })
            .collect();
        Ok(Some(Detail {
            record,
            random_id: self.ids.session(&more.random_id),
            error: non_empty(more.error),
            error_signature: non_empty(more.error_signature),
            last_seen_at: timestamp(more.last_seen_at),
            install_duration: u32::try_from(more.install_duration).ok(),
            cpu_vendor: non_empty(more.cpu_vendor),
            cpu_model: non_empty(more.cpu_model),
            gpu_vendor: non_empty(more.gpu_vendor),
            gpu_model: non_empty(more.gpu_model),
            gpu_passthrough: non_empty(more.gpu_passthrough),
            ram_speed: non_empty(more.ram_speed),
            ct_type: u8::try_from(more.ct_type).ok(),
            arch: non_empty(more.arch),
            has_arm: (more.has_arm >= 0).then_some(more.has_arm == 1),
            events_seen: more.events,
            events,
        }))
    }
}

/// The rows of an overview pass, by dimension.
pub struct Dims {
    counts: HashMap<String, Vec<(String, u64)>>,
    days: BTreeMap<String, DayTotals>,
}

/// Sums of one day, for averages.
#[derive(Debug, Default, Clone, Copy)]
pub struct DayTotals {
    pub installs: u64,
    pub cores: (u64, u64),
    pub ram: (u64, u64),
    pub disk: (u64, u64),
    pub duration: (u64, u64),
}

impl Dims {
    fn new(rows: &[DimRow]) -> Dims {
        let mut counts: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        let mut days = BTreeMap::new();
        for r in rows {
            if r.dim == "day" {
                days.insert(
                    r.key.clone(),
                    DayTotals {
                        installs: r.n,
                        cores: (r.s0, r.s1),
                        ram: (r.s2, r.s3),
                        disk: (r.s4, r.s5),
                        duration: (r.s6, r.s7),
                    },
                );
            }
            counts
                .entry(r.dim.clone())
                .or_default()
                .push((r.key.clone(), r.n));
        }
        for list in counts.values_mut() {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        Dims { counts, days }
    }

    /// Every key of a dimension with its count, most first (ties by key).
    pub fn list(&self, dim: &str) -> &[(String, u64)] {
        self.counts.get(dim).map_or(&[], Vec::as_slice)
    }

    pub fn count(&self, dim: &str, key: &str) -> u64 {
        self.list(dim)
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self, dim: &str) -> u64 {
        self.list(dim).iter().map(|(_, n)| n).sum()
    }

    /// `(left, right)` pairs of a dimension whose keys are `left|right`.
    pub fn pairs(&self, dim: &str) -> impl Iterator<Item = (&str, &str, u64)> {
        self.list(dim)
            .iter()
            .filter_map(|(k, n)| k.split_once('|').map(|(a, b)| (a, b, *n)))
    }

    pub fn days(&self) -> &BTreeMap<String, DayTotals> {
        &self.days
    }
}

/// The rows of a CSV export, read while the answer streams.
pub struct Export {
    cursor: clickhouse::query::RowCursor<RecordRow>,
    ids: Arc<IdHasher>,
    timeout: Duration,
}

impl Export {
    /// The next install, `None` at the end. Each row must come within the query deadline.
    pub async fn next(&mut self) -> Result<Option<Record>, DbError> {
        match tokio::time::timeout(self.timeout, self.cursor.next()).await {
            Ok(Ok(row)) => Ok(row.map(|r| r.public(&self.ids))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(DbError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failures_read_of_the_most_ids_fits_in_one_read() {
        let n = RECENT_ERRORS as usize;
        let sql = failures_sql(n);
        let placeholders = sql.matches('?').count();
        assert_eq!(placeholders, n + 2, "database, ids, limit");
        // Each id quoted, a database name of up to 64 characters in backticks, a 20-digit limit.
        let longest = sql.len() - placeholders + n * (schema::validate::MAX_ID_LEN + 2) + 66 + 20;
        assert!(longest <= MAX_READ_SQL, "{longest} bytes");
    }
}
