//! Benchmark driver of `deploy/bench/writer.sh` (kept out of the production binary): the writer's own
//! sinks and their raw baselines. The stream is pre-filled by `telemetry-fill installs N/4 --shape full`
//! (the `traffic` crate), and the raw modes write the same synthetic installs (`traffic::fill::events`).
//! N counts events and is a multiple of 4 (installs of 4 events). Each mode prints one
//! `BENCH key=value ...` line:
//!
//! - `ch-raw CH_URL N BATCH`: inserts N rows with the `clickhouse` crate alone (database `bench_raw`,
//!   same tables and materialized view), BATCH rows per INSERT.
//! - `ch-sink NATS_URL CH_URL N`: runs the ClickHouse sink on the pre-filled stream until N events are
//!   written (database `telemetry`).
//! - `pb-raw PB_URL EMAIL PASSWORD N BATCH`: PocketBase's own batch-create rate: the same install records
//!   created through `/api/batch`, BATCH per call, nothing else (collection `bench_raw`).
//! - `pb-sink NATS_URL PB_URL EMAIL PASSWORD N`: runs the PocketBase sink on the pre-filled stream until N
//!   events are written (collection `telemetry`); through the batch API when it is enabled or
//!   `PB_ALLOW_SETTINGS_CHANGES=true`, else one request per record.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use schema::Event;
use serde_json::json;
use traffic::fill::Shape;
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

/// N synthetic events: the installs `telemetry-fill` publishes, 4 events each.
fn events(n: usize) -> Vec<Event> {
    if !n.is_multiple_of(4) {
        eprintln!("N must be a multiple of 4 (installs of 4 events), got {n}");
        std::process::exit(2);
    }
    traffic::fill::events(&traffic::fill::new_run(), n as u64 / 4, Shape::Full)
        .expect("synthetic events are valid")
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
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
    Ok(())
}
