//! Benchmark baselines for `deploy/bench/ingest.sh`, run side by side with `telemetry-ingest`:
//! - `bare ADDR`: a bare axum handler that answers 202 without reading, validating or publishing
//!   anything, which puts the edge's throughput in proportion to what this machine's HTTP stack can do
//!   at all;
//! - `bare ADDR NATS_URL`: the same handler that also reads the body and publishes it unchanged into the
//!   events stream with a `Nats-Msg-Id`, answering 202 after the broker's ack. It does the part of the
//!   edge's work that contract §5 fixes (one message per event, 202 after the ack) and nothing else, so it
//!   is the ceiling of the edge's throughput on this machine. It creates the events stream with the
//!   edge's default settings when missing; the messages land on `telemetry.v1.events.bench`, which no
//!   consumer of the fleet reads. Give it a NATS server of its own: the broker's duplicate window holds
//!   every message id of the last two minutes, so a run after another on the same server pays for the
//!   first one's ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::jetstream::{self, message::PublishMessage};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

struct Publisher {
    jetstream: jetstream::Context,
    next_id: AtomicU64,
}

async fn publish(State(publisher): State<Arc<Publisher>>, body: Bytes) -> StatusCode {
    let id = publisher
        .next_id
        .fetch_add(1, Ordering::Relaxed)
        .to_string();
    let message = PublishMessage::build().payload(body).message_id(id);
    let subject = format!("{}.bench", schema::names::EVENTS_SUBJECT_PREFIX);
    let ack = match publisher.jetstream.send_publish(subject, message).await {
        Ok(ack) => ack.await,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE,
    };
    match ack {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".to_string());
    let app = match args.next() {
        None => axum::Router::new().route(
            "/telemetry",
            post(|| async { (StatusCode::ACCEPTED, "{\"status\":\"accepted\"}") }),
        ),
        Some(nats_url) => {
            let client = fleet::nats::connect(&nats_url, "bench-bare-publish").await?;
            fleet::nats::wait_connected(&client).await;
            let jetstream = jetstream::new(client);
            let settings = schema::names::events_stream(
                schema::names::DEFAULT_EVENTS_MAX_AGE,
                schema::names::DEFAULT_EVENTS_MAX_BYTES,
                1,
            );
            fleet::nats::ensure_stream(&jetstream, &settings)
                .await
                .map_err(|e| anyhow::anyhow!("the events stream: {e}"))?;
            let publisher = Publisher {
                jetstream,
                // Distinct from every earlier run's ids within the stream's duplicate window.
                next_id: AtomicU64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_nanos() as u64,
                ),
            };
            axum::Router::new()
                .route("/telemetry", post(publish))
                .with_state(Arc::new(publisher))
        }
    };
    // Ready once listening (and, with NATS, connected): `wait_http` in the benchmarks polls this.
    let app = app.route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
