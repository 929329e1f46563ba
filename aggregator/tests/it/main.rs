//! Integration tests of the aggregator against a real nats-server with JetStream, started by the harness:
//! rollups reach the KV bucket, a restarted aggregator publishes the same snapshot as one that ran
//! throughout, and a stuck install gets exactly one synthetic timeout even with two replicas.

mod harness;

mod flood;
mod rollups;
mod stuck;
mod v3;
