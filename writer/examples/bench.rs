//! Benchmark driver of `deploy/bench/writer.sh` (kept out of the production binary). Each mode prints one
//! `BENCH key=value ...` line:
//!
//! - `fill NATS_URL N`: publishes N synthetic events (N/4 installs of 4 events) to the event stream.
//! - `ch-raw CH_URL N BATCH`: inserts the same N rows with the `clickhouse` crate alone (database
//!   `bench_raw`, same tables and materialized view), BATCH rows per INSERT.
//! - `ch-sink NATS_URL CH_URL N`: runs the ClickHouse sink on the pre-filled stream until N events are
//!   written (database `telemetry`).
//! - `pb-raw PB_URL EMAIL PASSWORD N BATCH`: PocketBase's own batch-create rate: the same install records
//!   created through `/api/batch`, BATCH per call, nothing else (collection `bench_raw`).
//! - `pb-sink NATS_URL PB_URL EMAIL PASSWORD N`: runs the PocketBase sink on the pre-filled stream until N
//!   events are written (collection `telemetry`); through the batch API when it is enabled or
//!   `PB_ALLOW_SETTINGS_CHANGES=true`, else one request per record.
//! - `fresh INGEST_URL CH_URL DATABASE RATE SECS`: posts RATE final events/s to telemetry-ingest for SECS and, for
//!   one in `FRESH_EVERY` (env, default 20), measures the time from the 202 to the install being visible in `installs_final`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use schema::{Event, Reception};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;
use writer::config::{Secret, SinkChoice};
use writer::sink::Sink;

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| {
        eprintln!("usage: see the top of writer/examples/bench.rs");
        std::process::exit(2)
    })
}

fn num(args: &[String], i: usize) -> usize {
    arg(args, i).parse().unwrap_or_else(|_| {
        eprintln!("argument {i} must be a number");
        std::process::exit(2)
    })
}

/// The i-th synthetic event: install i/4, statuses installing, validation, configuring, final.
fn synthetic(i: usize, start: OffsetDateTime) -> (Event, String) {
    let install = i / 4;
    let step = i % 4;
    let id = format!("bench-{install}");
    let apps = ["jellyfin", "nginx", "docker", "pihole", "homeassistant"];
    let status = ["installing", "validation", "configuring", "success"][step];
    let mut body = json!({
        "random_id": id, "execution_id": id, "type": "lxc", "nsapp": apps[install % apps.len()],
        "status": status,
    });
    if step == 0 {
        body["disk_size"] = json!(8 + install % 32);
        body["core_count"] = json!(2);
        body["ram_size"] = json!(2048);
        body["os_type"] = json!("debian");
        body["os_version"] = json!("12");
        body["cpu_vendor"] = json!("intel");
        body["cpu_model"] = json!("Intel Core i5-8500T CPU @ 2.10GHz");
    }
    if step == 3 {
        body["exit_code"] = json!(0);
        body["install_duration"] = json!(300);
    }
    let accepted = schema::validate(
        body.to_string().as_bytes(),
        Reception {
            event_id: Uuid::now_v7(),
            received_at: start + time::Duration::milliseconds(i as i64),
        },
    )
    .expect("synthetic events are valid");
    (accepted.event, accepted.msg_id)
}

fn events(n: usize) -> Vec<Event> {
    let start = OffsetDateTime::now_utc();
    (0..n).map(|i| synthetic(i, start).0).collect()
}

fn line(mode: &str, n: usize, took: Duration) {
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "BENCH mode={mode} n={n} secs={:.2} rate={rate:.0}",
        took.as_secs_f64()
    );
}

