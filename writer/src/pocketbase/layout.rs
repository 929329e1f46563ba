//! What a PocketBase collection holds, read from its definition, and how an install is written to it:
//! only the fields the collection has, a value a select field does not hold replaced by `unknown`, the
//! log cut to the field's limit. A collection without the hidden `merge_state` (the running service's)
//! still merges right: the install's state is rebuilt from the record's own fields ([`Layout::rebuild`]),
//! since the record is the merged install as far as that collection can hold it.
//!
//! Rebuilt values carry the smallest stamp (the nil event id), so what the record holds wins over any
//! event that arrives later: "first" means first written to the record, where `merge_state` knows the
//! first by event id. The two agree whenever the stream delivers an install's events in the order the
//! edge received them; the writer's README lists what else is lost without `merge_state`.

use std::collections::BTreeMap;

use schema::category::Category;
use schema::event::{CpuVendor, GpuPassthrough, GpuVendor, Kind, RepoSource, Status};
use schema::merge::{InstallState, Outcome, Stamped};
use schema::privacy::cut_log;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where the writer notes that it created a collection: the help text of its `execution_id` field,
/// set only in the definition the writer creates (never on a field it adds to an existing collection),
/// shown under the field in PocketBase's admin UI and read back at every start.
pub const CREATED_MARKER: &str = "Created by telemetry-writer";

/// The help text of `execution_id` in a collection the writer created.
pub const CREATED_HELP: &str =
    "Created by telemetry-writer: one record per install. The writer reads \
this note to know that it created this collection (its retention may then delete old records).";

/// PocketBase's limit for a text field whose `max` is 0, in characters.
pub const DEFAULT_TEXT_MAX: usize = 5000;

/// The fields whose value comes whole from the final that decided the status: written as they are,
/// even empty (a `success` that beat an `unknown` clears its exit code and error).
const OUTCOME_FIELDS: [&str; 4] = ["exit_code", "error", "error_category", "install_duration"];

/// Fields a replaced value would falsify (an `installing` written as `unknown` would read back as a
/// final): a value their select does not hold is refused by PocketBase, and the event dead-lettered.
const IDENTITY_FIELDS: [&str; 4] = ["execution_id", "random_id", "type", "status"];

/// A field of the collection, as the writer writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// At most this many characters.
    Text {
        max: usize,
    },
    Number,
    Bool,
    /// One of these values (or empty).
    Select {
        values: Vec<String>,
    },
    Json,
    /// Any other type (autodate, relation, file, …): never written.
    Other,
}

impl FieldKind {
    fn read(field: &Value) -> FieldKind {
        match field["type"].as_str().unwrap_or_default() {
            "text" | "editor" | "email" | "url" => {
                let max = field["max"].as_u64().unwrap_or(0) as usize;
                FieldKind::Text {
                    max: if max == 0 { DEFAULT_TEXT_MAX } else { max },
                }
            }
            "number" => FieldKind::Number,
            "bool" => FieldKind::Bool,
            "select" => FieldKind::Select {
                values: field["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            },
            "json" => FieldKind::Json,
            _ => FieldKind::Other,
        }
    }

    /// A value as PocketBase stores it: absent numbers are 0, absent texts "", absent bools false.
    fn normalize(&self, value: &Value) -> Value {
        match self {
            FieldKind::Number => json!(value.as_f64().unwrap_or(0.0)),
            FieldKind::Text { .. } | FieldKind::Select { .. } => {
                json!(value.as_str().unwrap_or_default())
            }
            FieldKind::Bool => json!(value.as_bool().unwrap_or(false)),
            FieldKind::Json | FieldKind::Other => value.clone(),
        }
    }
}

/// One change the writer would make to the collection or the instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A field of [`super::collection_fields`] the collection lacks.
    AddField(Value),
    /// A unique index on `execution_id` (one record per install, also under a race of two writers).
    AddUniqueIndex(String),
    /// Enable the batch API or raise its limits (instance-wide settings).
    Batch {
        enabled: bool,
        max_requests: u64,
        timeout: u64,
        wanted_requests: u64,
        wanted_timeout: u64,
    },
}

impl Change {
    /// True for a change of the instance's settings (as opposed to the collection's definition).
    pub fn is_setting(&self) -> bool {
        matches!(self, Change::Batch { .. })
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::AddField(field) => {
                let name = field["name"].as_str().unwrap_or_default();
                let kind = field["type"].as_str().unwrap_or_default();
                let hidden = if field["hidden"].as_bool() == Some(true) {
                    "hidden "
                } else {
                    ""
                };
                write!(f, "add field {name} ({hidden}{kind})")
            }
            Change::AddUniqueIndex(_) => write!(f, "add unique index on execution_id"),
            Change::Batch {
                enabled: false,
                wanted_requests,
                wanted_timeout,
                ..
            } => write!(
                f,
                "enable batch API (maxRequests {wanted_requests}, timeout {wanted_timeout} s)"
            ),
            Change::Batch {
                max_requests,
                timeout,
                wanted_requests,
                wanted_timeout,
                ..
            } => write!(
                f,
                "raise batch API limits (maxRequests {max_requests} -> {wanted_requests}, timeout {timeout} -> {wanted_timeout} s)"
            ),
        }
    }
}

