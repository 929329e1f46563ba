//! What the pages and the JSON API show: one serializable type per view, built from the rows of
//! [`crate::db`]. Field names of `/api/dashboard` follow the original service where it had them
//! (`total_installs`, `success_count`, `top_apps`, `daily_stats`, …). Ratios are percentages with two
//! decimals; every count is exact.

use serde::Serialize;
use time::OffsetDateTime;

use crate::db::{DayTotals, Dims, TOP};
use crate::params::Scope;

/// A point in time: Unix seconds and RFC 3339 text (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    pub unix: i64,
    pub text: String,
}

pub fn timestamp(unix: u32) -> Timestamp {
    timestamp_i64(i64::from(unix))
}

pub fn timestamp_i64(unix: i64) -> Timestamp {
    let text = OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Timestamp { unix, text }
}

impl Timestamp {
    /// `2026-11-23 14:15` for tables.
    pub fn short(&self) -> String {
        self.text.get(..16).unwrap_or(&self.text).replace('T', " ")
    }
}

pub fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub fn is_failure(status: &str) -> bool {
    matches!(status, "failed" | "aborted" | "unknown")
}

/// `part / whole` in percent, two decimals; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

fn average(sum_n: (u64, u64)) -> Option<f64> {
    (sum_n.1 > 0).then(|| (sum_n.0 as f64 * 100.0 / sum_n.1 as f64).round() / 100.0)
}

/// The end of a log, at most 40 lines and 4 KB (the log is already masked by ingest).
pub fn excerpt(log: &str) -> Option<String> {
    if log.trim().is_empty() {
        return None;
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    let cut = tail.len().saturating_sub(4096);
    let start = (cut..=tail.len())
        .find(|&i| tail.is_char_boundary(i))
        .unwrap_or(tail.len());
    Some(tail[start..].to_string())
}

/// A name and its number of installs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Count {
    pub name: String,
    pub count: u64,
}

fn counts(dims: &Dims, dim: &str, limit: usize) -> Vec<Count> {
    dims.list(dim)
        .iter()
        .take(limit)
        .map(|(name, count)| Count {
            name: name.clone(),
            count: *count,
        })
        .collect()
}

/// One install as the log lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub execution_id: String,
    pub nsapp: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub repo_source: String,
    /// `owner/repo` the script was loaded from (newer scripts).
    pub repo_slug: Option<String>,
    pub os_type: Option<String>,
    pub os_version: Option<String>,
    pub pve_version: Option<String>,
    pub method: Option<String>,
    pub exit_code: Option<u8>,
    /// The exit code's description, for failed, aborted and unknown installs.
    pub exit_description: Option<String>,
    pub error_category: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Seconds: the reported duration, else first event to final.
    pub duration: Option<u32>,
    pub core_count: Option<u16>,
    pub ram_size: Option<u32>,
    pub disk_size: Option<u32>,
}

impl Record {
    /// Whether the exit-code badge is shown.
    pub fn has_badge(&self) -> bool {
        self.exit_code.is_some() && matches!(self.status.as_str(), "failed" | "aborted")
    }
}

/// Installs, successes and failures of one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyStat {
    pub date: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
}

/// Average resources of the installs started on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceTrend {
    pub date: String,
    pub avg_cores: Option<f64>,
    pub avg_ram_mb: Option<f64>,
    pub avg_disk_gb: Option<f64>,
    /// Average duration of the final installs, seconds.
    pub avg_duration_secs: Option<f64>,
}

/// An app with its failure figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedApp {
    pub app: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    /// failed / (success + failed), percent.
    pub failure_rate: f64,
}

/// An exit code with its description and category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitCodeStat {
    pub code: u8,
    pub description: String,
    pub category: &'static str,
    pub count: u64,
}

/// The cards of a view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cards {
    pub total_installs: u64,
    pub success_count: u64,
    pub failed_count: u64,
    pub aborted_count: u64,
    pub unknown_count: u64,
    /// Not final yet (installing, validation, configuring).
    pub installing_count: u64,
    /// success / total_installs, percent.
    pub success_rate: f64,
    /// failed / (success + failed), percent.
    pub failure_rate: f64,
}

impl Cards {
    fn new(dims: &Dims) -> Cards {
        let total = dims.total("status");
        let success = dims.count("status", "success");
        let failed = dims.count("status", "failed");
        let aborted = dims.count("status", "aborted");
        let unknown = dims.count("status", "unknown");
        Cards {
            total_installs: total,
            success_count: success,
            failed_count: failed,
            aborted_count: aborted,
            unknown_count: unknown,
            installing_count: total - success - failed - aborted - unknown,
            success_rate: percent(success, total),
            failure_rate: percent(failed, success + failed),
        }
    }
}

