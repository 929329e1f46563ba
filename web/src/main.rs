//! `telemetry-web`: the read-only dashboard and JSON API over ClickHouse and the live KV rollups. This
//! crate holds its configuration for now; the service itself lands with its own issue.

use clap::Parser;

/// The read-only dashboard and JSON API of the telemetry fleet.
#[derive(Debug, Parser)]
#[command(name = "telemetry-web", version, about, long_about = None)]
struct Config {
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    listen_addr: std::net::SocketAddr,
    /// ClickHouse HTTP URL.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// NATS server URL (live rollups from the telemetry_stats bucket).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

fn main() {
    let config = Config::parse();
    eprintln!(
        "telemetry-web: not available in this release (configured for {} / {}); see README.md",
        config.listen_addr, config.clickhouse_url
    );
    std::process::exit(2);
}
