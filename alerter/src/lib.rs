//! The alerter: watches the rollups in `telemetry_stats`, evaluates the rules ([`rules`]) on every tick,
//! and mails each alert and resolution exactly once across replicas and restarts. The state of every rule
//! and subject lives in the KV bucket `telemetry_alerts` (records in `schema::alert`): a replica claims a
//! transition with create or compare-and-set before doing anything, records it on the stream
//! `TELEMETRY_ALERTS`, sends the mail with backoff while renewing its lease, and marks it sent. A replica
//! that dies mid-delivery leaves a lapsed lease that another one takes over with the same mail. `run` is
//! the whole service.
//!
//! App names and signatures are client text, so mail is bounded: an app alerts only when enough
//! distinct clients started its installs ([`rules::app_condition`]); the replicas share a mail budget
//! per period (`mail_budget.<period>` in `telemetry_alerts`, taken by compare-and-set), and the alerts
//! beyond it are folded into one digest mailed after the period; only the alert window's app rollups
//! are held, at most `ALERT_MAX_APPS` of them.

pub mod admin;
pub mod config;
pub mod mail;
pub mod metrics;
pub mod rules;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use fleet::{Every, Shutdown};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use schema::alert::{
    alert_key, alert_subject, budget_key, budget_period, AlertEvent, AlertRecord, Delivery,
    DigestDelivery, FoldedAlert, Kind, MailBudget, Rule, Scope, ALERT_VERSION, MAX_FOLDED_LISTED,
};
use schema::names;
use schema::stats::{
    group_key, GroupStats, NewSignatures, Scope as StatsScope, KEY_NEW_SIGNATURES,
};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use uuid::Uuid;

pub use config::Config;

use crate::mail::Mailer;
use crate::metrics as m;
use crate::rules::{app_condition, decide, rate_condition, signature_condition, Action, Condition};

/// A cap that bites is logged at most this often.
const CAP_WARN_EVERY: Duration = Duration::from_secs(600);

/// Sends the `send-test` mail.
pub async fn send_test(config: &Config) -> Result<usize, mail::MailError> {
    send_test_with(config, &Mailer::new(config)?).await
}

/// Sends the test mail through `mailer`; returns the number of recipients.
pub async fn send_test_with(config: &Config, mailer: &Mailer) -> Result<usize, mail::MailError> {
    let text = format!(
        "This is a test mail from telemetry-alerter.\n\nDashboard: {}\n",
        config.dashboard_link(None)
    );
    let html = format!(
        "<html><body><p>This is a test mail from telemetry-alerter.</p><p><a href=\"{0}\">{0}</a></p></body></html>",
        config.dashboard_link(None)
    );
    let message = mailer.message(
        "[telemetry] test mail",
        text,
        html,
        &Uuid::now_v7().to_string(),
    )?;
    mailer.send(message).await?;
    Ok(mailer.recipients())
}

/// One decided transition, to be claimed and delivered.
#[derive(Debug, Clone)]
struct Transition {
    key: String,
    action: Action,
    /// The record the decision was based on, with its revision (`None`: no record).
    current: Option<(AlertRecord, u64)>,
    /// Fresh figures for a new alert or resolution.
    event: AlertEvent,
}

/// Shared by the loop and the delivery tasks.
struct Shared {
    config: Config,
    mailer: Mailer,
    js: jetstream::Context,
    alerts: kv::Store,
    /// This replica's id, written as the owner of its claims.
    me: String,
    /// Keys with a delivery running in this replica.
    busy: Mutex<HashSet<String>>,
    /// This replica's deliveries take their place in the mail budget one at a time (the replicas
    /// agree by compare-and-set).
    budget: tokio::sync::Mutex<()>,
    ready: AtomicBool,
}

