//! The ops HTTP port of the consumers (writer, aggregator, alerter): `/healthz` (process alive), `/readyz`
//! (the service's own readiness check) and `/metrics` (Prometheus text), served until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

/// Says whether the service is ready, with details for the JSON body.
pub type Readiness = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

struct Ops {
    ready: Readiness,
    metrics: Option<PrometheusHandle>,
}

/// The ops routes.
pub fn router(ready: Readiness, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Arc::new(Ops { ready, metrics }))
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let (ready, mut details) = (ops.ready)();
    if let Some(map) = details.as_object_mut() {
        map.insert("ready".into(), ready.into());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(details)).into_response()
}

async fn render(State(ops): State<Arc<Ops>>) -> Response {
    let text = ops.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Binds `addr` and serves the ops routes until `shutdown` resolves. Returns the bound address and the
/// serving task.
pub async fn spawn(
    addr: SocketAddr,
    ready: Readiness,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(ready, metrics);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "ops server stopped");
        }
    });
    Ok((bound, task))
}
