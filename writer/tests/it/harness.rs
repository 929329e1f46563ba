//! Starts the writer in-process (the same `run` that `main` calls) or as its real binary (to kill it with
//! SIGKILL) against real nats-server, ClickHouse and PocketBase processes started by `testkit`, builds
//! events the way the edge does (`schema::validate`), publishes them with `Nats-Msg-Id`, and reads back
//! what each store holds.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use schema::merge::{merge, InstallState};
use schema::{Event, Reception};
use serde_json::Value;
use testkit::clickhouse::ClickHouseServer;
use testkit::pocketbase::{PocketBaseServer, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use testkit::poll_until;
use testkit::{fixtures, NatsServer, Process, Service};
use time::OffsetDateTime;
use uuid::Uuid;
use writer::config::{Secret, SinkChoice};
use writer::{Config, Statuses};

/// A writer configuration for tests: short waits so that faults resolve in seconds.
pub fn config(
    nats: &NatsServer,
    ch: Option<&ClickHouseServer>,
    pb: Option<&PocketBaseServer>,
) -> Config {
    let mut config = Config::for_nats(&nats.url());
    config.sink = match (ch.is_some(), pb.is_some()) {
        (true, true) => SinkChoice::All,
        (true, false) => SinkChoice::Clickhouse,
        (false, true) => SinkChoice::Pocketbase,
        (false, false) => panic!("a writer needs a store"),
    };
    if let Some(ch) = ch {
        config.clickhouse_url = ch.url();
    }
    if let Some(pb) = pb {
        config.pb_url = pb.url();
    }
    config.pb_email = SUPERUSER_EMAIL.into();
    config.pb_password = Secret::new(SUPERUSER_PASSWORD);
    // The test servers are the tests' own: the writer may enable the batch API there.
    config.pb_allow_settings_changes = true;
    config.batch_size = 500;
    config.batch_max_wait_ms = 50;
    config.write_timeout_secs = 5;
    config.ack_wait_secs = 8;
    config.retry_max_delay_ms = 500;
    config.lease_ttl_secs = 3;
    config.shutdown_timeout_secs = 10;
    config
}

/// A writer running in this process.
pub struct Writer {
    pub statuses: Statuses,
    service: Service,
}

pub async fn start_writer(config: Config) -> Writer {
    let client = fleet::nats::connect(&config.common.nats_url, "test-writer")
        .await
        .expect("connect");
    let statuses = Statuses::default();
    let metrics = testkit::recorder(writer::metrics::install_recorder);
    let service =
        Service::spawn(|stop| writer::run(config, client, Some(metrics), statuses.clone(), stop));
    Writer { statuses, service }
}

impl Writer {
    /// Stops the writer and returns how long `run` took to return.
    pub async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.service.stop().await.expect("run");
        started.elapsed()
    }
}

/// The writer binary, killable with SIGKILL.
pub struct WriterProcess {
    process: Process,
    pub ops_port: u16,
}

impl WriterProcess {
    pub fn start(config: &Config, extra_env: &[(&str, &str)]) -> WriterProcess {
        let ops_port = testkit::free_port().expect("port");
        let sink = match config.sink {
            SinkChoice::Clickhouse => "clickhouse",
            SinkChoice::Pocketbase => "pocketbase",
            SinkChoice::All => "all",
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telemetry-writer"));
        cmd.env_clear()
            .env("NATS_URL", &config.common.nats_url)
            .env("WRITER_SINK", sink)
            .env("CLICKHOUSE_URL", &config.clickhouse_url)
            .env("CLICKHOUSE_DATABASE", &config.clickhouse_database)
            .env("PB_URL", &config.pb_url)
            .env("PB_EMAIL", &config.pb_email)
            .env("PB_PASSWORD", config.pb_password.expose())
            .env("PB_TARGET_COLLECTION", &config.pb_target_collection)
            .env(
                "PB_ALLOW_SCHEMA_CHANGES",
                config.pb_allow_schema_changes.to_string(),
            )
            .env(
                "PB_ALLOW_SETTINGS_CHANGES",
                config.pb_allow_settings_changes.to_string(),
            )
            .env("BATCH_SIZE", config.batch_size.to_string())
            .env("BATCH_MAX_WAIT_MS", config.batch_max_wait_ms.to_string())
            .env("WRITE_TIMEOUT_SECS", config.write_timeout_secs.to_string())
            .env("ACK_WAIT_SECS", config.ack_wait_secs.to_string())
            .env("RETRY_MAX_DELAY_MS", config.retry_max_delay_ms.to_string())
            .env("LEASE_TTL_SECS", config.lease_ttl_secs.to_string())
            .env("OPS_ADDR", format!("127.0.0.1:{ops_port}"))
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        WriterProcess {
            process: Process::spawn(&mut cmd),
            ops_port,
        }
    }

    /// SIGKILL: no batch is finished, no ack sent, no lease released.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Freezes (`true`, SIGSTOP) or thaws (`false`, SIGCONT) the process, like a long pause of its host.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// The body of `/metrics`; empty while the process is not serving yet.
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.ops_port)).await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// An accepted event and the `Nats-Msg-Id` the edge would publish it with.
#[derive(Debug, Clone)]
pub struct Published {
    pub event: Event,
    pub msg_id: String,
}