/// The overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    pub days: &'static str,
    pub repo: &'static str,
    /// The repo-slug filter, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    pub since: Timestamp,
    pub generated_at: Timestamp,
    #[serde(flatten)]
    pub cards: Cards,
    pub top_apps: Vec<Count>,
    pub os_distribution: Vec<Count>,
    pub pve_versions: Vec<Count>,
    pub type_stats: Vec<Count>,
    pub method_stats: Vec<Count>,
    pub cpu_vendors: Vec<Count>,
    pub gpu_vendors: Vec<Count>,
    pub error_categories: Vec<Count>,
    pub failed_apps: Vec<FailedApp>,
    pub daily_stats: Vec<DailyStat>,
    pub resource_trends: Vec<ResourceTrend>,
    pub duration_buckets: Vec<Count>,
    pub recent_records: Vec<Record>,
}

/// The fixed order of the duration buckets.
const DURATION_BUCKETS: [&str; 6] = ["0-1m", "1-2m", "2-5m", "5-10m", "10-30m", "30m+"];

fn daily(dims: &Dims) -> Vec<DailyStat> {
    let mut out: Vec<DailyStat> = dims
        .days()
        .iter()
        .map(|(date, totals)| DailyStat {
            date: date.clone(),
            total: totals.installs,
            success: 0,
            failed: 0,
            aborted: 0,
        })
        .collect();
    for (date, status, n) in dims.pairs("day_status") {
        if let Some(day) = out.iter_mut().find(|d| d.date == date) {
            match status {
                "success" => day.success = n,
                "failed" => day.failed = n,
                "aborted" => day.aborted = n,
                _ => {}
            }
        }
    }
    out
}

fn trends(dims: &Dims) -> Vec<ResourceTrend> {
    dims.days()
        .iter()
        .map(|(date, t): (&String, &DayTotals)| ResourceTrend {
            date: date.clone(),
            avg_cores: average(t.cores),
            avg_ram_mb: average(t.ram),
            avg_disk_gb: average(t.disk),
            avg_duration_secs: average(t.duration),
        })
        .collect()
}

/// Apps by failure rate with at least `min_installs` installs.
fn failed_apps(dims: &Dims, min_installs: u64) -> Vec<FailedApp> {
    let mut per_app: std::collections::HashMap<&str, (u64, u64, u64)> = Default::default();
    for (status, app, n) in dims.pairs("app_status") {
        let entry = per_app.entry(app).or_default();
        match status {
            "success" => entry.0 = n,
            "failed" => entry.1 = n,
            "aborted" => entry.2 = n,
            _ => {}
        }
    }
    let mut apps: Vec<FailedApp> = dims
        .list("app")
        .iter()
        .filter(|(_, total)| *total >= min_installs)
        .filter_map(|(app, total)| {
            let (success, failed, aborted) = per_app.get(app.as_str()).copied().unwrap_or_default();
            (failed > 0).then(|| FailedApp {
                app: app.clone(),
                total: *total,
                success,
                failed,
                aborted,
                failure_rate: percent(failed, success + failed),
            })
        })
        .collect();
    apps.sort_by(|a, b| {
        b.failure_rate
            .total_cmp(&a.failure_rate)
            .then_with(|| b.total.cmp(&a.total))
            .then_with(|| a.app.cmp(&b.app))
    });
    apps.truncate(TOP);
    apps
}

fn exit_codes(dims: &Dims) -> Vec<ExitCodeStat> {
    dims.list("exit_code")
        .iter()
        .filter_map(|(code, count)| {
            let code: u8 = code.parse().ok()?;
            Some(ExitCodeStat {
                code,
                description: schema::exit_codes::describe(code).into_owned(),
                category: schema::exit_codes::category(code).as_str(),
                count: *count,
            })
        })
        .take(TOP)
        .collect()
}

fn durations(dims: &Dims) -> Vec<Count> {
    DURATION_BUCKETS
        .iter()
        .map(|b| Count {
            name: (*b).to_string(),
            count: dims.count("duration", b),
        })
        .collect()
}

impl Dashboard {
    pub fn build(scope: Scope, now: i64, dims: &Dims, recent: Vec<Record>) -> Dashboard {
        Dashboard {
            days: scope.period.as_str(),
            repo: scope.repo.as_str(),
            slug: scope.slug.get().map(str::to_string),
            since: timestamp_i64(scope.period.since(now)),
            generated_at: timestamp_i64(now),
            cards: Cards::new(dims),
            top_apps: counts(dims, "app", TOP),
            os_distribution: counts(dims, "os", TOP),
            pve_versions: counts(dims, "pve", TOP),
            type_stats: counts(dims, "type", TOP),
            method_stats: counts(dims, "method", TOP),
            cpu_vendors: counts(dims, "cpu", TOP),
            gpu_vendors: counts(dims, "gpu", TOP),
            error_categories: counts(dims, "category", 32),
            failed_apps: failed_apps(dims, scope.period.min_installs()),
            daily_stats: daily(dims),
            resource_trends: trends(dims),
            duration_buckets: durations(dims),
            recent_records: recent,
        }
    }
}

