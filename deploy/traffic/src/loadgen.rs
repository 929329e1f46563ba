//! The open-loop load generator `telemetry-loadgen` of `deploy/bench/ingest.sh` and `deploy/bench/e2e.sh`:
//! sends 1 KB `installing` bodies with distinct execution ids at a fixed rate and reports latency
//! percentiles measured from each request's scheduled send time (so a stalled server cannot hide its
//! queueing; a request the timer sent a little early counts from its departure, [`latency_origin`]), the
//! answers by kind, and its own CPU seconds per 1,000 requests (so a benchmark can take the
//! generator's share out of the machine's). It is built to cost as little as it can: the HTTP/1.1 request
//! is written from a template prepared once (each request only copies it and overwrites the fixed-width
//! id digits in place: no JSON building, no HTTP client), over a fixed set of keep-alive connections, one
//! task each, that take the next request of the schedule when they are free.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    /// Keep-alive connections, so also the most requests in flight at once; a request whose time has
    /// come waits for a free one (and its latency counts the wait). Default: 256 (connections).
    #[arg(env = "LOADGEN_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// Each request comes from its own made-up client address (198.18.0.0/15, the benchmarking range)
    /// in X-Forwarded-For, as a reverse proxy would forward it, so the edge's per-client rate limit
    /// sees many clients, as with real scripts. Off: every request is this machine's.
    #[arg(long, env = "LOADGEN_FORWARDED_FOR")]
    pub forwarded_for: bool,
    /// Also write the report as JSON to this file (the fields `deploy/bench/e2e.sh` reads).
    #[arg(long, env = "LOADGEN_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,
    /// Per-request deadline in seconds (write and whole answer); past it the request counts as a
    /// transport error and its connection is opened again.
    #[arg(long, env = "LOADGEN_TIMEOUT", default_value_t = 10.0)]
    pub timeout: f64,
}

/// What a run measured; its `Display` is the one line the bench scripts read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub sent: u64,
    pub elapsed_secs: f64,
    /// Requests sent per second over the run.
    pub achieved_rate: f64,
    /// 202 with `"status":"accepted"`.
    pub accepted: u64,
    /// 202 with `"status":"duplicate"`.
    pub duplicates: u64,
    /// 429 and 503 answers: load the edge shed.
    pub shed: u64,
    /// Answers other than 202, 429 and 503, by status code.
    pub unexpected_by_status: BTreeMap<u16, u64>,
    /// Connection failures, timeouts and broken answers.
    pub transport_errors: u64,
    #[serde(rename = "latency_p50_ms")]
    pub p50_ms: f64,
    #[serde(rename = "latency_p99_ms")]
    pub p99_ms: f64,
    pub p999_ms: f64,
    #[serde(rename = "latency_max_ms")]
    pub max_ms: f64,
    /// The server's share of the latency: from each request's departure (once it had a connection) to
    /// its whole answer, without the wait for a free connection. Real scripts each open their own
    /// connection, so this is what they would see; the gap to `p99_ms` is the generator's own queue.
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    /// Answers by HTTP status; 0 for a transport error.
    pub statuses: BTreeMap<u16, u64>,
    /// The generator's own CPU time (user + system) over the run, in seconds.
    pub cpu_secs: f64,
    /// `cpu_secs` per 1,000 requests sent.
    pub cpu_s_per_1k: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} elapsed_s={:.2} achieved_rps={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} service_p50_ms={:.2} service_p99_ms={:.2} statuses={:?} cpu_s={:.3} cpu_s_per_1k={:.4}",
            self.sent,
            self.elapsed_secs,
            self.achieved_rate,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.service_p50_ms,
            self.service_p99_ms,
            self.statuses,
            self.cpu_secs,
            self.cpu_s_per_1k,
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

/// How many decimal digits of the request number an id carries (enough for 10^10 requests).
const ID_DIGITS: usize = 10;

/// The request bytes prepared once: the head up to the optional X-Forwarded-For line, and a body whose
/// id digits (at `digits`) are overwritten per request.
#[derive(Debug, Clone)]
pub struct Template {
    head: Vec<u8>,
    body: Vec<u8>,
    digits: Vec<usize>,
    forwarded_for: bool,
}

impl Template {
    /// The template for `POST path` to `host`, ids `lg-{run}-{number}`.
    pub fn new(host: &str, path: &str, run: &str, forwarded_for: bool) -> Template {
        let placeholder = format!("lg-{run}-{}", "0".repeat(ID_DIGITS));
        let body = body(&placeholder).into_bytes();
        let digits = body
            .windows(placeholder.len())
            .enumerate()
            .filter(|(_, w)| *w == placeholder.as_bytes())
            .map(|(at, _)| at + placeholder.len() - ID_DIGITS)
            .collect();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )
        .into_bytes();
        Template {
            head,
            body,
            digits,
            forwarded_for,
        }
    }

    /// Writes request number `n` into `out` (cleared first).
    pub fn write(&self, n: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head);
        if self.forwarded_for {
            // 198.18.0.0/15 has 2^17 addresses; one per request, wrapping.
            let addr = Ipv4Addr::from(0xC612_0000u32 | (n as u32 & 0x1_FFFF));
            let _ = write!(out, "x-forwarded-for: {addr}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let start = out.len();
        out.extend_from_slice(&self.body);
        for &at in &self.digits {
            let mut rest = n;
            for slot in out[start + at..start + at + ID_DIGITS].iter_mut().rev() {
                *slot = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
        }
    }
}

/// One connection's tally, merged at the end.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    /// From departure to answer (see [`Report::service_p99_ms`]).
    service_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    accepted: u64,
    duplicates: u64,
}

