//! The slow-client generator `telemetry-slow` of `deploy/bench/slow.sh`: holds N connections open
//! against a server, each sending its request one byte at a time (its headers, or after whole headers
//! its body), and opens a new one whenever the server closes one; meanwhile a normal client sends
//! requests on a fixed schedule, each on a fresh connection as a script's `curl` does, and its latency
//! percentiles, measured from each request's scheduled send time, tell whether the slow ones cost it
//! anything.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// What the slow connections send slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The request line and headers, one byte at a time, never finishing them.
    Headers,
    /// Whole headers announcing a body of `--body-bytes`, then the body one byte at a time.
    Body,
}

/// Configuration of `telemetry-slow`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-slow",
    version,
    about = "Many slow connections against a server while a normal client measures its latency."
)]
pub struct Config {
    /// URL the slow connections and the normal client talk to, e.g. http://127.0.0.1:8080/telemetry.
    #[arg(env = "SLOW_URL")]
    pub url: String,
    /// Slow connections held open at once (each needs a file descriptor: mind `ulimit -n`).
    #[arg(long, env = "SLOW_CONNECTIONS", default_value_t = 10_000)]
    pub slow: usize,
    /// What the slow connections send slowly.
    #[arg(long, env = "SLOW_MODE", value_enum, default_value_t = Mode::Headers)]
    pub mode: Mode,
    /// Pause between two bytes of one slow connection, in milliseconds.
    #[arg(long, env = "SLOW_BYTE_INTERVAL_MS", default_value_t = 1000)]
    pub byte_interval_ms: u64,
    /// Content-Length the slow uploads announce (`--mode body`), in bytes.
    #[arg(long, env = "SLOW_BODY_BYTES", default_value_t = 262_144)]
    pub body_bytes: usize,
    /// New slow connections opened per second while ramping up.
    #[arg(long, env = "SLOW_RAMP_PER_SEC", default_value_t = 2000)]
    pub ramp_per_sec: u64,
    /// Requests per second of the normal client.
    #[arg(long, env = "SLOW_NORMAL_RATE", default_value_t = 20.0)]
    pub normal_rate: f64,
    /// How long the normal client measures, in seconds (after the ramp-up).
    #[arg(long, env = "SLOW_SECONDS", default_value_t = 30.0)]
    pub seconds: f64,
    /// The normal client sends `GET URL` instead of posting a 1 KB installing event (for the web).
    #[arg(long, env = "SLOW_NORMAL_GET")]
    pub get: bool,
    /// Latency the normal client's p99 must stay within, in milliseconds.
    #[arg(long, env = "SLOW_BUDGET_MS", default_value_t = 100.0)]
    pub budget_ms: f64,
}

/// What a run measured; its `Display` is the one line the bench script reads.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub slow: usize,
    pub mode: String,
    /// Slow connections open when the normal client started, and when it ended.
    pub open_at_start: u64,
    pub open_at_end: u64,
    /// Slow connections the server closed (and that were opened again) during the whole run.
    pub closed_by_server: u64,
    /// Connects that failed (backlog full, out of descriptors).
    pub connect_errors: u64,
    pub normal_sent: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers of the normal client by HTTP status; 0 for a transport error.
    pub statuses: BTreeMap<u16, u64>,
    pub budget_ms: f64,
}

impl Report {
    /// Normal requests answered 2xx.
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every normal request answered 2xx, and the p99 within the budget: a fast 503 is no success.
    pub fn within_budget(&self) -> bool {
        self.normal_sent > 0
            && self.ok() == self.normal_sent as u64
            && self.p99_ms <= self.budget_ms
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slow={} mode={} open_at_start={} open_at_end={} closed_by_server={} connect_errors={} normal_sent={} ok={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} statuses={:?} within_{}ms={}",
            self.slow,
            self.mode,
            self.open_at_start,
            self.open_at_end,
            self.closed_by_server,
            self.connect_errors,
            self.normal_sent,
            self.ok(),
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.statuses,
            self.budget_ms,
            if self.within_budget() { "yes" } else { "no" },
        )
    }
}

#[derive(Default)]
struct Counters {
    open: AtomicU64,
    closed_by_server: AtomicU64,
    connect_errors: AtomicU64,
}

/// The host:port and path of an `http://` URL.
fn target(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("no address for {authority}"))?;
    Ok((addr, authority.to_string(), path))
}

/// The bytes one slow connection sends, in order, slowly (headers mode: an endless header section).
fn slow_request(mode: Mode, host: &str, path: &str, body_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    match mode {
        Mode::Headers => (
            Vec::new(),
            format!("POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n")
                .into_bytes(),
        ),
        Mode::Body => (
            format!(
                "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {body_bytes}\r\n\r\n"
            )
            .into_bytes(),
            b"{\"random_id\":\"".to_vec(),
        ),
    }
}

