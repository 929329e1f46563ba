//! `telemetry-import` as its real binary against real servers: a PocketBase collection made like the
//! running service's, a ClickHouse 18.16 table of received events like the later deployments' (with
//! `created DateTime`: 18.16 has no DateTime64), and JSON lines. After each import, `installs_final`
//! holds the source's distinct installs by status; a second import changes nothing; an import killed
//! with SIGKILL and started again ends exactly like one clean run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::{PocketBaseServer, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use tokio::process::{Child, Command};

use crate::harness::*;

/// The collection of the running service: its field names, `error_category` a select, `created` and
/// `updated` autodates (shared with `deploy/bench/import.sh`).
const COLLECTION: &str = include_str!("../fixtures/pocketbase-telemetry-collection.json");

/// One finished run of the binary.
struct Run {
    code: i32,
    report: Value,
}

/// The import binary with the target ClickHouse `db` and `args`, in `dir`.
fn command(ch: &ClickHouseServer, db: &str, dir: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telemetry-import"));
    cmd.env_clear()
        .env("CLICKHOUSE_URL", ch.url())
        .env("CLICKHOUSE_DATABASE", db)
        .env("LOG_LEVEL", "warn")
        .env("IMPORT_PROGRESS", "log")
        .env("IMPORT_RETRY_FOR_SECS", "20")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Runs the import to its end; the report comes from `--report-json`.
async fn import(mut cmd: Command, dir: &Path) -> Run {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.arg("--report-json").arg(&report).status(),
    )
    .await
    .expect("import within 2 minutes")
    .expect("run telemetry-import");
    let report = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    Run {
        code: status.code().unwrap_or(-1),
        report,
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Installs of `installs_final` by status.
fn by_status(ch: &ClickHouseServer, db: &str) -> BTreeMap<String, u64> {
    ch_rows(
        ch,
        &format!("SELECT status, count() AS n FROM {db}.installs_final GROUP BY status"),
    )
    .into_iter()
    .map(|r| {
        let n = r["n"]
            .as_u64()
            .or_else(|| r["n"].as_str()?.parse().ok())
            .unwrap_or(0);
        (r["status"].as_str().unwrap_or_default().to_string(), n)
    })
    .collect()
}

/// Everything a reader of `db` sees: each install, and the ids of the events.
fn snapshot(ch: &ClickHouseServer, db: &str) -> String {
    let installs = ch
        .query(&format!(
            "SELECT * FROM {db}.installs_final ORDER BY execution_id FORMAT JSONEachRow"
        ))
        .expect("installs");
    let events = ch
        .query(&format!(
            "SELECT toString(event_id) FROM {db}.events_final ORDER BY event_id"
        ))
        .expect("events");
    format!("{installs}\n--\n{events}")
}

/// The expected installs by status from a table of (install, expected final status).
fn expected_by_status(installs: &[(&str, &str)]) -> BTreeMap<String, u64> {
    let distinct: BTreeMap<&str, &str> = installs.iter().copied().collect();
    let mut out = BTreeMap::new();
    for status in distinct.values() {
        *out.entry(status.to_string()).or_insert(0) += 1;
    }
    out
}

fn rejected(report: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(report["rejected_by_kind"].clone()).unwrap_or_default()
}

fn kinds(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// The checkpoint's position, once the file exists.
fn position(state: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["position"].as_u64()
}

/// Starts an import into `resumed`, kills it with SIGKILL once it stored a batch but before its end,
/// starts it again to its end, and checks that `resumed` ends exactly like `clean`, where the same
/// import ran once. `total` is the position of a complete import.
async fn kill_and_resume(
    ch: &ClickHouseServer,
    dir: &Path,
    args: &[String],
    total: u64,
) -> (Run, Run) {
    let clean_dir = dir.join("clean");
    let resumed_dir = dir.join("resumed");
    std::fs::create_dir_all(&clean_dir).expect("dir");
    std::fs::create_dir_all(&resumed_dir).expect("dir");
    let clean = import(command(ch, "clean", &clean_dir, args), &clean_dir).await;
    assert_eq!(clean.code, 0, "{}", clean.report);

    let state = resumed_dir.join("state.json");
    let mut with_state = args.to_vec();
    with_state.extend(["--state".to_string(), state.display().to_string()]);
    let mut child: Child = command(ch, "resumed", &resumed_dir, &with_state)
        .spawn()
        .expect("start telemetry-import");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if position(&state).is_some_and(|p| p > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the import ended before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    let at_kill = position(&state).expect("checkpoint");
    assert!(
        at_kill > 0 && at_kill < total,
        "killed at {at_kill} of {total}: not in the middle of the import"
    );

    let resumed = import(
        command(ch, "resumed", &resumed_dir, &with_state),
        &resumed_dir,
    )
    .await;
    assert_eq!(resumed.code, 0, "{}", resumed.report);
    assert!(
        resumed.report["read_this_run"].as_u64().unwrap_or(0)
            < clean.report["read"].as_u64().unwrap_or(0),
        "the second run started over: {}",
        resumed.report
    );
    for key in [
        "read",
        "installs",
        "written",
        "duplicates",
        "rejected",
        "rejected_by_kind",
    ] {
        assert_eq!(resumed.report[key], clean.report[key], "{key}");
    }
    assert_eq!(snapshot(ch, "resumed"), snapshot(ch, "clean"));
    (clean, resumed)
}

// ---------------------------------------------------------------- PocketBase

/// The running service's collection, and the batch API for filling it.
async fn pb_collection(pb: &PocketBaseServer, token: &str) {
    let http = reqwest::Client::new();
    let definition: Value = serde_json::from_str(COLLECTION).expect("fixture");
    let resp = http
        .post(format!("{}/api/collections", pb.url()))
        .header("authorization", token)
        .json(&definition)
        .send()
        .await
        .expect("create collection");
    assert!(
        resp.status().is_success(),
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let resp = http
        .patch(format!("{}/api/settings", pb.url()))
        .header("authorization", token)
        .json(&json!({"batch": {"enabled": true, "maxRequests": 1000, "timeout": 30}}))
        .send()
        .await
        .expect("settings");
    assert!(resp.status().is_success());
}

/// Creates the records in order (each gets its `created` now); returns their ids and `created`.
async fn pb_fill(pb: &PocketBaseServer, token: &str, records: &[Value]) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for chunk in records.chunks(500) {
        let requests: Vec<Value> = chunk
            .iter()
            .map(|body| json!({"method": "POST", "url": "/api/collections/telemetry/records", "body": body}))
            .collect();
        let resp = http
            .post(format!("{}/api/batch", pb.url()))
            .header("authorization", token)
            .json(&json!({"requests": requests}))
            .send()
            .await
            .expect("batch");
        let status = resp.status();
        let answers: Value = resp.json().await.expect("batch answer");
        assert!(status.is_success(), "{answers}");
        for answer in answers.as_array().expect("answers") {
            let body = &answer["body"];
            out.push((
                body["id"].as_str().expect("id").to_string(),
                body["created"].as_str().expect("created").to_string(),
            ));
        }
    }
    out
}

fn pb_args(pb: &PocketBaseServer, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "pocketbase",
        "--url",
        &pb.url(),
        "--identity",
        SUPERUSER_EMAIL,
    ]);
    args.extend(strings(extra));
    args
}

/// A PocketBase record with the fields every record of these tests shares.
fn pb_record(id: &str, status: &str, extra: Value) -> Value {
    let mut record = json!({
        "random_id": id, "execution_id": id, "type": "lxc", "nsapp": "jellyfin", "status": status,
        "ct_type": 1, "disk_size": 8, "core_count": 2, "ram_size": 2048, "os_type": "debian",
        "os_version": "12", "pve_version": "8.2.4", "method": "default", "cpu_vendor": "intel",
        "gpu_vendor": "unknown", "gpu_passthrough": "unknown", "repo_source": "ProxmoxVE"
    });
    for (k, v) in extra.as_object().expect("object") {
        record[k] = v.clone();
    }
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_history_is_imported_and_a_second_import_changes_nothing() {
    let pb = PocketBaseServer::start().expect("pocketbase");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let token = superuser_token(&pb).await;
    pb_collection(&pb, &token).await;

    // (record, the install and the status it must end with; None: rejected)
    let table: Vec<(Value, Option<(&str, &str)>)> = vec![
        (
            pb_record("i1", "installing", json!({"exit_code": 0})),
            Some(("i1", "installing")),
        ),
        (
            pb_record("v1", "validation", json!({})),
            Some(("v1", "validation")),
        ),
        (
            pb_record("c1", "configuring", json!({})),
            Some(("c1", "configuring")),
        ),
        (
            pb_record("s1", "success", json!({"install_duration": 120})),
            Some(("s1", "success")),
        ),
        (
            pb_record("s2", "sucess", json!({})),
            Some(("s2", "success")),
        ),
        (
            pb_record(
                "f1",
                "failed",
                json!({"exit_code": 100, "error": "E: Unable to locate package foo", "error_category": "apt"}),
            ),
            Some(("f1", "failed")),
        ),
        // Exit 0 is success whatever the status said (contract §3).
        (
            pb_record("f2", "failed", json!({"exit_code": 0})),
            Some(("f2", "success")),
        ),
        (
            pb_record("a1", "failed", json!({"exit_code": 130})),
            Some(("a1", "aborted")),
        ),
        (
            pb_record(
                "a2",
                "aborted",
                json!({"exit_code": 0, "error": "aborted by user"}),
            ),
            Some(("a2", "aborted")),
        ),
        (
            pb_record("u1", "unknown", json!({"exit_code": 1})),
            Some(("u1", "unknown")),
        ),
        (
            pb_record("u2", "half-done", json!({"exit_code": 7})),
            Some(("u2", "unknown")),
        ),
        (
            pb_record(
                "t1",
                "success",
                json!({"type": "tool", "nsapp": "Update LXCs"}),
            ),
            Some(("t1", "success")),
        ),
        // Two records of one install, as the old service made when the final came first.
        (
            pb_record("d1", "installing", json!({})),
            Some(("d1", "failed")),
        ),
        (
            pb_record("d1", "failed", json!({"exit_code": 1, "error": "boom"})),
            Some(("d1", "failed")),
        ),
        (
            pb_record("d2", "success", json!({})),
            Some(("d2", "success")),
        ),
        (
            pb_record("d2", "unknown", json!({"exit_code": 1})),
            Some(("d2", "success")),
        ),
        // No execution id: the random id names the install.
        (
            pb_record("r1", "success", json!({"execution_id": ""})),
            Some(("r1", "success")),
        ),
        (
            pb_record(
                "e1",
                "failed",
                json!({"exit_code": 2, "error_category": "shell", "error": "syntax error"}),
            ),
            Some(("e1", "failed")),
        ),
        (
            pb_record(
                "m1",
                "failed",
                json!({"exit_code": 7, "error": "curl: (7) Failed to connect to 10.1.2.3 port 443"}),
            ),
            Some(("m1", "failed")),
        ),
        (
            pb_record(
                "g1",
                "success",
                json!({"repo_slug": "community-scripts/ProxmoxVE", "has_arm": true}),
            ),
            Some(("g1", "success")),
        ),
        // Broken values.
        (pb_record("b1", "success", json!({"nsapp": ""})), None),
        (
            pb_record(
                "b2",
                "success",
                json!({"random_id": "bad id!", "execution_id": ""}),
            ),
            None,
        ),
        (pb_record("b3", "success", json!({"type": "lxc2"})), None),
        (
            pb_record("b4", "success", json!({"disk_size": 999_999})),
            None,
        ),
        (pb_record("b5", "success", json!({"type": ""})), None),
    ];
    let records: Vec<Value> = table.iter().map(|(r, _)| r.clone()).collect();
    let stored = pb_fill(&pb, &token, &records).await;
    let installs: Vec<(&str, &str)> = table.iter().filter_map(|(_, e)| *e).collect();
    let expected = expected_by_status(&installs);
    let expected_rejected = kinds(&[
        ("invalid_field:disk_size", 1),
        ("invalid_field:random_id", 1),
        ("invalid_field:type", 1),
        ("missing_field:nsapp", 1),
        ("missing_field:type", 1),
    ]);

    // Small pages and batches, so paging and checkpoints are exercised; PB_AUTH_COLLECTION empty = unset.
    let args = pb_args(&pb, &["--page-size", "3", "--batch-size", "5"]);
    let run = |args: Vec<String>| {
        let mut cmd = command(&ch, "telemetry", dir.path(), &args);
        cmd.env("PB_PASSWORD", SUPERUSER_PASSWORD)
            .env("PB_AUTH_COLLECTION", "");
        import(cmd, dir.path())
    };
    let first = run(args.clone()).await;
    assert_eq!(first.code, 0, "{}", first.report);
    assert_eq!(first.report["complete"], true);
    assert_eq!(first.report["read"], table.len() as u64);
    assert_eq!(first.report["written"], installs.len() as u64);
    assert_eq!(first.report["installs"], expected.values().sum::<u64>());
    assert_eq!(first.report["duplicates"], 2);
    assert_eq!(rejected(&first.report), expected_rejected);
    assert_eq!(by_status(&ch, "telemetry"), expected);

    // The edge's rules ran: the log is masked, the category follows the exit code, the tool type is
    // mapped.
    let m1 = ch_rows(
        &ch,
        "SELECT error, error_category FROM telemetry.installs_final WHERE execution_id = 'm1'",
    );
    assert_eq!(
        m1[0]["error"],
        "curl: (7) Failed to connect to 10.x.x.x port 443"
    );
    assert_eq!(m1[0]["error_category"], "network");
    let t1 = ch_rows(
        &ch,
        "SELECT type FROM telemetry.installs_final WHERE execution_id = 't1'",
    );
    assert_eq!(t1[0]["type"], "pve");
    // Each install keeps the time its record was created, and the event id follows from the record.
    let (s1_id, s1_created) = &stored[3];
    let created = writer::import::map::parse_time(s1_created).expect("created");
    let s1 = ch_rows(
        &ch,
        "SELECT toString(event_id) AS id, received_ms FROM telemetry.events_final WHERE execution_id = 's1'",
    );
    assert_eq!(
        s1[0]["id"],
        writer::import::map::event_id(s1_id, created).to_string()
    );
    assert_eq!(
        s1[0]["received_ms"]
            .as_str()
            .and_then(|s| s.parse::<i128>().ok()),
        Some(created.unix_timestamp_nanos() / 1_000_000)
    );

    // Again from the start: the same report, the same installs, the same events.
    let before = snapshot(&ch, "telemetry");
    let mut again_args = args.clone();
    again_args.push("--restart".into());
    let again = run(again_args).await;
    assert_eq!(again.code, 0, "{}", again.report);
    for key in [
        "read",
        "installs",
        "written",
        "duplicates",
        "rejected_by_kind",
    ] {
        assert_eq!(again.report[key], first.report[key], "{key}");
    }
    assert_eq!(snapshot(&ch, "telemetry"), before);
    assert_eq!(by_status(&ch, "telemetry"), expected);

    // Continuing a finished import reads only what was created since: nothing.
    let rest = run(args).await;
    assert_eq!(rest.code, 0, "{}", rest.report);
    assert_eq!(rest.report["read_this_run"], 0);
    assert_eq!(rest.report["read"], first.report["read"]);
    assert_eq!(snapshot(&ch, "telemetry"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_import_killed_and_resumed_ends_like_one_clean_run() {
    let pb = PocketBaseServer::start().expect("pocketbase");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let token = superuser_token(&pb).await;
    pb_collection(&pb, &token).await;
    let statuses = [
        "installing",
        "success",
        "failed",
        "aborted",
        "unknown",
        "configuring",
    ];
    let records: Vec<Value> = (0..600)
        .map(|n| {
            // Every tenth install has a second record.
            let id = format!("k{}", if n % 10 == 9 { n - 1 } else { n });
            pb_record(
                &id,
                statuses[n % statuses.len()],
                json!({"exit_code": n % 3, "nsapp": format!("app{}", n % 40)}),
            )
        })
        .collect();
    pb_fill(&pb, &token, &records).await;
    let mut args = pb_args(&pb, &["--page-size", "10", "--batch-size", "20"]);
    args.extend(strings(&["--password", SUPERUSER_PASSWORD]));
    let (clean, _) = kill_and_resume(&ch, dir.path(), &args, records.len() as u64).await;
    assert_eq!(clean.report["read"], 600);
    assert_eq!(clean.report["installs"], 540);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_problems_end_with_their_exit_code() {
    let pb = PocketBaseServer::start().expect("pocketbase");
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let token = superuser_token(&pb).await;
    pb_collection(&pb, &token).await;
    let dir = dir.path();
    let check = |args: Vec<String>, password: &'static str, expected: i32| {
        let mut cmd = command(&ch, "telemetry", dir, &args);
        cmd.env("PB_PASSWORD", password);
        async move {
            let run = import(cmd, dir).await;
            assert_eq!(run.code, expected, "{args:?}: {}", run.report);
        }
    };
    // A wrong password, a missing collection: the source cannot be read.
    check(pb_args(&pb, &[]), "wrong-password", 3).await;
    check(
        pb_args(&pb, &["--collection", "nothing_here"]),
        SUPERUSER_PASSWORD,
        3,
    )
    .await;
    // The checkpoint of another source is not used.
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        r#"{"version":1,"source":"file x","cursor":{"kind":"start"},"position":0,"totals":{"read":0,"written":0,"installs":0,"rejected":{}},"saved_at":"2025-01-01T00:00:00Z"}"#,
    )
    .expect("state");
    check(
        pb_args(&pb, &["--state", &state.display().to_string()]),
        SUPERUSER_PASSWORD,
        1,
    )
    .await;
    // A target that does not answer, after --retry-for-secs.
    let mut cmd = command(
        &ch,
        "telemetry",
        dir,
        &pb_args(&pb, &["--retry-for-secs", "1"]),
    );
    cmd.env("PB_PASSWORD", SUPERUSER_PASSWORD).env(
        "CLICKHOUSE_URL",
        format!("http://127.0.0.1:{}", testkit::free_port().expect("port")),
    );
    assert_eq!(import(cmd, dir).await.code, 4);
    // An empty collection is a complete import of nothing.
    let mut cmd = command(&ch, "telemetry", dir, &pb_args(&pb, &["--restart"]));
    cmd.env("PB_PASSWORD", SUPERUSER_PASSWORD);
    let run = import(cmd, dir).await;
    assert_eq!((run.code, run.report["read"].as_u64()), (0, Some(0)));
}

// ---------------------------------------------------------------- ClickHouse

/// `telemetry_db.telemetry` as the later deployments made it (with `DateTime`: ClickHouse 18.16 has no
/// `DateTime64`), sorted by something else than the importer's key.
const SOURCE_TABLE: &str = "CREATE TABLE telemetry_db.telemetry (
    id UUID, nsapp String, type String, status String, method String, created DateTime,
    core_count UInt16, ct_type UInt8, disk_size UInt32, ram_size UInt32, exit_code Int16, error String,
    error_category String, os_type String, os_version String, pve_version String, random_id String,
    execution_id String, repo_source String, repo_slug String, cpu_vendor String, cpu_model String,
    gpu_vendor String, gpu_model String, gpu_passthrough String, ram_speed String,
    install_duration UInt32, has_arm UInt8
) ENGINE = MergeTree PARTITION BY toYYYYMM(created) ORDER BY (nsapp, created)";

/// A row of the source table: one received event.
fn ch_row(n: u32, install: &str, status: &str, at: &str, extra: Value) -> Value {
    let mut row = json!({
        "id": format!("00000000-0000-4000-8000-{n:012}"), "nsapp": "nginx", "type": "lxc",
        "status": status, "method": "default", "created": at, "core_count": 2, "ct_type": 1,
        "disk_size": 4, "ram_size": 1024, "exit_code": 0, "error": "", "error_category": "",
        "os_type": "debian", "os_version": "12", "pve_version": "8.3.0", "random_id": install,
        "execution_id": install, "repo_source": "ProxmoxVE", "repo_slug": "", "cpu_vendor": "amd",
        "cpu_model": "", "gpu_vendor": "", "gpu_model": "", "gpu_passthrough": "", "ram_speed": "",
        "install_duration": 0, "has_arm": 0
    });
    for (k, v) in extra.as_object().expect("object") {
        row[k] = v.clone();
    }
    row
}

fn ch_source(ch: &ClickHouseServer, rows: &[Value]) {
    ch.query("CREATE DATABASE IF NOT EXISTS telemetry_db")
        .expect("database");
    ch.query(SOURCE_TABLE).expect("table");
    for chunk in rows.chunks(1000) {
        let lines: Vec<String> = chunk.iter().map(Value::to_string).collect();
        ch.query(&format!(
            "INSERT INTO telemetry_db.telemetry FORMAT JSONEachRow\n{}",
            lines.join("\n")
        ))
        .expect("insert");
    }
}

fn ch_args(ch: &ClickHouseServer, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "clickhouse",
        "--url",
        &ch.url(),
        "--table",
        "telemetry_db.telemetry",
    ]);
    args.extend(strings(extra));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rows_become_events_and_merge_into_installs() {
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    // (row, the install and the status it must end with; None: rejected)
    let table: Vec<(Value, Option<(&str, &str)>)> = vec![
        (
            ch_row(1, "ok", "installing", "2025-01-10 10:00:00", json!({})),
            Some(("ok", "success")),
        ),
        // The script's retry of the same installing event, stored again a second later.
        (
            ch_row(2, "ok", "installing", "2025-01-10 10:00:01", json!({})),
            Some(("ok", "success")),
        ),
        (
            ch_row(
                3,
                "ok",
                "validation",
                "2025-01-10 10:00:10",
                json!({"core_count": 0}),
            ),
            Some(("ok", "success")),
        ),
        (
            ch_row(
                4,
                "ok",
                "success",
                "2025-01-10 10:02:00",
                json!({"install_duration": 120}),
            ),
            Some(("ok", "success")),
        ),
        (
            ch_row(5, "fail", "installing", "2025-01-31 23:59:59", json!({})),
            Some(("fail", "failed")),
        ),
        (
            ch_row(
                6,
                "fail",
                "failed",
                "2025-02-01 00:03:00",
                json!({"exit_code": 100, "error": "E: broken packages"}),
            ),
            Some(("fail", "failed")),
        ),
        (
            ch_row(
                7,
                "fail",
                "failed",
                "2025-02-01 00:03:01",
                json!({"exit_code": 100, "error": "E: broken packages"}),
            ),
            Some(("fail", "failed")),
        ),
        (
            ch_row(8, "abort", "installing", "2025-02-02 08:00:00", json!({})),
            Some(("abort", "aborted")),
        ),
        (
            ch_row(
                9,
                "abort",
                "failed",
                "2025-02-02 08:01:00",
                json!({"exit_code": 130}),
            ),
            Some(("abort", "aborted")),
        ),
        (
            ch_row(10, "unk", "installing", "2025-02-03 08:00:00", json!({})),
            Some(("unk", "unknown")),
        ),
        (
            ch_row(
                11,
                "unk",
                "unknown",
                "2025-02-03 09:00:00",
                json!({"exit_code": 1}),
            ),
            Some(("unk", "unknown")),
        ),
        (
            ch_row(12, "stuck", "installing", "2025-02-04 08:00:00", json!({})),
            Some(("stuck", "installing")),
        ),
        (
            ch_row(13, "conf", "installing", "2025-02-05 08:00:00", json!({})),
            Some(("conf", "configuring")),
        ),
        (
            ch_row(14, "conf", "configuring", "2025-02-05 08:01:00", json!({})),
            Some(("conf", "configuring")),
        ),
        (
            ch_row(15, "val", "validation", "2025-02-06 08:00:00", json!({})),
            Some(("val", "validation")),
        ),
        (
            ch_row(
                16,
                "tool",
                "success",
                "2025-03-01 12:00:00",
                json!({"type": "pve", "nsapp": "Kernel Clean"}),
            ),
            Some(("tool", "success")),
        ),
        (
            ch_row(
                17,
                "rnd",
                "success",
                "2025-03-02 12:00:00",
                json!({"execution_id": ""}),
            ),
            Some(("rnd", "success")),
        ),
        // Two rows at the same second: the id orders them.
        (
            ch_row(18, "same", "installing", "2025-03-03 12:00:00", json!({})),
            Some(("same", "success")),
        ),
        (
            ch_row(19, "same", "success", "2025-03-03 12:00:00", json!({})),
            Some(("same", "success")),
        ),
        // Broken rows.
        (
            ch_row(
                20,
                "b1",
                "success",
                "2025-03-04 12:00:00",
                json!({"nsapp": ""}),
            ),
            None,
        ),
        (
            ch_row(
                21,
                "b2",
                "failed",
                "2025-03-04 12:00:01",
                json!({"exit_code": -1}),
            ),
            None,
        ),
        (
            ch_row(
                22,
                "b3",
                "success",
                "2025-03-04 12:00:02",
                json!({"type": "container"}),
            ),
            None,
        ),
    ];
    let rows: Vec<Value> = table.iter().map(|(r, _)| r.clone()).collect();
    ch_source(&ch, &rows);
    let installs: Vec<(&str, &str)> = table.iter().filter_map(|(_, e)| *e).collect();
    let expected = expected_by_status(&installs);

    let args = ch_args(&ch, &["--chunk-rows", "4", "--batch-size", "3"]);
    let first = import(command(&ch, "telemetry", dir.path(), &args), dir.path()).await;
    assert_eq!(first.code, 0, "{}", first.report);
    assert_eq!(first.report["read"], rows.len() as u64);
    assert_eq!(first.report["written"], installs.len() as u64);
    assert_eq!(first.report["installs"], expected.values().sum::<u64>());
    assert_eq!(
        rejected(&first.report),
        kinds(&[
            ("invalid_field:exit_code", 1),
            ("invalid_field:type", 1),
            ("missing_field:nsapp", 1)
        ])
    );
    assert_eq!(by_status(&ch, "telemetry"), expected);
    // Every row is an event; the retried ones merged into their install.
    assert_eq!(
        ch_count(
            &ch,
            "SELECT events FROM telemetry.installs_final WHERE execution_id = 'ok'"
        ),
        4
    );
    // An install starts when its first row was received.
    assert_eq!(
        ch_count(
            &ch,
            "SELECT toUnixTimestamp(started_at) FROM telemetry.installs_final WHERE execution_id = 'fail'"
        ),
        ch_count(
            &ch,
            "SELECT toUnixTimestamp(min(created)) FROM telemetry_db.telemetry WHERE execution_id = 'fail'"
        )
    );

    let before = snapshot(&ch, "telemetry");
    let mut again_args = args.clone();
    again_args.push("--restart".into());
    let again = import(
        command(&ch, "telemetry", dir.path(), &again_args),
        dir.path(),
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.report);
    for key in [
        "read",
        "installs",
        "written",
        "duplicates",
        "rejected_by_kind",
    ] {
        assert_eq!(again.report[key], first.report[key], "{key}");
    }
    assert_eq!(snapshot(&ch, "telemetry"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_import_killed_and_resumed_ends_like_one_clean_run() {
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let statuses = ["installing", "validation", "success", "failed", "unknown"];
    let rows: Vec<Value> = (0..600u32)
        .map(|n| {
            let install = format!("x{}", n / 3);
            let at = format!(
                "2025-{:02}-{:02} {:02}:00:{:02}",
                1 + n % 6,
                1 + n % 28,
                n % 24,
                n % 60
            );
            ch_row(
                n,
                &install,
                statuses[(n % 5) as usize],
                &at,
                json!({"exit_code": n % 4}),
            )
        })
        .collect();
    ch_source(&ch, &rows);
    let args = ch_args(&ch, &["--chunk-rows", "70", "--batch-size", "20"]);
    let (clean, _) = kill_and_resume(&ch, dir.path(), &args, rows.len() as u64).await;
    assert_eq!(clean.report["read"], 600);
    assert_eq!(clean.report["installs"], 200);
}

// ---------------------------------------------------------------- JSON lines

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_are_imported_resumed_and_imported_again_unchanged() {
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let lines = [
        // A PocketBase record export.
        r#"{"id":"p1","created":"2025-04-01 10:00:00.000Z","random_id":"j1","execution_id":"j1","type":"lxc","nsapp":"gitea","status":"installing","disk_size":8,"error":""}"#,
        // Bodies as the scripts sent them, with their reception time.
        r#"{"received_at":"2025-04-01T10:05:00Z","random_id":"j1","type":"lxc","nsapp":"gitea","status":"success","install_duration":300}"#,
        "",
        r#"{"created":1743501600,"random_id":"j2","type":"vm","nsapp":"haos","status":"failed","exit_code":137}"#,
        // A script bug of contract §4, repaired as at the edge.
        r#"{"created":"2025-04-01 11:00:00","random_id":"j3","type":"lxc","nsapp":"pihole","status":"installing","disk_size": 4G}"#,
        // Broken lines.
        r#"{"random_id":"j4","type":"lxc","nsapp":"x","status":"success"}"#,
        "{not json",
        r#"{"created":"2025-04-01 12:00:00Z","random_id":"j5","type":"lxc","nsapp":"","status":"success"}"#,
    ];
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("file");
    let args = strings(&["file", &path.display().to_string(), "--batch-size", "2"]);
    let first = import(command(&ch, "telemetry", dir.path(), &args), dir.path()).await;
    assert_eq!(first.code, 0, "{}", first.report);
    assert_eq!(first.report["read"], 7);
    assert_eq!(
        rejected(&first.report),
        kinds(&[
            ("invalid_json", 1),
            ("missing_field:created", 1),
            ("missing_field:nsapp", 1)
        ])
    );
    assert_eq!(
        by_status(&ch, "telemetry"),
        expected_by_status(&[("j1", "success"), ("j2", "failed"), ("j3", "installing")])
    );
    let j3 = ch_rows(
        &ch,
        "SELECT disk_size, rescued FROM telemetry.events_final WHERE execution_id = 'j3'",
    );
    assert_eq!(j3[0]["disk_size"], 4);
    assert_eq!(j3[0]["rescued"], json!(["unit_suffix"]));
    let before = snapshot(&ch, "telemetry");
    let mut again_args = args.clone();
    again_args.push("--restart".into());
    let again = import(
        command(&ch, "telemetry", dir.path(), &again_args),
        dir.path(),
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.report);
    assert_eq!(snapshot(&ch, "telemetry"), before);

    // Lines appended later are all a second run reads.
    let mut more = lines.join("\n");
    more.push_str(
        "\n{\"created\":\"2025-04-02 10:00:00Z\",\"random_id\":\"j6\",\"type\":\"lxc\",\"nsapp\":\"n8n\",\"status\":\"success\"}\n",
    );
    std::fs::write(&path, more).expect("append");
    let rest = import(command(&ch, "telemetry", dir.path(), &args), dir.path()).await;
    assert_eq!(rest.code, 0, "{}", rest.report);
    assert_eq!(rest.report["read_this_run"], 1);
    assert_eq!(by_status(&ch, "telemetry")["success"], 2);

    // A larger file, killed in the middle and resumed.
    let big = dir.path().join("big.jsonl");
    let body: String = (0..600)
        .map(|n| {
            format!(
                "{{\"created\":{},\"random_id\":\"big{}\",\"type\":\"lxc\",\"nsapp\":\"app{}\",\"status\":\"{}\"}}\n",
                1_735_689_600 + n * 37,
                n / 2,
                n % 50,
                if n % 2 == 0 { "installing" } else { "success" }
            )
        })
        .collect();
    std::fs::write(&big, &body).expect("big");
    let args = strings(&["file", &big.display().to_string(), "--batch-size", "20"]);
    let (clean, _) = kill_and_resume(&ch, dir.path(), &args, body.len() as u64).await;
    assert_eq!(clean.report["installs"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_the_batch_in_hand_and_the_same_command_continues() {
    let ch = ClickHouseServer::start().expect("clickhouse");
    let dir = tempfile::tempdir().expect("dir");
    let path: PathBuf = dir.path().join("h.jsonl");
    let body: String = (0..2_000)
        .map(|n| {
            format!(
                "{{\"created\":{},\"random_id\":\"t{n}\",\"type\":\"lxc\",\"nsapp\":\"a\",\"status\":\"success\"}}\n",
                1_735_689_600 + n
            )
        })
        .collect();
    std::fs::write(&path, &body).expect("file");
    let state = dir.path().join("state.json");
    let args = strings(&[
        "file",
        &path.display().to_string(),
        "--batch-size",
        "50",
        "--state",
        &state.display().to_string(),
    ]);
    let mut child = command(&ch, "telemetry", dir.path(), &args)
        .spawn()
        .expect("start");
    testkit::poll_until("a first checkpoint", Duration::from_secs(60), || async {
        position(&state).is_some_and(|p| p > 0)
    })
    .await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .expect("wait")
        .code();
    assert_eq!(code, Some(5));
    let stopped_at = position(&state).expect("checkpoint");
    assert!(stopped_at < body.len() as u64, "finished before SIGTERM");
    let run = import(command(&ch, "telemetry", dir.path(), &args), dir.path()).await;
    assert_eq!(run.code, 0, "{}", run.report);
    assert_eq!(run.report["installs"], 2_000);
    assert_eq!(
        ch_count(&ch, "SELECT count() FROM telemetry.installs_final"),
        2_000
    );
}
