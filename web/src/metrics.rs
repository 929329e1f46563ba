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
/// Label `query`.
pub const QUERIES: &str = "telemetry_web_clickhouse_queries_total";
/// Label `query`.
pub const QUERY_ERRORS: &str = "telemetry_web_clickhouse_errors_total";
/// Label `query`.
pub const QUERY_SECONDS: &str = "telemetry_web_clickhouse_query_seconds";

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
    describe_counter!(CACHE_REFRESHES, "background cache refreshes started");
    describe_counter!(QUERIES, "ClickHouse queries, by query");
    describe_counter!(QUERY_ERRORS, "ClickHouse queries that failed or timed out");
    describe_histogram!(
        QUERY_SECONDS,
        Unit::Seconds,
        "ClickHouse query time, by query"
    );
    describe_counter!(CATALOG_LOADS, "loads of the script catalogue, by result");
}
