//! The NATS JetStream side of the edge: connecting (and reconnecting by itself), creating or updating the
//! event stream from the `schema` settings, and publishing one event with its de-duplication id.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use schema::names::StreamSettings;

/// The async-nats stream configuration for a stream of the contract.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: settings.name.to_string(),
        subjects: vec![settings.subjects.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: settings.max_age,
        max_bytes: settings.max_bytes,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Connects to NATS. Returns at once even when the server is down: the client keeps retrying, forever,
/// and the edge answers 503 until it is connected.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("broker connected"),
                async_nats::Event::Disconnected => tracing::warn!("broker disconnected"),
                other => tracing::debug!(event = %other, "broker event"),
            }
        })
        .connect(url)
        .await?;
    Ok(client)
}

/// Creates the stream, or brings an existing one to the given settings.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), async_nats::Error> {
    js.create_or_update_stream(stream_config(settings)).await?;
    Ok(())
}

/// What the broker said about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Stored,
    Duplicate,
}

/// Why a publish did not get an ack.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    #[error("no ack within {0:?}")]
    Timeout(Duration),
    #[error("publish failed: {0}")]
    Failed(String),
}

/// Publishes one payload with its `Nats-Msg-Id` and waits for the PubAck, at most `timeout` overall.
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<(Published, Duration), PublishFailure> {
    let started = Instant::now();
    let attempt = async {
        let ack_future = js
            .send_publish(subject, Publish::build().payload(payload).message_id(msg_id))
            .await
            .map_err(|e| PublishFailure::Failed(e.to_string()))?;
        ack_future.await.map_err(|e| match e.kind() {
            PublishErrorKind::TimedOut => PublishFailure::Timeout(timeout),
            _ => PublishFailure::Failed(e.to_string()),
        })
    };
    let ack = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| PublishFailure::Timeout(timeout))??;
    let outcome = if ack.duplicate {
        Published::Duplicate
    } else {
        Published::Stored
    };
    Ok((outcome, started.elapsed()))
}