/// Why one exchange failed.
#[derive(Debug)]
enum Exchange {
    /// The connection closed before any byte of the answer (a reused connection the server dropped).
    ClosedEarly,
    Failed,
}

/// Sends `rate * seconds` requests, request i at i/rate seconds, and waits for every answer.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        anyhow::bail!("RATE must be a number above 0");
    }
    if config.concurrency == 0 {
        anyhow::bail!("CONCURRENCY must be at least 1");
    }
    let url = reqwest::Url::parse(&config.url).context("URL")?;
    if url.scheme() != "http" {
        anyhow::bail!("URL must be http://");
    }
    let host = url.host_str().context("URL has no host")?.to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("URL's host has no address")?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let run = format!(
        "{:08x}",
        std::process::id() ^ (time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u32)
    );
    let template = Arc::new(Template::new(
        &format!("{host}:{port}"),
        &path,
        &run,
        config.forwarded_for,
    ));
    let total = (config.rate * config.seconds) as u64;
    let rate = config.rate;
    let timeout = Duration::from_secs_f64(config.timeout);
    let next = Arc::new(AtomicU64::new(0));

    let cpu_before = own_cpu_secs();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency.min(total.max(1) as usize) {
        let (template, next) = (template.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut conn: Option<TcpStream> = None;
            let mut request = Vec::with_capacity(2048);
            let mut answer = Vec::with_capacity(1024);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let scheduled = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(wake_for(scheduled)).await;
                let departs = tokio::time::Instant::now();
                let from = latency_origin(scheduled, departs);
                template.write(n, &mut request);
                let mut status = 0;
                // One retry on a fresh connection when a reused one was closed under us.
                for attempt in 0..2 {
                    let reused = conn.is_some();
                    let result = tokio::time::timeout(
                        timeout,
                        exchange(&mut conn, addr, &request, &mut answer),
                    )
                    .await;
                    match result {
                        Ok(Ok(got)) => {
                            status = got;
                            break;
                        }
                        Ok(Err(Exchange::ClosedEarly)) if reused && attempt == 0 => conn = None,
                        _ => {
                            conn = None;
                            break;
                        }
                    }
                }
                if status == 202 {
                    if find(&answer, b"\"accepted\"").is_some() {
                        tally.accepted += 1;
                    } else {
                        tally.duplicates += 1;
                    }
                }
                *tally.statuses.entry(status).or_insert(0) += 1;
                tally.latencies_us.push(from.elapsed().as_micros() as u64);
                tally.service_us.push(departs.elapsed().as_micros() as u64);
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.service_us.extend(tally.service_us);
        for (status, count) in tally.statuses {
            *all.statuses.entry(status).or_insert(0) += count;
        }
        all.accepted += tally.accepted;
        all.duplicates += tally.duplicates;
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let cpu_secs = own_cpu_secs() - cpu_before;
    all.latencies_us.sort_unstable();
    all.service_us.sort_unstable();
    let latencies = &all.latencies_us;
    let sent = latencies.len() as u64;
    let count = |s: u16| all.statuses.get(&s).copied().unwrap_or(0);
    let unexpected_by_status = all
        .statuses
        .iter()
        .filter(|(s, _)| ![0, 202, 429, 503].contains(*s))
        .map(|(s, n)| (*s, *n))
        .collect();
    let report = Report {
        sent,
        elapsed_secs,
        achieved_rate: sent as f64 / elapsed_secs,
        accepted: all.accepted,
        duplicates: all.duplicates,
        shed: count(429) + count(503),
        unexpected_by_status,
        transport_errors: count(0),
        p50_ms: percentile_ms(latencies, 0.50),
        p99_ms: percentile_ms(latencies, 0.99),
        p999_ms: percentile_ms(latencies, 0.999),
        max_ms: percentile_ms(latencies, 1.0),
        service_p50_ms: percentile_ms(&all.service_us, 0.50),
        service_p99_ms: percentile_ms(&all.service_us, 0.99),
        statuses: all.statuses,
        cpu_secs,
        cpu_s_per_1k: cpu_secs * 1000.0 / sent.max(1) as f64,
    };
    if let Some(path) = &config.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The resolution of Tokio's timer: it fires on whole milliseconds and rounds a deadline up to the next
/// one, so a request woken at its scheduled time would leave on average half a millisecond late (up to a
/// whole one), and a latency counted from the schedule would carry that delay of the generator's own.
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// When to wake for a request scheduled at `scheduled`: one timer tick before it, so that the timer's
/// rounding up brings the wake to the scheduled time at the latest (not up to a tick after it).
pub fn wake_for(scheduled: tokio::time::Instant) -> tokio::time::Instant {
    scheduled.checked_sub(TIMER_TICK).unwrap_or(scheduled)
}

/// Where a request's latency is counted from, given its scheduled time and the time it actually leaves:
/// the schedule when it leaves late (a request that waited for a free connection, or for a busy
/// generator, counts that wait: open loop, no coordinated omission), the departure when the early wake
/// of [`wake_for`] sent it before its time (the server had it only from then).
pub fn latency_origin(
    scheduled: tokio::time::Instant,
    departs: tokio::time::Instant,
) -> tokio::time::Instant {
    scheduled.min(departs)
}

/// Sends one request on `conn` (opening it when there is none) and reads the whole answer into
/// `answer`; returns its status.
async fn exchange(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    request: &[u8],
    answer: &mut Vec<u8>,
) -> Result<u16, Exchange> {
    if conn.is_none() {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| Exchange::Failed)?;
        let _ = stream.set_nodelay(true);
        *conn = Some(stream);
    }
    let Some(stream) = conn.as_mut() else {
        return Err(Exchange::Failed);
    };
    stream
        .write_all(request)
        .await
        .map_err(|_| Exchange::ClosedEarly)?;
    answer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.map_err(|_| {
            if answer.is_empty() {
                Exchange::ClosedEarly
            } else {
                Exchange::Failed
            }
        })?;
        if read == 0 {
            return Err(if answer.is_empty() {
                Exchange::ClosedEarly
            } else {
                Exchange::Failed
            });
        }
        answer.extend_from_slice(&chunk[..read]);
        if let Some((status, whole)) = parse_answer(answer) {
            if answer.len() >= whole {
                return Ok(status);
            }
        }
    }
}