/// Validates a body like the edge does, received at `at` with a fresh time-ordered id.
pub fn accept(body: &[u8], at: OffsetDateTime) -> Published {
    let accepted = schema::validate(
        body,
        Reception {
            event_id: Uuid::now_v7(),
            received_at: at,
        },
    )
    .unwrap_or_else(|e| panic!("body rejected: {e}"));
    Published {
        event: accepted.event,
        msg_id: accepted.msg_id,
    }
}

/// The accepted part of the payload corpus, in file order, received 1 s apart.
pub fn corpus(start: OffsetDateTime) -> Vec<Published> {
    let mut out = Vec::new();
    for (i, name) in fixtures::names().iter().enumerate() {
        let at = start + time::Duration::seconds(i as i64);
        let Ok(accepted) = schema::validate(
            &fixtures::read(name),
            Reception {
                event_id: Uuid::now_v7(),
                received_at: at,
            },
        ) else {
            continue;
        };
        out.push(Published {
            event: accepted.event,
            msg_id: accepted.msg_id,
        });
    }
    out
}

/// Simulated installs: installing with hardware, progress pings (some after the final), a final of
/// every kind, a shrinking-body retry of some finals that arrived as a second event, some finals
/// received before their installing. `seed` makes it reproducible.
pub fn simulated(installs: usize, seed: u64, start: OffsetDateTime) -> Vec<Published> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let apps = ["jellyfin", "nginx", "Home Assistant", "docker", "pihole"];
    let finals = [
        ("success", 0),
        ("failed", 100),
        ("failed", 28),
        ("unknown", 1),
        ("aborted", 130),
    ];
    let cpus = ["intel", "amd", "unknown"];
    let mut out = Vec::new();
    for n in 0..installs {
        let id = format!("sim-{seed}-{n}");
        let app = apps[rng.usize(..apps.len())];
        let base = start + time::Duration::milliseconds(rng.i64(0..600_000));
        let at = |offset_ms: i64| base + time::Duration::milliseconds(offset_ms);
        let disk = rng.u32(2..64);
        let cpu = cpus[rng.usize(..cpus.len())];
        let installing = serde_json::json!({
            "random_id": id, "execution_id": id, "type": "lxc", "nsapp": app, "status": "installing",
            "disk_size": disk, "core_count": 2, "ram_size": 2048, "os_type": "debian", "os_version": "12",
            "cpu_vendor": cpu, "gpu_vendor": "unknown", "gpu_passthrough": "none", "method": "default"
        });
        let ping = |status: &str| serde_json::json!({"random_id": id, "execution_id": id, "type": "lxc", "nsapp": app, "status": status, "cpu_vendor": "unknown"});
        let (status, code) = finals[rng.usize(..finals.len())];
        let final_body = serde_json::json!({
            "random_id": id, "execution_id": id, "type": "lxc", "nsapp": app, "status": status,
            "exit_code": code, "error": if code == 0 { "" } else { "E: something broke\nline 2" },
            "install_duration": if rng.bool() { Some(rng.u32(10..900)) } else { None },
            "cpu_vendor": "amd"
        });
        let final_first = rng.u8(..10) == 0;
        let final_at = if final_first { -5_000 } else { 60_000 };
        out.push(accept(installing.to_string().as_bytes(), at(0)));
        out.push(accept(
            ping("validation").to_string().as_bytes(),
            at(10_000),
        ));
        out.push(accept(final_body.to_string().as_bytes(), at(final_at)));
        if rng.bool() {
            // A ping from inside the container that arrives after the final.
            out.push(accept(
                ping("configuring").to_string().as_bytes(),
                at(70_000),
            ));
        }
        if status != "success" && rng.u8(..4) == 0 {
            // The shrinking retry of the final, accepted after the duplicate window as its own event.
            let mut retry = final_body.clone();
            retry["error"] = "E: something broke".into();
            let mut p = accept(retry.to_string().as_bytes(), at(200_000));
            p.msg_id.push_str(":retry");
            out.push(p);
        }
    }
    out
}

