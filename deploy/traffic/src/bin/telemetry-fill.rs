//! `telemetry-fill`: publishes synthetic installs straight to the event stream, prints the published
//! count and rate on stderr and the unix time in milliseconds of the last ack on stdout (mode `keys`:
//! the number of keys of a bucket). All logic is in `traffic::fill`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = traffic::fill::Config::parse();
    if let traffic::fill::Mode::Keys { bucket } = &config.mode {
        println!(
            "{}",
            traffic::fill::count_keys(&config.nats_url, bucket).await?
        );
        return Ok(());
    }
    let filled = traffic::fill::run(&config).await?;
    eprintln!(
        "published {} events in {:.1}s ({:.0}/s)",
        filled.events,
        filled.secs,
        filled.events as f64 / filled.secs
    );
    println!("{}", filled.done_at_ms);
    Ok(())
}
