//! Integration tests of the writer against real nats-server, ClickHouse 18.16 and PocketBase processes
//! started by the harness: order independence, exactly-once under redelivery, kills and store outages,
//! replicas and the PocketBase lease, dead letters, retention, migrations and the README's queries; and
//! `telemetry-import` from PocketBase, ClickHouse and JSON lines.

mod harness;

mod clickhouse;
mod dlq;
mod e2e;
mod faults;
mod forged;
mod import;
mod lease;
mod order;
mod pb_compat;
mod retention;
mod settle;
mod transient;
mod v3;
