//! The load and demo tool `telemetry-simulate`: plays realistic script traffic against an ingest URL at a
//! given rate. Whole installs (installing, progress pings, a final; tools and add-ons a final only), the
//! scripts' retries that duplicate events, and a few of the broken bodies real scripts send, paced by a
//! tokio interval and bounded by a semaphore on requests in flight. The generators are pub so tests and
//! benchmarks can build the same bodies; `run` returns the [`Summary`] it prints.
//!
//! For loss checks under faults, `--retry-failed` retries a request that got no 2xx as the scripts do,
//! `--url` may name several edges (requests and retries go round-robin), and `--record` writes every
//! answer with the event's key ([`crate::record`]), so `telemetry-verify` can compare what was
//! acknowledged with what was stored.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fastrand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use crate::record;

/// How long the end of a run waits for requests still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What a final's second attempt keeps of the log, as the scripts do.
const RETRY_LOG_BYTES: usize = 16 * 1024;
/// The largest log the scripts send (`get_full_log 122880`).
const MAX_LOG_BYTES: usize = 120 * 1024;
/// The scripts' pause before retrying a request that got no 2xx.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Configuration of `telemetry-simulate`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-simulate",
    version,
    about = "Plays realistic helper-script telemetry at a given rate against an ingest URL."
)]
pub struct Config {
    /// Ingest endpoint the events are posted to; repeat the flag or separate with commas to spread
    /// requests (and retries) round-robin over several edges. Default: http://127.0.0.1:8080/telemetry.
    #[arg(
        long,
        env = "SIMULATE_URL",
        default_value = "http://127.0.0.1:8080/telemetry",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// Requests issued per second over all installs (events, not installs; retries and broken bodies
    /// count). Default: 50 per second.
    #[arg(long, env = "SIMULATE_RATE", default_value_t = 50.0)]
    pub rate: f64,
    /// Stop once this many installs were started and played to the end; 0 = unlimited, until Ctrl+C or
    /// --duration. Default: 0 (installs).
    #[arg(long, env = "SIMULATE_INSTALLS", default_value_t = 0)]
    pub installs: u64,
    /// Stop issuing after this many seconds; 0 = unlimited. Default: 0 (seconds).
    #[arg(long, env = "SIMULATE_DURATION", default_value_t = 0)]
    pub duration: u64,
    /// Most requests in flight at once; a tick finding none free is skipped. Default: 64 (requests).
    #[arg(long, env = "SIMULATE_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u32,
    /// Fraction of installs that do not succeed (failed, aborted by the user, or unknown), 0..1.
    /// Default: 0.10 (fraction).
    #[arg(long, env = "SIMULATE_FAILURE_RATE", default_value_t = 0.10)]
    pub failure_rate: f64,
    /// Fraction of requests replaced by a broken body (sent on its own, not part of an install), 0..1.
    /// Default: 0.01 (fraction).
    #[arg(long, env = "SIMULATE_BAD_RATE", default_value_t = 0.01)]
    pub bad_rate: f64,
    /// Fraction of installing and final events sent again as the scripts' retries do, 0..1.
    /// Default: 0.05 (fraction).
    #[arg(long, env = "SIMULATE_RETRY_RATE", default_value_t = 0.05)]
    pub retry_rate: f64,
    /// Seed for a reproducible mix of installs and broken bodies (ids stay unique per run).
    /// Default: none (random).
    #[arg(long, env = "SIMULATE_SEED")]
    pub seed: Option<u64>,
    /// Timeout of one request. Default: 10 (seconds).
    #[arg(long, env = "SIMULATE_TIMEOUT", default_value_t = 10)]
    pub timeout: u64,
    /// Do not print the progress line every second on stderr. Default: off.
    #[arg(long, env = "SIMULATE_QUIET")]
    pub quiet: bool,
    /// Also write the final summary as JSON to this file (for benchmarks). Default: none.
    #[arg(long, env = "SIMULATE_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,
    /// Send every request as this machine only, without an X-Forwarded-For header. By default each
    /// install comes from its own made-up client address (198.18.0.0/15, the benchmarking range) in
    /// X-Forwarded-For, as a reverse proxy in front of the edge would forward it, so the edge's
    /// per-client rate limit sees many users, as in production. Default: off.
    #[arg(long, env = "SIMULATE_NO_FORWARDED_FOR")]
    pub no_forwarded_for: bool,
    /// Retry a request that got no 2xx (an error status, a timeout, a refused connection) as the scripts
    /// do: the installing event up to 3 attempts, the final up to 3 with a shrinking body (the log cut to
    /// 16 KB, then the minimal field set), 1 s apart, each attempt to the next --url; progress pings are
    /// fire-and-forget. Default: off (every request is sent once).
    #[arg(long, env = "SIMULATE_RETRY_FAILED")]
    pub retry_failed: bool,
    /// Write one line per answered request of a valid event to this file, tab-separated:
    /// `execution_id`, the status the edge stores, the answer (`accepted`, `duplicate`, a status code
    /// or `transport`) and the event id of an `accepted` answer (else `-`). Default: none.
    #[arg(long, env = "SIMULATE_RECORD")]
    pub record: Option<PathBuf>,
}

impl Config {
    /// Checks the values clap cannot, so a bad config stops the run before the first request.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.urls()?;
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bail!("--rate must be above 0 and at most 1000000 events per second");
        }
        for (name, value) in [
            ("--failure-rate", self.failure_rate),
            ("--bad-rate", self.bad_rate),
            ("--retry-rate", self.retry_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                bail!("{name} must be a fraction between 0 and 1, got {value}");
            }
        }
        if self.concurrency == 0 || self.concurrency > 100_000 {
            bail!("--concurrency must be between 1 and 100000");
        }
        if self.timeout == 0 {
            bail!("--timeout must be at least 1 second");
        }
        Ok(())
    }

    /// The parsed `--url` values, at least one, all plain http.
    fn urls(&self) -> anyhow::Result<Vec<reqwest::Url>> {
        if self.url.is_empty() {
            bail!("--url needs at least one url");
        }
        self.url
            .iter()
            .map(|raw| {
                let url = reqwest::Url::parse(raw.trim())
                    .with_context(|| format!("--url {raw:?} is not a valid url"))?;
                if url.scheme() != "http" {
                    bail!(
                        "--url must be plain http (this build has no tls), got {}",
                        url.scheme()
                    );
                }
                Ok(url)
            })
            .collect()
    }

    fn mix(&self) -> Mix {
        Mix {
            failure_rate: self.failure_rate,
            retry_rate: self.retry_rate,
            id_salt: run_salt(),
        }
    }
}

/// What the final summary reports; `run` returns it and `--summary-json` writes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Requests issued (install events, retries and broken bodies).
    pub sent: u64,
    /// Requests that got an answer or a transport error before the end.
    pub answered: u64,
    /// Requests still open when the drain deadline passed.
    pub unfinished: u64,
    /// 202 with `"status":"accepted"`.
    pub accepted: u64,
    /// 202 with `"status":"duplicate"`.
    pub duplicates: u64,
    /// 4xx answers other than 429.
    pub rejected: u64,
    /// 4xx answers other than 429, by status code.
    pub rejected_by_status: BTreeMap<u16, u64>,
    /// Well-formed install events that were rejected (a correct edge keeps this at 0).
    pub rejected_valid: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Load shed by the edge: 429 plus 503.
    pub shed: u64,
    /// Any other status (other 5xx, 2xx other than 202, ...), by status code.
    pub unexpected_by_status: BTreeMap<u16, u64>,
    /// Connection failures, timeouts and broken answers.
    pub transport_errors: u64,
    /// Installing and final events sent again as a script retry.
    pub retries_sent: u64,
    /// Attempts sent again after one that got no 2xx (`--retry-failed`), counted in `sent`.
    pub retried_after_failure: u64,
    /// Install events whose last attempt got no 2xx.
    pub given_up: u64,
    /// Broken bodies sent.
    pub broken_sent: u64,
    /// What the edge answered to each kind of broken body: kind -> answer -> count.
    pub broken_answers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Broken bodies answered other than the contract says (shed and transport errors not counted).
    pub broken_unexpected: u64,
    pub installs_started: u64,
    /// Installs whose last event got its answer.
    pub installs_finished: u64,
    /// Why issuing stopped: `ctrl_c`, `duration` or `installs`.
    pub stopped_by: String,
    /// Whole run, including the drain, in seconds.
    pub elapsed_secs: f64,
    /// Requests issued per second while issuing.
    pub achieved_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

impl Summary {
    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "simulation summary (stopped by {})", self.stopped_by)?;
        writeln!(
            out,
            "  sent              {} ({} retries, {} broken), answered {}, unfinished {}",
            self.sent, self.retries_sent, self.broken_sent, self.answered, self.unfinished
        )?;
        writeln!(out, "  accepted          {}", self.accepted)?;
        writeln!(out, "  duplicates        {}", self.duplicates)?;
        writeln!(
            out,
            "  rejected          {}{} ({} of them well-formed install events)",
            self.rejected,
            by_status(&self.rejected_by_status),
            self.rejected_valid
        )?;
        writeln!(
            out,
            "  shed              {} (429: {}, 503: {})",
            self.shed, self.rate_limited, self.unavailable
        )?;
        if !self.unexpected_by_status.is_empty() {
            writeln!(
                out,
                "  unexpected       {}",
                by_status(&self.unexpected_by_status)
            )?;
        }
        writeln!(out, "  transport errors  {}", self.transport_errors)?;
        writeln!(
            out,
            "  without a 2xx     {} retried, {} given up",
            self.retried_after_failure, self.given_up
        )?;
        writeln!(
            out,
            "  installs          {} started, {} finished",
            self.installs_started, self.installs_finished
        )?;
        writeln!(
            out,
            "  elapsed           {:.1} s, achieved rate {:.1}/s",
            self.elapsed_secs, self.achieved_rate
        )?;
        writeln!(
            out,
            "  latency           p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_max_ms
        )?;
        if !self.broken_answers.is_empty() {
            writeln!(
                out,
                "  broken bodies     {} answered other than expected",
                self.broken_unexpected
            )?;
            for (kind, answers) in &self.broken_answers {
                let answers: Vec<String> =
                    answers.iter().map(|(a, n)| format!("{a}: {n}")).collect();
                writeln!(out, "    {kind:<16} {}", answers.join(", "))?;
            }
        }
        Ok(())
    }
}

fn by_status(map: &BTreeMap<u16, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = map.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    format!(" ({})", parts.join(", "))
}

// ---------------------------------------------------------------------------------------------------
// What is generated
// ---------------------------------------------------------------------------------------------------