fn config(nats: &str) -> writer::Config {
    let mut config = writer::Config::for_nats(nats);
    config.batch_size = std::env::var("BATCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    config.max_ack_pending = 4096;
    config
}

async fn run_sink(
    config: writer::Config,
    n: usize,
    pick: fn(&writer::Statuses) -> u64,
) -> Duration {
    let client = fleet::nats::connect(&config.common.nats_url, "bench")
        .await
        .expect("nats");
    let statuses = writer::Statuses::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(writer::run(config, client, None, statuses.clone(), async {
        let _ = stopped.await;
    }));
    // The clock starts with the first stored event, so set-up (migrations, login, lease) is not counted.
    while pick(&statuses) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let first = pick(&statuses);
    while pick(&statuses) < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(());
    let _ = task.await;
    // Scale the rate to the events counted after the clock started.
    took.mul_f64(n as f64 / (n as u64 - first.min(n as u64 - 1)) as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match arg(&args, 1) {
        "fill" => {
            let client = async_nats::connect(arg(&args, 2)).await?;
            let js = async_nats::jetstream::new(client);
            let settings = schema::names::events_stream(
                schema::names::DEFAULT_EVENTS_MAX_AGE,
                schema::names::DEFAULT_EVENTS_MAX_BYTES,
                1,
            );
            fleet::nats::ensure_stream(&js, &settings)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let n = num(&args, 3);
            let start = OffsetDateTime::now_utc();
            let began = Instant::now();
            // The client deadlocks past 5000 pending PubAcks: keep a bounded window.
            futures::stream::iter(0..n)
                .map(|i| {
                    let js = js.clone();
                    async move {
                        let (event, msg_id) = synthetic(i, start);
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(schema::names::MSG_ID_HEADER, msg_id.as_str());
                        js.publish_with_headers(event.subject(), headers, event.to_json().into())
                            .await?
                            .await?;
                        Ok::<(), async_nats::Error>(())
                    }
                })
                .buffer_unordered(2048)
                .for_each(|r| async {
                    if let Err(e) = r {
                        eprintln!("publish failed: {e}");
                    }
                })
                .await;
            line("fill", n, began.elapsed());
        }
        "ch-raw" => {
            let mut config = config("nats://127.0.0.1:1");
            config.clickhouse_url = arg(&args, 2).to_string();
            config.clickhouse_database = "bench_raw".into();
            let n = num(&args, 3);
            let batch = num(&args, 4);
            let sink = writer::clickhouse_sink(&config);
            sink.migrate().await?;
            let rows = events(n);
            let began = Instant::now();
            for chunk in rows.chunks(batch) {
                sink.write(chunk).await?;
            }
            line("ch-raw", n, began.elapsed());
        }
        "ch-sink" => {
            let mut config = config(arg(&args, 2));
            config.sink = SinkChoice::Clickhouse;
            config.clickhouse_url = arg(&args, 3).to_string();
            let n = num(&args, 4);
            let took = run_sink(config, n, |s| s.clickhouse.written.load(Ordering::Relaxed)).await;
            line("ch-sink", n, took);
        }
        "pb-raw" => {
            let (url, email, password) = (arg(&args, 2), arg(&args, 3), arg(&args, 4));
            let n = num(&args, 5);
            let batch = num(&args, 6);
            let http = reqwest::Client::new();
            let token: serde_json::Value = http
                .post(format!(
                    "{url}/api/collections/_superusers/auth-with-password"
                ))
                .json(&json!({"identity": email, "password": password}))
                .send()
                .await?
                .json()
                .await?;
            let token = token["token"].as_str().unwrap_or_default().to_string();
            let mut config = config("nats://127.0.0.1:1");
            config.pb_url = url.to_string();
            config.pb_email = email.to_string();
            config.pb_password = Secret::new(password);
            config.pb_target_collection = "bench_raw".into();
            config.pb_batch_requests = batch as u32;
            config.pb_allow_settings_changes = true;
            // Same collection definition and batch settings as the sink.
            writer::pocketbase_sink(&config)?.prepare().await?;
            // The same records the sink writes: one per install, its merged state included.
            let mut states: HashMap<String, schema::InstallState> = HashMap::new();
            for e in events(n) {
                let prior = states.remove(&e.execution_id);
                states.insert(e.execution_id.clone(), schema::merge(prior, &e));
            }
            let bodies: Vec<serde_json::Value> = states
                .values()
                .map(|s| json!({"method": "POST", "url": "/api/collections/bench_raw/records", "body": writer::pocketbase::record(s)}))
                .collect();
            let began = Instant::now();
            for chunk in bodies.chunks(batch) {
                let resp = http
                    .post(format!("{url}/api/batch"))
                    .header("authorization", &token)
                    .json(&json!({"requests": chunk}))
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "batch: {}", resp.text().await?);
            }
            let took = began.elapsed();
            // Reported per event (installs x 4), like the sink.
            line("pb-raw", n, took);
            println!(
                "BENCH mode=pb-raw-records records={} secs={:.2}",
                bodies.len(),
                took.as_secs_f64()
            );
        }
        "pb-sink" => {
            let mut config = config(arg(&args, 2));
            config.sink = SinkChoice::Pocketbase;
            config.pb_url = arg(&args, 3).to_string();
            config.pb_email = arg(&args, 4).to_string();
            config.pb_password = Secret::new(arg(&args, 5));
            config.lease_ttl_secs = 3;
            let n = num(&args, 6);
            let took = run_sink(config, n, |s| s.pocketbase.written.load(Ordering::Relaxed)).await;
            line("pb-sink", n, took);
        }
        "fresh" => {
            fresh(
                arg(&args, 2),
                arg(&args, 3),
                arg(&args, 4),
                num(&args, 5),
                num(&args, 6),
            )
            .await?
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
    Ok(())
}

/// Open-loop load on the ingest edge with a freshness probe on a sample of installs.
async fn fresh(
    ingest: &str,
    ch_url: &str,
    database: &str,
    rate: usize,
    secs: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let run = Uuid::now_v7().simple().to_string();
    let total = rate * secs;
    let every: usize = std::env::var("FRESH_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let sender = {
        let accepted = accepted.clone();
        let http = http.clone();
        let ingest = ingest.to_string();
        let run = run.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut ok = 0usize;
            let results = futures::stream::iter(0..total)
                .map(|i| {
                    let http = http.clone();
                    let ingest = ingest.clone();
                    let accepted = accepted.clone();
                    let id = format!("f{}-{i}", &run[..12]);
                    async move {
                        // Open loop: request i leaves at i/rate seconds, whatever happened before.
                        let due = began + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                        let body = json!({"random_id": id, "execution_id": id, "type": "lxc", "nsapp": "fresh",
                            "status": "success", "exit_code": 0, "disk_size": 8});
                        // Each probe install comes from its own documentation-range client, as through a
                        // proxy, so the edge's per-client limit does not throttle the probe.
                        let client = format!("198.51.{}.{}", (i / 256) % 256, i % 256);
                        let resp = http
                            .post(&ingest)
                            .header("x-forwarded-for", client)
                            .json(&body)
                            .send()
                            .await;
                        let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
                        if status == 202 && i % every == 0 {
                            if let Ok(mut map) = accepted.lock() {
                                map.insert(id, Instant::now());
                            }
                        }
                        status == 202
                    }
                })
                .buffer_unordered(512);
            futures::pin_mut!(results);
            while let Some(r) = results.next().await {
                ok += usize::from(r);
            }
            (ok, began.elapsed())
        })
    };
    // The probe itself must stay cheap: let ClickHouse push the id filter into the view's GROUP BY.
    let client = clickhouse::Client::default()
        .with_url(ch_url)
        .with_database(database)
        .with_option("enable_optimize_predicate_expression", "1");
    let mut latencies: Vec<Duration> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs as u64 + 30);
    let mut sender = Some(sender);
    let mut sent = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pending: Vec<String> = accepted
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if !pending.is_empty() {
            let seen: Vec<String> = client
                .query("SELECT execution_id FROM installs_final WHERE has(?, execution_id)")
                .bind(&pending)
                .fetch_all()
                .await
                .unwrap_or_default();
            let now = Instant::now();
            if let Ok(mut map) = accepted.lock() {
                for id in seen {
                    if let Some(at) = map.remove(&id) {
                        latencies.push(now - at);
                    }
                }
            }
        }
        if sender.as_ref().is_some_and(|s| s.is_finished()) {
            if let Some(s) = sender.take() {
                sent = Some(s.await?);
            }
        }
        let left = accepted.lock().map(|m| m.len()).unwrap_or(0);
        if (sent.is_some() && left == 0) || Instant::now() > deadline {
            break;
        }
    }
    let (ok, took) = sent.unwrap_or((0, Duration::ZERO));
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    let missing = accepted.lock().map(|m| m.len()).unwrap_or(0);
    println!(
        "BENCH mode=fresh sent={total} accepted={ok} send_secs={:.1} samples={} missing={missing} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        took.as_secs_f64(),
        latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
