//! `telemetry-simulate`: plays realistic helper-script telemetry at a given rate against an ingest URL
//! until Ctrl+C, `--duration` or `--installs`, then prints a summary. All logic is in `traffic::simulate`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = traffic::simulate::Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match traffic::simulate::run(config, shutdown).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetry-simulate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
