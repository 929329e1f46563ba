//! The install-state merge of contract §6 (`schema::merge`) on events built by `schema::validate`, with
//! fixed receptions: event `n` has the time-ordered id `Uuid::from_u128(n)` (a higher `n` is a later
//! event) and arrives `t` seconds after a fixed instant. Every scenario goes through `check`, which merges
//! the events in every order and with every event redelivered, asserts all of these give the same state,
//! and returns it for the scenario's own assertions: status never moves backwards, a real final beats
//! `unknown`, the earliest real final wins and brings the outcome fields, fields are filled by the first
//! event that has them and never blanked, known hardware beats `unknown`, first/last seen are min/max,
//! the install duration is the deciding final's (else the largest any event carried, else the time from
//! the first event to the final one), and the newer scripts' fields (`repo_slug`, `has_arm`, `arch`)
//! merge like the other descriptive fields.

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
    assert_eq!(outcome.install_duration, Some(412));
    assert_eq!(stamp(&s.longest_duration), Some((412, id(4), false)));
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
    assert_eq!(outcome.install_duration, Some(287));
    assert_eq!(stamp(&s.longest_duration), Some((287, id(5), false)));

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
    assert_eq!(outcome.install_duration, Some(63));
    assert_eq!(stamp(&s.longest_duration), Some((63, id(12), false)));
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

/// The id of the newer scripts' lxc install (v3_01–v3_03).
const IMMICH_ID: &str = "5b1f0c7e-3a2d-4f6b-9c1e-7d8a2b4c6e01";

/// A fixture with some top-level fields replaced (a retry the scripts send with a smaller body).
fn fixture_with(name: &str, changes: Value) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&fixture(name)).expect("fixture is JSON");
    for (k, v) in changes.as_object().expect("an object of changes") {
        if v.is_null() {
            value.as_object_mut().expect("object").remove(k);
        } else {
            value[k] = v.clone();
        }
    }
    serde_json::to_vec(&value).expect("json")
}

#[test]
fn the_newer_scripts_install_is_the_same_in_every_order_with_retries() {
    // 01 installing (and its retry after the duplicate window), 02 configuring, 03 the final, and the
    // third, minimal attempt of the final (short log, no duration) that arrived as its own event.
    let minimal_final = fixture_with(
        "v3_03_failed_apt.json",
        json!({"error": "APT: Package manager error", "install_duration": null, "cpu_model": null}),
    );
    let events = [
        event(1, 0, &fixture("v3_01_installing.json")),
        event(2, 1, &fixture("v3_01_installing.json")),
        event(3, 141, &fixture("v3_02_configuring.json")),
        event(4, 412, &fixture("v3_03_failed_apt.json")),
        event(5, 430, &minimal_final),
    ];
    let s = check(&events);
    assert_eq!(s.execution_id, IMMICH_ID);
    assert_eq!((s.status.value, s.status.from), (Status::Failed, id(4)));
    let outcome = s.outcome.as_ref().expect("final");
    assert_eq!(
        (
            outcome.exit_code,
            outcome.error_category,
            outcome.install_duration
        ),
        (Some(100), Some(Category::Dependency), Some(412))
    );
    assert_eq!(outcome.error, events[3].error);
    // Not the 0 of installing (the first value) nor anything else: the deciding final's 412.
    assert_eq!(s.reported_duration(), Some(412));
    assert_eq!(s.duration_secs(), Some(412));
    assert_eq!(stamp(&s.longest_duration), Some((412, id(4), false)));
    assert_eq!(
        stamp(&s.repo_slug),
        Some(("community-scripts/ProxmoxVE".into(), id(1), false))
    );
    assert_eq!(stamp(&s.has_arm), Some((false, id(1), false)));
    assert_eq!(stamp(&s.arch), Some(("amd64".into(), id(1), false)));
    assert_eq!(stamp(&s.disk_size), Some((20, id(1), false)));
    assert_eq!(stamp(&s.ram_size), Some((8192, id(1), false)));
    assert_eq!(stamp(&s.cpu_vendor), Some((CpuVendor::Amd, id(1), false)));
    assert_eq!(
        stamp(&s.cpu_model),
        Some((
            "AMD Ryzen 7 5825U with Radeon Graphics".into(),
            id(1),
            false
        ))
    );
    assert_eq!(stamp(&s.pve_version), Some(("9.1.1".into(), id(1), false)));
    assert_eq!(
        (s.kind.value, s.nsapp.value.as_str()),
        (Kind::Lxc, "immich")
    );

    // Any subset that holds the final gives the same outcome; without it the install is not final
    // and shows the largest running duration.
    let [e1, e2, e3, e4, e5] = events;
    let cases: Vec<(Vec<Event>, Status, Option<u32>)> = vec![
        (vec![e4.clone()], Status::Failed, Some(412)),
        (vec![e3.clone(), e4.clone()], Status::Failed, Some(412)),
        (vec![e1.clone(), e5.clone()], Status::Failed, Some(0)),
        (vec![e3.clone(), e5.clone()], Status::Failed, Some(141)),
        (vec![e1.clone(), e2.clone()], Status::Installing, Some(0)),
        (vec![e1.clone(), e3.clone()], Status::Configuring, Some(141)),
        (vec![e3, e1, e2], Status::Configuring, Some(141)),
    ];
    for (events, status, duration) in cases {
        let s = check(&events);
        assert_eq!(s.status.value, status, "{}", show(&events));
        assert_eq!(s.reported_duration(), duration, "{}", show(&events));
    }
}

