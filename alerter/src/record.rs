//! What the alerter writes: the alert record in the KV bucket `telemetry_alerts` (claim, delivery state,
//! cooldown; one key per rule and subject) and the alert event on the stream `TELEMETRY_ALERTS` (read by
//! the web; documented in alerter/README.md).

use aggregator::snapshot::{encode_subject, ExitCodeCount, NameCount, SignatureCount};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Version of the record and event shapes (`v`).
pub const ALERT_VERSION: u8 = 1;

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Failure rate of all installs or of one app over the alert window.
    FailureRate,
    /// An error signature first seen within the signature window in enough installs.
    NewSignature,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::FailureRate => "failure_rate",
            Rule::NewSignature => "new_signature",
        }
    }
}

/// What the rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Global,
    App,
    Signature,
}

/// An alert or its resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Alert,
    Resolved,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alert => "alert",
            Kind::Resolved => "resolved",
        }
    }
}

/// One alert or resolution, with the figures the mail shows: the value on `TELEMETRY_ALERTS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub v: u8,
    /// Unique per alert or resolution; also the stream's de-duplication id and the mail's Message-ID.
    pub alert_id: Uuid,
    pub kind: Kind,
    pub rule: Rule,
    pub scope: Scope,
    /// The app, the signature, or empty for the global rule.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The rollup window the figures come from (`24h`, or the signature window).
    pub window: String,
    pub threshold: Option<f64>,
    pub failure_rate: Option<f64>,
    pub started: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    /// For a new signature: the apps it hit.
    #[serde(default)]
    pub apps: Vec<NameCount>,
    pub top_exit_codes: Vec<ExitCodeCount>,
    pub top_signatures: Vec<SignatureCount>,
    /// The dashboard page to look at.
    pub dashboard_url: String,
}

/// Where the mail of the current state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Claimed by `owner`, not confirmed sent yet.
    Pending,
    Sent,
}

/// The state of one rule and subject: the value of its key in `telemetry_alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub v: u8,
    /// `alert` while firing, `resolved` after.
    pub state: Kind,
    pub delivery: Delivery,
    /// The replica delivering it (while pending).
    pub owner: String,
    /// Another replica may take a pending delivery over after this.
    #[serde(with = "time::serde::rfc3339")]
    pub lease_until: OffsetDateTime,
    /// No new alert for this rule and subject before this.
    #[serde(with = "time::serde::rfc3339")]
    pub cooldown_until: OffsetDateTime,
    /// Failed send attempts of the current mail.
    pub attempts: u32,
    /// True once the event is on `TELEMETRY_ALERTS` (a takeover does not record it twice).
    #[serde(default)]
    pub recorded: bool,
    /// What was (or is being) announced.
    pub event: AlertEvent,
}

/// The KV key of a rule and subject: `failure_rate.global`, `failure_rate.app.<encoded app>`,
/// `new_signature.<16 hex digits of the signature's hash>`.
pub fn alert_key(rule: Rule, scope: Scope, subject: &str) -> String {
    match scope {
        Scope::Global => format!("{}.global", rule.as_str()),
        Scope::App => format!("{}.app.{}", rule.as_str(), encode_subject(subject)),
        Scope::Signature => format!(
            "{}.{:016x}",
            rule.as_str(),
            aggregator::tracker::stable_hash(subject)
        ),
    }
}

/// The stream subject of an alert event: `telemetry.v1.alerts.<rule>.<kind>`.
pub fn alert_subject(event: &AlertEvent) -> String {
    format!(
        "{}.{}.{}",
        schema::names::ALERTS_SUBJECT_PREFIX,
        event.rule.as_str(),
        event.kind.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: Rule, scope: Scope, subject: &str, expected: &str) {
        assert_eq!(alert_key(rule, scope, subject), expected);
    }

    #[test]
    fn keys_name_rule_and_subject() {
        check(Rule::FailureRate, Scope::Global, "", "failure_rate.global");
        check(
            Rule::FailureRate,
            Scope::App,
            "Docker Compose",
            "failure_rate.app.Docker=20Compose",
        );
        let sig = alert_key(Rule::NewSignature, Scope::Signature, "E: x");
        assert!(sig.starts_with("new_signature.") && sig.len() == "new_signature.".len() + 16);
        assert_ne!(sig, alert_key(Rule::NewSignature, Scope::Signature, "E: y"));
    }
}
