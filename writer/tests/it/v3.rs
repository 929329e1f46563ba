//! The newer scripts (full payload with every event, a running `install_duration`, `repo_slug`,
//! `has_arm`, `arch`, type `turnkey`) in both stores: the install of v3_01 → v3_02 → v3_03 arriving in
//! every order, with the installing retried after the duplicate window and the final redelivered, ends
//! as the same `installs_final` row and PocketBase record (failed, exit 100, dependency, duration 412
//! from the deciding final, the new fields of the first event); the TurnKey pair in both orders; the
//! final-only arm64 Incus install from a fork. And a ClickHouse database of version 1 keeps the figures
//! of what it holds when version 2 arrives.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::PocketBaseServer;
use testkit::NatsServer;
use time::OffsetDateTime;
use writer::sink::{process, Sink};

use crate::harness::*;

/// One install of `files` arriving in `order`: each event is received (and gets its time-ordered id)
/// when it arrives, 2 s apart; the installing is sent again after the duplicate window (an event of its
/// own), and the final is delivered twice (a redelivery).
fn arriving(id: &str, files: &[&str], order: &[usize], start: OffsetDateTime) -> Vec<Published> {
    let mut out = Vec::new();
    let mut at = start;
    for &i in order {
        let file = files[i];
        let event = accept(&testkit::fixtures::read_as(file, id), at);
        at += time::Duration::seconds(2);
        let is_final = event.event.status.is_final();
        out.push(event.clone());
        if file.contains("installing") {
            out.push(accept(&testkit::fixtures::read_as(file, id), at));
            at += time::Duration::seconds(2);
        }
        if is_final {
            out.push(event);
        }
    }
    out
}

