//! `schema::validate` against every rule of the field table of contract §3, with the edges of each range:
//! integers (min, max, one past each end, quoted, integral and fractional floats, wrong types, `null`,
//! numbers too big for any integer type), the id pattern, `type`, `nsapp`, `status`, free-text strings
//! (trim, CR/LF, cuts at a character boundary, lower-cased `os_type` and `arch`), the folding enums,
//! `repo_source`, `repo_slug` and `has_arm` (dropped and counted when bad), `error_category`, the
//! reclassification of finals in its order (with the phrase groups of the log), privacy masking of the log, unknown
//! fields, the `Nats-Msg-Id`, each rescue kind of §4 seen through `validate`, bodies that are not JSON
//! objects, and ~2,000 deterministic mutations of the corpus that must never panic. Every row goes
//! through `check`, which also asserts the invariants any accepted event keeps.

use std::path::PathBuf;

use schema::privacy::MAX_ERROR_BYTES;
use schema::validate::{
    Reclassified, MAX_ARCH_BYTES, MAX_ID_LEN, MAX_MODEL_BYTES, MAX_NSAPP_BYTES,
    MAX_RAM_SPEED_BYTES, MAX_REPO_SLUG_BYTES, MAX_SHORT_BYTES,
};
use schema::{exit_codes, Accepted, Category, Event, Reception, RejectCode, Status};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// A field value in [`body`] that removes the field from the base body.
const ABSENT: &str = "\u{0}absent";

/// The smallest accepted body; rows override, add or remove fields (values are raw JSON text).
const BASE: [(&str, &str); 4] = [
    ("random_id", r#""r1""#),
    ("type", r#""lxc""#),
    ("nsapp", r#""app""#),
    ("status", r#""installing""#),
];

/// What `validate` must answer.
enum Want {
    /// Accepted, and each key has this value in the event's wire form (`null` = absent). Keys starting
    /// with `@` read what the edge gets besides the event: `@msg_id`, `@unknown_fields`,
    /// `@status_coerced`, `@dropped` (the fields whose value was dropped), `@reclassified`
    /// (`"to_success"`, `"to_aborted"` or `null`).
    Ok(Vec<(&'static str, Value)>),
    /// Rejected with this code, naming this field, with `says` in the message.
    Err {
        code: RejectCode,
        field: Option<&'static str>,
        says: &'static str,
    },
    /// Anything but a panic (accepted events must still keep the invariants).
    Any,
}

struct Row {
    body: Vec<u8>,
    want: Want,
}

fn ok(fields: &[(&'static str, Value)]) -> Want {
    Want::Ok(fields.to_vec())
}

fn invalid(field: &'static str) -> Want {
    Want::Err {
        code: RejectCode::InvalidField,
        field: Some(field),
        says: field,
    }
}

fn missing(field: &'static str) -> Want {
    Want::Err {
        code: RejectCode::MissingField,
        field: Some(field),
        says: field,
    }
}

fn invalid_json() -> Want {
    Want::Err {
        code: RejectCode::InvalidJson,
        field: None,
        says: "at byte ",
    }
}

/// The base body with `fields` set (in place when the base has them, appended otherwise) or removed.
fn body(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut entries: Vec<(String, String)> = BASE
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for &(key, value) in fields {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => entries.push((key.to_string(), value.to_string())),
        }
    }
    entries.retain(|(_, v)| v != ABSENT);
    let inner: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}: {v}", json!(k)))
        .collect();
    format!("{{{}}}", inner.join(", ")).into_bytes()
}

/// A row on the base body.
fn row(fields: &[(&str, &str)], want: Want) -> Row {
    Row {
        body: body(fields),
        want,
    }
}

/// A row on a body written out whole.
fn raw(body: impl Into<Vec<u8>>, want: Want) -> Row {
    Row {
        body: body.into(),
        want,
    }
}

/// A JSON string literal of `s`.
fn q(s: &str) -> String {
    json!(s).to_string()
}

fn reception() -> Reception {
    Reception {
        event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042),
        received_at: OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("timestamp"),
    }
}

fn shown(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    schema::privacy::cut_at_char(&text, 400).to_string()
}

/// What the edge or the stream sees for `key` (see [`Want::Ok`]).
fn observed(accepted: &Accepted, wire: &Value, key: &str) -> Value {
    match key {
        "@msg_id" => json!(accepted.msg_id),
        "@unknown_fields" => json!(accepted.unknown_fields),
        "@status_coerced" => json!(accepted.status_coerced),
        "@dropped" => json!(accepted.dropped),
        "@reclassified" => match accepted.reclassified {
            None => Value::Null,
            Some(Reclassified::ToSuccess) => json!("to_success"),
            Some(Reclassified::ToAborted) => json!("to_aborted"),
        },
        _ => wire.get(key).cloned().unwrap_or(Value::Null),
    }
}

fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=MAX_ID_LEN).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
}

/// What every accepted event keeps, whatever the body was.
fn assert_invariants(e: &Event, accepted: &Accepted, body: &[u8]) {
    let ctx = || shown(body);
    assert!(
        is_id(&e.random_id),
        "random_id {:?}: {}",
        e.random_id,
        ctx()
    );
    assert!(
        is_id(&e.execution_id),
        "execution_id {:?}: {}",
        e.execution_id,
        ctx()
    );
    assert!(
        accepted.msg_id.starts_with(&format!("{}:", e.execution_id)),
        "{}",
        ctx()
    );
    assert!(
        !e.nsapp.is_empty()
            && e.nsapp.len() <= MAX_NSAPP_BYTES
            && !e.nsapp.chars().any(char::is_control)
            && e.nsapp.trim() == e.nsapp,
        "nsapp {:?}: {}",
        e.nsapp,
        ctx()
    );
    let short = [&e.os_type, &e.os_version, &e.pve_version, &e.method];
    let models = [&e.cpu_model, &e.gpu_model];
    let limited = short
        .iter()
        .map(|s| (*s, MAX_SHORT_BYTES))
        .chain(models.iter().map(|s| (*s, MAX_MODEL_BYTES)))
        .chain([
            (&e.ram_speed, MAX_RAM_SPEED_BYTES),
            (&e.arch, MAX_ARCH_BYTES),
            (&e.repo_slug, MAX_REPO_SLUG_BYTES),
        ]);
    for (text, max) in limited {
        if let Some(text) = text {
            assert!(
                !text.is_empty()
                    && text.len() <= max
                    && text.trim() == text
                    && !text.chars().any(char::is_control),
                "string {text:?} (max {max}): {}",
                ctx()
            );
        }
    }
    if let Some(os_type) = &e.os_type {
        assert_eq!(os_type, &os_type.to_lowercase(), "{}", ctx());
    }
    if let Some(arch) = &e.arch {
        assert_eq!(arch, &arch.to_lowercase(), "{}", ctx());
    }
    if let Some(slug) = &e.repo_slug {
        let (owner, repo) = slug.split_once('/').expect("owner/repo");
        assert!(
            [owner, repo].iter().all(|p| !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))),
            "repo_slug {slug:?}: {}",
            ctx()
        );
    }
    assert!(
        accepted
            .dropped
            .iter()
            .all(|f| ["repo_slug", "has_arm"].contains(f)),
        "dropped {:?}: {}",
        accepted.dropped,
        ctx()
    );
    if let Some(error) = &e.error {
        assert!(
            !error.is_empty() && error.len() <= MAX_ERROR_BYTES,
            "{}",
            ctx()
        );
    }
    assert!(e.ct_type.is_none_or(|n| n <= 2), "{}", ctx());
    assert!(e.disk_size.is_none_or(|n| n <= 100_000), "{}", ctx());
    assert!(e.core_count.is_none_or(|n| n <= 256), "{}", ctx());
    assert!(e.ram_size.is_none_or(|n| n <= 1_048_576), "{}", ctx());
    assert!(e.install_duration.is_none_or(|n| n <= 86_400), "{}", ctx());
    if matches!(e.status, Status::Failed | Status::Unknown) {
        assert_ne!(e.exit_code, Some(0), "exit 0 must be a success: {}", ctx());
    }
    if matches!(e.status, Status::Failed | Status::Aborted | Status::Unknown) {
        assert!(
            e.error_category.is_some(),
            "a final without category: {}",
            ctx()
        );
        if e.exit_code.is_some_and(|c| c != 0) {
            assert!(e.error.is_some(), "a failure without error: {}", ctx());
        }
    }
    let mut sorted = e.rescued.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, e.rescued, "rescued is a sorted set: {}", ctx());
    let back: Event = serde_json::from_slice(&e.to_json()).expect("wire form parses");
    assert_eq!(&back, e, "wire round trip: {}", ctx());
}