/// Runs the alerter until `shutdown` resolves.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.check()?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mailer = Mailer::new(&config)?;
    let stop_ops = Shutdown::new();
    let js = jetstream::new(client.clone());
    let mut shutdown = std::pin::pin!(shutdown);

    let setup = async {
        let stats = fleet::nats::ensure_bucket(&js, &names::stats_bucket(config.kv_replicas)).await;
        let alerts =
            fleet::nats::ensure_bucket(&js, &names::alerts_bucket(config.kv_replicas)).await;
        let settings = names::alerts_stream(config.kv_replicas);
        fleet::retry::forever("alert stream", || {
            fleet::nats::ensure_stream(&js, &settings)
        })
        .await;
        (stats, alerts)
    };
    let (stats_store, alerts_store) = tokio::select! {
        stores = setup => stores,
        () = &mut shutdown => return Ok(()),
    };
    let shared = Arc::new(Shared {
        me: Uuid::now_v7().to_string(),
        mailer,
        js: js.clone(),
        alerts: alerts_store.clone(),
        busy: Mutex::new(HashSet::new()),
        budget: tokio::sync::Mutex::new(()),
        ready: AtomicBool::new(false),
        config,
    });
    let ready = {
        let shared = shared.clone();
        let client = client.clone();
        move || {
            let connected = fleet::nats::connected(&client);
            let loaded = shared.ready.load(Ordering::Relaxed);
            (
                connected && loaded,
                serde_json::json!({ "broker": connected, "state_loaded": loaded }),
            )
        }
    };
    let ops = fleet::ops::Ops::json(ready, metrics);
    let (ops_addr, ops_task) = fleet::ops::spawn(
        shared.config.ops_addr,
        ops,
        stop_ops.clone().triggered_owned(),
    )
    .await?;
    tracing::info!(addr = %ops_addr, replica = %shared.me, "ops port listening");

    let stop_admin = Shutdown::new();
    let responder = tokio::spawn(admin::respond(
        client.clone(),
        shared.config.clone(),
        shared.mailer.clone(),
        stop_admin.clone(),
    ));
    let mut deliveries = JoinSet::new();
    evaluate_loop(
        &shared,
        &stats_store,
        &alerts_store,
        &mut deliveries,
        &mut shutdown,
    )
    .await;

    shared.ready.store(false, Ordering::Relaxed);
    stop_admin.trigger();
    let _ = responder.await;
    // Deliveries in flight get a moment to finish; an aborted one leaves a lease that lapses, and the
    // next replica (or this one restarted) takes it over.
    let drain = async { while deliveries.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("deliveries still running at shutdown, leaving them to their lease");
        deliveries.abort_all();
    }
    stop_ops.trigger();
    let _ = ops_task.await;
    fleet::nats::flush(&client, fleet::nats::FLUSH_DEADLINE).await;
    tracing::info!("stopped");
    Ok(())
}

/// The stats keys the alerter holds: its window's global and app groups (at most `max_apps` apps) and
/// the new signatures; every other key of `telemetry_stats` is skipped.
struct StatsFilter {
    global: String,
    app_prefix: String,
    max_apps: usize,
    apps: usize,
    /// The "app rollups held" warning, at most every [`CAP_WARN_EVERY`].
    cap_warning: Every,
}

impl StatsFilter {
    fn new(config: &Config) -> StatsFilter {
        let window = config.alert_window;
        StatsFilter {
            global: group_key(window, StatsScope::Global, ""),
            app_prefix: format!("{}.app.", window.label()),
            max_apps: config.alert_max_apps,
            apps: 0,
            cap_warning: Every::new(CAP_WARN_EVERY),
        }
    }

    fn is_app(&self, key: &str) -> bool {
        key.starts_with(&self.app_prefix)
    }

    /// Whether to hold a put of `key` (`held`: it is held already).
    fn admit(&mut self, key: &str, held: bool) -> bool {
        if self.is_app(key) {
            if held {
                return true;
            }
            if self.apps >= self.max_apps {
                ::metrics::counter!(m::APPS_CAPPED).increment(1);
                if self.cap_warning.due().is_some() {
                    tracing::warn!(
                        max_apps = self.max_apps,
                        "ALERT_MAX_APPS app rollups held: further apps are not evaluated"
                    );
                }
                return false;
            }
            self.apps += 1;
            return true;
        }
        key == self.global || key == KEY_NEW_SIGNATURES
    }
}

/// A KV bucket mirrored in memory through a watch with history.
struct Mirror {
    name: &'static str,
    store: kv::Store,
    watch: kv::Watch,
    entries: HashMap<String, (Bytes, u64)>,
    loaded: bool,
    /// Which keys to hold (`None`: every key).
    filter: Option<StatsFilter>,
}

impl Mirror {
    async fn open(name: &'static str, store: &kv::Store) -> Mirror {
        let watch = fleet::retry::forever(name, || store.watch_with_history(">")).await;
        let empty = fleet::retry::forever(name, || store.status())
            .await
            .values()
            == 0;
        Mirror {
            name,
            store: store.clone(),
            watch,
            entries: HashMap::new(),
            loaded: empty,
            filter: None,
        }
    }

