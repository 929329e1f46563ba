//! The ops routes of every service: `/healthz` (process alive), `/readyz` (the service's own readiness
//! check; 200 when ready, 503 otherwise) and `/metrics` (Prometheus text). Every service serves them
//! alone on its ops port ([`spawn`]), the one place `/metrics` is served; the edge and the web also merge
//! the two probes ([`Ops::probes`], without `/metrics`) into their public router, for the front door and
//! load balancers. The consumers and the edge answer JSON, the web plain text.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// The body of a `/healthz` or `/readyz` answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(serde_json::Value),
    Text(&'static str),
}

impl IntoResponse for Body {
    fn into_response(self) -> Response {
        match self {
            Body::Json(value) => axum::Json(value).into_response(),
            Body::Text(text) => text.into_response(),
        }
    }
}

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = (bool, Body)> + Send>> + Send + Sync>;

/// The ops routes of one service: what it says when alive, how it checks readiness, and its recorder.
#[derive(Clone)]
pub struct Ops {
    health: Body,
    ready: Check,
    metrics: Option<PrometheusHandle>,
    on_scrape: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Ops {
    /// JSON answers: `/healthz` is `{"status":"ok"}`; `/readyz` is the details `ready` returns (an
    /// object) with `"ready"` added. `metrics` `None` (no recorder installed) renders an empty `/metrics`.
    pub fn json(
        ready: impl Fn() -> (bool, serde_json::Value) + Send + Sync + 'static,
        metrics: Option<PrometheusHandle>,
    ) -> Ops {
        let ready = Arc::new(ready);
        Ops {
            health: Body::Json(serde_json::json!({ "status": "ok" })),
            ready: Arc::new(move || {
                let (ok, mut details) = ready();
                if let Some(map) = details.as_object_mut() {
                    map.insert("ready".into(), ok.into());
                }
                Box::pin(std::future::ready((ok, Body::Json(details))))
            }),
            metrics,
            on_scrape: None,
        }
    }

    /// Plain-text answers: `/healthz` is `ok`; `/readyz` is the text of `ready`, which may ask a store.
    pub fn text<F, Fut>(ready: F, metrics: Option<PrometheusHandle>) -> Ops
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (bool, &'static str)> + Send + 'static,
    {
        Ops {
            health: Body::Text("ok"),
            ready: Arc::new(move || {
                let check = ready();
                Box::pin(async move {
                    let (ok, text) = check.await;
                    (ok, Body::Text(text))
                })
            }),
            metrics,
            on_scrape: None,
        }
    }

    /// Runs `sample` before each `/metrics` render, for gauges read at scrape time.
    pub fn on_scrape(mut self, sample: impl Fn() + Send + Sync + 'static) -> Ops {
        self.on_scrape = Some(Arc::new(sample));
        self
    }

    /// The three routes, for any router state: what the ops port serves.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render))
            .with_state(Arc::new(self))
    }

    /// `/readyz` only, for a public router whose `/healthz` is the service's own. Metrics stay on the ops
    /// port.
    pub fn readiness<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/readyz", get(readyz))
            .with_state(Arc::new(self))
    }

    /// `/healthz` and `/readyz` only, for a public router (merge them before the service's own layers so
    /// that those apply to them too). Metrics stay on the ops port.
    pub fn probes<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(Arc::new(self))
    }
}

async fn healthz(State(ops): State<Arc<Ops>>) -> Response {
    ops.health.clone().into_response()
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let (ready, body) = (ops.ready)().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn render(State(ops): State<Arc<Ops>>) -> Response {
    if let Some(sample) = &ops.on_scrape {
        sample();
    }
    let text = ops.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Binds `addr` and serves the ops routes alone until `shutdown` resolves, with [`crate::http::serve`]'s
/// default limits. Returns the bound address and the serving task.
pub async fn spawn(
    addr: SocketAddr,
    ops: Ops,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(crate::http::serve(
        listener,
        ops.router(),
        crate::http::Limits::default(),
        shutdown,
    ));
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    /// Status, content type and body of one GET.
    async fn get(router: &Router, path: &str) -> (u16, String, String) {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn check(ops: Ops, path: &str, expected: (u16, &str, &str)) {
        let (status, content_type, body) = get(&ops.router(), path).await;
        assert_eq!(
            (status, content_type.as_str(), body.as_str()),
            expected,
            "{path}"
        );
    }

    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";

    #[tokio::test]
    async fn json_and_text_answers() {
        let consumer =
            |ok: bool| Ops::json(move || (ok, serde_json::json!({ "broker": ok })), None);
        let web = |ok: bool, text| Ops::text(move || async move { (ok, text) }, None);
        check(
            consumer(true),
            "/healthz",
            (200, JSON, r#"{"status":"ok"}"#),
        )
        .await;
        check(
            consumer(true),
            "/readyz",
            (200, JSON, r#"{"broker":true,"ready":true}"#),
        )
        .await;
        check(
            consumer(false),
            "/readyz",
            (503, JSON, r#"{"broker":false,"ready":false}"#),
        )
        .await;
        check(web(true, "ready"), "/healthz", (200, TEXT, "ok")).await;
        check(web(true, "ready"), "/readyz", (200, TEXT, "ready")).await;
        check(
            web(false, "shutting down"),
            "/readyz",
            (503, TEXT, "shutting down"),
        )
        .await;
        check(
            web(true, "ready"),
            "/metrics",
            (200, "text/plain; version=0.0.4", ""),
        )
        .await;
    }

    #[tokio::test]
    async fn probes_leave_metrics_to_the_ops_port() {
        let ops = Ops::json(|| (true, serde_json::json!({})), None);
        let router: Router = ops.clone().probes();
        let request = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        for (path, expected) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 404)] {
            let response = router
                .clone()
                .oneshot(request(path))
                .await
                .expect("infallible");
            assert_eq!(response.status().as_u16(), expected, "{path}");
        }
        let full: Router = ops.router();
        let response = full.oneshot(request("/metrics")).await.expect("infallible");
        assert_eq!(response.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn scrape_hook_runs_before_each_render() {
        let scrapes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = scrapes.clone();
        let router: Router = Ops::json(|| (true, serde_json::json!({})), None)
            .on_scrape(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .router();
        get(&router, "/metrics").await;
        get(&router, "/healthz").await;
        get(&router, "/metrics").await;
        assert_eq!(scrapes.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
