//! Configuration of `telemetry-ingest`: one typed struct, read from flags and environment variables.
//! Names follow the running service where it had one (`LISTEN_ADDR`, `RATE_LIMIT_RPM`, `RATE_KEY_MODE`,
//! ...); its `UPSTREAM_TIMEOUT_MS` (the wait for its store) stands for our `PUBLISH_TIMEOUT_MS` (the wait
//! for the broker's ack).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fleet::config::Alias;
use fleet::ConfigError;
use http::HeaderName;
use ipnet::IpNet;

pub use fleet::client::DEFAULT_TRUSTED_PROXIES;

/// An async-nats JetStream context holds at most 5000 pending PubAcks (its default `max_ack_inflight`)
/// and makes any further publish wait for a free slot; stay well below so a full edge answers 503 at once.
pub const MAX_IN_FLIGHT_LIMIT: usize = 4096;

/// Default budget of body bytes being read at once: 64 MiB, 256 bodies of the default MAX_BODY_BYTES.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;

/// What a client is counted by in the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateKeyMode {
    /// The client address (behind trusted proxies, the one they forwarded).
    Ip,
    /// The value of RATE_KEY_HEADER, when a trusted proxy sent it; else the client address.
    Header,
}

/// The telemetry edge: validates script events, repairs known script bugs, and publishes them to NATS
/// JetStream. Answers 202 only after the broker acknowledged the event.
#[derive(Debug, Clone, Parser)]
#[command(name = "telemetry-ingest", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for HTTP: HOST:PORT, [IPv6]:PORT, or :PORT for every interface.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080", value_parser = fleet::config::listen_addr)]
    pub listen_addr: SocketAddr,

    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 262_144)]
    pub max_body_bytes: usize,

    /// Requests per minute allowed per client (token bucket refill); 0 disables rate limiting.
    #[arg(long, env = "RATE_LIMIT_RPM", default_value_t = 120)]
    pub rate_limit_rpm: u32,

    /// Burst size of the per-client token bucket, in requests.
    #[arg(long, env = "RATE_BURST", default_value_t = 30)]
    pub rate_burst: u32,

    /// What the rate limit counts a client by: ip (the client address) or header (the value of
    /// RATE_KEY_HEADER, believed from trusted proxies only; kept in memory only, never logged).
    #[arg(long, env = "RATE_KEY_MODE", value_enum, default_value_t = RateKeyMode::Ip)]
    pub rate_key_mode: RateKeyMode,

    /// The header whose value is the rate-limit key when RATE_KEY_MODE=header (e.g. CF-Connecting-IP);
    /// a request without it is counted by its client address.
    #[arg(long, env = "RATE_KEY_HEADER")]
    pub rate_key_header: Option<HeaderName>,

    /// Comma-separated CIDRs of reverse proxies whose X-Forwarded-For (and RATE_KEY_HEADER) is believed;
    /// unset or empty: private and loopback ranges.
    #[arg(long, env = "TRUSTED_PROXIES_CIDR", default_value = DEFAULT_TRUSTED_PROXIES, value_delimiter = ',')]
    pub trusted_proxies_cidr: Vec<IpNet>,

    /// Publishes awaiting their broker ack at once; when full, new events get 503 at once (max 4096).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=MAX_IN_FLIGHT_LIMIT as i64))]
    pub max_in_flight: u32,

    /// Bytes of request bodies being read and held at once, across all requests, in bytes. A request
    /// takes its body's bytes from this budget as they arrive and keeps them until it is answered; when
    /// the budget is spent it gets 503 at once. At least MAX_BODY_BYTES.
    #[arg(long, env = "MAX_BODY_BYTES_IN_FLIGHT", default_value_t = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT)]
    pub max_body_bytes_in_flight: usize,

    /// How long to wait for the broker's ack before answering 503, in milliseconds (the running
    /// service's UPSTREAM_TIMEOUT_MS when this is unset).
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value_t = 2000)]
    pub publish_timeout_ms: u64,

    /// Deadline for a whole request, body included, in milliseconds (408 after it).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Deadline for a client to send its request headers, in milliseconds (the connection is closed).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_read_timeout_ms: u64,

    /// Most connections open at once; beyond it a new connection takes the slot of the one that has
    /// waited longest (at least 1 s) for its client, or waits when every connection is busy.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Deadline for draining in-flight requests at shutdown, in seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,

    /// Replay window of the event stream, in hours.
    #[arg(long, env = "STREAM_MAX_AGE_HOURS", default_value_t = 168)]
    pub stream_max_age_hours: u64,

    /// Byte cap of the event stream (oldest events are dropped first).
    #[arg(long, env = "STREAM_MAX_BYTES", default_value_t = schema::names::DEFAULT_EVENTS_MAX_BYTES)]
    pub stream_max_bytes: i64,

    /// Copies of the event stream in a JetStream cluster (1 on a single server, 3 in a cluster).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Address of the ops port: /healthz, /readyz and /metrics (metrics are served only here, never on
    /// LISTEN_ADDR). HOST:PORT, [IPv6]:PORT or :PORT.
    #[arg(long, env = "OPS_ADDR", default_value = "0.0.0.0:9100", value_parser = fleet::config::listen_addr)]
    pub ops_addr: SocketAddr,

    #[command(flatten)]
    pub common: fleet::config::Common,
}

