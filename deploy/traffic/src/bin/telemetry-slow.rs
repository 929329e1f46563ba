//! `telemetry-slow URL [--slow N] [--mode headers|body]`: many slow connections against a server while a
//! normal client measures its latency; one line of figures on stdout. All logic is in `traffic::slow`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = traffic::slow::Config::parse();
    let report = traffic::slow::run(&config).await?;
    println!("{report}");
    Ok(())
}
