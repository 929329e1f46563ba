//! The passes of the dashboards and their per-day rollups, shared by the web (which reads them) and the
//! ClickHouse writer (which keeps the rollups).
//!
//! A pass counts the installs of `installs_final` per key of several dimensions at once (one `ARRAY JOIN`)
//! and sums eight numbers per key. Every figure of a pass is a sum over installs, so the answer for a
//! period is the sum of the answers for its days. The writer stores, per pass and UTC day, the answer of
//! that day's installs per repo, slug and (for the app page) app: a snapshot in `day_rollups`, listed in
//! `day_rollup_index` with the day's change count when it was taken. A day's change count grows with
//! every insert into `installs_settled` (and every deletion of retention) that can change the day
//! ([`Changes`]). A reader takes a whole day from a snapshot only while the day's change count is still
//! the snapshot's and no install merged at read time started on or before that day; every other day it
//! reads from `installs_final`.
//! So the answer is the same as a pass over `installs_final` alone, at every moment.
//!
//! Only SQL text of this module is formatted into statements; every value is bound with `?`.

/// How many sums a pass computes per key (unused ones are zeros).
pub const SUMS: usize = 8;

/// Seconds of a UTC day.
pub const DAY: i64 = 86_400;

/// Installs not final this long after their first event count as stuck (the `stuck` dimensions).
pub const STUCK_AFTER_SECS: i64 = 3600;

/// One pass: which columns of `installs_final` it reads, its dimensions and its sums. Every row of a pass
/// also carries `first`, the earliest start of its key's installs.
#[derive(Debug)]
pub struct Pass {
    /// Its name in `day_rollups.pass`.
    pub name: &'static str,
    /// Whether its rollups are kept per app (the app page filters on one app).
    pub per_app: bool,
    /// Whether its dimensions bind the cut-off of stuck installs (one `?`, the last of the pass).
    pub stuck: bool,
    columns: &'static str,
    dims: &'static str,
    sums: &'static str,
}

/// A pass over `installs_final`: `{keys}` and `{group}` are empty for a read and the snapshot's keys for
/// a rollup; `{range}` is one or more start-time ranges. Binds, in order: `{keys}`'s, the database, two
/// per range, repo twice, slug twice, app twice, then the stuck cut-off if the pass has one.
const TEMPLATE: &str = "
SELECT {keys}toString(d.1) AS dim, toString(ifNull(d.2, '')) AS key, toUInt64(count()) AS n, {sums},
    toUInt32(min(toUInt32(started_at))) AS first
FROM (
    SELECT {columns}, repo_source, ifNull(repo_slug, '') AS rollup_slug
    FROM ?.installs_final
    WHERE ({range}) AND (? = '' OR repo_source = ?) AND (? = '' OR ifNull(repo_slug, '') = ?)
        AND (? = '' OR nsapp = ?)
)
ARRAY JOIN [{dims}] AS d
WHERE ifNull(d.2, '') != ''
GROUP BY {group}dim, key";

/// A rollup's keys: pass name and snapshot id (bound), UTC day, repo, slug and app.
const KEYS: &str = "toString(?) AS rollup_pass, toUInt64(?) AS rollup_snapshot, \
toUInt32(intDiv(toUInt32(started_at), 86400)) AS rollup_day, repo_source AS rollup_repo, \
rollup_slug AS rollup_repo_slug, {app} AS rollup_app, ";

const GROUP: &str =
    "rollup_pass, rollup_snapshot, rollup_day, rollup_repo, rollup_repo_slug, rollup_app, ";

/// No sums.
const NO_SUMS: &str =
    "toUInt64(0) AS s0, toUInt64(0) AS s1, toUInt64(0) AS s2, toUInt64(0) AS s3, \
toUInt64(0) AS s4, toUInt64(0) AS s5, toUInt64(0) AS s6, toUInt64(0) AS s7";

/// The columns of the web's API passes.
const API_COLUMNS: &str = "status, nsapp, type, is_final, core_count, ram_size, disk_size, duration, started_at,
        exit_code, error_category, error_signature,
        toString(toDate(started_at)) AS day,
        ifNull(os_type, 'unknown') AS os,
        ifNull(pve_version, 'unknown') AS pve,
        ifNull(method, 'unknown') AS install_method,
        ifNull(cpu_vendor, 'unknown') AS cpu,
        ifNull(gpu_vendor, 'unknown') AS gpu,
        if(status IN ('failed', 'aborted', 'unknown'), ifNull(error_category, 'unknown'), '') AS category,
        multiIf(is_final = 0 OR isNull(duration), '', duration < 60, '0-1m', duration < 120, '1-2m',
                duration < 300, '2-5m', duration < 600, '5-10m', duration < 1800, '10-30m', '30m+') AS duration_bucket";