/// What a collection holds, read from its definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Every field by name.
    pub fields: BTreeMap<String, FieldKind>,
    /// A unique index on `execution_id` alone exists.
    pub unique_execution_id: bool,
    /// The writer created this collection ([`CREATED_MARKER`]).
    pub created_by_fleet: bool,
}

impl Layout {
    /// Reads a collection definition as `GET /api/collections/{name}` answers it.
    pub fn read(definition: &Value) -> Layout {
        let mut layout = Layout::default();
        for field in definition["fields"].as_array().into_iter().flatten() {
            let Some(name) = field["name"].as_str() else {
                continue;
            };
            if name == "execution_id" {
                layout.created_by_fleet = field["help"]
                    .as_str()
                    .is_some_and(|h| h.starts_with(CREATED_MARKER));
            }
            layout
                .fields
                .insert(name.to_string(), FieldKind::read(field));
        }
        layout.unique_execution_id = definition["indexes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(is_unique_execution_id);
        layout
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The collection keeps each install's full merge state.
    pub fn keeps_merge_state(&self) -> bool {
        matches!(self.fields.get("merge_state"), Some(FieldKind::Json))
    }

    /// What the writer would change on this collection to write everything precisely: the fields of
    /// `wanted` it lacks, and a unique index on `execution_id`.
    pub fn changes(&self, collection: &str, wanted: &[Value]) -> Vec<Change> {
        let mut changes: Vec<Change> = wanted
            .iter()
            .filter(|f| f["name"].as_str().is_some_and(|n| !self.has(n)))
            .cloned()
            .map(Change::AddField)
            .collect();
        if !self.unique_execution_id {
            changes.push(Change::AddUniqueIndex(format!(
                "CREATE UNIQUE INDEX idx_{collection}_execution_id_unique ON {collection} (execution_id)"
            )));
        }
        changes
    }

    /// The fields of `wanted` the collection lacks: never written.
    pub fn unwritten(&self, wanted: &[Value]) -> Vec<String> {
        wanted
            .iter()
            .filter_map(|f| f["name"].as_str())
            .filter(|n| !self.has(n))
            .map(str::to_string)
            .collect()
    }

    /// The record of `state` for this collection: the fields it has (never the autodates), a value a
    /// select field does not hold as `unknown` (or empty when `unknown` is not one of its values
    /// either), the log cut to the field's limit (its first line and its end; the running service's
    /// `error` holds 5000 characters, an event's up to 128 KiB). Also returns the fields whose value
    /// was replaced.
    pub fn body(&self, state: &InstallState) -> (Map<String, Value>, Vec<String>) {
        let full = super::record(state);
        let mut body = Map::new();
        let mut replaced = Vec::new();
        for (name, value) in full.as_object().into_iter().flatten() {
            let Some(kind) = self.fields.get(name) else {
                continue;
            };
            let value = match (kind, value) {
                (FieldKind::Other, _) => continue,
                (FieldKind::Select { values }, Value::String(s))
                    if !s.is_empty()
                        && !values.contains(s)
                        && !IDENTITY_FIELDS.contains(&name.as_str()) =>
                {
                    replaced.push(name.clone());
                    let unknown = values.iter().any(|v| v == "unknown");
                    json!(if unknown { "unknown" } else { "" })
                }
                // Only the log can outgrow a collection: every other text has its contract limit, and a
                // value over the field's limit is refused (and dead-lettered) rather than changed.
                (FieldKind::Text { max }, Value::String(s))
                    if name == "error" && s.chars().count() > *max =>
                {
                    // Cutting to `max` bytes keeps at most `max` characters.
                    json!(cut_log(s, *max))
                }
                _ => value.clone(),
            };
            body.insert(name.clone(), value);
        }
        (body, replaced)
    }

    /// The part of `body` that differs from the stored `record`, compared as PocketBase stores values.
    /// A field outside the outcome is never blanked: an empty value in `body` keeps what the record
    /// holds (a value the writer could not read back, like a number 0 or an unknown vendor name).
    /// `merge_state` is left to the caller.
    pub fn diff(&self, body: &Map<String, Value>, record: &Value) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, value) in body {
            if name == "merge_state" {
                continue;
            }
            let Some(kind) = self.fields.get(name) else {
                continue;
            };
            let new = kind.normalize(value);
            let old = kind.normalize(&record[name.as_str()]);
            if new == old {
                continue;
            }
            let empty = kind.normalize(&Value::Null);
            if new == empty && !OUTCOME_FIELDS.contains(&name.as_str()) {
                continue;
            }
            out.insert(name.clone(), value.clone());
        }
        out
    }