/// A failed, aborted or unknown install with its log excerpt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub execution_id: String,
    pub nsapp: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub exit_code: Option<u8>,
    pub exit_description: Option<String>,
    pub error_category: Option<String>,
    pub error_signature: Option<String>,
    /// The end of the masked log.
    pub log_excerpt: Option<String>,
    pub finished_at: Option<Timestamp>,
}

/// An error signature with its daily counts over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignatureTrend {
    pub signature: String,
    pub count: u64,
    /// `[date, count]` for each day with installs in the period.
    pub trend: Vec<(String, u64)>,
}

fn signatures(dims: &Dims) -> Vec<SignatureTrend> {
    let dates: Vec<&String> = dims.days().keys().collect();
    dims.list("signature")
        .iter()
        .take(TOP)
        .map(|(signature, count)| {
            let trend = dates
                .iter()
                .map(|date| {
                    let n = dims
                        .pairs("signature_day")
                        .find(|(d, s, _)| d == date && s == signature)
                        .map_or(0, |(_, _, n)| n);
                    ((*date).clone(), n)
                })
                .collect();
            SignatureTrend {
                signature: signature.clone(),
                count: *count,
                trend,
            }
        })
        .collect()
}

/// The failure analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Errors {
    pub days: &'static str,
    pub repo: &'static str,
    /// The repo-slug filter, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    pub since: Timestamp,
    pub generated_at: Timestamp,
    #[serde(flatten)]
    pub cards: Cards,
    /// The fewest installs an app needs to be ranked.
    pub min_installs: u64,
    pub failed_apps: Vec<FailedApp>,
    pub error_categories: Vec<Count>,
    pub exit_codes: Vec<ExitCodeStat>,
    pub signatures: Vec<SignatureTrend>,
    /// Installs not final an hour after their first event (not timed out yet).
    pub stuck_count: u64,
    /// Installs that timed out (unknown, category timeout).
    pub timed_out_count: u64,
    /// The latest timed-out installs.
    pub timed_out: Vec<Failure>,
    /// Failed and aborted installs per day of the period (days with installs).
    pub error_timeline: Vec<TimelineDay>,
    /// Failure figures per type.
    pub type_failure_rates: Vec<TypeFailureRate>,
    /// Error categories with their share of the failures and the apps that fail most in each.
    pub category_apps: Vec<CategoryApps>,
    /// The newest failed, aborted or timed-out installs ([`crate::db::RECENT_ERRORS`]) with their masked
    /// log, for `/error-analysis` only: up to 100 log excerpts would make every fetch of this view's JSON
    /// (the errors page's charts) heavy.
    #[serde(skip_serializing)]
    pub recent_errors: Vec<Failure>,
}

/// Failed and aborted installs of one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineDay {
    pub date: String,
    pub failed: u64,
    pub aborted: u64,
}

/// One type's failure figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeFailureRate {
    #[serde(rename = "type")]
    pub kind: String,
    pub total: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    /// failed / (success + failed), percent.
    pub failure_rate: f64,
}

/// An error category, its share of the period's failures, and its most failing apps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryApps {
    pub category: String,
    pub count: u64,
    /// Of the failed, aborted and unknown installs, percent.
    pub percentage: f64,
    /// At most five, most first.
    pub top_apps: Vec<Count>,
}

fn timeline(dims: &Dims) -> Vec<TimelineDay> {
    daily(dims)
        .into_iter()
        .map(|d| TimelineDay {
            date: d.date,
            failed: d.failed,
            aborted: d.aborted,
        })
        .collect()
}

fn type_rates(dims: &Dims) -> Vec<TypeFailureRate> {
    dims.list("type")
        .iter()
        .map(|(kind, total)| {
            let of = |status: &str| {
                dims.pairs("type_status")
                    .find(|(k, s, _)| k == kind && *s == status)
                    .map_or(0, |(_, _, n)| n)
            };
            let (success, failed, aborted) = (of("success"), of("failed"), of("aborted"));
            TypeFailureRate {
                kind: kind.clone(),
                total: *total,
                success,
                failed,
                aborted,
                failure_rate: percent(failed, success + failed),
            }
        })
        .collect()
}

