//! Schema version 4 against real ClickHouse 18.16: `installs_final` (settled rows up to the watermark,
//! plus the installs touched since merged from `events`) equals a direct merge of every event, and the
//! `schema::merge` of the same events, at every step: before and after settles, with late and
//! out-of-order events, a forged `random_id`, a replay, an event for an install already settled, and two
//! settles racing. And a database of version 3 upgraded to version 4 shows every install with every
//! column as before, once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::clickhouse::ClickHouseServer;
use testkit::NatsServer;
use time::OffsetDateTime;
use writer::clickhouse::ClickHouseSink;
use writer::sink::process;

use crate::harness::*;

/// Every row of `sql`, by execution id.
fn by_id(ch: &ClickHouseServer, sql: &str) -> BTreeMap<String, Value> {
    let rows = ch_rows(ch, sql);
    let n = rows.len();
    let map: BTreeMap<String, Value> = rows
        .into_iter()
        .map(|row| (row["execution_id"].as_str().expect("id").to_string(), row))
        .collect();
    assert_eq!(map.len(), n, "an install shows twice:\n{sql}");
    map
}

fn installs_final(ch: &ClickHouseServer, db: &str) -> BTreeMap<String, Value> {
    by_id(ch, &format!("SELECT * FROM {db}.installs_final"))
}

/// The merge of every event of `events`, straight from the table (no settled row involved).
fn direct_merge(ch: &ClickHouseServer, db: &str) -> BTreeMap<String, Value> {
    let sql =
        writer::clickhouse::schema::render(&writer::clickhouse::schema::installs_of_events("1"))
            .replace('?', db);
    by_id(ch, &sql)
}

/// `installs_final` equals the direct merge and `schema::merge` of `events`; returns how many installs
/// came from settled rows.
fn check_exact(ch: &ClickHouseServer, db: &str, events: &[Published], step: &str) -> u64 {
    let shown = installs_final(ch, db);
    let direct = direct_merge(ch, db);
    assert_eq!(shown.len(), direct.len(), "{step}: installs");
    for (id, row) in &direct {
        assert_eq!(shown.get(id), Some(row), "{step}: {id}");
    }
    let merged = expected(events);
    assert_eq!(
        shown.len(),
        merged.len(),
        "{step}: installs by schema::merge"
    );
    for (id, state) in &merged {
        check_ch_row(&shown[id], state);
    }
    ch_count(
        ch,
        &format!(
            "SELECT count() FROM {db}.installs_settled WHERE execution_id NOT IN \
             (SELECT execution_id FROM {db}.install_touches \
              WHERE touched_at >= (SELECT max(watermark) FROM {db}.settle_watermark))"
        ),
    )
}

async fn write(sink: &ClickHouseSink, events: &[Published]) {
    let plain: Vec<schema::Event> = events.iter().map(|p| p.event.clone()).collect();
    assert_eq!(process(sink, &plain).await.stored(), plain.len());
}

/// Settles until the watermark passes everything written so far (ClickHouse's clock counts seconds).
async fn settle_all(ch: &ClickHouseServer, sink: &ClickHouseSink) {
    let now = ch_count(ch, "SELECT toUInt64(now())");
    let last = std::sync::Mutex::new(0u32);
    testkit::poll_until(
        "a settle past the last insert",
        Duration::from_secs(30),
        || async {
            if let Some(s) = sink.settle(Duration::ZERO).await.expect("settle") {
                *last.lock().expect("lock") = s.watermark;
            }
            u64::from(*last.lock().expect("lock")) > now
        },
    )
    .await;
}

fn body(exec: &str, random_id: &str, fields: Value) -> Vec<u8> {
    let mut value =
        json!({"random_id": random_id, "execution_id": exec, "type": "lxc", "nsapp": "app"});
    for (k, v) in fields.as_object().expect("fields") {
        value[k] = v.clone();
    }
    serde_json::to_vec(&value).expect("json")
}

