//! The telemetry contract as code. Every service of the fleet depends on this crate and on nothing else
//! for what crosses a process: the event types (`v: 1`), the rescue pass for known script bugs, validation
//! and normalization, the id rule, privacy masking, the exit-code table, the install-state merge, every
//! name (streams, subjects, KV buckets, headers) with the stream and bucket settings, the KV layout and
//! values of the live rollups, the alert records, window spans and identity hashes. No sockets, no
//! runtime: pure data and functions that ingest, writers, aggregator, alerter and web share.

pub mod admin;
pub mod alert;
pub mod category;
pub mod event;
pub mod exit_codes;
pub mod hash;
pub mod ids;
pub mod merge;
pub mod names;
pub mod privacy;
pub mod rescue;
pub mod rollup;
pub mod signature;
pub mod span;
pub mod stats;
pub mod stuck;
pub mod validate;

pub use category::Category;
pub use event::{Event, Kind, RepoSource, RescueKind, Status};
pub use merge::{merge, InstallState};
pub use validate::{validate, Accepted, Reception, RejectCode, Rejection};
