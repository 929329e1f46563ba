//! The shapes of the running service's read API, key for key (original-api.md of the project's tests
//! fixtures), built from the rows of [`super::db`]. Pure: everything here is computed from counts, so it
//! is unit-tested without a store. Rates are percentages 0..=100 with two decimals.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::db::{DimRow, PatternRow, RecordRow};
use super::params::Days;
use crate::ids::IdHasher;
use crate::model::percent;

/// How many apps `top_apps` lists.
pub const TOP_APPS: usize = 20;
/// How many installs `recent_records` lists.
pub const RECENT_RECORDS: u64 = 20;
/// How many failed installs `recent_errors` lists.
pub const RECENT_ERRORS: u64 = 100;
/// How many apps `app_errors` lists.
pub const APP_ERRORS: usize = 50;
/// How many apps `failed_apps` lists.
pub const FAILED_APPS: usize = 20;

/// The rows of a pass, by dimension, most counted first (ties by key).
#[derive(Debug, Default)]
pub struct Dims {
    counts: HashMap<String, Vec<(String, u64)>>,
    /// Sum and number of durations of finished installs.
    pub duration: (u64, u64),
}

impl Dims {
    pub fn new(rows: Vec<DimRow>) -> Dims {
        let mut dims = Dims::default();
        for r in rows {
            if r.dim == "status" {
                dims.duration.0 += r.duration_sum;
                dims.duration.1 += r.duration_n;
            }
            dims.counts.entry(r.dim).or_default().push((r.key, r.n));
        }
        for list in dims.counts.values_mut() {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        dims
    }

    /// Sets the one key of a dimension counted apart (`n` installs; none when 0, as a pass shows it).
    pub fn set_single(&mut self, dim: &str, key: &str, n: u64) {
        self.counts.remove(dim);
        if n > 0 {
            self.counts
                .insert(dim.to_owned(), vec![(key.to_owned(), n)]);
        }
    }

    /// Builds from `(dim, key, n)` triples (tests).
    pub fn from_counts(rows: &[(&str, &str, u64)]) -> Dims {
        Dims::new(
            rows.iter()
                .map(|(dim, key, n)| DimRow {
                    dim: dim.to_string(),
                    key: key.to_string(),
                    n: *n,
                    duration_sum: 0,
                    duration_n: 0,
                })
                .collect(),
        )
    }

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

    /// The keys of a composite dimension split at tabs.
    fn split(&self, dim: &str) -> impl Iterator<Item = (Vec<&str>, u64)> {
        self.list(dim)
            .iter()
            .map(|(k, n)| (k.split('\t').collect::<Vec<_>>(), *n))
    }

    /// Per (app, type): counts by status, in first-seen order of the count-sorted rows.
    fn apps(&self) -> Vec<AppCounts> {
        let mut out: Vec<AppCounts> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for (parts, n) in self.split("app_type_status") {
            let [app, kind, status] = parts[..] else {
                continue;
            };
            let i = *index
                .entry((app.to_string(), kind.to_string()))
                .or_insert_with(|| {
                    out.push(AppCounts {
                        app: app.to_string(),
                        kind: kind.to_string(),
                        ..AppCounts::default()
                    });
                    out.len() - 1
                });
            let a = &mut out[i];
            a.total += n;
            match status {
                "failed" => a.failed += n,
                "aborted" => a.aborted += n,
                _ => {}
            }
        }
        out
    }

    /// Per day (days since 1970) and status.
    fn per_day(&self) -> HashMap<(i64, String), u64> {
        self.split("day_status")
            .filter_map(|(parts, n)| {
                let [day, status] = parts[..] else {
                    return None;
                };
                Some(((day.parse().ok()?, status.to_string()), n))
            })
            .collect()
    }

    /// The most counted right-hand key per left-hand key of a `left\tright` dimension.
    fn top_by(&self, dim: &str) -> HashMap<String, String> {
        let mut top = HashMap::new();
        for (parts, _) in self.split(dim) {
            if let [left, right] = parts[..] {
                // Rows come most counted first: the first one per key wins.
                top.entry(left.to_string())
                    .or_insert_with(|| right.to_string());
            }
        }
        top
    }
}

#[derive(Debug, Default, Clone)]
struct AppCounts {
    app: String,
    kind: String,
    total: u64,
    failed: u64,
    aborted: u64,
}

/// A record as the running service shows it. Absent numbers are 0, absent text is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Keyed hash of the session id (see [`crate::ids`]).
    pub random_id: String,
    /// Keyed hash of the install id: also the id of `/api/v2/records/{id}`.
    pub execution_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub nsapp: String,
    pub status: String,
    pub ct_type: i64,
    pub disk_size: i64,
    pub core_count: i64,
    pub ram_size: i64,
    pub os_type: String,
    pub os_version: String,
    pub pve_version: String,
    pub method: String,
    pub error: String,
    pub exit_code: i64,
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
    /// `YYYY-MM-DD HH:MM:SS.sssZ`, the install's first event.
    pub created: String,
}

