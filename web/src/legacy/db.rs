//! The ClickHouse reads of the running service's read API, over the writer's `installs_final` (one row
//! per install, its first event as `created`). Like [`crate::db`], each view is computed in as few passes
//! as possible: the counts of a view come from one `ARRAY JOIN` pass, lists ("the 20 newest") from one
//! query each. Every client value is bound with `?`; the only text formatted into SQL are constants of
//! this module and the fixed sort column and direction of [`super::params::Sort`].

use serde::Deserialize;

use super::model::{Dims, Record};
use super::params::{RecordsQuery, Scope};
use crate::db::{BindFilter, Db, DbError, Started};

/// Every install of the repo filter, whatever the period (the dashboard's `all`): binds the database,
/// repo and slug.
const ALL_INSTALLS: &str = "SELECT toUInt64(count()) FROM ?.installs_final \
    WHERE (? = '' OR repo_source = ?) AND (? = '' OR ifNull(repo_slug, '') = ?)";

/// The columns of one record, plain types (absent numbers are -1, absent text empty).
const RECORD_COLUMNS: &str = "
    execution_id, random_id, type, nsapp, status,
    toInt16(ifNull(toInt16(ct_type), -1)) AS ct_type,
    toInt64(ifNull(toInt64(disk_size), -1)) AS disk_size,
    toInt64(ifNull(toInt64(core_count), -1)) AS core_count,
    toInt64(ifNull(toInt64(ram_size), -1)) AS ram_size,
    ifNull(os_type, '') AS os_type, ifNull(os_version, '') AS os_version,
    ifNull(pve_version, '') AS pve_version, ifNull(method, '') AS method, ifNull(error, '') AS error,
    toInt16(ifNull(toInt16(exit_code), -1)) AS exit_code,
    ifNull(gpu_vendor, '') AS gpu_vendor, ifNull(gpu_model, '') AS gpu_model,
    ifNull(gpu_passthrough, '') AS gpu_passthrough, ifNull(cpu_vendor, '') AS cpu_vendor,
    ifNull(cpu_model, '') AS cpu_model, ifNull(ram_speed, '') AS ram_speed,
    toInt64(ifNull(toInt64(install_duration), -1)) AS install_duration,
    ifNull(error_category, '') AS error_category, repo_source, ifNull(repo_slug, '') AS repo_slug,
    toUInt32(started_at) AS started_at";

/// The scope filter after `FROM ?.installs_final`: period start, repo, repo, slug, slug.
const SCOPE_FILTER: &str = "started_at >= toDateTime(?) AND (? = '' OR repo_source = ?) \
    AND (? = '' OR ifNull(repo_slug, '') = ?)";

/// The filters of `/api/records` after the scope: status, type, os, app, search (each twice).
const RECORDS_FILTER: &str = "(? = '' OR status = ?) AND (? = '' OR type = ?) \
    AND (? = '' OR ifNull(os_type, '') = ?) \
    AND (? = '' OR position(lowerUTF8(nsapp), ?) > 0) AND (? = '' OR position(lowerUTF8(nsapp), ?) > 0)";

/// One row of a pass, as the legacy model reads it: installs, and the sum and count of the durations
/// of finished installs (per `app_type_status` key).
#[derive(Debug)]
pub struct DimRow {
    pub dim: String,
    pub key: String,
    pub n: u64,
    pub duration_sum: u64,
    pub duration_n: u64,
}

impl From<crate::rollup::PassRow> for DimRow {
    fn from(r: crate::rollup::PassRow) -> DimRow {
        DimRow {
            dim: r.dim,
            key: r.key,
            n: r.n,
            duration_sum: r.s0,
            duration_n: r.s1,
        }
    }
}

/// One install as ClickHouse hands it over.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct RecordRow {
    pub execution_id: String,
    pub random_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub nsapp: String,
    pub status: String,
    pub ct_type: i16,
    pub disk_size: i64,
    pub core_count: i64,
    pub ram_size: i64,
    pub os_type: String,
    pub os_version: String,
    pub pve_version: String,
    pub method: String,
    pub error: String,
    pub exit_code: i16,
    pub gpu_vendor: String,
    pub gpu_model: String,
    pub gpu_passthrough: String,
    pub cpu_vendor: String,
    pub cpu_model: String,
    pub ram_speed: String,
    pub install_duration: i64,
    pub error_category: String,
    pub repo_source: String,
    pub repo_slug: String,
    pub started_at: u32,
}

/// A failure pattern: an error signature, its failed installs, how many apps they hit and the first
/// ten of those apps (sorted, joined by `, `).
#[derive(Debug, PartialEq, Eq)]
pub struct PatternRow {
    pub pattern: String,
    pub n: u64,
    pub unique_apps: u64,
    pub apps: String,
}

