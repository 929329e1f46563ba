//! The ingest edge: a small HTTP service that validates script events with the `schema` crate, repairs
//! known script bugs, and publishes each event to NATS JetStream, answering 202 only after the broker's
//! ack. `run` is the whole service; `main` only parses config, sets up logs and metrics, and calls it. The
//! HTTP server around it (header and request deadlines, connection cap, drain) is `fleet::http::serve`.

pub mod broker;
pub mod config;
pub mod http;
pub mod limit;
pub mod metrics;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use backon::Retryable;
use fleet::{Every, Shutdown};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::Config;

/// Everything a request handler needs, shared by `Arc`.
pub struct AppState {
    pub config: Config,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub limiter: limit::Limiter,
    /// How a request's rate-limit key is found.
    pub key_rule: limit::KeyRule,
    /// Permits for publishes awaiting their ack.
    pub in_flight: Arc<Semaphore>,
    /// Permits in bytes for the bodies being read and held (`MAX_BODY_BYTES_IN_FLIGHT`).
    pub body_bytes: Arc<Semaphore>,
    pub stream_ready: AtomicBool,
    /// The "stream full" warning, logged at most once per [`STREAM_FULL_WARN_EVERY`].
    pub stream_full_warning: Every,
    /// Triggered when the edge starts shutting down: readiness turns 503 and new events get 503.
    pub shutdown: Shutdown,
    /// `None` when no recorder was installed (then `/metrics` is empty).
    pub metrics: Option<PrometheusHandle>,
    /// The per-event metrics' handles.
    pub hot: metrics::Hot,
}

/// How often at most the edge warns that the stream is full (every refused event is counted anyway).
pub const STREAM_FULL_WARN_EVERY: Duration = Duration::from_secs(10);

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
        key_rule: limit::KeyRule::new(
            config.trusted_proxies_cidr.clone(),
            config.rate_key_header().cloned(),
        ),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
        body_bytes: Arc::new(Semaphore::new(
            config.max_body_bytes_in_flight.min(Semaphore::MAX_PERMITS),
        )),
        stream_ready: AtomicBool::new(false),
        stream_full_warning: Every::new(STREAM_FULL_WARN_EVERY),
        shutdown: Shutdown::new(),
        client: client.clone(),
        jetstream,
        metrics,
        hot: metrics::Hot::default(),
        config,
    });
    let background = [
        tokio::spawn(keep_stream(state.clone())),
        tokio::spawn(forget_idle_clients(state.clone())),
        tokio::spawn(watch_stream_usage(state.clone())),
    ];
    let addr = listener.local_addr()?;
    // The ops port outlives the public one's drain, so that /readyz shows 503 and metrics are scraped
    // until the end.
    let stop_ops = Shutdown::new();
    let (ops_addr, ops_task) = fleet::ops::spawn(
        state.config.ops_addr,
        http::ops(&state),
        stop_ops.clone().triggered_owned(),
    )
    .await?;
    tracing::info!(%addr, %ops_addr, "listening");
    fleet::http::serve(
        listener,
        http::router(state.clone()),
        state.config.limits(),
        state.shutdown.clone().trigger_after(shutdown),
    )
    .await;
    for task in background {
        task.abort();
    }
    stop_ops.trigger();
    let _ = ops_task.await;
    fleet::nats::flush(&client, fleet::nats::FLUSH_DEADLINE).await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates or updates the event stream, retrying with capped backoff while the broker is away, and checks
/// it again after every reconnect (a restarted single server may have lost it).
async fn keep_stream(state: Arc<AppState>) {
    let settings = state.config.stream_settings();
    // The publishing context's timeout (`PUBLISH_TIMEOUT_MS`) would also bound these API requests;
    // stream management keeps the connection's request timeout instead.
    let admin = jetstream::new(state.client.clone());
    loop {
        let ensure = || fleet::nats::ensure_stream(&admin, &settings);
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

/// How often the edge reads the event stream's size for its gauges.
pub const STREAM_WATCH_EVERY: Duration = Duration::from_secs(15);

/// Keeps the stream's stored bytes and its cap in gauges, so an alert can warn before the cap is reached
/// (then new events get 503 until old ones age out).
async fn watch_stream_usage(state: Arc<AppState>) {
    let admin = jetstream::new(state.client.clone());
    // The first reading as soon as the stream is there, then one per period.
    while !state.stream_ready.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tick = tokio::time::interval(STREAM_WATCH_EVERY);
    loop {
        tick.tick().await;
        if !state.stream_ready.load(Ordering::Relaxed) {
            continue;
        }
        let info = async {
            admin
                .get_stream(schema::names::EVENTS_STREAM)
                .await?
                .info()
                .await
                .cloned()
                .map_err(async_nats::Error::from)
        };
        match info.await {
            Ok(info) => {
                ::metrics::gauge!(metrics::STREAM_BYTES).set(info.state.bytes as f64);
                ::metrics::gauge!(metrics::STREAM_MAX_BYTES).set(info.config.max_bytes as f64);
            }
            Err(e) => tracing::debug!(error = %e, "event stream size not read"),
        }
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