/// What `installs_final` holds for these installs, by execution id.
fn ch_installs(ch: &ClickHouseServer, database: &str) -> BTreeMap<String, Value> {
    ch_rows(
        ch,
        &format!("SELECT * FROM {database}.installs_final ORDER BY execution_id"),
    )
    .into_iter()
    .map(|row| (row["execution_id"].as_str().expect("id").to_string(), row))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_script_installs_are_the_same_in_clickhouse_and_pocketbase_in_any_order() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let config = config(&nats, Some(&ch), Some(&pb));
    let ch_sink = writer::clickhouse_sink(&config);
    ch_sink.migrate().await.expect("migrate");
    let pb_sink = writer::pocketbase_sink(&config).expect("pb");
    pb_sink.prepare().await.expect("prepare");

    let start = OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let lxc = [
        "v3_01_installing.json",
        "v3_02_configuring.json",
        "v3_03_failed_apt.json",
    ];
    let turnkey = [
        "v3_04_turnkey_installing.json",
        "v3_05_turnkey_success.json",
    ];
    let mut installs: Vec<(String, Vec<Published>)> = Vec::new();
    for (n, order) in testkit::fixtures::orders(lxc.len()).iter().enumerate() {
        let id = format!("v3-lxc-{n}");
        installs.push((id.clone(), arriving(&id, &lxc, order, start)));
    }
    assert_eq!(installs.len(), 6);
    for (n, order) in testkit::fixtures::orders(turnkey.len()).iter().enumerate() {
        let id = format!("v3-turnkey-{n}");
        installs.push((id.clone(), arriving(&id, &turnkey, order, start)));
    }
    let arm = ["v3_06_incus_arm_success.json"];
    installs.push(("v3-arm".into(), arriving("v3-arm", &arm, &[0], start)));

    // Each install's events one batch at a time, in arrival order, to both stores.
    let all: Vec<Published> = installs.iter().flat_map(|(_, e)| e.clone()).collect();
    for p in &all {
        let batch = std::slice::from_ref(&p.event);
        assert_eq!(process(&ch_sink, batch).await.stored(), 1);
        assert_eq!(process(&pb_sink, batch).await.stored(), 1);
    }
    // And the whole stream redelivered in one batch changes nothing.
    let plain: Vec<schema::Event> = all.iter().map(|p| p.event.clone()).collect();
    assert_eq!(process(&ch_sink, &plain).await.stored(), plain.len());
    pb_sink.write(&plain).await.expect("pocketbase redelivery");

    let expected = expected(&all);
    let rows = ch_installs(&ch, "telemetry");
    let records: BTreeMap<String, Value> = pb_sink
        .records()
        .await
        .expect("records")
        .into_iter()
        .map(|r| (r["execution_id"].as_str().expect("id").to_string(), r))
        .collect();
    assert_eq!(rows.len(), installs.len(), "installs in ClickHouse");
    assert_eq!(records.len(), installs.len(), "records in PocketBase");

    for (id, events) in &installs {
        let row = &rows[id];
        let record = &records[id];
        check_ch_row(row, &expected[id]);
        check_pb_record(record, &expected[id]);
        let distinct = events
            .iter()
            .map(|p| p.event.event_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(row["events"], json!(distinct.to_string()), "{id} events");
        if id.starts_with("v3-lxc") {
            let ch_want = json!({
                "type": "lxc", "nsapp": "immich", "status": "failed", "is_final": 1, "exit_code": 100,
                "error_category": "dependency", "install_duration": 412, "duration": 412,
                "repo_source": "ProxmoxVE", "repo_slug": "community-scripts/ProxmoxVE", "has_arm": 0,
                "arch": "amd64", "disk_size": 20, "core_count": 4, "ram_size": 8192, "ct_type": 1,
                "cpu_vendor": "amd", "cpu_model": "AMD Ryzen 7 5825U with Radeon Graphics",
                "gpu_passthrough": "igpu", "ram_speed": "3200", "pve_version": "9.1.1",
            });
            assert_fields(id, row, &ch_want);
            let pb_want = json!({
                "type": "lxc", "nsapp": "immich", "status": "failed", "exit_code": 100,
                "error_category": "dependency", "install_duration": 412,
                "repo_source": "ProxmoxVE", "repo_slug": "community-scripts/ProxmoxVE", "has_arm": false,
                "arch": "amd64", "disk_size": 20, "core_count": 4, "ram_size": 8192,
                "cpu_vendor": "amd", "pve_version": "9.1.1",
            });
            assert_fields(id, record, &pb_want);
            assert!(
                row["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("held broken packages")),
                "{id}: {row}"
            );
            assert_eq!(row["error"], record["error"], "{id} error");
        } else if id.starts_with("v3-turnkey") {
            let want = json!({
                "type": "turnkey", "nsapp": "turnkey-nextcloud", "status": "success",
                "exit_code": 0, "install_duration": 388,
                "repo_slug": "community-scripts/ProxmoxVE", "arch": "amd64",
            });
            assert_fields(id, row, &want);
            assert_fields(id, record, &want);
            assert_eq!(row["duration"], 388, "{id}");
        } else {
            let want = json!({
                "type": "lxc", "nsapp": "docker", "status": "success", "install_duration": 96,
                "repo_source": "external", "repo_slug": "someuser/ProxmoxVE-fork",
                "arch": "arm64", "pve_version": "incus-6.0.4", "cpu_vendor": "arm",
            });
            assert_fields(id, row, &want);
            assert_fields(id, record, &want);
            assert_eq!(
                (&row["has_arm"], &record["has_arm"]),
                (&json!(1), &json!(true))
            );
        }
    }
    // The type figures count TurnKey as a type of its own.
    let types = ch_rows(
        &ch,
        "SELECT type, toUInt32(count()) AS n FROM telemetry.installs_final GROUP BY type ORDER BY type",
    );
    assert_eq!(
        types,
        [
            json!({"type": "lxc", "n": 7}),
            json!({"type": "turnkey", "n": 2})
        ]
    );
}

/// Each key of `want` has that value in `got`.
fn assert_fields(id: &str, got: &Value, want: &Value) {
    for (key, value) in want.as_object().expect("an object") {
        assert_eq!(&got[key], value, "{id} {key}: {got}");
    }
}

/// Rows of `events` in the columns of version 1, for a database that has not seen version 2 yet.
fn insert_as_version_1(ch: &ClickHouseServer, database: &str, events: &[Published]) {
    let rows: Vec<String> = events
        .iter()
        .map(|p| {
            let e = &p.event;
            let at = e.received_at;
            json!({
                "event_id": e.event_id.to_string(),
                "received_at": format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second()
                ),
                "received_ms": writer::clickhouse::unix_ms(at),
                "execution_id": e.execution_id, "random_id": e.random_id, "type": e.kind.as_str(),
                "nsapp": e.nsapp, "status": e.status.as_str(), "ct_type": e.ct_type,
                "disk_size": e.disk_size, "core_count": e.core_count, "ram_size": e.ram_size,
                "os_type": e.os_type, "os_version": e.os_version, "pve_version": e.pve_version,
                "method": e.method, "exit_code": e.exit_code, "error": e.error,
                "error_category": e.error_category.map(|c| c.as_str()),
                "error_signature": e.error_signature, "install_duration": e.install_duration,
                "cpu_vendor": e.cpu_vendor.map(|v| v.as_str()), "cpu_model": e.cpu_model,
                "gpu_vendor": e.gpu_vendor.map(|v| v.as_str()), "gpu_model": e.gpu_model,
                "gpu_passthrough": e.gpu_passthrough.map(|v| v.as_str()), "ram_speed": e.ram_speed,
                "repo_source": e.repo_source.as_str(), "synthetic": 0, "rescued": [],
            })
            .to_string()
        })
        .collect();
    ch.query(&format!(
        "INSERT INTO {database}.events FORMAT JSONEachRow\n{}",
        rows.join("\n")
    ))
    .expect("insert as version 1");
}

/// A body of install `id` (type lxc, app `app`) with `fields`.
fn body(id: &str, fields: Value) -> Vec<u8> {
    let mut value = json!({"random_id": id, "execution_id": id, "type": "lxc", "nsapp": "app"});
    for (k, v) in fields.as_object().expect("fields") {
        value[k] = v.clone();
    }
    serde_json::to_vec(&value).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_keeps_its_figures_and_new_events_follow_the_new_rules() {
    let nats = NatsServer::start().expect("nats");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let config = config(&nats, Some(&ch), None);
    let db = &config.clickhouse_database;
    // Version 1 only, as an older writer left it.
    use writer::clickhouse::schema::{render, Step, MIGRATIONS, MIGRATIONS_TABLE};
    ch.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .expect("database");
    ch.query(&render(MIGRATIONS_TABLE).replace('?', db))
        .expect("migrations table");
    for step in MIGRATIONS[0].steps {
        assert!(matches!(step, Step::Sql(_)));
        ch.query(&step.sql().replace('?', db)).expect("version 1");
    }
    ch.query(&format!(
        "INSERT INTO {db}.schema_migrations (version, name, applied_at) SELECT 1, 'version 1', now()"
    ))
    .expect("record version 1");

    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(20);
    let at = |s: i64| t0 + time::Duration::seconds(s);
    let v3 = |name: &str, id: &str, s: i64| accept(&testkit::fixtures::read_as(name, id), at(s));
    let old: Vec<Published> = vec![
        // A: a newer script's install stored wholly by version 1 (whose duration was the first one, 0).
        v3("v3_01_installing.json", "a", 0),
        v3("v3_02_configuring.json", "a", 141),
        v3("v3_03_failed_apt.json", "a", 412),
        // B: an older script's install (duration on the final only).
        accept(&body("b", json!({"status": "installing"})), at(1)),
        accept(
            &body(
                "b",
                json!({"status": "success", "exit_code": 0, "install_duration": 90}),
            ),
            at(91),
        ),
        // C, D: started before the upgrade, final after it.
        v3("v3_01_installing.json", "c", 2),
        v3("v3_02_configuring.json", "c", 143),
        accept(
            &body("d", json!({"status": "installing", "install_duration": 0})),
            at(3),
        ),
        // E: final before the upgrade, a late progress ping after it.
        accept(&body("e", json!({"status": "installing"})), at(4)),
        accept(
            &body(
                "e",
                json!({"status": "success", "exit_code": 0, "install_duration": 90}),
            ),
            at(94),
        ),
    ];
    insert_as_version_1(&ch, db, &old);
    let before = ch_installs(&ch, db);
    assert_eq!(before.len(), 5);
    assert_eq!(
        before["a"]["install_duration"], 0,
        "version 1's first duration"
    );

    let sink = writer::clickhouse_sink(&config);
    assert_eq!(sink.migrate().await.expect("versions 2 to 8"), 7);
    assert_eq!(sink.migrate().await.expect("again"), 0);
    let after = ch_installs(&ch, db);
    for (id, row) in &before {
        let mut now = after[id].clone();
        for new in ["repo_slug", "has_arm", "arch"] {
            assert_eq!(now[new], Value::Null, "{id} {new}");
            now.as_object_mut().expect("row").remove(new);
        }
        assert_eq!(&now, row, "{id}: the figures of version 1 stay");
    }

    let new: Vec<Published> = vec![
        v3("v3_03_failed_apt.json", "c", 414),
        accept(
            &body("d", json!({"status": "failed", "exit_code": 1})),
            at(300),
        ),
        accept(
            &body(
                "e",
                json!({"status": "configuring", "install_duration": 500}),
            ),
            at(600),
        ),
        // F: wholly after the upgrade.
        v3("v3_01_installing.json", "f", 10),
        v3("v3_03_failed_apt.json", "f", 422),
        v3("v3_02_configuring.json", "f", 430),
    ];
    let plain: Vec<schema::Event> = new.iter().map(|p| p.event.clone()).collect();
    assert_eq!(process(&sink, &plain).await.stored(), plain.len());
    let rows = ch_installs(&ch, db);
    let mut all = old.clone();
    all.extend(new);
    let merged = expected(&all);
    let duration = |id: &str| rows[id]["install_duration"].clone();
    // A and B were decided before the upgrade and nothing new arrived: unchanged.
    assert_eq!(rows["a"], after["a"]);
    assert_eq!(rows["b"], after["b"]);
    // C: the deciding final came after the upgrade and brings its own 412.
    assert_eq!(duration("c"), 412);
    assert_eq!(
        (
            &rows["c"]["repo_slug"],
            &rows["c"]["has_arm"],
            &rows["c"]["arch"]
        ),
        (
            &json!("community-scripts/ProxmoxVE"),
            &json!(0),
            &json!("amd64")
        )
    );
    // D: a final without a duration takes the largest carried (the 0 of its installing).
    assert_eq!(duration("d"), 0);
    // E: decided before the upgrade; the late ping's 500 does not move it.
    assert_eq!(duration("e"), 90);
    // F: the new rules whole, whatever the arrival order.
    assert_eq!(duration("f"), 412);
    assert_eq!(rows["f"]["repo_slug"], "community-scripts/ProxmoxVE");
    for id in ["b", "c", "d", "e", "f"] {
        check_ch_row(&rows[id], &merged[id]);
    }
}
