//! Metric names of the ingest edge, defined once, their histogram buckets and descriptions; `main`
//! installs the recorder with them.

use std::sync::OnceLock;

use fleet::metrics::Matcher;
use metrics_exporter_prometheus::PrometheusHandle;

pub const ACCEPTED: &str = "telemetry_ingest_accepted_total";
pub const DUPLICATES: &str = "telemetry_ingest_duplicates_total";
/// Label `reason`: invalid_json, invalid_field, missing_field, too_large, timeout.
pub const REJECTED: &str = "telemetry_ingest_rejected_total";
/// Label `kind`: a rescue kind of contract §4.
pub const RESCUED: &str = "telemetry_ingest_rescued_total";
pub const UNKNOWN_FIELDS: &str = "telemetry_ingest_unknown_fields_total";
pub const STATUS_COERCED: &str = "telemetry_ingest_status_coerced_total";
/// Label `field`: repo_slug, has_arm.
pub const DROPPED: &str = "telemetry_ingest_dropped_total";
/// Label `to`: success, aborted.
pub const RECLASSIFIED: &str = "telemetry_ingest_reclassified_total";
pub const RATE_LIMITED: &str = "telemetry_ingest_rate_limited_total";
/// Label `reason`: in_flight, body_bytes, broker_down, publish_timeout, publish_error, stream_full,
/// shutting_down.
pub const SHED: &str = "telemetry_ingest_shed_total";
pub const PUBLISH_SECONDS: &str = "telemetry_ingest_publish_seconds";
pub const IN_FLIGHT: &str = "telemetry_ingest_in_flight";
pub const BODY_BYTES_IN_FLIGHT: &str = "telemetry_ingest_body_bytes_in_flight";
pub const BROKER_CONNECTED: &str = "telemetry_ingest_broker_connected";
pub const RATE_LIMIT_KEYS: &str = "telemetry_ingest_rate_limit_keys";
/// Bytes stored in the event stream and its cap, read from the broker every [`crate::STREAM_WATCH_EVERY`]:
/// the stream refuses new events at the cap, so an alert on their ratio comes before the 503s do.
pub const STREAM_BYTES: &str = "telemetry_ingest_stream_bytes";
pub const STREAM_MAX_BYTES: &str = "telemetry_ingest_stream_max_bytes";

/// Handles of the metrics every accepted event touches, looked up in the recorder once (at first use,
/// so a metric appears in `/metrics` exactly when it would with the macros) instead of per request.
#[derive(Default)]
pub struct Hot {
    accepted: OnceLock<metrics::Counter>,
    publish_seconds: OnceLock<metrics::Histogram>,
    in_flight: OnceLock<metrics::Gauge>,
    body_bytes_in_flight: OnceLock<metrics::Gauge>,
}

impl Hot {
    pub fn accepted(&self) -> &metrics::Counter {
        self.accepted.get_or_init(|| metrics::counter!(ACCEPTED))
    }

    pub fn publish_seconds(&self) -> &metrics::Histogram {
        self.publish_seconds
            .get_or_init(|| metrics::histogram!(PUBLISH_SECONDS))
    }

    pub fn in_flight(&self) -> &metrics::Gauge {
        self.in_flight.get_or_init(|| metrics::gauge!(IN_FLIGHT))
    }

    pub fn body_bytes_in_flight(&self) -> &metrics::Gauge {
        self.body_bytes_in_flight
            .get_or_init(|| metrics::gauge!(BODY_BYTES_IN_FLIGHT))
    }
}

const PUBLISH_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder ([`fleet::metrics::install`]). Called once, by `main` (or
/// a test binary), inside a Tokio runtime.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let buckets = [(Matcher::Full(PUBLISH_SECONDS.into()), &PUBLISH_BUCKETS[..])];
    Ok(fleet::metrics::install(&buckets, describe)?)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        ACCEPTED,
        "events acknowledged by the broker and answered 202"
    );
    describe_counter!(
        DUPLICATES,
        "events the broker recognized as retries (202 duplicate)"
    );
    describe_counter!(REJECTED, "requests rejected with 4xx, by reason");
    describe_counter!(
        RESCUED,
        "events repaired by the rescue pass, by repair kind"
    );
    describe_counter!(
        UNKNOWN_FIELDS,
        "fields the contract does not know (ignored)"
    );
    describe_counter!(
        STATUS_COERCED,
        "status values the contract does not know, stored as unknown"
    );
    describe_counter!(
        DROPPED,
        "field values that broke their rule and were dropped, by field"
    );
    describe_counter!(
        RECLASSIFIED,
        "finals reclassified by the server, by new status"
    );
    describe_counter!(
        RATE_LIMITED,
        "requests answered 429 by the per-client rate limit"
    );
    describe_counter!(SHED, "requests answered 503, by reason");
    describe_histogram!(
        PUBLISH_SECONDS,
        Unit::Seconds,
        "time from publish to broker ack"
    );
    describe_gauge!(IN_FLIGHT, "publishes awaiting their broker ack");
    describe_gauge!(
        BODY_BYTES_IN_FLIGHT,
        Unit::Bytes,
        "body bytes reserved by requests being read or published"
    );
    describe_gauge!(BROKER_CONNECTED, "1 when the NATS connection is up");
    describe_gauge!(
        STREAM_BYTES,
        Unit::Bytes,
        "bytes stored in the event stream"
    );
    describe_gauge!(
        STREAM_MAX_BYTES,
        Unit::Bytes,
        "byte cap of the event stream; new events get 503 at it"
    );
    describe_gauge!(
        RATE_LIMIT_KEYS,
        "clients currently tracked by the rate limiter"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's alert rules read these names; a renamed metric would silence them.
    #[test]
    fn the_alert_rules_name_metrics_the_edge_exports() {
        let rules = include_str!("../../deploy/prometheus/alerts.yaml");
        for needle in [
            format!("{SHED}{{reason=\"stream_full\"}}"),
            format!("{SHED}{{reason=\"body_bytes\"}}"),
            format!("{STREAM_BYTES} / {STREAM_MAX_BYTES}"),
        ] {
            assert!(rules.contains(&needle), "{needle}");
        }
    }
}
