//! Integration tests of the alerter against real servers started by the harness (nats-server with
//! JetStream, an aiosmtpd sink) and an in-process aggregator: mails arrive once, across replicas,
//! restarts and an SMTP outage, with the right figures, and every alert is recorded on the stream.

mod harness;

mod delivery;
mod rules;
