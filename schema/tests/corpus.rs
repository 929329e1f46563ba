//! The payload corpus (`fixtures/payloads`, copied from the shared corpus) against what its README says
//! this project must answer: every fixture has one row, read from the directory at test time so a new
//! fixture cannot be skipped silently. Accepted fixtures are checked for their normalized key fields
//! (status after reclassification, category, rescue kinds, `Nats-Msg-Id`) and for the invariants every
//! accepted event keeps: masked addresses in `error`, the `error` size cap, a lossless wire form.
//! The 413 of `bad_07` belongs to the HTTP edge; here we only pin that the body is over the cap.

use std::collections::BTreeSet;
use std::path::PathBuf;

use schema::event::{CpuVendor, GpuPassthrough, GpuVendor};
use schema::names::event_subject;
use schema::privacy::MAX_ERROR_BYTES;
use schema::validate::Reclassified;
use schema::{
    Accepted, Category, Event, Kind, Reception, RejectCode, RepoSource, RescueKind, Status,
};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The edge's default `MAX_BODY_BYTES` (contract §2).
const MAX_BODY_BYTES: usize = 262_144;

/// The id shared by the lxc install of fixtures 01–06 and 12.
const JELLYFIN_ID: &str = "3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12";
/// The id shared by the bad_* fixtures.
const BAD_ID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
/// The install of the newer scripts' fixtures v3_01–v3_03.
const IMMICH_ID: &str = "5b1f0c7e-3a2d-4f6b-9c1e-7d8a2b4c6e01";
/// The TurnKey install of v3_04–v3_05.
const TURNKEY_ID: &str = "9e4d2a10-77c3-4c5e-8f0a-2b6d9e1c3f47";

/// What the project must answer for one fixture.
enum Expect {
    /// 202: the normalized event has these key fields; `more` checks the rest (body given as sent).
    Accepted {
        status: Status,
        category: Option<Category>,
        rescued: &'static [RescueKind],
        /// The status as the script sent it: the suffix of the `Nats-Msg-Id`.
        sent: &'static str,
        more: fn(&Accepted, &[u8]),
    },
    /// 400 with this code, naming this field.
    Rejected(RejectCode, Option<&'static str>),
    /// 413 at the edge: the body is over `MAX_BODY_BYTES`.
    TooLarge,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/payloads")
}

fn reception() -> Reception {
    Reception {
        event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        received_at: OffsetDateTime::from_unix_timestamp(1_750_000_000).expect("timestamp"),
    }
}

/// The `error` string of a fixture that is valid JSON, as sent.
fn sent_error(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).expect("fixture is valid JSON");
    value["error"]
        .as_str()
        .expect("fixture has an error")
        .to_string()
}

/// A dotted quad of four numeric octets (each 0..=255) that is not glued to a version-like neighbour
/// (`v1.2.3.4`, `pkg-1.2.3.4`, `1.2.3.4-1`, `1.2.3.4.5`): what the masking must never leave behind.
/// Written without regexes so it does not share a bug with the masker.
fn unmasked_ipv4(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let digits_from = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 4 {
            i += 1;
        }
        (i > start && i - start <= 3).then_some(i)
    };
    for start in 0..b.len() {
        if !b[start].is_ascii_digit() {
            continue;
        }
        let prev = start.checked_sub(1).map(|p| b[p]);
        if prev.is_some_and(|c| c.is_ascii_alphanumeric() || b".-_+~".contains(&c)) {
            continue;
        }
        let mut i = start;
        let mut octets = 0;
        let mut ok = true;
        while octets < 4 {
            let Some(end) = digits_from(i) else {
                ok = false;
                break;
            };
            if text[i..end].parse::<u16>().map_or(true, |n| n > 255) {
                ok = false;
                break;
            }
            octets += 1;
            i = end;
            if octets < 4 {
                if b.get(i) != Some(&b'.') {
                    ok = false;
                    break;
                }
                i += 1;
            }
        }
        if !ok {
            continue;
        }
        let (n1, n2) = (b.get(i).copied(), b.get(i + 1).copied());
        let version_next = match n1 {
            Some(c) if c.is_ascii_alphanumeric() => true,
            Some(b'.') => n2.is_some_and(|c| c.is_ascii_digit()),
            Some(b'-' | b'+' | b'~' | b'_') => n2.is_some_and(|c| c.is_ascii_alphanumeric()),
            _ => false,
        };
        if !version_next {
            return Some(text[start..i].to_string());
        }
    }
    None
}

