//! `telemetry-aggregator`: parses its configuration, sets up logs and metrics, connects to NATS and runs
//! the aggregator until SIGTERM or Ctrl+C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(aggregator::Config::check);
    config.common.init_tracing();
    let metrics = aggregator::metrics::install_recorder()?;
    let client = config.common.connect_nats("telemetry-aggregator").await?;
    aggregator::run(config, client, Some(metrics), fleet::shutdown::signal()).await
}
