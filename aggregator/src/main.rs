//! `telemetry-aggregator`: parses its configuration, sets up logs and metrics, connects to NATS and runs
//! the aggregator until SIGTERM or Ctrl+C.

/// One thread: the work is one consuming task (the event stream, in order), the NATS connection and a
/// snapshot every `PUBLISH_INTERVAL_MS`. On Tokio's multi-threaded runtime each arriving event woke a
/// second worker to hand the message over; one thread does the same work for about 0.8 of the CPU
/// (`deploy/bench/aggregator-live.sh`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(aggregator::Config::check);
    config.common.init_tracing();
    let metrics = aggregator::metrics::install_recorder()?;
    let client = config.common.connect_nats("telemetry-aggregator").await?;
    aggregator::run(config, client, Some(metrics), fleet::shutdown::signal()).await
}
