//! Reads a pass of `schema::rollup` for a period: the whole complete days that have a snapshot at their
//! current change count from `day_rollups`, every other second of the period from `installs_final`, both
//! at once, summed per key. Without the rollup tables (a writer before schema version 6), or with
//! `ROLLUP_READS=false`, every day is read from `installs_final`. The answer is the same either way.

use std::collections::HashMap;

use schema::rollup::{self, Changes, Pass, Plan};
use serde::Deserialize;

use crate::db::{BindFilter, Db, DbError};
use crate::metrics;

/// One row of a pass: a key of a dimension, its installs and its sums (see each pass for what they mean).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct PassRow {
    pub dim: String,
    pub key: String,
    pub n: u64,
    pub s0: u64,
    pub s1: u64,
    pub s2: u64,
    pub s3: u64,
    pub s4: u64,
    pub s5: u64,
    pub s6: u64,
    pub s7: u64,
    /// The earliest start (Unix seconds) of the key's installs.
    pub first: u32,
}

impl PassRow {
    fn add(&mut self, o: &PassRow) {
        self.n += o.n;
        self.s0 += o.s0;
        self.s1 += o.s1;
        self.s2 += o.s2;
        self.s3 += o.s3;
        self.s4 += o.s4;
        self.s5 += o.s5;
        self.s6 += o.s6;
        self.s7 += o.s7;
        self.first = self.first.min(o.first);
    }
}

/// The filters of a pass read: the period's first second, repo, slug and app (empty: every one).
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub since: i64,
    pub repo: &'a str,
    pub slug: &'a str,
    pub app: &'a str,
}

/// Every second from `since` on, from rows.
fn rows_only(since: i64) -> Plan {
    Plan {
        snapshots: Vec::new(),
        ranges: vec![(u32::try_from(since.max(0)).unwrap_or(u32::MAX), u32::MAX)],
    }
}

impl Db {
    /// Where each day of a read comes from (see the module).
    async fn plan(&self, pass: &Pass, since: i64, now: i64) -> Plan {
        let first = rollup::day_of(since.max(0) + rollup::DAY - 1);
        if !self.rollup_reads() || !rollup::complete(first, now) {
            return rows_only(since);
        }
        let blocks = self.query(rollup::BLOCKS_SQL).fetch_all::<(u32, u64)>();
        let index = self
            .query(rollup::INDEX_SQL)
            .bind(pass.name)
            .bind(first)
            .fetch_all::<(u32, u32, u64, u64)>();
        let fresh = self
            .query(rollup::FRESH_SQL)
            .bind(self.identifier())
            .bind(self.identifier())
            .fetch_one::<u32>();
        let found = tokio::try_join!(
            self.timed("rollup_blocks", blocks),
            self.timed("rollup_index", index),
            self.timed("rollup_fresh", fresh)
        );
        match found {
            Ok((blocks, index, fresh)) => {
                let snapshots: rollup::Listed = index
                    .into_iter()
                    .map(|(day, days, changes, snapshot)| ((day, days, changes), snapshot))
                    .collect();
                rollup::plan(since, now, fresh, &Changes::new(blocks), &snapshots)
            }
            Err(e) => {
                tracing::debug!(error = %e, "rollups unreadable, every day from installs_final");
                rows_only(since)
            }
        }
    }

    /// The rows of `pass` for the installs that started from `filter.since` on, per `(dim, key)`.
    pub async fn pass(
        &self,
        pass: &Pass,
        filter: Filter<'_>,
        now: i64,
    ) -> Result<Vec<PassRow>, DbError> {
        let plan = self.plan(pass, filter.since, now).await;
        let mut read = self.query(&pass.read_sql(plan.ranges.len()));
        for &(from, to) in &plan.ranges {
            read = read.bind(from).bind(to);
        }
        read = read
            .bind_filter(filter.repo)
            .bind_filter(filter.slug)
            .bind_filter(filter.app);
        if pass.stuck {
            read = read.bind(now - rollup::STUCK_AFTER_SECS);
        }
        let rows = self.timed(pass.name, read.fetch_all::<PassRow>());
        if plan.snapshots.is_empty() {
            return rows.await;
        }
        let app = if pass.per_app { filter.app } else { "" };
        let mut taken = self
            .query(&rollup::snapshots_sql(plan.snapshots.len()))
            .bind(pass.name)
            .bind(app)
            .bind_filter(filter.repo)
            .bind_filter(filter.slug);
        for &(day, snapshot) in &plan.snapshots {
            taken = taken.bind(day).bind(snapshot);
        }
        let taken = self.timed("rollup_snapshots", taken.fetch_all::<PassRow>());
        let (rows, taken) = tokio::try_join!(rows, taken)?;
        ::metrics::counter!(metrics::ROLLUP_DAYS, "pass" => pass.name)
            .increment(plan.snapshots.len() as u64);
        Ok(sum(rows, taken))
    }
}

