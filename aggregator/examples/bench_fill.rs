//! Load generator of deploy/bench/aggregator.sh: publishes synthetic installs straight to the event
//! stream (validated like the edge does, with the contract's de-duplication ids), keeping at most 4000
//! acks pending (async-nats stalls beyond 5000).
//!
//! `bench_fill NATS_URL fill INSTALLS`: INSTALLS installs over 300 apps, each an `installing` and a final
//! event, about 5 % failed (below any alert threshold).
//! `bench_fill NATS_URL cross APP N`: N installs of APP that all fail, then prints the unix time in
//! milliseconds at which the last one was acknowledged (the threshold-crossing event).

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::{self, context::PublishAckFuture};
use schema::validate::{validate, Reception};

const MAX_PENDING: usize = 4000;

const ERRORS: [&str; 4] = [
    "E: Unable to locate package python3-pip",
    "curl: (22) The requested URL returned error: 404",
    "npm ERR! code ERESOLVE",
    "Job for app.service failed because the control process exited with error code",
];

fn body(exec: &str, app: &str, status: &str, extra: &str) -> String {
    format!(
        r#"{{"random_id":"r-{exec}","execution_id":"{exec}","type":"lxc","nsapp":"{app}","status":"{status}","core_count":2,"ram_size":2048,"disk_size":8,"os_type":"debian","os_version":"12","pve_version":"8.2.4","method":"default"{extra}}}"#
    )
}

struct Publisher {
    js: jetstream::Context,
    pending: VecDeque<PublishAckFuture>,
    sent: u64,
}

impl Publisher {
    async fn send(&mut self, body: &str) -> anyhow::Result<()> {
        let accepted = validate(body.as_bytes(), Reception::now())
            .map_err(|e| anyhow::anyhow!("invalid event: {e:?}"))?;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_fill NATS_URL fill INSTALLS | bench_fill NATS_URL cross APP N";
    let url = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?;
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client.clone());
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
    match args.get(2).map(String::as_str) {
        Some("fill") => {
            let installs: u64 = args.get(3).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
            let run = uuid::Uuid::now_v7().simple().to_string();
            for i in 0..installs {
                let exec = format!("{}-{i}", &run[..12]);
                let app = format!("app-{}", i % 300);
                p.send(&body(&exec, &app, "installing", "")).await?;
                // Every app fails one install in 20 (spread over the apps, not concentrated on some).
                let end = if (i / 300) % 20 == 7 {
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
                        &format!(r#","install_duration":{}"#, 30 + i % 600),
                    )
                };
                p.send(&end).await?;
            }
        }
        Some("cross") => {
            let app = args.get(3).ok_or_else(|| anyhow::anyhow!(usage))?;
            let n: u64 = args.get(4).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
            let run = uuid::Uuid::now_v7().simple().to_string();
            for i in 0..n {
                let exec = format!("{}-x{i}", &run[..12]);
                p.send(&body(&exec, app, "failed", r#","exit_code":100"#))
                    .await?;
            }
        }
        _ => anyhow::bail!(usage),
    }
    p.drain(0).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {} events in {secs:.1}s ({:.0}/s)",
        p.sent,
        p.sent as f64 / secs
    );
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    println!("{now_ms}");
    Ok(())
}
