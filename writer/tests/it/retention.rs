//! Retention (contract §7) against real ClickHouse 18.16 and PocketBase: off by default it deletes
//! nothing; on, it deletes exactly the installs whose first event is older than the cutoff, whole (all
//! their events, whatever the day) and never a part of a younger one, at most the cap per run with the
//! next run going on; and a PocketBase collection the fleet did not create is left alone unless the
//! operator opts in.

use std::time::Duration;

use serde_json::json;
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::NatsServer;
use time::OffsetDateTime;
use writer::pocketbase::PbRetention;
use writer::retention::Policy;
use writer::sink::{process, Sink};

use crate::harness::*;

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn event(id: &str, status: &str, at: OffsetDateTime) -> schema::Event {
    let body = format!(r#"{{"random_id":"{id}","type":"lxc","nsapp":"app","status":"{status}"}}"#);
    accept(body.as_bytes(), at).event
}

/// The installs of `installs_final` with their number of events in `events_final`, by id.
fn ch_installs(ch: &ClickHouseServer) -> Vec<(String, u64)> {
    let text = ch
        .query(
            "SELECT i.execution_id, e.n FROM telemetry.installs_final AS i \
             ANY LEFT JOIN (SELECT execution_id, count() AS n FROM telemetry.events_final GROUP BY execution_id) AS e \
             USING execution_id ORDER BY execution_id",
        )
        .expect("installs");
    text.lines()
        .map(|line| {
            let (id, n) = line.split_once('\t').expect("two columns");
            (id.to_string(), n.parse().expect("count"))
        })
        .collect()
}

async fn until_mutations_done(sink: &writer::clickhouse::ClickHouseSink) {
    testkit::poll_until(
        "retention's mutations to finish",
        Duration::from_secs(60),
        || async { !sink.retention_pending().await.expect("system.mutations") },
    )
    .await;
}

fn policy(max_per_run: usize, foreign_collection: bool) -> Policy {
    Policy {
        days: 365,
        max_per_run,
        foreign_collection,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_off_by_default_and_deletes_nothing() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let config = config(&nats, Some(&ch), Some(&pb));
    assert_eq!(
        config.retention(),
        None,
        "off unless RETENTION_ENABLED=true"
    );

    let ch_sink = writer::clickhouse_sink(&config);
    ch_sink.migrate().await.expect("migrate");
    let pb_sink = writer::pocketbase_sink(&config).expect("pb");
    pb_sink.prepare().await.expect("prepare");
    let now = OffsetDateTime::now_utc();
    let old = [
        event("ancient-1", "installing", now - days(3000)),
        event("ancient-1", "success", now - days(3000)),
        event("ancient-2", "failed", now - days(800)),
    ];
    ch_sink.write(&old).await.expect("clickhouse");
    assert_eq!(process(&pb_sink, &old).await.stored(), old.len());

    // Years later, as far as either store can tell.
    let later = now + days(5000);
    for _ in 0..2 {
        assert_eq!(
            writer::retention::clickhouse_once(&config, &ch_sink, later)
                .await
                .expect("clickhouse pass"),
            None
        );
        assert_eq!(
            writer::retention::pocketbase_once(&config, &pb_sink, later)
                .await
                .expect("pocketbase pass"),
            None
        );
    }
    until_mutations_done(&ch_sink).await;
    assert_eq!(
        ch_installs(&ch),
        [("ancient-1".to_string(), 2), ("ancient-2".to_string(), 1)]
    );
    assert_eq!(pb_sink.records().await.expect("records").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_deletes_old_installs_whole_within_the_cap() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let mut config = config(&nats, Some(&ch), None);
    config.retention_enabled = true;
    config.retention_max_per_run = 3;
    let sink = writer::clickhouse_sink(&config);
    sink.migrate().await.expect("migrate");
    let now = OffsetDateTime::now_utc();
    let mut events = vec![
        // Started before the cutoff, finished after it: goes whole, its late final included.
        event("old-across", "installing", now - days(366)),
        event(
            "old-across",
            "configuring",
            now - days(365) + time::Duration::hours(1),
        ),
        event("old-across", "success", now - days(364)),
        // Started after the cutoff: stays whole, however close to it.
        event(
            "young",
            "installing",
            now - days(365) + time::Duration::minutes(10),
        ),
        event("young", "success", now - days(300)),
        event("today", "installing", now),
    ];
    for i in 1..=4 {
        let id = format!("old-{i}");
        events.push(event(&id, "installing", now - days(400 + i)));
        events.push(event(
            &id,
            "failed",
            now - days(400 + i) + time::Duration::minutes(5),
        ));
    }
    sink.write(&events).await.expect("write");
    // Settled (schema version 4): the installs are read from `installs_settled`.
    let inserted = ch_count(&ch, "SELECT toUInt64(now())");
    testkit::poll_until(
        "a settle past the insert",
        Duration::from_secs(30),
        || async {
            sink.settle(Duration::ZERO)
                .await
                .expect("settle")
                .is_some_and(|s| u64::from(s.watermark) > inserted)
        },
    )
    .await;
    assert_eq!(
        ch_count(&ch, "SELECT count() FROM telemetry.installs_settled"),
        7
    );
    let before = ch_installs(&ch);
    assert_eq!(before.len(), 7);

    // The change count of the oldest install's day (schema version 6): a deletion makes the rollups of
    // its days out of date.
    let changes = || {
        ch_count(
            &ch,
            &format!(
                "SELECT toUInt64(sum(blocks)) FROM telemetry.settled_blocks WHERE low <= {}",
                (now - days(401)).unix_timestamp() / 86_400
            ),
        )
    };
    let unchanged = changes();

    // Five old installs, three per run.
    let first = writer::retention::clickhouse_once(&config, &sink, now)
        .await
        .expect("first run");
    assert_eq!(first, Some(3));
    assert!(changes() > unchanged, "the deleted installs' day changed");
    until_mutations_done(&sink).await;
    assert_eq!(ch_installs(&ch).len(), 4);
    let second = sink.retention(now, &config.retention().expect("on")).await;
    assert_eq!(second.expect("second run"), 2);
    until_mutations_done(&sink).await;
    assert_eq!(
        sink.retention(now, &config.retention().expect("on"))
            .await
            .expect("third run"),
        0
    );
    assert_eq!(
        ch_installs(&ch),
        [("today".to_string(), 1), ("young".to_string(), 2)]
    );
    // Nothing of the old installs is left in any table, in any partition.
    assert_eq!(
        ch_count(
            &ch,
            "SELECT count() FROM telemetry.events WHERE execution_id LIKE 'old-%'"
        ),
        0
    );
    for table in ["installs", "installs_settled", "install_touches"] {
        assert_eq!(
            ch_count(
                &ch,
                &format!("SELECT count() FROM telemetry.{table} WHERE execution_id LIKE 'old-%'")
            ),
            0,
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_deletes_old_records_within_the_cap() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let mut config = config(&nats, None, Some(&pb));
    config.pb_batch_requests = 7;
    let sink = writer::pocketbase_sink(&config).expect("pb");
    sink.prepare().await.expect("prepare");
    assert!(
        sink.created_here().await.expect("bookkeeping"),
        "prepare created the collection and noted it"
    );
    let events: Vec<schema::Event> = simulated(30, 10, OffsetDateTime::now_utc())
        .into_iter()
        .map(|p| p.event)
        .collect();
    assert_eq!(process(&sink, &events).await.stored(), events.len());
    assert_eq!(sink.records().await.expect("records").len(), 30);

    let policy = policy(12, false);
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        sink.retention(now, &policy).await.expect("nothing old"),
        PbRetention::Deleted(0)
    );
    let later = now + days(366);
    for expected in [12, 12, 6, 0] {
        assert_eq!(
            sink.retention(later, &policy).await.expect("run"),
            PbRetention::Deleted(expected)
        );
    }
    assert!(sink.records().await.expect("records").is_empty());
}

/// Creates `name` the way the running service did (its own fields, no note of ours), with one record.
async fn foreign_collection(pb: &PocketBaseServer, name: &str) {
    let http = reqwest::Client::new();
    let token = superuser_token(pb).await;
    let definition = json!({
        "name": name,
        "type": "base",
        "fields": [
            {"name": "random_id", "type": "text"},
            {"name": "execution_id", "type": "text"},
            {"name": "nsapp", "type": "text"},
            {"name": "status", "type": "text"},
            {"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false},
            {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true},
        ],
    });
    let created = http
        .post(format!("{}/api/collections", pb.url()))
        .header("authorization", &token)
        .json(&definition)
        .send()
        .await
        .expect("create collection");
    assert!(created.status().is_success(), "{created:?}");
    let record = http
        .post(format!("{}/api/collections/{name}/records", pb.url()))
        .header("authorization", &token)
        .json(&json!({"random_id": "theirs", "execution_id": "theirs", "nsapp": "app", "status": "success"}))
        .send()
        .await
        .expect("record");
    assert!(record.status().is_success(), "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_collection_is_left_alone_unless_the_operator_opts_in() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let mut config = config(&nats, None, Some(&pb));
    foreign_collection(&pb, &config.pb_target_collection).await;
    let sink = writer::pocketbase_sink(&config).expect("pb");
    sink.prepare()
        .await
        .expect("prepare adds our fields to theirs");
    assert!(!sink.created_here().await.expect("bookkeeping"));
    let events: Vec<schema::Event> = simulated(5, 11, OffsetDateTime::now_utc())
        .into_iter()
        .map(|p| p.event)
        .collect();
    assert_eq!(process(&sink, &events).await.stored(), events.len());
    assert_eq!(sink.records().await.expect("records").len(), 6);

    let later = OffsetDateTime::now_utc() + days(4000);
    config.retention_enabled = true;
    assert_eq!(
        writer::retention::pocketbase_once(&config, &sink, later)
            .await
            .expect("pass"),
        Some(PbRetention::Foreign)
    );
    assert_eq!(
        sink.retention(later, &policy(10_000, false))
            .await
            .expect("run"),
        PbRetention::Foreign
    );
    assert_eq!(sink.records().await.expect("records").len(), 6);

    config.retention_foreign_collection = true;
    assert_eq!(
        writer::retention::pocketbase_once(&config, &sink, later)
            .await
            .expect("opted in"),
        Some(PbRetention::Deleted(6))
    );
    assert!(sink.records().await.expect("records").is_empty());
}
