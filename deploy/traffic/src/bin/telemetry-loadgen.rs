//! `telemetry-loadgen URL RATE SECONDS [CONCURRENCY]`: open-loop load of 1 KB installing events against
//! an ingest URL, then one line of latency percentiles and the generator's own CPU per 1,000 requests on
//! stdout. All logic is in `traffic::loadgen`; one thread, so that its CPU stays small and measurable.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = traffic::loadgen::Config::parse();
    let report = traffic::loadgen::run(&config).await?;
    println!("{report}");
    Ok(())
}
