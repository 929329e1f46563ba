//! The writer on the running service's PocketBase collection (`telemetry`, made here by hand as it stands
//! in production: the field names of contract §3, `created`/`updated`, `error_category` a select of the
//! service's values, a unique index on `execution_id`; no `merge_state`, `repo_slug`, `has_arm`, `arch`).
//! Without consent the writer changes neither the collection nor `/api/settings` and still merges every
//! status in every order, one request per record; with consent it adds what it listed and writes through
//! the batch API. A collection the writer creates is complete and marked as its own.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use testkit::pocketbase::PocketBaseServer;
use testkit::{poll_until, sample, NatsServer};
use time::OffsetDateTime;
use writer::config::SinkChoice;
use writer::Config;

use crate::harness::*;

/// The values the running service's select allowed (its `allowedErrorCategory`, PocketBase era).
const SERVICE_CATEGORIES: [&str; 15] = [
    "network",
    "storage",
    "dependency",
    "permission",
    "timeout",
    "config",
    "resource",
    "unknown",
    "user_aborted",
    "apt",
    "command_not_found",
    "service",
    "database",
    "signal",
    "proxmox",
];

/// The running service's collection definition.
fn service_collection() -> Value {
    let text = |name: &str| json!({"name": name, "type": "text"});
    let number = |name: &str| json!({"name": name, "type": "number"});
    json!({
        "name": "telemetry",
        "type": "base",
        "fields": [
            text("random_id"), text("execution_id"), text("type"), text("nsapp"), text("status"),
            number("ct_type"), number("disk_size"), number("core_count"), number("ram_size"),
            text("os_type"), text("os_version"), text("pve_version"), text("method"), text("error"),
            number("exit_code"), text("gpu_vendor"), text("gpu_model"), text("gpu_passthrough"),
            text("cpu_vendor"), text("cpu_model"), text("ram_speed"), number("install_duration"),
            {"name": "error_category", "type": "select", "maxSelect": 1, "values": SERVICE_CATEGORIES},
            text("repo_source"),
            {"name": "created", "type": "autodate", "onCreate": true, "onUpdate": false},
            {"name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true},
        ],
        "indexes": ["CREATE UNIQUE INDEX idx_telemetry_execution_id ON telemetry (execution_id)"],
    })
}

/// A superuser client of the test's PocketBase, for what an operator would do by hand.
struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn login(pb: &PocketBaseServer) -> Admin {
        Admin {
            http: reqwest::Client::new(),
            url: pb.url(),
            token: superuser_token(pb).await,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    async fn get(&self, path: &str) -> Value {
        self.send(Method::GET, path, None).await
    }

    /// Every record of `telemetry`, by execution id.
    async fn records(&self) -> BTreeMap<String, Value> {
        let page = self
            .get("/api/collections/telemetry/records?perPage=500&skipTotal=1")
            .await;
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| {
                (
                    r["execution_id"].as_str().expect("id").to_string(),
                    r.clone(),
                )
            })
            .collect()
    }

    /// How many requests PocketBase logged for `url`.
    async fn logged(&self, method: &str, url: &str) -> u64 {
        let filter = format!("data.url='{url}' && data.method='{method}'");
        let page = self
            .get(&format!(
                "/api/logs?perPage=1&filter={}",
                urlencode(&filter)
            ))
            .await;
        page["totalItems"].as_u64().unwrap_or(0)
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A PocketBase-only writer configuration; both consents as given.
fn pb_config(nats: &NatsServer, pb: &PocketBaseServer, consent: bool) -> Config {
    let mut config = config(nats, None, Some(pb));
    config.sink = SinkChoice::Pocketbase;
    config.pb_allow_schema_changes = consent;
    config.pb_allow_settings_changes = consent;
    config
}

/// An event body of install `id` (`random_id` = `execution_id` = id).
fn body(id: &str, status: &str, extra: Value) -> Value {
    let mut body = json!({"random_id": id, "type": "lxc", "nsapp": "jellyfin", "status": status});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn hardware() -> Value {
    json!({"disk_size": 8, "core_count": 2, "ram_size": 2048, "os_type": "debian", "os_version": "12",
           "cpu_vendor": "intel", "gpu_vendor": "unknown", "method": "default", "install_duration": 0,
           "repo_slug": "community-scripts/ProxmoxVE", "has_arm": false, "arch": "amd64"})
}

/// Marks a body sent again after the stream's duplicate window (a script's retry of its final): its
/// own event with a new id, not collapsed by `Nats-Msg-Id`.
const AGAIN: &str = "_again";

fn again(mut body: Value) -> Value {
    body[AGAIN] = json!(true);
    body
}

/// Publishes one step of bodies (each accepted now, in order) and waits until the writer acked every
/// event published so far.
async fn step(
    js: &async_nats::jetstream::Context,
    writer: &Writer,
    published: &mut u64,
    bodies: &[Value],
) {
    let events: Vec<Published> = bodies
        .iter()
        .map(|b| {
            let mut b = b.clone();
            let again = b.as_object_mut().and_then(|o| o.remove(AGAIN)).is_some();
            let mut p = accept(b.to_string().as_bytes(), OffsetDateTime::now_utc());
            if again {
                p.msg_id.push_str(":again");
            }
            p
        })
        .collect();
    *published += publish(js, &events).await.len() as u64;
    let want = *published;
    let status = writer.statuses.pocketbase.clone();
    poll_until(
        "the writer acked the step",
        Duration::from_secs(30),
        || async { status.written.load(Ordering::Relaxed) >= want },
    )
    .await;
}

/// Checks the listed fields of a record.
fn check(records: &BTreeMap<String, Value>, id: &str, want: Value) {
    let record = records.get(id).unwrap_or_else(|| panic!("no record {id}"));
    for (field, value) in want.as_object().expect("object") {
        assert_eq!(&record[field], value, "{id}.{field}: {record}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_the_collection_and_settings_stay_and_every_order_merges() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let admin = Admin::login(&pb).await;
    admin
        .send(Method::POST, "/api/collections", Some(service_collection()))
        .await;
    // An install the running service wrote before the switch: its installing only.
    admin
        .send(
            Method::POST,
            "/api/collections/telemetry/records",
            Some(json!({
                "random_id": "old-1", "execution_id": "old-1", "type": "lxc", "nsapp": "nginx",
                "status": "installing", "ct_type": 1, "disk_size": 32, "core_count": 4, "ram_size": 4096,
                "os_type": "debian", "os_version": "12", "pve_version": "8.2.4", "method": "default",
                "gpu_vendor": "unknown", "gpu_passthrough": "unknown", "cpu_vendor": "amd",
                "repo_source": "ProxmoxVE"
            })),
        )
        .await;
    let collection_before = admin.get("/api/collections/telemetry").await;
    let settings_before = admin.get("/api/settings").await;

    let config = pb_config(&nats, &pb, false);
    let sink = writer::pocketbase_sink(&config).expect("sink");
    sink.prepare().await.expect("prepare");
    assert!(!sink.created_by_fleet());
    assert!(!sink.uses_batch());
    assert_eq!(
        sink.unwritten_fields(),
        ["repo_slug", "has_arm", "arch", "merge_state"]
    );
    assert_eq!(
        sink.listed_changes(),
        [
            "add field repo_slug (text)",
            "add field has_arm (bool)",
            "add field arch (text)",
            "add field merge_state (hidden json)",
            "enable batch API (maxRequests 200, timeout 30 s)",
        ]
    );

    let writer = start_writer(config).await;
    let mut published = 0;
    let long_log = format!("E: first line\n{}\nlast line", "x".repeat(8000));
    let shell = json!({"exit_code": 2, "error": "E: broke", "error_category": "shell", "install_duration": 41});
    // Step 1: what comes first for each install.
    step(
        &js,
        &writer,
        &mut published,
        &[
            body("in-order", "installing", hardware()),
            body("final-first", "failed", json!({"exit_code": 100, "error": "E: apt", "install_duration": 120, "gpu_vendor": "nvidia"})),
            body("retried", "installing", hardware()),
            body("unknown-first", "installing", hardware()),
            body("pings", "installing", hardware()),
            body("aborted", "installing", hardware()),
            body("old-1", "success", json!({"exit_code": 0, "install_duration": 300})),
            body("long-log", "failed", json!({"exit_code": 1, "error": long_log, "error_category": "network"})),
        ],
    )
    .await;
    // Step 2.
    step(
        &js,
        &writer,
        &mut published,
        &[
            body("in-order", "validation", json!({"cpu_vendor": "unknown"})),
            body("final-first", "installing", hardware()),
            body("retried", "failed", shell.clone()),
            body(
                "unknown-first",
                "unknown",
                json!({"exit_code": 5, "error": "E: lost", "install_duration": 50}),
            ),
            body("pings", "configuring", json!({"cpu_vendor": "unknown"})),
            body(
                "aborted",
                "failed",
                json!({"exit_code": 130, "error": "E: ctrl-c", "install_duration": 9}),
            ),
        ],
    )
    .await;
    // Step 3.
    step(
        &js,
        &writer,
        &mut published,
        &[
            body(
                "in-order",
                "success",
                json!({"exit_code": 0, "install_duration": 388}),
            ),
            body(
                "unknown-first",
                "success",
                json!({"exit_code": 0, "install_duration": 77}),
            ),
            body("pings", "validation", json!({})),
        ],
    )
    .await;
    let before_retry = admin.records().await;
    // Step 4: the shrinking retry of a final, a redelivered final, a ping after a final.
    let mut retry = body("retried", "failed", shell.clone());
    retry["error"] = json!("E: broke (cut)");
    step(
        &js,
        &writer,
        &mut published,
        &[
            again(retry),
            body("in-order", "configuring", json!({"cpu_vendor": "unknown"})),
            again(body(
                "final-first",
                "failed",
                json!({"exit_code": 100, "error": "E: apt", "install_duration": 120}),
            )),
        ],
    )
    .await;
    let records = admin.records().await;

    check(
        &records,
        "in-order",
        json!({"status": "success", "exit_code": 0, "error": "", "error_category": "",
               "install_duration": 388, "disk_size": 8, "cpu_vendor": "intel", "os_type": "debian"}),
    );
    check(
        &records,
        "final-first",
        json!({"status": "failed", "exit_code": 100, "error": "E: apt", "error_category": "apt",
               "install_duration": 120, "disk_size": 8, "cpu_vendor": "intel", "gpu_vendor": "nvidia"}),
    );
    check(
        &records,
        "retried",
        json!({"status": "failed", "exit_code": 2, "error": "E: broke", "error_category": "unknown",
               "install_duration": 41, "disk_size": 8}),
    );
    check(
        &records,
        "unknown-first",
        json!({"status": "success", "exit_code": 0, "error": "", "error_category": "",
               "install_duration": 77}),
    );
    check(
        &records,
        "pings",
        json!({"status": "configuring", "cpu_vendor": "intel", "install_duration": 0}),
    );
    check(
        &records,
        "aborted",
        json!({"status": "aborted", "exit_code": 130, "error_category": "user_aborted"}),
    );
    check(
        &records,
        "old-1",
        json!({"status": "success", "nsapp": "nginx", "disk_size": 32, "cpu_vendor": "amd",
               "pve_version": "8.2.4", "install_duration": 300}),
    );
    let cut = records["long-log"]["error"].as_str().expect("error");
    assert!(
        cut.chars().count() <= 5000
            && cut.starts_with("E: first line")
            && cut.ends_with("last line")
    );
    assert_eq!(records.len(), 8, "one record per install");
    // The retry, the redelivery and the late ping changed nothing, not even `updated`.
    for id in ["retried", "in-order", "final-first"] {
        assert_eq!(records[id], before_retry[id], "{id}");
    }
    for record in records.values() {
        for absent in ["merge_state", "repo_slug", "has_arm", "arch"] {
            assert!(record.get(absent).is_none(), "{absent} in {record}");
        }
    }

    // `shell` is not one of the select's values: written as unknown, and counted.
    let metrics = testkit::recorder(writer::metrics::install_recorder).render();
    let replaced = sample(
        &metrics,
        "telemetry_writer_select_replaced_total{sink=\"pocketbase\",field=\"error_category\"}",
    );
    assert_eq!(replaced, 1.0, "{metrics}");

    writer.shutdown().await;
    assert_eq!(
        admin.get("/api/collections/telemetry").await,
        collection_before
    );
    assert_eq!(admin.get("/api/settings").await, settings_before);
    assert_eq!(admin.logged("POST", "/api/batch").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consent_it_adds_what_it_listed_and_writes_through_the_batch_api() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let js = jetstream(&nats).await;
    event_stream(&js).await;
    let admin = Admin::login(&pb).await;
    admin
        .send(Method::POST, "/api/collections", Some(service_collection()))
        .await;
    let before = admin.get("/api/collections/telemetry").await;

    // First without consent: a record without merge_state.
    let writer = start_writer(pb_config(&nats, &pb, false)).await;
    let mut published = 0;
    step(
        &js,
        &writer,
        &mut published,
        &[body("early", "installing", hardware())],
    )
    .await;
    writer.shutdown().await;

    let config = pb_config(&nats, &pb, true);
    let sink = writer::pocketbase_sink(&config).expect("sink");
    sink.prepare().await.expect("prepare");
    let listed = sink.listed_changes();
    assert_eq!(
        listed,
        [
            "add field repo_slug (text)",
            "add field has_arm (bool)",
            "add field arch (text)",
            "add field merge_state (hidden json)",
            "enable batch API (maxRequests 200, timeout 30 s)",
        ]
    );
    assert!(sink.unwritten_fields().is_empty());
    assert!(sink.uses_batch());
    assert!(!sink.created_by_fleet(), "consent does not make it ours");

    // Exactly the listed fields were added; everything else stayed.
    let after = admin.get("/api/collections/telemetry").await;
    let names = |c: &Value| -> Vec<String> {
        c["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["name"].as_str().expect("name").to_string())
            .collect()
    };
    let mut want = names(&before);
    want.extend(["repo_slug", "has_arm", "arch", "merge_state"].map(String::from));
    assert_eq!(names(&after), want);
    assert_eq!(
        after["fields"].as_array().expect("fields")[..want.len() - 4],
        before["fields"].as_array().expect("fields")[..]
    );
    assert_eq!(after["indexes"], before["indexes"]);
    let batch = &admin.get("/api/settings").await["batch"];
    assert_eq!(
        (&batch["enabled"], &batch["maxRequests"], &batch["timeout"]),
        (&json!(true), &json!(200), &json!(30))
    );
    // A second start finds nothing left to change.
    let again = writer::pocketbase_sink(&config).expect("sink");
    again.prepare().await.expect("prepare");
    assert!(
        again.listed_changes().is_empty(),
        "{:?}",
        again.listed_changes()
    );

    let writer = start_writer(config).await;
    // The new writer counts its own acks.
    published = 0;
    step(
        &js,
        &writer,
        &mut published,
        &[
            body(
                "early",
                "success",
                json!({"exit_code": 0, "install_duration": 200}),
            ),
            body("late", "installing", hardware()),
        ],
    )
    .await;
    step(
        &js,
        &writer,
        &mut published,
        &[body(
            "late",
            "failed",
            json!({"exit_code": 1, "error": "E: x", "error_category": "shell"}),
        )],
    )
    .await;
    let records = admin.records().await;
    check(
        &records,
        "early",
        json!({"status": "success", "disk_size": 8, "cpu_vendor": "intel", "install_duration": 200,
               "repo_slug": "", "arch": ""}),
    );
    assert!(
        records["early"]["merge_state"].is_object(),
        "merge_state written on the next change"
    );
    check(
        &records,
        "late",
        json!({"status": "failed", "error_category": "unknown", "repo_slug": "community-scripts/ProxmoxVE",
               "arch": "amd64", "has_arm": false}),
    );
    assert!(records["late"]["merge_state"].is_object());
    poll_until(
        "pocketbase logged the writer's batch calls",
        Duration::from_secs(30),
        || async { admin.logged("POST", "/api/batch").await > 0 },
    )
    .await;
    writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_the_writer_creates_is_complete_and_its_own() {
    let nats = NatsServer::start().expect("nats");
    let pb = PocketBaseServer::start().expect("pocketbase");
    let admin = Admin::login(&pb).await;
    let settings_before = admin.get("/api/settings").await;

    let mut config = pb_config(&nats, &pb, false);
    config.pb_target_collection = "fleet_installs".into();
    let ours = writer::pocketbase_sink(&config).expect("sink");
    assert!(!ours.created_by_fleet(), "unknown before prepare");
    ours.prepare().await.expect("prepare");
    assert!(ours.created_by_fleet());
    assert!(ours.unwritten_fields().is_empty());
    // Nothing to change on its own collection; the settings still need consent.
    assert_eq!(
        ours.listed_changes(),
        ["enable batch API (maxRequests 200, timeout 30 s)"]
    );
    assert!(!ours.uses_batch());
    assert_eq!(admin.get("/api/settings").await, settings_before);
    // The marker survives a restart; a collection made by hand does not carry it.
    let again = writer::pocketbase_sink(&config).expect("sink");
    again.prepare().await.expect("prepare");
    assert!(again.created_by_fleet());
    admin
        .send(Method::POST, "/api/collections", Some(service_collection()))
        .await;
    config.pb_target_collection = "telemetry".into();
    let theirs = writer::pocketbase_sink(&config).expect("sink");
    theirs.prepare().await.expect("prepare");
    assert!(!theirs.created_by_fleet());

    // A batch API the operator enabled is used without consent, within its limits, and left as it is.
    admin
        .send(
            Method::PATCH,
            "/api/settings",
            Some(json!({"batch": {"enabled": true, "maxRequests": 50, "timeout": 3}})),
        )
        .await;
    let settings_before = admin.get("/api/settings").await;
    let limited = writer::pocketbase_sink(&config).expect("sink");
    limited.prepare().await.expect("prepare");
    assert!(limited.uses_batch());
    assert!(limited.listed_changes().contains(
        &"raise batch API limits (maxRequests 50 -> 200, timeout 3 -> 30 s)".to_string()
    ));
    assert_eq!(admin.get("/api/settings").await, settings_before);
}
