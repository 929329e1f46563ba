//! The open-loop load generator `telemetry-loadgen` of `deploy/bench/ingest.sh`: sends 1 KB `installing`
//! bodies with distinct execution ids at a fixed rate over keep-alive connections and reports latency
//! percentiles measured from each request's scheduled send time (so a stalled server cannot hide its
//! queueing). Unlike `telemetry-simulate` it sends one kind of body, as cheaply as it can.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

/// Configuration of `telemetry-loadgen`: `telemetry-loadgen URL RATE SECONDS [CONCURRENCY]`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-loadgen",
    version,
    about = "Open-loop load of 1 KB installing events against an ingest URL; prints latency percentiles."
)]
pub struct Config {
    /// Ingest endpoint the events are posted to, e.g. http://127.0.0.1:8080/telemetry.
    #[arg(env = "LOADGEN_URL")]
    pub url: String,
    /// Requests per second, sent on schedule whatever the answers.
    #[arg(env = "LOADGEN_RATE")]
    pub rate: f64,
    /// How long to send, in seconds.
    #[arg(env = "LOADGEN_SECONDS")]
    pub seconds: f64,
    /// Most requests in flight at once; the schedule waits for a free one. Default: 256 (requests).
    #[arg(env = "LOADGEN_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
}

/// What a run measured; its `Display` is the one line the bench script reads.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: usize,
    pub elapsed_secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Answers by HTTP status; 0 for a transport error.
    pub statuses: BTreeMap<u16, u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} elapsed_s={:.2} achieved_rps={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} statuses={:?}",
            self.sent,
            self.elapsed_secs,
            self.sent as f64 / self.elapsed_secs,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.statuses,
        )
    }
}

/// A 1 KB `installing` body of the install `id`.
pub fn body(id: &str) -> String {
    let mut body = format!(
        r#"{{"random_id":"{id}","execution_id":"{id}","type":"lxc","nsapp":"jellyfin","status":"installing","ct_type":1,"disk_size":8,"core_count":2,"ram_size":2048,"os_type":"debian","os_version":"13","pve_version":"9.0.10","method":"default","cpu_vendor":"intel","cpu_model":"Intel Core i5-8500T CPU @ 2.10GHz","gpu_vendor":"intel","gpu_model":"Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]","gpu_passthrough":"igpu","ram_speed":"2667","repo_source":"ProxmoxVE","note":""#
    );
    while body.len() < 1022 {
        body.push('x');
    }
    body.push_str("\"}");
    body
}

/// Sends `rate * seconds` requests, request i at i/rate seconds, and waits for every answer.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        anyhow::bail!("RATE must be a number above 0");
    }
    if config.concurrency == 0 {
        anyhow::bail!("CONCURRENCY must be at least 1");
    }
    let rate = config.rate;
    let total = (rate * config.seconds) as u64;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let results = Arc::new(Mutex::new(Vec::<(u16, u64)>::with_capacity(total as usize)));
    let run = format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().as_nanos() as u32)
    );
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = permits.clone().acquire_owned().await?;
        let (client, url, results) = (client.clone(), config.url.clone(), results.clone());
        let body = body(&format!("lg-{run}-{i}"));
        tasks.push(tokio::spawn(async move {
            let status = match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            let micros = scheduled.elapsed().as_micros() as u64;
            results.lock().await.push((status, micros));
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let results = results.lock().await;
    let mut latencies: Vec<u64> = results.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let mut statuses = BTreeMap::new();
    for (status, _) in results.iter() {
        *statuses.entry(*status).or_insert(0u64) += 1;
    }
    Ok(Report {
        sent: results.len(),
        elapsed_secs,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        p999_ms: percentile_ms(&latencies, 0.999),
        max_ms: percentile_ms(&latencies, 1.0),
        statuses,
    })
}

/// Nearest-rank quantile `q` (0..=1) of sorted microseconds, in milliseconds; 0 for none.
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_valid_installing_event_of_one_kilobyte() {
        let body = body("lg-1-2");
        assert_eq!(body.len(), 1024);
        let accepted = schema::validate(body.as_bytes(), schema::Reception::now()).expect("valid");
        assert_eq!(accepted.event.execution_id, "lg-1-2");
        assert_eq!(accepted.event.status, schema::Status::Installing);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let check = |values: &[u64], q: f64, expected: f64| {
            assert_eq!(percentile_ms(values, q), expected, "{values:?} at {q}");
        };
        let v: Vec<u64> = (1..=1000).map(|n| n * 1000).collect();
        check(&v, 0.50, 500.0);
        check(&v, 0.99, 990.0);
        check(&v, 0.999, 999.0);
        check(&v, 1.0, 1000.0);
        check(&[7000], 0.99, 7.0);
        check(&[], 0.5, 0.0);
    }
}
