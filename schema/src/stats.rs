//! The KV layout of `telemetry_stats` and the JSON shape of its values: what the aggregator publishes and
//! the web and the alerter read (documented in aggregator/README.md). Every key and field name here is on
//! the wire and in stored buckets, so it changes only with [`SNAPSHOT_VERSION`].

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::span::Span;

/// Version of every value's shape (`v`).
pub const SNAPSHOT_VERSION: u8 = 1;

/// Key of the aggregator's heartbeat ([`Meta`]).
pub const KEY_META: &str = "meta";
/// Key of the signatures first seen within the signature window ([`NewSignatures`]).
pub const KEY_NEW_SIGNATURES: &str = "signatures.new";

/// What a group of installs is: all of them, or those of one repo, type or app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Repo,
    Type,
    App,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Repo => "repo",
            Scope::Type => "type",
            Scope::App => "app",
        }
    }
}

/// `<window>.global`, `<window>.repo.<repo>`, `<window>.type.<type>`, `<window>.app.<encoded nsapp>`.
pub fn group_key(window: Span, scope: Scope, subject: &str) -> String {
    match scope {
        Scope::Global => format!("{}.global", window.label()),
        _ => format!(
            "{}.{}.{}",
            window.label(),
            scope.as_str(),
            encode_subject(subject)
        ),
    }
}

/// `<window>.apps`: the per-app summary list of one window.
pub fn apps_key(window: Span) -> String {
    format!("{}.apps", window.label())
}

/// Makes any text a valid key token: `[A-Za-z0-9_-]` stay, every other byte becomes `=XX` (hex).
pub fn encode_subject(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

/// The inverse of [`encode_subject`]; `None` for text it never produces.
pub fn decode_subject(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One exit code among the failures of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitCodeCount {
    pub code: u8,
    pub category: Category,
    pub description: String,
    pub count: u64,
}

/// One error category among the failures of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub category: Category,
    pub count: u64,
}

/// One error signature among the failures of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureCount {
    pub signature: String,
    pub count: u64,
}

/// A name and how many installs it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

/// The rollup of one group in one window: the value of `<window>.<scope>[.<subject>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub v: u8,
    /// Canonical window label (`1h`, `24h`, `7d`).
    pub window: String,
    pub window_secs: u64,
    pub scope: Scope,
    /// The repo, type or app; empty for the global group.
    pub subject: String,
    /// Installs whose first event lies in the window.
    pub started: u64,
    /// Of those, not final yet.
    pub in_progress: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    /// failed / (success + failed); `null` when both are 0.
    pub failure_rate: Option<f64>,
    /// Median install duration of the final installs, seconds (within 3 % above 64 s).
    pub duration_p50_secs: Option<u32>,
    pub duration_p95_secs: Option<u32>,
    /// Over failed, aborted and unknown installs, most frequent first.
    pub top_exit_codes: Vec<ExitCodeCount>,
    pub top_categories: Vec<CategoryCount>,
    pub top_signatures: Vec<SignatureCount>,
    /// At least this many distinct clients (`random_id`) started the group's installs: the number of
    /// distinct values of an 8-bit hash of their `random_id`, so exact for a few clients, a lower bound
    /// beyond, at most 256. Absent from an aggregator that predates it (the alerter then treats the
    /// group as having no clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u32>,
}

/// The most distinct clients [`GroupStats::clients`] can report.
pub const MAX_CLIENTS: u32 = 256;

/// One app's line in `<window>.apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    pub app: String,
    pub started: u64,
    pub in_progress: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    pub failure_rate: Option<f64>,
}

/// The value of `<window>.apps`: every tracked app with installs in the window, most installs first,
/// and the installs of every other app name summed in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppsIndex {
    pub v: u8,
    pub window: String,
    pub window_secs: u64,
    pub apps: Vec<AppSummary>,
    /// Installs of app names the aggregator does not track one by one (seen from fewer than
    /// `MIN_DISTINCT_INSTALLS` clients in its longest window, or beyond `MAX_TRACKED_APPS`); absent
    /// when there are none. Such names have no `<window>.app.<app>` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<OtherApps>,
}

/// The installs of the untracked app names of one window, summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherApps {
    /// Distinct untracked names with installs in the window.
    pub names: u64,
    pub started: u64,
    pub in_progress: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    pub failure_rate: Option<f64>,
}

/// A signature whose first install in the whole tracked history lies within the signature window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSignature {
    pub signature: String,
    /// Installs with this signature (all of them are within the signature window).
    pub installs: u64,
    /// Start of the earliest install with it (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: time::OffsetDateTime,
    /// The apps it hit, most installs first (at most 5).
    pub apps: Vec<NameCount>,
}

