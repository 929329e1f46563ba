//! `telemetry-aggregator`: parses its configuration, sets up logs and metrics, connects to NATS and runs
//! the aggregator until SIGTERM or Ctrl+C.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = aggregator::Config::parse();
    fleet::init_tracing(config.log_format, &config.log_level);
    config.rollup_config()?;
    let metrics = aggregator::metrics::install_recorder()?;
    let client = fleet::nats::connect(&config.nats_url, "telemetry-aggregator").await?;
    aggregator::run(config, client, Some(metrics), fleet::shutdown_signal()).await
}
