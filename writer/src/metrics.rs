//! Metric names of the writer, defined once, their histogram buckets and descriptions; `main` installs the
//! recorder with them. Every series carries the label `sink` (clickhouse, pocketbase).

use fleet::metrics::Matcher;
use metrics_exporter_prometheus::PrometheusHandle;

/// Events per write (histogram).
pub const BATCH_SIZE: &str = "telemetry_writer_batch_size";
/// Seconds one successful write took, retries excluded (histogram).
pub const WRITE_SECONDS: &str = "telemetry_writer_write_seconds";
/// Events stored and acked.
pub const EVENTS_WRITTEN: &str = "telemetry_writer_events_written_total";
/// Events on the stream the consumer has not acked yet (pending + un-acked), sampled.
pub const CONSUMER_LAG: &str = "telemetry_writer_consumer_lag";
/// Writes retried because the store was down or busy.
pub const RETRIES: &str = "telemetry_writer_retries_total";
/// Events terminated and published to the dead-letter stream.
pub const DEAD_LETTERS: &str = "telemetry_writer_dead_letters_total";
/// 1 while the store answers, 0 while it is down.
pub const SINK_UP: &str = "telemetry_writer_sink_up";
/// 1 while this replica holds the PocketBase lease.
pub const LEADER: &str = "telemetry_writer_leader";
/// Batches handed back unwritten because the lease was no longer this replica's when a write was due.
pub const LEASE_LOST: &str = "telemetry_writer_lease_lost_total";
/// Rows or records deleted by retention.
pub const RETENTION_DELETED: &str = "telemetry_writer_retention_deleted_total";
/// Events whose `random_id` is not the one of their install's first event: stored apart, never shown
/// (`schema::merge::forged`).
pub const FORGED_EVENTS: &str = "telemetry_writer_forged_events_total";
/// Installs the ClickHouse settle job merged into `installs_settled` (schema version 4).
pub const SETTLED_INSTALLS: &str = "telemetry_writer_settled_installs_total";
/// Seconds the ClickHouse settle watermark trails ClickHouse's clock, after each settle (gauge): about
/// `SETTLE_LAG_SECS` plus an interval normally; more while an insert still running holds it back.
pub const SETTLE_BEHIND: &str = "telemetry_writer_settle_behind_seconds";
/// Days of dashboard passes the ClickHouse rollup job took and listed (schema version 6).
pub const ROLLUP_DAYS: &str = "telemetry_writer_rollup_days_total";
/// Values a PocketBase select field does not hold (an error category the running service's collection
/// lacks), written as `unknown`; label `field`.
pub const SELECT_REPLACED: &str = "telemetry_writer_select_replaced_total";

const BATCH_BUCKETS: [f64; 10] = [
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
const SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Installs the process-wide Prometheus recorder ([`fleet::metrics::install`]). Called once, by `main` (or
/// a test binary), inside a Tokio runtime.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        (Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS[..]),
        (Matcher::Full(WRITE_SECONDS.into()), &SECONDS_BUCKETS[..]),
    ];
    Ok(fleet::metrics::install(&buckets, describe)?)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(BATCH_SIZE, Unit::Count, "events per write");
    describe_histogram!(
        WRITE_SECONDS,
        Unit::Seconds,
        "duration of one successful write"
    );
    describe_counter!(EVENTS_WRITTEN, "events stored and acked");
    describe_counter!(
        SETTLED_INSTALLS,
        "installs merged into installs_settled by the clickhouse settle job"
    );
    describe_gauge!(
        SETTLE_BEHIND,
        Unit::Seconds,
        "how far the clickhouse settle watermark trails clickhouse's clock"
    );
    describe_counter!(
        ROLLUP_DAYS,
        "days of dashboard passes the clickhouse rollup job took and listed"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "events of the stream not yet acked by the consumer"
    );
    describe_counter!(RETRIES, "writes retried while the store was down");
    describe_counter!(DEAD_LETTERS, "events sent to the dead-letter stream");
    describe_gauge!(SINK_UP, "1 while the store answers");
    describe_gauge!(LEADER, "1 while this replica holds the PocketBase lease");
    describe_counter!(
        LEASE_LOST,
        "batches handed back unwritten because the lease had moved"
    );
    describe_counter!(
        FORGED_EVENTS,
        "events of another random_id than their install's first event (not shown)"
    );
    describe_counter!(RETENTION_DELETED, "rows or records deleted by retention");
    describe_counter!(
        SELECT_REPLACED,
        "values a pocketbase select field does not hold, written as unknown"
    );
}