/// The shape of the generated traffic.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Fraction of installs that do not succeed, 0..1.
    pub failure_rate: f64,
    /// Fraction of installing and final events that are sent again, 0..1.
    pub retry_rate: f64,
    /// Mixed into every generated id, so a seeded run replayed within the edge's dedup window still gets
    /// fresh ids. 0 in tests.
    pub id_salt: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            failure_rate: 0.10,
            retry_rate: 0.0,
            id_salt: 0,
        }
    }
}

/// Which script function sends the install's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallType {
    Lxc,
    Vm,
    Pve,
    Addon,
}

impl InstallType {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallType::Lxc => "lxc",
            InstallType::Vm => "vm",
            InstallType::Pve => "pve",
            InstallType::Addon => "addon",
        }
    }
}

/// How an install ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// `failed` with an exit code and a log.
    Failed,
    /// `failed` with exit code 130 (Ctrl+C); the edge stores it as aborted.
    Aborted,
    /// `unknown` with an exit code and a log (the scripts' fallback status).
    Unknown,
}

impl Outcome {
    /// Everything but success counts against `--failure-rate`.
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

/// What one request of an install is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Installing,
    Progress,
    Final,
    /// The installing event again, byte for byte.
    InstallingRetry,
    /// The final again: identical for a success, a shorter log (attempt 2) or the minimal field set
    /// (attempt 3) for a failure.
    FinalRetry,
}

impl StepKind {
    pub fn is_retry(self) -> bool {
        matches!(self, StepKind::InstallingRetry | StepKind::FinalRetry)
    }
}

/// One request of an install, in the order it is sent.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    pub body: String,
    /// The bodies of the attempts a script makes after one that got no 2xx (empty for pings and for
    /// the retries above, which are themselves such attempts).
    pub fallbacks: Vec<String>,
}

/// One whole install: its events in order, retries included.
#[derive(Debug, Clone)]
pub struct Install {
    /// `random_id` and `execution_id` of every event (the simulator sends both equal).
    pub execution_id: String,
    pub install_type: InstallType,
    pub nsapp: String,
    pub outcome: Outcome,
    pub steps: Vec<Step>,
}

/// Plays one install: what it is, how it ends, and the bodies of its requests.
pub fn generate_install(rng: &mut Rng, mix: &Mix) -> Install {
    let install_type = weighted(
        rng,
        &[
            (InstallType::Lxc, 70),
            (InstallType::Vm, 15),
            (InstallType::Pve, 10),
            (InstallType::Addon, 5),
        ],
    );
    generate_install_of(rng, mix, install_type)
}

/// Like [`generate_install`], for a given type.
pub fn generate_install_of(rng: &mut Rng, mix: &Mix, install_type: InstallType) -> Install {
    let ctx = Facts::new(rng, mix, install_type);
    let outcome = if rng.f64() < mix.failure_rate {
        weighted(
            rng,
            &[
                (Outcome::Failed, 80),
                (Outcome::Aborted, 12),
                (Outcome::Unknown, 8),
            ],
        )
    } else {
        Outcome::Success
    };
    let mut steps = Vec::with_capacity(6);
    if matches!(install_type, InstallType::Lxc | InstallType::Vm) {
        let installing = ctx.installing_body().to_string();
        let retried = rng.f64() < mix.retry_rate;
        steps.push(Step {
            kind: StepKind::Installing,
            body: installing.clone(),
            fallbacks: vec![installing.clone(), installing.clone()],
        });
        if retried {
            steps.push(Step {
                kind: StepKind::InstallingRetry,
                body: installing,
                fallbacks: Vec::new(),
            });
        }
        // From the host, then from inside the container; status never goes backwards.
        let pings: &[&str] = match rng.u8(0..4) {
            0 => &["validation"],
            1 => &["configuring"],
            2 => &["validation", "configuring"],
            _ => &["validation", "configuring", "configuring"],
        };
        for status in pings {
            steps.push(Step {
                kind: StepKind::Progress,
                body: ctx.ping_body(status).to_string(),
                fallbacks: Vec::new(),
            });
        }
    }
    let end = ctx.end(rng, outcome);
    steps.push(Step {
        kind: StepKind::Final,
        body: ctx.final_body(&end, &end.error).to_string(),
        fallbacks: vec![
            ctx.final_body(&end, &shrink_log(&end.error, RETRY_LOG_BYTES))
                .to_string(),
            ctx.minimal_final_body(&end).to_string(),
        ],
    });
    if rng.f64() < mix.retry_rate {
        if outcome.is_failure() {
            steps.push(Step {
                kind: StepKind::FinalRetry,
                body: ctx
                    .final_body(&end, &shrink_log(&end.error, RETRY_LOG_BYTES))
                    .to_string(),
                fallbacks: Vec::new(),
            });
            if rng.bool() {
                steps.push(Step {
                    kind: StepKind::FinalRetry,
                    body: ctx.minimal_final_body(&end).to_string(),
                    fallbacks: Vec::new(),
                });
            }
        } else {
            steps.push(Step {
                kind: StepKind::FinalRetry,
                body: ctx.final_body(&end, &end.error).to_string(),
                fallbacks: Vec::new(),
            });
        }
    }
    Install {
        execution_id: ctx.id,
        install_type,
        nsapp: ctx.nsapp.to_owned(),
        outcome,
        steps,
    }
}

/// The bodies of one install, in order.
pub fn install_events(rng: &mut Rng, mix: &Mix) -> Vec<String> {
    generate_install(rng, mix)
        .steps
        .into_iter()
        .map(|step| step.body)
        .collect()
}

/// The kinds of broken body real scripts send (contract §4 and the `bad_*` payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenKind {
    /// `"disk_size": ,`
    EmptyNumeric,
    /// `"disk_size": 32G`
    UnitSuffix,
    /// A raw newline, tab and ESC inside the error string.
    RawControl,
    /// Latin-1 bytes in the log.
    InvalidUtf8,
    /// The body cut in the middle of the error string.
    Truncated,
    /// `"disk_size": 4.5`
    WrongType,
    /// `"core_count": 512`
    OutOfRange,
}

impl BrokenKind {
    pub const ALL: [BrokenKind; 7] = [
        BrokenKind::EmptyNumeric,
        BrokenKind::UnitSuffix,
        BrokenKind::RawControl,
        BrokenKind::InvalidUtf8,
        BrokenKind::Truncated,
        BrokenKind::WrongType,
        BrokenKind::OutOfRange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BrokenKind::EmptyNumeric => "empty_numeric",
            BrokenKind::UnitSuffix => "unit_suffix",
            BrokenKind::RawControl => "raw_control",
            BrokenKind::InvalidUtf8 => "invalid_utf8",
            BrokenKind::Truncated => "truncated",
            BrokenKind::WrongType => "wrong_type",
            BrokenKind::OutOfRange => "out_of_range",
        }
    }

    /// The status the contract asks for: rescued kinds are accepted, the rest are a 400.
    pub fn expected_status(self) -> u16 {
        match self {
            BrokenKind::EmptyNumeric
            | BrokenKind::UnitSuffix
            | BrokenKind::RawControl
            | BrokenKind::InvalidUtf8 => 202,
            BrokenKind::Truncated | BrokenKind::WrongType | BrokenKind::OutOfRange => 400,
        }
    }
}

/// A broken body of a random kind.
pub fn random_broken(rng: &mut Rng, mix: &Mix) -> (BrokenKind, Vec<u8>) {
    let kind = BrokenKind::ALL[rng.usize(..BrokenKind::ALL.len())];
    (kind, broken_body(rng, mix, kind))
}

/// A broken body of the given kind, built from a well-formed event of a fresh install.
pub fn broken_body(rng: &mut Rng, mix: &Mix, kind: BrokenKind) -> Vec<u8> {
    match kind {
        BrokenKind::EmptyNumeric => {
            let ctx = Facts::new(rng, mix, InstallType::Lxc);
            let body = format!("{:#}", ctx.installing_body());
            replace_number(&body, "disk_size", "").into_bytes()
        }
        BrokenKind::UnitSuffix => {
            let ctx = Facts::new(rng, mix, InstallType::Vm);
            let end = ctx.end(rng, Outcome::Success);
            let body = format!("{:#}", ctx.final_body(&end, &end.error));
            let sized = format!("{}G", ctx.disk_size);
            replace_number(&body, "disk_size", &sized).into_bytes()
        }
        BrokenKind::RawControl => {
            let (ctx, end) = failed_install(rng, mix);
            let error = format!(
                "{}\n\u{1b}[31m[ERROR]\u{1b}[0m\tin line {}: exit code {}",
                end.error,
                rng.u32(20..400),
                end.exit_code
            );
            ctx.final_body(&end, &error)
                .to_string()
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace("\\u001b", "\u{1b}")
                .into_bytes()
        }
        BrokenKind::InvalidUtf8 => {
            const MARKER: &str = "@@latin1@@";
            let (ctx, end) = failed_install(rng, mix);
            let error = format!("{}\n{MARKER}", end.error);
            let body = ctx.final_body(&end, &error).to_string();
            let latin1: &[u8] = match rng.u8(0..3) {
                0 => b"Fehler: Datei \xE9chou\xE9e \xE0 l'\xE9tape 3 \xB0C",
                1 => b"Erreur: r\xE9pertoire introuvable \xAB/opt/app\xBB",
                _ => b"Gr\xF6\xDFe \xFCberschritten, Vorgang abgebrochen",
            };
            let mut bytes = Vec::with_capacity(body.len() + latin1.len());
            match body.split_once(MARKER) {
                Some((head, tail)) => {
                    bytes.extend_from_slice(head.as_bytes());
                    bytes.extend_from_slice(latin1);
                    bytes.extend_from_slice(tail.as_bytes());
                }
                None => bytes.extend_from_slice(body.as_bytes()),
            }
            bytes
        }
        BrokenKind::Truncated => {
            let (ctx, end) = failed_install(rng, mix);
            let body = ctx.final_body(&end, &end.error).to_string();
            // The error always holds at least "exit_code=N | ...", so the cut lands inside the string.
            let start = body
                .find("\"error\":\"")
                .map_or(body.len() / 2, |at| at + 9);
            let mut cut = (start + rng.usize(5..40)).min(body.len() - 1);
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut bytes = body.into_bytes();
            bytes.truncate(cut);
            bytes
        }
        BrokenKind::WrongType => {
            let ctx = Facts::new(rng, mix, InstallType::Lxc);
            let body = format!("{:#}", ctx.installing_body());
            let fraction = format!("{}.5", ctx.disk_size);
            replace_number(&body, "disk_size", &fraction).into_bytes()
        }
        BrokenKind::OutOfRange => {
            let ctx = Facts::new(rng, mix, InstallType::Lxc);
            let body = ctx.installing_body().to_string();
            let cores = ["512", "1024", "300"][rng.usize(..3)];
            replace_number(&body, "core_count", cores).into_bytes()
        }
    }
}