/// One slow connection, forever: connect, send `head` at once, then `slow` a byte at a time (headers
/// mode: followed by `x-slow: 1` header lines; body mode: by spaces), and start again when the server
/// closes it.
async fn slow_connection(
    addr: SocketAddr,
    head: Arc<Vec<u8>>,
    slow: Arc<Vec<u8>>,
    interval: Duration,
    counters: Arc<Counters>,
) {
    let filler: &[u8] = if head.is_empty() {
        b"x-slow: 1\r\n"
    } else {
        b" "
    };
    loop {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        counters.open.fetch_add(1, Ordering::Relaxed);
        let mut alive = stream.write_all(&head).await.is_ok();
        let mut bytes = slow.iter().chain(filler.iter().cycle());
        // Start the byte pace at a random point so the connections do not all write at once.
        tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
        while alive {
            let byte = *bytes.next().expect("endless");
            alive = stream.write_all(&[byte]).await.is_ok();
            if alive {
                tokio::time::sleep(interval).await;
            }
        }
        counters.open.fetch_sub(1, Ordering::Relaxed);
        counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens the slow connections, waits until they are open (or a minute passed), runs the normal client
/// for `seconds`, and reports.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    if !(config.normal_rate.is_finite() && config.normal_rate > 0.0) {
        anyhow::bail!("--normal-rate must be a number above 0");
    }
    let (addr, host, path) = target(&config.url)?;
    let (head, slow) = slow_request(config.mode, &host, &path, config.body_bytes);
    let (head, slow) = (Arc::new(head), Arc::new(slow));
    let interval = Duration::from_millis(config.byte_interval_ms.max(1));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(config.slow);
    let ramp = Duration::from_secs_f64(1.0 / config.ramp_per_sec.max(1) as f64);
    let ramp_start = Instant::now();
    for i in 0..config.slow {
        tokio::time::sleep_until((ramp_start + ramp * i as u32).into()).await;
        tasks.push(tokio::spawn(slow_connection(
            addr,
            head.clone(),
            slow.clone(),
            interval,
            counters.clone(),
        )));
    }
    let ramp_deadline = Instant::now() + Duration::from_secs(60);
    while counters.open.load(Ordering::Relaxed) < config.slow as u64
        && Instant::now() < ramp_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_at_start = counters.open.load(Ordering::Relaxed);

    // The normal client runs on a runtime of its own thread: on the slow connections' runtime its
    // requests would wait behind their thousands of wake-ups, and the figure would be the generator's.
    let normal = config.clone();
    let results = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(normal_client(&normal))
    })
    .await??;
    let open_at_end = counters.open.load(Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let mut latencies: Vec<u64> = results.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    let mut statuses = BTreeMap::new();
    for (status, _) in &results {
        *statuses.entry(*status).or_insert(0u64) += 1;
    }
    Ok(Report {
        slow: config.slow,
        mode: format!("{:?}", config.mode).to_lowercase(),
        open_at_start,
        open_at_end,
        closed_by_server: counters.closed_by_server.load(Ordering::Relaxed),
        connect_errors: counters.connect_errors.load(Ordering::Relaxed),
        normal_sent: results.len(),
        p50_ms: crate::loadgen::percentile_ms(&latencies, 0.50),
        p99_ms: crate::loadgen::percentile_ms(&latencies, 0.99),
        max_ms: crate::loadgen::percentile_ms(&latencies, 1.0),
        statuses,
        budget_ms: config.budget_ms,
    })
}

/// The normal client: `normal_rate` requests a second for `seconds`, each on a new connection; returns
/// (status, microseconds from its scheduled send time to the whole answer) per request.
async fn normal_client(config: &Config) -> anyhow::Result<Vec<(u16, u64)>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()?;
    let total = (config.normal_rate * config.seconds) as u64;
    let results = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let run = format!("{:x}", std::process::id());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / config.normal_rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let request = if config.get {
            client.get(&config.url)
        } else {
            client
                .post(&config.url)
                .header("content-type", "application/json")
                .body(crate::loadgen::body(&format!("slow-{run}-{i}")))
        };
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let status = match request.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            let micros = scheduled.elapsed().as_micros() as u64;
            results.lock().await.push((status, micros));
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let results = results.lock().await.clone();
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fast_successes_are_within_the_budget() {
        let check = |statuses: &[(u16, u64)], p99_ms: f64, expected: bool| {
            let report = Report {
                normal_sent: statuses.iter().map(|(_, n)| *n as usize).sum(),
                statuses: statuses.iter().copied().collect(),
                p99_ms,
                budget_ms: 100.0,
                ..Report::default()
            };
            assert_eq!(report.within_budget(), expected, "{statuses:?} {p99_ms}");
        };
        check(&[(202, 600)], 40.0, true);
        check(&[(202, 600)], 400.0, false);
        check(&[(202, 4), (503, 596)], 40.0, false);
        check(&[(200, 10), (0, 1)], 1.0, false);
        check(&[], 0.0, false);
    }

    #[test]
    fn urls_split_into_address_host_and_path() {
        let check = |url: &str, expected: Option<(&str, &str)>| {
            let got = target(url).ok().map(|(a, h, p)| (a.to_string(), h, p));
            let expected = expected.map(|(a, p)| (a.to_string(), a.to_string(), p.to_string()));
            assert_eq!(got, expected, "{url}");
        };
        check(
            "http://127.0.0.1:8080/telemetry",
            Some(("127.0.0.1:8080", "/telemetry")),
        );
        check("http://127.0.0.1:9000", Some(("127.0.0.1:9000", "/")));
        check("https://127.0.0.1:8080/", None);
    }

    #[test]
    fn slow_requests_never_complete_their_part() {
        let (head, slow) = slow_request(Mode::Headers, "h", "/telemetry", 10);
        assert!(head.is_empty());
        assert!(slow.starts_with(b"POST /telemetry HTTP/1.1\r\n"));
        assert!(!slow.windows(4).any(|w| w == b"\r\n\r\n"), "headers end");
        let (head, slow) = slow_request(Mode::Body, "h", "/telemetry", 262_144);
        assert!(head.ends_with(b"content-length: 262144\r\n\r\n"));
        assert!(slow.len() < 262_144);
    }
}