/// The value of `signatures.new`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSignatures {
    pub v: u8,
    /// The window a signature must be first seen in (e.g. `1h`).
    pub window: String,
    pub window_secs: u64,
    /// How far back "unseen" reaches: the longest window (e.g. `7d`).
    pub history: String,
    /// Most installs first, at most 100.
    pub signatures: Vec<NewSignature>,
}

/// The value of `meta`: the heartbeat of the replicas, rewritten at every publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub v: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: time::OffsetDateTime,
    pub windows: Vec<String>,
    /// Installs held in memory (the longest window).
    pub installs: u64,
    /// Of those, not final yet.
    pub in_progress: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(subject: &str, token: &str) {
        assert_eq!(encode_subject(subject), token, "{subject:?}");
        assert_eq!(decode_subject(token).as_deref(), Some(subject), "{token:?}");
    }

    #[test]
    fn subjects_encode_to_valid_key_tokens_and_back() {
        check("docker", "docker");
        check("home-assistant_os", "home-assistant_os");
        check("Docker Compose", "Docker=20Compose");
        check("a.b", "a=2Eb");
        check("a=b", "a=3Db");
        check("ü", "=C3=BC");
        check("", "=");
    }

    #[test]
    fn keys_follow_the_layout() {
        let day: Span = "24h".parse().expect("span");
        assert_eq!(group_key(day, Scope::Global, ""), "24h.global");
        assert_eq!(group_key(day, Scope::App, "My App"), "24h.app.My=20App");
        assert_eq!(
            group_key(day, Scope::Repo, "ProxmoxVE"),
            "24h.repo.ProxmoxVE"
        );
        assert_eq!(apps_key(day), "24h.apps");
        assert_eq!((KEY_META, KEY_NEW_SIGNATURES), ("meta", "signatures.new"));
    }

    #[test]
    fn group_stats_keep_their_wire_shape() {
        let json = concat!(
            r#"{"v":1,"window":"24h","window_secs":86400,"scope":"app","subject":"docker","#,
            r#""started":41,"in_progress":1,"success":20,"failed":20,"aborted":0,"unknown":0,"#,
            r#""failure_rate":0.5,"duration_p50_secs":60,"duration_p95_secs":null,"#,
            r#""top_exit_codes":[{"code":100,"category":"apt","description":"apt","count":20}],"#,
            r#""top_categories":[{"category":"apt","count":20}],"#,
            r#""top_signatures":[{"signature":"E: x","count":20}]}"#
        );
        let stats: GroupStats = serde_json::from_str(json).expect("group stats");
        assert_eq!((stats.scope, stats.failed), (Scope::App, 20));
        assert_eq!(stats.clients, None);
        assert_eq!(serde_json::to_string(&stats).expect("json"), json);
    }

    /// `clients` and `other` are additions of the same version: absent when unknown or empty (so a
    /// value without them keeps its shape above), read as `None` from a value that lacks them.
    #[test]
    fn clients_and_other_apps_keep_their_wire_shape() {
        let json = concat!(
            r#"{"v":1,"window":"1h","window_secs":3600,"scope":"app","subject":"docker","#,
            r#""started":3,"in_progress":0,"success":2,"failed":1,"aborted":0,"unknown":0,"#,
            r#""failure_rate":0.3333,"duration_p50_secs":null,"duration_p95_secs":null,"#,
            r#""top_exit_codes":[],"top_categories":[],"top_signatures":[],"clients":3}"#
        );
        let stats: GroupStats = serde_json::from_str(json).expect("group stats");
        assert_eq!(stats.clients, Some(3));
        assert_eq!(serde_json::to_string(&stats).expect("json"), json);

        let json = concat!(
            r#"{"v":1,"window":"1h","window_secs":3600,"apps":[],"#,
            r#""other":{"names":9000,"started":9000,"in_progress":0,"success":0,"#,
            r#""failed":9000,"aborted":0,"unknown":0,"failure_rate":1.0}}"#
        );
        let index: AppsIndex = serde_json::from_str(json).expect("apps index");
        assert_eq!(index.other.as_ref().map(|o| o.names), Some(9000));
        assert_eq!(serde_json::to_string(&index).expect("json"), json);
        let bare = r#"{"v":1,"window":"1h","window_secs":3600,"apps":[]}"#;
        let index: AppsIndex = serde_json::from_str(bare).expect("apps index");
        assert_eq!(index.other, None);
        assert_eq!(serde_json::to_string(&index).expect("json"), bare);
    }
}
