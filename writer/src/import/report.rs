//! The final report of an import: the totals of the checkpoint (every run of it) and the figures of this
//! run, as text for people (stdout) and as JSON for scripts (`--report-json`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::state::Totals;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub source: String,
    pub target: String,
    /// True when the source was read to its end.
    pub complete: bool,
    /// Records (rows, lines) read.
    pub read: u64,
    /// Distinct installs among the events written.
    pub installs: u64,
    /// Events the target stored.
    pub written: u64,
    /// Events that merged into an install imported before them (written - installs).
    pub duplicates: u64,
    /// Records not imported.
    pub rejected: u64,
    /// The same, by kind (`invalid_field:nsapp`, `invalid_json`, `missing_field:created`, ...).
    pub rejected_by_kind: BTreeMap<String, u64>,
    /// Records read by this run (the others by earlier runs of the same checkpoint).
    pub read_this_run: u64,
    pub seconds_this_run: f64,
}

impl Report {
    pub fn new(source: String, target: String, totals: &Totals) -> Report {
        Report {
            source,
            target,
            complete: false,
            read: totals.read,
            installs: totals.installs,
            written: totals.written,
            duplicates: totals.written.saturating_sub(totals.installs),
            rejected: totals.rejected_total(),
            rejected_by_kind: totals.rejected.clone(),
            read_this_run: 0,
            seconds_this_run: 0.0,
        }
    }

    /// Records per second of this run.
    pub fn rate(&self) -> f64 {
        if self.seconds_this_run > 0.0 {
            self.read_this_run as f64 / self.seconds_this_run
        } else {
            0.0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.complete {
            "complete"
        } else {
            "incomplete"
        };
        writeln!(f, "import {state}: {} -> {}", self.source, self.target)?;
        writeln!(f, "  read               {:>12}", self.read)?;
        writeln!(f, "  imported installs  {:>12}", self.installs)?;
        writeln!(f, "  events written     {:>12}", self.written)?;
        writeln!(f, "  duplicates merged  {:>12}", self.duplicates)?;
        writeln!(f, "  rejected           {:>12}", self.rejected)?;
        for (kind, count) in &self.rejected_by_kind {
            writeln!(f, "    {kind:<34} {count:>8}")?;
        }
        writeln!(
            f,
            "  this run: {} read in {:.1} s ({:.0} records/s)",
            self.read_this_run,
            self.seconds_this_run,
            self.rate()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_events_beyond_one_per_install() {
        let mut totals = Totals {
            read: 10,
            written: 8,
            installs: 5,
            rejected: BTreeMap::new(),
        };
        totals.rejected.insert("invalid_field:nsapp".into(), 2);
        let report = Report::new("s".into(), "t".into(), &totals);
        assert_eq!((report.duplicates, report.rejected), (3, 2));
        let text = report.to_string();
        assert!(text.contains("invalid_field:nsapp"), "{text}");
        assert!(text.starts_with("import incomplete: s -> t"), "{text}");
    }
}