#[test]
fn the_deciding_final_brings_the_duration_else_the_largest_any_event_carried() {
    let ev = |status: &str, duration: Option<u32>| {
        let mut fields = json!({"status": status});
        if status != "installing" && status != "configuring" {
            fields["exit_code"] = json!(if status == "success" { 0 } else { 1 });
        }
        if let Some(d) = duration {
            fields["install_duration"] = json!(d);
        }
        body(fields)
    };
    // (events as (status, duration, received at), reported duration, duration_secs)
    type Row = (
        Vec<(&'static str, Option<u32>, i64)>,
        Option<u32>,
        Option<u32>,
    );
    let cases: Vec<Row> = vec![
        // A final with a smaller figure than a ping still wins: it is the script's own total.
        (
            vec![
                ("installing", Some(0), 0),
                ("configuring", Some(141), 141),
                ("failed", Some(5), 412),
            ],
            Some(5),
            Some(5),
        ),
        // A final without one takes the largest any event carried.
        (
            vec![
                ("installing", Some(0), 0),
                ("configuring", Some(141), 141),
                ("failed", None, 412),
            ],
            Some(141),
            Some(141),
        ),
        (
            vec![
                ("configuring", Some(141), 141),
                ("installing", Some(300), 0),
                ("success", None, 412),
            ],
            Some(300),
            Some(300),
        ),
        // The losing final's figure is not the outcome's, but it counts as a carried value.
        (
            vec![("unknown", Some(300), 300), ("success", Some(90), 400)],
            Some(90),
            Some(90),
        ),
        (
            vec![("unknown", Some(300), 300), ("success", None, 400)],
            Some(300),
            Some(300),
        ),
        (
            vec![("success", Some(90), 90), ("unknown", Some(300), 300)],
            Some(90),
            Some(90),
        ),
        // A ping after the final changes nothing when the final had a figure.
        (
            vec![("success", Some(90), 90), ("configuring", Some(500), 500)],
            Some(90),
            Some(90),
        ),
        (
            vec![("success", None, 90), ("configuring", Some(500), 500)],
            Some(500),
            Some(500),
        ),
        // Nothing carried: the clock from the first event to the final.
        (
            vec![("installing", None, 0), ("failed", None, 250)],
            None,
            Some(250),
        ),
        // Not final: the largest so far, and no clock.
        (
            vec![("installing", Some(0), 0), ("configuring", Some(60), 60)],
            Some(60),
            Some(60),
        ),
        (
            vec![("installing", None, 0), ("configuring", None, 60)],
            None,
            None,
        ),
    ];
    for (spec, reported, secs) in cases {
        let events: Vec<Event> = spec
            .iter()
            .enumerate()
            .map(|(i, (status, d, t))| event(i as u128 + 1, *t, &ev(status, *d)))
            .collect();
        let s = check(&events);
        assert_eq!(s.reported_duration(), reported, "{}", show(&events));
        assert_eq!(s.duration_secs(), secs, "{}", show(&events));
    }
}

#[test]
fn the_turnkey_pair_and_the_final_only_arm_install() {
    let s = check(&[
        event(1, 0, &fixture("v3_04_turnkey_installing.json")),
        event(2, 388, &fixture("v3_05_turnkey_success.json")),
    ]);
    assert_eq!(
        (s.kind.value, s.status.value),
        (Kind::Turnkey, Status::Success)
    );
    assert_eq!(s.nsapp.value, "turnkey-nextcloud");
    assert_eq!(s.reported_duration(), Some(388));
    assert_eq!(s.outcome.as_ref().and_then(|o| o.exit_code), Some(0));

    let arm = event(1, 96, &fixture("v3_06_incus_arm_success.json"));
    let s = check(std::slice::from_ref(&arm));
    assert_eq!(s, merge(None, &arm));
    assert_eq!(
        (s.status.value, s.reported_duration()),
        (Status::Success, Some(96))
    );
    assert_eq!(s.repo_source.value, RepoSource::External);
    assert_eq!(
        stamp(&s.repo_slug),
        Some(("someuser/ProxmoxVE-fork".into(), id(1), false))
    );
    assert_eq!(stamp(&s.has_arm), Some((true, id(1), false)));
    assert_eq!(stamp(&s.arch), Some(("arm64".into(), id(1), false)));
    assert_eq!(
        stamp(&s.pve_version),
        Some(("incus-6.0.4".into(), id(1), false))
    );
    assert_eq!(stamp(&s.cpu_vendor), Some((CpuVendor::Arm, id(1), false)));
    assert_eq!(s.cpu_model, None);
}

#[test]
fn the_newer_fields_keep_the_first_non_empty_value() {
    let v = |fields: Value| {
        let mut f = fields;
        f["status"] = json!("installing");
        body(f)
    };
    let fork = v(json!({"repo_slug": "someuser/fork", "has_arm": true, "arch": "arm64"}));
    let main =
        v(json!({"repo_slug": "community-scripts/ProxmoxVE", "has_arm": false, "arch": "amd64"}));
    let empty = v(json!({"repo_slug": "", "has_arm": null, "arch": ""}));
    let bad = v(json!({"repo_slug": "not a slug", "has_arm": "maybe"}));
    // (events, expected (slug, has_arm, arch, from))
    type Row = (Vec<Event>, Option<(&'static str, bool, &'static str, u128)>);
    let cases: Vec<Row> = vec![
        (
            vec![event(1, 0, &main), event(2, 5, &fork)],
            Some(("community-scripts/ProxmoxVE", false, "amd64", 1)),
        ),
        (
            vec![event(1, 0, &fork), event(2, 5, &main)],
            Some(("someuser/fork", true, "arm64", 1)),
        ),
        // `false` is a value: a later `true` does not replace it.
        (
            vec![
                event(1, 0, &empty),
                event(2, 5, &bad),
                event(3, 9, &main),
                event(4, 12, &fork),
            ],
            Some(("community-scripts/ProxmoxVE", false, "amd64", 3)),
        ),
        (vec![event(1, 0, &empty), event(2, 5, &bad)], None),
    ];
    for (events, expected) in cases {
        let s = check(&events);
        let got = s.repo_slug.as_ref().map(|slug| {
            let has_arm = s.has_arm.as_ref().expect("has_arm with the slug");
            let arch = s.arch.as_ref().expect("arch with the slug");
            assert_eq!((has_arm.from, arch.from), (slug.from, slug.from));
            (
                slug.value.as_str(),
                has_arm.value,
                arch.value.as_str(),
                slug.from,
            )
        });
        assert_eq!(
            got,
            expected.map(|(a, b, c, n)| (a, b, c, id(n))),
            "{}",
            show(&events)
        );
    }
}

/// A state stored before the newer fields and the duration rule (PocketBase keeps it in `merge_state`):
/// the first duration under `install_duration`, no duration in the outcome, no slug, arch or has_arm.
#[test]
fn a_state_stored_before_the_duration_rule_still_reads_and_merges() {
    let [e1, e2, e3, e4] = jellyfin();
    let now = check(&[e1.clone(), e2.clone(), e3.clone(), e4.clone()]);
    let mut old = serde_json::to_value(&now).expect("state serializes");
    let map = old.as_object_mut().expect("object");
    let duration = map.remove("longest_duration").expect("a duration");
    map.insert("install_duration".into(), duration);
    for gone in ["repo_slug", "has_arm", "arch"] {
        map.remove(gone);
    }
    map["outcome"]
        .as_object_mut()
        .expect("outcome")
        .remove("install_duration");
    let read: InstallState = serde_json::from_value(old).expect("old state reads");
    assert_eq!(read.outcome.as_ref().and_then(|o| o.install_duration), None);
    assert_eq!(stamp(&read.longest_duration), Some((412, id(4), false)));
    // Its figure stays; a redelivered event changes nothing; a newer field still fills in.
    assert_eq!(read.reported_duration(), Some(412));
    assert_eq!(merge(Some(read.clone()), &e4), read);
    // An event of the same install (its random_id), so that it counts.
    let mut later: Value = serde_json::from_slice(&body(
        json!({"status": "configuring", "repo_slug": "a/b", "install_duration": 600}),
    ))
    .expect("json");
    later["random_id"] = json!(e1.random_id);
    let later = event(9, 500, &serde_json::to_vec(&later).expect("json"));
    let merged = merge(Some(read), &later);
    assert_eq!(stamp(&merged.repo_slug), Some(("a/b".into(), id(9), false)));
    assert_eq!(merged.reported_duration(), Some(600));
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

/// An install belongs to the `random_id` of its earliest event: a final posted with another `random_id`
/// (someone who learned the `execution_id`) changes nothing the install shows, in any order, also when
/// it arrives before the script's own events; an earlier event takes the install over.
#[test]
fn an_event_of_another_random_id_never_changes_the_install() {
    let with = |random_id: &str, fields: Value| {
        let mut value: Value = serde_json::from_slice(&body(fields)).expect("json");
        value["random_id"] = json!(random_id);
        serde_json::to_vec(&value).expect("json")
    };
    let installing = event(
        1,
        0,
        &with("r1", json!({"status": "installing", "disk_size": 8})),
    );
    let forged_failed = event(
        2,
        5,
        &with(
            "rf",
            json!({"status": "failed", "exit_code": 100, "error": "forged", "disk_size": 99}),
        ),
    );
    let forged_success = event(
        3,
        6,
        &with("rg", json!({"status": "success", "exit_code": 0})),
    );
    let own_failed = event(
        4,
        60,
        &with(
            "r1",
            json!({"status": "failed", "exit_code": 28, "error": "curl: (28)"}),
        ),
    );
    // (events, status, exit code, error, disk size, last seen)
    type Row = (
        Vec<Event>,
        Status,
        Option<u8>,
        Option<&'static str>,
        u32,
        i64,
    );
    let cases: Vec<Row> = vec![
        (
            vec![installing.clone(), forged_failed.clone()],
            Status::Installing,
            None,
            None,
            8,
            0,
        ),
        (
            vec![
                installing.clone(),
                forged_failed.clone(),
                forged_success.clone(),
                own_failed.clone(),
            ],
            Status::Failed,
            Some(28),
            Some("curl: (28)"),
            8,
            60,
        ),
    ];
    for (events, status, exit_code, error, disk, last) in cases {
        let state = check(&events);
        let outcome = state.outcome.as_ref();
        assert_eq!(state.random_id.value, "r1", "{}", show(&events));
        assert_eq!(state.status.value, status, "{}", show(&events));
        assert_eq!(outcome.and_then(|o| o.exit_code), exit_code);
        assert_eq!(outcome.and_then(|o| o.error.as_deref()), error);
        assert_eq!(state.disk_size.as_ref().map(|d| d.value), Some(disk));
        assert_eq!(state.last_seen, at(last));
        assert!(schema::merge::forged(&state, &forged_failed));
        assert!(!schema::merge::forged(&state, &own_failed));
    }
    // The earliest event decides whose install it is: here the other id's.
    let early = event(0, -1, &with("r0", json!({"status": "aborted"})));
    let state = check(&[early.clone(), installing.clone(), own_failed.clone()]);
    assert_eq!(state.random_id.value, "r0");
    assert_eq!(state.status.value, Status::Aborted);
    assert!(schema::merge::forged(&state, &own_failed));
    assert!(!schema::merge::forged(&state, &early));
}

/// Other `random_id`s are kept apart in bounded number: the earliest [`schema::merge::MAX_OTHERS`].
#[test]
fn other_random_ids_are_kept_in_bounded_number() {
    let mut state = merge(None, &event(1, 0, &body(json!({"status": "installing"}))));
    for n in 2..20u128 {
        let mut value: Value =
            serde_json::from_slice(&body(json!({"status": "failed", "exit_code": 1})))
                .expect("json");
        value["random_id"] = json!(format!("f{n}"));
        let forged = event(n, n as i64, &serde_json::to_vec(&value).expect("json"));
        assert!(schema::merge::forged(&state, &forged));
        state = merge(Some(state), &forged);
    }
    assert_eq!(state.others.len(), schema::merge::MAX_OTHERS);
    assert_eq!(state.others[0].random_id.value, "f2");
    assert_eq!(state.status.value, Status::Installing);
}
