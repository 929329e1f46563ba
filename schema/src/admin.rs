//! The admin actions the web asks other services for over NATS request–reply (subjects in
//! [`crate::names`]): the request bodies are empty, and each reply is a [`Reply`] of one of these values,
//! so that the web never writes to a store itself and the service that owns the work does it.

use serde::{Deserialize, Serialize};

/// The answer of a responder: the value, or why it could not do the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply<T> {
    Ok(T),
    Err { error: String },
}

impl<T: Serialize> Reply<T> {
    /// The JSON bytes of the reply (plain data: serializing cannot fail).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The alerter's answer to a test-mail request (`POST /api/alerts/test`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTest {
    /// Whether the SMTP server took the mail.
    pub sent: bool,
    pub message: String,
}

/// The aggregator's answer to a cleanup run (`POST /api/cleanup/run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRun {
    /// Stuck installs given their synthetic timeout in this run (stored in the stream, duplicates not
    /// counted).
    pub updated: u64,
    pub message: String,
}

/// The aggregator's cleanup settings and the stuck installs it knows of (`GET /api/cleanup/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupStatus {
    /// Installs not final that started longer than `stuck_after_hours` ago.
    pub stuck_count: u64,
    /// Hours until an install counts as stuck (`CLEANUP_STUCK_HOURS` / `STUCK_AFTER`).
    pub stuck_after_hours: f64,
    /// Minutes between looks for stuck installs (`CLEANUP_INTERVAL_MIN`; 0: at every publish).
    pub check_interval: f64,
    /// `CLEANUP_ENABLED`.
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: Reply<CleanupRun>) {
        let got: Reply<CleanupRun> = serde_json::from_str(json).expect(json);
        assert_eq!(got, expected, "{json}");
        let back: Reply<CleanupRun> = serde_json::from_slice(&got.to_json()).expect("round trip");
        assert_eq!(back, expected);
    }

    #[test]
    fn replies_are_a_value_or_an_error() {
        check(
            r#"{"updated":2,"message":"ok"}"#,
            Reply::Ok(CleanupRun {
                updated: 2,
                message: "ok".into(),
            }),
        );
        check(
            r#"{"error":"replaying"}"#,
            Reply::Err {
                error: "replaying".into(),
            },
        );
    }
}
