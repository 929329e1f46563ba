//! Integration tests of the web: the real `run` in-process against a real ClickHouse (tables and rows made
//! by the real `telemetry-writer` binary from events on the stream) and a real nats-server, plus headless
//! Chromium.

mod api;
mod browser;
mod harness;
mod live;
mod readonly;
mod v3;
