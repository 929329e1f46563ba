//! The NATS JetStream side of the edge: publishing one event with its de-duplication id and waiting for
//! the broker's ack, bounded in time. Connecting and the stream settings come from `fleet::nats`.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

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
    /// The stream is at its byte cap (or the server out of storage) and refuses new events
    /// ([`schema::names::Discard::New`]); room comes back as old events age out.
    #[error("the stream is full: {0}")]
    StreamFull(String),
    #[error("publish failed: {0}")]
    Failed(String),
}

/// True for the broker's answers that mean "no room": its store refused the message at a limit
/// ("maximum bytes exceeded", "maximum messages exceeded"), or the server has no storage left.
fn is_full(error: &jetstream::context::PublishError) -> bool {
    use jetstream::ErrorCode;
    let Some(api) = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
    else {
        return false;
    };
    match api.error_code() {
        ErrorCode::INSUFFICIENT_RESOURCES => true,
        ErrorCode::STREAM_STORE_FAILED => api.to_string().contains("exceeded"),
        _ => false,
    }
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
            .send_publish(
                subject,
                PublishMessage::build().payload(payload).message_id(msg_id),
            )
            .await
            .map_err(|e| PublishFailure::Failed(e.to_string()))?;
        ack_future.await.map_err(|e| match e.kind() {
            PublishErrorKind::TimedOut => PublishFailure::Timeout(timeout),
            _ if is_full(&e) => PublishFailure::StreamFull(e.to_string()),
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
