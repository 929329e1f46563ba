//! A stuck install gets exactly one synthetic timeout, even with two aggregators deciding at once.

use std::time::Duration;

use schema::stats::GroupStats;
use schema::{Category, Event, Status};
use testkit::fixtures::body;
use testkit::{poll_until, NatsServer};

use crate::harness::*;

pub async fn events_of(js: &async_nats::jetstream::Context, exec: &str) -> Vec<Event> {
    let mut stream = js
        .get_stream(schema::names::EVENTS_STREAM)
        .await
        .expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            let event: Event = serde_json::from_slice(&msg.payload).expect("event");
            if event.execution_id == exec {
                out.push(event);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_stuck_install_times_out_once_with_two_aggregators() {
    let nats = NatsServer::start().expect("nats");
    let js = jetstream(&nats.url()).await;
    let tweak = |c: &mut aggregator::Config| c.stuck_after = "2s".parse().expect("span");
    let a = start_aggregator(&nats.url(), tweak).await;
    let b = start_aggregator(&nats.url(), tweak).await;
    publish_all(
        &js,
        &[
            accept(&body("stuck-1", "docker", "installing", "")),
            accept(&body("done-1", "docker", "installing", "")),
            accept(&body("done-1", "docker", "success", "")),
        ],
    )
    .await;

    let timeouts = poll_until("a synthetic timeout", Duration::from_secs(20), || async {
        let events = events_of(&js, "stuck-1").await;
        let synthetic: Vec<Event> = events.into_iter().filter(|e| e.synthetic).collect();
        (!synthetic.is_empty()).then_some(synthetic)
    })
    .await;
    let timeout = &timeouts[0];
    assert_eq!(timeout.status, Status::Unknown);
    assert_eq!(timeout.error_category, Some(Category::Timeout));

    // Both replicas fold it in; from then on neither has anything left to time out.
    let store = stats(&js).await;
    let global: GroupStats =
        poll_until("the timeout rolled up", Duration::from_secs(20), || async {
            get_json::<GroupStats>(&store, "24h.global")
                .await
                .filter(|g| g.unknown == 1 && g.in_progress == 0)
        })
        .await;
    assert_eq!(global.top_categories[0].category, Category::Timeout);
    // Several publish ticks of both replicas later, still one synthetic event and none for done-1.
    let meta_before = store
        .entry("meta")
        .await
        .expect("meta")
        .expect("meta")
        .revision;
    poll_until("six more heartbeats", Duration::from_secs(20), || async {
        let rev = store.entry("meta").await.ok()??.revision;
        (rev >= meta_before + 6).then_some(())
    })
    .await;
    let synthetic = events_of(&js, "stuck-1")
        .await
        .into_iter()
        .filter(|e| e.synthetic)
        .count();
    assert_eq!(synthetic, 1);
    assert!(events_of(&js, "done-1").await.iter().all(|e| !e.synthetic));
    a.stop().await;
    b.stop().await;
}