/// Per-day sums of resources and durations (the averages of the resource trends).
const API_SUMS: &str = "
    toUInt64(sum(if(d.1 = 'day', ifNull(core_count, 0), 0))) AS s0,
    toUInt64(sum(if(d.1 = 'day' AND isNotNull(core_count), 1, 0))) AS s1,
    toUInt64(sum(if(d.1 = 'day', ifNull(ram_size, 0), 0))) AS s2,
    toUInt64(sum(if(d.1 = 'day' AND isNotNull(ram_size), 1, 0))) AS s3,
    toUInt64(sum(if(d.1 = 'day', ifNull(disk_size, 0), 0))) AS s4,
    toUInt64(sum(if(d.1 = 'day' AND isNotNull(disk_size), 1, 0))) AS s5,
    toUInt64(sum(if(d.1 = 'day' AND is_final = 1, ifNull(duration, 0), 0))) AS s6,
    toUInt64(sum(if(d.1 = 'day' AND is_final = 1 AND isNotNull(duration), 1, 0))) AS s7";

macro_rules! api_common {
    () => {
        "('status', status), ('app', nsapp), ('app_status', concat(status, '|', nsapp)), \
    ('category', category), ('day', day), ('day_status', concat(day, '|', status))"
    };
}

macro_rules! api_failures {
    () => {
        "
    ('stuck', if(is_final = 0 AND started_at < toDateTime(?), 'stuck', '')),
    ('timed_out', if(status = 'unknown' AND error_category = 'timeout', 'timed_out', '')),
    ('exit_code', if(status IN ('failed', 'aborted', 'unknown') AND isNotNull(exit_code), toString(exit_code), '')),
    ('signature', if(status IN ('failed', 'aborted', 'unknown'), ifNull(error_signature, ''), '')),
    ('signature_day', if(status IN ('failed', 'aborted', 'unknown') AND isNotNull(error_signature), concat(day, '|', error_signature), '')),
    ('type', type), ('type_status', concat(type, '|', status)),
    ('category_app', if(category != '', concat(category, '|', nsapp), ''))"
    };
}

/// `/api/dashboard`: distributions and resource trends.
pub const API_OVERVIEW: Pass = Pass {
    name: "api_overview",
    per_app: false,
    stuck: false,
    columns: API_COLUMNS,
    dims: concat!(
        api_common!(),
        ", ('type', type), ('os', os), ('pve', pve), ('method', install_method), \
    ('cpu', cpu), ('gpu', gpu), ('duration', duration_bucket)"
    ),
    sums: API_SUMS,
};

/// `/api/errors`: exit codes, signatures, stuck installs.
pub const API_FAILURES: Pass = Pass {
    name: "api_failures",
    per_app: false,
    stuck: true,
    columns: API_COLUMNS,
    dims: concat!(api_common!(), ", ", api_failures!()),
    sums: NO_SUMS,
};

/// `/api/apps/{app}`: both, minus the hardware distributions.
pub const API_APP: Pass = Pass {
    name: "api_app",
    per_app: true,
    stuck: true,
    columns: API_COLUMNS,
    dims: concat!(
        api_common!(),
        ", ('os', os), ('pve', pve), ",
        api_failures!()
    ),
    sums: NO_SUMS,
};

/// The columns of the legacy passes.
const LEGACY_COLUMNS: &str =
    "status, nsapp, type, is_final, duration, started_at, exit_code, error_category,
        error_signature, os_type, method, pve_version, gpu_vendor, gpu_passthrough, repo_slug,
        status IN ('failed', 'aborted') AS bad,
        status IN ('success', 'failed', 'aborted') AS fin,
        toString(intDiv(toUInt32(started_at), 86400)) AS day";

/// The durations of finished installs, per `app_type_status` key (the legacy `status` carries them).
const LEGACY_SUMS: &str = "
    toUInt64(sum(if(d.1 = 'app_type_status' AND fin AND isNotNull(duration), ifNull(duration, 0), 0))) AS s0,
    toUInt64(sum(if(d.1 = 'app_type_status' AND fin AND isNotNull(duration), 1, 0))) AS s1,
    toUInt64(0) AS s2, toUInt64(0) AS s3, toUInt64(0) AS s4, toUInt64(0) AS s5, toUInt64(0) AS s6,
    toUInt64(0) AS s7";