fn failed_install(rng: &mut Rng, mix: &Mix) -> (Facts, End) {
    let ctx = Facts::new(rng, mix, InstallType::Lxc);
    let end = ctx.end(rng, Outcome::Failed);
    (ctx, end)
}

/// Replaces the raw value of the numeric field `name` (up to the next `,`, `}` or newline).
fn replace_number(body: &str, name: &str, raw: &str) -> String {
    let key = format!("\"{name}\":");
    let Some(at) = body.find(&key) else {
        return body.to_owned();
    };
    let value_start = at + key.len();
    let rest = &body[value_start..];
    let blanks = rest.len() - rest.trim_start_matches(' ').len();
    let value_len = rest[blanks..]
        .find([',', '}', '\n'])
        .unwrap_or(rest.len() - blanks);
    let end = value_start + blanks + value_len;
    format!("{}{}{}", &body[..value_start + blanks], raw, &body[end..])
}

/// Keeps the description line and the end of a log, within `max` bytes, as the scripts' second attempt
/// does.
fn shrink_log(error: &str, max: usize) -> String {
    if error.len() <= max {
        return error.to_owned();
    }
    let header_len = error.find("---\n").map_or(0, |at| at + 4).min(max / 2);
    let mut tail_start = error.len() - (max - header_len);
    while !error.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let mut header_end = header_len;
    while !error.is_char_boundary(header_end) {
        header_end -= 1;
    }
    format!("{}{}", &error[..header_end], &error[tail_start..])
}

/// Everything about one install that stays the same over its events.
struct Facts {
    id: String,
    install_type: InstallType,
    nsapp: &'static str,
    ct_type: u8,
    disk_size: u32,
    core_count: u32,
    ram_size: u32,
    os_type: &'static str,
    os_version: &'static str,
    pve_version: &'static str,
    method: &'static str,
    hardware: &'static Hardware,
    repo_source: &'static str,
}

/// How an install ended, as its final event says.
struct End {
    status: &'static str,
    exit_code: u8,
    error: String,
    error_category: &'static str,
    install_duration: u32,
}

impl Facts {
    fn new(rng: &mut Rng, mix: &Mix, install_type: InstallType) -> Facts {
        let id = new_id(rng, mix.id_salt);
        let hardware = &HARDWARE[zipf_index(rng, HARDWARE.len())];
        let pve_version = PVE_VERSIONS[zipf_index(rng, PVE_VERSIONS.len())];
        let method = if rng.u8(0..4) == 0 {
            "advanced"
        } else {
            "default"
        };
        let repo_source = weighted(
            rng,
            &[("ProxmoxVE", 88), ("ProxmoxVED", 9), ("external", 3)],
        );
        let (nsapp, ct_type, os_type, os_version, disk_size, core_count, ram_size) =
            match install_type {
                InstallType::Lxc => {
                    let (os_type, os_version) = weighted(
                        rng,
                        &[
                            (("debian", "13"), 52),
                            (("debian", "12"), 28),
                            (("ubuntu", "24.04"), 9),
                            (("ubuntu", "22.04"), 3),
                            (("alpine", "3.22"), 6),
                            (("alpine", "3.21"), 2),
                        ],
                    );
                    (
                        APPS[zipf_index(rng, APPS.len())],
                        if rng.u8(0..7) == 0 { 0 } else { 1 },
                        os_type,
                        os_version,
                        weighted(
                            rng,
                            &[
                                (2, 10),
                                (4, 25),
                                (6, 10),
                                (8, 25),
                                (10, 8),
                                (16, 10),
                                (20, 7),
                                (32, 5),
                            ],
                        ),
                        weighted(rng, &[(1, 25), (2, 50), (4, 20), (8, 5)]),
                        weighted(
                            rng,
                            &[(512, 15), (1024, 25), (2048, 35), (4096, 18), (8192, 7)],
                        ),
                    )
                }
                InstallType::Vm => {
                    let vm = &VMS[zipf_index(rng, VMS.len())];
                    (
                        vm.name,
                        2,
                        vm.os_type,
                        vm.os_version,
                        weighted(rng, &[(8, 10), (16, 15), (32, 50), (64, 20), (128, 5)]),
                        weighted(rng, &[(2, 55), (4, 35), (8, 10)]),
                        weighted(rng, &[(2048, 35), (4096, 40), (8192, 20), (16384, 5)]),
                    )
                }
                InstallType::Pve => (TOOLS[zipf_index(rng, TOOLS.len())], 0, "", "", 0, 0, 0),
                InstallType::Addon => {
                    let (os_type, os_version) = weighted(
                        rng,
                        &[
                            (("debian", "12"), 50),
                            (("debian", "13"), 40),
                            (("ubuntu", "24.04"), 10),
                        ],
                    );
                    (
                        ADDONS[zipf_index(rng, ADDONS.len())],
                        0,
                        os_type,
                        os_version,
                        0,
                        0,
                        0,
                    )
                }
            };
        Facts {
            id,
            install_type,
            nsapp,
            ct_type,
            disk_size,
            core_count,
            ram_size,
            os_type,
            os_version,
            pve_version,
            method,
            hardware,
            repo_source,
        }
    }

    /// `post_to_api` / `post_to_api_vm`.
    fn installing_body(&self) -> Value {
        let hw = self.hardware;
        json!({
            "random_id": self.id,
            "execution_id": self.id,
            "type": self.install_type.as_str(),
            "nsapp": self.nsapp,
            "status": "installing",
            "ct_type": self.ct_type,
            "disk_size": self.disk_size,
            "core_count": self.core_count,
            "ram_size": self.ram_size,
            "os_type": self.os_type,
            "os_version": self.os_version,
            "pve_version": self.pve_version,
            "method": self.method,
            "cpu_vendor": hw.cpu_vendor,
            "cpu_model": hw.cpu_model,
            "gpu_vendor": hw.gpu_vendor,
            "gpu_model": hw.gpu_model,
            "gpu_passthrough": hw.gpu_passthrough,
            "ram_speed": hw.ram_speed,
            "repo_source": self.repo_source,
        })
    }

    /// `post_progress_to_api`: five fields only.
    fn ping_body(&self, status: &str) -> Value {
        json!({
            "random_id": self.id,
            "execution_id": self.id,
            "type": self.install_type.as_str(),
            "nsapp": self.nsapp,
            "status": status,
        })
    }

    /// `post_update_to_api`, `post_tool_to_api` or `post_addon_to_api`, first or second attempt.
    fn final_body(&self, end: &End, error: &str) -> Value {
        let hw = self.hardware;
        match self.install_type {
            InstallType::Lxc | InstallType::Vm => json!({
                "random_id": self.id,
                "execution_id": self.id,
                "type": self.install_type.as_str(),
                "nsapp": self.nsapp,
                "status": end.status,
                "ct_type": self.ct_type,
                "disk_size": self.disk_size,
                "core_count": self.core_count,
                "ram_size": self.ram_size,
                "os_type": self.os_type,
                "os_version": self.os_version,
                "pve_version": self.pve_version,
                "method": self.method,
                "exit_code": end.exit_code,
                "error": error,
                "error_category": end.error_category,
                "install_duration": end.install_duration,
                "cpu_vendor": hw.cpu_vendor,
                "cpu_model": hw.cpu_model,
                "gpu_vendor": hw.gpu_vendor,
                "gpu_model": hw.gpu_model,
                "gpu_passthrough": hw.gpu_passthrough,
                "ram_speed": hw.ram_speed,
                "repo_source": self.repo_source,
            }),
            InstallType::Pve => json!({
                "random_id": self.id,
                "execution_id": self.id,
                "type": "pve",
                "nsapp": self.nsapp,
                "status": end.status,
                "exit_code": end.exit_code,
                "error": error,
                "error_category": end.error_category,
                "install_duration": end.install_duration,
                "pve_version": self.pve_version,
                "repo_source": self.repo_source,
            }),
            InstallType::Addon => json!({
                "random_id": self.id,
                "execution_id": self.id,
                "type": "addon",
                "nsapp": self.nsapp,
                "status": end.status,
                "exit_code": end.exit_code,
                "error": error,
                "error_category": end.error_category,
                "install_duration": end.install_duration,
                "os_type": self.os_type,
                "os_version": self.os_version,
                "repo_source": self.repo_source,
            }),
        }
    }

    /// The third attempt of a final: the minimal field set, the error description only.
    fn minimal_final_body(&self, end: &End) -> Value {
        let description = end.error.lines().next().unwrap_or_default();
        json!({
            "random_id": self.id,
            "execution_id": self.id,
            "type": self.install_type.as_str(),
            "nsapp": self.nsapp,
            "status": end.status,
            "exit_code": end.exit_code,
            "error": description,
            "error_category": end.error_category,
            "install_duration": end.install_duration,
        })
    }

    fn end(&self, rng: &mut Rng, outcome: Outcome) -> End {
        let typical = match self.install_type {
            InstallType::Lxc => 60 + rng.u32(0..420) + rng.u32(0..420),
            InstallType::Vm => 40 + rng.u32(0..200) + rng.u32(0..200),
            InstallType::Pve => 3 + rng.u32(0..60) + rng.u32(0..60),
            InstallType::Addon => 8 + rng.u32(0..90) + rng.u32(0..90),
        };
        match outcome {
            Outcome::Success => End {
                status: "success",
                exit_code: 0,
                error: String::new(),
                error_category: "",
                install_duration: typical,
            },
            Outcome::Aborted => {
                let mut error = String::from("exit_code=130 | Aborted by user (SIGINT)");
                if rng.bool() {
                    error.push_str("\n---\n");
                    let mut lines = Vec::new();
                    preamble(rng, self.nsapp, &mut lines);
                    lines.push("^C".to_owned());
                    error.push_str(&lines.join("\n"));
                }
                End {
                    status: "failed",
                    exit_code: 130,
                    error,
                    error_category: "user_aborted",
                    install_duration: 2 + typical / 3,
                }
            }
            Outcome::Failed | Outcome::Unknown => {
                let failure = weighted_ref(rng, FAILURES);
                End {
                    status: if outcome == Outcome::Unknown {
                        "unknown"
                    } else {
                        "failed"
                    },
                    exit_code: failure.code,
                    error: failure_log(rng, self.nsapp, failure),
                    // Some scripts leave the category to the edge (derived from the exit code).
                    error_category: if rng.u8(0..10) == 0 {
                        ""
                    } else {
                        failure.category
                    },
                    install_duration: 5 + typical / 2,
                }
            }
        }
    }
}

/// A fresh id, v4-like random or UUIDv7, mixed with the run's salt.
fn new_id(rng: &mut Rng, salt: u64) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    for (byte, s) in bytes.iter_mut().zip(salt.to_le_bytes().iter().cycle()) {
        *byte ^= s;
    }
    if rng.bool() {
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    } else {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut random = [0u8; 10];
        random.copy_from_slice(&bytes[6..]);
        uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .to_string()
    }
}

