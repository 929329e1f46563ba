//! Integration tests of the traffic tools against real servers started by `testkit`: the stream filler
//! against nats-server with JetStream; and the load generator against a slow server of its own.
//! (`telemetry-simulate` and `telemetry-verify` run against the whole fleet in `deploy/e2e`.)

mod fill;
mod loadgen;