/// The running service's dashboard (`status`, `app`, `type`, `tool` and `addon` are summed up from
/// `app_type_status` by the web, the failure patterns from `pattern_app`: failed installs per error
/// signature and app). Composite keys are joined by a tab (ingest strips control characters from
/// names; a signature's own tabs come before the last one).
pub const LEGACY_DASHBOARD: Pass = Pass {
    name: "legacy_dashboard",
    per_app: false,
    stuck: false,
    columns: LEGACY_COLUMNS,
    dims: "
    ('os', ifNull(os_type, '')),
    ('method', ifNull(method, '')),
    ('pve', ifNull(pve_version, '')),
    ('gpu', if(isNotNull(gpu_vendor), concat(ifNull(gpu_vendor, ''), '\\t', ifNull(gpu_passthrough, '')), '')),
    ('category', if(status = 'failed', ifNull(error_category, 'unknown'), '')),
    ('slug', ifNull(repo_slug, '')),
    ('day_status', concat(day, '\\t', status)),
    ('app_type_status', concat(nsapp, '\\t', type, '\\t', status)),
    ('pattern_app', if(status = 'failed' AND ifNull(error_signature, '') != '', concat(ifNull(error_signature, ''), '\\t', nsapp), ''))",
    sums: LEGACY_SUMS,
};

/// The running service's error analysis.
pub const LEGACY_ERRORS: Pass = Pass {
    name: "legacy_errors",
    per_app: false,
    stuck: true,
    columns: LEGACY_COLUMNS,
    dims: "
    ('exit_code', if(bad AND isNotNull(exit_code), toString(ifNull(exit_code, 0)), '')),
    ('category', if(bad, ifNull(error_category, 'unknown'), '')),
    ('category_app', if(bad, concat(ifNull(error_category, 'unknown'), '\\t', nsapp), '')),
    ('app_exit', if(bad AND isNotNull(exit_code), concat(nsapp, '\\t', toString(ifNull(exit_code, 0))), '')),
    ('app_category', if(bad, concat(nsapp, '\\t', ifNull(error_category, 'unknown')), '')),
    ('app_error', if(bad AND isNotNull(error_signature), concat(nsapp, '\\t', ifNull(error_signature, '')), '')),
    ('day_status', concat(day, '\\t', status)),
    ('app_type_status', concat(nsapp, '\\t', type, '\\t', status)),
    ('stuck', if(is_final = 0 AND started_at < toDateTime(?), 'stuck', ''))",
    sums: LEGACY_SUMS,
};

/// The scripts view: installs per app and type, with their outcomes (`s0` success, `s1` failed, `s2`
/// aborted, `s3` not final) and, in `first`, the first start of each key.
pub const SCRIPTS: Pass = Pass {
    name: "scripts",
    per_app: false,
    stuck: false,
    columns: "status, nsapp, type, is_final, started_at",
    dims: "('app_type', concat(nsapp, '\\t', type))",
    sums: "
    toUInt64(sum(status = 'success')) AS s0, toUInt64(sum(status = 'failed')) AS s1,
    toUInt64(sum(status = 'aborted')) AS s2, toUInt64(sum(is_final = 0)) AS s3,
    toUInt64(0) AS s4, toUInt64(0) AS s5, toUInt64(0) AS s6, toUInt64(0) AS s7",
};

/// Every pass with rollups.
pub const PASSES: [&Pass; 6] = [
    &API_OVERVIEW,
    &API_FAILURES,
    &API_APP,
    &LEGACY_DASHBOARD,
    &LEGACY_ERRORS,
    &SCRIPTS,
];

/// Start times `[from, to)` in Unix seconds.
pub type Range = (u32, u32);

/// `started_at` in one of `n` ranges (at least one), two binds each.
pub fn ranges_sql(n: usize) -> String {
    vec!["(started_at >= toDateTime(?) AND started_at < toDateTime(?))"; n.max(1)].join(" OR ")
}

impl Pass {
    fn fill(&self, keys: &str, group: &str, ranges: usize) -> String {
        TEMPLATE
            .replace("{keys}", keys)
            .replace("{group}", group)
            .replace("{sums}", self.sums)
            .replace("{columns}", self.columns)
            .replace("{range}", &ranges_sql(ranges))
            .replace("{dims}", self.dims)
    }