fn run_salt() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32)
}

/// A Zipf-like rank in `0..n` (exponent 1): rank 0 about 12% for n = 300, the top ten about 40%.
fn zipf_index(rng: &mut Rng, n: usize) -> usize {
    let x = ((n + 1) as f64).powf(rng.f64());
    (x.floor() as usize).saturating_sub(1).min(n - 1)
}

fn weighted<T: Copy>(rng: &mut Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.u32(0..total);
    for (item, weight) in items {
        if pick < *weight {
            return *item;
        }
        pick -= weight;
    }
    items[items.len() - 1].0
}

fn weighted_ref<'a>(rng: &mut Rng, items: &'a [FailureCode]) -> &'a FailureCode {
    let total: u32 = items.iter().map(|f| f.weight).sum();
    let mut pick = rng.u32(0..total);
    for item in items {
        if pick < item.weight {
            return item;
        }
        pick -= item.weight;
    }
    &items[items.len() - 1]
}

// ---------------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum LogFlavour {
    Apt,
    Network,
    Node,
    Python,
    Storage,
    Service,
    Database,
    Killed,
    Generic,
}

struct FailureCode {
    code: u8,
    category: &'static str,
    description: &'static str,
    weight: u32,
    flavour: LogFlavour,
}

const fn failure(
    code: u8,
    category: &'static str,
    description: &'static str,
    weight: u32,
    flavour: LogFlavour,
) -> FailureCode {
    FailureCode {
        code,
        category,
        description,
        weight,
        flavour,
    }
}

/// Exit codes seen in failed installs, with the contract's category and a rough share.
#[rustfmt::skip]
const FAILURES: &[FailureCode] = &[
    failure(100, "apt", "APT: Package manager error (broken packages / dependency problems)", 14, LogFlavour::Apt),
    failure(101, "apt", "APT: Configuration error (bad sources.list, malformed config)", 5, LogFlavour::Apt),
    failure(102, "apt", "APT: Lock held by another process (dpkg/apt still running)", 3, LogFlavour::Apt),
    failure(6, "network", "curl: DNS resolution failed (could not resolve host)", 6, LogFlavour::Network),
    failure(7, "network", "curl: Failed to connect (network unreachable / host down)", 6, LogFlavour::Network),
    failure(22, "network", "curl: HTTP error returned (404, 429, 500+)", 9, LogFlavour::Network),
    failure(28, "timeout", "curl: Operation timeout (network slow or server not responding)", 5, LogFlavour::Network),
    failure(121, "network", "LXC: Container network not ready (no IP after retries)", 4, LogFlavour::Network),
    failure(1, "unknown", "General error / Operation not permitted", 12, LogFlavour::Generic),
    failure(2, "unknown", "Misuse of shell builtins (e.g. syntax error)", 2, LogFlavour::Generic),
    failure(127, "command_not_found", "Command not found", 4, LogFlavour::Generic),
    failure(126, "permission", "Command invoked cannot execute (permission problem)", 1, LogFlavour::Generic),
    failure(137, "resource", "Killed (SIGKILL / Out of memory?)", 5, LogFlavour::Killed),
    failure(143, "signal", "Terminated (SIGTERM)", 1, LogFlavour::Killed),
    failure(243, "resource", "Node.js: Out of memory (JavaScript heap out of memory)", 4, LogFlavour::Node),
    failure(239, "dependency", "Node.js: npm install failed (dependency resolution)", 3, LogFlavour::Node),
    failure(160, "dependency", "Python: Virtualenv / uv environment missing or broken", 4, LogFlavour::Python),
    failure(161, "dependency", "Python: pip / uv could not install a requirement", 2, LogFlavour::Python),
    failure(214, "storage", "Proxmox: Not enough storage space", 4, LogFlavour::Storage),
    failure(150, "service", "Systemd: Service failed to start", 3, LogFlavour::Service),
    failure(170, "database", "Database: Connection to the database server failed", 2, LogFlavour::Database),
];

#[rustfmt::skip]
const PACKAGES: &[&str] = &[
    "curl", "sudo", "mc", "gnupg", "ca-certificates", "git", "build-essential", "python3-venv",
    "nodejs", "ffmpeg", "libssl3", "postgresql-17", "redis-server", "nginx", "jq", "unzip",
    "libvips42", "imagemagick", "openjdk-21-jre-headless", "mariadb-server", "sqlite3", "zstd",
];

#[rustfmt::skip]
const HOSTS: &[&str] = &[
    "github.com", "objects.githubusercontent.com", "deb.debian.org", "registry.npmjs.org",
    "pypi.org", "download.docker.com", "repo.jellyfin.org", "dl-cdn.alpinelinux.org",
    "raw.githubusercontent.com",
];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

fn version(rng: &mut Rng) -> String {
    format!("{}.{}.{}-1", rng.u8(0..4), rng.u8(0..30), rng.u8(0..12))
}

/// The lines every install log starts with.
fn preamble(rng: &mut Rng, app: &str, lines: &mut Vec<String>) {
    lines.push(" \u{2714}\u{fe0f}   Set up Container OS".to_owned());
    lines.push(" \u{2714}\u{fe0f}   Network Connected".to_owned());
    lines.push(" \u{2714}\u{fe0f}   Updated Container OS".to_owned());
    if rng.bool() {
        lines.push(" \u{2714}\u{fe0f}   Installed Dependencies".to_owned());
    }
    lines.push(format!(" \u{23f3}  Setting up {app}"));
}

fn apt_lines(rng: &mut Rng, lines: &mut Vec<String>, count: usize) {
    for n in 0..count {
        let pkg = pick(rng, PACKAGES);
        let ver = version(rng);
        lines.push(match rng.u8(0..5) {
            0 => format!(
                "Get:{} http://deb.debian.org/debian trixie/main amd64 {pkg} amd64 {ver} [{} kB]",
                n + 1,
                rng.u32(8..9000)
            ),
            1 => format!("Selecting previously unselected package {pkg}:amd64."),
            2 => format!("Preparing to unpack .../{pkg}_{ver}_amd64.deb ..."),
            3 => format!("Unpacking {pkg}:amd64 ({ver}) ..."),
            _ => format!("Setting up {pkg}:amd64 ({ver}) ..."),
        });
    }
}

fn npm_lines(rng: &mut Rng, lines: &mut Vec<String>, count: usize) {
    for _ in 0..count {
        lines.push(match rng.u8(0..4) {
            0 => "npm WARN deprecated inflight@1.0.6: This module is not supported, and leaks memory."
                .to_owned(),
            1 => "npm WARN deprecated glob@7.2.3: Glob versions prior to v9 are no longer supported"
                .to_owned(),
            2 => format!(
                "added {} packages, and audited {} packages in {}s",
                rng.u32(200..1800),
                rng.u32(1800..2000),
                rng.u32(20..240)
            ),
            _ => format!("npm http fetch GET 200 https://registry.npmjs.org/@types%2fnode {}ms (cache miss)", rng.u32(20..900)),
        });
    }
}

/// A multi-line log as `build_error_string` makes it: `exit_code=N | description`, `---`, the log.
fn failure_log(rng: &mut Rng, app: &str, failure: &FailureCode) -> String {
    let mut lines = Vec::new();
    preamble(rng, app, &mut lines);
    let host = pick(rng, HOSTS);
    let count = rng.usize(3..30);
    match failure.flavour {
        LogFlavour::Apt => {
            apt_lines(rng, &mut lines, count);
            lines.push(
                match failure.code {
                    101 => format!("E: Malformed entry 3 in list file /etc/apt/sources.list.d/{app}.list (Component)"),
                    102 => format!("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process {} (apt-get)", rng.u32(300..9000)),
                    _ => format!("dpkg: error processing package {} (--configure):\nE: Sub-process /usr/bin/dpkg returned an error code (1)", pick(rng, PACKAGES)),
                },
            );
        }
        LogFlavour::Network => {
            apt_lines(rng, &mut lines, count / 2);
            lines.push(match failure.code {
                6 => format!("curl: (6) Could not resolve host: {host}"),
                7 => format!("curl: (7) Failed to connect to {host} port 443 after {} ms: Couldn't connect to server", rng.u32(1000..30000)),
                22 => format!("curl: (22) The requested URL returned error: {}", pick(rng, &["404", "429", "500", "502", "503"])),
                28 => format!("curl: (28) Operation timed out after {} milliseconds with 0 bytes received", rng.u32(10000..60000)),
                _ => " \u{2716}\u{fe0f}   No Network! (no IPv4 address after 20 retries)".to_owned(),
            });
            lines.push(format!(
                " \u{2716}\u{fe0f}   Failed to download {app} release asset"
            ));
        }
        LogFlavour::Node => {
            npm_lines(rng, &mut lines, count);
            if failure.code == 243 {
                lines.push("<--- Last few GCs --->".to_owned());
                lines.push("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory".to_owned());
            } else {
                lines.push("npm ERR! code ERESOLVE".to_owned());
                lines.push("npm ERR! ERESOLVE unable to resolve dependency tree".to_owned());
            }
        }
        LogFlavour::Python => {
            for _ in 0..count {
                lines.push(format!(
                    "Collecting {}>={}",
                    pick(
                        rng,
                        &["requests", "fastapi", "uvicorn", "psycopg", "numpy", "pydantic"]
                    ),
                    version(rng)
                ));
            }
            lines.push(if failure.code == 160 {
                "error: No virtual environment found; run `uv venv` to create an environment"
                    .to_owned()
            } else {
                format!(
                    "ERROR: Could not find a version that satisfies the requirement psycopg[c]=={}",
                    version(rng)
                )
            });
        }
        LogFlavour::Storage => {
            lines.push(format!(" \u{2716}\u{fe0f}   Storage 'local-lvm' does not have enough free space (needs {}G)", rng.u32(4..64)));
            lines.push(format!(
                "TASK ERROR: unable to create CT {} - no space left on device",
                rng.u32(100..999)
            ));
        }
        LogFlavour::Service => {
            apt_lines(rng, &mut lines, count);
            lines.push(format!(
                "Job for {app}.service failed because the control process exited with error code."
            ));
            lines.push(format!("See \"systemctl status {app}.service\" and \"journalctl -xeu {app}.service\" for details."));
        }
        LogFlavour::Database => {
            apt_lines(rng, &mut lines, count / 2);
            lines.push("psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: No such file or directory".to_owned());
        }
        LogFlavour::Killed => {
            npm_lines(rng, &mut lines, count / 2);
            lines.push("Killed".to_owned());
        }
        LogFlavour::Generic => {
            apt_lines(rng, &mut lines, count / 2);
            if failure.code == 127 {
                lines.push(format!(
                    "/tmp/install.sh: line {}: {}: command not found",
                    rng.u32(20..300),
                    pick(rng, &["uv", "yarn", "pnpm", "go", "cargo"])
                ));
            }
        }
    }
    // Something for the edge's privacy masking to do.
    if rng.u8(0..6) == 0 {
        let line = format!(
            "Connecting to {host} ({host})|{}.{}.{}.{}|:443... connected.",
            pick(rng, &["140", "151", "185", "104", "192"]),
            rng.u8(0..=255),
            rng.u8(0..=255),
            rng.u8(1..255)
        );
        let at = rng.usize(1..lines.len());
        lines.insert(at, line);
    }
    if rng.u8(0..20) == 0 {
        let line = format!(
            "Saving debug log to /var/log/letsencrypt/letsencrypt.log\nAccount registered for {}@{}",
            pick(rng, &["admin", "me", "homelab", "j.doe"]),
            pick(rng, &["example.org", "gmail.com", "posteo.de", "proton.me"])
        );
        let at = rng.usize(1..lines.len());
        lines.insert(at, line);
    }
    // Now and then the whole build output comes along (up to the scripts' 120 KB).
    if rng.u8(0..33) == 0 {
        let target = rng.usize(20_000..MAX_LOG_BYTES - 4_096);
        let mut filler = Vec::new();
        let mut size = 0;
        while size < target {
            let before = filler.len();
            apt_lines(rng, &mut filler, 16);
            npm_lines(rng, &mut filler, 4);
            size += filler[before..].iter().map(|l| l.len() + 1).sum::<usize>();
        }
        let at = rng.usize(1..lines.len());
        lines.splice(at..at, filler);
    }
    lines.push(format!(
        "\u{1b}[31m[ERROR]\u{1b}[0m in line {}: exit code {} ({}): while executing command {}",
        rng.u32(20..400),
        failure.code,
        failure.description,
        pick(
            rng,
            &[
                "$STD apt-get install -y",
                "curl -fsSL",
                "npm ci",
                "uv sync",
                "systemctl start"
            ]
        )
    ));
    let mut log = format!(
        "exit_code={} | {}\n---\n{}",
        failure.code,
        failure.description,
        lines.join("\n")
    );
    if log.len() > MAX_LOG_BYTES {
        log = shrink_log(&log, MAX_LOG_BYTES);
    }
    log
}