/// An install's id and when it started, the first read of a two-step lookup.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct Id {
    execution_id: String,
    started_at: u32,
}

/// The ids and start times of `found`, for [`LegacyDb::rows_by_id`].
fn split(found: Vec<Id>) -> (Vec<String>, Vec<u32>) {
    found
        .into_iter()
        .map(|i| (i.execution_id, i.started_at))
        .unzip()
}

/// Adds the dimensions the passes no longer group in SQL, summed up from `app_type_status` (every
/// install of the period once, its key `nsapp\ttype\tstatus`): `status` (which carries the duration
/// sums of finished installs), `app`, `type`, `tool` (apps of type `pve`) and `addon` (type `addon`). A
/// part that is empty is not a key, as the SQL's `WHERE ifNull(d.2, '') != ''` had it.
fn derive(mut rows: Vec<DimRow>) -> Vec<DimRow> {
    use std::collections::BTreeMap;
    let mut sums: BTreeMap<(&'static str, String), (u64, u64, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.dim == "app_type_status") {
        let mut parts = r.key.splitn(3, '\t');
        let (Some(app), Some(kind), Some(status)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mut add = |dim: &'static str, key: &str, durations: bool| {
            if key.is_empty() {
                return;
            }
            let e = sums.entry((dim, key.to_owned())).or_default();
            e.0 += r.n;
            if durations {
                e.1 += r.duration_sum;
                e.2 += r.duration_n;
            }
        };
        add("status", status, true);
        add("app", app, false);
        add("type", kind, false);
        match kind {
            "pve" => add("tool", app, false),
            "addon" => add("addon", app, false),
            _ => {}
        }
    }
    for r in rows.iter_mut().filter(|r| r.dim == "app_type_status") {
        (r.duration_sum, r.duration_n) = (0, 0);
    }
    rows.extend(
        sums.into_iter()
            .map(|((dim, key), (n, sum, count))| DimRow {
                dim: dim.to_owned(),
                key,
                n,
                duration_sum: sum,
                duration_n: count,
            }),
    );
    rows
}

/// The 15 most frequent signatures of failed installs, with how many apps they hit, from the dashboard
/// pass's `pattern_app` keys (`signature\tapp`, failed installs of each).
pub fn patterns(pattern_app: &[(String, u64)]) -> Vec<PatternRow> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for (key, n) in pattern_app {
        let Some((pattern, app)) = key.rsplit_once('\t') else {
            continue;
        };
        let e = by.entry(pattern).or_default();
        e.0 += n;
        e.1.insert(app);
    }
    let mut out: Vec<PatternRow> = by
        .into_iter()
        .map(|(pattern, (n, apps))| PatternRow {
            pattern: pattern.to_owned(),
            n,
            unique_apps: apps.len() as u64,
            apps: apps.into_iter().take(10).collect::<Vec<_>>().join(", "),
        })
        .collect();
    out.sort_by(|a, b| b.n.cmp(&a.n).then_with(|| a.pattern.cmp(&b.pattern)));
    out.truncate(15);
    out
}

/// Binds the scope after the database identifier: start, repo, repo, slug, slug.
fn bind_scope(q: clickhouse::query::Query, scope: &Scope, now: i64) -> clickhouse::query::Query {
    bind_scope_from(q, scope, scope.days.since(now))
}

/// [`bind_scope`] with another start (a window of the period).
fn bind_scope_from(
    q: clickhouse::query::Query,
    scope: &Scope,
    start: i64,
) -> clickhouse::query::Query {
    let repo = scope.repo.sql_value();
    let slug = scope.slug.sql_value();
    q.bind(start).bind(repo).bind(repo).bind(slug).bind(slug)
}

fn bind_records(
    q: clickhouse::query::Query,
    r: &RecordsQuery,
    now: i64,
) -> clickhouse::query::Query {
    let (status, kind) = (r.status.sql_value(), r.kind.sql_value());
    bind_scope(q, &r.scope, now)
        .bind_filter(status)
        .bind_filter(kind)
        .bind(r.os.as_str())
        .bind(r.os.as_str())
        .bind(r.app.as_str())
        .bind(r.app.as_str())
        .bind(r.search.as_str())
        .bind(r.search.as_str())
}

/// The reads of the legacy views, on the web's [`Db`].
#[derive(Clone)]
pub struct LegacyDb {
    pub db: Db,
}

impl LegacyDb {
    async fn pass(
        &self,
        pass: &schema::rollup::Pass,
        scope: &Scope,
        now: i64,
    ) -> Result<Dims, DbError> {
        let filter = crate::rollup::Filter {
            since: scope.days.since(now),
            repo: scope.repo.sql_value(),
            slug: scope.slug.sql_value(),
            app: "",
        };
        let rows = self.db.pass(pass, filter, now).await?;
        Ok(Dims::new(derive(
            rows.into_iter().map(DimRow::from).collect(),
        )))
    }