    /// The pass over the installs that started in one of `ranges` ranges: rows `dim, key, n, s0 … s7`.
    /// Binds: the database, two per range, repo, repo, slug, slug, app, app, then the stuck cut-off if
    /// [`Pass::stuck`].
    pub fn read_sql(&self, ranges: usize) -> String {
        self.fill("", "", ranges)
    }

    /// The rollup of the installs that started in one range, into `day_rollups`. Binds: the database,
    /// the pass name, the snapshot id, the database, from, to, six empty strings (every repo, slug and
    /// app), then the stuck cut-off if [`Pass::stuck`].
    pub fn rollup_sql(&self) -> String {
        let keys = KEYS.replace("{app}", if self.per_app { "nsapp" } else { "''" });
        format!(
            "INSERT INTO ?.day_rollups (pass, snapshot, day, repo_source, repo_slug, nsapp, dim, key, n, \
             s0, s1, s2, s3, s4, s5, s6, s7, first) {}",
            self.fill(&keys, GROUP, 1)
        )
    }
}

/// `(day, snapshot) IN (…)` for `pairs` snapshots, two binds each (with a pair no snapshot has, so that
/// one pair still reads as a list of tuples).
pub fn snapshots_in(pairs: usize) -> String {
    format!("(day, snapshot) IN ((0, 0){})", ", (?, ?)".repeat(pairs))
}

/// The sum of the snapshots `(day, snapshot)` of a pass: rows `dim, key, n, s0 … s7`. Binds: the
/// database, the pass name, app (empty unless the pass is per app), repo, repo, slug, slug, then day and
/// snapshot of each of `pairs` pairs.
pub fn snapshots_sql(pairs: usize) -> String {
    format!(
        "SELECT dim, key, toUInt64(sum(n)) AS n, toUInt64(sum(s0)) AS s0, toUInt64(sum(s1)) AS s1, \
         toUInt64(sum(s2)) AS s2, toUInt64(sum(s3)) AS s3, toUInt64(sum(s4)) AS s4, toUInt64(sum(s5)) AS s5, \
         toUInt64(sum(s6)) AS s6, toUInt64(sum(s7)) AS s7, toUInt32(min(first)) AS first \
         FROM ?.day_rollups \
         WHERE pass = ? AND nsapp = ? AND (? = '' OR repo_source = ?) AND (? = '' OR repo_slug = ?) \
         AND {} \
         GROUP BY dim, key",
        snapshots_in(pairs)
    )
}

/// The rows inserted into `installs_settled` per UTC day they started on, and the deletions of retention
/// per first day they touched: rows `low, blocks`. A day's change count is the sum of `blocks` whose
/// `low` is on or before it ([`Changes`]): a row can change its own day and, as an install can only
/// move to an earlier day (its first event can only become earlier), the days after it where its older
/// rows started. Binds: the database.
pub const BLOCKS_SQL: &str =
    "SELECT low, toUInt64(sum(blocks)) AS blocks FROM ?.settled_blocks GROUP BY low";

/// The snapshots of a pass from `from` on: rows `day, changes, snapshot` (one per day and change count).
/// Binds: the database, the pass name, `from`.
pub const INDEX_SQL: &str = "SELECT day, days, changes, toUInt64(min(snapshot)) AS snapshot \
FROM ?.day_rollup_index WHERE pass = ? AND day >= ? GROUP BY day, days, changes";

/// Days of a span: [`SPAN_DAYS`] consecutive days from a multiple of it, whose day snapshots the rollup
/// job also sums into one snapshot, so that a long period reads a few spans and the days at its edges.
/// A span is valid while the change count of its last day is the one it was taken at (a change counts
/// from its day on, so every day of the span is then unchanged).
pub const SPAN_DAYS: u32 = 32;

/// A span's snapshot from its days' snapshots, into `day_rollups`. Binds: the database, the pass name,
/// the span's snapshot id, its first day, the database, the pass name, then day and snapshot of each of
/// `pairs` day snapshots.
pub fn span_sql(pairs: usize) -> String {
    format!(
        "INSERT INTO ?.day_rollups (pass, snapshot, day, repo_source, repo_slug, nsapp, dim, key, n, \
         s0, s1, s2, s3, s4, s5, s6, s7, first) \
         SELECT toString(?), toUInt64(?), toUInt32(?), repo_source, repo_slug, nsapp, dim, key, sum(n), \
         sum(s0), sum(s1), sum(s2), sum(s3), sum(s4), sum(s5), sum(s6), sum(s7), min(first) \
         FROM ?.day_rollups WHERE pass = ? AND {} \
         GROUP BY repo_source, repo_slug, nsapp, dim, key",
        snapshots_in(pairs)
    )
}