/// The status and the total length (head and body) of an HTTP/1.1 answer whose head is complete in
/// `bytes`; `None` while the head is not complete. An answer without Content-Length has no body here.
pub fn parse_answer(bytes: &[u8]) -> Option<(u16, usize)> {
    let head_end = find(bytes, b"\r\n\r\n")? + 4;
    let head = &bytes[..head_end];
    let status = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    let length = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Some((status, head_end + length))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// This process's CPU time so far (user + system), in seconds, from `/proc/self/stat` (clock ticks
/// of `USER_HZ`, 100 on Linux; the same numbers `getrusage` gives, without `unsafe`).
pub fn own_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
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
    use std::time::Instant;

    #[test]
    fn the_body_is_a_valid_installing_event_of_one_kilobyte() {
        let body = body("lg-1-2");
        assert_eq!(body.len(), 1024);
        let accepted = schema::validate(body.as_bytes(), schema::Reception::now()).expect("valid");
        assert_eq!(accepted.event.execution_id, "lg-1-2");
        assert_eq!(accepted.event.status, schema::Status::Installing);
    }

    #[test]
    fn the_template_writes_distinct_valid_events_with_their_number() {
        let check = |forwarded_for: bool, n: u64, id: &str, xff: Option<&str>| {
            let template = Template::new("127.0.0.1:8080", "/telemetry", "0badcafe", forwarded_for);
            let mut out = Vec::new();
            template.write(n, &mut out);
            let text = String::from_utf8(out).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("head");
            assert!(head.starts_with("POST /telemetry HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"));
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let forwarded = head
                .lines()
                .find_map(|l| l.strip_prefix("x-forwarded-for: "));
            assert_eq!(forwarded, xff, "request {n}");
            let accepted =
                schema::validate(body.as_bytes(), schema::Reception::now()).expect("valid");
            assert_eq!(accepted.event.execution_id, id);
            assert_eq!(accepted.event.random_id, id);
        };
        check(false, 0, "lg-0badcafe-0000000000", None);
        check(false, 42, "lg-0badcafe-0000000042", None);
        check(
            true,
            9_876_543_210,
            "lg-0badcafe-9876543210",
            Some("198.18.22.234"),
        );
        check(true, 1, "lg-0badcafe-0000000001", Some("198.18.0.1"));
    }

    #[test]
    fn answers_are_complete_once_head_and_body_are_in() {
        let check = |bytes: &[u8], expected: Option<(u16, usize)>| {
            assert_eq!(
                parse_answer(bytes),
                expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let ok = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        check(ok, Some((202, ok.len())));
        check(&ok[..30], None);
        check(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\r\n",
            Some((503, 52)),
        );
    }

    #[test]
    fn latency_counts_from_the_schedule_unless_the_request_left_before_it() {
        let scheduled = tokio::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(wake_for(scheduled), scheduled - TIMER_TICK);
        let early = scheduled - Duration::from_micros(300);
        assert_eq!(latency_origin(scheduled, early), early);
        let late = scheduled + Duration::from_millis(40);
        assert_eq!(
            latency_origin(scheduled, late),
            scheduled,
            "a late request counts its wait"
        );
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

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let before = own_cpu_secs();
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(own_cpu_secs() > before, "no CPU time counted");
    }
}
