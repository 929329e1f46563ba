//! The whole payload corpus through HTTP: each file gets the answer the corpus README names, accepted
//! events land on the stream normalized, and rejected ones leave nothing behind.

use crate::harness::start_edge;
use schema::names::event_subject;
use schema::{Category, Kind, Status};
use testkit::{fixtures, NatsServer};

#[derive(Debug)]
enum Expect {
    /// 202, stored with this status and category.
    Stored(Status, Option<Category>),
    /// 4xx with this error code and field.
    Rejected(u16, &'static str, Option<&'static str>),
}

const CORPUS: &[(&str, Expect)] = &[
    (
        "01_lxc_installing.json",
        Expect::Stored(Status::Installing, None),
    ),
    (
        "02_lxc_progress_validation_host.json",
        Expect::Stored(Status::Validation, None),
    ),
    (
        "03_lxc_progress_configuring_container.json",
        Expect::Stored(Status::Configuring, None),
    ),
    ("04_lxc_success.json", Expect::Stored(Status::Success, None)),
    (
        "05_lxc_failed_large_log.json",
        Expect::Stored(Status::Failed, Some(Category::Dependency)),
    ),
    (
        "06_lxc_failed_retry_medium.json",
        Expect::Stored(Status::Failed, Some(Category::Dependency)),
    ),
    (
        "08_vm_installing.json",
        Expect::Stored(Status::Installing, None),
    ),
    ("09_vm_success.json", Expect::Stored(Status::Success, None)),
    (
        "10_pve_tool_success.json",
        Expect::Stored(Status::Success, None),
    ),
    (
        "11_addon_failed.json",
        Expect::Stored(Status::Failed, Some(Category::Network)),
    ),
    (
        "12_lxc_failed_sigint_host.json",
        Expect::Stored(Status::Aborted, Some(Category::UserAborted)),
    ),
    (
        "bad_01_empty_numeric.json",
        Expect::Stored(Status::Installing, None),
    ),
    (
        "bad_02_numeric_unit_suffix.json",
        Expect::Stored(Status::Success, None),
    ),
    (
        "bad_03_unescaped_quotes.json",
        Expect::Stored(Status::Failed, Some(Category::Shell)),
    ),
    (
        "bad_04_raw_control_chars.json",
        Expect::Stored(Status::Failed, Some(Category::Resource)),
    ),
    (
        "bad_06_non_utf8.json",
        Expect::Stored(Status::Failed, Some(Category::Shell)),
    ),
    (
        "bad_07_huge_body.json",
        Expect::Rejected(413, "too_large", None),
    ),
    (
        "bad_08_unknown_field_duration.json",
        Expect::Stored(Status::Aborted, Some(Category::UserAborted)),
    ),
    (
        "bad_09_wrong_types.json",
        Expect::Rejected(400, "invalid_field", Some("disk_size")),
    ),
    (
        "bad_10_out_of_range_and_enums.json",
        Expect::Rejected(400, "invalid_field", Some("type")),
    ),
    (
        "bad_11_truncated.json",
        Expect::Rejected(400, "invalid_json", None),
    ),
    (
        "bad_14_vm_os_type_not_allowed.json",
        Expect::Stored(Status::Installing, None),
    ),
    (
        "v3_01_installing.json",
        Expect::Stored(Status::Installing, None),
    ),
    (
        "v3_02_configuring.json",
        Expect::Stored(Status::Configuring, None),
    ),
    (
        "v3_03_failed_apt.json",
        Expect::Stored(Status::Failed, Some(Category::Dependency)),
    ),
    (
        "v3_04_turnkey_installing.json",
        Expect::Stored(Status::Installing, None),
    ),
    (
        "v3_05_turnkey_success.json",
        Expect::Stored(Status::Success, None),
    ),
    (
        "v3_06_incus_arm_success.json",
        Expect::Stored(Status::Success, None),
    ),
];

