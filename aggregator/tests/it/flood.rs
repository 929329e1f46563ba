//! A flood of made-up app names: the tracked set, the KV keys and the index stay within the caps, a
//! real app's figures stay exact, and an aggregator restarted on the same stream (replaying the flood)
//! publishes the same bounded snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::TryStreamExt;
use schema::stats::{AppsIndex, GroupStats};
use testkit::fixtures::body;
use testkit::{poll_until, NatsServer};

use crate::harness::*;

const FAKE: usize = 400;
const REAL: usize = 20;
const MAX_APPS: usize = 10;

fn tweak(c: &mut aggregator::Config) {
    c.max_tracked_apps = MAX_APPS;
    c.max_tracked_signatures = 10;
    c.min_distinct_installs = 3;
}

/// Every key of the bucket.
async fn keys(js: &async_nats::jetstream::Context) -> BTreeSet<String> {
    stats(js)
        .await
        .keys()
        .await
        .expect("keys")
        .try_collect()
        .await
        .expect("keys")
}

/// Waits until the 24 h global group holds every install, then checks the bounds; returns the keys.
async fn check_bounded(js: &async_nats::jetstream::Context) -> BTreeSet<String> {
    let store = stats(js).await;
    poll_until(
        "every install rolled up",
        Duration::from_secs(30),
        || async {
            get_json::<GroupStats>(&store, "24h.global")
                .await
                .filter(|g| g.started == (REAL + FAKE) as u64 && g.in_progress == 0)
        },
    )
    .await;
    let docker: GroupStats = poll_until("docker exact", Duration::from_secs(30), || async {
        get_json::<GroupStats>(&store, "24h.app.docker")
            .await
            .filter(|d| d.started == REAL as u64)
    })
    .await;
    assert_eq!(
        (docker.success, docker.failed),
        (REAL as u64 / 2, REAL as u64 / 2)
    );
    let index: AppsIndex = get_json(&store, "24h.apps").await.expect("index");
    assert_eq!(index.apps.len(), 1, "{:?}", index.apps);
    let other = index.other.expect("other");
    assert_eq!(
        (other.names, other.started, other.failed),
        (FAKE as u64, FAKE as u64, FAKE as u64)
    );
    let keys = keys(js).await;
    assert!(
        !keys.iter().any(|k| k.contains("fake")),
        "a made-up name got a key: {keys:?}"
    );
    // 2 windows x (global, repo, type, docker, index) + signatures.new + meta.
    assert_eq!(keys.len(), 12, "{keys:?}");
    keys
}

#[tokio::test]
async fn a_flood_of_made_up_names_stays_within_the_caps_live_and_after_a_restart() {
    let nats = NatsServer::start().expect("nats");
    let js = jetstream(&nats.url()).await;
    let first = start_aggregator(&nats.url(), tweak).await;
    let mut events = Vec::new();
    for i in 0..REAL {
        let exec = format!("real-{i}");
        let end = if i % 2 == 0 {
            body(&exec, "docker", "failed", r#","exit_code":100"#)
        } else {
            body(&exec, "docker", "success", "")
        };
        events.push(accept(&end));
    }
    for i in 0..FAKE {
        // One client makes up a name per install.
        let b = format!(
            r#"{{"random_id":"attacker","execution_id":"fake-{i}","type":"lxc","nsapp":"fake-{i}","status":"failed","exit_code":1,"error":"x\nE: broke {i}"}}"#
        );
        events.push(accept(&b));
    }
    publish_all(&js, &events).await;
    let live = check_bounded(&js).await;
    first.stop().await;
    // Empty the bucket, so what follows is the restarted aggregator's own snapshot.
    let store = stats(&js).await;
    for key in &live {
        store.purge(key).await.expect("purge");
    }
    assert!(keys(&js).await.is_empty());

    // A restart replays the flood from the stream within the same bounds.
    let second = start_aggregator(&nats.url(), tweak).await;
    let replayed = check_bounded(&js).await;
    assert_eq!(live, replayed);
    second.stop().await;
}