    pub async fn dashboard_dims(&self, scope: &Scope, now: i64) -> Result<Dims, DbError> {
        let (mut dims, all) = tokio::try_join!(
            self.pass(&schema::rollup::LEGACY_DASHBOARD, scope, now),
            self.all_installs(scope, now)
        )?;
        dims.set_single("all", "all", all);
        Ok(dims)
    }

    /// Every install of the repo filter, whatever the period (the dashboard's `all`): from the rollups
    /// of the dashboard pass (`app_type_status` has every install once) where they can be used, else
    /// counted.
    async fn all_installs(&self, scope: &Scope, now: i64) -> Result<u64, DbError> {
        let repo = scope.repo.sql_value();
        let slug = scope.slug.sql_value();
        let filter = crate::rollup::Filter {
            since: 0,
            repo,
            slug,
            app: "",
        };
        let rolled = self
            .db
            .installs_of_all_time(
                &schema::rollup::LEGACY_DASHBOARD,
                "app_type_status",
                filter,
                now,
            )
            .await?;
        if let Some(all) = rolled {
            return Ok(all);
        }
        let all = self
            .db
            .raw(ALL_INSTALLS)
            .bind(self.db.identifier())
            .bind_filter(repo)
            .bind_filter(slug)
            .fetch_one::<u64>();
        self.db.timed("legacy_all", all).await
    }

    pub async fn errors_dims(&self, scope: &Scope, now: i64) -> Result<Dims, DbError> {
        self.pass(&schema::rollup::LEGACY_ERRORS, scope, now).await
    }

    /// The newest installs of the scope (`failures_only`: failed and aborted ones), newest first.
    pub async fn newest(
        &self,
        scope: &Scope,
        now: i64,
        failures_only: bool,
        limit: u64,
    ) -> Result<Vec<RecordRow>, DbError> {
        // The ids first (two columns of every install of the period), then only those installs in full.
        let sql = format!(
            "SELECT execution_id, toUInt32(started_at) AS started_at FROM ?.installs_final WHERE {SCOPE_FILTER} \
             AND (? = 0 OR status IN ('failed', 'aborted')) \
             ORDER BY started_at DESC, execution_id LIMIT ?"
        );
        let mut found = Vec::new();
        for start in crate::db::windows(scope.days.since(now), now) {
            let q = bind_scope_from(self.db.query(&sql), scope, start)
                .bind(u8::from(failures_only))
                .bind(limit);
            found = self.db.timed("legacy_newest", q.fetch_all::<Id>()).await?;
            if found.len() as u64 >= limit {
                break;
            }
        }
        let (ids, started) = split(found);
        let mut rows = self
            .rows_by_id("legacy_newest_rows", &ids, &started)
            .await?;
        // An install can turn from failed to succeeded between the two reads.
        rows.retain(|r| !failures_only || matches!(r.status.as_str(), "failed" | "aborted"));
        Ok(rows)
    }

    /// One page of `/api/records`: the total, then the page's ids, then those installs in full.
    pub async fn records(
        &self,
        r: &RecordsQuery,
        now: i64,
    ) -> Result<(u64, Vec<RecordRow>), DbError> {
        let count = format!(
            "SELECT toUInt64(count()) FROM ?.installs_final WHERE {SCOPE_FILTER} AND {RECORDS_FILTER}"
        );
        let total = self
            .db
            .timed(
                "legacy_records_count",
                bind_records(self.db.query(&count), r, now).fetch_one::<u64>(),
            )
            .await?;
        let (column, direction) = (r.sort.column.sql(), r.sort.direction());
        // Sort column and direction are constants of `SortColumn`, never request text.
        let page = format!(
            "SELECT execution_id, toUInt32(started_at) AS started_at FROM ?.installs_final \
             WHERE {SCOPE_FILTER} AND {RECORDS_FILTER} \
             ORDER BY {column} {direction}, execution_id {direction} LIMIT ? OFFSET ?"
        );
        let offset = u64::from(r.page - 1) * u64::from(r.limit);
        let (ids, started) = split(
            self.db
                .timed(
                    "legacy_records_page",
                    bind_records(self.db.query(&page), r, now)
                        .bind(u64::from(r.limit))
                        .bind(offset)
                        .fetch_all::<Id>(),
                )
                .await?,
        );
        let rows = self
            .rows_by_id("legacy_records_rows", &ids, &started)
            .await?;
        Ok((total, rows))
    }

