//! Integration tests of the ingest edge against a real nats-server with JetStream, started by the
//! harness: the payload corpus end to end, de-duplication of script retries, limits, rate limiting
//! behind proxies, broker outages, the in-flight cap, slow clients, metrics and graceful shutdown.

mod harness;

mod corpus;
mod edge;
mod faults;
mod v3;