// ---------------------------------------------------------------------------------------------------
// Catalogue
// ---------------------------------------------------------------------------------------------------

/// LXC apps of the community scripts, most installed first (the Zipf rank follows this order).
#[rustfmt::skip]
pub const APPS: &[&str] = &[
    "docker", "pihole", "adguard", "jellyfin", "homeassistant", "vaultwarden", "nginxproxymanager",
    "plex", "immich", "paperless-ngx", "frigate", "n8n", "uptimekuma", "homepage", "cloudflared",
    "zigbee2mqtt", "mqtt", "nextcloudpi", "debian", "ubuntu", "alpine", "wireguard", "dockge",
    "jellyseerr", "sonarr", "radarr", "prowlarr", "qbittorrent", "unifi", "omada", "gitea",
    "mariadb", "postgresql", "node-red", "esphome", "grafana", "influxdb", "prometheus", "ollama",
    "openwebui", "audiobookshelf", "navidrome", "emby", "tautulli", "overseerr", "bazarr", "lidarr",
    "readarr", "sabnzbd", "nzbget", "flaresolverr", "jackett", "deluge", "transmission", "tdarr",
    "photoprism", "syncthing", "homarr", "dashy", "heimdall-dashboard", "authentik", "authelia",
    "keycloak", "technitiumdns", "unbound", "caddy", "traefik", "npmplus", "headscale", "netbird",
    "zoraxy", "netalertx", "wazuh", "crafty-controller", "openhab", "iobroker", "homebridge",
    "scrypted", "go2rtc", "zwave-js-ui", "deconz", "matterbridge", "evcc", "mealie", "tandoor",
    "grocy", "firefly", "actualbudget", "bookstack", "wikijs", "docmost", "outline", "memos",
    "trilium", "hedgedoc", "stirling-pdf", "nocodb", "baserow", "vikunja", "planka", "kanboard",
    "linkwarden", "karakeep", "wallabag", "freshrss", "miniflux", "changedetection", "ntfy",
    "gotify", "apprise-api", "healthchecks", "zabbix", "checkmk", "beszel", "glance", "myspeed",
    "openspeedtest", "librespeed", "graylog", "victoriametrics", "prometheus-pve-exporter",
    "proxmox-backup-server", "proxmox-datacenter-manager", "proxmox-mail-gateway", "forgejo",
    "gitlab", "jenkins", "komodo", "dokploy", "coolify", "cosmos", "casaos", "runtipi",
    "openmediavault", "cockpit", "podman", "podman-homeassistant", "redis", "mongodb", "mysql",
    "couchdb", "rabbitmq", "valkey", "neo4j", "apache-guacamole", "apache-tika", "apache-tomcat",
    "apache-cassandra", "apache-couchdb", "pocket-id", "tinyauth", "zitadel", "2fauth", "seafile",
    "sftpgo", "minio", "garage", "pairdrop", "opencloud", "ocis", "filebrowser-quantum",
    "rocketchat", "mattermost", "synapse", "zammad", "wastebin", "privatebin", "shlink", "comfyui",
    "localai", "spoolman", "octoprint", "calibre-web", "komga", "kavita", "mylar3", "autobrr",
    "metube", "pinchflat", "fileflows", "threadfin", "ersatztv", "lyrionmusicserver", "owncast",
    "jellystat", "unmanic", "whisparr", "ombi", "notifiarr", "recyclarr", "cross-seed", "sonarr-v4",
    "huntarr", "cleanuparr", "maintainerr", "wizarr", "petio", "requestrr", "photoprism-ai",
    "lychee", "piwigo", "ente", "pigallery2", "nextcloud", "owncloud", "cryptpad", "onlyoffice",
    "collabora", "excalidraw", "drawio", "it-tools", "cyberchef", "omni-tools", "searxng",
    "whoogle", "linkstack", "littlelink", "umami", "plausible", "matomo", "goaccess",
    "adventurelog", "hortusfox", "homebox", "snipe-it", "part-db", "inventree", "openproject",
    "redmine", "leantime", "kimai", "traccar", "dawarich", "owntracks", "paperless-ai",
    "paperless-gpt", "docspell", "papra", "kitchenowl", "bar-assistant", "tududi", "donetick",
    "habitica", "joplin-server", "silverbullet", "blinko", "affine", "anytype", "outline-wiki",
    "dokuwiki", "mediawiki", "wordpress", "ghost", "writefreely", "listmonk", "mailpit", "stalwart",
    "mailcow", "roundcube", "radicale", "baikal", "davis", "sabre", "openvpn", "pivpn", "wg-easy",
    "tailscale-exit", "adguardhome-sync", "nginx", "haproxy", "squid", "bind9", "powerdns",
    "dnsmasq", "kea-dhcp", "smokeping", "uptime-monitor", "statping-ng", "gatus", "scrutiny",
    "diun", "watchtower", "portainer", "portainer-agent", "yacht", "lazydocker", "vscode-server",
    "jupyter", "rstudio-server", "code-server", "gitea-runner", "woodpecker", "drone", "harbor",
    "sonarqube", "nexus", "verdaccio", "docker-registry", "minecraft", "pterodactyl-panel",
    "pterodactyl-wings", "pelican-panel", "satisfactory", "valheim", "palworld", "factorio",
    "foundryvtt", "romm",
];

/// A VM script with the os_type and version it reports.
struct VmScript {
    name: &'static str,
    os_type: &'static str,
    os_version: &'static str,
}

#[rustfmt::skip]
const VMS: &[VmScript] = &[
    VmScript { name: "haos-vm", os_type: "homeassistant", os_version: "16.2" },
    VmScript { name: "debian13-vm", os_type: "debian", os_version: "13" },
    VmScript { name: "ubuntu2404-vm", os_type: "ubuntu", os_version: "24.04" },
    VmScript { name: "docker-vm", os_type: "debian", os_version: "12" },
    VmScript { name: "opnsense-vm", os_type: "opnsense", os_version: "25.7" },
    VmScript { name: "debian-vm", os_type: "debian", os_version: "12" },
    VmScript { name: "openwrt-vm", os_type: "openwrt", os_version: "24.10" },
    VmScript { name: "mikrotik-routeros-chr-vm", os_type: "mikrotik", os_version: "7.19" },
    VmScript { name: "ubuntu2204-vm", os_type: "ubuntu", os_version: "22.04" },
    VmScript { name: "umbrel-os-vm", os_type: "umbrel", os_version: "1.4" },
    VmScript { name: "nextcloud-vm", os_type: "turnkey", os_version: "18.0" },
    VmScript { name: "owncloud-vm", os_type: "turnkey", os_version: "18.0" },
    VmScript { name: "pimox-haos-vm", os_type: "homeassistant", os_version: "16.1" },
    VmScript { name: "ubuntu2504-vm", os_type: "ubuntu", os_version: "25.04" },
    VmScript { name: "archlinux-vm", os_type: "arch", os_version: "rolling" },
];

/// `type: pve` host tools; some send display names with spaces and capitals.
#[rustfmt::skip]
const TOOLS: &[&str] = &[
    "post-pve-install", "microcode", "kernel-clean", "update-lxcs", "clean-lxcs", "host-backup",
    "scaling-governor", "add-iptag", "fstrim", "cron-update-lxcs", "PVE Post Install",
    "clean-orphaned-lvm", "post-pbs-install", "hw-acceleration", "monitor-all", "add-tailscale-lxc",
    "nic-offloading-fix", "kernel-pin", "lxc-delete", "pve-privilege-converter", "update-repo",
    "Proxmox VE Processor Microcode", "execute", "frigate-support", "pbs-microcode",
];

/// `type: addon` container add-ons.
#[rustfmt::skip]
const ADDONS: &[&str] = &[
    "filebrowser", "netdata", "glances", "webmin", "crowdsec", "olivetin", "coder-code-server",
    "filebrowser-quantum", "copyparty", "phpmyadmin", "adminer", "jellyfin-opengl", "all-templates",
    "arcane", "komodo-periphery",
];

/// Host hardware as the scripts detect it, most common first.
struct Hardware {
    cpu_vendor: &'static str,
    cpu_model: &'static str,
    gpu_vendor: &'static str,
    gpu_model: &'static str,
    gpu_passthrough: &'static str,
    ram_speed: &'static str,
}

