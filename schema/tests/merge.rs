//! The install-state merge of contract §6 (`schema::merge`) on events built by `schema::validate`, with
//! fixed receptions: event `n` has the time-ordered id `Uuid::from_u128(n)` (a higher `n` is a later
//! event) and arrives `t` seconds after a fixed instant. Every scenario goes through `check`, which merges
//! the events in every order and with every event redelivered, asserts all of these give the same state,
//! and returns it for the scenario's own assertions: status never moves backwards, a real final beats
//! `unknown`, the earliest real final wins and brings the outcome fields, fields are filled by the first
//! event that has them and never blanked, known hardware beats `unknown`, first/last seen are min/max,
//! and the duration falls back to the time from the first event to the final one.

use std::path::PathBuf;

use schema::event::{CpuVendor, GpuPassthrough, GpuVendor};
use schema::merge::Stamped;
use schema::{merge, Category, Event, InstallState, Kind, Reception, RepoSource, Status};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// The reception time of `t = 0`.
const T0: i64 = 1_750_000_000;
/// The install of the lxc fixtures.
const JELLYFIN_ID: &str = "3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12";

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn at(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T0 + t).expect("timestamp")
}

/// Event `n`, received at `t`, validated from `body`.
fn event(n: u128, t: i64, body: &[u8]) -> Event {
    let reception = Reception {
        event_id: id(n),
        received_at: at(t),
    };
    schema::validate(body, reception)
        .unwrap_or_else(|e| panic!("event {n}: {e:?}"))
        .event
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/payloads")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A body of install `x1` with `fields` on top of the required ones.
fn body(fields: Value) -> Vec<u8> {
    let mut value = json!({"random_id": "r1", "execution_id": "x1", "type": "lxc", "nsapp": "app"});
    for (k, v) in fields.as_object().expect("an object of fields") {
        value[k] = v.clone();
    }
    serde_json::to_vec(&value).expect("json")
}

/// The lxc install of the corpus: 01 installing, 02 validation, 03 configuring, 04 success.
fn jellyfin() -> [Event; 4] {
    [
        event(1, 0, &fixture("01_lxc_installing.json")),
        event(2, 5, &fixture("02_lxc_progress_validation_host.json")),
        event(
            3,
            60,
            &fixture("03_lxc_progress_configuring_container.json"),
        ),
        event(4, 412, &fixture("04_lxc_success.json")),
    ]
}

/// The events in short, for failure messages: `n:status@t` each.
fn show(events: &[Event]) -> String {
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            let t = (e.received_at - at(0)).whole_seconds();
            format!("{}:{}@{t}", e.event_id.as_u128(), e.status.as_str())
        })
        .collect();
    names.join(" ")
}

fn merge_all<'a>(events: impl IntoIterator<Item = &'a Event>) -> InstallState {
    let mut state = None;
    for e in events {
        state = Some(merge(state, e));
    }
    state.expect("at least one event")
}

