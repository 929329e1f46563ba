//! The alerting path against real servers: nats-server and an SMTP sink (real processes) and any number
//! of alerter replicas (the same `run` that `main` calls). The aggregator is not run: the harness stands
//! in for it, validating installs like the edge and merging them like every store, then writing their
//! rollups into `telemetry_stats` in the contract's types (`schema::stats`) under the keys the alerter
//! reads (`24h.global`, `24h.app.<app>`, `signatures.new`). Mail is read from the sink's maildir.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use schema::alert::{AlertEvent, AlertRecord};
use schema::merge::{merge, InstallState};
use schema::span::Span;
use schema::stats::{
    group_key, CategoryCount, ExitCodeCount, GroupStats, NameCount, NewSignature, NewSignatures,
    Scope, SignatureCount, KEY_NEW_SIGNATURES, SNAPSHOT_VERSION,
};
use schema::validate::{validate, Reception};
use schema::{Category, Status};
pub use testkit::fixtures::body;
use testkit::smtp::SmtpServer;
use testkit::{poll_until, NatsServer, Service};

/// The aggregator's default `TOP_N`.
const TOP_N: usize = 10;

/// The rollup window the alerter reads (its default `ALERT_WINDOW`).
fn window() -> Span {
    Span::from_secs(24 * 3600)
}

/// The aggregator's default `SIGNATURE_WINDOW`.
fn signature_window() -> Span {
    Span::from_secs(3600)
}

/// One install as the rollups see it: its merged state and the signature of its deciding event.
struct Install {
    state: InstallState,
    signature: Option<String>,
}

pub struct Stack {
    pub nats: NatsServer,
    pub smtp: SmtpServer,
    pub js: jetstream::Context,
    stats: kv::Store,
    /// Every install written so far, by execution id.
    installs: Mutex<BTreeMap<String, Install>>,
}