    /// The install's state rebuilt from a record without a usable `merge_state`: every value the
    /// record holds, stamped with the nil event id (so it stays first), values it could not read with
    /// the largest id (so any event replaces them). `fallback` stands in for `created`/`updated` when
    /// the collection has no such field. None when the record has no `execution_id`.
    pub fn rebuild(&self, record: &Value, fallback: OffsetDateTime) -> Option<InstallState> {
        let execution_id = text(record, "execution_id")?;
        let random_id = text(record, "random_id")
            .map(kept)
            .unwrap_or_else(|| guessed(execution_id.clone()));
        let kind = match text(record, "type").as_deref() {
            Some("tool") => Some(Kind::Pve),
            Some(t) => parse::<Kind>(t),
            None => None,
        }
        .map(kept)
        .unwrap_or_else(|| guessed(Kind::Lxc));
        let nsapp = text(record, "nsapp")
            .map(kept)
            .unwrap_or_else(|| guessed(String::new()));
        let repo_source = text(record, "repo_source")
            .and_then(|s| RepoSource::ALL.into_iter().find(|r| r.as_str() == s))
            .map(kept)
            .unwrap_or_else(|| guessed(RepoSource::ProxmoxVE));
        let status = text(record, "status")
            .and_then(|s| parse::<Status>(&s))
            .map(kept)
            .unwrap_or_else(|| guessed(Status::Installing));
        let first_seen = time_of(record, "created").unwrap_or(fallback);
        let last_seen = time_of(record, "updated")
            .unwrap_or(first_seen)
            .max(first_seen);
        let duration = number(record, "install_duration");
        let outcome = (status.from.is_nil() && status.value.is_final()).then(|| Outcome {
            status: status.value,
            from: Uuid::nil(),
            at: last_seen,
            exit_code: number(record, "exit_code").and_then(|n| u8::try_from(n).ok()),
            error: text(record, "error"),
            error_category: text(record, "error_category").and_then(|c| Category::parse(&c)),
            // The record shows the install's duration: keep it, even 0, while this final decides.
            install_duration: Some(
                record["install_duration"]
                    .as_f64()
                    .map_or(0, |d| d.clamp(0.0, f64::from(u32::MAX)) as u32),
            ),
        });
        let vendor = |name: &str| text(record, name);
        let cpu_vendor = vendor("cpu_vendor").map(|v| CpuVendor::fold(&v));
        let gpu_vendor = vendor("gpu_vendor").map(|v| GpuVendor::fold(&v));
        let gpu_passthrough = vendor("gpu_passthrough").map(|v| GpuPassthrough::fold(&v));
        let stamped_text = |name: &str| text(record, name).map(kept);
        Some(InstallState {
            execution_id,
            random_id,
            kind,
            nsapp,
            repo_source,
            status,
            outcome,
            first_seen,
            last_seen,
            ct_type: number(record, "ct_type")
                .and_then(|n| u8::try_from(n).ok())
                .map(kept),
            disk_size: number(record, "disk_size").map(kept),
            core_count: number(record, "core_count")
                .and_then(|n| u16::try_from(n).ok())
                .map(kept),
            ram_size: number(record, "ram_size").map(kept),
            os_type: stamped_text("os_type"),
            os_version: stamped_text("os_version"),
            pve_version: stamped_text("pve_version"),
            method: stamped_text("method"),
            longest_duration: duration.map(kept),
            cpu_vendor: cpu_vendor.map(|v| weak(v, v == CpuVendor::Unknown)),
            cpu_model: stamped_text("cpu_model"),
            gpu_vendor: gpu_vendor.map(|v| weak(v, v == GpuVendor::Unknown)),
            gpu_model: stamped_text("gpu_model"),
            gpu_passthrough: gpu_passthrough.map(|v| weak(v, v == GpuPassthrough::Unknown)),
            ram_speed: stamped_text("ram_speed"),
            repo_slug: stamped_text("repo_slug"),
            has_arm: (record["has_arm"].as_bool() == Some(true)).then(|| kept(true)),
            arch: stamped_text("arch"),
            others: Vec::new(),
        })
    }
}

