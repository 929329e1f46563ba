//! The loop around [`crate::sink::process`]: one durable pull consumer per sink on the event stream. It
//! fetches a batch (by size and time), decodes it, writes it with capped exponential retries while the
//! store is down (keeping the messages alive meanwhile), then acks what is stored, and terminates and
//! dead-letters what is poison. Nothing is acked before the store confirmed. At shutdown it finishes the
//! batch in hand, acks, and stops; a batch that cannot be written before the deadline is nak'ed so that
//! another replica gets it at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind, Message};
use backon::Retryable;
use fleet::Shutdown;
use futures::StreamExt;
use schema::Event;
use tokio::sync::watch;

use crate::dlq;
use crate::metrics as m;
use crate::sink::{process, Outcome, Sink, SinkError, Verdict};

/// Live facts about one sink of this process, read by `/readyz`, the logs and the tests.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// The store is set up (migrations, collection) and answered the last write.
    pub up: AtomicBool,
    /// This replica may write (always for ClickHouse; the lease holder for PocketBase).
    pub active: AtomicBool,
    /// The consumer exists and the loop runs.
    pub consuming: AtomicBool,
    pub written: AtomicU64,
    pub batches: AtomicU64,
    pub dead_letters: AtomicU64,
    pub retries: AtomicU64,
    /// Last sampled consumer lag (pending + un-acked).
    pub lag: AtomicU64,
}

/// How a sink consumes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub consumer: String,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub max_ack_pending: i64,
    pub ack_wait: Duration,
    pub retry_max_delay: Duration,
    pub shutdown_timeout: Duration,
    /// Replicas of the streams and buckets this writer creates when missing (3 in a cluster).
    pub replicas: usize,
}

/// The durable consumer of a sink, created if missing. The event and dead-letter streams are created
/// with the contract's defaults if they do not exist yet (ingest brings the event stream to its
/// configured settings).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<PullConsumer, async_nats::Error> {
    let defaults = schema::names::events_stream(
        schema::names::DEFAULT_EVENTS_MAX_AGE,
        schema::names::DEFAULT_EVENTS_MAX_BYTES,
        settings.replicas,
    );
    let stream = js
        .get_or_create_stream(fleet::nats::stream_config(&defaults))
        .await?;
    js.get_or_create_stream(fleet::nats::stream_config(&schema::names::dlq_stream(
        settings.replicas,
    )))
    .await?;
    let config = pull::Config {
        durable_name: Some(settings.consumer.clone()),
        description: Some("telemetry-writer sink".into()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: settings.ack_wait,
        max_ack_pending: settings.max_ack_pending,
        max_deliver: -1,
        ..Default::default()
    };
    Ok(stream
        .get_or_create_consumer(&settings.consumer, config)
        .await?)
}

/// An event taken off the stream, or why it cannot be.
fn decode(msg: &Message) -> Result<Event, String> {
    let event: Event = serde_json::from_slice(&msg.payload)
        .map_err(|e| format!("payload is not a v1 event: {e}"))?;
    if event.v != schema::event::SCHEMA_VERSION {
        return Err(format!("unsupported schema version {}", event.v));
    }
    for (field, id) in [
        ("execution_id", &event.execution_id),
        ("random_id", &event.random_id),
    ] {
        if !schema::ids::valid_id(id) {
            return Err(format!("{field} breaks the contract's id rule"));
        }
    }
    Ok(event)
}

/// Runs the consumer of `sink` until `shutdown`. `active` gates fetching (the PocketBase lease); pass a
/// receiver that stays `true` for a sink without one.
pub async fn run<S: Sink>(
    sink: &S,
    js: &jetstream::Context,
    settings: &Settings,
    status: Arc<SinkStatus>,
    mut active: watch::Receiver<bool>,
    shutdown: Shutdown,
) {
    let name = sink.name();
    let consumer = tokio::select! {
        c = (|| ensure_consumer(js, settings))
            .retry(fleet::retry::backoff(settings.retry_max_delay))
            .notify(|e, wait| tracing::warn!(sink = name, error = %e, ?wait, "consumer not ready, retrying")) => match c {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(sink = name, error = %e, "consumer could not be created");
                return;
            }
        },
        () = shutdown.triggered() => return,
    };
    status.consuming.store(true, Ordering::Relaxed);
    tracing::info!(sink = name, consumer = %settings.consumer, "consuming");
    let lag_task = tokio::spawn(sample_lag(consumer.clone(), name, status.clone()));
    let mut fetch_failing = false;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        if !*active.borrow() {
            tokio::select! {
                _ = active.wait_for(|a| *a) => {},
                () = shutdown.triggered() => break,
            }
            continue;
        }
        let batch = match fetch(&consumer, settings).await {
            Ok(batch) => {
                if fetch_failing {
                    tracing::info!(sink = name, "fetching again");
                    fetch_failing = false;
                }
                batch
            }
            Err(e) => {
                if !fetch_failing {
                    tracing::warn!(sink = name, error = %e, "fetch failed, retrying");
                    fetch_failing = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {},
                    () = shutdown.triggered() => break,
                }
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        if !*active.borrow() {
            // Lost the lease while fetching: hand the batch back at once.
            nak_all(&batch).await;
            continue;
        }
        handle(sink, js, settings, &status, batch, shutdown.clone()).await;
    }
    lag_task.abort();
    status.consuming.store(false, Ordering::Relaxed);
    tracing::info!(sink = name, "consumer stopped");
}

