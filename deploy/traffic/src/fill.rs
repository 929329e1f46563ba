//! The stream filler `telemetry-fill` of the stream benchmarks (`deploy/bench/aggregator.sh`,
//! `deploy/bench/writer.sh`): publishes synthetic installs straight to the event stream, validated as
//! the edge does and with the contract's de-duplication ids, keeping at most 4000 acks pending
//! (async-nats stalls beyond 5000). The same installs are built by [`events`] for benchmarks that need
//! the rows without the stream (the writer's raw-insert baselines).
//!
//! Install `i` of a run is `<run>-<i>` of app `app-<i mod 300>`: an `installing` event with the
//! container's resources, with [`Shape::Full`] the `validation` and `configuring` pings, and a final.
//! Every app fails one install in 20 (exit code 100 with a log line; spread over the apps, below any
//! alert threshold); the others succeed.
//!
//! Mode `flood` is the hostile client of `deploy/bench/flood.sh`: NAMES made-up app names, each with
//! PER_NAME failed installs, spread over SIGNATURES distinct error signatures; each install from its
//! own made-up `random_id` (the worst case: every name looks used by many clients), or all from one
//! with `--one-client`. Mode `keys` counts the keys of a KV bucket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture};
use schema::{Accepted, Reception};

/// Acks awaited at once; the client stalls past 5000.
const MAX_PENDING: usize = 4000;

/// Apps the installs are spread over.
pub const APPS: u64 = 300;

/// The decisive log lines of the failed installs.
const ERRORS: [&str; 4] = [
    "E: Unable to locate package python3-pip",
    "curl: (22) The requested URL returned error: 404",
    "npm ERR! code ERESOLVE",
    "Job for app.service failed because the control process exited with error code",
];

/// Configuration of `telemetry-fill`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-fill",
    version,
    about = "Publishes synthetic installs straight to the event stream (for the stream benchmarks)."
)]
pub struct Config {
    /// NATS server the event stream lives on (created when missing, one replica).
    /// Default: nats://127.0.0.1:4222.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[command(subcommand)]
    pub mode: Mode,
}

/// What to publish.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Mode {
    /// INSTALLS synthetic installs over 300 apps, one in 20 failed.
    Installs {
        /// How many installs.
        installs: u64,
        /// Events per install: `short` (installing and a final) or `full` (also the validation and
        /// configuring pings). Default: short.
        #[arg(long, value_enum, default_value_t = Shape::Short)]
        shape: Shape,
    },
    /// N installs of APP that all fail (a final `failed` only): crosses the alert thresholds of APP.
    Cross {
        /// The app whose installs fail.
        app: String,
        /// How many installs.
        installs: u64,
    },
    /// A flood of made-up names: NAMES app names with PER_NAME failed installs each (a final only),
    /// over SIGNATURES distinct error signatures.
    Flood {
        /// Distinct made-up app names.
        names: u64,
        /// Distinct error signatures the installs are spread over.
        signatures: u64,
        /// Failed installs per name. Default: 10.
        #[arg(long, default_value_t = 10)]
        per_name: u64,
        /// Every install from one random_id (else each from its own).
        #[arg(long)]
        one_client: bool,
        /// Events per second, paced evenly (e.g. 2000: 1,000 addresses at the edge's 120 a minute).
        /// 0: as fast as the broker takes them.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Prints the number of keys of a KV bucket (publishes nothing).
    Keys {
        /// The bucket, e.g. telemetry_stats.
        bucket: String,
    },
}

/// The events of one synthetic install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `installing` and a final: 2 events.
    Short,
    /// `installing`, `validation`, `configuring` and a final: 4 events.
    Full,
}

impl Shape {
    pub fn events_per_install(self) -> u64 {
        match self {
            Shape::Short => 2,
            Shape::Full => 4,
        }
    }
}

/// A fresh run id (the millisecond and 12 random bits of a UUIDv7): installs of different runs do not
/// share an id.
pub fn new_run() -> String {
    uuid::Uuid::now_v7().simple().to_string()[..16].to_owned()
}

fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}","core_count":2,"ram_size":2048,"disk_size":8,"os_type":"debian","os_version":"12","pve_version":"8.2.4","method":"default"{extra}}}"#
    )
}

fn ping(exec: &str, app: &str, status: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}"}}"#
    )
}

