//! End-to-end tests of the whole fleet; they live in `tests/` (the 3-node cluster test in
//! `tests/cluster.rs`). The tools they drive, `telemetry-simulate` and `telemetry-verify`, are in the
//! `traffic` crate.