#[tokio::test]
async fn every_corpus_file_gets_its_answer_and_only_accepted_ones_are_stored() {
    let files = fixtures::names().len();
    assert_eq!(files, CORPUS.len(), "every fixture has a row");

    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    let mut stored_ids = Vec::new();
    for (i, (file, expect)) in CORPUS.iter().enumerate() {
        let id = format!("corpus-{i:02}");
        let answer = edge.post(fixtures::read_as(file, &id)).await;
        match expect {
            Expect::Stored(..) => {
                assert_eq!(answer.status, 202, "{file}: {}", answer.json);
                assert_eq!(answer.json["status"], "accepted", "{file}");
                stored_ids.push((id, *file, expect));
            }
            Expect::Rejected(status, code, field) => {
                assert_eq!(answer.status, *status, "{file}: {}", answer.json);
                assert_eq!(answer.json["error"], *code, "{file}");
                assert_eq!(answer.json["field"].as_str(), *field, "{file}");
                assert!(answer.json["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()));
            }
        }
    }

    let events = edge.stored_events().await;
    assert_eq!(
        events.len(),
        stored_ids.len(),
        "one stored event per accepted file"
    );
    for (id, file, expect) in stored_ids {
        let event = events
            .iter()
            .find(|e| e.execution_id == id)
            .unwrap_or_else(|| panic!("{file} not stored"));
        let Expect::Stored(status, category) = expect else {
            unreachable!()
        };
        assert_eq!(event.status, *status, "{file}");
        assert_eq!(event.error_category, *category, "{file}");
        assert_eq!(event.v, 1);
    }
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e.execution_id == id)
            .expect("stored")
    };
    // bad_01: the empty disk_size is absent; bad_02: 32G is 32; bad_08: duration is install_duration.
    assert_eq!(by_id("corpus-11").disk_size, None);
    assert_eq!(by_id("corpus-12").disk_size, Some(32));
    assert_eq!(by_id("corpus-12").os_type.as_deref(), Some("homeassistant"));
    assert_eq!(by_id("corpus-17").install_duration, Some(94));
    assert_eq!(by_id("corpus-21").os_type.as_deref(), Some("opnsense"));
    // The large log is kept cut: its first line and its end.
    let big = by_id("corpus-04").error.clone().expect("error kept");
    assert!(big.len() <= schema::privacy::MAX_ERROR_BYTES);
    assert!(big.starts_with("exit_code=100 | APT"), "{}", &big[..80]);
    assert!(by_id("corpus-15")
        .error
        .as_deref()
        .is_some_and(|e| e.contains('\u{FFFD}')));
    assert!(!by_id("corpus-15").rescued.is_empty());
}

#[tokio::test]
async fn script_retries_are_stored_once() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    // post_to_api retries the same installing event up to three times.
    let installing = fixtures::read("01_lxc_installing.json");
    let answers = [
        edge.post(installing.clone()).await,
        edge.post(installing.clone()).await,
        edge.post(installing).await,
    ];
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [202, 202, 202]
    );
    assert_eq!(answers[0].json["status"], "accepted");
    assert_eq!(answers[1].json["status"], "duplicate");
    assert_eq!(answers[2].json["status"], "duplicate");
    // post_update_to_api retries a final with a shrinking log: the 16 KB retry is a duplicate.
    assert_eq!(
        edge.post(fixtures::read("05_lxc_failed_large_log.json"))
            .await
            .json["status"],
        "accepted"
    );
    assert_eq!(
        edge.post(fixtures::read("06_lxc_failed_retry_medium.json"))
            .await
            .json["status"],
        "duplicate"
    );

    let stored = edge.stored().await;
    assert_eq!(stored.len(), 2);
    let id = "3f2b8c1e-9d4a-4b7e-8c21-6a5f0e9d7b12";
    assert_eq!(
        stored[0].subject.as_str(),
        event_subject(Kind::Lxc, Status::Installing)
    );
    assert_eq!(
        stored[0]
            .headers
            .iter()
            .find(|(k, _)| k
                .to_string()
                .eq_ignore_ascii_case(schema::names::MSG_ID_HEADER))
            .and_then(|(_, v)| v.first())
            .map(|v| v.as_str()),
        Some(format!("{id}:installing").as_str())
    );
    assert_eq!(
        stored[1].subject.as_str(),
        event_subject(Kind::Lxc, Status::Failed)
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        testkit::sample(&metrics, "telemetry_ingest_duplicates_total"),
        3.0
    );
    assert_eq!(
        testkit::sample(&metrics, "telemetry_ingest_accepted_total"),
        2.0
    );
}
