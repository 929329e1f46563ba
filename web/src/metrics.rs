//! Metric names of the web, defined once, their histogram buckets and descriptions; `main` installs the
//! recorder with them.

use fleet::metrics::Matcher;
use metrics_exporter_prometheus::PrometheusHandle;

/// Labels `route` (the matched path), `status`.
pub const REQUESTS: &str = "telemetry_web_requests_total";
/// Label `route`.
pub const REQUEST_SECONDS: &str = "telemetry_web_request_seconds";
/// Labels `cache` (dashboard, errors, app, records, alerts, live), `result` (hit, miss, stale).
pub const CACHE: &str = "telemetry_web_cache_total";
/// Label `cache`: background refreshes started (stale reads, warm-up, popular keys).
pub const CACHE_REFRESHES: &str = "telemetry_web_cache_refreshes_total";
/// Label `cache`: how long the answer of its last background refresh counts as fresh (CACHE_TTL_SECS,
/// or longer when CACHE_REFRESH_PACE stretches it after a costly computation).
pub const CACHE_FRESH_SECONDS: &str = "telemetry_web_cache_fresh_seconds";
/// Label `query`.
pub const QUERIES: &str = "telemetry_web_clickhouse_queries_total";
/// Label `query`.
pub const QUERY_ERRORS: &str = "telemetry_web_clickhouse_errors_total";
/// Label `query`.
pub const QUERY_SECONDS: &str = "telemetry_web_clickhouse_query_seconds";

/// Views computed again because the writer's settle recorded a watermark while they were read.
pub const REREADS: &str = "telemetry_web_settle_rereads_total";

/// Label `pass`: days of a pass read from the per-day rollups instead of `installs_final`.
pub const ROLLUP_DAYS: &str = "telemetry_web_rollup_days_total";

/// Today's installs of ProxmoxVE (gauges, refreshed every `METRICS_REFRESH_SECS`).
pub const INSTALLS: &str = "telemetry_installs_total";
pub const INSTALLS_SUCCESS: &str = "telemetry_installs_success_total";
pub const INSTALLS_FAILED: &str = "telemetry_installs_failed_total";
pub const INSTALLS_ABORTED: &str = "telemetry_installs_aborted_total";
/// Not final yet (installing, validation, configuring).
pub const INSTALLS_PENDING: &str = "telemetry_installs_pending";
/// success / (success + failed) × 100.
pub const SUCCESS_RATE: &str = "telemetry_success_rate";

/// Sets the install gauges from today's counts per status.
pub fn set_install_gauges(counts: &[(String, u64)]) {
    let get = |status: &str| {
        counts
            .iter()
            .filter(|(s, _)| s == status)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let (success, failed) = (get("success"), get("failed"));
    let pending = get("installing") + get("validation") + get("configuring");
    metrics::gauge!(INSTALLS).set(total as f64);
    metrics::gauge!(INSTALLS_SUCCESS).set(success as f64);
    metrics::gauge!(INSTALLS_FAILED).set(failed as f64);
    metrics::gauge!(INSTALLS_ABORTED).set(get("aborted") as f64);
    metrics::gauge!(INSTALLS_PENDING).set(pending as f64);
    metrics::gauge!(SUCCESS_RATE).set(crate::model::percent(success, success + failed));
}
/// Label `result` (ok, error): loads of the script catalogue.
pub const CATALOG_LOADS: &str = "telemetry_web_catalog_loads_total";

const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder ([`fleet::metrics::install`]). Called once, by `main` (or
/// a test binary), inside a Tokio runtime.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let buckets = [(Matcher::Suffix("_seconds".into()), &REQUEST_BUCKETS[..])];
    Ok(fleet::metrics::install(&buckets, describe)?)
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(REQUESTS, "HTTP requests answered, by route and status");
    describe_histogram!(REQUEST_SECONDS, Unit::Seconds, "time to answer, by route");
    describe_counter!(CACHE, "cache reads, by cache and result (hit, miss, stale)");
    describe_counter!(
        ROLLUP_DAYS,
        "days of a dashboard pass read from the per-day rollups, by pass"
    );
    describe_counter!(CACHE_REFRESHES, "background cache refreshes started");
    metrics::describe_gauge!(
        CACHE_FRESH_SECONDS,
        Unit::Seconds,
        "how long the last refreshed answer of a cache counts as fresh"
    );
    describe_counter!(
        REREADS,
        "views computed again because a settle watermark was recorded while they were read"
    );
    describe_counter!(QUERIES, "ClickHouse queries, by query");
    describe_counter!(QUERY_ERRORS, "ClickHouse queries that failed or timed out");
    metrics::describe_gauge!(INSTALLS, "installs started today, ProxmoxVE");
    metrics::describe_gauge!(
        INSTALLS_SUCCESS,
        "installs started today that succeeded, ProxmoxVE"
    );
    metrics::describe_gauge!(
        INSTALLS_FAILED,
        "installs started today that failed, ProxmoxVE"
    );
    metrics::describe_gauge!(
        INSTALLS_ABORTED,
        "installs started today that were aborted, ProxmoxVE"
    );
    metrics::describe_gauge!(
        INSTALLS_PENDING,
        "installs started today not final yet, ProxmoxVE"
    );
    metrics::describe_gauge!(
        SUCCESS_RATE,
        "success / (success + failed) x 100 today, ProxmoxVE"
    );
    describe_histogram!(
        QUERY_SECONDS,
        Unit::Seconds,
        "ClickHouse query time, by query"
    );
    describe_counter!(CATALOG_LOADS, "loads of the script catalogue, by result");
}
