//! The newer scripts at the edge: a TurnKey install is accepted (it was a 400), the new fields reach the
//! stream, and a `repo_slug` or `has_arm` that breaks its rule is dropped and counted, never a 400.

use crate::harness::start_edge;
use schema::Kind;
use testkit::fixtures::read as fixture;
use testkit::sample;
use testkit::NatsServer;

#[tokio::test]
async fn newer_script_fields_are_stored_and_bad_values_dropped_and_counted() {
    let nats = NatsServer::start().expect("nats");
    let edge = start_edge(&nats, |_| {}).await;
    for file in [
        "v3_04_turnkey_installing.json",
        "v3_05_turnkey_success.json",
    ] {
        let answer = edge.post(fixture(file)).await;
        assert_eq!(answer.status, 202, "{file}: {}", answer.json);
    }
    let answer = edge
        .post(testkit::fixtures::read_as(
            "v3_06_incus_arm_success.json",
            "v3-arm",
        ))
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json);
    let mut broken: serde_json::Value = serde_json::from_slice(&testkit::fixtures::read_as(
        "v3_01_installing.json",
        "v3-bad",
    ))
    .expect("json");
    broken["repo_slug"] = "https://github.com/community-scripts/ProxmoxVE".into();
    broken["has_arm"] = "perhaps".into();
    let answer = edge.post(broken.to_string()).await;
    assert_eq!(answer.status, 202, "{}", answer.json);

    let events = edge.stored_events().await;
    assert_eq!(events.len(), 4);
    let turnkey: Vec<_> = events.iter().filter(|e| e.kind == Kind::Turnkey).collect();
    assert_eq!(turnkey.len(), 2);
    assert_eq!(
        turnkey.iter().map(|e| e.subject()).collect::<Vec<_>>(),
        [
            format!(
                "{}.turnkey.installing",
                schema::names::EVENTS_SUBJECT_PREFIX
            ),
            format!("{}.turnkey.success", schema::names::EVENTS_SUBJECT_PREFIX)
        ]
    );
    let arm = events
        .iter()
        .find(|e| e.execution_id == "v3-arm")
        .expect("arm");
    assert_eq!(arm.repo_slug.as_deref(), Some("someuser/ProxmoxVE-fork"));
    assert_eq!(
        (arm.has_arm, arm.arch.as_deref()),
        (Some(true), Some("arm64"))
    );
    let bad = events
        .iter()
        .find(|e| e.execution_id == "v3-bad")
        .expect("bad");
    assert_eq!((bad.repo_slug.as_deref(), bad.has_arm), (None, None));
    assert_eq!(bad.arch.as_deref(), Some("amd64"));

    let m = edge.metrics().await;
    assert_eq!(sample(&m, "telemetry_ingest_accepted_total"), 4.0, "{m}");
    assert_eq!(
        sample(&m, "telemetry_ingest_dropped_total{field=\"repo_slug\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "telemetry_ingest_dropped_total{field=\"has_arm\"}"),
        1.0,
        "{m}"
    );
    edge.shutdown().await;
}
