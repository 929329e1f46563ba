//! `telemetry-fresh INGEST_URL CH_URL DATABASE RATE SECS`: final events against an ingest URL, timed
//! from the 202 to the row in `installs_final`; one `BENCH mode=fresh ...` line on stdout. All logic is
//! in `traffic::fresh`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = traffic::fresh::Config::parse();
    let report = traffic::fresh::run(&config).await?;
    println!("{report}");
    Ok(())
}
