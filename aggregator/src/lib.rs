//! The aggregator: replays `TELEMETRY_EVENTS` from the start of its longest window through an ordered
//! ephemeral consumer, then follows it live; tracks every install with the `schema` merge rules
//! ([`tracker`]); computes sliding-window rollups ([`rollup`]) and writes the changed ones to the KV
//! bucket `telemetry_stats` ([`publish`], layout in `schema::stats`); and times out stuck installs with a
//! synthetic event published under a de-duplication id. It owns no durable state, so replicas compute the
//! same values and a restart loses nothing. `run` is the whole service; `main` parses config and calls it.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod publish;
pub mod rollup;
pub mod tracker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use fleet::{Every, Shutdown};
use futures::{FutureExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use schema::admin::{CleanupRun, CleanupStatus, Reply};
use schema::names;
use schema::stats::{Meta, SNAPSHOT_VERSION};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub use config::Config;

use crate::admin::Command;
use crate::metrics as m;
use crate::publish::Snapshot;
use crate::rollup::RollupConfig;
use crate::tracker::Tracker;

/// A timeout that did not come back through the stream is published again after this long.
const TIMEOUT_RETRY: time::Duration = time::Duration::seconds(30);
/// While replaying, a full name store is pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// A cap that bites is logged at most this often.
const CAP_WARN_EVERY: Duration = Duration::from_secs(600);

/// What the ops port reports.
struct Health {
    caught_up: AtomicBool,
    client: async_nats::Client,
}

/// Runs the aggregator until `shutdown` resolves.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let rollup_config = config.rollup_config()?;
    let health = Arc::new(Health {
        caught_up: AtomicBool::new(false),
        client: client.clone(),
    });
    let stop_ops = Shutdown::new();
    let ready = {
        let health = health.clone();
        move || {
            let connected = fleet::nats::connected(&health.client);
            let caught_up = health.caught_up.load(Ordering::Relaxed);
            (
                connected && caught_up,
                serde_json::json!({ "broker": connected, "caught_up": caught_up }),
            )
        }
    };
    let ops = fleet::ops::Ops::json(ready, metrics);
    let (ops_addr, ops_task) =
        fleet::ops::spawn(config.ops_addr, ops, stop_ops.clone().triggered_owned()).await?;
    tracing::info!(addr = %ops_addr, "ops port listening");

    let js = jetstream::new(client.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    let bucket = names::stats_bucket(config.kv_replicas);
    let store = tokio::select! {
        store = fleet::nats::ensure_bucket(&js, &bucket) => store,
        () = &mut shutdown => {
            stop_ops.trigger();
            return Ok(());
        }
    };
    let (snapshots, latest) = watch::channel(Arc::new(Snapshot::default()));
    let publisher = tokio::spawn(publish::publish_loop(store, latest));
    let (commands, mut requests) = mpsc::channel(admin::QUEUE);
    let stop_admin = Shutdown::new();
    let responder = tokio::spawn(admin::respond(client.clone(), commands, stop_admin.clone()));

    let result = consume(
        &config,
        &rollup_config,
        &js,
        &health,
        &snapshots,
        &mut requests,
        &mut shutdown,
    )
    .await;
    stop_admin.trigger();
    let _ = responder.await;

    health.caught_up.store(false, Ordering::Relaxed);
    drop(snapshots);
    if tokio::time::timeout(Duration::from_secs(5), publisher)
        .await
        .is_err()
    {
        tracing::warn!("stats publisher did not finish within 5s");
    }
    stop_ops.trigger();
    let _ = ops_task.await;
    fleet::nats::flush(&client, fleet::nats::FLUSH_DEADLINE).await;
    tracing::info!("stopped");
    result
}

/// Replays and follows the stream, publishing snapshots and timeouts on every tick, until shutdown.
async fn consume(
    config: &Config,
    rollup_config: &RollupConfig,
    js: &jetstream::Context,
    health: &Health,
    snapshots: &watch::Sender<Arc<Snapshot>>,
    requests: &mut mpsc::Receiver<Command>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let longest = *rollup_config
        .windows
        .last()
        .ok_or_else(|| fleet::ConfigError::new("WINDOWS", "is empty"))?;
    let stream_settings = names::events_stream(
        names::DEFAULT_EVENTS_MAX_AGE,
        names::DEFAULT_EVENTS_MAX_BYTES,
        1,
    );
    let stream = tokio::select! {
        s = open_stream(js, &stream_settings) => s,
        () = &mut *shutdown => return Ok(()),
    };
    let started = Instant::now();
    let from = OffsetDateTime::now_utc() - longest.duration();
    let (mut messages, mut replay_end) = tokio::select! {
        m = open_messages(&stream, from) => m,
        () = &mut *shutdown => return Ok(()),
    };
    tracing::info!(from = %from, until_sequence = replay_end, "replaying the event stream");
    let limits = rollup_config.limits;
    let max_states = config.max_pending_states;
    let new_tracker = || {
        Tracker::with_name_caps(2 * limits.max_apps, 2 * limits.max_signatures)
            .with_state_cap(max_states)
    };
    let shed_warning = Every::new(CAP_WARN_EVERY);
    let mut tracker = new_tracker();
    let mut last_prune = Instant::now();
    let cap_warning = Every::new(CAP_WARN_EVERY);
    let mut events: u64 = 0;
    let mut caught_up = replay_end == 0;
    let mut tick = tokio::time::interval(config.publish_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cleanup_every = config.cleanup_interval();
    if cleanup_every.is_none() {
        tracing::info!("CLEANUP_ENABLED=false: stuck installs are not timed out");
    }
    // The first look at stuck installs is due at the first publish.
    let mut last_cleanup: Option<Instant> = None;
    let publisher = js.clone();

    loop {
        if caught_up && !health.caught_up.load(Ordering::Relaxed) {
            health.caught_up.store(true, Ordering::Relaxed);
            ::metrics::gauge!(m::CAUGHT_UP).set(1.0);
            tracing::info!(
                events,
                installs = tracker.len(),
                secs = started.elapsed().as_secs_f64(),
                "replay done, following live"
            );
            // Publish at once rather than a tick later.
            tick.reset_immediately();
        }
        tokio::select! {
            biased;
            () = &mut *shutdown => break,
            Some(command) = requests.recv() => {
                let now = OffsetDateTime::now_utc();
                let cutoff = now - config.stuck_after.duration();
                match command {
                    Command::Status(answer) => {
                        let _ = answer.send(if caught_up {
                            Reply::Ok(cleanup_status(config, tracker.count_stuck(cutoff)))
                        } else {
                            replaying()
                        });
                    }
                    Command::Run(answer) if !caught_up => {
                        let _ = answer.send(replaying());
                    }
                    Command::Run(answer) if cleanup_every.is_none() => {
                        let _ = answer.send(Reply::Ok(CleanupRun {
                            updated: 0,
                            message: "cleanup is disabled (CLEANUP_ENABLED=false)".into(),
                        }));
                    }
                    Command::Run(answer) => {
                        last_cleanup = Some(Instant::now());
                        let stuck = tracker.take_stuck(cutoff, now - TIMEOUT_RETRY, now);
                        tracing::info!(stuck = stuck.len(), "cleanup round asked for by an admin");
                        let publisher = publisher.clone();
                        tokio::spawn(async move {
                            let updated = publish_timeouts(publisher, stuck, now).await;
                            let _ = answer.send(Reply::Ok(CleanupRun {
                                updated,
                                message: format!("{updated} stuck installs timed out"),
                            }));
                        });
                    }
                }
            }
            next = messages.next() => {
                let Some(next) = next else {
                    tracing::warn!("event consumer ended, reopening");
                    (messages, replay_end) = open_messages(&stream, OffsetDateTime::now_utc() - longest.duration()).await;
                    tracker = new_tracker();
                    caught_up = replay_end == 0;
                    health.caught_up.store(false, Ordering::Relaxed);
                    continue;
                };
                let msg = match next {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::warn!(error = %e, "event consumer error");
                        continue;
                    }
                };
                match serde_json::from_slice::<schema::Event>(&msg.payload) {
                    Ok(event) => {
                        if !tracker.apply(&event) {
                            ::metrics::counter!(m::FORGED_EVENTS).increment(1);
                            tracing::debug!(subject = %msg.subject, "event of another random_id than the install's, not applied");
                        }
                        events += 1;
                        ::metrics::counter!(m::EVENTS).increment(1);
                    }
                    Err(e) => {
                        ::metrics::counter!(m::BAD_EVENTS).increment(1);
                        tracing::debug!(error = %e, subject = %msg.subject, "skipping a message that is not an event");
                    }
                }
                if !caught_up && tracker.names_full() && last_prune.elapsed() >= PRUNE_EVERY {
                    // Replaying a flood of names: keep only the texts of names that qualify so far.
                    let report = rollup::name_report(&tracker, limits);
                    tracker.keep_names(report);
                    last_prune = Instant::now();
                }
                if !caught_up {
                    if let Ok(info) = msg.info() {
                        caught_up = info.pending == 0 || info.stream_sequence >= replay_end;
                    }
                }
            }
            _ = tick.tick(), if caught_up => {
                let now = OffsetDateTime::now_utc();
                let cutoff = now - longest.duration();
                tracker.expire(u32::try_from(cutoff.unix_timestamp().max(0)).unwrap_or(0));
                let began = Instant::now();
                let (values, report) = rollup::rollup_with_report(&tracker, now, rollup_config);
                ::metrics::histogram!(m::ROLLUP_SECONDS).record(began.elapsed().as_secs_f64());
                name_metrics(&mut tracker, &report, &cap_warning, limits);
                tracker.keep_names(report);
                ::metrics::gauge!(m::INSTALLS).set(tracker.len() as f64);
                ::metrics::gauge!(m::PENDING).set(tracker.pending() as f64);
                let shed = tracker.take_shed();
                if shed > 0 {
                    ::metrics::counter!(m::STATES_SHED).increment(shed);
                    if shed_warning.due().is_some() {
                        tracing::warn!(
                            shed_since_last_snapshot = shed,
                            max_pending_states = max_states,
                            pending = tracker.pending(),
                            "MAX_PENDING_STATES reached: the oldest installs not final lose their merge state and get no timeout"
                        );
                    }
                }
                let meta = Meta {
                    v: SNAPSHOT_VERSION,
                    generated_at: now,
                    windows: rollup_config.windows.iter().map(|w| w.label()).collect(),
                    installs: tracker.len() as u64,
                    in_progress: tracker.pending() as u64,
                };
                let _ = snapshots.send(Arc::new(Snapshot {
                    values,
                    meta: serde_json::to_vec(&meta).unwrap_or_default(),
                }));
                let cleanup_due = cleanup_every
                    .is_some_and(|every| last_cleanup.is_none_or(|t| t.elapsed() >= every));
                if cleanup_due {
                    last_cleanup = Some(Instant::now());
                    let stuck = tracker.take_stuck(now - config.stuck_after.duration(), now - TIMEOUT_RETRY, now);
                    if !stuck.is_empty() {
                        tokio::spawn(publish_timeouts(publisher.clone(), stuck, now).map(drop));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The name metrics of one snapshot, and a warning (at most every [`CAP_WARN_EVERY`]) when a cap bites.
fn name_metrics(
    tracker: &mut Tracker,
    report: &rollup::Report,
    warning: &Every,
    limits: rollup::Limits,
) {
    let mut bitten = Vec::new();
    for (kind, names, refused) in [
        ("app", &report.apps, tracker.apps.take_refused()),
        (
            "signature",
            &report.signatures,
            tracker.signatures.take_refused(),
        ),
    ] {
        let capped = refused + names.capped as u64;
        ::metrics::counter!(m::NAMES_CAPPED, "kind" => kind).increment(capped);
        let other = names.distinct.saturating_sub(names.tracked);
        for (state, value) in [
            ("tracked", names.tracked),
            ("other", other),
            ("capped", names.capped),
        ] {
            ::metrics::gauge!(m::NAMES, "kind" => kind, "state" => state).set(value as f64);
        }
        if capped > 0 {
            bitten.push((kind, names.distinct, names.tracked, names.capped, refused));
        }
    }
    if !bitten.is_empty() && warning.due().is_some() {
        for (kind, distinct, tracked, capped, refused) in bitten {
            tracing::warn!(
                kind,
                distinct,
                tracked,
                beyond_cap = capped,
                refused_events = refused,
                max_apps = limits.max_apps,
                max_signatures = limits.max_signatures,
                "name cap reached: names beyond it are summed as other"
            );
        }
    }
}

/// The event stream, created with the contract's defaults when the edge has not made it yet.
async fn open_stream(
    js: &jetstream::Context,
    settings: &names::StreamSettings,
) -> jetstream::stream::Stream {
    fleet::retry::forever("event stream", || async {
        match js.get_stream(settings.name).await {
            Ok(stream) => Ok(stream),
            Err(_) => js
                .get_or_create_stream(fleet::nats::stream_config(settings))
                .await
                .map_err(async_nats::Error::from),
        }
    })
    .await
}

/// An ordered consumer from `from` on, and the stream's last sequence at that moment (0 when empty).
async fn open_messages(
    stream: &jetstream::stream::Stream,
    from: OffsetDateTime,
) -> (consumer::pull::Ordered, u64) {
    fleet::retry::forever("event consumer", || async {
        let mut stream = stream.clone();
        let last = stream.info().await?.state.last_sequence;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: from },
                ..Default::default()
            })
            .await?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer.messages().await?;
        Ok::<_, async_nats::Error>((messages, if pending == 0 { 0 } else { last }))
    })
    .await
}

/// The answer to an admin request while the stream is still being replayed.
fn replaying<T>() -> Reply<T> {
    Reply::Err {
        error: "the aggregator is replaying the event stream; try again when it is caught up"
            .into(),
    }
}

/// The cleanup settings and the count of stuck installs, as `GET /api/cleanup/status` shows them.
fn cleanup_status(config: &Config, stuck: usize) -> CleanupStatus {
    let check_every = config
        .cleanup_interval()
        .filter(|every| !every.is_zero())
        .unwrap_or_else(|| {
            config
                .cleanup_interval_min
                .map_or(config.publish_interval(), |m| {
                    Duration::from_secs_f64(m.max(0.0) * 60.0)
                })
        });
    CleanupStatus {
        stuck_count: stuck as u64,
        stuck_after_hours: config.stuck_after.secs() as f64 / 3600.0,
        check_interval: check_every.as_secs_f64() / 60.0,
        enabled: config.cleanup_enabled,
    }
}

/// Publishes the synthetic timeout of each stuck install under its de-duplication id; returns how many the
/// stream stored (duplicates and failures not counted).
async fn publish_timeouts(
    js: jetstream::Context,
    stuck: Vec<schema::merge::InstallState>,
    now: OffsetDateTime,
) -> u64 {
    let mut stored = 0;
    for state in stuck {
        let event = schema::Event::stuck_timeout(&state, Uuid::now_v7(), now);
        let publish = jetstream::message::PublishMessage::build()
            .payload(event.to_json().into())
            .message_id(names::stuck_msg_id(&state.execution_id));
        let outcome = match js.send_publish(event.subject(), publish).await {
            Ok(ack) => match ack.await {
                Ok(ack) if ack.duplicate => "duplicate",
                Ok(_) => "stored",
                Err(e) => {
                    tracing::warn!(execution_id = %state.execution_id, error = %e, "timeout publish not acknowledged");
                    "error"
                }
            },
            Err(e) => {
                tracing::warn!(execution_id = %state.execution_id, error = %e, "timeout publish failed");
                "error"
            }
        };
        ::metrics::counter!(m::TIMEOUTS, "outcome" => outcome).increment(1);
        tracing::info!(execution_id = %state.execution_id, nsapp = %state.nsapp.value, outcome, "stuck install timed out");
        stored += u64::from(outcome == "stored");
    }
    stored
}
