//! What the alerter writes: the alert record in the KV bucket `telemetry_alerts` (claim, delivery state,
//! cooldown; one key per rule and subject) and the alert event on the stream `TELEMETRY_ALERTS` (read by
//! the web; documented in alerter/README.md). Keys, subjects and field names are on the wire and in
//! stored records, so they change only with [`ALERT_VERSION`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::hash::stable_hash;
use crate::names::ALERTS_SUBJECT_PREFIX;
use crate::stats::{encode_subject, ExitCodeCount, NameCount, SignatureCount};

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

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::App => "app",
            Scope::Signature => "signature",
        }
    }
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
        Scope::Signature => format!("{}.{:016x}", rule.as_str(), stable_hash(subject)),
    }
}

/// Key prefix of the mail budget records in `telemetry_alerts`: `mail_budget.<period number>`.
pub const BUDGET_KEY_PREFIX: &str = "mail_budget.";

/// The key of the mail budget of period `period` (unix seconds / the period's length).
pub fn budget_key(period: i64) -> String {
    format!("{BUDGET_KEY_PREFIX}{period}")
}

/// The period number of a budget key; `None` for any other key.
pub fn budget_period(key: &str) -> Option<i64> {
    key.strip_prefix(BUDGET_KEY_PREFIX)?.parse().ok()
}

/// The mails of one budget period, shared by the alerter's replicas: the value of
/// `mail_budget.<period>` in `telemetry_alerts`. Each mail takes a place by compare-and-set; an alert
/// beyond the budget is folded into the period's digest, mailed once after the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailBudget {
    pub v: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    pub period_secs: u64,
    /// Mails sent one by one in the period (at most the budget).
    pub sent: u32,
    /// Alerts beyond the budget, the first [`MAX_FOLDED_LISTED`] of them.
    pub folded: Vec<FoldedAlert>,
    /// Every alert beyond the budget, listed or not.
    pub folded_total: u64,
    /// The digest of the folded alerts, once a replica claimed it.
    pub digest: Option<DigestDelivery>,
}

/// Folded alerts listed in a digest; the rest are counted.
pub const MAX_FOLDED_LISTED: usize = 100;

/// One alert folded into a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldedAlert {
    pub alert_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What the mail's subject would have said (client text quoted and cut).
    pub line: String,
}

/// The delivery of a digest (the same lease rules as an alert's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestDelivery {
    /// Also the mail's Message-ID.
    pub digest_id: Uuid,
    pub delivery: Delivery,
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub lease_until: OffsetDateTime,
    pub attempts: u32,
}

/// The stream subject of an alert event: `telemetry.v1.alerts.<rule>.<kind>`.
pub fn alert_subject(event: &AlertEvent) -> String {
    format!(
        "{}.{}.{}",
        ALERTS_SUBJECT_PREFIX,
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
        check(
            Rule::NewSignature,
            Scope::Signature,
            "E: x",
            "new_signature.512c2a301d619980",
        );
        assert_ne!(
            alert_key(Rule::NewSignature, Scope::Signature, "E: x"),
            alert_key(Rule::NewSignature, Scope::Signature, "E: y")
        );
    }

    #[test]
    fn budget_keys_carry_their_period() {
        assert_eq!(budget_key(492_001), "mail_budget.492001");
        assert_eq!(budget_period("mail_budget.492001"), Some(492_001));
        assert_eq!(budget_period("failure_rate.global"), None);
        assert_eq!(budget_period("mail_budget.x"), None);
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).expect("json")
    }

    #[test]
    fn names_agree_with_the_json() {
        for scope in [Scope::Global, Scope::App, Scope::Signature] {
            assert_eq!(json(&scope), format!("{:?}", scope.as_str()));
        }
        for rule in [Rule::FailureRate, Rule::NewSignature] {
            assert_eq!(json(&rule), format!("{:?}", rule.as_str()));
        }
        for kind in [Kind::Alert, Kind::Resolved] {
            assert_eq!(json(&kind), format!("{:?}", kind.as_str()));
        }
    }

    #[test]
    fn the_event_keeps_its_wire_shape() {
        let event = AlertEvent {
            v: ALERT_VERSION,
            alert_id: Uuid::from_u128(0x01a2_08c2_d83a_75c3_91dc_f176_457e_1e09),
            kind: Kind::Alert,
            rule: Rule::FailureRate,
            scope: Scope::App,
            subject: "docker".into(),
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
            window: "24h".into(),
            threshold: Some(0.2),
            failure_rate: Some(0.5),
            started: 40,
            success: 20,
            failed: 20,
            aborted: 0,
            unknown: 0,
            apps: vec![],
            top_exit_codes: vec![ExitCodeCount {
                code: 100,
                category: crate::Category::Apt,
                description: "apt".into(),
                count: 20,
            }],
            top_signatures: vec![SignatureCount {
                signature: "E: x".into(),
                count: 20,
            }],
            dashboard_url: "http://dash.test/dashboard/apps/docker".into(),
        };
        let json = json(&event);
        assert_eq!(
            json,
            concat!(
                r#"{"v":1,"alert_id":"01a208c2-d83a-75c3-91dc-f176457e1e09","kind":"alert","#,
                r#""rule":"failure_rate","scope":"app","subject":"docker","at":"2023-11-14T22:13:20Z","#,
                r#""window":"24h","threshold":0.2,"failure_rate":0.5,"started":40,"success":20,"#,
                r#""failed":20,"aborted":0,"unknown":0,"apps":[],"#,
                r#""top_exit_codes":[{"code":100,"category":"apt","description":"apt","count":20}],"#,
                r#""top_signatures":[{"signature":"E: x","count":20}],"#,
                r#""dashboard_url":"http://dash.test/dashboard/apps/docker"}"#
            )
        );
        assert_eq!(
            alert_subject(&event),
            format!("{}.failure_rate.alert", crate::names::ALERTS_SUBJECT_PREFIX)
        );
        let back: AlertEvent = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, event);
    }
}