/// Validates `body` and compares with `want`; returns the accepted event for further checks.
fn check(body: &[u8], want: &Want) -> Option<Accepted> {
    let got = std::panic::catch_unwind(|| schema::validate(body, reception()))
        .unwrap_or_else(|_| panic!("validate panicked on {:?}", shown(body)));
    if let Ok(accepted) = &got {
        assert_invariants(&accepted.event, accepted, body);
    }
    match (want, got) {
        (Want::Any, got) => got.ok(),
        (Want::Ok(fields), Ok(accepted)) => {
            let wire = serde_json::to_value(&accepted.event).expect("event serializes");
            for (key, expected) in fields {
                let seen = observed(&accepted, &wire, key);
                assert_eq!(&seen, expected, "field {key} of {}", shown(body));
            }
            Some(accepted)
        }
        (Want::Err { code, field, says }, Err(rejection)) => {
            assert_eq!(
                (rejection.code, rejection.field),
                (*code, *field),
                "{rejection:?} for {}",
                shown(body)
            );
            assert!(
                rejection.message.contains(says),
                "{:?} does not say {says:?} for {}",
                rejection.message,
                shown(body)
            );
            None
        }
        (_, got) => panic!("{}: got {got:?}", shown(body)),
    }
}

fn run(rows: Vec<Row>) {
    assert!(!rows.is_empty());
    for Row { body, want } in &rows {
        check(body, want);
    }
}

/// Integer fields: (key sent, key in the event, min, max).
const INTS: [(&str, &str, i64, i64); 7] = [
    ("ct_type", "ct_type", 0, 2),
    ("disk_size", "disk_size", 0, 100_000),
    ("core_count", "core_count", 0, 256),
    ("ram_size", "ram_size", 0, 1_048_576),
    ("exit_code", "exit_code", 0, 255),
    ("install_duration", "install_duration", 0, 86_400),
    ("duration", "install_duration", 0, 86_400),
];

#[test]
fn integers_at_and_past_their_range_edges() {
    let mut rows = Vec::new();
    for (sent, stored, min, max) in INTS {
        let mid = if max >= 8 { 8 } else { 1 };
        let accepted = [
            (min.to_string(), json!(min)),
            (max.to_string(), json!(max)),
            (format!("{max}.0"), json!(max)),
            (mid.to_string(), json!(mid)),
            (format!("\"{mid}\""), json!(mid)),
            (format!("\" {mid} \""), json!(mid)),
            (format!("\"{max}\""), json!(max)),
            (format!("{mid}.0"), json!(mid)),
            (format!("{mid}.000"), json!(mid)),
            ("-0".to_string(), json!(0)),
            ("null".to_string(), Value::Null),
            ("\"\"".to_string(), Value::Null),
        ];
        for (value, expected) in accepted {
            rows.push(row(&[(sent, &value)], ok(&[(stored, expected)])));
        }
        let rejected = [
            (min - 1).to_string(),
            (max + 1).to_string(),
            format!("\"{}\"", min - 1),
            format!("\"{}\"", max + 1),
            format!("{}.0", max + 1),
            format!("{mid}.5"),
            "-0.5".to_string(),
            format!("\"{mid}.5\""),
            "\"abc\"".to_string(),
            format!("\"{mid}G\""),
            "true".to_string(),
            "false".to_string(),
            format!("[{mid}]"),
            format!("{{\"v\": {mid}}}"),
            "1e30".to_string(),
            "-1e30".to_string(),
            "1.7976931348623157e308".to_string(),
            "18446744073709551616".to_string(),
            "18446744073709551615".to_string(),
            "9223372036854775807".to_string(),
            "-9223372036854775808".to_string(),
            "\"18446744073709551616\"".to_string(),
            "\"99999999999999999999999999\"".to_string(),
        ];
        for value in rejected {
            rows.push(row(&[(sent, &value)], invalid(sent)));
        }
    }
    assert_eq!(rows.len(), INTS.len() * (12 + 23));
    run(rows);
}

#[test]
fn install_duration_and_its_alias() {
    run(vec![
        row(
            &[("duration", "94")],
            ok(&[
                ("install_duration", json!(94)),
                ("@unknown_fields", json!(0)),
            ]),
        ),
        row(
            &[("install_duration", "5"), ("duration", "94")],
            ok(&[("install_duration", json!(5))]),
        ),
        row(
            &[("duration", "94"), ("install_duration", "5")],
            ok(&[("install_duration", json!(5))]),
        ),
        row(
            &[("install_duration", "null"), ("duration", "94")],
            ok(&[("install_duration", json!(94))]),
        ),
        row(
            &[("duration", "null")],
            ok(&[("install_duration", Value::Null), ("duration", Value::Null)]),
        ),
    ]);
}