/// The first UTC day on which an install merged at read time (touched since the settle watermark)
/// started, or `u32::MAX` when there is none; no day from it on can come from a snapshot. Binds: the
/// database three times.
pub const FRESH_SQL: &str = "SELECT toUInt32(if(count() = 0, 4294967295, \
intDiv(intDiv(min(received_ms), 1000), 86400))) FROM ?.events \
WHERE execution_id IN (SELECT execution_id FROM ?.install_touches \
WHERE touched_at >= (SELECT max(watermark) FROM ?.settle_watermark))";

/// The change count of every day, from the rows of [`BLOCKS_SQL`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// `(low, blocks with that low or an earlier one)`, by `low`.
    cumulative: Vec<(u32, u64)>,
}

impl Changes {
    pub fn new(mut blocks: Vec<(u32, u64)>) -> Changes {
        blocks.sort_unstable();
        let mut total = 0u64;
        let cumulative = blocks
            .into_iter()
            .map(|(low, n)| {
                total = total.saturating_add(n);
                (low, total)
            })
            .collect();
        Changes { cumulative }
    }

    /// How many changes touched `day` so far.
    pub fn of(&self, day: u32) -> u64 {
        match self.cumulative.partition_point(|&(low, _)| low <= day) {
            0 => 0,
            i => self.cumulative[i - 1].1,
        }
    }
}

/// The UTC day of a Unix second.
pub fn day_of(unix: i64) -> u32 {
    u32::try_from(unix.max(0).div_euclid(DAY)).unwrap_or(u32::MAX)
}

/// Whether a day's snapshot may stand for it at `now`: the whole day is over, and so long ago that
/// every install of it not final counts as stuck.
pub fn complete(day: u32, now: i64) -> bool {
    (i64::from(day) + 1) * DAY + STUCK_AFTER_SECS <= now
}

/// What a read of a pass takes from where: the snapshots `(day, snapshot)` and the start-time ranges to
/// read from `installs_final` (at least one range; empty ones read nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub snapshots: Vec<(u32, u64)>,
    pub ranges: Vec<Range>,
}

/// The listed snapshots of a pass: `(first day, days, change count) → snapshot`.
pub type Listed = std::collections::HashMap<(u32, u32, u64), u64>;