/// Runs one fixture through `validate` and compares with what the README expects.
fn check(file: &str, expect: &Expect) {
    let body = std::fs::read(fixtures_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let got = schema::validate(&body, reception());
    match (expect, got) {
        (Expect::TooLarge, _) => {
            assert!(
                body.len() > MAX_BODY_BYTES,
                "{file}: {} bytes is not over {MAX_BODY_BYTES}",
                body.len()
            );
        }
        (Expect::Rejected(code, field), Err(rejection)) => {
            assert_eq!(rejection.code, *code, "{file}: {rejection:?}");
            assert_eq!(rejection.field, *field, "{file}: {rejection:?}");
            if let Some(field) = field {
                assert!(rejection.message.contains(field), "{file}: {rejection:?}");
            }
            if *code == RejectCode::InvalidJson {
                assert!(
                    rejection.message.contains("at byte "),
                    "{file}: {rejection:?}"
                );
            }
        }
        (
            Expect::Accepted {
                status,
                category,
                rescued,
                sent,
                more,
            },
            Ok(accepted),
        ) => {
            let e = &accepted.event;
            assert_eq!(e.status, *status, "{file}: status");
            assert_eq!(e.error_category, *category, "{file}: error_category");
            assert_eq!(e.rescued, *rescued, "{file}: rescued");
            assert_eq!(
                accepted.msg_id,
                format!("{}:{sent}", e.execution_id),
                "{file}: msg_id"
            );
            assert_eq!(e.v, 1, "{file}");
            assert_eq!(e.event_id, reception().event_id, "{file}");
            assert_eq!(e.received_at, reception().received_at, "{file}");
            assert!(!accepted.status_coerced, "{file}: status_coerced");
            assert_eq!(accepted.unknown_fields, 0, "{file}: unknown fields");
            assert!(
                accepted.dropped.is_empty(),
                "{file}: {:?}",
                accepted.dropped
            );
            if let Some(error) = &e.error {
                assert!(
                    error.len() <= MAX_ERROR_BYTES,
                    "{file}: error is {} bytes",
                    error.len()
                );
                assert_eq!(unmasked_ipv4(error), None, "{file}: unmasked IPv4 in error");
            }
            // The wire form carries the event whole.
            let back: Event = serde_json::from_slice(&e.to_json()).expect("wire form parses");
            assert_eq!(&back, e, "{file}: wire round trip");
            more(&accepted, &body);
        }
        (_, got) => panic!("{file}: got {got:?}"),
    }
}

/// One row per fixture, in directory order.
fn table() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    vec![
        (
            "01_lxc_installing.json",
            Accepted {
                status: Status::Installing,
                category: None,
                rescued: &[],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.random_id, JELLYFIN_ID);
                    assert_eq!(e.execution_id, JELLYFIN_ID);
                    assert_eq!(e.kind, Kind::Lxc);
                    assert_eq!(e.nsapp, "jellyfin");
                    assert_eq!(
                        (e.ct_type, e.disk_size, e.core_count, e.ram_size),
                        (Some(1), Some(8), Some(2), Some(2048))
                    );
                    assert_eq!(e.os_type.as_deref(), Some("debian"));
                    assert_eq!(e.os_version.as_deref(), Some("13"));
                    assert_eq!(e.pve_version.as_deref(), Some("9.0.10"));
                    assert_eq!(e.method.as_deref(), Some("default"));
                    assert_eq!(e.cpu_vendor, Some(CpuVendor::Intel));
                    assert_eq!(
                        e.cpu_model.as_deref(),
                        Some("Intel Core i5-8500T CPU @ 2.10GHz")
                    );
                    assert_eq!(e.gpu_vendor, Some(GpuVendor::Intel));
                    assert_eq!(
                        e.gpu_model.as_deref(),
                        Some("Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]")
                    );
                    assert_eq!(e.gpu_passthrough, Some(GpuPassthrough::Igpu));
                    assert_eq!(e.ram_speed.as_deref(), Some("2667"));
                    assert_eq!(e.repo_source, RepoSource::ProxmoxVE);
                    assert_eq!(
                        (e.exit_code, &e.error, e.install_duration),
                        (None, &None, None)
                    );
                    assert_eq!(a.reclassified, None);
                    assert_eq!(e.subject(), event_subject(Kind::Lxc, Status::Installing));
                },
            },
        ),
        (
            "02_lxc_progress_validation_host.json",
            Accepted {
                status: Status::Validation,
                category: None,
                rescued: &[],
                sent: "validation",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.nsapp, "jellyfin");
                    assert_eq!((e.disk_size, e.cpu_vendor), (None, None));
                },
            },
        ),
        (
            "03_lxc_progress_configuring_container.json",
            Accepted {
                status: Status::Configuring,
                category: None,
                rescued: &[],
                sent: "configuring",
                more: |a, _| assert_eq!(a.event.execution_id, JELLYFIN_ID),
            },
        ),
        (
            "04_lxc_success.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[],
                sent: "success",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.install_duration, Some(412));
                    assert_eq!(e.exit_code, Some(0));
                    // `"error": ""` is absent, not an empty string.
                    assert_eq!(e.error, None);
                    assert_eq!(e.error_signature, None);
                    assert_eq!(a.reclassified, None);
                },
            },
        ),
        (
            "05_lxc_failed_large_log.json",
            Accepted {
                status: Status::Failed,
                // The script sends `dependency` with exit code 100: a known category is kept, not
                // re-derived from the exit code (which would give `apt`).
                category: Some(Category::Dependency),
                rescued: &[],
                sent: "failed",
                more: |a, body| {
                    let e = &a.event;
                    let sent = sent_error(body);
                    let error = e.error.as_deref().expect("error kept");
                    let first_line = sent.lines().next().expect("first line");
                    assert!(error.starts_with(first_line), "first line lost");
                    assert!(
                        error.ends_with(&sent[sent.len() - 300..]),
                        "end of the log lost"
                    );
                    // ~117 KB is under the 128 KiB cap: kept whole, nothing to mask.
                    assert!(sent.len() > 100_000 && sent.len() <= MAX_ERROR_BYTES);
                    assert_eq!(error, sent);
                    assert_eq!(e.exit_code, Some(100));
                    assert_eq!(e.install_duration, Some(287));
                    assert_eq!(e.method.as_deref(), Some("advanced"));
                    assert!(e.error_signature.is_some());
                    assert_eq!(a.reclassified, None);
                },
            },
        ),
        (
            "06_lxc_failed_retry_medium.json",
            Accepted {
                status: Status::Failed,
                category: Some(Category::Dependency),
                rescued: &[],
                // Same msg id as 05: the shrinking retry is a duplicate of the first attempt.
                sent: "failed",
                more: |a, body| {
                    let error = a.event.error.as_deref().expect("error kept");
                    assert_eq!(error, sent_error(body));
                    assert!(
                        error.len() > 16_000 && error.len() < 17_000,
                        "{}",
                        error.len()
                    );
                    assert_eq!(a.msg_id, format!("{JELLYFIN_ID}:failed"));
                },
            },
        ),
        (
            "08_vm_installing.json",
            Accepted {
                status: Status::Installing,
                category: None,
                rescued: &[],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.kind, Kind::Vm);
                    assert_eq!(e.nsapp, "debian13-vm");
                    assert_eq!((e.ct_type, e.disk_size), (Some(2), Some(32)));
                    assert_eq!(
                        (e.cpu_vendor, e.gpu_vendor),
                        (Some(CpuVendor::Amd), Some(GpuVendor::Amd))
                    );
                    assert_eq!(e.pve_version.as_deref(), Some("8.4.14"));
                },
            },
        ),
        (
            "09_vm_success.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[],
                sent: "success",
                more: |a, _| {
                    assert_eq!(a.event.kind, Kind::Vm);
                    assert_eq!(a.event.install_duration, Some(96));
                    assert_eq!(a.event.error, None);
                },
            },
        ),
        (
            "10_pve_tool_success.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[],
                sent: "success",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.kind, Kind::Pve);
                    assert_eq!(e.nsapp, "post-pve-install");
                    assert_eq!(e.install_duration, Some(41));
                    assert_eq!((e.disk_size, e.cpu_vendor, &e.os_type), (None, None, &None));
                    assert_eq!(e.subject(), event_subject(Kind::Pve, Status::Success));
                },
            },
        ),
        (
            "11_addon_failed.json",
            Accepted {
                status: Status::Failed,
                category: Some(Category::Network),
                rescued: &[],
                sent: "failed",
                more: |a, body| {
                    let e = &a.event;
                    assert_eq!(e.kind, Kind::Addon);
                    assert_eq!(e.exit_code, Some(22));
                    assert_eq!(e.error.as_deref(), Some(sent_error(body).as_str()));
                    assert!(e
                        .error
                        .as_deref()
                        .unwrap_or_default()
                        .contains("returned error: 404"));
                    assert_eq!(e.install_duration, Some(7));
                },
            },
        ),
        (
            "12_lxc_failed_sigint_host.json",
            Accepted {
                status: Status::Aborted,
                category: Some(Category::UserAborted),
                rescued: &[],
                // Reclassified, but the msg id keeps the status as sent.
                sent: "failed",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(a.reclassified, Some(Reclassified::ToAborted));
                    assert_eq!(e.exit_code, Some(130));
                    assert_eq!(
                        e.error.as_deref(),
                        Some("exit_code=130 | Aborted by user (SIGINT)")
                    );
                    assert_eq!(e.nsapp, "immich");
                    assert_eq!(e.subject(), event_subject(Kind::Lxc, Status::Aborted));
                },
            },
        ),
        (
            "bad_01_empty_numeric.json",
            Accepted {
                status: Status::Installing,
                category: None,
                rescued: &[RescueKind::EmptyValue],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.disk_size, None);
                    assert_eq!(
                        (e.ct_type, e.core_count, e.ram_size),
                        (Some(1), Some(2), Some(2048))
                    );
                    assert_eq!(e.nsapp, "pihole");
                    // No execution_id sent: it falls back to random_id, and so does the msg id.
                    assert_eq!(e.execution_id, BAD_ID);
                    assert_eq!(a.msg_id, format!("{BAD_ID}:installing"));
                },
            },
        ),
        (
            "bad_02_numeric_unit_suffix.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[RescueKind::UnitSuffix],
                sent: "success",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.disk_size, Some(32));
                    assert_eq!(e.os_type.as_deref(), Some("homeassistant"));
                    assert_eq!(e.os_version.as_deref(), Some("16.2"));
                    assert_eq!(e.kind, Kind::Vm);
                    assert_eq!(e.ram_size, Some(4096));
                },
            },
        ),
        (
            "bad_03_unescaped_quotes.json",
            Accepted {
                status: Status::Failed,
                // `shell` (sent for exit codes 1 and 2) is kept as sent.
                category: Some(Category::Shell),
                rescued: &[RescueKind::UnescapedQuote],
                sent: "failed",
                more: |a, _| {
                    let e = &a.event;
                    let error = e.error.as_deref().expect("error kept");
                    assert!(
                        error.contains("E: Unable to locate package \"python3-pip\"\n"),
                        "{error:?}"
                    );
                    assert!(
                        error.ends_with("satisfies the requirement \"psycopg[c]\""),
                        "{error:?}"
                    );
                    assert!(
                        error.starts_with("exit_code=1 | General error"),
                        "{error:?}"
                    );
                    assert_eq!(e.install_duration, Some(201));
                },
            },
        ),
        (
            "bad_04_raw_control_chars.json",
            Accepted {
                status: Status::Failed,
                category: Some(Category::Resource),
                rescued: &[RescueKind::ControlChars],
                sent: "failed",
                more: |a, _| {
                    let e = &a.event;
                    let error = e.error.as_deref().expect("error kept");
                    // Raw newlines and tabs are kept as newlines and tabs in the log.
                    assert!(
                        error.starts_with(
                            "exit_code=137 | Killed (SIGKILL / Out of memory?)\n---\n"
                        ),
                        "{error:?}"
                    );
                    assert!(
                        error.contains("[ERROR]\u{1b}[0m\tin line 88: exit code 137\nKilled"),
                        "{error:?}"
                    );
                    assert_eq!(e.nsapp, "frigate");
                    assert_eq!(e.exit_code, Some(137));
                },
            },
        ),
        (
            "bad_06_non_utf8.json",
            Accepted {
                status: Status::Failed,
                category: Some(Category::Shell),
                rescued: &[RescueKind::InvalidUtf8],
                sent: "failed",
                more: |a, _| {
                    let error = a.event.error.as_deref().expect("error kept");
                    assert!(
                        error.contains("Fehler: Datei \u{FFFD}chou\u{FFFD}e "),
                        "{error:?}"
                    );
                    assert!(error.ends_with("binary tail"), "{error:?}");
                    assert!(error.matches('\u{FFFD}').count() >= 5, "{error:?}");
                },
            },
        ),
        ("bad_07_huge_body.json", TooLarge),
        (
            "bad_08_unknown_field_duration.json",
            Accepted {
                status: Status::Aborted,
                category: Some(Category::UserAborted),
                rescued: &[],
                sent: "failed",
                more: |a, _| {
                    assert_eq!(a.event.install_duration, Some(94));
                    assert_eq!(a.reclassified, Some(Reclassified::ToAborted));
                    assert_eq!(a.event.nsapp, "gitea");
                },
            },
        ),
        (
            "bad_09_wrong_types.json",
            Rejected(RejectCode::InvalidField, Some("disk_size")),
        ),
        (
            "bad_10_out_of_range_and_enums.json",
            Rejected(RejectCode::InvalidField, Some("type")),
        ),
        (
            "bad_11_truncated.json",
            Rejected(RejectCode::InvalidJson, None),
        ),
        (
            "bad_14_vm_os_type_not_allowed.json",
            Accepted {
                status: Status::Installing,
                category: None,
                rescued: &[],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.os_type.as_deref(), Some("opnsense"));
                    assert_eq!(e.kind, Kind::Vm);
                    assert_eq!(e.gpu_vendor, Some(GpuVendor::Unknown));
                    assert_eq!(e.gpu_passthrough, Some(GpuPassthrough::Unknown));
                    assert_eq!(e.gpu_model, None);
                    assert_eq!(
                        e.cpu_model.as_deref(),
                        Some("Intel Xeon E-2224 CPU @ 3.40GHz")
                    );
                },
            },
        ),
        (
            "v3_01_installing.json",
            Accepted {
                status: Status::Installing,
                // Newer scripts send `"error_category": ""`: absent.
                category: None,
                rescued: &[],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.execution_id, IMMICH_ID);
                    assert_eq!((e.kind, e.nsapp.as_str()), (Kind::Lxc, "immich"));
                    // The full payload at installing: exit 0 and duration 0 stay what they are on a
                    // progress event (only finals are reclassified).
                    assert_eq!((e.exit_code, e.install_duration), (Some(0), Some(0)));
                    assert_eq!(e.error, None);
                    assert_v3_host(e);
                    assert_eq!(a.reclassified, None);
                },
            },
        ),
        (
            "v3_02_configuring.json",
            Accepted {
                status: Status::Configuring,
                category: None,
                rescued: &[],
                sent: "configuring",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.execution_id, IMMICH_ID);
                    assert_eq!(e.install_duration, Some(141));
                    assert_v3_host(e);
                },
            },
        ),
        (
            "v3_03_failed_apt.json",
            Accepted {
                status: Status::Failed,
                category: Some(Category::Dependency),
                rescued: &[],
                sent: "failed",
                more: |a, body| {
                    let e = &a.event;
                    assert_eq!(e.execution_id, IMMICH_ID);
                    assert_eq!(e.exit_code, Some(100));
                    assert_eq!(e.install_duration, Some(412));
                    assert_eq!(e.error.as_deref(), Some(sent_error(body).as_str()));
                    assert!(e.error_signature.is_some());
                    assert_v3_host(e);
                    assert_eq!(a.reclassified, None);
                },
            },
        ),
        (
            "v3_04_turnkey_installing.json",
            Accepted {
                status: Status::Installing,
                category: None,
                rescued: &[],
                sent: "installing",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.execution_id, TURNKEY_ID);
                    assert_eq!(e.kind, Kind::Turnkey);
                    assert_eq!(e.nsapp, "turnkey-nextcloud");
                    assert_eq!(
                        e.subject(),
                        format!(
                            "{}.turnkey.installing",
                            schema::names::EVENTS_SUBJECT_PREFIX
                        )
                    );
                },
            },
        ),
        (
            "v3_05_turnkey_success.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[],
                sent: "success",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.execution_id, TURNKEY_ID);
                    assert_eq!(e.kind, Kind::Turnkey);
                    assert_eq!(e.install_duration, Some(388));
                    assert_eq!((e.exit_code, &e.error), (Some(0), &None));
                    assert_eq!(
                        e.subject(),
                        format!("{}.turnkey.success", schema::names::EVENTS_SUBJECT_PREFIX)
                    );
                },
            },
        ),
        (
            "v3_06_incus_arm_success.json",
            Accepted {
                status: Status::Success,
                category: None,
                rescued: &[],
                sent: "success",
                more: |a, _| {
                    let e = &a.event;
                    assert_eq!(e.nsapp, "docker");
                    assert_eq!(e.install_duration, Some(96));
                    assert_eq!(e.repo_source, RepoSource::External);
                    assert_eq!(e.repo_slug.as_deref(), Some("someuser/ProxmoxVE-fork"));
                    assert_eq!(e.has_arm, Some(true));
                    assert_eq!(e.arch.as_deref(), Some("arm64"));
                    assert_eq!(e.pve_version.as_deref(), Some("incus-6.0.4"));
                    assert_eq!(e.cpu_vendor, Some(CpuVendor::Arm));
                    // Empty strings are absent; `unknown` hardware folds as usual.
                    assert_eq!(
                        (&e.cpu_model, &e.gpu_model, &e.ram_speed),
                        (&None, &None, &None)
                    );
                    assert_eq!(e.gpu_vendor, Some(GpuVendor::Unknown));
                },
            },
        ),
    ]
}