#[test]
fn ids_follow_their_pattern() {
    let max = "a".repeat(MAX_ID_LEN);
    let over = "a".repeat(MAX_ID_LEN + 1);
    let mut rows = Vec::new();
    for field in ["random_id", "execution_id"] {
        let accepted = [
            (q(&max), json!(max)),
            (q("0"), json!("0")),
            (q("A.b_c:d-9"), json!("A.b_c:d-9")),
            (
                q("3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12"),
                json!("3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12"),
            ),
            (q("  padded  "), json!("padded")),
            // A number for a string field is read as its text.
            ("12345".to_string(), json!("12345")),
        ];
        for (value, expected) in accepted {
            rows.push(row(&[(field, &value)], ok(&[(field, expected)])));
        }
        let rejected = [
            q(&over),
            q(""),
            q("   "),
            q("-abc"),
            q(".abc"),
            q("_abc"),
            q(":abc"),
            q("a/b"),
            q("a b"),
            q("'; DROP TABLE installs; --"),
            q("a\"b"),
            q("\"quoted\""),
            q("a'b"),
            q("caf\u{e9}"),
            q("a\nb"),
            q("a\u{0}b"),
            q("a%2Fb"),
            "true".to_string(),
            "[\"a\"]".to_string(),
            "{}".to_string(),
        ];
        for value in rejected {
            rows.push(row(&[(field, &value)], invalid(field)));
        }
    }
    rows.extend([
        // A missing or null execution_id falls back to random_id, and so does the msg id.
        row(
            &[],
            ok(&[
                ("execution_id", json!("r1")),
                ("@msg_id", json!("r1:installing")),
            ]),
        ),
        row(
            &[("execution_id", "null")],
            ok(&[("execution_id", json!("r1"))]),
        ),
        row(
            &[("execution_id", r#""e-1""#)],
            ok(&[
                ("random_id", json!("r1")),
                ("execution_id", json!("e-1")),
                ("@msg_id", json!("e-1:installing:r1")),
            ]),
        ),
        row(&[("random_id", ABSENT)], missing("random_id")),
        row(&[("random_id", "null")], missing("random_id")),
        row(
            &[("random_id", ABSENT), ("execution_id", r#""e1""#)],
            missing("random_id"),
        ),
    ]);
    run(rows);
}

#[test]
fn type_is_one_of_five() {
    let cases: &[(&str, Option<&str>)] = &[
        ("lxc", Some("lxc")),
        ("vm", Some("vm")),
        ("pve", Some("pve")),
        ("addon", Some("addon")),
        ("turnkey", Some("turnkey")),
        ("TurnKey", Some("turnkey")),
        ("tool", Some("pve")),
        ("LXC", Some("lxc")),
        (" Vm ", Some("vm")),
        ("TOOL", Some("pve")),
        ("container", None),
        ("ct", None),
        ("qemu", None),
        ("lxc vm", None),
        ("turnkey-lxc", None),
        ("", None),
    ];
    let mut rows: Vec<Row> = cases
        .iter()
        .map(|&(sent, stored)| match stored {
            Some(kind) => row(&[("type", &q(sent))], ok(&[("type", json!(kind))])),
            None => row(&[("type", &q(sent))], invalid("type")),
        })
        .collect();
    rows.extend([
        row(&[("type", "1")], invalid("type")),
        row(&[("type", "true")], invalid("type")),
        row(&[("type", ABSENT)], missing("type")),
        row(&[("type", "null")], missing("type")),
    ]);
    run(rows);
}

#[test]
fn nsapp_is_required_and_cut_at_a_character_boundary() {
    let euros = "\u{20ac}".repeat(40); // 120 bytes, 3 per character
    let cases: Vec<(String, Want)> = vec![
        (
            q("Post PVE Install"),
            ok(&[("nsapp", json!("Post PVE Install"))]),
        ),
        (q("  jellyfin  "), ok(&[("nsapp", json!("jellyfin"))])),
        (q("\tjellyfin\t"), ok(&[("nsapp", json!("jellyfin"))])),
        (q("two\r\nlines"), ok(&[("nsapp", json!("two  lines"))])),
        (
            q("Home Assistant OS"),
            ok(&[("nsapp", json!("Home Assistant OS"))]),
        ),
        ("42".into(), ok(&[("nsapp", json!("42"))])),
        (q(&"x".repeat(100)), ok(&[("nsapp", json!("x".repeat(64)))])),
        (q(&"x".repeat(64)), ok(&[("nsapp", json!("x".repeat(64)))])),
        // 64 is not a multiple of 3: the cut backs off to the last whole character.
        (q(&euros), ok(&[("nsapp", json!("\u{20ac}".repeat(21)))])),
        (
            q(&format!("a{euros}")),
            ok(&[("nsapp", json!(format!("a{}", "\u{20ac}".repeat(21))))]),
        ),
        (
            q(&format!("ab{euros}")),
            ok(&[("nsapp", json!(format!("ab{}", "\u{20ac}".repeat(20))))]),
        ),
        // A cut that lands after a blank does not leave it dangling.
        (
            q(&format!("{} tail", "x".repeat(63))),
            ok(&[("nsapp", json!("x".repeat(63)))]),
        ),
        (q(""), invalid("nsapp")),
        (q("   "), invalid("nsapp")),
        (q("\r\n"), invalid("nsapp")),
        (q("bell\u{7}app"), invalid("nsapp")),
        (q("esc\u{1b}[31m"), invalid("nsapp")),
        (q("tab\tinside"), invalid("nsapp")),
        (q("del\u{7f}"), invalid("nsapp")),
        ("true".into(), invalid("nsapp")),
        ("[]".into(), invalid("nsapp")),
        ("null".into(), missing("nsapp")),
        (ABSENT.into(), missing("nsapp")),
    ];
    run(cases
        .into_iter()
        .map(|(value, want)| row(&[("nsapp", &value)], want))
        .collect());
}

#[test]
fn status_values_spellings_and_unknowns() {
    let mut rows: Vec<Row> = Status::ALL
        .iter()
        .map(|s| {
            row(
                &[("status", &q(s.as_str()))],
                ok(&[
                    ("status", json!(s.as_str())),
                    ("@status_coerced", json!(false)),
                    ("@msg_id", json!(format!("r1:{}", s.as_str()))),
                ]),
            )
        })
        .collect();
    rows.extend([
        row(
            &[("status", r#""sucess""#)],
            ok(&[
                ("status", json!("success")),
                ("@status_coerced", json!(false)),
                ("@msg_id", json!("r1:success")),
            ]),
        ),
        row(
            &[("status", r#""done""#)],
            ok(&[
                ("status", json!("success")),
                ("@status_coerced", json!(false)),
            ]),
        ),
        row(
            &[("status", r#""SUCCESS""#)],
            ok(&[
                ("status", json!("success")),
                ("@status_coerced", json!(false)),
            ]),
        ),
        row(
            &[("status", r#"" Failed ""#)],
            ok(&[
                ("status", json!("failed")),
                ("@status_coerced", json!(false)),
            ]),
        ),
        row(
            &[("status", r#""finished""#)],
            ok(&[
                ("status", json!("unknown")),
                ("@status_coerced", json!(true)),
                ("@msg_id", json!("r1:unknown")),
                ("error_category", json!("unknown")),
            ]),
        ),
        row(
            &[("status", r#""""#)],
            ok(&[
                ("status", json!("unknown")),
                ("@status_coerced", json!(true)),
            ]),
        ),
        row(
            &[("status", "3")],
            ok(&[
                ("status", json!("unknown")),
                ("@status_coerced", json!(true)),
            ]),
        ),
        row(&[("status", "true")], invalid("status")),
        row(&[("status", ABSENT)], missing("status")),
        row(&[("status", "null")], missing("status")),
    ]);
    run(rows);
}

#[test]
fn missing_fields_are_named_in_order() {
    run(vec![
        raw("{}", missing("random_id")),
        raw(r#"{"random_id":"r1"}"#, missing("type")),
        raw(r#"{"random_id":"r1","type":"lxc"}"#, missing("nsapp")),
        raw(
            r#"{"random_id":"r1","type":"lxc","nsapp":"a"}"#,
            missing("status"),
        ),
        // An invalid field is named before any missing one.
        raw(
            r#"{"status":"installing","disk_size":-1}"#,
            invalid("disk_size"),
        ),
        // The first bad field in document order is the one named.
        row(
            &[
                ("ct_type", "\"1\""),
                ("disk_size", "4.5"),
                ("method", "true"),
            ],
            invalid("disk_size"),
        ),
        row(
            &[("method", "true"), ("disk_size", "4.5")],
            invalid("method"),
        ),
        raw(r#"{"type":"container","random_id":"a/b"}"#, invalid("type")),
    ]);
}

#[test]
fn free_text_strings_are_trimmed_flattened_and_cut() {
    let accents = "\u{e9}".repeat(20); // 40 bytes
    let euros = "\u{20ac}".repeat(30); // 90 bytes
    run(vec![
        row(
            &[("os_version", r#""  12  ""#)],
            ok(&[("os_version", json!("12"))]),
        ),
        row(&[("os_version", "12")], ok(&[("os_version", json!("12"))])),
        row(
            &[("os_version", "16.2")],
            ok(&[("os_version", json!("16.2"))]),
        ),
        row(&[("os_version", "true")], invalid("os_version")),
        row(&[("os_version", "[12]")], invalid("os_version")),
        row(&[("os_version", "{}")], invalid("os_version")),
        row(
            &[("os_version", "null")],
            ok(&[("os_version", Value::Null)]),
        ),
        row(
            &[("os_version", r#""""#)],
            ok(&[("os_version", Value::Null)]),
        ),
        row(
            &[("os_version", r#""   ""#)],
            ok(&[("os_version", Value::Null)]),
        ),
        row(
            &[("method", r#""a\r\nb""#)],
            ok(&[("method", json!("a  b"))]),
        ),
        row(
            &[("method", r#""a\nb\rc""#)],
            ok(&[("method", json!("a b c"))]),
        ),
        row(&[("method", "false")], invalid("method")),
        row(
            &[("cpu_model", r#""Intel\nCore i5""#)],
            ok(&[("cpu_model", json!("Intel Core i5"))]),
        ),
        row(
            &[("cpu_model", r#""\n Intel \n""#)],
            ok(&[("cpu_model", json!("Intel"))]),
        ),
        row(
            &[("cpu_model", r#""bell\u0007 x""#)],
            ok(&[("cpu_model", json!("bell x"))]),
        ),
        row(
            &[("cpu_model", &q(&"m".repeat(70)))],
            ok(&[("cpu_model", json!("m".repeat(64)))]),
        ),
        row(
            &[("gpu_model", &q(&euros))],
            ok(&[("gpu_model", json!("\u{20ac}".repeat(21)))]),
        ),
        row(&[("gpu_model", "7")], ok(&[("gpu_model", json!("7"))])),
        row(
            &[("ram_speed", "3200")],
            ok(&[("ram_speed", json!("3200"))]),
        ),
        row(
            &[("ram_speed", &q(&"9".repeat(20)))],
            ok(&[("ram_speed", json!("9".repeat(16)))]),
        ),
        row(
            &[("pve_version", &q(&"9.0.10-".repeat(6)))],
            ok(&[("pve_version", json!("9.0.10-9.0.10-9.0.10-9.0.10-9.0."))]),
        ),
        row(
            &[("os_type", r#""Debian""#)],
            ok(&[("os_type", json!("debian"))]),
        ),
        row(
            &[("os_type", r#"" HomeAssistant ""#)],
            ok(&[("os_type", json!("homeassistant"))]),
        ),
        row(
            &[("os_type", r#""opnsense""#)],
            ok(&[("os_type", json!("opnsense"))]),
        ),
        row(
            &[("os_type", r#""MikroTik""#)],
            ok(&[("os_type", json!("mikrotik"))]),
        ),
        row(
            &[("os_type", r#""windows""#)],
            ok(&[("os_type", json!("windows"))]),
        ),
        row(
            &[("os_type", &q(&"X".repeat(40)))],
            ok(&[("os_type", json!("x".repeat(32)))]),
        ),
        row(
            &[("os_type", &q(&accents))],
            ok(&[("os_type", json!("\u{e9}".repeat(16)))]),
        ),
        row(
            &[("os_type", &q(&"\u{c9}".repeat(20)))],
            ok(&[("os_type", json!("\u{e9}".repeat(16)))]),
        ),
        // U+0130 is 2 bytes and lower-cases to 3 ("i" + U+0307): the cap holds after lower-casing.
        row(
            &[("os_type", &q(&"\u{130}".repeat(16)))],
            ok(&[("os_type", json!(format!("{}i", "i\u{307}".repeat(10))))]),
        ),
        row(&[("os_type", "1")], ok(&[("os_type", json!("1"))])),
        row(&[("os_type", "true")], invalid("os_type")),
        // The log keeps its lines; only its ends are trimmed.
        row(
            &[("error", r#""  first\nsecond\r\nthird\t  ""#)],
            ok(&[("error", json!("first\nsecond\r\nthird"))]),
        ),
        row(&[("error", r#""""#)], ok(&[("error", Value::Null)])),
        row(&[("error", r#"" \n ""#)], ok(&[("error", Value::Null)])),
        row(&[("error", "42")], ok(&[("error", json!("42"))])),
        row(&[("error", "true")], invalid("error")),
        row(&[("error", r#"{"msg":"x"}"#)], invalid("error")),
    ]);
}

#[test]
fn an_overlong_log_keeps_its_first_line_and_its_end() {
    let first = "exit_code=100 | APT: Package manager error";
    let log = format!(
        "{first}\n{}THE REAL END",
        "Unpacking f\u{f6}\u{f6} (1.0-1) ...\n".repeat(12_000)
    );
    assert!(log.len() > 2 * MAX_ERROR_BYTES);
    let long = body(&[
        ("status", r#""failed""#),
        ("exit_code", "100"),
        ("error", &q(&log)),
    ]);
    let accepted = check(
        &long,
        &ok(&[
            ("status", json!("failed")),
            ("error_category", json!("apt")),
        ]),
    )
    .expect("accepted");
    let error = accepted.event.error.expect("error kept");
    assert!(error.len() <= MAX_ERROR_BYTES, "{}", error.len());
    assert!(
        error.len() > MAX_ERROR_BYTES - 200,
        "the cut keeps as much as it may: {}",
        error.len()
    );
    assert!(
        error.starts_with(&format!("{first}\n[... ")),
        "{:?}",
        &error[..200]
    );
    assert!(error.contains(" bytes cut ...]\n"));
    assert!(error.ends_with("(1.0-1) ...\nTHE REAL END"));
    // Exactly at the cap nothing is cut.
    let exact = format!("{first}\n{}", "y".repeat(MAX_ERROR_BYTES - first.len() - 1));
    assert_eq!(exact.len(), MAX_ERROR_BYTES);
    check(
        &body(&[("error", &q(&exact))]),
        &ok(&[("error", json!(exact))]),
    );
}

#[test]
fn vendors_fold_into_their_closed_sets() {
    let cases: &[(&str, &str, &str)] = &[
        ("cpu_vendor", "intel", "intel"),
        ("cpu_vendor", "Intel", "intel"),
        ("cpu_vendor", " AMD ", "amd"),
        ("cpu_vendor", "arm", "arm"),
        ("cpu_vendor", "Apple", "apple"),
        ("cpu_vendor", "QUALCOMM", "qualcomm"),
        ("cpu_vendor", "unknown", "unknown"),
        ("cpu_vendor", "VIA", "unknown"),
        ("cpu_vendor", "GenuineIntel", "unknown"),
        ("gpu_vendor", "intel", "intel"),
        ("gpu_vendor", "AMD", "amd"),
        ("gpu_vendor", "NVIDIA", "nvidia"),
        ("gpu_vendor", "Matrox", "unknown"),
        ("gpu_vendor", "apple", "unknown"),
        ("gpu_passthrough", "igpu", "igpu"),
        ("gpu_passthrough", "DGPU", "dgpu"),
        ("gpu_passthrough", "vgpu", "vgpu"),
        ("gpu_passthrough", "none", "none"),
        ("gpu_passthrough", "passthrough", "unknown"),
        ("gpu_passthrough", "unknown", "unknown"),
    ];
    let mut rows: Vec<Row> = cases
        .iter()
        .map(|&(field, sent, stored)| row(&[(field, &q(sent))], ok(&[(field, json!(stored))])))
        .collect();
    for field in ["cpu_vendor", "gpu_vendor", "gpu_passthrough"] {
        rows.push(row(&[(field, r#""""#)], ok(&[(field, Value::Null)])));
        rows.push(row(&[(field, "null")], ok(&[(field, Value::Null)])));
        rows.push(row(&[(field, "7")], ok(&[(field, json!("unknown"))])));
        rows.push(row(&[(field, "true")], invalid(field)));
    }
    run(rows);
}

#[test]
fn repo_source_defaults_and_folds() {
    run(vec![
        row(
            &[("repo_source", r#""ProxmoxVE""#)],
            ok(&[("repo_source", json!("ProxmoxVE"))]),
        ),
        row(
            &[("repo_source", r#""ProxmoxVED""#)],
            ok(&[("repo_source", json!("ProxmoxVED"))]),
        ),
        row(
            &[("repo_source", r#""proxmoxved""#)],
            ok(&[("repo_source", json!("ProxmoxVED"))]),
        ),
        row(&[], ok(&[("repo_source", json!("ProxmoxVE"))])),
        row(
            &[("repo_source", r#""""#)],
            ok(&[("repo_source", json!("ProxmoxVE"))]),
        ),
        row(
            &[("repo_source", r#""  ""#)],
            ok(&[("repo_source", json!("ProxmoxVE"))]),
        ),
        row(
            &[("repo_source", "null")],
            ok(&[("repo_source", json!("ProxmoxVE"))]),
        ),
        row(
            &[("repo_source", r#""my-fork""#)],
            ok(&[("repo_source", json!("external"))]),
        ),
        row(
            &[("repo_source", r#""external""#)],
            ok(&[("repo_source", json!("external"))]),
        ),
        row(
            &[("repo_source", r#""ProxmoxVE-fork""#)],
            ok(&[("repo_source", json!("external"))]),
        ),
        row(&[("repo_source", "true")], invalid("repo_source")),
    ]);
}

#[test]
fn error_category_is_kept_when_known_else_derived() {
    let failed_100 = [
        ("status", r#""failed""#),
        ("exit_code", "100"),
        ("error", r#""boom""#),
    ];
    let with = |category: &str| {
        let mut fields = failed_100.to_vec();
        fields.push(("error_category", category));
        body(&fields)
    };
    let mut rows = Vec::new();
    for category in Category::ALL {
        let stored = if category == Category::Unknown {
            Category::Apt
        } else {
            category
        };
        // Known categories are kept whatever the exit code says, in any case.
        for sent in [
            category.as_str().to_string(),
            category.as_str().to_uppercase(),
        ] {
            rows.push(raw(
                with(&q(&sent)),
                ok(&[
                    ("error_category", json!(stored.as_str())),
                    ("status", json!("failed")),
                ]),
            ));
        }
    }
    for derived in [
        r#""Shell script""#,
        r#""bogus""#,
        r#""""#,
        "null",
        r#""unknown""#,
        "7",
    ] {
        rows.push(raw(with(derived), ok(&[("error_category", json!("apt"))])));
    }
    rows.extend([
        raw(
            with(&q(&format!("{}x", "network".repeat(5)))),
            ok(&[("error_category", json!("apt"))]),
        ),
        raw(with("true"), invalid("error_category")),
        // On a non-final the category is kept as sent, never derived.
        row(
            &[("error_category", r#""Network""#)],
            ok(&[("error_category", json!("network"))]),
        ),
        row(
            &[("error_category", r#""shell ""#), ("exit_code", "100")],
            ok(&[("error_category", json!("shell"))]),
        ),
        row(
            &[("error_category", r#""bogus""#), ("exit_code", "100")],
            ok(&[("error_category", Value::Null)]),
        ),
    ]);
    assert_eq!(rows.len(), 2 * Category::ALL.len() + 6 + 5);
    run(rows);
}

#[test]
fn finals_are_reclassified_in_the_contract_order() {
    let describe = |code: u8| format!("Exit code {code}: {}", exit_codes::describe(code));
    let fields = |status: &str, exit: Option<&str>, error: Option<&str>, category: Option<&str>| {
        let mut f = vec![("status".to_string(), q(status))];
        if let Some(exit) = exit {
            f.push(("exit_code".into(), exit.to_string()));
        }
        if let Some(error) = error {
            f.push(("error".into(), q(error)));
        }
        if let Some(category) = category {
            f.push(("error_category".into(), q(category)));
        }
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        body(&f)
    };
    let r = |status: &str,
             exit: Option<&str>,
             error: Option<&str>,
             category: Option<&str>,
             want: Want| { raw(fields(status, exit, error, category), want) };
    run(vec![
        // 1. exit 0 → success, error and category cleared; it wins over an interrupt in the log.
        r(
            "failed",
            Some("0"),
            Some("boom"),
            Some("network"),
            ok(&[
                ("status", json!("success")),
                ("error", Value::Null),
                ("error_category", Value::Null),
                ("exit_code", json!(0)),
                ("@reclassified", json!("to_success")),
                ("@msg_id", json!("r1:failed")),
                ("error_signature", Value::Null),
            ]),
        ),
        r(
            "failed",
            Some("0"),
            Some("Aborted by user (SIGINT)"),
            None,
            ok(&[
                ("status", json!("success")),
                ("@reclassified", json!("to_success")),
            ]),
        ),
        r(
            "unknown",
            Some("0"),
            None,
            None,
            ok(&[
                ("status", json!("success")),
                ("@reclassified", json!("to_success")),
                ("@msg_id", json!("r1:unknown")),
            ]),
        ),
        r(
            "failed",
            Some("\"0\""),
            None,
            None,
            ok(&[("status", json!("success"))]),
        ),
        // 2. exit 129/130 or an interrupt on the first line → aborted / user_aborted.
        r(
            "failed",
            Some("130"),
            None,
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("error", json!(describe(130))),
                ("@reclassified", json!("to_aborted")),
                ("@msg_id", json!("r1:failed")),
            ]),
        ),
        r(
            "failed",
            Some("130"),
            Some("exit_code=130 | Aborted by user (SIGINT)"),
            Some("network"),
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("error", json!("exit_code=130 | Aborted by user (SIGINT)")),
            ]),
        ),
        r(
            "failed",
            Some("129"),
            None,
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("@reclassified", json!("to_aborted")),
            ]),
        ),
        r(
            "unknown",
            Some("130"),
            None,
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
            ]),
        ),
        r(
            "failed",
            Some("1"),
            Some("exit_code=1 | Aborted by user"),
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("exit_code", json!(1)),
            ]),
        ),
        r(
            "failed",
            Some("1"),
            Some("received SIGINT, stopping"),
            Some("unknown"),
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
            ]),
        ),
        r(
            "failed",
            Some("2"),
            Some("User pressed Ctrl+C"),
            None,
            ok(&[("status", json!("aborted"))]),
        ),
        r(
            "failed",
            Some("2"),
            Some("ctrl-c pressed"),
            None,
            ok(&[("status", json!("aborted"))]),
        ),
        r(
            "failed",
            Some("1"),
            Some("caught SIGHUP, exiting"),
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
            ]),
        ),
        r(
            "failed",
            Some("1"),
            Some("exit_code=1 | User abort at the storage menu"),
            None,
            ok(&[("status", json!("aborted"))]),
        ),
        r(
            "unknown",
            Some("1"),
            Some("Menu closed. No changes have been made."),
            Some("shell"),
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("@reclassified", json!("to_aborted")),
            ]),
        ),
        // Only the contract's phrases count: a Python traceback's KeyboardInterrupt alone is a failure.
        r(
            "failed",
            None,
            Some("Traceback: KeyboardInterrupt"),
            None,
            ok(&[
                ("status", json!("failed")),
                ("error_category", json!("unknown")),
            ]),
        ),
        r(
            "unknown",
            None,
            Some("installation cancelled by user"),
            None,
            ok(&[("status", json!("aborted"))]),
        ),
        // The phrase counts anywhere in the text, not only on its first line.
        r(
            "failed",
            Some("1"),
            Some("E: dpkg error\n---\n^C received SIGINT"),
            None,
            ok(&[
                ("status", json!("aborted")),
                ("@reclassified", json!("to_aborted")),
            ]),
        ),
        r(
            "failed",
            Some("1"),
            Some("E: dpkg error\n(press Enter to continue)"),
            None,
            ok(&[("status", json!("failed")), ("@reclassified", Value::Null)]),
        ),
        r(
            "failed",
            Some("131"),
            None,
            None,
            ok(&[
                ("status", json!("failed")),
                ("error_category", json!("signal")),
            ]),
        ),
        // 3. category empty or unknown → the exit code's.
        r(
            "failed",
            Some("100"),
            Some("boom"),
            None,
            ok(&[
                ("status", json!("failed")),
                ("error_category", json!("apt")),
                ("error", json!("boom")),
                ("@reclassified", Value::Null),
            ]),
        ),
        r(
            "failed",
            Some("22"),
            Some("boom"),
            Some(""),
            ok(&[("error_category", json!("network"))]),
        ),
        r(
            "failed",
            Some("200"),
            Some("boom"),
            Some("unknown"),
            ok(&[("error_category", json!("proxmox"))]),
        ),
        r(
            "failed",
            Some("150"),
            Some("boom"),
            Some("bogus"),
            ok(&[("error_category", json!("service"))]),
        ),
        r(
            "failed",
            Some("140"),
            None,
            None,
            ok(&[
                ("error_category", json!("signal")),
                ("error", json!("Exit code 140: killed by signal 12")),
            ]),
        ),
        r(
            "failed",
            Some("9"),
            None,
            None,
            ok(&[
                ("error_category", json!("unknown")),
                ("error", json!("Exit code 9: unknown exit code")),
            ]),
        ),
        r(
            "failed",
            None,
            None,
            None,
            ok(&[
                ("status", json!("failed")),
                ("error_category", json!("unknown")),
                ("error", Value::Null),
                ("exit_code", Value::Null),
            ]),
        ),
        r(
            "unknown",
            Some("28"),
            None,
            None,
            ok(&[
                ("status", json!("unknown")),
                ("error_category", json!("timeout")),
                ("error", json!(describe(28))),
            ]),
        ),
        r(
            "unknown",
            None,
            None,
            None,
            ok(&[
                ("status", json!("unknown")),
                ("error_category", json!("unknown")),
            ]),
        ),
        // 4. error empty and exit non-zero → "Exit code N: <description>".
        r(
            "failed",
            Some("100"),
            None,
            None,
            ok(&[
                ("error", json!(describe(100))),
                ("error_category", json!("apt")),
            ]),
        ),
        r(
            "failed",
            Some("100"),
            Some(""),
            None,
            ok(&[(
                "error",
                json!("Exit code 100: apt: broken packages or unmet dependencies"),
            )]),
        ),
        r(
            "failed",
            Some("100"),
            Some("  \n "),
            None,
            ok(&[("error", json!(describe(100)))]),
        ),
        // An aborted as sent gets user_aborted when it has no category; it is not "reclassified".
        r(
            "aborted",
            None,
            None,
            None,
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("user_aborted")),
                ("@reclassified", Value::Null),
            ]),
        ),
        r(
            "aborted",
            Some("1"),
            None,
            Some("network"),
            ok(&[
                ("status", json!("aborted")),
                ("error_category", json!("network")),
                ("error", json!(describe(1))),
            ]),
        ),
        // Success and non-finals are never reclassified.
        r(
            "success",
            Some("1"),
            Some("odd"),
            Some("bogus"),
            ok(&[
                ("status", json!("success")),
                ("exit_code", json!(1)),
                ("error", json!("odd")),
                ("error_category", Value::Null),
                ("@reclassified", Value::Null),
            ]),
        ),
        r(
            "installing",
            Some("100"),
            None,
            None,
            ok(&[
                ("status", json!("installing")),
                ("error", Value::Null),
                ("error_category", Value::Null),
            ]),
        ),
        r(
            "configuring",
            Some("130"),
            Some("SIGINT"),
            None,
            ok(&[
                ("status", json!("configuring")),
                ("@reclassified", Value::Null),
            ]),
        ),
    ]);
}

/// Step 3 of the reclassification for a final whose category is still unknown after its exit code: the
/// first phrase group of contract §3 found in the lower-cased log names the category.
#[test]
fn a_category_still_unknown_comes_from_the_first_phrase_group_of_the_log() {
    // (exit code, category sent, log, stored category)
    let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
        (
            Some("1"),
            None,
            "Killed process 4242 (node) total-vm",
            "resource",
        ),
        (Some("1"), None, "fatal: Out Of Memory", "resource"),
        (None, None, "mmap: Cannot allocate memory", "resource"),
        (
            Some("2"),
            None,
            "tar: write error: No space left on device",
            "storage",
        ),
        (Some("1"), None, "Disk quota exceeded", "storage"),
        (
            Some("1"),
            None,
            "curl: (6) Could not resolve host: github.com",
            "network",
        ),
        (Some("1"), None, "wget: unable to resolve", "network"),
        (Some("1"), None, "TLS handshake failed", "network"),
        (Some("1"), None, "mkdir: Permission denied", "permission"),
        (
            Some("1"),
            None,
            "This script must be run as root",
            "permission",
        ),
        (Some("1"), None, "E: Unable to locate package foo", "apt"),
        (Some("1"), None, "dpkg: error processing package x", "apt"),
        (
            Some("1"),
            None,
            "bash: node: command not found",
            "command_not_found",
        ),
        (Some("1"), None, "operation timed out after 30 s", "timeout"),
        (
            Some("1"),
            None,
            "Error: P3009 prisma migrate found failed migrations",
            "database",
        ),
        (
            Some("1"),
            None,
            "could not find the migration file",
            "database",
        ),
        // First group wins: resource before storage before network before apt.
        (
            Some("1"),
            None,
            "no space left on device; Out of memory",
            "resource",
        ),
        (
            Some("1"),
            None,
            "apt-get: no space left on device",
            "storage",
        ),
        (Some("1"), None, "apt-get: connection refused", "network"),
        // "connection timed out" is network, listed before the timeout group.
        (Some("1"), None, "Connection timed out", "network"),
        // A sent `unknown` is no category: the text decides.
        (
            Some("1"),
            Some("unknown"),
            "E: Unable to locate package foo",
            "apt",
        ),
        // Nothing matches: unknown stays.
        (Some("1"), None, "something odd happened", "unknown"),
        (None, None, "something odd happened", "unknown"),
        // The exit code's category comes first; a known category sent is kept.
        (Some("22"), None, "Out of memory", "network"),
        (Some("1"), Some("config"), "Out of memory", "config"),
        (Some("1"), Some("shell"), "Out of memory", "shell"),
        (
            Some("1"),
            Some("preflight"),
            "permission denied",
            "preflight",
        ),
        (Some("1"), Some("runtime"), "permission denied", "runtime"),
    ];
    let mut rows = Vec::new();
    for &(exit, sent, log, stored) in cases {
        let mut fields = vec![("status", r#""failed""#.to_string()), ("error", q(log))];
        if let Some(exit) = exit {
            fields.push(("exit_code", exit.to_string()));
        }
        if let Some(sent) = sent {
            fields.push(("error_category", q(sent)));
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rows.push(row(
            &fields,
            ok(&[
                ("status", json!("failed")),
                ("error_category", json!(stored)),
                ("error", json!(log)),
            ]),
        ));
    }
    // An unknown final gets the same rule; a success or a progress ping never does.
    rows.extend([
        row(
            &[
                ("status", r#""unknown""#),
                ("error", r#""No space left on device""#),
            ],
            ok(&[
                ("status", json!("unknown")),
                ("error_category", json!("storage")),
            ]),
        ),
        row(
            &[
                ("status", r#""success""#),
                ("error", r#""No space left on device""#),
            ],
            ok(&[("error_category", Value::Null)]),
        ),
        row(
            &[
                ("status", r#""configuring""#),
                ("error", r#""No space left on device""#),
            ],
            ok(&[("error_category", Value::Null)]),
        ),
    ]);
    run(rows);
}

#[test]
fn repo_slug_is_owner_slash_repo_or_dropped() {
    let long_ok = format!("{}/{}", "o".repeat(63), "r".repeat(64)); // 128 bytes
    let too_long = format!("{}/{}", "o".repeat(64), "r".repeat(64)); // 129 bytes
    let kept = |sent: &str, stored: &str| {
        row(
            &[("repo_slug", sent)],
            ok(&[("repo_slug", json!(stored)), ("@dropped", json!([]))]),
        )
    };
    let dropped = |sent: &str| {
        row(
            &[("repo_slug", sent)],
            ok(&[
                ("repo_slug", Value::Null),
                ("@dropped", json!(["repo_slug"])),
            ]),
        )
    };
    let absent = |sent: &str| {
        row(
            &[("repo_slug", sent)],
            ok(&[("repo_slug", Value::Null), ("@dropped", json!([]))]),
        )
    };
    run(vec![
        kept(
            r#""community-scripts/ProxmoxVE""#,
            "community-scripts/ProxmoxVE",
        ),
        kept(r#""  someuser/ProxmoxVE-fork ""#, "someuser/ProxmoxVE-fork"),
        kept(r#""a.b_c-d/e.f_g-h""#, "a.b_c-d/e.f_g-h"),
        kept(&q(&long_ok), &long_ok),
        dropped(&q(&too_long)),
        dropped(r#""https://github.com/community-scripts/ProxmoxVE""#),
        dropped(r#""community-scripts/ProxmoxVE/main""#),
        dropped(r#""community-scripts""#),
        dropped(r#""/ProxmoxVE""#),
        dropped(r#""owner/""#),
        dropped(r#""own er/repo""#),
        dropped(r#""owner/repö""#),
        dropped(
            r#""owner/repo
x""#,
        ),
        dropped("42"),
        dropped("true"),
        dropped(r#"["a/b"]"#),
        dropped(r#"{"owner": "a"}"#),
        absent("null"),
        absent(r#""""#),
        absent(r#""   ""#),
        absent(ABSENT),
        // A dropped value never rejects the body, and both lenient fields are named in document order.
        row(
            &[("has_arm", r#""maybe""#), ("repo_slug", r#""x""#)],
            ok(&[
                ("status", json!("installing")),
                ("@dropped", json!(["has_arm", "repo_slug"])),
            ]),
        ),
    ]);
}

#[test]
fn has_arm_is_a_boolean_or_dropped() {
    let cases: &[(&str, Option<bool>, bool)] = &[
        ("true", Some(true), false),
        ("false", Some(false), false),
        (r#""true""#, Some(true), false),
        (r#""false""#, Some(false), false),
        (r#"" TRUE ""#, Some(true), false),
        (r#""False""#, Some(false), false),
        ("1", Some(true), false),
        ("0", Some(false), false),
        ("1.0", Some(true), false),
        ("null", None, false),
        (r#""""#, None, false),
        (ABSENT, None, false),
        ("2", None, true),
        ("-1", None, true),
        ("0.5", None, true),
        (r#""1""#, None, true),
        (r#""yes""#, None, true),
        ("[true]", None, true),
        ("{}", None, true),
    ];
    run(cases
        .iter()
        .map(|&(sent, stored, was_dropped)| {
            let dropped: &[&str] = if was_dropped { &["has_arm"] } else { &[] };
            row(
                &[("has_arm", sent)],
                ok(&[("has_arm", json!(stored)), ("@dropped", json!(dropped))]),
            )
        })
        .collect());
}

#[test]
fn arch_is_lower_cased_and_cut() {
    run(vec![
        row(&[("arch", r#""amd64""#)], ok(&[("arch", json!("amd64"))])),
        row(&[("arch", r#"" ARM64 ""#)], ok(&[("arch", json!("arm64"))])),
        row(&[("arch", r#""x86_64""#)], ok(&[("arch", json!("x86_64"))])),
        row(
            &[("arch", &q(&"a".repeat(20)))],
            ok(&[("arch", json!("a".repeat(MAX_ARCH_BYTES)))]),
        ),
        row(&[("arch", r#""""#)], ok(&[("arch", Value::Null)])),
        row(&[("arch", "null")], ok(&[("arch", Value::Null)])),
        row(&[("arch", "64")], ok(&[("arch", json!("64"))])),
        row(&[("arch", "true")], invalid("arch")),
        row(&[("arch", "[]")], invalid("arch")),
        row(
            &[("arch", "\"arm\\n64\"")],
            ok(&[("arch", json!("arm 64"))]),
        ),
    ]);
}

#[test]
fn addresses_in_the_log_are_masked_and_versions_kept() {
    let cases: &[(&str, &str)] = &[
        (
            "connect to 192.168.1.10 failed",
            "connect to 192.x.x.x failed",
        ),
        ("http://10.0.0.1:8080/x", "http://10.x.x.x:8080/x"),
        ("from 8.8.8.8.", "from 8.x.x.x."),
        ("mail admin@example.com now", "mail x@x.x now"),
        ("hwaddr 00:1A:2b:3c:4D:5e up", "hwaddr xx:xx:xx:xx:xx:xx up"),
        ("hwaddr 00-1a-2b-3c-4d-5e", "hwaddr xx:xx:xx:xx:xx:xx"),
        ("from fe80::1ff:fe23:4567:890a here", "from fe80:x::x here"),
        ("[2001:db8:85a3:0:0:8a2e:370:7334]:443", "[2001:x::x]:443"),
        (
            "Setting up foo (1.2.3.4-1) ...",
            "Setting up foo (1.2.3.4-1) ...",
        ),
        ("v1.2.3.4", "v1.2.3.4"),
        ("version 2.4.1.3", "version 2.4.1.3"),
        ("pkg-1.2.3.4 and 1.2.3.4.5", "pkg-1.2.3.4 and 1.2.3.4.5"),
        ("at 12:34:56 std::vector", "at 12:34:56 std::vector"),
        // IPv4-mapped IPv6 is masked whole, not left with three octets of the IPv4 showing.
        ("listen ::ffff:192.168.1.1 port", "listen x::x port"),
        ("from ::FFFF:10.1.2.3:5432", "from ::FFFF:10.x.x.x:5432"),
        ("at fe80::1.", "at fe80:x::x."),
        ("at 12:34:56.789 ok", "at 12:34:56.789 ok"),
        ("npm WARN inflight@1.0.6", "npm WARN inflight@1.0.6"),
        (
            "line 1 ok\nssh root@192.168.1.2 (1.2.3.4-1)\nend",
            "line 1 ok\nssh root@192.x.x.x (1.2.3.4-1)\nend",
        ),
    ];
    run(cases
        .iter()
        .map(|&(sent, stored)| {
            row(
                &[
                    ("status", r#""failed""#),
                    ("exit_code", "1"),
                    ("error", &q(sent)),
                ],
                ok(&[("error", json!(stored))]),
            )
        })
        .collect());
}

#[test]
fn unknown_fields_are_ignored_and_counted() {
    run(vec![
        row(&[], ok(&[("@unknown_fields", json!(0))])),
        row(
            &[("foo", "1"), ("bar", r#""x""#)],
            ok(&[("@unknown_fields", json!(2)), ("foo", Value::Null)]),
        ),
        row(
            &[("Status", r#""failed""#)],
            ok(&[
                ("@unknown_fields", json!(1)),
                ("status", json!("installing")),
            ]),
        ),
        row(
            &[("nested", r#"{"a": [1, {"b": null}]}"#)],
            ok(&[("@unknown_fields", json!(1))]),
        ),
        row(
            &[
                ("v", "2"),
                ("event_id", r#""x""#),
                ("received_at", r#""y""#),
                ("rescued", r#"["z"]"#),
            ],
            ok(&[
                ("@unknown_fields", json!(4)),
                ("v", json!(1)),
                ("rescued", json!([])),
                ("event_id", json!(reception().event_id.to_string())),
            ]),
        ),
    ]);
}

#[test]
fn each_rescue_kind_is_recorded_through_validate() {
    const HEAD: &str =
        r#"{"random_id":"r1","type":"lxc","nsapp":"app","status":"failed","exit_code":1"#;
    let b = |tail: &[u8]| {
        let mut v = HEAD.as_bytes().to_vec();
        v.extend_from_slice(tail);
        v
    };
    run(vec![
        raw(b(br#"}"#), ok(&[("rescued", json!([]))])),
        raw(b(br#","disk_size": ,"core_count":2}"#), ok(&[("rescued", json!(["empty_value"])), ("disk_size", Value::Null), ("core_count", json!(2))])),
        raw(b(br#","disk_size":   }"#), ok(&[("rescued", json!(["empty_value"])), ("disk_size", Value::Null)])),
        raw(b(br#","disk_size": 32G,"ram_size":4096MB}"#), ok(&[("rescued", json!(["unit_suffix"])), ("disk_size", json!(32)), ("ram_size", json!(4096))])),
        raw(b(b",\"error\":\"a\nb\tc\x1bd\"}"), ok(&[("rescued", json!(["control_chars"])), ("error", json!("a\nb\tc\u{1b}d"))])),
        raw(b(br#","error":"caf\xe9 \x41"}"#), ok(&[("rescued", json!(["hex_escape"])), ("error", json!("caf\u{e9} A"))])),
        raw(b(b",\"error\":\"F\xe9hler \xff\"}"), ok(&[("rescued", json!(["invalid_utf8"])), ("error", json!("F\u{FFFD}hler \u{FFFD}"))])),
        raw(b(b"}\n{\"status\":\"success\"}"), ok(&[("rescued", json!(["trailing_data"])), ("status", json!("failed"))])),
        raw(b(b"}garbage"), ok(&[("rescued", json!(["trailing_data"]))])),
        raw(b(br#","error":"E: Unable to locate package "python3-pip" now"}"#), ok(&[
            ("rescued", json!(["unescaped_quote"])), ("error", json!("E: Unable to locate package \"python3-pip\" now")),
        ])),
        // Several repairs in one body are all recorded, once each, in a stable order.
        raw(b(b",\"disk_size\": ,\"ram_size\": 8G,\"error\":\"x\ny\x01 \xff \\x41\", \"ct_type\": }\n\n{}"), ok(&[
            ("rescued", json!(["empty_value", "unit_suffix", "control_chars", "hex_escape", "invalid_utf8", "trailing_data"])),
            ("disk_size", Value::Null), ("ct_type", Value::Null), ("ram_size", json!(8)), ("error", json!("x\ny\u{1} \u{FFFD} A")),
        ])),
        // A repaired body is still validated: the rescue does not excuse a bad field.
        raw(b(br#","disk_size": 999999G}"#), invalid("disk_size")),
    ]);
}

#[test]
fn bodies_that_are_not_json_objects_are_invalid_json() {
    let deep_ok = format!(
        r#"{{"random_id":"r1","type":"lxc","nsapp":"a","status":"installing","x":{}1{}}}"#,
        "[".repeat(30),
        "]".repeat(30)
    );
    let deep = format!(
        r#"{{"random_id":"r1","type":"lxc","nsapp":"a","status":"installing","x":{}1{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    run(vec![
        raw(b"[1, 2]".to_vec(), invalid_json()),
        raw(
            br#"[{"random_id":"r1","type":"lxc","nsapp":"a","status":"installing"}]"#.to_vec(),
            invalid_json(),
        ),
        raw(br#""a string""#.to_vec(), invalid_json()),
        raw(b"42".to_vec(), invalid_json()),
        raw(b"null".to_vec(), invalid_json()),
        raw(b"true".to_vec(), invalid_json()),
        raw(b"".to_vec(), invalid_json()),
        raw(b"   \n".to_vec(), invalid_json()),
        raw(b"{".to_vec(), invalid_json()),
        raw(br#"{"random_id":"#.to_vec(), invalid_json()),
        raw(
            br#"{"random_id":"r1","error":"cut mid-str"#.to_vec(),
            invalid_json(),
        ),
        raw(b"random_id=r1&type=lxc".to_vec(), invalid_json()),
        raw(b"\xff\xfe{}".to_vec(), invalid_json()),
        // The message points at the byte where the parse failed.
        raw(
            br#"{"random_id": x}"#.to_vec(),
            Want::Err {
                code: RejectCode::InvalidJson,
                field: None,
                says: "at byte 14",
            },
        ),
        raw(
            b"{\"random_id\": \"r1\",\n \"type\": lxc}".to_vec(),
            Want::Err {
                code: RejectCode::InvalidJson,
                field: None,
                says: "at byte 29",
            },
        ),
        raw(deep_ok.into_bytes(), ok(&[("@unknown_fields", json!(1))])),
        raw(deep.into_bytes(), invalid_json()),
        raw(
            format!(r#"{{"x":{}"#, "[".repeat(100_000)).into_bytes(),
            invalid_json(),
        ),
        raw(
            format!("{{\"x\":{}\x01", "{\"y\":".repeat(100_000)).into_bytes(),
            invalid_json(),
        ),
    ]);
}

/// A tiny deterministic generator (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parser, the rescue pass and the masks.
const INTERESTING: &[u8] = b"\"\\{}[],:0123456789-.eExGkM \n\r\t\x00\x01\x1b\x7f\x80\xc3\xe2\xff@/";

fn mutate(rng: &mut Lcg, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 => out.insert(at, rng.next() as u8),
            4 if at < out.len() => {
                out.remove(at);
            }
            5 => {
                let len = rng.below(16).min(out.len() - at.min(out.len()));
                let copy: Vec<u8> = out[at..at + len].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at.max(1)),
        }
    }
    out
}

#[test]
fn mutated_corpus_never_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/payloads");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            (
                path.display().to_string(),
                std::fs::read(&path).expect("fixture"),
            )
        })
        // The two big logs make each round slow without adding shapes the small ones lack.
        .filter(|(_, bytes)| bytes.len() < 20_000)
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 18, "{} seeds", seeds.len());
    let mut rng = Lcg(0x5eed_0fc0_ffee);
    let (mut accepted, mut rejected) = (0, 0);
    let rounds = 2_000;
    for _ in 0..rounds {
        let (_, seed) = &seeds[rng.below(seeds.len())];
        let body = mutate(&mut rng, seed);
        match check(&body, &Want::Any) {
            Some(_) => accepted += 1,
            None => rejected += 1,
        }
    }
    assert_eq!(accepted + rejected, rounds);
    // Both outcomes happen, or the mutations are too weak (or too strong) to mean anything.
    assert!(
        accepted > 100 && rejected > 100,
        "accepted {accepted}, rejected {rejected}"
    );
}

/// `parse_pairs` (the edge's parse, no map) reads every body as `parse` (the object) does: the same
/// pairs once a key sent twice keeps its last value at its first place, the same repairs, the same
/// errors; over the fixtures and mutations of them.
#[test]
fn the_pairs_parse_reads_what_the_object_parse_reads() {
    use schema::rescue::{parse, parse_pairs};
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for sub in ["fixtures/payloads", "fixtures/fuzz"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(sub);
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path
                .extension()
                .is_some_and(|ext| ext == "json" || ext == "body")
            {
                bodies.push(std::fs::read(&path).expect("fixture"));
            }
        }
    }
    bodies.sort();
    let seeds: Vec<Vec<u8>> = bodies
        .iter()
        .filter(|b| b.len() < 20_000)
        .cloned()
        .collect();
    let mut rng = Lcg(0x9a17_5eed);
    for _ in 0..2_000 {
        let seed = &seeds[rng.below(seeds.len())];
        bodies.push(mutate(&mut rng, seed));
    }
    bodies.extend([
        br#"{"a": 1, "b": 2, "a": 3}"#.to_vec(),
        br#"[1, 2]"#.to_vec(),
        br#""text""#.to_vec(),
        b"null".to_vec(),
        br#"{"k\u0065y": "escaped key"}"#.to_vec(),
    ]);
    let (mut same_ok, mut same_err) = (0, 0);
    for body in &bodies {
        let object = parse(body);
        let pairs = parse_pairs(body).map(|p| {
            let mut map = serde_json::Map::new();
            for (key, value) in p.pairs {
                map.insert(key.into_owned(), value);
            }
            (map, p.rescued)
        });
        match (&object, &pairs) {
            (Ok(o), Ok((map, rescued))) => {
                assert_eq!(
                    (&o.object, &o.rescued),
                    (map, rescued),
                    "{}",
                    String::from_utf8_lossy(body)
                );
                // The order of the first places too.
                assert!(o.object.keys().eq(map.keys()));
                same_ok += 1;
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{}", String::from_utf8_lossy(body));
                same_err += 1;
            }
            _ => panic!(
                "{}: object {object:?}, pairs {pairs:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }
    assert!(
        same_ok > 100 && same_err > 100,
        "{same_ok} parsed, {same_err} refused"
    );
}