/// The state every store must show: `schema::merge` folded over the events, by execution id.
pub fn expected(events: &[Published]) -> BTreeMap<String, InstallState> {
    let mut states: BTreeMap<String, InstallState> = BTreeMap::new();
    for p in events {
        let state = states.remove(&p.event.execution_id);
        states.insert(p.event.execution_id.clone(), merge(state, &p.event));
    }
    states
}

/// Publishes to the event stream with `Nats-Msg-Id`, at most 256 PubAcks pending at once. Returns the
/// events the stream stored (a repeated msg id inside the duplicate window is dropped, as for the edge).
pub async fn publish(js: &jetstream::Context, events: &[Published]) -> Vec<Published> {
    futures::stream::iter(events.iter().cloned())
        .map(|p| async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(schema::names::MSG_ID_HEADER, p.msg_id.as_str());
            let ack = js
                .publish_with_headers(p.event.subject(), headers, p.event.to_json().into())
                .await
                .expect("publish")
                .await
                .expect("puback");
            (!ack.duplicate).then_some(p)
        })
        .buffered(256)
        .filter_map(|p| async move { p })
        .collect()
        .await
}

/// Creates the event stream as the edge would.
pub async fn event_stream(js: &jetstream::Context) {
    let settings =
        schema::names::events_stream(schema::names::DEFAULT_EVENTS_MAX_AGE, 1024 * 1024 * 1024, 1);
    fleet::nats::ensure_stream(js, &settings)
        .await
        .expect("event stream");
}

pub async fn jetstream(nats: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    jetstream::new(client)
}

