//! `telemetry-loadgen URL RATE SECONDS [CONCURRENCY]`: open-loop load of 1 KB installing events against
//! an ingest URL, then one line of latency percentiles on stdout. All logic is in `traffic::loadgen`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = traffic::loadgen::Config::parse();
    let report = traffic::loadgen::run(&config).await?;
    println!("{report}");
    Ok(())
}