/// NATS and ClickHouse servers of their own, with the writer's database migrated to the newest version:
/// the servers (kept alive by the caller), the database and the sink.
async fn migrated_sink() -> (NatsServer, ClickHouseServer, String, ClickHouseSink) {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let sink = writer::clickhouse_sink(&config);
    sink.migrate().await.expect("migrate");
    (nats, ch, config.clickhouse_database, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_final_is_the_merge_of_every_event_before_and_after_settles() {
    let (_nats, ch, db, sink) = migrated_sink().await;

    let t0 = OffsetDateTime::now_utc() - time::Duration::hours(3);
    let mut all = corpus(t0);
    all.extend(simulated(60, 4, t0));
    let (first, rest) = all.split_at(all.len() / 2);
    let mut written: Vec<Published> = first.to_vec();
    write(&sink, &written).await;
    assert_eq!(check_exact(&ch, &db, &written, "nothing settled"), 0);

    settle_all(&ch, &sink).await;
    let settled = check_exact(&ch, &db, &written, "first settle");
    assert!(settled > 0, "the settled rows are read");

    // The rest, in reverse order (late and out-of-order events of installs already settled).
    let mut late: Vec<Published> = rest.to_vec();
    late.reverse();
    // And an event delayed on its way, received before every other one of a settled install: its start
    // moves earlier.
    let first_id = written[0].event.execution_id.clone();
    late.push(accept(
        &body(
            &first_id,
            &written[0].event.random_id,
            json!({"status": "installing"}),
        ),
        t0 - time::Duration::hours(1),
    ));
    write(&sink, &late).await;
    written.extend(late);
    check_exact(&ch, &db, &written, "late events before a settle");
    settle_all(&ch, &sink).await;
    check_exact(&ch, &db, &written, "late events settled");
    // Both kinds of re-settled installs are read (schema version 7): those whose rows all started at the
    // same moment, through the view's `GROUP BY`, and those whose start a late event moved earlier.
    let moved = ch_count(&ch, &format!("SELECT count() FROM {db}.installs_moved"));
    let same_start = ch_count(
        &ch,
        &format!(
            "SELECT count() FROM {db}.installs_resettled \
             WHERE execution_id NOT IN (SELECT execution_id FROM {db}.installs_moved)"
        ),
    );
    assert!(moved > 0, "an install whose start moved");
    assert!(
        same_start > 0,
        "an install settled twice with the same start"
    );

    // A forged final, a replay of everything, and a new event for a settled install.
    let settled_id = written[0].event.execution_id.clone();
    let more = vec![
        accept(
            &body(
                &settled_id,
                "forger",
                json!({"status": "failed", "exit_code": 1, "disk_size": 99}),
            ),
            t0 + time::Duration::hours(1),
        ),
        accept(
            &body(
                &settled_id,
                &written[0].event.random_id,
                json!({"status": "configuring", "install_duration": 7}),
            ),
            t0 + time::Duration::hours(2),
        ),
    ];
    write(&sink, &more).await;
    write(&sink, &written).await;
    written.extend(more);
    check_exact(
        &ch,
        &db,
        &written,
        "forged, replayed, new for a settled install",
    );
    let resettled_before = ch_count(&ch, &format!("SELECT count() FROM {db}.installs_resettled"));

    // Two settles racing (as two replicas would).
    let other = sink.clone();
    let now = ch_count(&ch, "SELECT toUInt64(now())");
    testkit::poll_until(
        "the clock to pass the last insert",
        Duration::from_secs(10),
        || async { ch_count(&ch, "SELECT toUInt64(now())") > now },
    )
    .await;
    let (a, b) = tokio::join!(sink.settle(Duration::ZERO), other.settle(Duration::ZERO));
    a.expect("a");
    b.expect("b");
    check_exact(&ch, &db, &written, "two settles racing");
    settle_all(&ch, &sink).await;
    let settled = check_exact(&ch, &db, &written, "settled again");
    assert!(settled > 0, "the settled rows are read");
    assert!(
        ch_count(&ch, &format!("SELECT count() FROM {db}.installs_resettled")) > resettled_before,
        "the settled install was settled again"
    );
    // The marking pass of a starting job finds nothing new.
    sink.mark_resettled().await.expect("mark");
    check_exact(&ch, &db, &written, "after the marking pass");
}

/// The ids of `table` (`installs_resettled`, `installs_moved`), sorted, once each.
fn marked(ch: &ClickHouseServer, db: &str, table: &str) -> Vec<String> {
    let text = ch
        .query(&format!(
            "SELECT DISTINCT execution_id FROM {db}.{table} ORDER BY execution_id"
        ))
        .expect("marked");
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_settled_weeks_ago_is_marked_when_a_new_event_settles_it_again() {
    settled_again_weeks_later(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_settled_weeks_ago_before_version_8_is_settled_again_right_after_it() {
    settled_again_weeks_later(Some(7)).await;
}

/// A settle reads the events of its installs only from the first receipt of any of them on (from
/// `install_first`, schema version 8), and their rows of `installs_settled` only from that second on
/// (its sorting key starts with `started_at`). The bound must come from every event of those
/// installs, not from the new ones alone: here the new events are weeks younger than the rows they
/// settle again. `before`: the history is written and settled at that schema version, and the
/// database then upgraded (version 8 fills `install_first` from `events`).
async fn settled_again_weeks_later(before: Option<u32>) {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let mut config = config(&nats, Some(&ch), None);
    let db = config.clickhouse_database.clone();
    let newest = writer::clickhouse_sink(&config);
    let sink = match before {
        Some(version) => {
            config.clickhouse_migrate_to = version;
            writer::clickhouse_sink(&config)
        }
        None => newest.clone(),
    };
    sink.migrate().await.expect("migrate");
    let now = OffsetDateTime::now_utc();
    let weeks_ago = now - time::Duration::days(20);
    let mut written = vec![
        accept(
            &body("old-final", "r1", json!({"status": "installing"})),
            weeks_ago,
        ),
        accept(
            &body("old-moved", "r2", json!({"status": "installing"})),
            weeks_ago,
        ),
    ];
    written.extend(simulated(30, 7, now - time::Duration::hours(2)));
    write(&sink, &written).await;
    settle_all(&ch, &sink).await;
    check_exact(&ch, &db, &written, "first settle");
    assert!(marked(&ch, &db, "installs_resettled").is_empty());
    let sink = newest;
    if before.is_some() {
        assert_eq!(sink.migrate().await.expect("upgrade"), 1);
        check_exact(&ch, &db, &written, "upgraded");
    }

    let later = vec![
        // Its final, today: a second row with the same start.
        accept(
            &body(
                "old-final",
                "r1",
                json!({"status": "success", "install_duration": 60}),
            ),
            now - time::Duration::minutes(5),
        ),
        // An event delayed on its way, received before the first one: its start moves a day earlier.
        accept(
            &body("old-moved", "r2", json!({"status": "validation"})),
            weeks_ago - time::Duration::days(1),
        ),
    ];
    write(&sink, &later).await;
    written.extend(later);
    settle_all(&ch, &sink).await;
    check_exact(&ch, &db, &written, "settled again");
    assert_eq!(
        marked(&ch, &db, "installs_resettled"),
        ["old-final", "old-moved"]
    );
    assert_eq!(marked(&ch, &db, "installs_moved"), ["old-moved"]);
    // Every settled row is counted in the rollups' change counts, under the day it started on.
    assert_eq!(
        ch_count(
            &ch,
            &format!("SELECT toUInt64(sum(blocks)) FROM {db}.settled_blocks")
        ),
        ch_count(&ch, &format!("SELECT count() FROM {db}.installs_settled")),
    );
    let day = |t: OffsetDateTime| t.unix_timestamp() / 86_400;
    assert_eq!(
        ch_count(
            &ch,
            &format!(
                "SELECT toUInt64(sum(blocks)) FROM {db}.settled_blocks WHERE low IN ({}, {})",
                day(weeks_ago),
                day(weeks_ago - time::Duration::days(1))
            )
        ),
        4,
        "two installs, settled twice each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_database_shows_every_install_once_with_every_column_after_version_4() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let db = config.clickhouse_database.clone();
    use writer::clickhouse::schema::{render, MIGRATIONS, MIGRATIONS_TABLE};
    ch.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .expect("database");
    ch.query(&render(MIGRATIONS_TABLE).replace('?', &db))
        .expect("migrations table");
    for migration in &MIGRATIONS[..3] {
        for step in migration.steps {
            ch.query(&step.sql().replace('?', &db))
                .expect("versions 1-3");
        }
        ch.query(&format!(
            "INSERT INTO {db}.schema_migrations (version, name, applied_at) SELECT {}, 'old', now()",
            migration.version
        ))
        .expect("record");
    }
    let sink = writer::clickhouse_sink(&config);
    let t0 = OffsetDateTime::now_utc() - time::Duration::days(2);
    let mut events = corpus(t0);
    events.extend(simulated(80, 7, t0));
    // A forged final of a corpus install, stored by version 3.
    events.push(accept(
        &body(
            &events[0].event.execution_id,
            "forger",
            json!({"status": "success", "exit_code": 0}),
        ),
        t0 + time::Duration::hours(1),
    ));
    write(&sink, &events).await;
    let before = installs_final(&ch, &db);
    assert!(before.len() > 80);

    assert_eq!(sink.migrate().await.expect("versions 4 to 8"), 5);
    assert_eq!(sink.migrate().await.expect("again"), 0);
    let after = installs_final(&ch, &db);
    assert_eq!(after, before, "every install, every column");
    assert_eq!(
        ch_count(&ch, &format!("SELECT count() FROM {db}.installs_settled")),
        before.len() as u64
    );
    // Inserts feed `events`, the touches and the first receipts (version 8) only.
    let views = ch
        .query(&format!(
        "SELECT name FROM system.tables WHERE database = '{db}' AND engine = 'MaterializedView' ORDER BY name"
    ))
        .expect("views");
    assert_eq!(views.trim(), "install_first_mv\ninstall_touches_mv");
    check_exact(&ch, &db, &events, "upgraded");
    settle_all(&ch, &sink).await;
    assert_eq!(
        installs_final(&ch, &db),
        before,
        "settled after the upgrade"
    );
}

/// Version 5 re-keys `installs_settled` by copying it: an upgrade interrupted after the swap, with a row
/// a writer of version 4 settled into the old table meanwhile, finishes on the next start with every
/// install and every row, once, and the new sorting key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_version_5_upgrade_keeps_every_settled_row() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let mut old = config(&nats, Some(&ch), None);
    let db = old.clickhouse_database.clone();
    old.clickhouse_migrate_to = 4;
    let v4 = writer::clickhouse_sink(&old);
    assert_eq!(v4.migrate().await.expect("versions 1-4"), 4);
    let t0 = OffsetDateTime::now_utc() - time::Duration::days(2);
    let mut events = corpus(t0);
    events.extend(simulated(60, 5, t0));
    write(&v4, &events).await;
    settle_all(&ch, &v4).await;
    // Installs touched after the last settle are merged from `events`.
    let late = simulated(10, 3, t0 + time::Duration::hours(30));
    write(&v4, &late).await;
    events.extend(late);
    let before = installs_final(&ch, &db);
    let rows = ch_count(&ch, &format!("SELECT count() FROM {db}.installs_settled"));
    assert!(rows >= 60, "{rows}");

    // The first three steps (create, copy, swap) ran, then the writer stopped.
    use writer::clickhouse::schema::{Step, MIGRATIONS};
    let v5 = MIGRATIONS
        .iter()
        .find(|m| m.version == 5)
        .expect("version 5");
    for step in &v5.steps[..3] {
        assert!(matches!(step, Step::When { .. }));
        ch.query(&step.sql().replace('?', &db)).expect("step");
    }
    // A writer of version 4 settled one install again into the old table after the swap (a version
    // above the watermark: not shown until a watermark passes it).
    let columns = ch
        .query(&format!(
            "SELECT arrayStringConcat(groupArray(if(name = 'version', 'version + 3600', name)), ', ') \
             FROM system.columns WHERE database = '{db}' AND table = 'installs_settled_v4'"
        ))
        .expect("columns");
    ch.query(&format!(
        "INSERT INTO {db}.installs_settled_v4 SELECT {} FROM {db}.installs_settled_v4 \
         ORDER BY execution_id LIMIT 1",
        columns.trim()
    ))
    .expect("a late row in the old table");

    let sink = writer::clickhouse_sink(&config(&nats, Some(&ch), None));
    assert_eq!(sink.migrate().await.expect("versions 5 to 8"), 4);
    assert_eq!(sink.migrate().await.expect("again"), 0);
    assert_eq!(
        installs_final(&ch, &db),
        before,
        "every install, every column"
    );
    assert_eq!(
        ch_count(&ch, &format!("SELECT count() FROM {db}.installs_settled")),
        rows + 1,
        "every row, the late one included"
    );
    assert_eq!(
        ch.query(&format!(
            "SELECT sorting_key FROM system.tables WHERE database = '{db}' AND name = 'installs_settled'"
        ))
        .expect("key")
        .trim(),
        "started_at, execution_id"
    );
    assert_eq!(
        ch_count(
            &ch,
            &format!(
                "SELECT count() FROM system.tables WHERE database = '{db}' \
                 AND name IN ('installs_settled_v4', 'installs_settled_next')"
            )
        ),
        0
    );
    // The install with two rows is marked, so readers take its newest row up to the watermark.
    assert!(ch_count(&ch, &format!("SELECT count() FROM {db}.installs_resettled")) >= 1);
    check_exact(&ch, &db, &events, "after version 5");
    settle_all(&ch, &sink).await;
    check_exact(&ch, &db, &events, "settled after version 5");
}

/// A settle while an insert is still running keeps its watermark before that insert's start, however
/// long the insert takes and whatever the lag (0 here): every touch the insert stamps is at or above the
/// watermark, so its install is merged from `events` until a settle after the insert takes it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_keeps_its_watermark_before_an_insert_still_running() {
    let (_nats, ch, db, sink) = migrated_sink().await;
    let now = || ch_count(&ch, "SELECT toUInt64(now())");
    let first = ch_count(
        &ch,
        &format!("SELECT toUInt64(max(watermark)) FROM {db}.settle_watermark"),
    );
    testkit::poll_until(
        "the clock 3 s past the first watermark",
        Duration::from_secs(30),
        || async { now() >= first + 3 },
    )
    .await;

    // An insert of at least 20 s: one row a second from its SELECT (ClickHouse writes it at the end).
    let port = ch.http_port();
    let sql = format!(
        "INSERT INTO {db}.events (event_id, received_at, received_ms, execution_id, random_id, type, \
         nsapp, status, repo_source, synthetic, rescued) \
         SELECT generateUUIDv4(), now(), toUInt64(now()) * 1000, 'slow-insert', 'r', 'lxc', 'app', \
         'installing', 'ProxmoxVE', 0, [] FROM system.numbers WHERE sleepEachRow(1) = 0 LIMIT 20 \
         SETTINGS max_block_size = 1"
    );
    let slow = std::thread::spawn(move || testkit::clickhouse::query(port, &sql));
    testkit::poll_until(
        "the insert listed as running",
        Duration::from_secs(60),
        || async {
            ch_count(
                &ch,
                "SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO%slow-insert%'",
            ) == 1
        },
    )
    .await;
    let listed = now();
    testkit::poll_until(
        "the clock 2 s past the insert's start",
        Duration::from_secs(30),
        || async { now() >= listed + 2 },
    )
    .await;
    let clock = now();
    let during = sink
        .settle(Duration::ZERO)
        .await
        .expect("settle")
        .expect("the watermark moves past the first one");
    let visible = ch_count(
        &ch,
        &format!("SELECT count() FROM {db}.events WHERE execution_id = 'slow-insert'"),
    );
    assert_eq!(visible, 0, "the settle ran while the insert was running");
    assert!(
        u64::from(during.watermark) < listed && clock >= listed + 2,
        "the watermark ({}) stays before the insert's start (at most {listed}), where the lag alone \
         would have put it at {clock}",
        during.watermark
    );
    slow.join().expect("thread").expect("the slow insert");
    let touched = ch_count(
        &ch,
        &format!(
            "SELECT toUInt64(min(touched_at)) FROM {db}.install_touches WHERE execution_id = 'slow-insert'"
        ),
    );
    assert!(
        u64::from(during.watermark) <= touched,
        "the watermark ({}) stays at or below every touch of the running insert ({touched})",
        during.watermark
    );
    let slow_events = || {
        ch_count(
            &ch,
            &format!("SELECT events FROM {db}.installs_final WHERE execution_id = 'slow-insert'"),
        )
    };
    assert_eq!(
        slow_events(),
        20,
        "merged from events before the next settle"
    );
    settle_all(&ch, &sink).await;
    assert_eq!(slow_events(), 20, "settled whole");
    assert_eq!(
        ch_count(
            &ch,
            &format!(
                "SELECT argMax(events, version) FROM {db}.installs_settled WHERE execution_id = 'slow-insert'"
            )
        ),
        20,
        "the newest settled row holds every event"
    );
}
