//! From a stored record to an [`Event`], by the edge's rules: the record's fields become the body a
//! script would have sent (bookkeeping of the store dropped, empty strings absent, since both stores
//! write `""` for a text nobody sent), `schema::validate` repairs, normalizes, reclassifies and masks it,
//! and the event is received at the record's `created` with an id that depends only on the record, so a
//! second import writes the very same rows. Pure functions, no I/O.

use schema::{Event, Reception, RejectCode, Rejection, RescueKind};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Fields a store keeps about a record that no script sent: never part of the body.
pub const STORE_FIELDS: &[&str] = &[
    "id",
    "created",
    "updated",
    "collectionId",
    "collectionName",
    "expand",
    "merge_state",
    "_import_ms",
    "_import_id",
];

/// Rejection kind of a record whose `created` is missing.
pub const MISSING_CREATED: &str = "missing_field:created";
/// Rejection kind of a record whose `created` is not a time.
pub const INVALID_CREATED: &str = "invalid_field:created";
/// Rejection kind of an event the target store refused.
pub const STORE_REJECTED: &str = "rejected_by_clickhouse";

/// One record of a source, as read: who it is, when it was received, and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The source's own identity of the record (PocketBase record id, ClickHouse row id, ...).
    pub identity: String,
    /// When the source received it; becomes the event's `received_at`.
    pub created: OffsetDateTime,
    pub fields: Map<String, Value>,
    /// Repairs the rescue pass made while reading a raw line (files only).
    pub rescued: Vec<RescueKind>,
}

/// The body a script would have sent for these stored fields.
pub fn body(mut fields: Map<String, Value>) -> Vec<u8> {
    fields.retain(|key, value| {
        !STORE_FIELDS.contains(&key.as_str())
            && !matches!(value, Value::String(s) if s.trim().is_empty())
    });
    serde_json::to_vec(&fields).unwrap_or_default()
}

/// The event id of a record: a UUIDv7 whose time is `created` and whose other bits come from a hash of
/// the record's identity, so the same record always gets the same id, in time order with the others.
pub fn event_id(identity: &str, created: OffsetDateTime) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"telemetry-import\0")
        .chain_update(identity.as_bytes())
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Runs a record through the edge's rules. The error is the rejection kind, e.g. `invalid_field:nsapp`.
pub fn to_event(record: Record) -> Result<Event, String> {
    let reception = Reception {
        event_id: event_id(&record.identity, record.created),
        received_at: record.created,
    };
    let mut event = schema::validate(&body(record.fields), reception)
        .map_err(|r| rejection_kind(&r))?
        .event;
    if !record.rescued.is_empty() {
        // The body validate saw was rebuilt from the repaired line; keep the repairs of the line.
        event.rescued = record.rescued;
    }
    Ok(event)
}

/// The kind of a rejection as the report counts it: the code, and the field when one is to blame.
pub fn rejection_kind(rejection: &Rejection) -> String {
    match (rejection.code, rejection.field) {
        (RejectCode::InvalidJson, _) | (_, None) => rejection.code.as_str().to_string(),
        (code, Some(field)) => format!("{}:{field}", code.as_str()),
    }
}

/// A stored time: RFC 3339, PocketBase's `2025-01-05 12:34:56.789Z`, or ClickHouse's
/// `2025-01-05 12:34:56[.789]` (read as UTC).
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if text.len() < 19 || !text.is_char_boundary(10) || !text.is_char_boundary(11) {
        return None;
    }
    let mut iso = format!("{}T{}", &text[..10], &text[11..]);
    let has_offset = iso
        .get(19..)
        .is_some_and(|rest| rest.contains(['Z', 'z', '+', '-']));
    if !has_offset {
        iso.push('Z');
    }
    OffsetDateTime::parse(&iso, &Rfc3339).ok()
}

/// The `created` of a record's fields: a time string, or a number of seconds since the epoch.
pub fn created_of(fields: &Map<String, Value>, names: &[&str]) -> Result<OffsetDateTime, String> {
    let Some(value) = names.iter().find_map(|n| fields.get(*n)) else {
        return Err(MISSING_CREATED.into());
    };
    let parsed = match value {
        Value::String(s) if s.trim().is_empty() => return Err(MISSING_CREATED.into()),
        Value::String(s) => parse_time(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok()),
        Value::Null => return Err(MISSING_CREATED.into()),
        _ => None,
    };
    parsed.ok_or_else(|| INVALID_CREATED.into())
}

