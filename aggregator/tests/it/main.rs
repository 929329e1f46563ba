//! Integration tests of the aggregator against a real nats-server with JetStream, started by the harness:
//! rollups reach the KV bucket, a restarted aggregator publishes the same snapshot as one that ran
//! throughout, a stuck install gets exactly one synthetic timeout even with two replicas, and the admin
//! requests (a cleanup round now, the cleanup status) are answered over request–reply.

mod harness;

mod admin;
mod flood;
mod rollups;
mod stuck;
mod v3;