const fn hw(
    cpu: (&'static str, &'static str),
    gpu: (&'static str, &'static str, &'static str),
    ram_speed: &'static str,
) -> Hardware {
    Hardware {
        cpu_vendor: cpu.0,
        cpu_model: cpu.1,
        gpu_vendor: gpu.0,
        gpu_model: gpu.1,
        gpu_passthrough: gpu.2,
        ram_speed,
    }
}

#[rustfmt::skip]
const HARDWARE: &[Hardware] = &[
    hw(("intel", "Intel N100"), ("intel", "Intel Corporation Alder Lake-N [UHD Graphics]", "igpu"), "4800"),
    hw(("intel", "Intel Core i5-8500T CPU @ 2.10GHz"), ("intel", "Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]", "igpu"), "2667"),
    hw(("amd", "AMD Ryzen 7 5700U with Radeon Graphics"), ("amd", "Advanced Micro Devices, Inc. [AMD/ATI] Lucienne", "igpu"), "3200"),
    hw(("intel", "Intel Core i7-12700H"), ("intel", "Intel Corporation Alder Lake-P GT2 [Iris Xe Graphics]", "igpu"), "3200"),
    hw(("intel", "Intel Celeron J4125 CPU @ 2.00GHz"), ("intel", "Intel Corporation GeminiLake [UHD Graphics 600]", "igpu"), "2400"),
    hw(("amd", "AMD Ryzen 5 5600G with Radeon Graphics"), ("amd", "Advanced Micro Devices, Inc. [AMD/ATI] Cezanne", "igpu"), "3200"),
    hw(("unknown", ""), ("unknown", "", "unknown"), ""),
    hw(("intel", "Intel Core i3-10100T CPU @ 3.00GHz"), ("intel", "Intel Corporation CometLake-S GT2 [UHD Graphics 630]", "igpu"), "2666"),
    hw(("amd", "AMD Ryzen 9 7950X 16-Core Processor"), ("nvidia", "NVIDIA Corporation AD104 [GeForce RTX 4070]", "dgpu"), "5200"),
    hw(("intel", "Intel Xeon E-2224 CPU @ 3.40GHz"), ("unknown", "", "unknown"), "2666"),
    hw(("amd", "AMD Ryzen 7 7840HS w/ Radeon 780M Graphics"), ("amd", "Advanced Micro Devices, Inc. [AMD/ATI] Phoenix1", "igpu"), "5600"),
    hw(("intel", "Intel Xeon CPU E5-2680 v4 @ 2.40GHz"), ("unknown", "Matrox Electronics Systems Ltd. G200eR2", "unknown"), "2400"),
    hw(("intel", "Intel Core i9-13900K"), ("nvidia", "NVIDIA Corporation GA102 [GeForce RTX 3090]", "dgpu"), "5600"),
    hw(("amd", "AMD EPYC 7302P 16-Core Processor"), ("unknown", "ASPEED Technology, Inc. ASPEED Graphics Family", "unknown"), "3200"),
    hw(("arm", "Cortex-A76"), ("unknown", "", "unknown"), ""),
];

/// Proxmox VE versions, most common first.
#[rustfmt::skip]
const PVE_VERSIONS: &[&str] = &[
    "9.0.10", "8.4.14", "9.0.11", "9.1.1", "8.4.1", "9.0.6", "8.3.5", "8.2.4", "9.0.3", "8.3.0",
    "8.2.2", "8.1.4",
];

// ---------------------------------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------------------------------

/// An install in the middle of being played.
struct Active {
    steps: VecDeque<Step>,
    /// The made-up client address this install's requests are forwarded for.
    client: std::net::Ipv4Addr,
    /// Set while one of its requests is in flight: its next event waits, as a script's curl does.
    busy: Arc<AtomicBool>,
}

/// One request to issue.
enum Request {
    Step {
        kind: StepKind,
        body: String,
        fallbacks: Vec<String>,
        busy: Arc<AtomicBool>,
        last: bool,
        client: std::net::Ipv4Addr,
    },
    Broken {
        kind: BrokenKind,
        body: Vec<u8>,
    },
}

/// The pool of installs being played, and what to send next.
struct Traffic {
    pool: Vec<Active>,
    /// How many installs are played at once.
    target: usize,
    /// 0 = unlimited.
    limit: u64,
    started: u64,
    mix: Mix,
    bad_rate: f64,
    /// Separate streams, so a seed gives the same installs whatever the timing of the answers.
    installs_rng: Rng,
    broken_rng: Rng,
    schedule_rng: Rng,
}

impl Traffic {
    fn new(config: &Config) -> Traffic {
        let seed = config.seed.unwrap_or_else(|| Rng::new().u64(..));
        Traffic {
            pool: Vec::new(),
            target: config.concurrency.max(1) as usize,
            limit: config.installs,
            started: 0,
            mix: config.mix(),
            bad_rate: config.bad_rate,
            installs_rng: Rng::with_seed(seed),
            broken_rng: Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            schedule_rng: Rng::with_seed(seed.rotate_left(17) ^ 0x2545_f491_4f6c_dd1d),
        }
    }

    fn can_start(&self) -> bool {
        self.limit == 0 || self.started < self.limit
    }

    /// Every install of a limited run has been issued in full.
    fn exhausted(&self) -> bool {
        !self.can_start() && self.pool.is_empty()
    }

    /// The next request, or `None` when every active install waits for an answer and no new one may
    /// start.
    fn next(&mut self) -> Option<Request> {
        if self.exhausted() {
            return None;
        }
        if self.bad_rate > 0.0 && self.schedule_rng.f64() < self.bad_rate {
            let (kind, body) = random_broken(&mut self.broken_rng, &self.mix);
            return Some(Request::Broken { kind, body });
        }
        let slot = self.schedule_rng.usize(..self.target.max(self.pool.len()));
        if slot < self.pool.len() {
            if !self.pool[slot].busy.load(Ordering::Acquire) {
                return Some(self.advance(slot));
            }
        } else if self.can_start() {
            return Some(self.start());
        }
        let n = self.pool.len();
        if n > 0 {
            let offset = self.schedule_rng.usize(..n);
            for i in 0..n {
                let slot = (offset + i) % n;
                if !self.pool[slot].busy.load(Ordering::Acquire) {
                    return Some(self.advance(slot));
                }
            }
        }
        if self.can_start() && self.pool.len() < self.target {
            return Some(self.start());
        }
        None
    }

    fn start(&mut self) -> Request {
        let install = generate_install(&mut self.installs_rng, &self.mix);
        self.started += 1;
        let host = self.installs_rng.u32(0..1 << 17);
        self.pool.push(Active {
            client: std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) | host,
            ),
            steps: install.steps.into(),
            busy: Arc::new(AtomicBool::new(false)),
        });
        self.advance(self.pool.len() - 1)
    }

    fn advance(&mut self, slot: usize) -> Request {
        let active = &mut self.pool[slot];
        active.busy.store(true, Ordering::Release);
        let busy = active.busy.clone();
        let client = active.client;
        // Every install has at least its final, and an empty one is removed below.
        let step = active.steps.pop_front().unwrap_or_else(|| Step {
            kind: StepKind::Final,
            body: String::new(),
            fallbacks: Vec::new(),
        });
        let last = active.steps.is_empty();
        if last {
            self.pool.swap_remove(slot);
        }
        Request::Step {
            kind: step.kind,
            body: step.body,
            fallbacks: step.fallbacks,
            busy,
            last,
            client,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Sending and counting
// ---------------------------------------------------------------------------------------------------

/// What the edge answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted,
    Duplicate,
    Rejected { status: u16, error: Option<String> },
    RateLimited,
    Unavailable,
    Unexpected(u16),
    Transport,
}

impl Answer {
    fn label(&self) -> String {
        match self {
            Answer::Accepted => "202 accepted".to_owned(),
            Answer::Duplicate => "202 duplicate".to_owned(),
            Answer::Rejected { status, error } => match error {
                Some(error) => format!("{status} {error}"),
                None => status.to_string(),
            },
            Answer::RateLimited => "429".to_owned(),
            Answer::Unavailable => "503".to_owned(),
            Answer::Unexpected(status) => status.to_string(),
            Answer::Transport => "transport_error".to_owned(),
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Answer::Accepted | Answer::Duplicate => Some(202),
            Answer::Rejected { status, .. } | Answer::Unexpected(status) => Some(*status),
            Answer::RateLimited => Some(429),
            Answer::Unavailable => Some(503),
            Answer::Transport => None,
        }
    }
}

fn classify(status: u16, body: &[u8]) -> Answer {
    let field = |name: &str| {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
    };
    match status {
        202 if field("status").as_deref() == Some("duplicate") => Answer::Duplicate,
        202 => Answer::Accepted,
        429 => Answer::RateLimited,
        503 => Answer::Unavailable,
        400..=499 => Answer::Rejected {
            status,
            error: field("error"),
        },
        _ => Answer::Unexpected(status),
    }
}

/// Posts one body; the answer, and the event id of a 202.
async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: Vec<u8>,
    forwarded_for: Option<std::net::Ipv4Addr>,
) -> (Answer, Option<String>) {
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(addr) = forwarded_for {
        request = request.header("x-forwarded-for", addr.to_string());
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            return (Answer::Transport, None);
        }
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(bytes) => {
            let id = (status == 202)
                .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                .flatten()
                .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
            (classify(status, &bytes), id)
        }
        Err(e) => {
            tracing::debug!(error = %e, "reading the answer failed");
            (Answer::Transport, None)
        }
    }
}

/// The `--record` file: one [`record::Answer`] per answered request of a valid event.
struct Recorder(Mutex<record::Writer<std::fs::File>>);

