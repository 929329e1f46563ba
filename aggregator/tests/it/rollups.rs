//! Rollups in the KV bucket, and a restart that must not change them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use schema::stats::{AppsIndex, GroupStats};
use testkit::fixtures::body;
use testkit::{poll_until, NatsServer};

use crate::harness::*;

fn half_failing(prefix: &str, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let mut events = Vec::new();
    for i in 0..n {
        let exec = format!("{prefix}-{i}");
        events.push(accept(&body(&exec, "docker", "installing", "")));
        let end = if i % 2 == 0 {
            body(
                &exec,
                "docker",
                "failed",
                r#","exit_code":100,"error":"x\nE: Unable to locate package foo""#,
            )
        } else {
            body(&exec, "docker", "success", r#","install_duration":120"#)
        };
        events.push(accept(&end));
    }
    events
}

#[tokio::test]
async fn rollups_of_a_half_failing_app_reach_the_bucket() {
    let nats = NatsServer::start().expect("nats");
    let js = jetstream(&nats.url()).await;
    let agg = start_aggregator(&nats.url(), |_| {}).await;
    publish_all(&js, &half_failing("a", 40)).await;
    let store = stats(&js).await;
    let app: GroupStats = poll_until(
        "app rollup with 40 installs",
        Duration::from_secs(20),
        || async {
            get_json::<GroupStats>(&store, "24h.app.docker")
                .await
                .filter(|s| s.success + s.failed == 40)
        },
    )
    .await;
    assert_eq!((app.started, app.success, app.failed), (40, 20, 20));
    assert_eq!(app.failure_rate, Some(0.5));
    // Failures report no duration: theirs is the time from first to final event, here about 0 s.
    assert_eq!(
        (app.duration_p50_secs, app.duration_p95_secs),
        (Some(0), Some(121))
    );
    assert_eq!(app.top_exit_codes[0].code, 100);
    assert_eq!(app.top_exit_codes[0].count, 20);
    assert_eq!(app.top_signatures[0].count, 20);
    let global: GroupStats = get_json(&store, "1h.global").await.expect("global");
    assert_eq!((global.started, global.failed), (40, 20));
    let index: AppsIndex = get_json(&store, "1h.apps").await.expect("apps index");
    assert_eq!(index.apps[0].app, "docker");
    assert!(get_json::<GroupStats>(&store, "1h.type.lxc")
        .await
        .is_some());
    assert!(get_json::<GroupStats>(&store, "1h.repo.ProxmoxVE")
        .await
        .is_some());
    agg.stop().await;
}

/// Every key but the heartbeat, with its JSON.
async fn contents(js: &async_nats::jetstream::Context) -> BTreeMap<String, serde_json::Value> {
    let store = stats(js).await;
    let keys: Vec<String> = store
        .keys()
        .await
        .expect("keys")
        .try_collect()
        .await
        .expect("keys");
    let mut out = BTreeMap::new();
    for key in keys.into_iter().filter(|k| k != "meta") {
        if let Some(value) = get_json::<serde_json::Value>(&store, &key).await {
            out.insert(key, value);
        }
    }
    out
}

#[tokio::test]
async fn an_aggregator_restarted_mid_stream_publishes_the_same_snapshot() {
    // The same events go to two servers: one aggregator runs throughout on the first, the other is
    // stopped and restarted in the middle of the stream on the second.
    let steady_nats = NatsServer::start().expect("nats");
    let restarted_nats = NatsServer::start().expect("nats");
    let steady_js = jetstream(&steady_nats.url()).await;
    let restarted_js = jetstream(&restarted_nats.url()).await;
    let batches = [
        half_failing("b", 20),
        half_failing("c", 20),
        half_failing("d", 20),
    ];

    let steady = start_aggregator(&steady_nats.url(), |_| {}).await;
    let first = start_aggregator(&restarted_nats.url(), |_| {}).await;
    for js in [&steady_js, &restarted_js] {
        publish_all(js, &batches[0]).await;
    }
    let restarted_store = stats(&restarted_js).await;
    poll_until("first batch rolled up", Duration::from_secs(20), || async {
        get_json::<GroupStats>(&restarted_store, "24h.global")
            .await
            .filter(|s| s.started == 20)
    })
    .await;
    first.stop().await;
    for js in [&steady_js, &restarted_js] {
        publish_all(js, &batches[1]).await;
    }
    let second = start_aggregator(&restarted_nats.url(), |_| {}).await;
    for js in [&steady_js, &restarted_js] {
        publish_all(js, &batches[2]).await;
    }

    // A snapshot is written key by key: both sides are read again on every check, until the steady
    // one has every install in each window and the restarted one equals it.
    let finals = |c: &BTreeMap<String, serde_json::Value>, key: &str| {
        c.get(key).map_or(0, |g| {
            g["success"].as_u64().unwrap_or(0) + g["failed"].as_u64().unwrap_or(0)
        })
    };
    let (expected, got) = poll_until(
        "restarted aggregator matches the steady one",
        Duration::from_secs(30),
        || async {
            let expected = contents(&steady_js).await;
            let seen = (
                finals(&expected, "1h.global"),
                finals(&expected, "24h.global"),
            );
            if seen != (60, 60) {
                return Err(format!(
                    "steady aggregator saw {seen:?} of 60 installs (1h, 24h)"
                ));
            }
            let got = contents(&restarted_js).await;
            if got == expected {
                return Ok((expected, got));
            }
            let differ: Vec<String> = expected
                .keys()
                .chain(got.keys())
                .filter(|k| expected.get(*k) != got.get(*k))
                .map(|k| {
                    format!(
                        "{k}: steady {:?}, restarted {:?}",
                        expected.get(k),
                        got.get(k)
                    )
                })
                .collect();
            Err(differ.join("; "))
        },
    )
    .await;
    assert_eq!(got.len(), expected.len());
    assert!(got.contains_key("24h.app.docker"));
    steady.stop().await;
    second.stop().await;
}
