//! The live strip and the alert history: values written in the contract's types that the aggregator and
//! the alerter write (`schema::stats::GroupStats`, `schema::alert::AlertEvent`) are read back by the web.

use std::time::Duration;

use async_nats::jetstream;
use schema::alert::{AlertEvent, Kind, Rule, Scope as AlertScope};
use schema::stats::{GroupStats, Scope};
use serde_json::Value;

use crate::harness::{Stack, HOSTILE};
use testkit::poll_until;

fn stats(started: u64, failed: u64) -> GroupStats {
    GroupStats {
        v: 1,
        window: "1h".into(),
        window_secs: 3600,
        scope: Scope::Global,
        subject: String::new(),
        started,
        in_progress: 1,
        success: started - failed - 1,
        failed,
        aborted: 0,
        unknown: 0,
        failure_rate: Some(failed as f64 / (started - 1) as f64),
        duration_p50_secs: Some(90),
        duration_p95_secs: Some(300),
        top_exit_codes: vec![],
        top_categories: vec![],
        top_signatures: vec![],
        clients: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_strip_and_alert_history_come_from_nats() {
    let stack = Stack::seeded().await;
    let web = stack.web(|_| {}).await;
    let live = web.json("/api/live").await;
    assert_eq!(live["available"], false, "nothing published yet");

    let client = fleet::nats::connect(&stack.nats.url(), "test-feeder")
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: schema::names::STATS_BUCKET.to_string(),
            ..Default::default()
        })
        .await
        .expect("bucket");
    kv.put(
        "1h.global",
        serde_json::to_vec(&stats(11, 2)).expect("json").into(),
    )
    .await
    .expect("put");
    poll_until("live figures", Duration::from_secs(20), async || {
        web.json("/api/live").await["started"] == 11
    })
    .await;
    let live = web.json("/api/live").await;
    assert_eq!(
        (live["available"].clone(), live["failed"].clone()),
        (Value::Bool(true), Value::from(2))
    );
    assert_eq!(live["failure_rate"], 20.0);
    let page = web.text("/dashboard").await;
    assert!(
        page.contains("data-live=\"started\">11<"),
        "server-rendered strip"
    );

    fleet::nats::ensure_stream(&js, &schema::names::alerts_stream(1))
        .await
        .expect("alerts stream");
    let event = AlertEvent {
        v: 1,
        alert_id: uuid::Uuid::now_v7(),
        kind: Kind::Alert,
        rule: Rule::FailureRate,
        scope: AlertScope::App,
        subject: HOSTILE.into(),
        at: time::OffsetDateTime::now_utc(),
        window: "24h".into(),
        threshold: Some(0.2),
        failure_rate: Some(0.5),
        started: 40,
        success: 20,
        failed: 20,
        aborted: 0,
        unknown: 0,
        apps: vec![],
        top_exit_codes: vec![],
        top_signatures: vec![],
        dashboard_url: "http://127.0.0.1:8081/dashboard".into(),
    };
    let payload = serde_json::to_vec(&event).expect("json");
    for _ in 0..2 {
        // The same alert twice (a takeover may record it again): shown once.
        js.publish(schema::alert::alert_subject(&event), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    // A web started now reads the history cold.
    let fresh = stack.web(|_| {}).await;
    let alerts = fresh.json("/api/alerts").await;
    let list = alerts.as_array().expect("alerts");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["subject"], HOSTILE);
    assert_eq!(list[0]["failed"], 20);
    let shown: AlertEvent = serde_json::from_value(list[0].clone()).expect("an alert event");
    assert_eq!(
        shown, event,
        "the API serves the alerter's record as written"
    );
    let html = fresh.text("/dashboard/alerts").await;
    assert!(crate::harness::shows_escaped(&html, HOSTILE) && !html.contains(HOSTILE));
    assert!(html.contains("50%"));
    let at = event
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc 3339");
    for needle in [
        "<tr class=\"kind-alert\">".to_string(),
        format!("<td>{at}</td>"),
        "<td>failure_rate</td>".to_string(),
    ] {
        assert!(html.contains(&needle), "{needle} not in the alerts page");
    }
    fresh.shutdown().await;
    web.shutdown().await;
}
