//! The stores on their own: ClickHouse migrations are versioned and idempotent, every example query of
//! the README runs, and a crafted id never reaches a PocketBase filter. Retention has its own file.

use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::NatsServer;
use writer::sink::{process, Sink, SinkError, Verdict};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_second_start_changes_nothing() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let sink = writer::clickhouse_sink(&config);
    let applied = sink.migrate().await.expect("first");
    assert_eq!(applied, writer::clickhouse::schema::MIGRATIONS.len());
    let tables = ch
        .query("SELECT name FROM system.tables WHERE database = 'telemetry' ORDER BY name")
        .expect("tables");
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        [
            "day_rollup_index",
            "day_rollups",
            "events",
            "events_final",
            "install_first",
            "install_first_mv",
            "install_touches",
            "install_touches_mv",
            "installs",
            "installs_by_random_id",
            "installs_final",
            "installs_moved",
            "installs_resettled",
            "installs_settled",
            "schema_migrations",
            "settle_watermark",
            "settled_blocks"
        ]
    );
    let before = ch_count(&ch, "SELECT count() FROM telemetry.schema_migrations");
    assert_eq!(sink.migrate().await.expect("second"), 0);
    assert_eq!(
        ch_count(&ch, "SELECT count() FROM telemetry.schema_migrations"),
        before
    );
    // A second process starting at the same time is harmless too.
    let other = writer::clickhouse_sink(&config);
    let (a, b) = tokio::join!(sink.migrate(), other.migrate());
    assert_eq!((a.expect("a"), b.expect("b")), (0, 0));
}

/// The ```sql blocks of writer/README.md: the documented queries are the tested ones.
fn readme_queries() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(q), "```") => {
                out.push(q.trim().to_string());
                current = None;
            }
            (Some(q), _) => {
                q.push_str(line);
                q.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_query_runs_and_answers() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let sink = writer::clickhouse_sink(&config);
    sink.migrate().await.expect("migrate");
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let mut events = corpus(start);
    events.extend(simulated(100, 9, start));
    let plain: Vec<schema::Event> = events.iter().map(|p| p.event.clone()).collect();
    assert_eq!(process(&sink, &plain).await.stored(), plain.len());

    let queries = readme_queries();
    assert!((3..=6).contains(&queries.len()), "{queries:?}");
    for sql in &queries {
        let rows = ch_rows(&ch, sql);
        assert!(!rows.is_empty(), "no rows from:\n{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_id_is_refused_and_touches_no_other_record() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let config = config(&nats, None, Some(&pb));
    let sink = writer::pocketbase_sink(&config).expect("pb");
    sink.prepare().await.expect("prepare");
    let now = time::OffsetDateTime::now_utc();
    let victim = accept(
        br#"{"random_id":"victim","type":"lxc","nsapp":"a","status":"installing","disk_size":8}"#,
        now,
    );
    sink.write(std::slice::from_ref(&victim.event))
        .await
        .expect("victim");
    let mut attack = accept(
        br#"{"random_id":"x","type":"lxc","nsapp":"evil","status":"failed","exit_code":1}"#,
        now,
    )
    .event;
    attack.execution_id = "x' || execution_id != '".into();
    let outcome = process(&sink, &[attack.clone()]).await;
    assert!(
        matches!(&outcome, writer::sink::Outcome::Done(v) if matches!(v[0], Verdict::Poison(_))),
        "{outcome:?}"
    );
    assert!(matches!(
        sink.write(&[attack]).await,
        Err(SinkError::Rejected(_))
    ));
    let records = sink.records().await.expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["nsapp"], "a");
    assert_eq!(records[0]["status"], "installing");
}
