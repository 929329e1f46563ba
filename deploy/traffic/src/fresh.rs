//! The freshness probe `telemetry-fresh` of `deploy/bench/writer.sh` and `deploy/bench/e2e.sh`: posts
//! RATE final events per second to telemetry-ingest for SECS (open loop: request i leaves at i/RATE
//! seconds, whatever happened before) and, for one install in `--every`, measures the time from the 202
//! to the install being visible in ClickHouse (its event in `events`, which puts it in `installs_final`;
//! checked for every probed install at the end). Prints one `BENCH mode=fresh ...` line.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

/// Configuration of `telemetry-fresh`: `telemetry-fresh INGEST_URL CH_URL DATABASE RATE SECS`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-fresh",
    version,
    about = "Posts final events to an ingest URL and times the 202 -> install visible in ClickHouse (events, then installs_final)."
)]
pub struct Config {
    /// Ingest endpoint the events are posted to, e.g. http://127.0.0.1:8080/telemetry.
    #[arg(env = "FRESH_INGEST_URL")]
    pub ingest_url: String,
    /// ClickHouse HTTP interface the writer stores into.
    #[arg(env = "FRESH_CLICKHOUSE_URL")]
    pub clickhouse_url: String,
    /// ClickHouse database of the writer.
    #[arg(env = "FRESH_DATABASE")]
    pub database: String,
    /// Final events posted per second.
    #[arg(env = "FRESH_RATE")]
    pub rate: usize,
    /// How long to post, in seconds.
    #[arg(env = "FRESH_SECS")]
    pub secs: usize,
    /// Probe one install in this many. Default: 20 (installs).
    #[arg(long, env = "FRESH_EVERY", default_value_t = 20)]
    pub every: usize,
}

/// What a run measured; its `Display` is the line the bench scripts read.
#[derive(Debug, Clone)]
pub struct Report {
    pub sent: usize,
    pub accepted: usize,
    pub send_secs: f64,
    /// Probed installs seen in ClickHouse.
    pub samples: usize,
    /// Probed installs never seen before the deadline (SECS + 30 s), or seen in `events` but missing
    /// from `installs_final` at the end (after up to 10 reads 2 s apart).
    pub missing: usize,
    /// Reads of `installs_final` at the end that showed fewer probed installs than a later read did.
    pub short_reads: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BENCH mode=fresh sent={} accepted={} send_secs={:.1} samples={} missing={} short_reads={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
            self.sent,
            self.accepted,
            self.send_secs,
            self.samples,
            self.missing,
            self.short_reads,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

/// Open-loop load on the ingest edge with a freshness probe on a sample of installs.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let (rate, secs) = (config.rate, config.secs);
    anyhow::ensure!(rate > 0, "RATE must be at least 1");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let run = Uuid::now_v7().simple().to_string();
    let total = rate * secs;
    let every = config.every.max(1);
    let sender = {
        let accepted = accepted.clone();
        let http = http.clone();
        let ingest = config.ingest_url.clone();
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
    // The probe itself must stay cheap, or it crowds the fleet it measures. It polls `events` by its
    // primary key: an install is in `installs_final` from the moment the insert of its first event is
    // done (the view merges every install touched since the settle watermark from `events`), so the
    // event showing there is the install showing to readers. Every read of `installs_final` builds the
    // sets of its branches (touched, re-settled installs) anew, which 20 polls a second cannot afford;
    // the run ends with one such read, which must find every probed install.
    let client = clickhouse::Client::default()
        .with_url(&config.clickhouse_url)
        .with_database(&config.database);
    let mut seen_ids: Vec<String> = Vec::new();
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
                .query(
                    "SELECT DISTINCT execution_id FROM events \
                     WHERE execution_id IN (SELECT arrayJoin(?))",
                )
                .bind(&pending)
                .fetch_all()
                .await
                .unwrap_or_default();
            let now = Instant::now();
            if let Ok(mut map) = accepted.lock() {
                for id in seen {
                    if let Some(at) = map.remove(&id) {
                        latencies.push(now - at);
                        seen_ids.push(id);
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
    let unseen = accepted.lock().map(|m| m.len()).unwrap_or(0);
    // Every install seen in `events` must be in `installs_final`. A read that shows fewer is read again
    // (2 s apart, up to 10 reads): a short read that a later one makes up for is counted apart from an
    // install still absent at the end, which counts as missing.
    let mut reads: Vec<usize> = Vec::new();
    // Nothing seen, nothing to read: ClickHouse refuses `IN` over an empty array ("Nothing on the right").
    let tries = if seen_ids.is_empty() { 0 } else { 10 };
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let in_final: u64 = client
            .query(
                "SELECT toUInt64(count()) FROM installs_final \
                 WHERE execution_id IN (SELECT arrayJoin(?))",
            )
            .bind(&seen_ids)
            .fetch_one()
            .await?;
        reads.push(usize::try_from(in_final)?);
        if reads.last() == Some(&seen_ids.len()) {
            break;
        }
    }
    let best = reads.iter().copied().max().unwrap_or(0);
    let short_reads = reads.iter().filter(|&&n| n < best).count();
    let missing = unseen + seen_ids.len().saturating_sub(best);
    Ok(Report {
        sent: total,
        accepted: ok,
        send_secs: took.as_secs_f64(),
        samples: latencies.len(),
        missing,
        short_reads,
        p50_ms: quantile_ms(&latencies, 0.5),
        p99_ms: quantile_ms(&latencies, 0.99),
        max_ms: quantile_ms(&latencies, 1.0),
    })
}

/// The `q` quantile (0..=1) of sorted durations in milliseconds; NaN for none.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_index_the_sorted_samples() {
        let check = |values: &[u64], q: f64, expected: f64| {
            let sorted: Vec<Duration> =
                values.iter().map(|ms| Duration::from_millis(*ms)).collect();
            let got = quantile_ms(&sorted, q);
            assert!(
                got == expected || (got.is_nan() && expected.is_nan()),
                "{values:?} at {q}: {got}"
            );
        };
        let v: Vec<u64> = (1..=100).collect();
        check(&v, 0.5, 51.0);
        check(&v, 0.99, 100.0);
        check(&v, 1.0, 100.0);
        check(&[7], 0.99, 7.0);
        check(&[], 0.5, f64::NAN);
    }
}