    /// Applies one watch item; reopens the watch when it ended.
    async fn apply(&mut self, item: Option<Result<kv::Entry, kv::WatcherError>>) {
        match item {
            Some(Ok(entry)) => {
                if entry.delta == 0 || entry.seen_current {
                    self.loaded = true;
                }
                match entry.operation {
                    kv::Operation::Put => {
                        let held = self.entries.get(&entry.key).map(|(_, rev)| *rev);
                        if let Some(filter) = &mut self.filter {
                            if !filter.admit(&entry.key, held.is_some()) {
                                return;
                            }
                        }
                        let newer = held.is_none_or(|rev| rev < entry.revision);
                        if newer {
                            self.entries
                                .insert(entry.key, (entry.value, entry.revision));
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => {
                        let removed = self.entries.remove(&entry.key).is_some();
                        if let Some(filter) = &mut self.filter {
                            if removed && filter.is_app(&entry.key) {
                                filter.apps = filter.apps.saturating_sub(1);
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(bucket = self.name, error = %e, "watch error"),
            None => {
                tracing::warn!(bucket = self.name, "watch ended, reopening");
                let reopened = Mirror::open(self.name, &self.store).await;
                self.watch = reopened.watch;
                self.entries.clear();
                self.loaded = reopened.loaded;
                if let Some(filter) = &mut self.filter {
                    filter.apps = 0;
                }
            }
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.entries
            .get(key)
            .and_then(|(bytes, _)| serde_json::from_slice(bytes).ok())
    }
}

async fn evaluate_loop(
    shared: &Arc<Shared>,
    stats_store: &kv::Store,
    alerts_store: &kv::Store,
    deliveries: &mut JoinSet<()>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) {
    let mut stats = Mirror::open("stats", stats_store).await;
    stats.filter = Some(StatsFilter::new(&shared.config));
    let mut alerts = Mirror::open("alerts", alerts_store).await;
    let mut tick = tokio::time::interval(shared.config.eval_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut *shutdown => return,
            item = stats.watch.next() => stats.apply(item).await,
            item = alerts.watch.next() => alerts.apply(item).await,
            _ = tick.tick() => {
                while deliveries.try_join_next().is_some() {}
                let loaded = stats.loaded && alerts.loaded;
                shared.ready.store(loaded, Ordering::Relaxed);
                if !loaded {
                    continue;
                }
                let now = OffsetDateTime::now_utc();
                if let Some(filter) = &stats.filter {
                    ::metrics::gauge!(m::APPS).set(filter.apps as f64);
                }
                if shared.config.alert_enabled {
                    for (key, budget, revision) in digests_due(&shared.config, &alerts, now) {
                        let claimed = shared
                            .busy
                            .lock()
                            .map(|mut busy| busy.insert(key.clone()))
                            .unwrap_or(false);
                        if claimed {
                            deliveries.spawn(settle_budget(shared.clone(), key, budget, revision));
                        }
                    }
                }
                let history = stats
                    .json::<NewSignatures>(KEY_NEW_SIGNATURES)
                    .and_then(|n| n.history.parse::<schema::span::Span>().ok());
                let forget = records_to_forget(&alerts.entries, history, now);
                if !forget.is_empty() {
                    deliveries.spawn(forget_records(shared.clone(), forget));
                }
                for t in transitions(&shared.config, &stats, &alerts, now) {
                    let claimed = shared
                        .busy
                        .lock()
                        .map(|mut busy| busy.insert(t.key.clone()))
                        .unwrap_or(false);
                    if claimed {
                        deliveries.spawn(handle(shared.clone(), t));
                    }
                }
            }
        }
    }
}

fn rate_event(
    config: &Config,
    kind: Kind,
    scope: Scope,
    subject: &str,
    stats: Option<&GroupStats>,
    now: OffsetDateTime,
) -> AlertEvent {
    let app = (scope == Scope::App).then_some(subject);
    let mut event = AlertEvent {
        v: ALERT_VERSION,
        alert_id: Uuid::now_v7(),
        kind,
        rule: Rule::FailureRate,
        scope,
        subject: subject.to_string(),
        at: now,
        window: config.alert_window.label(),
        threshold: Some(config.thresholds().failure_rate),
        failure_rate: None,
        started: 0,
        success: 0,
        failed: 0,
        aborted: 0,
        unknown: 0,
        apps: Vec::new(),
        top_exit_codes: Vec::new(),
        top_signatures: Vec::new(),
        dashboard_url: config.dashboard_link(app),
    };
    if let Some(s) = stats {
        event.failure_rate = s.failure_rate;
        event.started = s.started;
        event.success = s.success;
        event.failed = s.failed;
        event.aborted = s.aborted;
        event.unknown = s.unknown;
        event.top_exit_codes = s.top_exit_codes.clone();
        event.top_signatures = s.top_signatures.clone();
    }
    event
}

/// Every transition the rules call for, given the mirrored stats and alert records.
fn transitions(
    config: &Config,
    stats: &Mirror,
    alerts: &Mirror,
    now: OffsetDateTime,
) -> Vec<Transition> {
    let thresholds = config.thresholds();
    let window = config.alert_window;
    let mut plan = Plan {
        alerts,
        now,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    let global: Option<GroupStats> = stats.json(&group_key(window, StatsScope::Global, ""));
    plan.consider(
        alert_key(Rule::FailureRate, Scope::Global, ""),
        rate_condition(global.as_ref(), &thresholds),
        &|kind| rate_event(config, kind, Scope::Global, "", global.as_ref(), now),
    );
    let app_prefix = format!("{}.app.", window.label());
    for key in stats.entries.keys().filter(|k| k.starts_with(&app_prefix)) {
        let Some(app) = stats.json::<GroupStats>(key) else {
            continue;
        };
        plan.consider(
            alert_key(Rule::FailureRate, Scope::App, &app.subject),
            app_condition(&app, &thresholds),
            &|kind| rate_event(config, kind, Scope::App, &app.subject, Some(&app), now),
        );
    }
    if let Some(fresh) = stats.json::<NewSignatures>(KEY_NEW_SIGNATURES) {
        for sig in &fresh.signatures {
            plan.consider(
                alert_key(Rule::NewSignature, Scope::Signature, &sig.signature),
                signature_condition(sig, &thresholds),
                &|kind| AlertEvent {
                    v: ALERT_VERSION,
                    alert_id: Uuid::now_v7(),
                    kind,
                    rule: Rule::NewSignature,
                    scope: Scope::Signature,
                    subject: sig.signature.clone(),
                    at: now,
                    window: fresh.window.clone(),
                    threshold: None,
                    failure_rate: None,
                    started: sig.installs,
                    success: 0,
                    failed: 0,
                    aborted: 0,
                    unknown: 0,
                    apps: sig.apps.clone(),
                    top_exit_codes: Vec::new(),
                    top_signatures: Vec::new(),
                    dashboard_url: config
                        .dashboard_link((sig.apps.len() == 1).then(|| sig.apps[0].name.as_str())),
                },
            );
        }
    }
    // Records whose group left the stats: an app alert resolves, anything pending may need a takeover.
    let orphans: Vec<(String, AlertRecord)> = alerts
        .entries
        .iter()
        .filter(|(k, _)| !plan.seen.contains(*k) && budget_period(k).is_none())
        .filter_map(|(k, (bytes, _))| {
            serde_json::from_slice::<AlertRecord>(bytes)
                .ok()
                .map(|r| (k.clone(), r))
        })
        .collect();
    for (key, record) in orphans {
        let condition = match record.event.rule {
            Rule::FailureRate => Condition::Clear,
            Rule::NewSignature => Condition::Hold,
        };
        let subject = record.event.subject.clone();
        let scope = record.event.scope;
        plan.consider(key, condition, &|kind| {
            rate_event(config, kind, scope, &subject, None, now)
        });
    }
    plan.out
}

/// Collects transitions, remembering which records were looked at.
struct Plan<'a> {
    alerts: &'a Mirror,
    now: OffsetDateTime,
    seen: HashSet<String>,
    out: Vec<Transition>,
}

impl Plan<'_> {
    fn consider(&mut self, key: String, condition: Condition, event: &dyn Fn(Kind) -> AlertEvent) {
        let current: Option<(AlertRecord, u64)> =
            self.alerts.entries.get(&key).and_then(|(bytes, rev)| {
                serde_json::from_slice::<AlertRecord>(bytes)
                    .ok()
                    .map(|r| (r, *rev))
            });
        let action = decide(condition, current.as_ref().map(|(r, _)| r), self.now);
        self.seen.insert(key.clone());
        let kind = match action {
            Action::Nothing => return,
            Action::Fire => Kind::Alert,
            Action::Resolve => Kind::Resolved,
            Action::TakeOver => current.as_ref().map_or(Kind::Alert, |(r, _)| r.state),
        };
        self.out.push(Transition {
            key,
            action,
            current,
            event: event(kind),
        });
    }
}

/// Removes a key from the busy set when its delivery task ends, however it ends.
struct BusyGuard<'a> {
    shared: &'a Shared,
    key: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.shared.busy.lock() {
            busy.remove(&self.key);
        }
    }
}

/// Claims one transition and, when the claim wins, delivers it.
async fn handle(shared: Arc<Shared>, t: Transition) {
    let _guard = BusyGuard {
        shared: &shared,
        key: t.key.clone(),
    };
    let config = &shared.config;
    let now = OffsetDateTime::now_utc();
    let record = match (t.action, &t.current) {
        (Action::TakeOver, Some((current, _))) => AlertRecord {
            owner: shared.me.clone(),
            lease_until: now + config.lease(),
            ..current.clone()
        },
        (Action::Resolve, Some((current, _))) => AlertRecord {
            v: ALERT_VERSION,
            state: Kind::Resolved,
            delivery: Delivery::Pending,
            owner: shared.me.clone(),
            lease_until: now + config.lease(),
            cooldown_until: current.cooldown_until,
            attempts: 0,
            recorded: false,
            event: t.event.clone(),
        },
        _ => AlertRecord {
            v: ALERT_VERSION,
            state: Kind::Alert,
            delivery: Delivery::Pending,
            owner: shared.me.clone(),
            lease_until: now + config.lease(),
            cooldown_until: now + config.cooldown(),
            attempts: 0,
            recorded: false,
            event: t.event.clone(),
        },
    };
    let bytes: Bytes = serde_json::to_vec(&record).unwrap_or_default().into();
    let claimed = match &t.current {
        None => shared
            .alerts
            .create(&t.key, bytes)
            .await
            .map_err(|e| e.to_string()),
        Some((_, revision)) => shared
            .alerts
            .update(&t.key, bytes, *revision)
            .await
            .map_err(|e| e.to_string()),
    };
    let revision = match claimed {
        Ok(revision) => revision,
        Err(e) => {
            ::metrics::counter!(m::CLAIMS_LOST).increment(1);
            tracing::debug!(key = %t.key, error = %e, "claim lost to another replica");
            return;
        }
    };
    ::metrics::counter!(m::CLAIMS, "rule" => record.event.rule.as_str(), "kind" => record.state.as_str())
        .increment(1);
    tracing::info!(
        key = %t.key,
        kind = record.state.as_str(),
        action = ?t.action,
        alert_id = %record.event.alert_id,
        "alert claimed"
    );
    deliver(&shared, &t.key, record, revision).await;
}

/// Records the event on the alert stream and mails it, retrying with backoff and renewing the lease,
/// then marks it sent. Gives up only when another replica took the record over.
async fn deliver(shared: &Shared, key: &str, mut record: AlertRecord, mut revision: u64) {
    let config = &shared.config;
    // Beyond the period's mail budget the alert goes into the digest instead of a mail of its own.
    let folded = config.alert_enabled && reserve(shared, &record.event).await == Budget::Folded;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(config.retry_max())
        .without_max_times()
        .build();
    loop {
        if !record.recorded && record_event(&shared.js, &record.event).await {
            record.recorded = true;
            match put_record(shared, key, &record, revision).await {
                Some(r) => revision = r,
                None => return,
            }
        }
        // With mail off, or folded into the digest, the delivery is done once the alert is recorded.
        let sent = if !config.alert_enabled || folded {
            if record.recorded {
                Ok(())
            } else {
                Err("alert event not recorded yet".to_string())
            }
        } else {
            match shared.mailer.alert(&record.event) {
                Ok(message) => shared.mailer.send(message).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        match sent {
            Ok(()) => break,
            Err(e) => {
                record.attempts += 1;
                ::metrics::counter!(m::MAIL_FAILURES).increment(1);
                let wait = delays.next().unwrap_or(config.retry_max());
                tracing::warn!(key, attempts = record.attempts, ?wait, error = %e, "mail not sent, retrying");
                record.lease_until = OffsetDateTime::now_utc() + config.lease();
                match put_record(shared, key, &record, revision).await {
                    Some(r) => revision = r,
                    None => return,
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
    if folded {
        ::metrics::counter!(m::MAILS_FOLDED, "kind" => record.state.as_str()).increment(1);
        tracing::info!(key, alert_id = %record.event.alert_id, kind = record.state.as_str(), "mail budget spent: alert folded into the digest");
    } else if config.alert_enabled {
        ::metrics::counter!(m::MAILS_SENT, "kind" => record.state.as_str()).increment(1);
        tracing::info!(key, alert_id = %record.event.alert_id, kind = record.state.as_str(), "mail sent");
    } else {
        tracing::info!(key, alert_id = %record.event.alert_id, kind = record.state.as_str(), "alert recorded, no mail (ALERT_ENABLED=false)");
    }
    record.delivery = Delivery::Sent;
    // The mail is out: marking it sent must not be lost to a passing broker hiccup.
    for attempt in 0..20u32 {
        if put_record(shared, key, &record, revision).await.is_some() {
            return;
        }
        if let Ok(Some(entry)) = shared.alerts.entry(key).await {
            match serde_json::from_slice::<AlertRecord>(&entry.value) {
                Ok(current)
                    if current.owner == shared.me
                        && current.event.alert_id == record.event.alert_id =>
                {
                    revision = entry.revision;
                }
                _ => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
    }
    tracing::warn!(
        key,
        "could not mark the mail sent; another replica may send it again after the lease"
    );
}

/// Compare-and-set of our own record; `None` when another replica changed it (we lost the claim) or
/// the broker did not answer.
async fn put_record<T: serde::Serialize>(
    shared: &Shared,
    key: &str,
    record: &T,
    revision: u64,
) -> Option<u64> {
    let bytes: Bytes = serde_json::to_vec(record).unwrap_or_default().into();
    match shared.alerts.update(key, bytes, revision).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(key, error = %e, "alert record update failed");
            None
        }
    }
}

/// Publishes the alert event to `TELEMETRY_ALERTS` (de-duplicated by its id); true once stored.
async fn record_event(js: &jetstream::Context, event: &AlertEvent) -> bool {
    let payload: Bytes = serde_json::to_vec(event).unwrap_or_default().into();
    let publish = jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(event.alert_id.to_string());
    let acked = match js.send_publish(alert_subject(event), publish).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match acked {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(alert_id = %event.alert_id, error = %e, "alert event not recorded, retrying with the mail");
            false
        }
    }
}

/// Most records forgotten per tick.
const FORGET_PER_TICK: usize = 100;

/// Records that no longer change anything, so the bucket and every replica's mirror stay bounded: a
/// resolved and delivered alert past its cooldown (the rules decide the same without it), and a
/// delivered new-signature alert older than the aggregator's history (`history`: after it the
/// signature would count as new again anyway). With their revision, for a compare-and-set delete.
fn records_to_forget(
    entries: &HashMap<String, (Bytes, u64)>,
    history: Option<schema::span::Span>,
    now: OffsetDateTime,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = entries
        .iter()
        .filter(|(key, _)| budget_period(key).is_none())
        .filter_map(|(key, (bytes, revision))| {
            let record = serde_json::from_slice::<AlertRecord>(bytes).ok()?;
            if record.delivery != Delivery::Sent || record.event.scope == Scope::Global {
                return None;
            }
            let done = match (record.event.rule, record.state) {
                (Rule::FailureRate, Kind::Resolved) => record.cooldown_until < now,
                (Rule::NewSignature, _) => {
                    history.is_some_and(|h| record.event.at < now - h.duration())
                }
                _ => false,
            };
            done.then(|| (key.clone(), *revision))
        })
        .collect();
    out.sort();
    out.truncate(FORGET_PER_TICK);
    out
}

/// Deletes records, each only if unchanged since it was judged (another replica may just have claimed
/// it).
async fn forget_records(shared: Arc<Shared>, records: Vec<(String, u64)>) {
    for (key, revision) in records {
        let busy = shared
            .busy
            .lock()
            .map(|busy| busy.contains(&key))
            .unwrap_or(true);
        if busy {
            continue;
        }
        match shared
            .alerts
            .delete_expect_revision(&key, Some(revision))
            .await
        {
            Ok(()) => tracing::debug!(key, "settled alert record forgotten"),
            Err(e) => tracing::debug!(key, error = %e, "settled alert record kept"),
        }
    }
}

/// Whether an alert gets a mail of its own or goes into the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Send,
    Folded,
}

/// Takes a place in the current period's mail budget (compare-and-set on `mail_budget.<period>`,
/// shared by the replicas), or folds the alert into the period's digest when the budget is spent.
/// When the bucket does not answer it sends (the claim and the record need the bucket too).
async fn reserve(shared: &Shared, event: &AlertEvent) -> Budget {
    let config = &shared.config;
    let _one_at_a_time = shared.budget.lock().await;
    for attempt in 0..50u64 {
        let now = OffsetDateTime::now_utc();
        let (period, start) = config.budget_period(now);
        let key = budget_key(period);
        let current = match shared.alerts.entry(key.as_str()).await {
            Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
            Err(e) => {
                tracing::warn!(key, error = %e, "mail budget not readable, retrying");
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1).min(10))).await;
                continue;
            }
        };
        let mut budget = current
            .as_ref()
            .and_then(|e| serde_json::from_slice::<MailBudget>(&e.value).ok())
            .unwrap_or_else(|| MailBudget {
                v: ALERT_VERSION,
                period_start: start,
                period_secs: config.alert_mail_budget_period_secs,
                sent: 0,
                folded: Vec::new(),
                folded_total: 0,
                digest: None,
            });
        let outcome = if budget.sent < config.alert_mail_budget_per_hour {
            budget.sent += 1;
            Budget::Send
        } else {
            if budget.folded.len() < MAX_FOLDED_LISTED {
                budget.folded.push(FoldedAlert {
                    alert_id: event.alert_id,
                    at: event.at,
                    line: mail::headline(event, mail::SUBJECT_NAME_CHARS),
                });
            }
            budget.folded_total += 1;
            Budget::Folded
        };
        let bytes: Bytes = serde_json::to_vec(&budget).unwrap_or_default().into();
        let written = match &current {
            Some(entry) => shared
                .alerts
                .update(key.as_str(), bytes, entry.revision)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => shared
                .alerts
                .create(key.as_str(), bytes)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return outcome,
            // Another replica took a place first: read again.
            Err(e) => tracing::debug!(key, error = %e, "mail budget changed, retrying"),
        }
    }
    tracing::warn!("mail budget could not be updated, sending anyway");
    Budget::Send
}

/// Budget records of past periods that need their digest sent (none claimed it, or its owner's lease
/// lapsed), or that are settled and can go.
fn digests_due(
    config: &Config,
    alerts: &Mirror,
    now: OffsetDateTime,
) -> Vec<(String, MailBudget, u64)> {
    let (current, _) = config.budget_period(now);
    let mut out = Vec::new();
    for (key, (bytes, revision)) in &alerts.entries {
        let Some(period) = budget_period(key) else {
            continue;
        };
        if period >= current {
            continue;
        }
        let Ok(budget) = serde_json::from_slice::<MailBudget>(bytes) else {
            continue;
        };
        let settled = budget.folded_total == 0
            || budget
                .digest
                .as_ref()
                .is_some_and(|d| d.delivery == Delivery::Sent);
        let claimable = match &budget.digest {
            None => true,
            Some(d) => d.delivery == Delivery::Pending && d.lease_until < now,
        };
        if (settled && period < current - 1) || (!settled && claimable) {
            out.push((key.clone(), budget, *revision));
        }
    }
    out
}

/// Mails the digest of a past period's folded alerts once (claimed by compare-and-set, retried with
/// backoff while renewing the lease, like an alert), or removes a settled budget record.
async fn settle_budget(shared: Arc<Shared>, key: String, mut budget: MailBudget, revision: u64) {
    let _guard = BusyGuard {
        shared: &shared,
        key: key.clone(),
    };
    let config = &shared.config;
    let settled = budget.folded_total == 0
        || budget
            .digest
            .as_ref()
            .is_some_and(|d| d.delivery == Delivery::Sent);
    if settled {
        if let Err(e) = shared.alerts.delete(&key).await {
            tracing::debug!(key, error = %e, "old mail budget not removed");
        }
        return;
    }
    let digest_id = budget
        .digest
        .as_ref()
        .map_or_else(Uuid::now_v7, |d| d.digest_id);
    let attempts = budget.digest.as_ref().map_or(0, |d| d.attempts);
    budget.digest = Some(DigestDelivery {
        digest_id,
        delivery: Delivery::Pending,
        owner: shared.me.clone(),
        lease_until: OffsetDateTime::now_utc() + config.lease(),
        attempts,
    });
    let Some(mut revision) = put_record(&shared, &key, &budget, revision).await else {
        ::metrics::counter!(m::CLAIMS_LOST).increment(1);
        return;
    };
    let (subject, text, html) = mail::compose_digest(
        budget.period_start,
        config.alert_mail_budget_per_hour,
        &budget.folded,
        budget.folded_total,
    );
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(config.retry_max())
        .without_max_times()
        .build();
    loop {
        let sent = match shared.mailer.message(
            &subject,
            text.clone(),
            html.clone(),
            &digest_id.to_string(),
        ) {
            Ok(message) => shared.mailer.send(message).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let Some(digest) = budget.digest.as_mut() else {
            return;
        };
        match sent {
            Ok(()) => {
                digest.delivery = Delivery::Sent;
                break;
            }
            Err(e) => {
                digest.attempts += 1;
                digest.lease_until = OffsetDateTime::now_utc() + config.lease();
                ::metrics::counter!(m::MAIL_FAILURES).increment(1);
                let wait = delays.next().unwrap_or(config.retry_max());
                tracing::warn!(key, attempts = digest.attempts, ?wait, error = %e, "digest not sent, retrying");
                match put_record(&shared, &key, &budget, revision).await {
                    Some(r) => revision = r,
                    None => return,
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
    ::metrics::counter!(m::DIGESTS_SENT).increment(1);
    tracing::info!(key, folded = budget.folded_total, digest_id = %digest_id, "digest sent");
    for attempt in 0..20u32 {
        if put_record(&shared, &key, &budget, revision).await.is_some() {
            return;
        }
        // Still ours (the same digest, not taken over): mark it on the newest revision.
        let Ok(Some(entry)) = shared.alerts.entry(key.as_str()).await else {
            return;
        };
        let ours = serde_json::from_slice::<MailBudget>(&entry.value)
            .ok()
            .and_then(|b| b.digest)
            .is_some_and(|d| d.owner == shared.me && d.digest_id == digest_id);
        if !ours {
            return;
        }
        revision = entry.revision;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
    }
    tracing::warn!(
        key,
        "could not mark the digest sent; another replica may send it again after the lease"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts in order; what the mirror holds after each.
    fn check(puts: &[&str], held: &[bool]) {
        let mut config = Config::for_nats("nats://x");
        config.alert_max_apps = 2;
        let mut filter = StatsFilter::new(&config);
        let mut holding = HashSet::new();
        let got: Vec<bool> = puts
            .iter()
            .map(|key| {
                let admitted = filter.admit(key, holding.contains(*key));
                if admitted {
                    holding.insert(key.to_string());
                }
                admitted
            })
            .collect();
        assert_eq!(got, held, "{puts:?}");
    }

    fn record(rule: Rule, state: Kind, delivery: Delivery, at: i64, cooldown: i64) -> Bytes {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).expect("time");
        let scope = match rule {
            Rule::FailureRate => Scope::App,
            Rule::NewSignature => Scope::Signature,
        };
        let record = AlertRecord {
            v: 1,
            state,
            delivery,
            owner: "a".into(),
            lease_until: t(at),
            cooldown_until: t(cooldown),
            attempts: 0,
            recorded: true,
            event: AlertEvent {
                v: 1,
                alert_id: Uuid::nil(),
                kind: state,
                rule,
                scope,
                subject: "x".into(),
                at: t(at),
                window: "24h".into(),
                threshold: None,
                failure_rate: None,
                started: 0,
                success: 0,
                failed: 0,
                aborted: 0,
                unknown: 0,
                apps: vec![],
                top_exit_codes: vec![],
                top_signatures: vec![],
                dashboard_url: String::new(),
            },
        };
        serde_json::to_vec(&record).expect("json").into()
    }

    #[test]
    fn settled_records_are_forgotten() {
        use Delivery::*;
        use Kind::*;
        use Rule::*;
        let entries: HashMap<String, (Bytes, u64)> = [
            (
                "resolved-cooled",
                record(FailureRate, Resolved, Sent, 0, 100),
            ),
            (
                "resolved-cooling",
                record(FailureRate, Resolved, Sent, 0, 3600),
            ),
            (
                "resolved-pending",
                record(FailureRate, Resolved, Pending, 0, 100),
            ),
            ("firing", record(FailureRate, Alert, Sent, 0, 100)),
            (
                "signature-old",
                record(NewSignature, Alert, Sent, -8 * 86_400, 0),
            ),
            (
                "signature-recent",
                record(NewSignature, Alert, Sent, -86_400, 0),
            ),
            ("mail_budget.1", Bytes::from_static(b"{}")),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| (k.to_string(), (v, i as u64)))
        .collect();
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000 + 200).expect("now");
        let week: schema::span::Span = "7d".parse().expect("span");
        let keys = |h| {
            records_to_forget(&entries, h, now)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(Some(week)), vec!["resolved-cooled", "signature-old"]);
        assert_eq!(keys(None), vec!["resolved-cooled"]);
    }

    #[test]
    fn the_stats_mirror_holds_the_alert_window_and_at_most_max_apps() {
        check(
            &[
                "24h.global",
                "signatures.new",
                "1h.global",
                "7d.app.a",
                "meta",
                "24h.apps",
            ],
            &[true, true, false, false, false, false],
        );
        check(
            &[
                "24h.app.a",
                "24h.app.b",
                "24h.app.c",
                "24h.app.a",
                "24h.global",
            ],
            &[true, true, false, true, true],
        );
    }
}