    /// The installs of `ids` that started at one of `started`, in the order of `ids` (an id not found
    /// is left out).
    async fn rows_by_id(
        &self,
        name: &'static str,
        ids: &[String],
        started: &[u32],
    ) -> Result<Vec<RecordRow>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows: Vec<RecordRow> = self
            .db
            .fetch_by_ids(name, RECORD_COLUMNS, ids, Started::At(started))
            .await?;
        rows.sort_by_key(|row| ids.iter().position(|id| *id == row.execution_id));
        Ok(rows)
    }

    /// Today's counts per final status of one repo, for the `/metrics` gauges.
    pub async fn status_counts(
        &self,
        scope: &Scope,
        now: i64,
    ) -> Result<Vec<(String, u64)>, DbError> {
        #[derive(Debug, clickhouse::Row, Deserialize)]
        struct Row {
            status: String,
            n: u64,
        }
        let sql = format!(
            "SELECT status, toUInt64(count()) AS n FROM ?.installs_final WHERE {SCOPE_FILTER} GROUP BY status"
        );
        let rows = self
            .db
            .timed(
                "legacy_status_counts",
                bind_scope(self.db.query(&sql), scope, now).fetch_all::<Row>(),
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
    }

    /// Converts a row to the record shape with public ids.
    pub fn record(&self, row: RecordRow) -> Record {
        Record::new(row, self.db.ids())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dim: &str, key: &str, n: u64, duration_sum: u64, duration_n: u64) -> DimRow {
        DimRow {
            dim: dim.into(),
            key: key.into(),
            n,
            duration_sum,
            duration_n,
        }
    }

    /// `status`, `app`, `type`, `tool` and `addon` add up from `app_type_status`, the durations go to
    /// `status` only, and an empty part is no key.
    #[test]
    fn patterns_count_failed_installs_and_apps_per_signature() {
        let keys = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let mut rows = vec![
            ("sig a\tz-app", 1),
            ("sig a\ta-app", 2),
            ("tab\tin sig\tb", 3),
        ];
        for i in 0..12 {
            rows.push((Box::leak(format!("many\tapp{i:02}").into_boxed_str()), 1));
        }
        for i in 0..20 {
            rows.push((Box::leak(format!("small {i:02}\tx").into_boxed_str()), 1));
        }
        let got = patterns(&keys(&rows));
        assert_eq!(got.len(), 15);
        assert_eq!(
            got[0],
            PatternRow {
                pattern: "many".into(),
                n: 12,
                unique_apps: 12,
                apps: (0..10)
                    .map(|i| format!("app{i:02}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        );
        assert_eq!(
            (
                got[1].pattern.as_str(),
                got[1].n,
                got[1].unique_apps,
                got[1].apps.as_str()
            ),
            ("sig a", 3, 2, "a-app, z-app")
        );
        assert_eq!(
            (got[2].pattern.as_str(), got[2].apps.as_str()),
            ("tab\tin sig", "b")
        );
        // Ties by signature.
        assert_eq!(got[3].pattern, "small 00");
        assert_eq!(got[14].pattern, "small 11");
    }

    #[test]
    fn derived_dimensions_sum_up_app_type_status() {
        let rows = derive(vec![
            row("os", "debian", 9, 0, 0),
            row("app_type_status", "docker\tlxc\tsuccess", 5, 500, 5),
            row("app_type_status", "docker\tlxc\tfailed", 2, 60, 1),
            row("app_type_status", "kernel\tpve\tsuccess", 1, 10, 1),
            row("app_type_status", "hass\taddon\tinstalling", 3, 0, 0),
            row("app_type_status", "\tvm\tsuccess", 1, 7, 1),
        ]);
        let dims = Dims::new(rows);
        let expected = [
            ("status", "success", 7),
            ("status", "failed", 2),
            ("status", "installing", 3),
            ("app", "docker", 7),
            ("app", "kernel", 1),
            ("app", "hass", 3),
            ("type", "lxc", 7),
            ("type", "pve", 1),
            ("type", "addon", 3),
            ("type", "vm", 1),
            ("tool", "kernel", 1),
            ("addon", "hass", 3),
            ("os", "debian", 9),
        ];
        for (dim, key, n) in expected {
            assert_eq!(dims.count(dim, key), n, "{dim} {key}");
        }
        // No other key: each dimension's total is the sum of the keys above.
        for dim in ["status", "app", "type", "tool", "addon"] {
            let sum: u64 = expected.iter().filter(|e| e.0 == dim).map(|e| e.2).sum();
            assert_eq!(dims.total(dim), sum, "{dim}");
        }
        assert_eq!(dims.count("app_type_status", "docker\tlxc\tsuccess"), 5);
        assert_eq!(dims.duration, (577, 8));
    }
}
