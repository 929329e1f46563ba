//! The whole path from the stream to both stores: counts match the accepted events and installs, the
//! stores agree with `schema::merge`, `/readyz` and `/metrics` answer, and shutdown is prompt.

use std::time::Duration;

use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::{poll_until, sample, NatsServer};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_and_install_lands_once_in_both_stores() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let start = time::OffsetDateTime::now_utc() - time::Duration::minutes(20);
    let mut events = corpus(start);
    events.extend(simulated(300, 1, start));
    let events = publish(&js, &events).await;
    let expected = expected(&events);

    let mut config = config(&nats, Some(&ch), Some(&pb));
    let ops_port = testkit::free_port().expect("port");
    config.ops_addr = ([127, 0, 0, 1], ops_port).into();
    let writer = start_writer(config.clone()).await;
    let reader = pb_reader(&config);
    clickhouse_holds(
        "all events in clickhouse",
        Duration::from_secs(60),
        &ch,
        events.len(),
        expected.len(),
    )
    .await;
    poll_until(
        "all installs in pocketbase",
        Duration::from_secs(60),
        || async { pb_all_merged(&reader.records().await.unwrap_or_default(), &expected) },
    )
    .await;

    let rows = ch_rows(
        &ch,
        "SELECT * FROM telemetry.installs_final ORDER BY execution_id",
    );
    assert_eq!(rows.len(), expected.len());
    for row in &rows {
        check_ch_row(row, &expected[row["execution_id"].as_str().expect("id")]);
    }
    for record in reader.records().await.expect("records") {
        check_pb_record(
            &record,
            &expected[record["execution_id"].as_str().expect("id")],
        );
    }

    let ready = reqwest::get(format!("http://127.0.0.1:{ops_port}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = reqwest::get(format!("http://127.0.0.1:{ops_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let written = sample(
        &metrics,
        "telemetry_writer_events_written_total{sink=\"clickhouse\"}",
    );
    assert_eq!(written as usize, events.len(), "{metrics}");
    assert!(
        metrics.contains("telemetry_writer_batch_size_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("telemetry_writer_write_seconds_bucket"),
        "{metrics}"
    );

    let took = writer.shutdown().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