/// Every order of `0..n` (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut out = vec![order.clone()];
    let mut c = vec![0; n];
    let mut i = 0;
    while i < n {
        if c[i] < i {
            let j = if i % 2 == 0 { 0 } else { c[i] };
            order.swap(j, i);
            out.push(order.clone());
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    out
}

/// Merges `events` in every order, each order also with every event delivered twice in a row and with
/// the whole list redelivered; asserts all agree (and survive a serde round trip); returns the state.
fn check(events: &[Event]) -> InstallState {
    assert!(
        !events.is_empty() && events.len() <= 7,
        "{} events",
        events.len()
    );
    let orders = permutations(events.len());
    let factorial: usize = (1..=events.len()).product();
    assert_eq!(orders.len(), factorial);
    let expected = merge_all(events);
    for order in &orders {
        let once = merge_all(order.iter().map(|&i| &events[i]));
        assert_eq!(once, expected, "order {order:?} of {}", show(events));
        let twice = merge_all(order.iter().flat_map(|&i| [&events[i], &events[i]]));
        assert_eq!(twice, expected, "order {order:?}, each event twice");
        let again = order
            .iter()
            .rev()
            .fold(once, |state, &i| merge(Some(state), &events[i]));
        assert_eq!(again, expected, "order {order:?}, then all redelivered");
    }
    let wire = serde_json::to_string(&expected).expect("state serializes");
    let back: InstallState = serde_json::from_str(&wire).expect("state parses");
    assert_eq!(back, expected, "state round trip");
    expected
}

/// A stamped value as (value, event it came from, weak).
fn stamp<T: Clone>(s: &Option<Stamped<T>>) -> Option<(T, Uuid, bool)> {
    s.as_ref().map(|s| (s.value.clone(), s.from, s.weak))
}

#[test]
fn the_corpus_lxc_install_gives_one_state_in_all_24_orders() {
    let events = jellyfin();
    let s = check(&events);
    assert_eq!(s.execution_id, JELLYFIN_ID);
    assert_eq!((s.status.value, s.status.from), (Status::Success, id(4)));
    assert!(s.is_final());
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!(
        (outcome.status, outcome.from, outcome.at),
        (Status::Success, id(4), at(412))
    );
    assert_eq!(
        (outcome.exit_code, &outcome.error, outcome.error_category),
        (Some(0), &None, None)
    );
    assert_eq!(s.duration_secs(), Some(412));
    assert_eq!(stamp(&s.install_duration), Some((412, id(4), false)));
    assert_eq!(
        (s.first_seen, s.last_seen, s.finished_at()),
        (at(0), at(412), Some(at(412)))
    );
    // Hardware and resources from 01, though 04 repeats them.
    assert_eq!(stamp(&s.ct_type), Some((1, id(1), false)));
    assert_eq!(stamp(&s.disk_size), Some((8, id(1), false)));
    assert_eq!(stamp(&s.core_count), Some((2, id(1), false)));
    assert_eq!(stamp(&s.ram_size), Some((2048, id(1), false)));
    assert_eq!(stamp(&s.os_type), Some(("debian".into(), id(1), false)));
    assert_eq!(stamp(&s.os_version), Some(("13".into(), id(1), false)));
    assert_eq!(stamp(&s.pve_version), Some(("9.0.10".into(), id(1), false)));
    assert_eq!(stamp(&s.method), Some(("default".into(), id(1), false)));
    assert_eq!(stamp(&s.cpu_vendor), Some((CpuVendor::Intel, id(1), false)));
    assert_eq!(
        stamp(&s.cpu_model),
        Some(("Intel Core i5-8500T CPU @ 2.10GHz".into(), id(1), false))
    );
    assert_eq!(stamp(&s.gpu_vendor), Some((GpuVendor::Intel, id(1), false)));
    assert_eq!(
        stamp(&s.gpu_model).map(|(v, from, _)| (v, from)),
        Some((
            "Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]".into(),
            id(1)
        ))
    );
    assert_eq!(
        stamp(&s.gpu_passthrough),
        Some((GpuPassthrough::Igpu, id(1), false))
    );
    assert_eq!(stamp(&s.ram_speed), Some(("2667".into(), id(1), false)));
    assert_eq!((s.kind.value, s.kind.from), (Kind::Lxc, id(1)));
    assert_eq!((s.nsapp.value.as_str(), s.nsapp.from), ("jellyfin", id(1)));
    assert_eq!(
        (s.random_id.value.as_str(), s.random_id.from),
        (JELLYFIN_ID, id(1))
    );
    assert_eq!(s.repo_source.value, RepoSource::ProxmoxVE);
}

#[test]
fn the_install_so_far_at_each_step() {
    let [e1, e2, e3, e4] = jellyfin();
    let cases: Vec<(Vec<Event>, Status, Option<u32>)> = vec![
        (vec![e1.clone()], Status::Installing, None),
        (vec![e1.clone(), e2.clone()], Status::Validation, None),
        (
            vec![e1.clone(), e2.clone(), e3.clone()],
            Status::Configuring,
            None,
        ),
        (vec![e2.clone(), e3.clone()], Status::Configuring, None),
        (vec![e1.clone(), e4.clone()], Status::Success, Some(412)),
        (vec![e3.clone(), e4.clone()], Status::Success, Some(412)),
    ];
    for (events, status, duration) in cases {
        let s = check(&events);
        assert_eq!(s.status.value, status, "{}", show(&events));
        assert_eq!(s.is_final(), status.is_final());
        assert_eq!(s.duration_secs(), duration);
        // Hardware is there as soon as an event carrying it is, and only then.
        let has_hardware = events.iter().any(|e| e.cpu_vendor.is_some());
        assert_eq!(s.cpu_vendor.is_some(), has_hardware);
    }
}

#[test]
fn merging_an_event_again_changes_nothing() {
    let events = jellyfin();
    let once = check(&events);
    let [e1, e2, e3, e4] = events;
    let redelivered = check(&[e1.clone(), e2, e3, e4.clone(), e4, e1.clone()]);
    assert_eq!(redelivered, once);
    let single = merge(None, &e1);
    assert_eq!(merge(Some(single.clone()), &e1), single);
    assert_eq!(check(&[e1.clone(), e1]), single);
}

#[test]
fn status_never_moves_backwards() {
    let success = body(json!({"status": "success", "exit_code": 0, "install_duration": 90}));
    let configuring = body(json!({"status": "configuring"}));
    let validation = body(json!({"status": "validation"}));
    let installing = body(json!({"status": "installing"}));
    let aborted = body(json!({"status": "failed", "exit_code": 130}));
    let cases: Vec<(Vec<Event>, Status, u128)> = vec![
        // A progress ping that arrives (or was sent) after the final does not reopen the install.
        (
            vec![event(1, 0, &success), event(2, 10, &configuring)],
            Status::Success,
            1,
        ),
        (
            vec![
                event(1, 0, &success),
                event(2, 10, &installing),
                event(3, 20, &validation),
            ],
            Status::Success,
            1,
        ),
        (
            vec![
                event(1, 0, &installing),
                event(2, 10, &configuring),
                event(3, 20, &validation),
            ],
            Status::Configuring,
            2,
        ),
        (
            vec![event(1, 0, &aborted), event(2, 10, &validation)],
            Status::Aborted,
            1,
        ),
    ];
    for (events, status, from) in cases {
        let s = check(&events);
        assert_eq!((s.status.value, s.status.from), (status, id(from)));
    }
}

#[test]
fn a_real_final_beats_unknown_and_the_earliest_real_final_wins() {
    let unknown = body(
        json!({"status": "unknown", "exit_code": 28, "error": "curl: (28) timed out", "error_category": "timeout"}),
    );
    let unknown_2 = body(json!({"status": "unknown", "exit_code": 1, "error": "later unknown"}));
    let success = body(json!({"status": "success", "exit_code": 0}));
    let failed_100 =
        body(json!({"status": "failed", "exit_code": 100, "error": "E: broken packages"}));
    let failed_22 = body(json!({"status": "failed", "exit_code": 22}));
    let aborted = body(json!({"status": "aborted"}));
    let installing = body(json!({"status": "installing"}));
    // (events, status, deciding event, exit_code, error, category)
    type Row = (
        Vec<Event>,
        Status,
        u128,
        Option<u8>,
        Option<&'static str>,
        Option<Category>,
    );
    let cases: Vec<Row> = vec![
        // An unknown beaten by a later real final leaves none of its outcome behind.
        (
            vec![event(1, 0, &unknown), event(2, 10, &success)],
            Status::Success,
            2,
            Some(0),
            None,
            None,
        ),
        (
            vec![event(1, 0, &success), event(2, 10, &unknown)],
            Status::Success,
            1,
            Some(0),
            None,
            None,
        ),
        (
            vec![event(1, 0, &unknown), event(2, 10, &failed_22)],
            Status::Failed,
            2,
            Some(22),
            Some("Exit code 22: curl: server returned an HTTP error (4xx or 5xx)"),
            Some(Category::Network),
        ),
        // Among unknowns, the first.
        (
            vec![event(1, 0, &unknown), event(2, 10, &unknown_2)],
            Status::Unknown,
            1,
            Some(28),
            Some("curl: (28) timed out"),
            Some(Category::Timeout),
        ),
        // Among real finals, the earliest by event id.
        (
            vec![event(1, 0, &failed_100), event(2, 10, &success)],
            Status::Failed,
            1,
            Some(100),
            Some("E: broken packages"),
            Some(Category::Apt),
        ),
        (
            vec![event(1, 0, &success), event(2, 10, &failed_100)],
            Status::Success,
            1,
            Some(0),
            None,
            None,
        ),
        (
            vec![event(1, 0, &failed_100), event(2, 10, &failed_22)],
            Status::Failed,
            1,
            Some(100),
            Some("E: broken packages"),
            Some(Category::Apt),
        ),
        (
            vec![
                event(1, 0, &aborted),
                event(2, 10, &failed_100),
                event(3, 20, &success),
            ],
            Status::Aborted,
            1,
            None,
            None,
            Some(Category::UserAborted),
        ),
        // Earliest by id even when it arrived last.
        (
            vec![
                event(1, 500, &failed_22),
                event(2, 10, &failed_100),
                event(3, 0, &installing),
            ],
            Status::Failed,
            1,
            Some(22),
            Some("Exit code 22: curl: server returned an HTTP error (4xx or 5xx)"),
            Some(Category::Network),
        ),
        (
            vec![
                event(1, 0, &installing),
                event(2, 10, &unknown),
                event(3, 20, &unknown_2),
                event(4, 30, &failed_22),
                event(5, 40, &success),
            ],
            Status::Failed,
            4,
            Some(22),
            Some("Exit code 22: curl: server returned an HTTP error (4xx or 5xx)"),
            Some(Category::Network),
        ),
    ];
    for (events, status, from, exit_code, error, category) in cases {
        let s = check(&events);
        let outcome = s.outcome.as_ref().expect("final");
        assert_eq!(
            (s.status.value, s.status.from),
            (status, id(from)),
            "{}",
            show(&events)
        );
        assert_eq!((outcome.status, outcome.from), (status, id(from)));
        assert_eq!(outcome.at, events[from as usize - 1].received_at);
        assert_eq!(
            (
                outcome.exit_code,
                outcome.error.as_deref(),
                outcome.error_category
            ),
            (exit_code, error, category),
            "{}",
            show(&events)
        );
    }
}

#[test]
fn the_corpus_finals_and_retries_of_one_install() {
    let [e1, ..] = jellyfin();
    let big = event(5, 300, &fixture("05_lxc_failed_large_log.json"));
    let retry = event(6, 302, &fixture("06_lxc_failed_retry_medium.json"));
    let sigint = event(12, 320, &fixture("12_lxc_failed_sigint_host.json"));

    // The first attempt of the final and its shrunk retry: the first attempt's full log stays.
    let s = check(&[e1.clone(), retry.clone(), big.clone()]);
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!((outcome.status, outcome.from), (Status::Failed, id(5)));
    assert_eq!(outcome.error, big.error);
    assert_eq!(outcome.error_category, Some(Category::Dependency));
    assert_eq!(stamp(&s.method), Some(("default".into(), id(1), false)));
    assert_eq!(stamp(&s.install_duration), Some((287, id(5), false)));

    // 12 reuses the id for another app after Ctrl+C: the earliest event names the install, the
    // resources are the first ones seen, the outcome is 12's.
    let s = check(&[e1, sigint]);
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!(
        (s.status.value, outcome.exit_code),
        (Status::Aborted, Some(130))
    );
    assert_eq!(outcome.error_category, Some(Category::UserAborted));
    assert_eq!((s.nsapp.value.as_str(), s.nsapp.from), ("jellyfin", id(1)));
    assert_eq!(stamp(&s.disk_size), Some((8, id(1), false)));
    assert_eq!(stamp(&s.ram_size), Some((2048, id(1), false)));
    assert_eq!(stamp(&s.install_duration), Some((63, id(12), false)));
    assert_eq!(s.duration_secs(), Some(63));
}

#[test]
fn a_later_event_never_blanks_a_field() {
    let hardware = body(json!({
        "status": "installing", "disk_size": 8, "core_count": 2, "cpu_vendor": "amd",
        "cpu_model": "Ryzen", "os_version": "12", "ram_speed": "3200",
    }));
    let ping = body(json!({"status": "validation"}));
    let empty_strings = body(json!({
        "status": "configuring", "cpu_model": "", "os_version": "  ", "disk_size": null, "ram_speed": "",
    }));
    let bare_final = body(json!({"status": "success", "exit_code": 0}));
    for events in [
        vec![event(1, 0, &hardware), event(2, 10, &ping)],
        vec![
            event(1, 0, &hardware),
            event(2, 10, &empty_strings),
            event(3, 20, &bare_final),
        ],
        // The hardware came late: it still fills what the earlier events left empty.
        vec![
            event(1, 0, &ping),
            event(2, 10, &empty_strings),
            event(3, 20, &hardware),
        ],
    ] {
        let from = events
            .iter()
            .find(|e| e.disk_size.is_some())
            .expect("an event with hardware")
            .event_id;
        let s = check(&events);
        assert_eq!(stamp(&s.disk_size), Some((8, from, false)));
        assert_eq!(stamp(&s.core_count), Some((2, from, false)));
        assert_eq!(stamp(&s.cpu_vendor), Some((CpuVendor::Amd, from, false)));
        assert_eq!(stamp(&s.cpu_model), Some(("Ryzen".into(), from, false)));
        assert_eq!(stamp(&s.os_version), Some(("12".into(), from, false)));
        assert_eq!(stamp(&s.ram_speed), Some(("3200".into(), from, false)));
        assert_eq!((stamp(&s.gpu_model), stamp(&s.ram_size)), (None, None));
    }
}

#[test]
fn known_hardware_beats_unknown_whatever_the_order() {
    let unknowns = body(
        json!({"status": "installing", "cpu_vendor": "unknown", "gpu_vendor": "unknown", "gpu_passthrough": "unknown"}),
    );
    let odd = body(
        json!({"status": "validation", "cpu_vendor": "VIA", "gpu_vendor": "Matrox", "gpu_passthrough": "sr-iov"}),
    );
    let intel = body(
        json!({"status": "configuring", "cpu_vendor": "intel", "gpu_vendor": "nvidia", "gpu_passthrough": "dgpu"}),
    );
    let amd = body(
        json!({"status": "configuring", "cpu_vendor": "amd", "gpu_vendor": "amd", "gpu_passthrough": "igpu"}),
    );
    type Row = (
        Vec<Event>,
        (CpuVendor, GpuVendor, GpuPassthrough),
        u128,
        bool,
    );
    let cases: Vec<Row> = vec![
        // An earlier unknown loses to a later known value.
        (
            vec![event(1, 0, &unknowns), event(2, 10, &intel)],
            (CpuVendor::Intel, GpuVendor::Nvidia, GpuPassthrough::Dgpu),
            2,
            false,
        ),
        (
            vec![event(1, 0, &intel), event(2, 10, &unknowns)],
            (CpuVendor::Intel, GpuVendor::Nvidia, GpuPassthrough::Dgpu),
            1,
            false,
        ),
        // Values the contract does not know fold into unknown and lose the same way.
        (
            vec![event(1, 0, &odd), event(2, 10, &intel)],
            (CpuVendor::Intel, GpuVendor::Nvidia, GpuPassthrough::Dgpu),
            2,
            false,
        ),
        (
            vec![
                event(1, 0, &unknowns),
                event(2, 10, &odd),
                event(3, 20, &intel),
            ],
            (CpuVendor::Intel, GpuVendor::Nvidia, GpuPassthrough::Dgpu),
            3,
            false,
        ),
        // Between two known values the first wins; with no known value the first unknown stays.
        (
            vec![event(1, 0, &amd), event(2, 10, &intel)],
            (CpuVendor::Amd, GpuVendor::Amd, GpuPassthrough::Igpu),
            1,
            false,
        ),
        (
            vec![
                event(1, 0, &unknowns),
                event(2, 10, &amd),
                event(3, 20, &intel),
            ],
            (CpuVendor::Amd, GpuVendor::Amd, GpuPassthrough::Igpu),
            2,
            false,
        ),
        (
            vec![event(1, 0, &unknowns), event(2, 10, &odd)],
            (
                CpuVendor::Unknown,
                GpuVendor::Unknown,
                GpuPassthrough::Unknown,
            ),
            1,
            true,
        ),
    ];
    for (events, (cpu, gpu, pass), from, weak) in cases {
        let s = check(&events);
        assert_eq!(
            stamp(&s.cpu_vendor),
            Some((cpu, id(from), weak)),
            "{}",
            show(&events)
        );
        assert_eq!(stamp(&s.gpu_vendor), Some((gpu, id(from), weak)));
        assert_eq!(stamp(&s.gpu_passthrough), Some((pass, id(from), weak)));
    }
}

#[test]
fn the_first_non_empty_value_wins() {
    let v = |os_version: Value| body(json!({"status": "installing", "os_version": os_version}));
    // (events, expected os_version and the event it comes from)
    type Row = (Vec<Event>, Option<(&'static str, u128)>);
    let cases: Vec<Row> = vec![
        (
            vec![event(1, 0, &v(json!("12"))), event(2, 10, &v(json!("13")))],
            Some(("12", 1)),
        ),
        (
            vec![event(1, 0, &v(json!("13"))), event(2, 10, &v(json!("12")))],
            Some(("13", 1)),
        ),
        (
            vec![event(1, 0, &v(json!(""))), event(2, 10, &v(json!("13")))],
            Some(("13", 2)),
        ),
        (
            vec![event(1, 0, &v(Value::Null)), event(2, 10, &v(json!(13)))],
            Some(("13", 2)),
        ),
        (
            vec![event(1, 0, &v(json!(" "))), event(2, 10, &v(json!("")))],
            None,
        ),
        (
            vec![
                event(1, 0, &v(json!(""))),
                event(2, 10, &v(json!("11"))),
                event(3, 20, &v(json!("12"))),
            ],
            Some(("11", 2)),
        ),
    ];
    for (events, expected) in cases {
        let s = check(&events);
        let got = s.os_version.as_ref().map(|v| (v.value.as_str(), v.from));
        assert_eq!(got, expected.map(|(v, n)| (v, id(n))), "{}", show(&events));
    }
}

#[test]
fn first_and_last_seen_are_the_extremes_of_reception() {
    let ping = body(json!({"status": "validation"}));
    let installing = body(json!({"status": "installing"}));
    let cases: Vec<(Vec<Event>, i64, i64)> = vec![
        (vec![event(1, 0, &installing)], 0, 0),
        (
            vec![
                event(1, 50, &installing),
                event(2, 10, &ping),
                event(3, 30, &ping),
            ],
            10,
            50,
        ),
        (vec![event(1, -20, &installing), event(2, 7, &ping)], -20, 7),
    ];
    for (events, first, last) in cases {
        let s = check(&events);
        assert_eq!((s.first_seen, s.last_seen), (at(first), at(last)));
    }
}

#[test]
fn duration_falls_back_to_the_time_from_first_seen_to_the_final() {
    let installing = body(json!({"status": "installing"}));
    let configuring = body(json!({"status": "configuring"}));
    let success = body(json!({"status": "success", "exit_code": 0}));
    let success_90 = body(json!({"status": "success", "exit_code": 0, "install_duration": 90}));
    let unknown = body(json!({"status": "unknown"}));
    let cases: Vec<(Vec<Event>, Option<u32>)> = vec![
        (
            vec![event(1, 0, &installing), event(2, 300, &success)],
            Some(300),
        ),
        // A progress ping after the final moves last_seen, not the end of the install.
        (
            vec![
                event(1, 0, &installing),
                event(2, 300, &success),
                event(3, 400, &configuring),
            ],
            Some(300),
        ),
        // The deciding final ends the install, not an earlier unknown.
        (
            vec![
                event(1, 0, &installing),
                event(2, 100, &unknown),
                event(3, 250, &success),
            ],
            Some(250),
        ),
        (
            vec![
                event(1, 0, &installing),
                event(2, 100, &success),
                event(3, 250, &unknown),
            ],
            Some(100),
        ),
        // The script's own figure wins over the clock.
        (
            vec![event(1, 0, &installing), event(2, 300, &success_90)],
            Some(90),
        ),
        (vec![event(1, 0, &success)], Some(0)),
        (
            vec![event(1, 0, &installing), event(2, 300, &configuring)],
            None,
        ),
    ];
    for (events, duration) in cases {
        let s = check(&events);
        assert_eq!(s.duration_secs(), duration, "{}", show(&events));
    }
}

#[test]
fn a_final_only_install_is_final_from_its_one_event() {
    let tool = event(1, 41, &fixture("10_pve_tool_success.json"));
    let s = check(std::slice::from_ref(&tool));
    assert!(s.is_final());
    assert_eq!(
        (s.kind.value, s.nsapp.value.as_str()),
        (Kind::Pve, "post-pve-install")
    );
    assert_eq!((s.status.value, s.status.from), (Status::Success, id(1)));
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!(
        (outcome.from, outcome.exit_code, outcome.error_category),
        (id(1), Some(0), None)
    );
    assert_eq!(
        (s.first_seen, s.last_seen, s.finished_at()),
        (at(41), at(41), Some(at(41)))
    );
    assert_eq!(s.duration_secs(), Some(41));
    assert_eq!(stamp(&s.pve_version), Some(("9.0.10".into(), id(1), false)));
    assert_eq!((stamp(&s.disk_size), stamp(&s.cpu_vendor)), (None, None));
    assert_eq!(s, merge(None, &tool));

    let addon = event(7, 0, &fixture("11_addon_failed.json"));
    let s = check(&[addon]);
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!(
        (s.kind.value, s.status.value),
        (Kind::Addon, Status::Failed)
    );
    assert_eq!(
        (outcome.exit_code, outcome.error_category),
        (Some(22), Some(Category::Network))
    );
}

#[test]
fn the_permutation_helper_yields_every_order_once() {
    for n in 1..=6 {
        let mut orders = permutations(n);
        let count = orders.len();
        orders.sort();
        orders.dedup();
        assert_eq!(orders.len(), count, "n = {n}: duplicates");
        assert_eq!(count, (1..=n).product::<usize>(), "n = {n}");
    }
}