/// `YYYY-MM-DD HH:MM:SS.000Z` of a Unix second.
pub fn created(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.000Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

impl Record {
    pub fn new(r: RecordRow, ids: &IdHasher) -> Record {
        let started = i64::from(r.started_at);
        let zero = |v: i64| v.max(0);
        Record {
            random_id: ids.session(&r.random_id),
            execution_id: ids.install(&r.execution_id, started),
            kind: r.kind,
            nsapp: r.nsapp,
            status: r.status,
            ct_type: zero(i64::from(r.ct_type)),
            disk_size: zero(r.disk_size),
            core_count: zero(r.core_count),
            ram_size: zero(r.ram_size),
            os_type: r.os_type,
            os_version: r.os_version,
            pve_version: r.pve_version,
            method: r.method,
            error: r.error,
            exit_code: zero(i64::from(r.exit_code)),
            gpu_vendor: r.gpu_vendor,
            gpu_model: r.gpu_model,
            gpu_passthrough: r.gpu_passthrough,
            cpu_vendor: r.cpu_vendor,
            cpu_model: r.cpu_model,
            ram_speed: r.ram_speed,
            install_duration: zero(r.install_duration),
            error_category: r.error_category,
            repo_source: r.repo_source,
            repo_slug: r.repo_slug,
            created: created(started),
        }
    }
}

macro_rules! pair {
    ($name:ident, $key:ident) => {
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name {
            pub $key: String,
            pub count: u64,
        }
    };
}
pair!(AppCount, app);
pair!(OsCount, os);
pair!(MethodCount, method);
pair!(VersionCount, version);
pair!(CategoryCount, category);
pair!(ToolCount, tool);
pair!(AddonCount, addon);
pair!(SlugCount, slug);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeCount {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
}

fn top<T>(dims: &Dims, dim: &str, limit: usize, make: impl Fn(String, u64) -> T) -> Vec<T> {
    dims.list(dim)
        .iter()
        .take(limit)
        .map(|(k, n)| make(k.clone(), *n))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pattern {
    pub pattern: String,
    pub count: u64,
    pub unique_apps: u64,
    /// Comma-separated, at most 10.
    pub apps: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedApp {
    pub app: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub total_count: u64,
    pub failed_count: u64,
    /// failed_count / total_count × 100.
    pub failure_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyStat {
    pub date: String,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuStat {
    pub vendor: String,
    pub passthrough: String,
    pub count: u64,
}

/// `/api/dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    pub total_installs: u64,
    pub total_all_time: u64,
    pub sample_size: u64,
    pub success_count: u64,
    pub failed_count: u64,
    pub aborted_count: u64,
    pub installing_count: u64,
    pub success_rate: f64,
    pub top_apps: Vec<AppCount>,
    pub os_distribution: Vec<OsCount>,
    pub method_stats: Vec<MethodCount>,
    pub pve_versions: Vec<VersionCount>,
    pub type_stats: Vec<TypeCount>,
    pub error_analysis: Vec<Pattern>,
    pub failed_apps: Vec<FailedApp>,
    pub recent_records: Vec<Record>,
    pub daily_stats: Vec<DailyStat>,
    pub gpu_stats: Vec<GpuStat>,
    pub error_categories: Vec<CategoryCount>,
    pub top_tools: Vec<ToolCount>,
    pub top_addons: Vec<AddonCount>,
    pub avg_install_duration: f64,
    pub total_tools: u64,
    pub total_addons: u64,
    pub repo_slugs: Vec<SlugCount>,
}

fn status_counts(dims: &Dims) -> (u64, u64, u64, u64, u64) {
    let total = dims.total("status");
    let success = dims.count("status", "success");
    let failed = dims.count("status", "failed");
    let aborted = dims.count("status", "aborted");
    let installing = ["installing", "validation", "configuring"]
        .iter()
        .map(|s| dims.count("status", s))
        .sum();
    (total, success, failed, aborted, installing)
}

fn days_since_epoch(dates: &[String], now: i64, days: Days) -> Vec<(String, i64)> {
    let first = days.since(now) / 86_400;
    dates
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), first + i as i64))
        .collect()
}

fn daily(dims: &Dims, days: Days, now: i64) -> Vec<DailyStat> {
    let per_day = dims.per_day();
    let get = |day: i64, status: &str| {
        per_day
            .get(&(day, status.to_string()))
            .copied()
            .unwrap_or(0)
    };
    days_since_epoch(&days.dates(now), now, days)
        .into_iter()
        .map(|(date, day)| DailyStat {
            date,
            success: get(day, "success"),
            failed: get(day, "failed"),
            aborted: get(day, "aborted"),
        })
        .collect()
}

impl Dashboard {
    pub fn build(
        dims: &Dims,
        days: Days,
        now: i64,
        patterns: Vec<PatternRow>,
        recent: Vec<Record>,
    ) -> Dashboard {
        let (total, success, failed, aborted, installing) = status_counts(dims);
        let min = days.min_installs();
        let mut failed_apps: Vec<FailedApp> = dims
            .apps()
            .into_iter()
            .filter(|a| a.total >= min && a.failed > 0)
            .map(|a| FailedApp {
                failure_rate: percent(a.failed, a.total),
                app: a.app,
                kind: a.kind,
                total_count: a.total,
                failed_count: a.failed,
            })
            .collect();
        failed_apps.sort_by(|a, b| {
            b.failure_rate
                .total_cmp(&a.failure_rate)
                .then_with(|| b.total_count.cmp(&a.total_count))
                .then_with(|| a.app.cmp(&b.app))
        });
        failed_apps.truncate(FAILED_APPS);
        let gpu_stats = dims
            .split("gpu")
            .filter_map(|(parts, n)| match parts[..] {
                [vendor, passthrough] => Some(GpuStat {
                    vendor: vendor.to_string(),
                    passthrough: passthrough.to_string(),
                    count: n,
                }),
                _ => None,
            })
            .collect();
        let (sum, n) = dims.duration;
        Dashboard {
            total_installs: total,
            total_all_time: dims.count("all", "all"),
            sample_size: total,
            success_count: success,
            failed_count: failed,
            aborted_count: aborted,
            installing_count: installing,
            success_rate: percent(success, success + failed),
            top_apps: top(dims, "app", TOP_APPS, |app, count| AppCount { app, count }),
            os_distribution: top(dims, "os", 15, |os, count| OsCount { os, count }),
            method_stats: top(dims, "method", 10, |method, count| MethodCount {
                method,
                count,
            }),
            pve_versions: top(dims, "pve", 15, |version, count| VersionCount {
                version,
                count,
            }),
            type_stats: top(dims, "type", usize::MAX, |kind, count| TypeCount {
                kind,
                count,
            }),
            error_analysis: patterns
                .into_iter()
                .map(|p| Pattern {
                    pattern: p.pattern,
                    count: p.n,
                    unique_apps: p.unique_apps,
                    apps: p.apps,
                })
                .collect(),
            failed_apps,
            recent_records: recent,
            daily_stats: daily(dims, days, now),
            gpu_stats,
            error_categories: top(dims, "category", usize::MAX, |category, count| {
                CategoryCount { category, count }
            }),
            top_tools: top(dims, "tool", 15, |tool, count| ToolCount { tool, count }),
            top_addons: top(dims, "addon", 15, |addon, count| AddonCount {
                addon,
                count,
            }),
            avg_install_duration: if n == 0 {
                0.0
            } else {
                (sum as f64 * 100.0 / n as f64).round() / 100.0
            },
            total_tools: dims.total("tool"),
            total_addons: dims.total("addon"),
            repo_slugs: top(dims, "slug", 20, |slug, count| SlugCount { slug, count }),
        }
    }
}

/// `/api/records`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordsPage {
    pub records: Vec<Record>,
    pub page: u32,
    pub limit: u32,
    pub total: u64,
    pub total_pages: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitCodeStat {
    pub exit_code: u8,
    pub count: u64,
    pub description: String,
    pub category: &'static str,
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryStat {
    pub category: String,
    pub count: u64,
    pub percentage: f64,
    /// The five apps with most failures of the category, comma-separated.
    pub top_apps: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppError {
    pub app: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub total_count: u64,
    pub failed_count: u64,
    pub aborted_count: u64,
    /// (failed_count + aborted_count) / total_count × 100.
    pub failure_rate: f64,
    pub top_exit_code: i64,
    pub top_error: String,
    pub top_category: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentError {
    pub nsapp: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub exit_code: i64,
    pub error: String,
    pub error_category: String,
    pub os_type: String,
    pub os_version: String,
    pub created: String,
}

impl From<Record> for RecentError {
    fn from(r: Record) -> RecentError {
        RecentError {
            nsapp: r.nsapp,
            kind: r.kind,
            status: r.status,
            exit_code: r.exit_code,
            error: r.error,
            error_category: r.error_category,
            os_type: r.os_type,
            os_version: r.os_version,
            created: r.created,
        }
    }
}

/// One day of `error_timeline`: the same as the errors page's.
pub use crate::model::TimelineDay;

/// `/api/errors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Errors {
    pub total_errors: u64,
    pub total_installs: u64,
    pub overall_fail_rate: f64,
    pub exit_code_stats: Vec<ExitCodeStat>,
    pub category_stats: Vec<CategoryStat>,
    pub app_errors: Vec<AppError>,
    pub recent_errors: Vec<RecentError>,
    pub stuck_installing: u64,
    pub error_timeline: Vec<TimelineDay>,
}

impl Errors {
    pub fn build(dims: &Dims, days: Days, now: i64, recent: Vec<Record>) -> Errors {
        let (total, _, failed, aborted, _) = status_counts(dims);
        let errors = failed + aborted;
        let exit_code_stats = dims
            .list("exit_code")
            .iter()
            .filter_map(|(code, n)| {
                let code: u8 = code.parse().ok()?;
                Some(ExitCodeStat {
                    exit_code: code,
                    count: *n,
                    description: schema::exit_codes::describe(code).into_owned(),
                    category: schema::exit_codes::category(code).as_str(),
                    percentage: percent(*n, errors),
                })
            })
            .collect();
        let mut apps_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (parts, _) in dims.split("category_app") {
            if let [category, app] = parts[..] {
                let apps = apps_of.entry(category.to_string()).or_default();
                if apps.len() < 5 {
                    apps.push(app.to_string());
                }
            }
        }
        let category_stats = dims
            .list("category")
            .iter()
            .map(|(category, n)| CategoryStat {
                category: category.clone(),
                count: *n,
                percentage: percent(*n, errors),
                top_apps: apps_of
                    .get(category)
                    .map(|a| a.join(", "))
                    .unwrap_or_default(),
            })
            .collect();
        let top_exit = dims.top_by("app_exit");
        let top_category = dims.top_by("app_category");
        let top_error = dims.top_by("app_error");
        let mut app_errors: Vec<AppError> = dims
            .apps()
            .into_iter()
            .filter(|a| a.failed + a.aborted > 0)
            .map(|a| AppError {
                failure_rate: percent(a.failed + a.aborted, a.total),
                top_exit_code: top_exit
                    .get(&a.app)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                top_error: top_error.get(&a.app).cloned().unwrap_or_default(),
                top_category: top_category.get(&a.app).cloned().unwrap_or_default(),
                app: a.app,
                kind: a.kind,
                total_count: a.total,
                failed_count: a.failed,
                aborted_count: a.aborted,
            })
            .collect();
        app_errors.sort_by(|a, b| {
            (b.failed_count + b.aborted_count)
                .cmp(&(a.failed_count + a.aborted_count))
                .then_with(|| b.failure_rate.total_cmp(&a.failure_rate))
                .then_with(|| a.app.cmp(&b.app))
        });
        app_errors.truncate(APP_ERRORS);
        let per_day = dims.per_day();
        let get = |day: i64, status: &str| {
            per_day
                .get(&(day, status.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let error_timeline = days_since_epoch(&days.dates(now), now, days)
            .into_iter()
            .map(|(date, day)| TimelineDay {
                date,
                failed: get(day, "failed"),
                aborted: get(day, "aborted"),
            })
            .collect();
        Errors {
            total_errors: errors,
            total_installs: total,
            overall_fail_rate: percent(errors, total),
            exit_code_stats,
            category_stats,
            app_errors,
            recent_errors: recent.into_iter().map(RecentError::from).collect(),
            stuck_installing: dims.count("stuck", "stuck"),
            error_timeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_figures_follow_the_original_rules() {
        let now = 1_700_000_000;
        let today = (now / 86_400).to_string();
        let dims = Dims::from_counts(&[
            ("all", "all", 40),
            ("status", "success", 6),
            ("status", "failed", 2),
            ("status", "aborted", 1),
            ("status", "installing", 1),
            ("status", "configuring", 1),
            ("app", "docker", 8),
            ("app", "alpine", 3),
            ("app_type_status", "docker\tlxc\tsuccess", 5),
            ("app_type_status", "docker\tlxc\tfailed", 2),
            ("app_type_status", "docker\tlxc\taborted", 1),
            ("app_type_status", "alpine\tlxc\tsuccess", 1),
            ("app_type_status", "alpine\tlxc\tinstalling", 2),
            ("day_status", &format!("{today}\tsuccess"), 6),
            ("day_status", &format!("{today}\tfailed"), 2),
            ("gpu", "nvidia\tfull", 2),
            ("tool", "post-pve-install", 1),
        ]);
        let d = Dashboard::build(
            &dims,
            Days::parse(Some("7"), 1),
            now,
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(
            (
                d.total_installs,
                d.total_all_time,
                d.success_count,
                d.failed_count,
                d.aborted_count
            ),
            (11, 40, 6, 2, 1)
        );
        assert_eq!(d.installing_count, 1 + 1);
        assert_eq!(d.success_rate, 75.0);
        assert_eq!(d.top_apps[0].app, "docker");
        assert_eq!(d.daily_stats.len(), 7);
        assert_eq!(d.daily_stats[6].success, 6);
        // 7 days need 15 installs: docker has 8.
        assert!(d.failed_apps.is_empty());
        let d = Dashboard::build(
            &dims,
            Days::parse(Some("1"), 1),
            now,
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(d.failed_apps.len(), 1);
        assert_eq!(d.failed_apps[0].failure_rate, 25.0);
        assert_eq!(d.gpu_stats[0].passthrough, "full");
        assert_eq!(d.total_tools, 1);
        let e = Errors::build(&dims, Days::parse(None, 7), now, Vec::new());
        assert_eq!((e.total_errors, e.total_installs), (3, 11));
        assert_eq!(e.overall_fail_rate, 27.27);
        assert_eq!(e.app_errors[0].aborted_count, 1);
        assert_eq!(e.error_timeline.len(), 7);
    }

    #[test]
    fn created_has_the_original_form() {
        assert_eq!(created(1_700_000_000), "2023-11-14 22:13:20.000Z");
    }
}
