//! Lease fencing: a PocketBase writer that is frozen past its lease while it retries a batch (PocketBase
//! down) finds on waking that the standby took over and wrote the events; it hands its batch back
//! without writing or acking any of it, so two writers never interleave their writes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use testkit::pocketbase::PocketBaseServer;
use testkit::{poll_until, sample, NatsServer};

use crate::harness::*;

const LEADER: &str = "telemetry_writer_leader{sink=\"pocketbase\"}";
const RETRIES: &str = "telemetry_writer_retries_total{sink=\"pocketbase\"}";
const WRITTEN: &str = "telemetry_writer_events_written_total{sink=\"pocketbase\"}";
const LEASE_LOST: &str = "telemetry_writer_lease_lost_total{sink=\"pocketbase\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_hands_its_batch_back_unwritten() {
    let nats = NatsServer::start().expect("nats");
    let mut pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let config = config(&nats, None, Some(&pb));
    let reader = pb_reader(&config);

    let first = WriterProcess::start(&config, &[]);
    poll_until(
        "the first writer holds the lease",
        Duration::from_secs(30),
        async || sample(&first.metrics().await, LEADER) == 1.0,
    )
    .await;
    let second = start_writer(config.clone()).await;
    let status = second.statuses.pocketbase.clone();
    poll_until(
        "the standby is ready",
        Duration::from_secs(30),
        async || status.up.load(Ordering::Relaxed) && status.consuming.load(Ordering::Relaxed),
    )
    .await;

    pb.stop();
    let events = simulated(20, 9, time::OffsetDateTime::now_utc());
    publish(&js, &events).await;
    poll_until(
        "the holder retries its batch",
        Duration::from_secs(30),
        async || sample(&first.metrics().await, RETRIES) > 0.0,
    )
    .await;
    first.freeze(true);
    poll_until(
        "the standby took the lease",
        Duration::from_secs(30),
        async || status.active.load(Ordering::Relaxed),
    )
    .await;
    pb.start_again().expect("pocketbase again");
    let all = expected(&events);
    poll_until(
        "the new holder wrote every event",
        Duration::from_secs(60),
        async || pb_all_merged(&reader.records().await.unwrap_or_default(), &all),
    )
    .await;

    first.freeze(false);
    poll_until(
        "the old holder handed its batch back",
        Duration::from_secs(30),
        async || sample(&first.metrics().await, LEASE_LOST) >= 1.0,
    )
    .await;
    let metrics = first.metrics().await;
    assert_eq!(sample(&metrics, WRITTEN), 0.0, "the old holder wrote");
    let records = reader.records().await.expect("records");
    assert_eq!(records.len(), all.len());
    for record in &records {
        check_pb_record(record, &all[record["execution_id"].as_str().expect("id")]);
    }
    assert!(status.written.load(Ordering::Relaxed) as usize >= events.len());
    second.shutdown().await;
}