impl Stack {
    pub async fn start() -> Stack {
        let nats = NatsServer::start().expect("nats");
        let smtp = SmtpServer::start().expect("smtp");
        let client = fleet::nats::connect(&nats.url(), "test-client")
            .await
            .expect("connect");
        fleet::nats::wait_connected(&client).await;
        let js = jetstream::new(client);
        let stats = fleet::nats::ensure_bucket(&js, &schema::names::stats_bucket(1)).await;
        Stack {
            nats,
            smtp,
            js,
            stats,
            installs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Alerter settings for tests: fast ticks and retries, the signature rule out of the way.
    pub fn alerter_config(&self) -> alerter::Config {
        let mut c = alerter::Config::for_nats(&self.nats.url());
        c.smtp_host = "127.0.0.1".into();
        c.smtp_port = self.smtp.port();
        c.smtp_from = "telemetry@localhost".into();
        c.smtp_to = vec!["maintainers@localhost".into(), "oncall@localhost".into()];
        c.smtp_timeout_secs = 5;
        c.alert_eval_interval_ms = 200;
        c.alert_retry_max_secs = 1;
        c.alert_lease_secs = 10;
        c.alert_signature_min_installs = 1_000_000;
        c.dashboard_url = "http://dash.test".into();
        c
    }

    pub async fn start_alerter(&self, config: alerter::Config) -> Service {
        let client = fleet::nats::connect(&config.common.nats_url, "test-alerter")
            .await
            .expect("connect");
        Service::spawn(|stop| alerter::run(config, client, None, stop))
    }

    /// Installs of `app`: `failed` failures (exit 100) and `success` successes, each with an installing
    /// event first; then the rollups are written.
    pub async fn installs(&self, app: &str, prefix: &str, failed: usize, success: usize) {
        let installs = (0..failed + success).map(|i| {
            let exec = format!("{prefix}-{i}");
            let end = if i < failed {
                body(
                    &exec,
                    app,
                    "failed",
                    r#","exit_code":100,"error":"x\nE: Unable to locate package foo""#,
                )
            } else {
                body(&exec, app, "success", r#","install_duration":60"#)
            };
            vec![body(&exec, app, "installing", ""), end]
        });
        self.add(installs.collect()).await;
    }

    /// Adds installs, each given as the bodies of its events in order (validated like the edge does and
    /// merged like every store does), and writes the rollups of everything added so far.
    pub async fn add(&self, installs: Vec<Vec<String>>) {
        let values = {
            let mut all = self.installs.lock().expect("installs");
            for bodies in installs {
                let mut install: Option<Install> = None;
                for b in bodies {
                    let event = validate(b.as_bytes(), Reception::now())
                        .expect("valid event")
                        .event;
                    let mut i = install.take().map_or_else(
                        || Install {
                            state: merge(None, &event),
                            signature: None,
                        },
                        |mut i| {
                            i.state.apply(&event);
                            i
                        },
                    );
                    if i.state
                        .outcome
                        .as_ref()
                        .is_some_and(|o| o.from == event.event_id)
                    {
                        i.signature = event.error_signature.clone();
                    }
                    install = Some(i);
                }
                let install = install.expect("an install has events");
                all.insert(install.state.execution_id.clone(), install);
            }
            rollups(all.values())
        };
        for (key, value) in values {
            self.stats.put(key, value.into()).await.expect("stats put");
        }
    }

    pub async fn mails(&self) -> Vec<String> {
        self.smtp.mails()
    }

    /// Waits until the sink holds `n` mails and returns them.
    pub async fn wait_mails(&self, n: usize, timeout: Duration) -> Vec<String> {
        poll_until(&format!("{n} mails"), timeout, || async {
            let mails = self.smtp.mails();
            (mails.len() >= n).then_some(mails)
        })
        .await
    }

    /// Checks the sink keeps exactly `n` mails for `period` (the observation window of a "never").
    pub async fn still_mails(&self, n: usize, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            assert_eq!(
                self.smtp.mails().len(),
                n,
                "mail count changed: {:#?}",
                self.smtp.mails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn record(&self, key: &str) -> Option<AlertRecord> {
        let store = self
            .js
            .get_key_value(schema::names::ALERTS_BUCKET)
            .await
            .ok()?;
        let bytes = store.get(key).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every event on TELEMETRY_ALERTS.
    pub async fn alert_events(&self) -> Vec<AlertEvent> {
        let Ok(mut stream) = self.js.get_stream(schema::names::ALERTS_STREAM).await else {
            return Vec::new();
        };
        let Ok(info) = stream.info().await else {
            return Vec::new();
        };
        let state = info.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&msg.payload).expect("alert event"));
            }
        }
        out
    }

    /// Ends the test's servers (they also stop on drop).
    pub async fn stop(self) {
        drop(self);
    }
}

/// The values the aggregator would write for these installs (all of them inside every window): the
/// global and per-app groups of the alert window, and the new signatures.
fn rollups<'a>(installs: impl Iterator<Item = &'a Install>) -> Vec<(String, Vec<u8>)> {
    let mut global = Group::default();
    let mut apps: BTreeMap<&str, Group> = BTreeMap::new();
    let mut signatures: BTreeMap<&str, (time::OffsetDateTime, u64, HashMap<&str, u64>)> =
        BTreeMap::new();
    for install in installs {
        let app = install.state.nsapp.value.as_str();
        global.add(install);
        apps.entry(app).or_default().add(install);
        let status = install.state.status.value;
        if let (Some(sig), true) = (&install.signature, status != Status::Success) {
            let s = signatures.entry(sig.as_str()).or_insert((
                install.state.first_seen,
                0,
                HashMap::new(),
            ));
            s.0 = s.0.min(install.state.first_seen);
            s.1 += 1;
            *s.2.entry(app).or_default() += 1;
        }
    }
    let mut out = vec![(
        group_key(window(), Scope::Global, ""),
        json(&global.stats(Scope::Global, "")),
    )];
    for (app, group) in &apps {
        out.push((
            group_key(window(), Scope::App, app),
            json(&group.stats(Scope::App, app)),
        ));
    }
    let mut fresh: Vec<NewSignature> = signatures
        .into_iter()
        .map(|(signature, (first_seen, installs, apps))| NewSignature {
            signature: signature.to_string(),
            installs,
            first_seen,
            apps: top(&apps, 5)
                .into_iter()
                .map(|(name, count)| NameCount {
                    name: name.to_string(),
                    count,
                })
                .collect(),
        })
        .collect();
    fresh.sort_by(|a, b| {
        b.installs
            .cmp(&a.installs)
            .then(a.signature.cmp(&b.signature))
    });
    out.push((
        KEY_NEW_SIGNATURES.to_string(),
        json(&NewSignatures {
            v: SNAPSHOT_VERSION,
            window: signature_window().label(),
            window_secs: signature_window().secs(),
            history: window().label(),
            signatures: fresh,
        }),
    ));
    out
}

/// The counts of one group, as the aggregator's rollup keeps them.
#[derive(Default)]
struct Group {
    started: u64,
    in_progress: u64,
    success: u64,
    failed: u64,
    aborted: u64,
    unknown: u64,
    durations: Vec<u32>,
    exit_codes: HashMap<u8, u64>,
    categories: HashMap<Category, u64>,
    signatures: HashMap<String, u64>,
    /// Distinct `random_id`s (the aggregator counts them by an 8-bit hash; exact for these few).
    clients: std::collections::HashSet<String>,
}

impl Group {
    fn add(&mut self, install: &Install) {
        let state = &install.state;
        self.started += 1;
        self.clients.insert(state.random_id.value.clone());
        match state.status.value {
            Status::Success => self.success += 1,
            Status::Failed => self.failed += 1,
            Status::Aborted => self.aborted += 1,
            Status::Unknown => self.unknown += 1,
            Status::Installing | Status::Validation | Status::Configuring => {
                self.in_progress += 1;
                return;
            }
        }
        self.durations.extend(state.duration_secs());
        if state.status.value == Status::Success {
            return;
        }
        let outcome = state.outcome.as_ref();
        if let Some(code) = outcome.and_then(|o| o.exit_code) {
            *self.exit_codes.entry(code).or_default() += 1;
        }
        if let Some(category) = outcome.and_then(|o| o.error_category) {
            *self.categories.entry(category).or_default() += 1;
        }
        if let Some(sig) = &install.signature {
            *self.signatures.entry(sig.clone()).or_default() += 1;
        }
    }

