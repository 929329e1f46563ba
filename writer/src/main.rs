//! `telemetry-writer`: parses its configuration, sets up logs and metrics, connects to NATS and runs the
//! sinks until SIGTERM or Ctrl+C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(writer::Config::check);
    config.common.init_tracing();
    let metrics = writer::metrics::install_recorder()?;
    let client = config.common.connect_nats("telemetry-writer").await?;
    writer::run(
        config,
        client,
        Some(metrics),
        writer::Statuses::default(),
        fleet::shutdown::signal(),
    )
    .await
}