impl Recorder {
    fn create(path: &std::path::Path) -> anyhow::Result<Recorder> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the record file {}", path.display()))?;
        Ok(Recorder(Mutex::new(record::Writer::new(file))))
    }

    /// The key a body is stored under (execution id, stored status) as the edge's own validation sees
    /// it; `None` for a body the edge rejects.
    fn key(body: &[u8]) -> Option<(String, schema::Status)> {
        let reception = schema::Reception {
            event_id: uuid::Uuid::nil(),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let accepted = schema::validate(body, reception).ok()?;
        Some((accepted.event.execution_id, accepted.event.status))
    }

    fn write(&self, key: &(String, schema::Status), answer: &Answer, id: Option<&str>) {
        let reply = match answer {
            Answer::Accepted => record::Reply::Accepted,
            Answer::Duplicate => record::Reply::Duplicate,
            Answer::Transport => record::Reply::Transport,
            other => record::Reply::Status(other.status().unwrap_or_default()),
        };
        let line = record::Answer {
            execution_id: key.0.clone(),
            status: key.1,
            reply,
            event_id: id
                .filter(|_| reply == record::Reply::Accepted)
                .map(str::to_owned),
        };
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = out.write(&line) {
            tracing::warn!(error = %e, "writing the record file failed");
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

/// Counters shared by the request tasks.
#[derive(Default)]
struct Stats {
    sent: u64,
    answered: u64,
    accepted: u64,
    duplicates: u64,
    rejected_by_status: BTreeMap<u16, u64>,
    rejected_valid: u64,
    rate_limited: u64,
    unavailable: u64,
    unexpected_by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    retries_sent: u64,
    retried_after_failure: u64,
    given_up: u64,
    broken_sent: u64,
    broken_answers: BTreeMap<String, BTreeMap<String, u64>>,
    broken_unexpected: u64,
    installs_started: u64,
    installs_finished: u64,
    latencies_us: Vec<u32>,
}

impl Stats {
    fn record(&mut self, answer: &Answer, broken: Option<BrokenKind>, latency_us: u32) {
        self.answered += 1;
        self.latencies_us.push(latency_us);
        match answer {
            Answer::Accepted => self.accepted += 1,
            Answer::Duplicate => self.duplicates += 1,
            Answer::Rejected { status, .. } => {
                *self.rejected_by_status.entry(*status).or_default() += 1;
                if broken.is_none() {
                    self.rejected_valid += 1;
                }
            }
            Answer::RateLimited => self.rate_limited += 1,
            Answer::Unavailable => self.unavailable += 1,
            Answer::Unexpected(status) => {
                *self.unexpected_by_status.entry(*status).or_default() += 1
            }
            Answer::Transport => self.transport_errors += 1,
        }
        if let Some(kind) = broken {
            *self
                .broken_answers
                .entry(kind.as_str().to_owned())
                .or_default()
                .entry(answer.label())
                .or_default() += 1;
            let shed = matches!(
                answer,
                Answer::RateLimited | Answer::Unavailable | Answer::Transport
            );
            if !shed && answer.status() != Some(kind.expected_status()) {
                self.broken_unexpected += 1;
            }
        }
    }

    fn rejected(&self) -> u64 {
        self.rejected_by_status.values().sum()
    }

    fn progress_line(&self, rate: f64) -> String {
        format!(
            "sent={} accepted={} duplicate={} rejected={} rate_limited={} unavailable={} errors={} rate={rate:.1}/s",
            self.sent,
            self.accepted,
            self.duplicates,
            self.rejected(),
            self.rate_limited,
            self.unavailable,
            self.transport_errors + self.unexpected_by_status.values().sum::<u64>(),
        )
    }

    fn summary(&mut self, stopped_by: &str, elapsed: Duration, issuing: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let ms = |us: u32| f64::from(us) / 1000.0;
        Summary {
            sent: self.sent,
            answered: self.answered,
            unfinished: self.sent.saturating_sub(self.answered),
            accepted: self.accepted,
            duplicates: self.duplicates,
            rejected: self.rejected(),
            rejected_by_status: self.rejected_by_status.clone(),
            rejected_valid: self.rejected_valid,
            rate_limited: self.rate_limited,
            unavailable: self.unavailable,
            shed: self.rate_limited + self.unavailable,
            unexpected_by_status: self.unexpected_by_status.clone(),
            transport_errors: self.transport_errors,
            retries_sent: self.retries_sent,
            retried_after_failure: self.retried_after_failure,
            given_up: self.given_up,
            broken_sent: self.broken_sent,
            broken_answers: self.broken_answers.clone(),
            broken_unexpected: self.broken_unexpected,
            installs_started: self.installs_started,
            installs_finished: self.installs_finished,
            stopped_by: stopped_by.to_owned(),
            elapsed_secs: elapsed.as_secs_f64(),
            achieved_rate: if issuing.is_zero() {
                0.0
            } else {
                self.sent as f64 / issuing.as_secs_f64()
            },
            latency_p50_ms: ms(percentile(&self.latencies_us, 50.0)),
            latency_p99_ms: ms(percentile(&self.latencies_us, 99.0)),
            latency_max_ms: ms(self.latencies_us.last().copied().unwrap_or(0)),
        }
    }
}

/// Nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------

/// Plays traffic until `shutdown` resolves, `--duration` passes or `--installs` are done, waits for the
/// requests in flight (at most 10 s), prints the summary to stdout and returns it.
pub async fn run<F>(config: Config, shutdown: F) -> anyhow::Result<Summary>
where
    F: Future<Output = ()>,
{
    config.validate()?;
    let urls: Arc<[reqwest::Url]> = config.urls()?.into();
    let next_url = Arc::new(AtomicUsize::new(0));
    let recorder = match &config.record {
        Some(path) => Some(Arc::new(Recorder::create(path)?)),
        None => None,
    };
    let retry_failed = config.retry_failed;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout))
        .connect_timeout(Duration::from_secs(config.timeout.min(5)))
        .pool_max_idle_per_host(config.concurrency as usize)
        .build()
        .context("building the http client")?;
    let semaphore = Arc::new(Semaphore::new(config.concurrency as usize));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let mut traffic = Traffic::new(&config);

    let start = Instant::now();
    let rate = config.rate;
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_millis(1));
    let mut pacer = tokio::time::interval(period);
    pacer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    progress.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let deadline = (config.duration > 0).then(|| start + Duration::from_secs(config.duration));
    let mut stop_at = std::pin::pin!(tokio::time::sleep_until(
        deadline
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600))
            .into()
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    // A tick that finds no free permit carries its events over, up to one second's worth.
    let burst = (rate.ceil() as u64).max(1);
    let mut credits_used: u64 = 0;
    let mut last_sent = 0;
    let mut last_progress = Instant::now();

    tracing::info!(urls = ?config.url, rate, concurrency = config.concurrency, "simulation started");
    let stopped_by = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break "ctrl_c",
            () = &mut stop_at, if deadline.is_some() => break "duration",
            _ = pacer.tick() => {
                let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                if due > credits_used + burst {
                    credits_used = due - burst;
                }
                while credits_used < due {
                    let Ok(permit) = semaphore.clone().try_acquire_owned() else { break };
                    let Some(request) = traffic.next() else { break };
                    credits_used += 1;
                    {
                        let mut s = lock(&stats);
                        s.sent += 1;
                        s.installs_started = traffic.started;
                        match &request {
                            Request::Step { kind, .. } if kind.is_retry() => s.retries_sent += 1,
                            Request::Broken { .. } => s.broken_sent += 1,
                            Request::Step { .. } => {}
                        }
                    }
                    let client = client.clone();
                    let urls = urls.clone();
                    let next_url = next_url.clone();
                    let recorder = recorder.clone();
                    let forward = !config.no_forwarded_for;
                    let stats = stats.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let (attempts, broken, done, busy, from) = match request {
                            Request::Step { body, fallbacks, busy, last, client: from, .. } => {
                                let mut attempts = vec![body.into_bytes()];
                                if retry_failed {
                                    attempts.extend(fallbacks.into_iter().map(String::into_bytes));
                                }
                                (attempts, None, last, Some(busy), forward.then_some(from))
                            }
                            Request::Broken { kind, body } => {
                                let from = forward
                                    .then(|| std::net::Ipv4Addr::from(0xC612_0000 | fastrand::u32(0..1 << 17)));
                                (vec![body], Some(kind), false, None, from)
                            }
                        };
                        let count = attempts.len();
                        for (n, body) in attempts.into_iter().enumerate() {
                            if n > 0 {
                                tokio::time::sleep(RETRY_PAUSE).await;
                                let mut s = lock(&stats);
                                s.sent += 1;
                                s.retried_after_failure += 1;
                            }
                            let key = recorder.as_ref().and_then(|_| Recorder::key(&body));
                            let url = &urls[next_url.fetch_add(1, Ordering::Relaxed) % urls.len()];
                            let started = Instant::now();
                            let (answer, id) = send(&client, url, body, from).await;
                            let latency = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                            if let (Some(recorder), Some(key)) = (&recorder, &key) {
                                recorder.write(key, &answer, id.as_deref());
                            }
                            let acked = answer.status() == Some(202);
                            let mut s = lock(&stats);
                            s.record(&answer, broken, latency);
                            if acked || n + 1 == count {
                                if !acked && broken.is_none() {
                                    s.given_up += 1;
                                }
                                if done {
                                    s.installs_finished += 1;
                                }
                                break;
                            }
                        }
                        if let Some(busy) = busy {
                            busy.store(false, Ordering::Release);
                        }
                    });
                }
                if traffic.exhausted() {
                    break "installs";
                }
            }
            _ = progress.tick(), if !config.quiet => {
                let s = lock(&stats);
                let secs = last_progress.elapsed().as_secs_f64().max(0.001);
                let line = s.progress_line((s.sent - last_sent) as f64 / secs);
                last_sent = s.sent;
                drop(s);
                last_progress = Instant::now();
                eprintln!("{line}");
            }
        }
    };
    let issuing = start.elapsed();
    tracing::info!(
        stopped_by,
        "stopped issuing, waiting for requests in flight"
    );

    let all = config.concurrency;
    // A request with retries may take all its attempts, each up to --timeout, 1 s apart.
    let drain = if retry_failed {
        DRAIN_TIMEOUT.max(3 * (Duration::from_secs(config.timeout) + RETRY_PAUSE))
    } else {
        DRAIN_TIMEOUT
    };
    if tokio::time::timeout(drain, semaphore.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            deadline = ?drain,
            "requests still in flight at the drain deadline"
        );
    }
    if let Some(recorder) = &recorder {
        recorder.flush().context("writing the record file")?;
    }
    let summary = lock(&stats).summary(stopped_by, start.elapsed(), issuing);

    let mut out = std::io::stdout().lock();
    summary.print(&mut out).context("printing the summary")?;
    out.flush().context("printing the summary")?;
    if let Some(path) = &config.summary_json {
        let json = serde_json::to_vec_pretty(&summary).context("encoding the summary")?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const STATUSES: &[&str] = &[
        "installing",
        "validation",
        "configuring",
        "success",
        "failed",
        "unknown",
    ];

    fn valid_id(id: &str) -> bool {
        let mut chars = id.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    }

    fn int_in(v: &Value, field: &str, max: u64) -> bool {
        v.get(field)
            .is_none_or(|x| x.as_u64().is_some_and(|n| n <= max))
    }

    /// A body breaks a rule of the contract (or is no JSON at all).
    fn breaks_contract(body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return true;
        };
        !(int_in(&v, "disk_size", 100_000)
            && int_in(&v, "core_count", 256)
            && int_in(&v, "ram_size", 1_048_576)
            && int_in(&v, "ct_type", 2)
            && int_in(&v, "exit_code", 255)
            && int_in(&v, "install_duration", 86_400))
    }

    #[test]
    fn every_install_body_is_json_with_the_required_fields() {
        let mut rng = Rng::with_seed(7);
        let mix = Mix {
            retry_rate: 0.2,
            ..Mix::default()
        };
        for _ in 0..3_000 {
            let install = generate_install(&mut rng, &mix);
            for step in &install.steps {
                let v: Value = serde_json::from_str(&step.body).expect("valid json");
                let id = v["random_id"].as_str().expect("random_id");
                assert!(valid_id(id), "bad id {id}");
                assert_eq!(v["execution_id"], v["random_id"]);
                assert_eq!(id, install.execution_id);
                assert!(["lxc", "vm", "pve", "addon"].contains(&v["type"].as_str().expect("type")));
                assert!(!v["nsapp"].as_str().expect("nsapp").trim().is_empty());
                let status = v["status"].as_str().expect("status");
                assert!(STATUSES.contains(&status), "status {status}");
                assert!(!breaks_contract(step.body.as_bytes()), "{}", step.body);
                if let Some(error) = v.get("error").and_then(Value::as_str) {
                    assert!(error.len() <= MAX_LOG_BYTES);
                    if !error.is_empty() {
                        assert!(error.starts_with("exit_code="), "{error}");
                    }
                }
                if step.kind == StepKind::Progress {
                    assert_eq!(v.as_object().map(|o| o.len()), Some(5));
                }
            }
            assert_eq!(
                install
                    .steps
                    .iter()
                    .filter(|s| s.kind == StepKind::Final)
                    .count(),
                1
            );
        }
    }

    #[test]
    fn an_lxc_install_has_three_to_five_events() {
        let mut rng = Rng::with_seed(11);
        let mix = Mix::default();
        let mut seen = [false; 6];
        for _ in 0..2_000 {
            let install = generate_install_of(&mut rng, &mix, InstallType::Lxc);
            let n = install.steps.len();
            assert!((3..=5).contains(&n), "{n} events");
            seen[n] = true;
            assert_eq!(install.steps[0].kind, StepKind::Installing);
            assert_eq!(install.steps[n - 1].kind, StepKind::Final);
        }
        assert!(seen[3] && seen[4] && seen[5]);
        for _ in 0..200 {
            let install = generate_install_of(&mut rng, &mix, InstallType::Pve);
            assert_eq!(install.steps.len(), 1);
        }
    }

    #[test]
    fn the_failure_fraction_follows_the_failure_rate() {
        let mut rng = Rng::with_seed(3);
        let mix = Mix::default();
        let failed = (0..10_000)
            .filter(|_| generate_install(&mut rng, &mix).outcome.is_failure())
            .count();
        let fraction = failed as f64 / 10_000.0;
        assert!((0.05..0.15).contains(&fraction), "{fraction}");
    }

    #[test]
    fn retries_repeat_the_installing_body_and_shrink_the_final_log() {
        let mut rng = Rng::with_seed(5);
        let mix = Mix {
            retry_rate: 1.0,
            failure_rate: 1.0,
            id_salt: 0,
        };
        let install = generate_install_of(&mut rng, &mix, InstallType::Lxc);
        assert_eq!(install.steps[1].kind, StepKind::InstallingRetry);
        assert_eq!(install.steps[0].body, install.steps[1].body);
        let finals: Vec<&Step> = install
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Final | StepKind::FinalRetry))
            .collect();
        assert!(finals.len() >= 2);
        for retry in &finals[1..] {
            let v: Value = serde_json::from_str(&retry.body).expect("json");
            assert!(v["error"].as_str().expect("error").len() <= RETRY_LOG_BYTES);
        }
        let long = format!("exit_code=1 | x\n---\n{}", "line\n".repeat(10_000));
        let short = shrink_log(&long, RETRY_LOG_BYTES);
        assert_eq!(short.len(), RETRY_LOG_BYTES);
        assert!(short.starts_with("exit_code=1 | x\n---\n"));
        assert!(long.ends_with(&short[20..]));
    }

    #[test]
    fn broken_bodies_are_no_json_or_break_a_rule() {
        let mut rng = Rng::with_seed(9);
        let mix = Mix::default();
        for kind in BrokenKind::ALL {
            for _ in 0..200 {
                let body = broken_body(&mut rng, &mix, kind);
                assert!(
                    breaks_contract(&body),
                    "{kind:?}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        let body = broken_body(&mut rng, &mix, BrokenKind::EmptyNumeric);
        assert!(String::from_utf8_lossy(&body).contains("\"disk_size\": ,"));
        let body = broken_body(&mut rng, &mix, BrokenKind::InvalidUtf8);
        assert!(std::str::from_utf8(&body).is_err());
        let body = broken_body(&mut rng, &mix, BrokenKind::RawControl);
        assert!(body.contains(&b'\n') && body.contains(&0x1b));
    }

    #[test]
    fn popularity_is_skewed_and_the_mix_of_types_holds() {
        let mut rng = Rng::with_seed(1);
        let mix = Mix::default();
        let mut lxc = 0;
        let mut top = 0;
        for _ in 0..10_000 {
            let install = generate_install(&mut rng, &mix);
            if install.install_type == InstallType::Lxc {
                lxc += 1;
                if APPS[..10].contains(&install.nsapp.as_str()) {
                    top += 1;
                }
            }
        }
        assert!((6_500..7_500).contains(&lxc), "{lxc}");
        assert!(top * 3 > lxc, "top ten {top} of {lxc}");
        assert!(APPS.len() >= 280, "{}", APPS.len());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn answers_are_classified_by_status_and_body() {
        assert_eq!(
            classify(202, br#"{"status":"accepted","id":"x"}"#),
            Answer::Accepted
        );
        assert_eq!(
            classify(202, br#"{"status":"duplicate","id":"x"}"#),
            Answer::Duplicate
        );
        assert_eq!(
            classify(400, br#"{"error":"invalid_json","message":"m"}"#).label(),
            "400 invalid_json"
        );
        assert_eq!(classify(429, b""), Answer::RateLimited);
        assert_eq!(classify(503, b""), Answer::Unavailable);
        assert_eq!(classify(500, b""), Answer::Unexpected(500));
    }

    /// A tiny HTTP/1.1 endpoint keyed like the edge (`execution_id:status`): 202 accepted, 202 duplicate
    /// for a key it has seen, 400 invalid_json for what does not parse (it rescues nothing). With
    /// `fail_first`, the first request of every key gets a 503 instead.
    async fn fake_edge(fail_first: bool) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
        let failed = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                let failed = failed.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        let head_end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                        let (status, json) = match serde_json::from_slice::<Value>(&body) {
                            Ok(v) => {
                                let key = format!("{}:{}", v["execution_id"], v["status"]);
                                let fail =
                                    fail_first && failed.lock().expect("lock").insert(key.clone());
                                let fresh = !fail && seen.lock().expect("lock").insert(key);
                                let answer = if fresh { "accepted" } else { "duplicate" };
                                if fail {
                                    (
                                        "503 Service Unavailable",
                                        r#"{"error":"unavailable","message":"m"}"#.to_owned(),
                                    )
                                } else {
                                    (
                                        "202 Accepted",
                                        format!("{{\"status\":\"{answer}\",\"id\":\"x\"}}"),
                                    )
                                }
                            }
                            Err(_) => (
                                "400 Bad Request",
                                r#"{"error":"invalid_json","message":"m"}"#.to_owned(),
                            ),
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                            json.len()
                        );
                        if conn.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_limited_run_plays_every_install_to_its_end() {
        let addr = fake_edge(false).await;
        let url = format!("http://{addr}/telemetry");
        let config = Config::parse_from([
            "telemetry-simulate",
            "--url",
            &url,
            "--rate",
            "2000",
            "--installs",
            "60",
            "--retry-rate",
            "0.5",
            "--bad-rate",
            "0.1",
            "--seed",
            "42",
            "--quiet",
        ]);
        let summary = run(config, std::future::pending()).await.expect("run");
        assert_eq!(summary.stopped_by, "installs");
        assert_eq!(summary.installs_started, 60);
        assert_eq!(summary.installs_finished, 60);
        assert_eq!(summary.answered, summary.sent);
        assert!(summary.broken_sent > 0);
        assert_eq!(
            summary.accepted + summary.duplicates + summary.rejected,
            summary.sent
        );
        assert_eq!(summary.rejected_valid, 0);
        assert!(summary.rejected <= summary.broken_sent);
        // Every retry repeats a key; so does the container's `configuring` after the host's.
        assert!(summary.retries_sent > 0 && summary.duplicates >= summary.retries_sent);
        let broken: u64 = summary
            .broken_answers
            .values()
            .flat_map(|a| a.values())
            .sum();
        assert_eq!(broken, summary.broken_sent);
        assert_eq!(summary.transport_errors, 0);
        assert!(summary.latency_p99_ms >= summary.latency_p50_ms);
    }

    #[tokio::test]
    async fn failed_requests_are_retried_as_the_scripts_do_and_recorded() {
        let first = fake_edge(true).await;
        let second = fake_edge(true).await;
        let dir = std::env::temp_dir().join(format!("simulate-record-{}", run_salt()));
        std::fs::create_dir_all(&dir).expect("dir");
        let record = dir.join("record.tsv");
        let urls = format!("http://{first}/telemetry,http://{second}/telemetry");
        let config = Config::parse_from([
            "telemetry-simulate",
            "--url",
            &urls,
            "--rate",
            "2000",
            "--installs",
            "40",
            "--retry-rate",
            "0",
            "--bad-rate",
            "0",
            "--seed",
            "7",
            "--retry-failed",
            "--record",
            record.to_str().expect("utf-8 path"),
            "--quiet",
        ]);
        let summary = run(config, std::future::pending()).await.expect("run");
        let file = std::fs::File::open(&record).expect("record");
        let answers = record::parse(file).expect("record lines");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(summary.installs_finished, 40);
        assert_eq!(answers.len() as u64, summary.answered);
        assert!(summary.retried_after_failure > 0);
        // Each edge fails the first request of a key it sees: round-robin sends the retry to the other
        // edge, which fails it once more; the third attempt goes back to the first edge and succeeds.
        let mut acked = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for answer in &answers {
            let key = (answer.execution_id.as_str(), answer.status);
            keys.insert(key);
            if answer.reply.acked() {
                acked.insert(key);
            } else {
                assert_eq!(answer.reply, record::Reply::Status(503), "{answer:?}");
            }
            // The fake edge answers the id "x"; only an accepted answer records it.
            let id = (answer.reply == record::Reply::Accepted).then_some("x");
            assert_eq!(answer.event_id.as_deref(), id, "{answer:?}");
        }
        // Every installing and final event got through; a ping is sent once (the second `configuring`
        // of an install, from inside the container, repeats the key and may get through).
        let ping = |status: schema::Status| {
            matches!(
                status,
                schema::Status::Validation | schema::Status::Configuring
            )
        };
        let unacked: Vec<_> = keys
            .iter()
            .filter(|key| !ping(key.1) && !acked.contains(*key))
            .collect();
        assert!(unacked.is_empty(), "{unacked:?}");
        assert_eq!(
            summary.given_up as usize,
            answers
                .iter()
                .filter(|a| ping(a.status) && a.reply == record::Reply::Status(503))
                .count()
        );
    }
}
