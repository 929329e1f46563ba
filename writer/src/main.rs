//! `telemetry-writer`: parses its configuration, sets up logs and metrics, connects to NATS and runs the
//! sinks until SIGTERM or Ctrl+C.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = writer::Config::parse();
    fleet::init_tracing(config.log_format, &config.log_level);
    config.check()?;
    let metrics = writer::metrics::install_recorder()?;
    let client = fleet::nats::connect(&config.nats_url, "telemetry-writer").await?;
    writer::run(
        config,
        client,
        Some(metrics),
        writer::Statuses::default(),
        fleet::shutdown_signal(),
    )
    .await
}
