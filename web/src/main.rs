//! `telemetry-web`: the read-only dashboard and JSON API over ClickHouse and the live KV rollups. Parses
//! the configuration, sets up logs and metrics, connects to NATS and runs [`web::run`] until SIGTERM.

use web::Config;

/// Many small answers from many tasks; mimalloc keeps that cheap (as in the edge).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(Config::check);
    config.common.init_tracing();
    let metrics = web::metrics::install_recorder()?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    let client = config.common.connect_nats("telemetry-web").await?;
    web::run(
        config,
        listener,
        client,
        Some(metrics),
        fleet::shutdown::signal(),
    )
    .await
}
