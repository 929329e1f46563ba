//! The alert history: the newest records of the stream `TELEMETRY_ALERTS`, written by the alerter (shape
//! `alerter::record::AlertEvent`, documented in alerter/README.md). The web mirrors the fields it shows
//! instead of depending on the alerter (and its mail stack); the tests publish real `AlertEvent`s to keep
//! the two in step. Records are de-duplicated on `alert_id`, newest first.

use std::collections::HashSet;

use aggregator::snapshot::{ExitCodeCount, NameCount, SignatureCount};
use async_nats::jetstream;
use serde::{Deserialize, Serialize};

/// Why the alert history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("alerts stream: {0}")]
    Stream(String),
}

/// One alert or resolution, as the alerter records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    /// `alert` or `resolved`.
    pub kind: String,
    /// `failure_rate` or `new_signature`.
    pub rule: String,
    /// `global`, `app` or `signature`.
    pub scope: String,
    pub subject: String,
    pub at: String,
    pub window: String,
    pub threshold: Option<f64>,
    pub failure_rate: Option<f64>,
    pub started: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    #[serde(default)]
    pub apps: Vec<NameCount>,
    #[serde(default)]
    pub top_exit_codes: Vec<ExitCodeCount>,
    #[serde(default)]
    pub top_signatures: Vec<SignatureCount>,
}

impl Alert {
    /// The failure rate in percent, for display.
    pub fn rate_percent(&self) -> Option<f64> {
        self.failure_rate.map(|r| (r * 10_000.0).round() / 100.0)
    }
}

/// The newest `max` alert records, newest first; empty when the stream does not exist yet.
pub async fn read(js: &jetstream::Context, max: usize) -> Result<Vec<Alert>, AlertsError> {
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
            match serde_json::from_slice::<Alert>(&message.payload) {
                Ok(alert) if seen.insert(alert.alert_id.clone()) => out.push(alert),
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
