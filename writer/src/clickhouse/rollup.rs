//! The rollup job (schema version 6): every `ROLLUP_INTERVAL_SECS` it stores, for each pass of
//! `schema::rollup` and each complete UTC day that has no snapshot at the day's current change count,
//! the day's answer in `day_rollups`, and then lists the snapshot in `day_rollup_index` — only for the
//! days whose change count did not move while it was taken, on which no install merged at read time
//! started, and only while no deletion of retention is running. A snapshot that is not listed is never
//! read; one that is listed is read only while its day's change count stays the same (see
//! `schema::rollup`), so the job can stop anywhere, run twice or on two writers at once, and every read
//! stays exact. A day is taken at most once per change count; older snapshots of a day stay in
//! `day_rollups` unread.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clickhouse::sql::Identifier;
use tokio::task::JoinHandle;

use ::schema::rollup::{self, Changes, Listed, Pass, PASSES, SPAN_DAYS};

use super::{ChError, ClickHouseSink};

/// Most days one snapshot query covers (bounded memory and time per query).
const BATCH_DAYS: usize = 31;

/// What one rollup run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rolled {
    /// Days of passes taken and listed.
    pub listed: u64,
    /// Days of passes taken but not listed (their day changed meanwhile); the next run takes them again.
    pub dropped: u64,
    /// Spans of passes summed from their days and listed.
    pub spans: u64,
}

#[derive(clickhouse::Row, serde::Serialize)]
struct IndexRow<'a> {
    pass: &'a str,
    day: u32,
    days: u32,
    changes: u64,
    snapshot: u64,
}

impl ClickHouseSink {
    /// The change count of every day.
    async fn day_changes(&self) -> Result<Changes, ChError> {
        let rows: Vec<(u32, u64)> = self
            .client
            .query(rollup::BLOCKS_SQL)
            .bind(Identifier(&self.database))
            .fetch_all()
            .await?;
        Ok(Changes::new(rows))
    }

    /// The first day of an install merged at read time (`u32::MAX`: none).
    async fn fresh_day(&self) -> Result<u32, ChError> {
        Ok(self
            .client
            .query(rollup::FRESH_SQL)
            .bind(Identifier(&self.database))
            .bind(Identifier(&self.database))
            .bind(Identifier(&self.database))
            .fetch_one()
            .await?)
    }

    /// True while a mutation (a deletion of retention) of `events` or `installs_settled` runs.
    async fn deleting(&self) -> Result<bool, ChError> {
        let pending: u64 = self
            .client
            .query(
                "SELECT count() FROM system.mutations WHERE database = ? \
                 AND table IN ('events', 'installs_settled') AND is_done = 0",
            )
            .bind(&self.database)
            .fetch_one()
            .await?;
        Ok(pending > 0)
    }

