//! Forged outcomes: an install belongs to the `random_id` of its first event, so a final posted by
//! someone who learned the `execution_id` (another `random_id`) changes nothing ClickHouse's
//! `installs_final` or the PocketBase record shows, whether it arrives before the script's own final or
//! even before the script's first event. And a database of version 2 keeps its figures through version
//! 3, while the forged events already stored stop counting.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::NatsServer;
use time::OffsetDateTime;
use writer::sink::{process, Sink};

use crate::harness::*;

/// A body of install `exec` posted with `random_id`.
fn body(exec: &str, random_id: &str, fields: Value) -> Vec<u8> {
    let mut value =
        json!({"random_id": random_id, "execution_id": exec, "type": "lxc", "nsapp": "app"});
    for (k, v) in fields.as_object().expect("fields") {
        value[k] = v.clone();
    }
    serde_json::to_vec(&value).expect("json")
}

fn installs(ch: &ClickHouseServer, database: &str) -> BTreeMap<String, Value> {
    ch_rows(
        ch,
        &format!("SELECT * FROM {database}.installs_final ORDER BY execution_id"),
    )
    .into_iter()
    .map(|row| (row["execution_id"].as_str().expect("id").to_string(), row))
    .collect()
}

/// Writes each batch in turn, every event stored.
async fn write<S: Sink>(sink: &S, batches: &[Vec<&Published>]) {
    for batch in batches {
        let events: Vec<schema::Event> = batch.iter().map(|p| p.event.clone()).collect();
        assert_eq!(process(sink, &events).await.stored(), events.len());
    }
}

/// The script's events and a forged final (another random_id) of install `exec`, received in that order.
fn install(exec: &str, t0: OffsetDateTime) -> [Published; 4] {
    let at = |s: i64| t0 + time::Duration::seconds(s);
    [
        accept(
            &body(
                exec,
                "script",
                json!({"status": "installing", "disk_size": 8}),
            ),
            at(0),
        ),
        accept(
            &body(
                exec,
                "forger",
                json!({"status": "failed", "exit_code": 100, "error": "forged", "disk_size": 99}),
            ),
            at(5),
        ),
        accept(
            &body(
                exec,
                "forger2",
                json!({"status": "success", "exit_code": 0}),
            ),
            at(6),
        ),
        accept(
            &body(
                exec,
                "script",
                json!({"status": "failed", "exit_code": 28, "error": "curl: (28) timed out"}),
            ),
            at(60),
        ),
    ]
}

fn assert_scripts_outcome(what: &str, row: &Value) {
    assert_eq!(row["random_id"], "script", "{what}: {row}");
    assert_eq!(row["status"], "failed", "{what}: {row}");
    assert_eq!(row["exit_code"], 28, "{what}: {row}");
    assert_eq!(row["error"], "curl: (28) timed out", "{what}: {row}");
    assert_eq!(row["disk_size"], 8, "{what}: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_final_never_changes_the_stored_install() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let config = config(&nats, Some(&ch), Some(&pb));
    let ch_sink = writer::clickhouse_sink(&config);
    ch_sink.migrate().await.expect("migrate");
    let pb_sink = writer::pocketbase_sink(&config).expect("pb");
    pb_sink.prepare().await.expect("prepare");

    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    // A: in the order received, the forged finals before the script's own final, one batch each.
    let [a1, a2, a3, a4] = install("a", t0);
    // B: the forged finals delivered before the script's first event (a redelivery), then in one batch.
    let [b1, b2, b3, b4] = install("b", t0);
    let batches: Vec<Vec<&Published>> = vec![
        vec![&a1],
        vec![&a2],
        vec![&a3],
        vec![&b2, &b3],
        vec![&a4, &b1, &b4],
    ];
    write(&ch_sink, &batches).await;
    write(&pb_sink, &batches).await;

    let db = &config.clickhouse_database;
    let rows = installs(&ch, db);
    let all: Vec<Published> = [&a1, &a2, &a3, &a4, &b1, &b2, &b3, &b4]
        .into_iter()
        .cloned()
        .collect();
    let merged = expected(&all);
    for id in ["a", "b"] {
        assert_scripts_outcome(&format!("clickhouse {id}"), &rows[id]);
        assert_eq!(
            rows[id]["events"], "2",
            "{id}: only the script's events count"
        );
        check_ch_row(&rows[id], &merged[id]);
    }
    let records = pb_sink.records().await.expect("records");
    assert_eq!(records.len(), 2);
    for record in &records {
        let id = record["execution_id"].as_str().expect("id");
        assert_scripts_outcome(&format!("pocketbase {id}"), record);
        check_pb_record(record, &merged[id]);
    }
    // Every event is still in `events`, for whoever wants to look at forgeries.
    assert_eq!(
        ch_count(&ch, &format!("SELECT count() FROM {db}.events_final")),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_keeps_its_figures_and_its_forged_events_stop_counting() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let db = &config.clickhouse_database;
    // Versions 1 and 2 only, as the writer before version 3 left them.
    use writer::clickhouse::schema::{render, MIGRATIONS, MIGRATIONS_TABLE};
    ch.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .expect("database");
    ch.query(&render(MIGRATIONS_TABLE).replace('?', db))
        .expect("migrations table");
    for migration in &MIGRATIONS[..2] {
        for step in migration.steps {
            ch.query(&step.sql().replace('?', db)).expect("step");
        }
        ch.query(&format!(
            "INSERT INTO {db}.schema_migrations (version, name, applied_at) SELECT {}, 'old', now()",
            migration.version
        ))
        .expect("record version");
    }
    let sink = writer::clickhouse_sink(&config);
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let at = |s: i64| t0 + time::Duration::seconds(s);
    let [f1, f2, f3, f4] = install("forged", t0);
    let plain = [
        accept(
            &body(
                "plain",
                "p",
                json!({"status": "installing", "install_duration": 3}),
            ),
            at(1),
        ),
        accept(
            &body("plain", "p", json!({"status": "success", "exit_code": 0})),
            at(90),
        ),
        accept(
            &body(
                "pending",
                "q",
                json!({"status": "configuring", "ram_size": 2048}),
            ),
            at(2),
        ),
    ];
    let before_events: Vec<&Published> = plain.iter().chain([&f1, &f2, &f3]).collect();
    write(&sink, &[before_events]).await;
    let before = installs(&ch, db);
    assert_eq!(before.len(), 3);
    assert_eq!(
        before["forged"]["status"], "failed",
        "version 2 let the forgery win"
    );
    assert_eq!(before["forged"]["exit_code"], 100);

    assert_eq!(sink.migrate().await.expect("versions 3 to 8"), 6);
    assert_eq!(sink.migrate().await.expect("again"), 0);
    let after = installs(&ch, db);
    for id in ["plain", "pending"] {
        assert_eq!(after[id], before[id], "{id}: figures stay");
    }
    assert_eq!(
        after["forged"]["status"], "installing",
        "{}",
        after["forged"]
    );
    assert_eq!(after["forged"]["disk_size"], 8);
    assert_eq!(after["forged"]["events"], "1");

    // After the upgrade: the script's final decides; a forged final for an old install changes nothing.
    let late_forgery = accept(
        &body(
            "plain",
            "forger",
            json!({"status": "failed", "exit_code": 1}),
        ),
        at(100),
    );
    write(&sink, &[vec![&f4, &late_forgery]]).await;
    let rows = installs(&ch, db);
    assert_scripts_outcome("forged after the upgrade", &rows["forged"]);
    assert_eq!(rows["plain"], before["plain"]);
}