fn category_apps(dims: &Dims) -> Vec<CategoryApps> {
    let failures = dims.total("category");
    dims.list("category")
        .iter()
        .map(|(category, count)| CategoryApps {
            category: category.clone(),
            count: *count,
            percentage: percent(*count, failures),
            // Pairs come most first (ties by key), so the first five of a category are its top apps.
            top_apps: dims
                .pairs("category_app")
                .filter(|(c, _, _)| c == category)
                .take(5)
                .map(|(_, app, n)| Count {
                    name: app.to_string(),
                    count: n,
                })
                .collect(),
        })
        .collect()
}

impl Errors {
    pub fn build(
        scope: Scope,
        now: i64,
        dims: &Dims,
        timed_out: Vec<Failure>,
        recent_errors: Vec<Failure>,
    ) -> Errors {
        Errors {
            days: scope.period.as_str(),
            repo: scope.repo.as_str(),
            slug: scope.slug.get().map(str::to_string),
            since: timestamp_i64(scope.period.since(now)),
            generated_at: timestamp_i64(now),
            cards: Cards::new(dims),
            min_installs: scope.period.min_installs(),
            failed_apps: failed_apps(dims, scope.period.min_installs()),
            error_categories: counts(dims, "category", 32),
            exit_codes: exit_codes(dims),
            signatures: signatures(dims),
            stuck_count: dims.count("stuck", "stuck"),
            timed_out_count: dims.count("timed_out", "timed_out"),
            timed_out,
            error_timeline: timeline(dims),
            type_failure_rates: type_rates(dims),
            category_apps: category_apps(dims),
            recent_errors,
        }
    }
}

/// One app's page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
    pub nsapp: String,
    pub days: &'static str,
    pub repo: &'static str,
    /// The repo-slug filter, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    pub since: Timestamp,
    pub generated_at: Timestamp,
    #[serde(flatten)]
    pub cards: Cards,
    pub daily_stats: Vec<DailyStat>,
    pub exit_codes: Vec<ExitCodeStat>,
    pub error_categories: Vec<Count>,
    pub signatures: Vec<SignatureTrend>,
    pub os_distribution: Vec<Count>,
    pub pve_versions: Vec<Count>,
    pub recent_failures: Vec<Failure>,
}

impl AppView {
    pub fn build(
        nsapp: &str,
        scope: Scope,
        now: i64,
        dims: &Dims,
        recent_failures: Vec<Failure>,
    ) -> AppView {
        AppView {
            nsapp: nsapp.to_string(),
            days: scope.period.as_str(),
            repo: scope.repo.as_str(),
            slug: scope.slug.get().map(str::to_string),
            since: timestamp_i64(scope.period.since(now)),
            generated_at: timestamp_i64(now),
            cards: Cards::new(dims),
            daily_stats: daily(dims),
            exit_codes: exit_codes(dims),
            error_categories: counts(dims, "category", 32),
            signatures: signatures(dims),
            os_distribution: counts(dims, "os", TOP),
            pve_versions: counts(dims, "pve", TOP),
            recent_failures,
        }
    }
}

/// One page of the installation log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordsPage {
    /// Installs matching the filter.
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub pages: u64,
    pub sort: &'static str,
    pub order: &'static str,
    pub records: Vec<Record>,
}

/// One event of an install, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetailEvent {
    pub event_id: String,
    pub received_at: Timestamp,
    pub status: String,
    pub synthetic: bool,
    pub exit_code: Option<u8>,
}

/// One install in full.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub record: Record,
    pub random_id: String,
    /// The masked log.
    pub error: Option<String>,
    pub error_signature: Option<String>,
    pub last_seen_at: Timestamp,
    pub install_duration: Option<u32>,
    pub cpu_vendor: Option<String>,
    pub cpu_model: Option<String>,
    pub gpu_vendor: Option<String>,
    pub gpu_model: Option<String>,
    pub gpu_passthrough: Option<String>,
    pub ram_speed: Option<String>,
    pub ct_type: Option<u8>,
    pub arch: Option<String>,
    pub has_arm: Option<bool>,
    /// Distinct events ClickHouse holds for it.
    pub events_seen: u64,
    pub events: Vec<DetailEvent>,
}

/// The exit-code reference table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitCodeInfo {
    pub code: u8,
    pub description: &'static str,
    pub category: &'static str,
}

pub fn exit_code_table() -> Vec<ExitCodeInfo> {
    schema::exit_codes::table()
        .iter()
        .map(|info| ExitCodeInfo {
            code: info.code,
            description: info.description,
            category: info.category.as_str(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_to_two_decimals() {
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(percent(2, 2), 100.0);
    }

    #[test]
    fn excerpts_keep_the_end_of_the_log() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let cut = excerpt(&log).expect("excerpt");
        assert!(
            cut.starts_with("line 60") && cut.ends_with("line 99"),
            "{cut}"
        );
        assert_eq!(excerpt("  "), None);
        let wide = "é".repeat(5000);
        assert!(excerpt(&wide).expect("wide").len() <= 4096);
    }
}