/// Plans a read of the installs that started at or after `since`: a span or a day comes from its
/// snapshot when it lies wholly in the period, its last day is [`complete`] and before `fresh` (the
/// first day of an install merged at read time), and it has a snapshot taken at the current change
/// count of its last day; spans first, then days. Every other second from `since` on is read from rows.
pub fn plan(since: i64, now: i64, fresh: u32, changes: &Changes, snapshots: &Listed) -> Plan {
    let since = since.max(0);
    let first = day_of(since + DAY - 1);
    let usable = |last: u32| complete(last, now) && last < fresh;
    // (first day, days, snapshot)
    let mut taken: Vec<(u32, u32, u64)> = Vec::new();
    let mut day = first;
    while usable(day) {
        if day.is_multiple_of(SPAN_DAYS) {
            let last = day + SPAN_DAYS - 1;
            if usable(last) {
                if let Some(&id) = snapshots.get(&(day, SPAN_DAYS, changes.of(last))) {
                    taken.push((day, SPAN_DAYS, id));
                    day += SPAN_DAYS;
                    continue;
                }
            }
        }
        if let Some(&id) = snapshots.get(&(day, 1, changes.of(day))) {
            taken.push((day, 1, id));
        }
        day += 1;
    }
    let mut ranges = Vec::new();
    let mut from = u32::try_from(since).unwrap_or(u32::MAX);
    for &(day, days, _) in &taken {
        let start = day.saturating_mul(DAY as u32);
        if start > from {
            ranges.push((from, start));
        }
        from = day.saturating_add(days).saturating_mul(DAY as u32);
    }
    let taken = taken.into_iter().map(|(day, _, id)| (day, id)).collect();
    ranges.push((from, u32::MAX));
    Plan {
        snapshots: taken,
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_pass_binds_what_its_doc_says() {
        for pass in PASSES {
            let read = pass.read_sql(3);
            let binds = 1 + 2 * 3 + 6 + usize::from(pass.stuck);
            assert_eq!(read.matches('?').count(), binds, "{}", pass.name);
            assert!(!read.contains('{'), "{read}");
            let rollup = pass.rollup_sql();
            assert_eq!(
                rollup.matches('?').count(),
                3 + 1 + 2 + 6 + usize::from(pass.stuck),
                "{}",
                pass.name
            );
            assert!(!rollup.contains('{'), "{rollup}");
        }
        assert_eq!(snapshots_sql(2).matches('?').count(), 7 + 4);
        assert_eq!(span_sql(3).matches('?').count(), 6 + 6);
    }

    #[test]
    fn a_plan_takes_whole_complete_days_with_a_current_snapshot() {
        let now = 100 * DAY + 7200;
        // Blocks from day 95 on (3) and from day 97 on (1 more): days 95 and 96 at 3, from 97 on at 4.
        let changes = Changes::new(vec![(97, 1), (95, 3)]);
        assert_eq!(
            (
                changes.of(94),
                changes.of(95),
                changes.of(96),
                changes.of(97),
                changes.of(120)
            ),
            (0, 3, 3, 4, 4)
        );
        let snapshots: Listed = HashMap::from([
            ((94, 1, 0), 11),
            ((95, 1, 3), 12),
            ((96, 1, 3), 13),
            ((97, 1, 3), 14), // taken before the day's last change
            ((98, 1, 4), 15),
            ((99, 1, 4), 16), // ended 2 h ago: complete
        ]);
        // From the middle of day 94: its rest is rows; 97 is stale; 100 is today.
        let p = plan(94 * DAY + 10, now, u32::MAX, &changes, &snapshots);
        assert_eq!(p.snapshots, vec![(95, 12), (96, 13), (98, 15), (99, 16)]);
        let d = |n: i64| (n * DAY) as u32;
        assert_eq!(
            p.ranges,
            vec![(d(94) + 10, d(95)), (d(97), d(98)), (d(100), u32::MAX)]
        );
        // An install merged at read time that started on day 96: from it on, rows.
        let p = plan(94 * DAY, now, 96, &changes, &snapshots);
        assert_eq!(p.snapshots, vec![(94, 11), (95, 12)]);
        assert_eq!(p.ranges, vec![(d(96), u32::MAX)]);
        // Day 99 ended less than the stuck cut-off ago.
        let p = plan(99 * DAY, 100 * DAY + 60, u32::MAX, &changes, &snapshots);
        assert!(p.snapshots.is_empty());
        assert_eq!(p.ranges, vec![(d(99), u32::MAX)]);
        // All time.
        let p = plan(0, now, u32::MAX, &Changes::default(), &HashMap::new());
        assert_eq!(p.ranges, vec![(0, u32::MAX)]);
    }

    #[test]
    fn a_plan_takes_a_span_only_while_its_last_day_is_unchanged() {
        let d = |n: u32| n * DAY as u32;
        let now = i64::from(d(3 * SPAN_DAYS + 2));
        // Span 64..=95 and its days, span 32..=63 stale (a change on day 40 after it was taken).
        let changes = Changes::new(vec![(40, 1)]);
        let mut snapshots: Listed = HashMap::new();
        snapshots.insert((32, SPAN_DAYS, 0), 100);
        snapshots.insert((64, SPAN_DAYS, 1), 200);
        for day in 30..96 {
            snapshots.insert((day, 1, changes.of(day)), u64::from(day));
        }
        let p = plan(i64::from(d(30)), now, u32::MAX, &changes, &snapshots);
        let mut want: Vec<(u32, u64)> = (30..64).map(|day| (day, u64::from(day))).collect();
        want.push((64, 200));
        assert_eq!(p.snapshots, want);
        assert_eq!(p.ranges, vec![(d(96), u32::MAX)]);
        // A period from the middle of the span: its days, not the span.
        let p = plan(i64::from(d(70)), now, u32::MAX, &changes, &snapshots);
        assert_eq!(p.snapshots.len(), 26);
        assert_eq!(p.snapshots[0], (70, 70));
        // An install merged at read time on day 90: the span is not used, its days up to 89 are.
        let p = plan(i64::from(d(64)), now, 90, &changes, &snapshots);
        assert_eq!(p.snapshots.len(), 26);
        assert_eq!(p.ranges, vec![(d(90), u32::MAX)]);
    }
}
