//! `telemetry-alerter`: parses its configuration, sets up logs and metrics, connects to NATS and runs the
//! alerter until SIGTERM or Ctrl+C; `telemetry-alerter send-test` sends one test mail and exits.

use alerter::config::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = fleet::config::parse(alerter::Config::check);
    config.common.init_tracing();
    if let Some(Command::SendTest) = config.command {
        let recipients = alerter::send_test(&config).await?;
        tracing::info!(recipients, host = %config.smtp_host, "test mail sent");
        return Ok(());
    }
    let metrics = alerter::metrics::install_recorder()?;
    let client = config.common.connect_nats("telemetry-alerter").await?;
    alerter::run(config, client, Some(metrics), fleet::shutdown::signal()).await
}
