//! Poison events: a payload that is not an event, an unknown schema version, an id that breaks the
//! contract's rule (it would have reached a PocketBase filter), and an event PocketBase itself refuses
//! (the batch is split to isolate it). Each lands in `TELEMETRY_DLQ` with its reason, once per sink that
//! refused it, and every event around it is stored.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::{poll_until, NatsServer};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_with_its_reason_and_the_rest_is_stored() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let good = simulated(40, 8, time::OffsetDateTime::now_utc());
    let expected = expected(&good);
    let (before, after) = good.split_at(good.len() / 2);
    publish(&js, before).await;

    let installing = schema::names::event_subject(schema::Kind::Lxc, schema::Status::Installing);
    let raw = |subject: String, id: &'static str, payload: Vec<u8>| {
        let js = js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(schema::names::MSG_ID_HEADER, id);
            js.publish_with_headers(subject, headers, payload.into())
                .await
                .expect("publish")
                .await
                .expect("puback");
        }
    };
    raw(installing.clone(), "poison-1", b"{not json".to_vec()).await;
    let mut v2 = accept(
        br#"{"random_id":"v2-1","type":"lxc","nsapp":"x","status":"installing"}"#,
        time::OffsetDateTime::now_utc(),
    )
    .event;
    v2.v = 2;
    raw(installing.clone(), "poison-2", v2.to_json()).await;
    let mut crafted = accept(
        br#"{"random_id":"c-1","type":"lxc","nsapp":"x","status":"installing"}"#,
        time::OffsetDateTime::now_utc(),
    )
    .event;
    crafted.execution_id = "c-1' || execution_id != '".into();
    raw(installing.clone(), "poison-3", crafted.to_json()).await;
    let mut long = accept(
        br#"{"random_id":"long-1","type":"lxc","nsapp":"x","status":"installing"}"#,
        time::OffsetDateTime::now_utc(),
    )
    .event;
    long.nsapp = "n".repeat(100);
    raw(installing.clone(), "poison-4", long.to_json()).await;
    publish(&js, after).await;

    let config = config(&nats, Some(&ch), Some(&pb));
    let writer = start_writer(config.clone()).await;
    let reader = pb_reader(&config);
    poll_until(
        "the good events in clickhouse",
        Duration::from_secs(60),
        || async {
            ch_count(
                &ch,
                "SELECT count() FROM telemetry.events_final WHERE execution_id LIKE 'sim-%'",
            ) == good.len() as u64
        },
    )
    .await;
    poll_until(
        "the good installs in pocketbase",
        Duration::from_secs(60),
        || async { pb_all_merged(&reader.records().await.unwrap_or_default(), &expected) },
    )
    .await;
    // ClickHouse has no length limit on nsapp: that one event is stored there, refused by PocketBase.
    poll_until(
        "the long-nsapp event in clickhouse",
        Duration::from_secs(30),
        || async {
            ch_count(
                &ch,
                "SELECT count() FROM telemetry.events_final WHERE execution_id = 'long-1'",
            ) == 1
        },
    )
    .await;

    let stream = js
        .get_stream(schema::names::DLQ_STREAM)
        .await
        .expect("dlq stream");
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut letters: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut messages = consumer.messages().await.expect("messages");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while letters.len() < 7 {
        let msg = tokio::time::timeout_at(deadline, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letters: {letters:?}", letters.len()))
            .expect("stream")
            .expect("message");
        let headers = msg.headers.clone().expect("headers");
        let get = |name: &str| headers.get(name).map(|v| v.to_string()).unwrap_or_default();
        let payload = String::from_utf8_lossy(&msg.payload).to_string();
        let which = if payload.contains("long-1") {
            "long"
        } else if payload.contains("c-1'") {
            "crafted"
        } else if payload.contains("v2-1") {
            "v2"
        } else {
            "garbage"
        };
        letters.insert(
            (get(writer::dlq::SINK_HEADER), which.to_string()),
            get(writer::dlq::REASON_HEADER),
        );
    }
    let reason = |sink: &str, which: &str| letters[&(sink.to_string(), which.to_string())].clone();
    for sink in ["clickhouse", "pocketbase"] {
        assert!(
            reason(sink, "garbage").contains("not a v1 event"),
            "{letters:?}"
        );
        assert!(
            reason(sink, "v2").contains("unsupported schema version 2"),
            "{letters:?}"
        );
        assert!(reason(sink, "crafted").contains("id rule"), "{letters:?}");
    }
    assert!(
        reason("pocketbase", "long").contains("nsapp"),
        "{letters:?}"
    );
    assert!(!letters.contains_key(&("clickhouse".to_string(), "long".to_string())));
    assert_eq!(
        writer
            .statuses
            .pocketbase
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(
        writer
            .statuses
            .clickhouse
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    writer.shutdown().await;
}
