//! The ingest edge: a small HTTP service that validates script events with the `schema` crate, repairs
//! known script bugs, and publishes each event to NATS JetStream, answering 202 only after the broker's
//! ack. `run` is the whole service; `main` only parses config, sets up logs and metrics, and calls it.

pub mod broker;
pub mod config;
pub mod http;
pub mod limit;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use backon::Retryable;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

pub use config::Config;

/// Everything a request handler needs, shared by `Arc`.
pub struct AppState {
    pub config: Config,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub limiter: limit::Limiter,
    /// Permits for publishes awaiting their ack.
    pub in_flight: Arc<Semaphore>,
    pub stream_ready: AtomicBool,
    pub shutting_down: AtomicBool,
    /// `None` when no recorder was installed (then `/metrics` is empty).
    pub metrics: Option<PrometheusHandle>,
}

/// Runs the edge on `listener` until `shutdown` resolves, then drains: readiness turns 503, the listener
/// closes, in-flight requests (and their publishes) finish within the shutdown deadline, and the NATS
/// client flushes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    client: async_nats::Client,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut jetstream = jetstream::new(client.clone());
    jetstream.set_timeout(config.publish_timeout());
    let state = Arc::new(AppState {
        limiter: limit::Limiter::new(config.rate_limit_rpm, config.rate_burst),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
        stream_ready: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        client: client.clone(),
        jetstream,
        metrics,
        config,
    });
    let background = [
        tokio::spawn(keep_stream(state.clone())),
        tokio::spawn(forget_idle_clients(state.clone())),
    ];
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    serve(listener, state.clone(), shutdown).await;
    for task in background {
        task.abort();
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        tracing::warn!(error = %e, "broker flush timed out at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accepts connections until `shutdown`, with a deadline on request headers so a slow client cannot hold
/// a connection forever, then drains open connections within the shutdown deadline.
async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    let router = http::router(state.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout())
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                    req
                });
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    state.shutting_down.store(true, Ordering::Relaxed);
    drop(listener);
    tracing::info!("shutting down, draining in-flight requests");
    let deadline = state.config.shutdown_timeout();
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?deadline, "drain deadline passed with requests still open");
    }
}

/// Creates or updates the event stream, retrying with capped backoff while the broker is away, and checks
/// it again after every reconnect (a restarted single server may have lost it).
async fn keep_stream(state: Arc<AppState>) {
    let settings = state.config.stream_settings();
    loop {
        let ensure = || fleet::nats::ensure_stream(&state.jetstream, &settings);
        let result = ensure
            .retry(fleet::retry::backoff(Duration::from_secs(5)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "event stream not ready, retrying"))
            .await;
        if result.is_ok() && !state.stream_ready.swap(true, Ordering::Relaxed) {
            tracing::info!(stream = settings.name, "event stream ready");
        }
        // Re-check after the connection drops and comes back.
        wait_for_state(&state.client, false).await;
        state.stream_ready.store(false, Ordering::Relaxed);
        wait_for_state(&state.client, true).await;
    }
}

async fn wait_for_state(client: &async_nats::Client, connected: bool) {
    loop {
        if fleet::nats::connected(client) == connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn forget_idle_clients(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let tracked = state.limiter.forget_idle();
        ::metrics::gauge!(metrics::RATE_LIMIT_KEYS).set(tracked as f64);
    }
}