/// What the newer scripts' lxc fixtures (v3_01–v3_03) all carry: the host, its hardware and where the
/// script came from.
fn assert_v3_host(e: &Event) {
    assert_eq!(e.repo_source, RepoSource::ProxmoxVE);
    assert_eq!(e.repo_slug.as_deref(), Some("community-scripts/ProxmoxVE"));
    assert_eq!(e.has_arm, Some(false));
    assert_eq!(e.arch.as_deref(), Some("amd64"));
    assert_eq!(
        (e.ct_type, e.disk_size, e.core_count, e.ram_size),
        (Some(1), Some(20), Some(4), Some(8192))
    );
    assert_eq!(e.pve_version.as_deref(), Some("9.1.1"));
    assert_eq!(e.cpu_vendor, Some(CpuVendor::Amd));
    assert_eq!(
        e.cpu_model.as_deref(),
        Some("AMD Ryzen 7 5825U with Radeon Graphics")
    );
    assert_eq!(e.gpu_passthrough, Some(GpuPassthrough::Igpu));
    assert_eq!(e.ram_speed.as_deref(), Some("3200"));
}

#[test]
fn every_fixture_gets_the_answer_of_the_readme() {
    let table = table();
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        if name != "README.md" {
            seen.insert(name);
        }
    }
    let listed: BTreeSet<String> = table.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed.len(), table.len(), "a fixture is listed twice");
    assert_eq!(seen, listed, "fixtures on disk vs rows of the table");
    assert_eq!(seen.len(), table.len());
    for (file, expect) in &table {
        check(file, expect);
    }
}

