//! `telemetry-ingest`: parses its configuration, sets up logs and metrics, connects to NATS and runs the
//! edge until SIGTERM or Ctrl+C.

/// The edge allocates a few small buffers per request from many threads; mimalloc keeps that cheap where
/// glibc's arenas contend (measured in deploy/bench/ingest.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(ingest::Config::check);
    config.common.init_tracing();
    let metrics = ingest::metrics::install_recorder()?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen_addr))?;
    let client = config.common.connect_nats("telemetry-ingest").await?;
    ingest::run(
        config,
        listener,
        client,
        Some(metrics),
        fleet::shutdown::signal(),
    )
    .await
}