    /// The listed snapshots of `pass` from `from` on.
    async fn listed(&self, pass: &Pass, from: u32) -> Result<Listed, ChError> {
        let rows: Vec<(u32, u32, u64, u64)> = self
            .client
            .query(rollup::INDEX_SQL)
            .bind(Identifier(&self.database))
            .bind(pass.name)
            .bind(from)
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(|(day, days, changes, snapshot)| ((day, days, changes), snapshot))
            .collect())
    }

    /// Lists `rows` in `day_rollup_index`.
    async fn list(&self, rows: &[IndexRow<'_>]) -> Result<(), ChError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert(&format!("`{}`.day_rollup_index", self.database))?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Takes the snapshots missing at the days' current change counts (see the module). Does nothing
    /// before schema version 6 or while retention deletes.
    pub async fn rollup(&self) -> Result<Rolled, ChError> {
        let mut done = Rolled::default();
        if !self.schema_at_least(6) {
            return Ok(done);
        }
        let (now, first, settled): (u32, u32, u64) = self
            .client
            .query(
                "SELECT toUInt32(now()), toUInt32(intDiv(toUInt32(min(started_at)), 86400)), count() \
                 FROM ?.installs_settled",
            )
            .bind(Identifier(&self.database))
            .fetch_one()
            .await?;
        if settled == 0 || self.deleting().await? {
            return Ok(done);
        }
        let now = i64::from(now);
        // From the first day of its span: a span's days before the first install are empty snapshots.
        let first = first - first % SPAN_DAYS;
        let changes = self.day_changes().await?;
        let fresh = self.fresh_day().await?;
        let mut days: Vec<u32> = (first..fresh)
            .take_while(|&d| rollup::complete(d, now))
            .collect();
        // The newest days first: the short periods, read most, gain first.
        days.reverse();
        for pass in PASSES {
            let listed = self.listed(pass, first).await?;
            let stale: Vec<u32> = days
                .iter()
                .copied()
                .filter(|&d| !listed.contains_key(&(d, 1, changes.of(d))))
                .collect();
            for batch in runs(&stale) {
                let (taken, dropped) = self.take(pass, &batch, &changes, now).await?;
                done.listed += taken;
                done.dropped += dropped;
            }
            // The spans whose days are all listed now.
            let listed = self.listed(pass, first).await?;
            let complete: HashSet<u32> = days.iter().copied().collect();
            let mut span = first;
            while complete.contains(&(span + SPAN_DAYS - 1)) {
                let last = span + SPAN_DAYS - 1;
                if !listed.contains_key(&(span, SPAN_DAYS, changes.of(last))) {
                    let parts: Option<Vec<(u32, u64)>> = (span..=last)
                        .map(|d| listed.get(&(d, 1, changes.of(d))).map(|&id| (d, id)))
                        .collect();
                    if let Some(parts) = parts {
                        if self.sum_span(pass, span, &parts, &changes).await? {
                            done.spans += 1;
                        }
                    }
                }
                span += SPAN_DAYS;
            }
        }
        Ok(done)
    }

    /// Sums the day snapshots `parts` of the span from `span` into one snapshot and lists it, unless
    /// its last day changed meanwhile. True when listed.
    async fn sum_span(
        &self,
        pass: &Pass,
        span: u32,
        parts: &[(u32, u64)],
        before: &Changes,
    ) -> Result<bool, ChError> {
        let last = span + SPAN_DAYS - 1;
        let snapshot = uuid::Uuid::now_v7().as_u64_pair().1 | 1;
        let mut query = self
            .client
            .query(&rollup::span_sql(parts.len()))
            .bind(Identifier(&self.database))
            .bind(pass.name)
            .bind(snapshot)
            .bind(span)
            .bind(Identifier(&self.database))
            .bind(pass.name);
        for &(day, id) in parts {
            query = query.bind(day).bind(id);
        }
        query.execute().await?;
        let after = self.day_changes().await?;
        if after.of(last) != before.of(last) || self.deleting().await? {
            return Ok(false);
        }
        self.list(&[IndexRow {
            pass: pass.name,
            day: span,
            days: SPAN_DAYS,
            changes: before.of(last),
            snapshot,
        }])
        .await?;
        Ok(true)
    }

    /// Takes one snapshot of `pass` for the consecutive `days` (newest first) and lists the days that
    /// did not change meanwhile.
    async fn take(
        &self,
        pass: &Pass,
        days: &[u32],
        before: &Changes,
        now: i64,
    ) -> Result<(u64, u64), ChError> {
        let (Some(&last), Some(&first)) = (days.first(), days.last()) else {
            return Ok((0, 0));
        };
        // Random bits of a v7 UUID, never 0 (the readers' placeholder pair is `(0, 0)`).
        let snapshot = uuid::Uuid::now_v7().as_u64_pair().1 | 1;
        let from = first.saturating_mul(rollup::DAY as u32);
        let to = last.saturating_add(1).saturating_mul(rollup::DAY as u32);
        let mut query = self
            .client
            .query(&pass.rollup_sql())
            // The days' filter reaches the settled rows' sorting key inside `installs_final`.
            .with_option("enable_optimize_predicate_expression", "1")
            .bind(Identifier(&self.database))
            .bind(pass.name)
            .bind(snapshot)
            .bind(Identifier(&self.database))
            .bind(from)
            .bind(to);
        for _ in 0..6 {
            query = query.bind("");
        }
        if pass.stuck {
            query = query.bind(now - rollup::STUCK_AFTER_SECS);
        }
        query.execute().await?;
        let after = self.day_changes().await?;
        let fresh = self.fresh_day().await?;
        if self.deleting().await? {
            return Ok((0, days.len() as u64));
        }
        let keep: Vec<IndexRow<'_>> = days
            .iter()
            .filter(|&&d| d < fresh && after.of(d) == before.of(d))
            .map(|&day| IndexRow {
                pass: pass.name,
                day,
                days: 1,
                changes: before.of(day),
                snapshot,
            })
            .collect();
        self.list(&keep).await?;
        let listed = keep.len() as u64;
        Ok((listed, days.len() as u64 - listed))
    }
}

/// `days` (descending) cut into runs of consecutive days of at most [`BATCH_DAYS`].
fn runs(days: &[u32]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    for &d in days {
        match out.last_mut() {
            Some(run) if run.len() < BATCH_DAYS && run.last() == Some(&(d + 1)) => run.push(d),
            _ => out.push(vec![d]),
        }
    }
    out
}

/// Runs the rollup every `every` until aborted; a failed run is retried at the next tick.
pub fn spawn(sink: ClickHouseSink, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = Instant::now();
            match sink.rollup().await {
                Ok(done) => {
                    ::metrics::counter!(crate::metrics::ROLLUP_DAYS).increment(done.listed);
                    if done.listed + done.dropped + done.spans > 0 {
                        tracing::info!(
                            listed = done.listed,
                            dropped = done.dropped,
                            spans = done.spans,
                            seconds = started.elapsed().as_secs_f64(),
                            "rollup: days of passes taken"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rollup failed, next try at the next interval")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_consecutive_and_bounded() {
        let days: Vec<u32> = (100..140).rev().chain([90, 89, 80]).collect();
        let r = runs(&days);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].len(), BATCH_DAYS);
        assert_eq!((r[0][0], *r[0].last().unwrap()), (139, 109));
        assert_eq!((r[1][0], *r[1].last().unwrap()), (108, 100));
        assert_eq!(r[2], vec![90, 89]);
        assert_eq!(r[3], vec![80]);
        assert!(runs(&[]).is_empty());
    }
}
