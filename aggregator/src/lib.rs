//! The aggregator: replays `TELEMETRY_EVENTS` from the start of its longest window through an ordered
//! ephemeral consumer, then follows it live; tracks every install with the `schema` merge rules
//! ([`tracker`]); computes sliding-window rollups ([`rollup`]) and writes the changed ones to the KV
//! bucket `telemetry_stats` ([`publish`], layout in `schema::stats`); and times out stuck installs with a
//! synthetic event published under a de-duplication id. It owns no durable state, so replicas compute the
//! same values and a restart loses nothing. `run` is the whole service; `main` parses config and calls it.

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
use fleet::Shutdown;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use schema::names;
use schema::span::Span;
use schema::stats::{Meta, SNAPSHOT_VERSION};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

pub use config::Config;

use crate::metrics as m;
use crate::publish::Snapshot;
use crate::rollup::RollupConfig;
use crate::tracker::Tracker;

/// A timeout that did not come back through the stream is published again after this long.
const TIMEOUT_RETRY: time::Duration = time::Duration::seconds(30);
/// How often unused interned names are dropped.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

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
    let longest = *rollup_config
        .windows
        .last()
        .ok_or_else(|| fleet::ConfigError::new("WINDOWS", "is empty"))?;
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

    let result = consume(
        &config,
        &rollup_config,
        longest,
        &js,
        &health,
        &snapshots,
        &mut shutdown,
    )
    .await;

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
    longest: Span,
    js: &jetstream::Context,
    health: &Health,
    snapshots: &watch::Sender<Arc<Snapshot>>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
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
    let mut tracker = Tracker::new();
    let mut events: u64 = 0;
    let mut caught_up = replay_end == 0;
    let mut tick = tokio::time::interval(config.publish_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_compact = Instant::now();
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
            next = messages.next() => {
                let Some(next) = next else {
                    tracing::warn!("event consumer ended, reopening");
                    (messages, replay_end) = open_messages(&stream, OffsetDateTime::now_utc() - longest.duration()).await;
                    tracker = Tracker::new();
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
                if last_compact.elapsed() >= COMPACT_EVERY {
                    tracker.compact_names();
                    last_compact = Instant::now();
                }
                let began = Instant::now();
                let values = rollup::rollup(&tracker, now, rollup_config);
                ::metrics::histogram!(m::ROLLUP_SECONDS).record(began.elapsed().as_secs_f64());
                ::metrics::gauge!(m::INSTALLS).set(tracker.len() as f64);
                ::metrics::gauge!(m::PENDING).set(tracker.pending() as f64);
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
                        tokio::spawn(publish_timeouts(publisher.clone(), stuck, now));
                    }
                }
            }
        }
    }
    Ok(())
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

/// Publishes the synthetic timeout of each stuck install under its de-duplication id.
async fn publish_timeouts(
    js: jetstream::Context,
    stuck: Vec<schema::merge::InstallState>,
    now: OffsetDateTime,
) {
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
    }
}
