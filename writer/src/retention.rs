//! Retention (contract §7): off unless `RETENTION_ENABLED=true`, as the running service keeps its data
//! indefinitely and says so. When on, an install whose first event is older than `RETENTION_DAYS` is
//! deleted whole (never by event day: an install that started before the cutoff goes with all its
//! events, one that started after stays with all of them) from every store this writer writes, at most
//! `RETENTION_MAX_PER_RUN` installs or records per run (the next run goes on). A PocketBase collection
//! this fleet did not create is never touched unless `RETENTION_FOREIGN_COLLECTION=true`.
//!
//! The stores do the deleting ([`crate::clickhouse::ClickHouseSink::retention`],
//! [`crate::pocketbase::PocketBaseSink::retention`]); this module holds the policy, one pass per store as
//! the configuration says, and the loop that runs a pass every `RETENTION_INTERVAL_SECS`.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clickhouse::{ChError, ClickHouseSink};
use crate::config::Config;
use crate::metrics;
use crate::pocketbase::{PbError, PbRetention, PocketBaseSink};

/// What retention deletes, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Installs whose first event is older than this many days go.
    pub days: u32,
    /// Most installs (ClickHouse) or records (PocketBase) per run.
    pub max_per_run: usize,
    /// True when the operator allowed deleting from a PocketBase collection this fleet did not create.
    pub foreign_collection: bool,
}

impl Policy {
    /// The first event time before which an install goes.
    pub fn cutoff(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - time::Duration::days(i64::from(self.days))
    }
}

/// One pass over ClickHouse as `config` says: `None` when retention is off, else the installs whose
/// deletion this pass started.
pub async fn clickhouse_once(
    config: &Config,
    sink: &ClickHouseSink,
    now: OffsetDateTime,
) -> Result<Option<usize>, ChError> {
    match config.retention() {
        Some(policy) => sink.retention(now, &policy).await.map(Some),
        None => Ok(None),
    }
}

/// One pass over PocketBase as `config` says: `None` when retention is off.
pub async fn pocketbase_once(
    config: &Config,
    sink: &PocketBaseSink,
    now: OffsetDateTime,
) -> Result<Option<PbRetention>, PbError> {
    match config.retention() {
        Some(policy) => sink.retention(now, &policy).await.map(Some),
        None => Ok(None),
    }
}

/// Runs `pass` with the policy at once and then every `RETENTION_INTERVAL_SECS` while `active` is true
/// (the PocketBase sink's lease), until the task is aborted. `pass` returns how many installs or records
/// it deleted. Nothing is spawned when retention is off.
pub fn spawn<F, Fut, E>(
    config: &Config,
    sink: &'static str,
    active: watch::Receiver<bool>,
    pass: F,
) -> Option<JoinHandle<()>>
where
    F: Fn(OffsetDateTime, Policy) -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let policy = config.retention()?;
    let every: Duration = config.retention_interval();
    tracing::info!(
        sink,
        days = policy.days,
        max_per_run = policy.max_per_run,
        "retention on"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if !*active.borrow() {
                continue;
            }
            match pass(OffsetDateTime::now_utc(), policy).await {
                Ok(deleted) => {
                    ::metrics::counter!(metrics::RETENTION_DELETED, "sink" => sink)
                        .increment(deleted as u64);
                }
                Err(e) => {
                    tracing::warn!(sink, error = %e, "retention failed, next try at the next interval")
                }
            }
        }
    }))
}
