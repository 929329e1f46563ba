//! Metric names of the alerter, defined once, and their descriptions; `main` installs the recorder with
//! them.

use metrics_exporter_prometheus::PrometheusHandle;

/// Labels `rule` (failure_rate, new_signature) and `kind` (alert, resolved).
pub const CLAIMS: &str = "telemetry_alerter_claims_total";
pub const CLAIMS_LOST: &str = "telemetry_alerter_claims_lost_total";
/// Label `kind`: alert, resolved.
pub const MAILS_SENT: &str = "telemetry_alerter_mails_sent_total";
pub const MAIL_FAILURES: &str = "telemetry_alerter_mail_failures_total";
/// Label `kind`: alert, resolved. Alerts beyond the mail budget, folded into the period's digest.
pub const MAILS_FOLDED: &str = "telemetry_alerter_mails_folded_total";
/// Digest mails handed to the SMTP server.
pub const DIGESTS_SENT: &str = "telemetry_alerter_digests_sent_total";
/// App rollups not held because ALERT_MAX_APPS were held already.
pub const APPS_CAPPED: &str = "telemetry_alerter_apps_capped_total";
/// App rollups held in memory.
pub const APPS: &str = "telemetry_alerter_apps";

/// Installs the process-wide Prometheus recorder ([`fleet::metrics::install`]), once, by `main`, inside a
/// Tokio runtime.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    Ok(fleet::metrics::install(&[], describe)?)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        CLAIMS,
        "alert transitions this replica claimed, by rule and kind"
    );
    describe_counter!(CLAIMS_LOST, "transitions another replica claimed first");
    describe_counter!(MAILS_SENT, "mails handed to the SMTP server, by kind");
    describe_counter!(MAIL_FAILURES, "failed SMTP attempts (retried with backoff)");
    describe_counter!(
        MAILS_FOLDED,
        "alerts beyond the mail budget, folded into the digest, by kind"
    );
    describe_counter!(DIGESTS_SENT, "digest mails handed to the SMTP server");
    describe_counter!(
        APPS_CAPPED,
        "app rollups not held because ALERT_MAX_APPS were held already"
    );
    describe_gauge!(APPS, "app rollups held in memory");
}
