//! Order independence: the corpus and simulated installs (finals before installing, pings after the
//! final, second finals, redelivered copies) written in several orders and batch sizes, each into its
//! own ClickHouse database and PocketBase collection, end as the same `installs_final` rows and the same
//! records, equal to `schema::merge` folded over the events.

use std::collections::BTreeMap;

use serde_json::Value;
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::NatsServer;
use writer::sink::{process, Outcome, Sink};

use crate::harness::*;

async fn write_in_batches<S: Sink>(sink: &S, events: &[schema::Event], batch: usize) {
    for chunk in events.chunks(batch) {
        let outcome = process(sink, chunk).await;
        assert_eq!(outcome.stored(), chunk.len(), "{outcome:?}");
        assert!(matches!(outcome, Outcome::Done(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_order_gives_the_same_install_in_both_stores() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let start = time::OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let mut events = corpus(start);
    assert!(events.len() >= 15, "corpus: {}", events.len());
    events.extend(simulated(40, 7, start));
    let expected = expected(&events);
    let plain: Vec<schema::Event> = events.iter().map(|p| p.event.clone()).collect();

    let mut reversed = plain.clone();
    reversed.reverse();
    let mut shuffled_with_copies = plain.clone();
    shuffled_with_copies.extend(plain.iter().step_by(3).cloned());
    fastrand::Rng::with_seed(11).shuffle(&mut shuffled_with_copies);
    let orders: [(&str, Vec<schema::Event>, usize); 3] = [
        ("forward", plain.clone(), 500),
        ("reversed", reversed, 7),
        ("shuffled", shuffled_with_copies, 1),
    ];

    let mut ch_views = Vec::new();
    let mut pb_views = Vec::new();
    for (name, order, batch) in &orders {
        let mut config = config(&nats, Some(&ch), Some(&pb));
        config.clickhouse_database = format!("order_{name}");
        config.pb_target_collection = format!("order_{name}");
        let ch_sink = writer::clickhouse_sink(&config);
        ch_sink.migrate().await.expect("migrate");
        let pb_sink = writer::pocketbase_sink(&config).expect("pb");
        pb_sink.prepare().await.expect("prepare");
        write_in_batches(&ch_sink, order, *batch).await;
        // PocketBase round trips are slower; the shuffled order still goes three events at a time.
        write_in_batches(
            &pb_sink,
            order,
            (*batch).max(if *name == "shuffled" { 3 } else { 50 }),
        )
        .await;

        let rows = ch_rows(
            &ch,
            &format!("SELECT * FROM order_{name}.installs_final ORDER BY execution_id"),
        );
        assert_eq!(rows.len(), expected.len(), "{name}: installs in ClickHouse");
        for row in &rows {
            let id = row["execution_id"].as_str().expect("id");
            check_ch_row(row, &expected[id]);
        }
        let counted = ch_count(
            &ch,
            &format!("SELECT count() FROM order_{name}.events_final"),
        );
        assert_eq!(counted as usize, plain.len(), "{name}: events_final");

        let records = pb_sink.records().await.expect("records");
        assert_eq!(records.len(), expected.len(), "{name}: PocketBase records");
        let mut by_id = BTreeMap::new();
        for record in &records {
            let id = record["execution_id"].as_str().expect("id").to_string();
            check_pb_record(record, &expected[&id]);
            by_id.insert(id, strip(record));
        }
        ch_views.push(rows);
        pb_views.push(by_id);
    }
    assert_eq!(ch_views[0], ch_views[1]);
    assert_eq!(ch_views[0], ch_views[2]);
    assert_eq!(pb_views[0], pb_views[1]);
    assert_eq!(pb_views[0], pb_views[2]);
}

/// A record without what PocketBase sets itself.
fn strip(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(map) = record.as_object_mut() {
        for key in ["id", "created", "updated", "collectionId", "collectionName"] {
            map.remove(key);
        }
    }
    record
}