impl Db {
    /// Every install of the repo and slug filters, whatever the period, from the snapshots of `pass`
    /// (whose dimension `dim` has every install once) and the rows of the seconds they do not cover;
    /// `None` when no snapshot can be used (the caller then counts the rows).
    pub async fn installs_of_all_time(
        &self,
        pass: &Pass,
        dim: &str,
        filter: Filter<'_>,
        now: i64,
    ) -> Result<Option<u64>, DbError> {
        let plan = self.plan(pass, 0, now).await;
        if plan.snapshots.is_empty() {
            return Ok(None);
        }
        let mut taken = self
            .query(&format!(
                "SELECT toUInt64(sum(n)) FROM ?.day_rollups WHERE pass = ? AND nsapp = '' AND dim = ? \
                 AND (? = '' OR repo_source = ?) AND (? = '' OR repo_slug = ?) AND {}",
                rollup::snapshots_in(plan.snapshots.len())
            ))
            .bind(pass.name)
            .bind(dim)
            .bind_filter(filter.repo)
            .bind_filter(filter.slug);
        for &(day, snapshot) in &plan.snapshots {
            taken = taken.bind(day).bind(snapshot);
        }
        let mut rows = self.query(&format!(
            "SELECT toUInt64(count()) FROM ?.installs_final WHERE ({}) \
             AND (? = '' OR repo_source = ?) AND (? = '' OR ifNull(repo_slug, '') = ?)",
            rollup::ranges_sql(plan.ranges.len())
        ));
        for &(from, to) in &plan.ranges {
            rows = rows.bind(from).bind(to);
        }
        rows = rows.bind_filter(filter.repo).bind_filter(filter.slug);
        let (taken, rows) = tokio::try_join!(
            self.timed("rollup_all_snapshots", taken.fetch_one::<u64>()),
            self.timed("rollup_all_rows", rows.fetch_one::<u64>())
        )?;
        Ok(Some(taken + rows))
    }
}

/// The rows of both parts, summed per `(dim, key)`.
fn sum(rows: Vec<PassRow>, more: Vec<PassRow>) -> Vec<PassRow> {
    let mut out: HashMap<(String, String), PassRow> = HashMap::with_capacity(rows.len());
    for r in rows.into_iter().chain(more) {
        match out.get_mut(&(r.dim.clone(), r.key.clone())) {
            Some(e) => e.add(&r),
            None => {
                out.insert((r.dim.clone(), r.key.clone()), r);
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dim: &str, key: &str, n: u64, s0: u64) -> PassRow {
        PassRow {
            dim: dim.into(),
            key: key.into(),
            n,
            s0,
            s1: 1,
            s2: 0,
            s3: 0,
            s4: 0,
            s5: 0,
            s6: 0,
            s7: 2,
            first: s0 as u32,
        }
    }

    #[test]
    fn both_parts_sum_per_key() {
        let mut out = sum(
            vec![row("status", "success", 2, 10), row("app", "a", 1, 0)],
            vec![
                row("status", "success", 3, 5),
                row("status", "failed", 1, 0),
            ],
        );
        out.sort_by(|a, b| (&a.dim, &a.key).cmp(&(&b.dim, &b.key)));
        let got: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.dim.as_str(),
                    r.key.as_str(),
                    r.n,
                    r.s0,
                    r.s1,
                    r.s7,
                    r.first,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("app", "a", 1, 0, 1, 2, 0),
                ("status", "failed", 1, 0, 1, 2, 0),
                ("status", "success", 5, 15, 2, 4, 5),
            ]
        );
    }
}
