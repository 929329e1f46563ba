//! Integration tests of the alerter against real servers started by the harness (nats-server with
//! JetStream, an aiosmtpd sink), with rollups written into `telemetry_stats` as the aggregator writes
//! them: mails arrive once, across replicas, restarts and an SMTP outage, with the right figures, and
//! every alert is recorded on the stream; a test mail asked for over request–reply (the web's admin
//! action) lands in the sink.

mod harness;

mod admin;
mod delivery;
mod guard;
mod rules;