/// One pull: up to `batch_size` messages, waiting at most `batch_max_wait` for the batch to fill.
async fn fetch(consumer: &PullConsumer, settings: &Settings) -> Result<Vec<Message>, String> {
    let mut messages = consumer
        .batch()
        .max_messages(settings.batch_size)
        .expires(settings.batch_max_wait)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    let mut batch = Vec::with_capacity(settings.batch_size);
    // The request ends by itself after `expires`; the outer timeout only guards a silent server.
    let guard = settings.batch_max_wait + Duration::from_secs(5);
    let collect = async {
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(msg) => batch.push(msg),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(guard, collect).await {
        Ok(Ok(())) => Ok(batch),
        Ok(Err(e)) if batch.is_empty() => Err(e),
        // Keep what arrived: it is in our hands and must be written or handed back.
        Ok(Err(_)) | Err(_) => Ok(batch),
    }
}

/// Writes one batch and settles every message of it.
async fn handle<S: Sink>(
    sink: &S,
    js: &jetstream::Context,
    settings: &Settings,
    status: &SinkStatus,
    batch: Vec<Message>,
    shutdown: Shutdown,
) {
    let name = sink.name();
    let mut events = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    let mut poison: Vec<(usize, String)> = Vec::new();
    for (i, msg) in batch.iter().enumerate() {
        match decode(msg) {
            Ok(event) => {
                slots.push(i);
                events.push(event);
            }
            Err(reason) => poison.push((i, reason)),
        }
    }
    ::metrics::histogram!(m::BATCH_SIZE, "sink" => name).record(batch.len() as f64);

    let started = Instant::now();
    let mut down_since: Option<Instant> = None;
    let attempt = || async {
        match process(sink, &events).await {
            Outcome::Done(verdicts) => Ok(verdicts),
            Outcome::Retry(e) => Err(e),
        }
    };
    let written = attempt
        .retry(fleet::retry::backoff(settings.retry_max_delay))
        .when(|e: &SinkError| !matches!(e, SinkError::LeaseLost(_)))
        .notify(|e: &SinkError, wait| {
            status.retries.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(m::RETRIES, "sink" => name).increment(1);
            if status.up.swap(false, Ordering::Relaxed) {
                ::metrics::gauge!(m::SINK_UP, "sink" => name).set(0.0);
                tracing::warn!(sink = name, error = %e, ?wait, "store unavailable, holding the batch and retrying");
            } else {
                tracing::debug!(sink = name, error = %e, ?wait, "store still unavailable");
            }
            down_since.get_or_insert_with(Instant::now);
        });
    let give_up = async {
        shutdown.triggered().await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    let verdicts = tokio::select! {
        r = written => match r {
            Ok(verdicts) => Some(verdicts),
            Err(e) => {
                // Only a lost lease ends the retries: another replica writes now, so this one hands
                // the batch back at once without writing or acking any of it.
                tracing::warn!(sink = name, error = %e, events = batch.len(), "lease lost while writing, handing the batch back");
                ::metrics::counter!(m::LEASE_LOST, "sink" => name).increment(1);
                nak_all(&batch).await;
                return;
            }
        },
        () = keep_alive(&batch, settings.ack_wait) => None,
        () = give_up => None,
    };
    let Some(verdicts) = verdicts else {
        tracing::warn!(
            sink = name,
            events = batch.len(),
            "shutdown deadline passed with the store down, handing the batch back"
        );
        nak_all(&batch).await;
        return;
    };
    if !status.up.swap(true, Ordering::Relaxed) {
        ::metrics::gauge!(m::SINK_UP, "sink" => name).set(1.0);
        if let Some(since) = down_since {
            tracing::info!(sink = name, down_for = ?since.elapsed(), "store available again");
        }
    }
    ::metrics::histogram!(m::WRITE_SECONDS, "sink" => name).record(started.elapsed().as_secs_f64());
    for (slot, verdict) in slots.iter().zip(verdicts) {
        if let Verdict::Poison(reason) = verdict {
            poison.push((*slot, reason));
        }
    }
    poison.sort_by_key(|(i, _)| *i);
    let mut next_poison = poison.iter().peekable();
    let mut stored = 0u64;
    for (i, msg) in batch.iter().enumerate() {
        if next_poison.peek().is_some_and(|(p, _)| *p == i) {
            continue;
        }
        if let Err(e) = msg.ack().await {
            tracing::debug!(sink = name, error = %e, "ack not sent; the event will be redelivered and deduplicated");
        }
        stored += 1;
    }
    for (i, reason) in &poison {
        dead_letter(js, name, &batch[*i], reason, settings, &shutdown).await;
        status.dead_letters.fetch_add(1, Ordering::Relaxed);
    }
    status.written.fetch_add(stored, Ordering::Relaxed);
    status.batches.fetch_add(1, Ordering::Relaxed);
    ::metrics::counter!(m::EVENTS_WRITTEN, "sink" => name).increment(stored);
}

/// Publishes a poison event to the dead-letter stream (retrying while NATS is away), then terminates it
/// so it is never redelivered. If shutdown comes first, the event is left un-acked for redelivery.
async fn dead_letter(
    js: &jetstream::Context,
    sink: &'static str,
    msg: &Message,
    reason: &str,
    settings: &Settings,
    shutdown: &Shutdown,
) {
    let letter = dlq::Letter::new(sink, msg, reason);
    let publish = || dlq::publish(js, &letter);
    let published = tokio::select! {
        r = publish.retry(fleet::retry::backoff(settings.retry_max_delay))
            .notify(|e, wait| tracing::warn!(sink, error = %e, ?wait, "dead-letter publish failed, retrying")) => r.is_ok(),
        () = async { shutdown.triggered().await; tokio::time::sleep(settings.shutdown_timeout).await } => false,
    };
    if !published {
        return;
    }
    tracing::warn!(sink, subject = %msg.subject, reason, "event sent to the dead-letter stream");
    ::metrics::counter!(m::DEAD_LETTERS, "sink" => sink).increment(1);
    if let Err(e) = msg.ack_with(AckKind::Term).await {
        tracing::debug!(sink, error = %e, "term not sent; the event will come back and be dead-lettered again");
    }
}

/// Tells JetStream every ack-wait/3 that the batch is still being worked on, so it is not redelivered
/// while the store is down. Never returns.
async fn keep_alive(batch: &[Message], ack_wait: Duration) {
    let mut tick = tokio::time::interval(ack_wait / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        for msg in batch {
            let _ = msg.ack_with(AckKind::Progress).await;
        }
    }
}

async fn nak_all(batch: &[Message]) {
    for msg in batch {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
}

/// Samples the consumer's lag every 5 s into the gauge and the status.
async fn sample_lag(mut consumer: PullConsumer, sink: &'static str, status: Arc<SinkStatus>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            let lag = info.num_pending + info.num_ack_pending as u64;
            status.lag.store(lag, Ordering::Relaxed);
            ::metrics::gauge!(m::CONSUMER_LAG, "sink" => sink).set(lag as f64);
        }
    }
}

/// The gate of a sink without a lease: always `true`, so the loop never waits on it.
pub fn always_active() -> watch::Receiver<bool> {
    watch::channel(true).1
}

/// Marker for readiness: every sink is consuming and its store is up, or it is a standby.
pub fn ready(statuses: &[(&'static str, Arc<SinkStatus>)]) -> (bool, serde_json::Value) {
    let mut details = serde_json::Map::new();
    let mut all = true;
    for (name, s) in statuses {
        let up = s.up.load(Ordering::Relaxed);
        let consuming = s.consuming.load(Ordering::Relaxed);
        let active = s.active.load(Ordering::Relaxed);
        all &= consuming && (up || !active);
        details.insert(
            (*name).to_string(),
            serde_json::json!({ "up": up, "consuming": consuming, "active": active }),
        );
    }
    (all, serde_json::Value::Object(details))
}