/// A value as an identity: a string as is, a number in decimal; anything else is no identity.
pub fn identity_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn record(fields: Value) -> Record {
        Record {
            identity: "rec1".into(),
            created: datetime!(2025-03-04 05:06:07.089 UTC),
            fields: fields.as_object().cloned().expect("object"),
            rescued: Vec::new(),
        }
    }

    /// What the record becomes: its status and exit code, or the rejection kind.
    fn check(fields: Value, expected: Result<(&str, Option<u8>), &str>) {
        let got = to_event(record(fields.clone())).map(|e| (e.status.as_str(), e.exit_code));
        assert_eq!(got, expected.map_err(str::to_string), "{fields}");
    }

    #[test]
    fn records_follow_the_edge_rules() {
        let base = |extra: Value| {
            let mut v = json!({"id": "abc", "created": "2025-03-04 05:06:07.089Z", "updated": "x",
                "collectionId": "pbc_1", "collectionName": "telemetry",
                "random_id": "r-1", "execution_id": "", "type": "lxc", "nsapp": "jellyfin",
                "status": "installing", "error": "", "error_category": "", "exit_code": 0});
            for (k, val) in extra.as_object().expect("object") {
                v[k] = val.clone();
            }
            v
        };
        check(base(json!({})), Ok(("installing", Some(0))));
        check(base(json!({"status": "sucess"})), Ok(("success", Some(0))));
        check(base(json!({"status": "failed"})), Ok(("success", Some(0))));
        check(
            base(json!({"status": "failed", "exit_code": 100})),
            Ok(("failed", Some(100))),
        );
        check(
            base(json!({"status": "failed", "exit_code": 130})),
            Ok(("aborted", Some(130))),
        );
        check(
            base(json!({"status": "weird", "exit_code": 5})),
            Ok(("unknown", Some(5))),
        );
        check(base(json!({"nsapp": ""})), Err("missing_field:nsapp"));
        check(base(json!({"type": "  "})), Err("missing_field:type"));
        check(base(json!({"type": "lxc2"})), Err("invalid_field:type"));
        check(
            base(json!({"random_id": "a b"})),
            Err("invalid_field:random_id"),
        );
        check(
            base(json!({"disk_size": 999_999})),
            Err("invalid_field:disk_size"),
        );
        check(
            base(json!({"exit_code": -1})),
            Err("invalid_field:exit_code"),
        );
    }

    #[test]
    fn the_body_keeps_what_a_script_sends() {
        let fields = json!({"id": "abc", "created": "2025-01-01 00:00:00.000Z", "collectionId": "c",
            "nsapp": "x", "execution_id": "", "os_type": " ", "disk_size": 0, "repo_slug": "a/b", "has_arm": 1,
            "merge_state": {"a": 1}, "_import_ms": "1", "_import_id": "i"});
        let body: Value =
            serde_json::from_slice(&body(fields.as_object().cloned().expect("object"))).unwrap();
        assert_eq!(
            body,
            json!({"nsapp": "x", "disk_size": 0, "repo_slug": "a/b", "has_arm": 1})
        );
    }

    #[test]
    fn execution_id_falls_back_to_random_id() {
        let event = to_event(record(
            json!({"random_id": "r-9", "execution_id": "", "type": "vm",
            "nsapp": "haos", "status": "success"}),
        ))
        .expect("valid");
        assert_eq!(event.execution_id, "r-9");
        assert_eq!(event.received_at, datetime!(2025-03-04 05:06:07.089 UTC));
    }

    #[test]
    fn event_ids_depend_only_on_the_record() {
        let at = datetime!(2025-03-04 05:06:07.089 UTC);
        let a = event_id("rec1", at);
        assert_eq!(a, event_id("rec1", at));
        assert_ne!(a, event_id("rec2", at));
        assert_eq!(a.get_version_num(), 7);
        let (secs, nanos) = a.get_timestamp().expect("v7 time").to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_741_064_767, 89));
        // Time order between records follows `created`.
        assert!(event_id("zzz", at) < event_id("aaa", at + time::Duration::milliseconds(1)));
    }

    #[test]
    fn times_in_every_stored_shape() {
        let check = |text: &str, expected: Option<OffsetDateTime>| {
            assert_eq!(parse_time(text), expected, "{text}");
        };
        let t = datetime!(2025-01-05 12:34:56.789 UTC);
        check("2025-01-05 12:34:56.789Z", Some(t));
        check("2025-01-05T12:34:56.789Z", Some(t));
        check("2025-01-05 12:34:56.789", Some(t));
        check("2025-01-05T14:34:56.789+02:00", Some(t));
        check(
            "2025-01-05 12:34:56",
            Some(datetime!(2025-01-05 12:34:56 UTC)),
        );
        check("2025-01-05", None);
        check("yesterday at noon, roughly", None);
        check("", None);
        check("2025-01-05é12:34:56", None);
    }

    #[test]
    fn created_from_strings_or_epoch_seconds() {
        let check = |fields: Value, expected: Result<OffsetDateTime, &str>| {
            let map = fields.as_object().cloned().expect("object");
            assert_eq!(
                created_of(&map, &["created", "received_at"]),
                expected.map_err(str::to_string),
                "{fields}"
            );
        };
        let t = datetime!(2025-01-05 12:34:56 UTC);
        check(json!({"created": "2025-01-05 12:34:56Z"}), Ok(t));
        check(json!({"received_at": "2025-01-05T12:34:56Z"}), Ok(t));
        check(json!({"created": 1_736_080_496}), Ok(t));
        check(json!({}), Err(MISSING_CREATED));
        check(json!({"created": ""}), Err(MISSING_CREATED));
        check(json!({"created": null}), Err(MISSING_CREATED));
        check(json!({"created": "soon"}), Err(INVALID_CREATED));
        check(json!({"created": [1]}), Err(INVALID_CREATED));
    }
}