/// Rows of a ClickHouse query as JSON objects.
pub fn ch_rows(ch: &ClickHouseServer, sql: &str) -> Vec<Value> {
    ch.query(&format!("{sql} FORMAT JSONEachRow"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect()
}

/// A single number from ClickHouse; 0 while the query fails (e.g. the server is restarting).
pub fn ch_count(ch: &ClickHouseServer, sql: &str) -> u64 {
    ch.query(sql)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until ClickHouse holds `events` distinct events and `installs` installs. An INSERT commits the
/// events part before its materialized view's installs part, so a reader can see the events a moment
/// before their installs: both counts are waited for.
pub async fn clickhouse_holds(
    what: &str,
    timeout: Duration,
    ch: &ClickHouseServer,
    events: usize,
    installs: usize,
) {
    poll_until(what, timeout, async || {
        ch_count(ch, "SELECT count() FROM telemetry.events_final") == events as u64
            && ch_count(ch, "SELECT count() FROM telemetry.installs_final") == installs as u64
    })
    .await;
}

/// The PocketBase sink of a config, for reading records back.
pub fn pb_reader(config: &Config) -> writer::pocketbase::PocketBaseSink {
    writer::pocketbase_sink(config).expect("pb client")
}

/// Checks one `installs_final` row against the merged state.
pub fn check_ch_row(row: &Value, state: &InstallState) {
    let id = &state.execution_id;
    let outcome = state.outcome.as_ref();
    let num = |v: Option<u64>| v.map(Value::from).unwrap_or(Value::Null);
    let text = |v: Option<&str>| v.map(Value::from).unwrap_or(Value::Null);
    assert_eq!(row["status"], state.status.value.as_str(), "{id} status");
    assert_eq!(row["nsapp"], state.nsapp.value.as_str(), "{id} nsapp");
    assert_eq!(
        row["random_id"],
        state.random_id.value.as_str(),
        "{id} random_id"
    );
    assert_eq!(row["type"], state.kind.value.as_str(), "{id} type");
    assert_eq!(
        row["is_final"],
        u64::from(state.is_final()),
        "{id} is_final"
    );
    assert_eq!(
        row["exit_code"],
        num(outcome.and_then(|o| o.exit_code).map(u64::from)),
        "{id} exit_code"
    );
    assert_eq!(
        row["error_category"],
        text(outcome.and_then(|o| o.error_category).map(|c| c.as_str())),
        "{id} error_category"
    );
    assert_eq!(
        row["error"],
        text(outcome.and_then(|o| o.error.as_deref())),
        "{id} error"
    );
    assert_eq!(
        row["disk_size"],
        num(state.disk_size.as_ref().map(|s| u64::from(s.value))),
        "{id} disk_size"
    );
    assert_eq!(
        row["cpu_vendor"],
        text(state.cpu_vendor.as_ref().map(|s| s.value.as_str())),
        "{id} cpu_vendor"
    );
    assert_eq!(
        row["os_type"],
        text(state.os_type.as_ref().map(|s| s.value.as_str())),
        "{id} os_type"
    );
    assert_eq!(
        row["duration"],
        num(writer::pocketbase::duration_secs(state).map(u64::from)),
        "{id} duration"
    );
}

/// Whether `records` hold every install of `all`, each with every one of its events merged (its stored
/// merge state is the expected one). A record is there from its install's first event on; wait on this,
/// not on the count alone, before checking the records.
pub fn pb_all_merged(records: &[Value], all: &BTreeMap<String, InstallState>) -> bool {
    records.len() == all.len()
        && records.iter().all(|record| {
            let id = record["execution_id"].as_str().unwrap_or("");
            serde_json::from_value::<InstallState>(record["merge_state"].clone()).ok()
                == all.get(id).cloned()
        })
}

/// Checks one PocketBase record against the merged state.
pub fn check_pb_record(record: &Value, state: &InstallState) {
    let id = &state.execution_id;
    let outcome = state.outcome.as_ref();
    assert_eq!(record["status"], state.status.value.as_str(), "{id} status");
    assert_eq!(record["nsapp"], state.nsapp.value.as_str(), "{id} nsapp");
    assert_eq!(
        record["exit_code"].as_u64().unwrap_or(0),
        outcome
            .and_then(|o| o.exit_code)
            .map(u64::from)
            .unwrap_or(0),
        "{id} exit_code"
    );
    assert_eq!(
        record["error_category"].as_str().unwrap_or(""),
        outcome
            .and_then(|o| o.error_category)
            .map(|c| c.as_str())
            .unwrap_or(""),
        "{id} error_category"
    );
    assert_eq!(
        record["disk_size"].as_u64().unwrap_or(0),
        state
            .disk_size
            .as_ref()
            .map(|s| u64::from(s.value))
            .unwrap_or(0),
        "{id} disk_size"
    );
    assert_eq!(
        record["cpu_vendor"].as_str().unwrap_or(""),
        state
            .cpu_vendor
            .as_ref()
            .map(|s| s.value.as_str())
            .unwrap_or(""),
        "{id} cpu_vendor"
    );
    assert_eq!(
        record["install_duration"].as_u64().unwrap_or(0),
        writer::pocketbase::duration_secs(state)
            .map(u64::from)
            .unwrap_or(0),
        "{id} duration"
    );
    let stored: InstallState =
        serde_json::from_value(record["merge_state"].clone()).expect("merge_state");
    assert_eq!(&stored, state, "{id} merge_state");
}

/// A superuser token of the test PocketBase (for tests that shape collections and settings by hand).
pub async fn superuser_token(pb: &PocketBaseServer) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/collections/_superusers/auth-with-password",
            pb.url()
        ))
        .json(&serde_json::json!({"identity": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    answer["token"].as_str().expect("token").to_string()
}