/// bad_09 would be accepted but for its bad fields: quoted integers (`ct_type`, `ram_size`) and a number
/// for a string (`os_version`) are fine, so fixing `disk_size` moves the blame to the boolean `method`.
#[test]
fn bad_09_blames_each_bad_field_in_document_order() {
    let body = std::fs::read(fixtures_dir().join("bad_09_wrong_types.json")).expect("fixture");
    let mut value: Value = serde_json::from_slice(&body).expect("valid JSON");
    value["disk_size"] = Value::from(4);
    let err =
        schema::validate(&serde_json::to_vec(&value).expect("json"), reception()).unwrap_err();
    assert_eq!(
        (err.code, err.field),
        (RejectCode::InvalidField, Some("method"))
    );
    value["method"] = Value::from("default");
    let ok = schema::validate(&serde_json::to_vec(&value).expect("json"), reception())
        .expect("accepted");
    assert_eq!((ok.event.ct_type, ok.event.ram_size), (Some(1), Some(1024)));
    assert_eq!(ok.event.os_version.as_deref(), Some("12"));
}

/// The corpus has no real address in its logs, so plant some in every fixture that carries or could
/// carry a log and check they never come out.
#[test]
fn planted_addresses_are_masked_in_every_accepted_fixture() {
    let planted = "\nconnect to 10.20.30.40:443 from admin@example.org hwaddr 00:1a:2b:3c:4d:5e via 2001:db8::7334 (pkg 2.4.1.3-1)";
    let mut count = 0;
    for (file, expect) in table() {
        let Expect::Accepted { .. } = expect else {
            continue;
        };
        let body = std::fs::read(fixtures_dir().join(file)).expect("fixture");
        let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
            continue; // a broken fixture: its own row covers it
        };
        let error = value["error"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("exit_code=1 | planted")
            .to_string();
        value["error"] = Value::from(format!("{error}{planted}"));
        let accepted = schema::validate(&serde_json::to_vec(&value).expect("json"), reception())
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let Some(out) = accepted.event.error.as_deref() else {
            // exit 0 on a failed/unknown clears the log; none of the corpus does that.
            panic!("{file}: log dropped");
        };
        assert_eq!(unmasked_ipv4(out), None, "{file}");
        assert!(out.ends_with("\nconnect to 10.x.x.x:443 from x@x.x hwaddr xx:xx:xx:xx:xx:xx via 2001:x::x (pkg 2.4.1.3-1)"), "{file}: {:?}", &out[out.len().saturating_sub(200)..]);
        count += 1;
    }
    assert_eq!(count, 19, "accepted fixtures that are valid JSON");
}

#[test]
fn the_ipv4_finder_of_these_tests_finds_what_it_should() {
    let cases: &[(&str, Option<&str>)] = &[
        ("connect to 192.168.1.10 failed", Some("192.168.1.10")),
        ("(8.8.8.8)", Some("8.8.8.8")),
        ("|172.16.5.196|:443", Some("172.16.5.196")),
        ("10.0.0.1:8080", Some("10.0.0.1")),
        ("192.x.x.x", None),
        ("172.x.x.196", None),
        ("v1.2.3.4", None),
        ("pkg-1.2.3.4", None),
        ("1.2.3.4-1", None),
        ("1.2.3.4.5", None),
        ("300.1.1.1", None),
        ("9.0.10", None),
    ];
    for &(text, expected) in cases {
        assert_eq!(unmasked_ipv4(text).as_deref(), expected, "{text:?}");
    }
}
