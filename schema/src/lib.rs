//! The telemetry contract as code. Every service of the fleet depends on this crate and on nothing else
//! for the shape of an event: the event types (`v: 1`), the rescue pass for known script bugs, validation
//! and normalization, privacy masking, the exit-code table, the install-state merge, and every name that
//! crosses a process (streams, subjects, KV buckets, headers) with the stream settings. No sockets, no
//! runtime: pure functions that writers, aggregator, alerter and web share.

pub mod category;
pub mod event;
pub mod exit_codes;
pub mod merge;
pub mod names;
pub mod privacy;
pub mod rescue;
pub mod signature;
pub mod stuck;
pub mod validate;

pub use category::Category;
pub use event::{Event, Kind, RepoSource, RescueKind, Status};
pub use merge::{merge, InstallState};
pub use validate::{validate, Accepted, Reception, RejectCode, Rejection};
