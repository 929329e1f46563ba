//! Open-loop load generator for benchmarks: sends 1 KB `installing` bodies with distinct execution ids at
//! a fixed rate over keep-alive connections and prints latency percentiles measured from each request's
//! scheduled send time (so a stalled server cannot hide its queueing).
//!
//! Usage: loadgen URL RATE SECONDS [CONCURRENCY]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

fn body(id: &str) -> String {
    let mut body = format!(
        r#"{{"random_id":"{id}","execution_id":"{id}","type":"lxc","nsapp":"jellyfin","status":"installing","ct_type":1,"disk_size":8,"core_count":2,"ram_size":2048,"os_type":"debian","os_version":"13","pve_version":"9.0.10","method":"default","cpu_vendor":"intel","cpu_model":"Intel Core i5-8500T CPU @ 2.10GHz","gpu_vendor":"intel","gpu_model":"Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]","gpu_passthrough":"igpu","ram_speed":"2667","repo_source":"ProxmoxVE","note":""#
    );
    while body.len() < 1022 {
        body.push('x');
    }
    body.push_str("\"}");
    body
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, rate, secs, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: loadgen URL RATE SECONDS [CONCURRENCY]");
    };
    let rate: f64 = rate.parse()?;
    let secs: f64 = secs.parse()?;
    let concurrency: usize = rest.first().map_or(Ok(256), |c| c.parse())?;
    let total = (rate * secs) as u64;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let permits = Arc::new(Semaphore::new(concurrency));
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
        let (client, url, results) = (client.clone(), url.clone(), results.clone());
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
    let elapsed = start.elapsed().as_secs_f64();
    let results = results.lock().await;
    let mut latencies: Vec<u64> = results.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[idx] as f64 / 1000.0
    };
    let mut by_status = std::collections::BTreeMap::new();
    for (status, _) in results.iter() {
        *by_status.entry(*status).or_insert(0u64) += 1;
    }
    println!(
        "sent={} elapsed_s={elapsed:.2} achieved_rps={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} statuses={by_status:?}",
        results.len(),
        results.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
    Ok(())
}