impl fleet::config::Service for Config {
    const ALIASES: &'static [Alias] = &[Alias::same("PUBLISH_TIMEOUT_MS", "UPSTREAM_TIMEOUT_MS")];

    fn common_mut(&mut self) -> &mut fleet::config::Common {
        &mut self.common
    }
}

impl Config {
    /// Checks what clap cannot: settings that only make sense together.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.rate_key_mode == RateKeyMode::Header && self.rate_key_header.is_none() {
            return Err(ConfigError::new(
                "RATE_KEY_HEADER",
                "is required when RATE_KEY_MODE=header",
            ));
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes {
            return Err(ConfigError::new(
                "MAX_BODY_BYTES_IN_FLIGHT",
                "must be at least MAX_BODY_BYTES (or no body could ever be read)",
            ));
        }
        Ok(())
    }

    /// The header the rate limit is keyed by, when RATE_KEY_MODE=header.
    pub fn rate_key_header(&self) -> Option<&HeaderName> {
        match self.rate_key_mode {
            RateKeyMode::Header => self.rate_key_header.as_ref(),
            RateKeyMode::Ip => None,
        }
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The bounds of the HTTP server; a request past its deadline is answered 408 as JSON.
    pub fn limits(&self) -> fleet::http::Limits {
        fleet::http::Limits {
            header_read_timeout: self.header_read_timeout(),
            request_timeout: self.request_timeout(),
            timeout_response: crate::http::timeout_response,
            max_connections: self.max_connections as usize,
            drain_timeout: self.shutdown_timeout(),
        }
    }

    pub fn stream_settings(&self) -> schema::names::StreamSettings {
        schema::names::events_stream(
            Duration::from_secs(self.stream_max_age_hours * 3600),
            self.stream_max_bytes,
            self.stream_replicas,
        )
    }

    /// A configuration for tests and embedding: loopback, defaults otherwise.
    pub fn for_nats(nats_url: &str) -> Config {
        let mut config = Config::parse_from(["telemetry-ingest"]);
        config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.ops_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.common.nats_url = nats_url.to_string();
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use fleet::config::Service;

    use super::*;

    #[test]
    fn the_table_of_operator_names_matches_what_the_edge_reads() {
        assert_eq!(
            fleet::config::operator_names_read(&Config::command(), Config::ALIASES),
            fleet::config::operator_names_of("telemetry-ingest")
        );
    }

    fn check(args: &[&str], refused: Option<&str>) {
        let config =
            Config::try_parse_from(std::iter::once("telemetry-ingest").chain(args.iter().copied()))
                .expect("parses");
        assert_eq!(
            config.check().map_err(|e| e.setting).err(),
            refused,
            "{args:?}"
        );
    }

    #[test]
    fn settings_that_only_make_sense_together() {
        check(&[], None);
        check(&["--rate-key-mode", "header"], Some("RATE_KEY_HEADER"));
        check(
            &[
                "--rate-key-mode",
                "header",
                "--rate-key-header",
                "CF-Connecting-IP",
            ],
            None,
        );
        check(
            &["--rate-key-mode", "ip", "--rate-key-header", "X-Key"],
            None,
        );
        check(
            &[
                "--max-body-bytes",
                "1000",
                "--max-body-bytes-in-flight",
                "999",
            ],
            Some("MAX_BODY_BYTES_IN_FLIGHT"),
        );
        check(
            &[
                "--max-body-bytes",
                "1000",
                "--max-body-bytes-in-flight",
                "1000",
            ],
            None,
        );
        let config = Config::parse_from(["telemetry-ingest", "--rate-key-header", "X-Key"]);
        assert_eq!(config.rate_key_header(), None, "ip mode ignores the header");
        assert!(
            Config::try_parse_from(["telemetry-ingest", "--rate-key-header", "bad header"])
                .is_err()
        );
    }

    #[test]
    fn the_listen_address_takes_the_running_services_form() {
        let config = Config::parse_from(["telemetry-ingest", "--listen-addr", ":8080"]);
        assert_eq!(config.listen_addr, SocketAddr::from(([0, 0, 0, 0], 8080)));
    }
}
