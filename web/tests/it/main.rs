//! Integration tests of the web: the real `run` in-process against a real ClickHouse (tables and rows made
//! by the real `telemetry-writer` binary from events on the stream) and a real nats-server, plus headless
//! Chromium; the admin actions against the real alerter and aggregator binaries and a fake GitHub.

mod admin;
mod api;
mod browser;
mod chcompat;
mod harness;
mod live;
mod openapi;
mod original;
mod readonly;
mod rollup;
mod scripts;
mod steady;
mod v3;