/// The bodies of install `i` of `run`, in the order a script sends them.
pub fn install(run: &str, i: u64, shape: Shape) -> Vec<String> {
    let exec = format!("{run}-{i}");
    let app = format!("app-{}", i % APPS);
    let mut bodies = vec![body(
        &exec,
        &app,
        "installing",
        r#","cpu_vendor":"intel","cpu_model":"Intel Core i5-8500T CPU @ 2.10GHz""#,
    )];
    if shape == Shape::Full {
        bodies.push(ping(&exec, &app, "validation"));
        bodies.push(ping(&exec, &app, "configuring"));
    }
    // Every app fails one install in 20 (spread over the apps, not concentrated on some).
    bodies.push(if (i / APPS) % 20 == 7 {
        let error = ERRORS[(i / 20 % 4) as usize];
        body(
            &exec,
            &app,
            "failed",
            &format!(r#","exit_code":100,"error":"exit_code=100\n{error} {i}""#),
        )
    } else {
        body(
            &exec,
            &app,
            "success",
            &format!(r#","exit_code":0,"install_duration":{}"#, 30 + i % 600),
        )
    });
    bodies
}

/// The body of the `i`-th failing install of `app` in `run` (mode `cross`).
pub fn failing(run: &str, app: &str, i: u64) -> String {
    body(&format!("{run}-x{i}"), app, "failed", r#","exit_code":100"#)
}

/// `i` in letters g..z (never a hex digit or a number, which signatures normalize away), 4 at least.
fn letters(mut i: u64) -> String {
    let mut out = Vec::new();
    while i > 0 || out.len() < 4 {
        out.push(b'g' + (i % 20) as u8);
        i /= 20;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The body of failed install `k` of the flood `run` (mode `flood`): name `k / per_name`, signature
/// `k mod signatures`.
pub fn flood(run: &str, k: u64, per_name: u64, signatures: u64, one_client: bool) -> String {
    let exec = format!("{run}-f{k}");
    let random_id = if one_client {
        format!("{run}-flooder")
    } else {
        format!("r-{exec}")
    };
    let app = format!("flood-{}", letters(k / per_name.max(1)));
    let signature = letters(k % signatures.max(1));
    format!(
        r#"{{"random_id":"{random_id}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"failed","exit_code":100,"error":"exit_code=100\nE: Unable to locate package flood{signature}"}}"#
    )
}

/// The number of keys of KV bucket `bucket`.
pub async fn count_keys(nats_url: &str, bucket: &str) -> anyhow::Result<u64> {
    use futures::TryStreamExt;
    let client = async_nats::connect(nats_url).await?;
    let store = jetstream::new(client).get_key_value(bucket).await?;
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    Ok(keys.len() as u64)
}

/// A body as the edge accepts it, received now.
pub fn accept(body: &str) -> anyhow::Result<Accepted> {
    schema::validate(body.as_bytes(), Reception::now())
        .map_err(|e| anyhow::anyhow!("invalid synthetic event: {e:?}"))
}

/// The events of installs `0..installs` of `run`, as the edge would publish them.
pub fn events(run: &str, installs: u64, shape: Shape) -> anyhow::Result<Vec<schema::Event>> {
    (0..installs)
        .flat_map(|i| install(run, i, shape))
        .map(|body| accept(&body).map(|accepted| accepted.event))
        .collect()
}

/// Publishes to the event stream with a bounded window of pending acks.
struct Publisher {
    js: jetstream::Context,
    pending: VecDeque<PublishAckFuture>,
    sent: u64,
}

impl Publisher {
    async fn send(&mut self, body: &str) -> anyhow::Result<()> {
        let accepted = accept(body)?;
        let ack = self
            .js
            .send_publish(
                accepted.event.subject(),
                jetstream::message::PublishMessage::build()
                    .payload(accepted.event.to_json().into())
                    .message_id(accepted.msg_id),
            )
            .await?;
        self.pending.push_back(ack);
        self.sent += 1;
        if self.pending.len() >= MAX_PENDING {
            self.drain(MAX_PENDING / 2).await?;
        }
        Ok(())
    }

    async fn drain(&mut self, keep: usize) -> anyhow::Result<()> {
        while self.pending.len() > keep {
            if let Some(ack) = self.pending.pop_front() {
                ack.await?;
            }
        }
        Ok(())
    }
}

/// What a fill published.
#[derive(Debug, Clone)]
pub struct Filled {
    /// Events published and acknowledged.
    pub events: u64,
    pub secs: f64,
    /// Unix time in milliseconds when the last ack arrived.
    pub done_at_ms: i128,
}

/// Creates the event stream when missing and publishes what `config.mode` says; returns once every
/// event is acknowledged.
pub async fn run(config: &Config) -> anyhow::Result<Filled> {
    let client = async_nats::connect(config.nats_url.as_str()).await?;
    let js = jetstream::new(client);
    let settings = schema::names::events_stream(
        schema::names::DEFAULT_EVENTS_MAX_AGE,
        schema::names::DEFAULT_EVENTS_MAX_BYTES,
        1,
    );
    fleet::nats::ensure_stream(&js, &settings)
        .await
        .map_err(|e| anyhow::anyhow!("event stream: {e}"))?;
    let mut p = Publisher {
        js,
        pending: VecDeque::new(),
        sent: 0,
    };
    let started = Instant::now();
    let run = new_run();
    match &config.mode {
        Mode::Installs { installs, shape } => {
            for i in 0..*installs {
                for body in install(&run, i, *shape) {
                    p.send(&body).await?;
                }
            }
        }
        Mode::Cross { app, installs } => {
            for i in 0..*installs {
                p.send(&failing(&run, app, i)).await?;
            }
        }
        Mode::Flood {
            names,
            signatures,
            per_name,
            one_client,
            rate,
        } => {
            for k in 0..names * per_name {
                if *rate > 0 {
                    let due = started + Duration::from_secs_f64(k as f64 / *rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                p.send(&flood(&run, k, *per_name, *signatures, *one_client))
                    .await?;
            }
        }
        Mode::Keys { .. } => anyhow::bail!("keys publishes nothing"),
    }
    p.drain(0).await?;
    Ok(Filled {
        events: p.sent,
        secs: started.elapsed().as_secs_f64(),
        done_at_ms: time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Status;

    /// Install `i` in `shape` is valid, of the right app, in the right order, ending as `end`.
    fn check(i: u64, shape: Shape, end: Status) {
        let events: Vec<schema::Event> = install("run", i, shape)
            .iter()
            .map(|body| accept(body).expect("valid").event)
            .collect();
        let statuses: Vec<Status> = events.iter().map(|e| e.status).collect();
        let mut expected = vec![Status::Installing];
        if shape == Shape::Full {
            expected.extend([Status::Validation, Status::Configuring]);
        }
        expected.push(end);
        assert_eq!(statuses, expected, "install {i} {shape:?}");
        assert_eq!(events.len() as u64, shape.events_per_install());
        for e in &events {
            assert_eq!(e.execution_id, format!("run-{i}"));
            assert_eq!(e.nsapp, format!("app-{}", i % APPS));
        }
    }

    #[test]
    fn installs_are_valid_and_one_in_twenty_fails() {
        check(0, Shape::Short, Status::Success);
        check(0, Shape::Full, Status::Success);
        check(7 * APPS, Shape::Short, Status::Failed);
        check(7 * APPS + 299, Shape::Full, Status::Failed);
        check(8 * APPS, Shape::Full, Status::Success);
        let failed = (0..20 * APPS)
            .filter(|i| install("run", *i, Shape::Short)[1].contains("\"failed\""))
            .count() as u64;
        assert_eq!(failed, APPS, "one failed install per app in 20 x {APPS}");
    }

    #[test]
    fn a_flood_spreads_installs_over_names_and_signatures() {
        let events: Vec<schema::Event> = (0..40)
            .map(|k| accept(&flood("run", k, 4, 7, false)).expect("valid").event)
            .collect();
        let distinct = |f: &dyn Fn(&schema::Event) -> String| {
            events
                .iter()
                .map(f)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert_eq!(distinct(&|e| e.nsapp.clone()), 10);
        assert_eq!(
            distinct(&|e| e.error_signature.clone().unwrap_or_default()),
            7
        );
        assert_eq!(distinct(&|e| e.random_id.clone()), 40);
        assert!(events.iter().all(|e| e.status == Status::Failed));
        let one = accept(&flood("run", 5, 4, 7, true)).expect("valid").event;
        assert_eq!(one.random_id, "run-flooder");
        assert_eq!(letters(0), "gggg");
        assert_eq!(letters(21), "gghh");
    }

    #[test]
    fn events_are_every_install_in_order() {
        let events = events("run", 3, Shape::Full).expect("events");
        assert_eq!(events.len(), 12);
        assert_eq!(events[4].execution_id, "run-1");
        assert_eq!(events[4].status, Status::Installing);
        let cross = accept(&failing("run", "benchapp", 2)).expect("valid").event;
        assert_eq!(
            (
                cross.execution_id.as_str(),
                cross.nsapp.as_str(),
                cross.status
            ),
            ("run-x2", "benchapp", Status::Failed)
        );
    }
}
