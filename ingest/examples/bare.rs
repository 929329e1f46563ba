//! Benchmark baseline: a bare axum handler that answers 202 without reading, validating or publishing
//! anything. `deploy/bench/ingest.sh` runs it side by side with `telemetry-ingest` to put the edge's
//! throughput in proportion to what this machine's HTTP stack can do at all.

use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_string());
    let app = axum::Router::new().route(
        "/telemetry",
        post(|| async { (StatusCode::ACCEPTED, "{\"status\":\"accepted\"}") }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