/// A value the record holds: first, before any event.
fn kept<T>(value: T) -> Stamped<T> {
    weak(value, false)
}

/// A stand-in for a value the record could not give: any event's value replaces it.
fn guessed<T>(value: T) -> Stamped<T> {
    Stamped {
        value,
        from: Uuid::max(),
        weak: false,
    }
}

fn weak<T>(value: T, weak: bool) -> Stamped<T> {
    Stamped {
        value,
        from: Uuid::nil(),
        weak,
    }
}

/// A non-empty string field of a record.
fn text(record: &Value, name: &str) -> Option<String> {
    record[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A positive whole number field of a record (PocketBase stores an absent number as 0).
fn number(record: &Value, name: &str) -> Option<u32> {
    let n = record[name].as_f64()?;
    (n >= 1.0 && n <= f64::from(u32::MAX)).then_some(n as u32)
}

/// A PocketBase datetime (`2026-01-02 03:04:05.678Z`).
fn time_of(record: &Value, name: &str) -> Option<OffsetDateTime> {
    let s = record[name].as_str()?.replacen(' ', "T", 1);
    OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).ok()
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(json!(s)).ok()
}

/// True for `CREATE UNIQUE INDEX … (execution_id)` in any quoting.
fn is_unique_execution_id(index: &str) -> bool {
    let upper = index.to_ascii_uppercase();
    if !upper.contains("UNIQUE") {
        return false;
    }
    let (Some(open), Some(close)) = (index.rfind('('), index.rfind(')')) else {
        return false;
    };
    let columns: String = index[open + 1..close.max(open + 1)]
        .chars()
        .filter(|c| !matches!(c, '`' | '"' | '[' | ']' | ' '))
        .collect();
    columns == "execution_id"
}

#[cfg(test)]
mod tests {
    use schema::merge::merge;
    use schema::{Event, Reception};

    use super::*;

    /// The running service's collection: its field names, `error_category` a select of its values.
    fn original() -> Layout {
        let text = |name: &str| json!({"name": name, "type": "text"});
        let number = |name: &str| json!({"name": name, "type": "number"});
        let mut fields = vec![json!({"name": "id", "type": "text", "max": 15})];
        fields.extend(["random_id", "execution_id", "type", "nsapp", "status"].map(text));
        fields.extend(["ct_type", "disk_size", "core_count", "ram_size"].map(number));
        fields.extend(["os_type", "os_version", "pve_version", "method", "error"].map(text));
        fields.push(number("exit_code"));
        fields.extend(
            [
                "gpu_vendor",
                "gpu_model",
                "gpu_passthrough",
                "cpu_vendor",
                "cpu_model",
                "ram_speed",
            ]
            .map(text),
        );
        fields.push(number("install_duration"));
        fields.push(json!({"name": "error_category", "type": "select", "maxSelect": 1,
            "values": ["network", "storage", "dependency", "permission", "timeout", "config", "resource",
                       "unknown", "user_aborted", "apt", "command_not_found", "service", "database",
                       "signal", "proxmox"]}));
        fields.push(text("repo_source"));
        fields.push(json!({"name": "created", "type": "autodate"}));
        fields.push(json!({"name": "updated", "type": "autodate"}));
        Layout::read(&json!({
            "fields": fields,
            "indexes": ["CREATE UNIQUE INDEX `idx_exec` ON `telemetry` (`execution_id`)"],
        }))
    }

    fn event(n: u64, body: &str) -> Event {
        let base = OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("time");
        let received_at = base + time::Duration::seconds(n as i64);
        // Time-ordered ids in the order of `n`, like the edge gives them.
        let event_id = Uuid::from_u128((u128::from(n) + 1) << 80 | 0x7000 << 64);
        schema::validate(
            body.as_bytes(),
            Reception {
                event_id,
                received_at,
            },
        )
        .expect("valid")
        .event
    }

    fn fold(events: &[&Event]) -> Option<InstallState> {
        events.iter().fold(None, |state, e| Some(merge(state, e)))
    }

    /// What PocketBase gives back for a body: absent values as it stores them, plus the autodates.
    fn stored(layout: &Layout, body: &Map<String, Value>) -> Value {
        let mut record = Map::new();
        for (name, kind) in &layout.fields {
            let value = body.get(name).cloned().unwrap_or(Value::Null);
            record.insert(name.clone(), kind.normalize(&value));
        }
        record.insert("created".into(), json!("2026-06-01 10:00:00.000Z"));
        record.insert("updated".into(), json!("2026-06-01 10:00:05.000Z"));
        Value::Object(record)
    }

    /// Writes `first` as the writer would, then merges `then` into the record rebuilt from it; the
    /// record must end as if every event went through `merge_state` (the body of the full merge).
    fn check(first: &[&Event], then: &[&Event], changes: bool) {
        let layout = original();
        let (body, _) = layout.body(&fold(first).expect("state"));
        let record = stored(&layout, &body);
        let mut state = layout.rebuild(&record, OffsetDateTime::UNIX_EPOCH);
        for e in then {
            state = Some(merge(state, e));
        }
        let (merged, _) = layout.body(&state.expect("state"));
        let diff = layout.diff(&merged, &record);
        assert_eq!(!diff.is_empty(), changes, "changes {diff:?}");
        let all: Vec<&Event> = first.iter().chain(then).copied().collect();
        let (want, _) = layout.body(&fold(&all).expect("state"));
        let mut got = record.as_object().cloned().expect("record");
        got.extend(diff);
        assert_eq!(stored(&layout, &got), stored(&layout, &want));
    }

    const HEAD: &str = r#""random_id":"r1","type":"lxc","nsapp":"jellyfin""#;

    fn installing(n: u64) -> Event {
        event(
            n,
            &format!(
                r#"{{{HEAD},"status":"installing","disk_size":8,"core_count":2,"ram_size":2048,"os_type":"debian","os_version":"12","cpu_vendor":"intel","gpu_vendor":"unknown","install_duration":0}}"#
            ),
        )
    }

    fn ping(n: u64) -> Event {
        event(
            n,
            &format!(r#"{{{HEAD},"status":"configuring","cpu_vendor":"unknown"}}"#),
        )
    }

    fn final_(n: u64, status: &str, exit: u8, extra: &str) -> Event {
        event(
            n,
            &format!(
                r#"{{{HEAD},"status":"{status}","exit_code":{exit},"error":"E: broke","install_duration":388,"gpu_vendor":"nvidia"{extra}}}"#
            ),
        )
    }

    #[test]
    fn a_record_without_merge_state_merges_like_merge_state() {
        let (i, p) = (installing(1), ping(2));
        let success = final_(3, "success", 0, "");
        let failed = final_(3, "failed", 100, "");
        let unknown = final_(3, "unknown", 5, "");
        let later_success = final_(4, "success", 0, "");
        let retry = final_(5, "failed", 100, r#","error":"E: bro""#);
        // installing, then the rest.
        check(&[&i], &[&p, &success], true);
        check(&[&i, &p], &[&failed], true);
        // The final first (received first), then the installing and a ping.
        check(&[&failed], &[&i, &p], true);
        check(&[&success], &[&i], true);
        // A retried final, a redelivery, a late ping: nothing changes.
        check(&[&i, &failed], &[&retry], false);
        check(&[&i, &failed], &[&failed], false);
        check(&[&i, &p, &success], &[&p], false);
        // A real final beats unknown, and takes the outcome whole (exit code, error cleared).
        check(&[&i, &unknown], &[&later_success], true);
        // The first real final stays.
        check(&[&i, &failed], &[&later_success], false);
    }

    #[test]
    fn without_merge_state_first_means_first_written() {
        // The documented loss: an installing received before the final but delivered after it. With
        // merge_state its values win (earlier event id); without, the final's, written first, stay.
        let layout = original();
        let i = event(
            1,
            &format!(r#"{{{HEAD},"status":"installing","cpu_vendor":"intel","disk_size":8}}"#),
        );
        let f = event(
            2,
            &format!(r#"{{{HEAD},"status":"success","exit_code":0,"cpu_vendor":"amd"}}"#),
        );
        let (body, _) = layout.body(&fold(&[&f]).expect("state"));
        let record = stored(&layout, &body);
        let rebuilt = layout.rebuild(&record, OffsetDateTime::UNIX_EPOCH);
        let (merged, _) = layout.body(&merge(rebuilt, &i));
        let (precise, _) = layout.body(&fold(&[&f, &i]).expect("state"));
        assert_eq!(
            (&merged["cpu_vendor"], &precise["cpu_vendor"]),
            (&json!("amd"), &json!("intel"))
        );
        // Values the final lacked are filled either way.
        assert_eq!(
            (&merged["disk_size"], &merged["status"]),
            (&json!(8), &json!("success"))
        );
    }

    #[test]
    fn a_category_the_select_lacks_is_written_as_unknown() {
        let layout = original();
        let check = |category: &str, expected: &str, replaced: bool| {
            let failed = final_(
                1,
                "failed",
                1,
                &format!(r#","error_category":"{category}""#),
            );
            let (body, fields) = layout.body(&fold(&[&failed]).expect("state"));
            assert_eq!(body["error_category"], expected, "{category}");
            assert_eq!(fields == ["error_category"], replaced, "{category}");
        };
        check("shell", "unknown", true);
        check("preflight", "unknown", true);
        check("network", "network", false);
        check("apt", "apt", false);
    }

    #[test]
    fn only_the_fields_of_the_collection_are_written_and_texts_fit() {
        let layout = original();
        let long = "x".repeat(DEFAULT_TEXT_MAX * 2);
        let e = event(
            1,
            &format!(
                r#"{{{HEAD},"status":"failed","exit_code":1,"error":"first line\n{long}","repo_slug":"a/b","has_arm":true,"arch":"arm64"}}"#
            ),
        );
        let (body, _) = layout.body(&fold(&[&e]).expect("state"));
        for absent in [
            "merge_state",
            "repo_slug",
            "has_arm",
            "arch",
            "created",
            "updated",
        ] {
            assert!(!body.contains_key(absent), "{absent}");
        }
        let error = body["error"].as_str().expect("error");
        assert!(error.chars().count() <= DEFAULT_TEXT_MAX, "{}", error.len());
        assert!(error.starts_with("first line"), "{error:.40}");
        assert!(error.ends_with("xxx"));
    }

    #[test]
    fn the_definition_says_what_the_collection_holds() {
        let original = original();
        assert!(!original.created_by_fleet);
        assert!(original.unique_execution_id);
        assert!(!original.keeps_merge_state());
        let wanted = super::super::collection_fields();
        assert_eq!(
            original.unwritten(&wanted),
            ["repo_slug", "has_arm", "arch", "merge_state"]
        );
        let listed: Vec<String> = original
            .changes("telemetry", &wanted)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            listed,
            [
                "add field repo_slug (text)",
                "add field has_arm (bool)",
                "add field arch (text)",
                "add field merge_state (hidden json)"
            ]
        );

        let ours = Layout::read(&super::super::creation_definition("telemetry"));
        assert!(ours.created_by_fleet);
        assert!(ours.keeps_merge_state());
        assert!(ours.changes("telemetry", &wanted).is_empty());
    }

    #[test]
    fn unique_indexes_on_execution_id_are_recognized() {
        let check = |index: &str, expected: bool| {
            assert_eq!(is_unique_execution_id(index), expected, "{index}");
        };
        check("CREATE UNIQUE INDEX idx_t ON t (execution_id)", true);
        check("CREATE UNIQUE INDEX `idx_t` ON `t` (`execution_id`)", true);
        check("create unique index idx_t on t ( execution_id )", true);
        check("CREATE INDEX idx_t ON t (execution_id)", false);
        check(
            "CREATE UNIQUE INDEX idx_t ON t (execution_id, nsapp)",
            false,
        );
        check("CREATE UNIQUE INDEX idx_t ON t (random_id)", false);
    }

    #[test]
    fn batch_changes_name_what_they_do() {
        let check = |change: Change, expected: &str| assert_eq!(change.to_string(), expected);
        check(
            Change::Batch {
                enabled: false,
                max_requests: 50,
                timeout: 3,
                wanted_requests: 200,
                wanted_timeout: 30,
            },
            "enable batch API (maxRequests 200, timeout 30 s)",
        );
        check(
            Change::Batch {
                enabled: true,
                max_requests: 50,
                timeout: 3,
                wanted_requests: 200,
                wanted_timeout: 30,
            },
            "raise batch API limits (maxRequests 50 -> 200, timeout 3 -> 30 s)",
        );
        check(
            Change::AddUniqueIndex(String::new()),
            "add unique index on execution_id",
        );
    }
}
