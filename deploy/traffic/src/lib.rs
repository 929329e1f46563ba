//! Traffic tools of the fleet, kept out of the services: `telemetry-simulate` plays realistic script
//! traffic against the edge ([`simulate`]) and can record every answer ([`record`]), which
//! `telemetry-verify` compares with what the stores hold ([`verify`]); the benchmark load generators
//! are `telemetry-loadgen` (open-loop 1 KB installing events against the edge, [`loadgen`]),
//! `telemetry-fill` (synthetic installs straight into the event stream, [`fill`]) and
//! `telemetry-fresh` (final events against the edge, timed until ClickHouse shows them, [`fresh`]);
//! `telemetry-slow` holds many slow connections while a normal client measures its latency ([`slow`]).
//! This crate speaks to the services only over HTTP and NATS and never depends on a service crate.

pub mod fill;
pub mod fresh;
pub mod loadgen;
pub mod record;
pub mod simulate;
pub mod slow;
pub mod verify;
