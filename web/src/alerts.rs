//! The alert history: the newest records of the stream `TELEMETRY_ALERTS`, written by the alerter (shape
//! `schema::alert::AlertEvent`, documented in alerter/README.md), de-duplicated on `alert_id`, newest
//! first. A record that does not parse as an `AlertEvent` is skipped.

use std::collections::HashSet;

use async_nats::jetstream;
use schema::alert::AlertEvent;
use time::format_description::well_known::Rfc3339;

/// Why the alert history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("alerts stream: {0}")]
    Stream(String),
}

/// The failure rate of an alert in percent, for display.
pub fn rate_percent(alert: &AlertEvent) -> Option<f64> {
    alert.failure_rate.map(|r| (r * 10_000.0).round() / 100.0)
}

/// When an alert happened, as the alerter wrote it (RFC 3339).
pub fn at_text(alert: &AlertEvent) -> String {
    alert.at.format(&Rfc3339).unwrap_or_default()
}

/// The newest `max` alert records, newest first; empty when the stream does not exist yet.
pub async fn read(js: &jetstream::Context, max: usize) -> Result<Vec<AlertEvent>, AlertsError> {
    let mut stream = match js.get_stream(schema::names::ALERTS_STREAM).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "alerts stream not readable");
            return Ok(Vec::new());
        }
    };
    let state = stream
        .info()
        .await
        .map_err(|e| AlertsError::Stream(e.to_string()))?
        .state
        .clone();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if state.messages == 0 {
        return Ok(out);
    }
    let mut seq = state.last_sequence;
    // Bounded even when most of the range was deleted.
    let mut lookups = max.saturating_mul(4);
    while seq >= state.first_sequence && out.len() < max && lookups > 0 {
        lookups -= 1;
        // Deleted sequences inside the range answer "not found": skip them.
        if let Ok(message) = stream.get_raw_message(seq).await {
            match serde_json::from_slice::<AlertEvent>(&message.payload) {
                Ok(alert) if seen.insert(alert.alert_id) => out.push(alert),
                Ok(_) => {}
                Err(e) => tracing::debug!(seq, error = %e, "alert record not understood"),
            }
        }
        if seq == 0 {
            break;
        }
        seq -= 1;
    }
    Ok(out)
}
