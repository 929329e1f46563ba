//! `telemetry-web`: the read-only dashboard and JSON API over ClickHouse and the live KV rollups. Parses
//! the configuration, sets up logs and metrics, connects to NATS and runs [`web::run`] until SIGTERM.

use clap::Parser;
use web::Config;

/// Many small answers from many tasks; mimalloc keeps that cheap (as in the edge).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    fleet::init_tracing(config.log_format, &config.log_level);
    if let Err(e) = config.check() {
        eprintln!("telemetry-web: {e}");
        std::process::exit(2);
    }
    let metrics = web::metrics::install_recorder()?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    let client = fleet::nats::connect(&config.nats_url, "telemetry-web").await?;
    web::run(
        config,
        listener,
        client,
        Some(metrics),
        fleet::shutdown_signal(),
    )
    .await
}
