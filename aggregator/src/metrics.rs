//! Metric names of the aggregator, defined once, and their descriptions; `main` installs the recorder
//! with them (no histogram buckets: the rollup time is a summary).

use metrics_exporter_prometheus::PrometheusHandle;

pub const EVENTS: &str = "telemetry_aggregator_events_total";
pub const BAD_EVENTS: &str = "telemetry_aggregator_bad_events_total";
/// Events whose `random_id` is not the one of their install's first event: not applied.
pub const FORGED_EVENTS: &str = "telemetry_aggregator_forged_events_total";
pub const INSTALLS: &str = "telemetry_aggregator_installs";
pub const PENDING: &str = "telemetry_aggregator_pending_installs";
/// Full merge states of installs not final shed at MAX_PENDING_STATES (those installs get no timeout).
pub const STATES_SHED: &str = "telemetry_aggregator_states_shed_total";
pub const CAUGHT_UP: &str = "telemetry_aggregator_caught_up";
pub const ROLLUP_SECONDS: &str = "telemetry_aggregator_rollup_seconds";
/// Label `op`: put, delete.
pub const KV_WRITES: &str = "telemetry_aggregator_kv_writes_total";
pub const KV_ERRORS: &str = "telemetry_aggregator_kv_errors_total";
/// Label `outcome`: stored, duplicate, error.
pub const TIMEOUTS: &str = "telemetry_aggregator_timeouts_total";
/// Label `kind`: app, signature. Events whose name text was not kept (the name store was full), plus,
/// at every snapshot, the names that qualified for tracking beyond MAX_TRACKED_*.
pub const NAMES_CAPPED: &str = "telemetry_aggregator_names_capped_total";
/// Labels `kind` (app, signature) and `state` (tracked, other): distinct names in the longest window
/// at the last snapshot, tracked one by one or summed as other.
pub const NAMES: &str = "telemetry_aggregator_names";

/// Installs the process-wide Prometheus recorder ([`fleet::metrics::install`]), once, by `main`, inside a
/// Tokio runtime.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    Ok(fleet::metrics::install(&[], describe)?)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS, "events read from the stream");
    describe_counter!(
        BAD_EVENTS,
        "stream messages that are not an event (skipped)"
    );
    describe_counter!(
        FORGED_EVENTS,
        "events of another random_id than their install's first event (not applied)"
    );
    describe_gauge!(INSTALLS, "installs held in memory (longest window)");
    describe_gauge!(PENDING, "installs not final yet");
    describe_counter!(
        STATES_SHED,
        "full states of installs not final shed at MAX_PENDING_STATES (no timeout for those installs)"
    );
    describe_gauge!(CAUGHT_UP, "1 once the replay reached the end of the stream");
    describe_histogram!(
        ROLLUP_SECONDS,
        Unit::Seconds,
        "time to compute one snapshot"
    );
    describe_counter!(KV_WRITES, "writes to telemetry_stats, by op");
    describe_counter!(KV_ERRORS, "failed writes to telemetry_stats");
    describe_counter!(TIMEOUTS, "synthetic timeout events published, by outcome");
    describe_counter!(
        NAMES_CAPPED,
        "names not tracked because a cap was full (events refused by the name store, names beyond MAX_TRACKED_* per snapshot), by kind"
    );
    describe_gauge!(
        NAMES,
        "distinct names in the longest window, tracked one by one or summed as other, by kind"
    );
}