    fn stats(&self, scope: Scope, subject: &str) -> GroupStats {
        let decided = self.success + self.failed;
        let rate = (decided > 0)
            .then(|| (self.failed as f64 / decided as f64 * 10_000.0).round() / 10_000.0);
        GroupStats {
            v: SNAPSHOT_VERSION,
            window: window().label(),
            window_secs: window().secs(),
            scope,
            subject: subject.to_string(),
            started: self.started,
            in_progress: self.in_progress,
            success: self.success,
            failed: self.failed,
            aborted: self.aborted,
            unknown: self.unknown,
            failure_rate: rate,
            duration_p50_secs: percentile(&self.durations, 0.5),
            duration_p95_secs: percentile(&self.durations, 0.95),
            top_exit_codes: top(&self.exit_codes, TOP_N)
                .into_iter()
                .map(|(code, count)| ExitCodeCount {
                    code,
                    category: schema::exit_codes::category(code),
                    description: schema::exit_codes::describe(code).into_owned(),
                    count,
                })
                .collect(),
            top_categories: top(&self.categories, TOP_N)
                .into_iter()
                .map(|(category, count)| CategoryCount { category, count })
                .collect(),
            top_signatures: top(&self.signatures, TOP_N)
                .into_iter()
                .map(|(signature, count)| SignatureCount { signature, count })
                .collect(),
            clients: Some(self.clients.len() as u32),
        }
    }
}

/// Nearest-rank percentile (the aggregator's histogram is exact below 64 s, where these tests stay).
fn percentile(values: &[u32], q: f64) -> Option<u32> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// The `n` largest counts, ties by key.
fn top<K: Clone + Ord>(counts: &HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
    let mut all: Vec<(K, u64)> = counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// The Subject header of a raw mail (unfolded).
pub fn subject(mail: &str) -> String {
    let mut lines = mail.lines().skip_while(|l| !l.starts_with("Subject:"));
    let mut out = lines
        .next()
        .map(|l| l.trim_start_matches("Subject:").trim().to_string())
        .unwrap_or_default();
    for l in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
        out.push(' ');
        out.push_str(l.trim());
    }
    out
}

impl Stack {
    /// Waits until `telemetry_stats` holds `decided` (success + failed) installs of `app` in 24 h.
    pub async fn wait_rollup(&self, app: &str, decided: u64) {
        let key = group_key(window(), Scope::App, app);
        poll_until(
            &format!("{app} rolled up"),
            Duration::from_secs(30),
            || async {
                let store = self
                    .js
                    .get_key_value(schema::names::STATS_BUCKET)
                    .await
                    .ok()?;
                let bytes = store.get(&key).await.ok()??;
                let stats: GroupStats = serde_json::from_slice(&bytes).ok()?;
                (stats.success + stats.failed == decided).then_some(())
            },
        )
        .await;
    }

    /// Waits until the alert record of `key` satisfies `check`.
    pub async fn wait_record(
        &self,
        key: &str,
        check: impl Fn(&AlertRecord) -> bool,
    ) -> AlertRecord {
        poll_until(
            &format!("alert record {key}"),
            Duration::from_secs(30),
            || async { self.record(key).await.filter(|r| check(r)) },
        )
        .await
    }
}

/// Waits until `n` alert events are on TELEMETRY_ALERTS.
pub async fn poll_until_events(stack: &Stack, n: usize) {
    poll_until(
        &format!("{n} alert events"),
        Duration::from_secs(30),
        || async { (stack.alert_events().await.len() >= n).then_some(()) },
    )
    .await;
}
