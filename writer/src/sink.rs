//! What a store looks like to the consumer loop, and the step of the loop: [`process`] writes one batch
//! and says, per event, whether it is stored or poison; it never acks, naks or sleeps. A batch the store
//! rejects as invalid is split in halves until the offending events are alone, so one bad event never
//! blocks the rest. Writes must be idempotent (every store here is), because a split or a retry writes
//! some events again.
//!
//! Only a permanent error ([`SinkError::Rejected`]: the data itself is refused) can make an event poison,
//! and only when the store refused that event alone twice; a transient one (the store down, slow, busy,
//! overloaded, conflicting, or the lease gone) never does: the whole batch waits and is retried. A
//! refusal that does not say it is about the data ([`SinkError::Unclear`]) splits the batch like a
//! rejection (a smaller batch may pass), but an event refused that way alone is retried, never
//! dead-lettered. Each sink sorts its store's answers into these kinds in one place
//! (`clickhouse::classify`, `PbError::into_sink`).

use std::future::Future;
use std::ops::Range;

use schema::Event;

/// Why a write did not go through. The consumer loop maps each kind to one reaction. Transient:
/// `Unavailable`, `Conflict`, `Unclear`, `LeaseLost`; permanent: `Rejected` ([`SinkError::is_permanent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The store is down, busy or timed out: retry the same batch later, ack nothing.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the same rows at the same time: retry soon (the write re-reads).
    #[error("write conflict: {0}")]
    Conflict(String),
    /// The store refused the data itself: retrying cannot help.
    #[error("rejected by the store: {0}")]
    Rejected(String),
    /// The store refused the batch without naming the data (PocketBase's 400 without a field error:
    /// its database failed, or the batch as a whole did not fit): split it, but never dead-letter.
    #[error("refused by the store, not for its data: {0}")]
    Unclear(String),
    /// This replica may not write any more (the PocketBase lease moved): hand the batch back, do not
    /// retry, do not ack.
    #[error("lease lost: {0}")]
    LeaseLost(String),
}

impl SinkError {
    /// True when retrying cannot help: the store refused the data itself. Only this may dead-letter.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Rejected(_))
    }
}

/// A store that takes batches of events.
pub trait Sink: Send + Sync {
    /// Short name, used in consumer names, metric labels and logs.
    fn name(&self) -> &'static str;

    /// Stores the events; idempotent: writing an event twice, or in any order, leaves the same state.
    fn write(&self, events: &[Event]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Stored,
    /// The store rejected this event alone; the reason goes to the dead-letter stream.
    Poison(String),
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event has a verdict, in input order.
    Done(Vec<Verdict>),
    /// The store could not take the batch now; nothing may be acked.
    Retry(SinkError),
}

impl Outcome {
    /// Number of stored events, for metrics.
    pub fn stored(&self) -> usize {
        match self {
            Outcome::Done(v) => v.iter().filter(|v| **v == Verdict::Stored).count(),
            Outcome::Retry(_) => 0,
        }
    }
}

/// Writes `events` to `sink`, isolating rejected events by splitting the batch. An event is poison only
/// when the store refused it alone twice in a row (a refusal that does not repeat was not about it).
pub async fn process<S: Sink>(sink: &S, events: &[Event]) -> Outcome {
    let mut verdicts = vec![Verdict::Stored; events.len()];
    // Ranges still to write, and whether that (single-event) range was refused once already.
    let mut pending: Vec<(Range<usize>, bool)> = Vec::new();
    if !events.is_empty() {
        pending.push((0..events.len(), false));
    }
    while let Some((range, refused_before)) = pending.pop() {
        match sink.write(&events[range.clone()]).await {
            Ok(()) => {}
            Err(SinkError::Rejected(reason)) if range.len() == 1 && refused_before => {
                verdicts[range.start] = Verdict::Poison(reason);
            }
            Err(SinkError::Rejected(_)) if range.len() == 1 => pending.push((range, true)),
            Err(e @ SinkError::Unclear(_)) if range.len() == 1 => return Outcome::Retry(e),
            Err(SinkError::Rejected(_) | SinkError::Unclear(_)) => {
                let mid = range.start + range.len() / 2;
                // Second half first on the stack, so the first half is written first.
                pending.push((mid..range.end, false));
                pending.push((range.start..mid, false));
            }
            Err(e) => return Outcome::Retry(e),
        }
    }
    Outcome::Done(verdicts)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Rejects any batch that holds an event of a poison app; fails the first `down` writes.
    struct Fake {
        poison: &'static str,
        down: Mutex<usize>,
        writes: Mutex<Vec<usize>>,
    }

    impl Sink for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn write(&self, events: &[Event]) -> Result<(), SinkError> {
            self.writes.lock().unwrap().push(events.len());
            let mut down = self.down.lock().unwrap();
            if *down > 0 {
                *down -= 1;
                return Err(SinkError::Unavailable("down".into()));
            }
            if events.iter().any(|e| e.nsapp == self.poison) {
                return Err(SinkError::Rejected(format!("bad app {}", self.poison)));
            }
            Ok(())
        }
    }

    fn event(app: &str, n: usize) -> Event {
        let body =
            format!(r#"{{"random_id":"r{n}","type":"lxc","nsapp":"{app}","status":"installing"}}"#);
        schema::validate(body.as_bytes(), schema::Reception::now())
            .expect("valid")
            .event
    }

    fn check(apps: &[&str], down: usize, expected: Outcome) {
        let events: Vec<Event> = apps.iter().enumerate().map(|(n, a)| event(a, n)).collect();
        let sink = Fake {
            poison: "bad",
            down: Mutex::new(down),
            writes: Mutex::new(Vec::new()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(process(&sink, &events));
        assert_eq!(outcome, expected, "{apps:?}");
    }

    #[test]
    fn isolates_poison_and_stores_the_rest() {
        use Verdict::{Poison, Stored};
        let p = || Poison("bad app bad".into());
        check(&[], 0, Outcome::Done(vec![]));
        check(&["a", "b"], 0, Outcome::Done(vec![Stored, Stored]));
        check(&["bad"], 0, Outcome::Done(vec![p()]));
        check(
            &["a", "bad", "c", "d", "bad"],
            0,
            Outcome::Done(vec![Stored, p(), Stored, Stored, p()]),
        );
        check(
            &["a", "b"],
            1,
            Outcome::Retry(SinkError::Unavailable("down".into())),
        );
    }

    #[test]
    fn poison_reason_comes_from_the_store() {
        let events = vec![event("bad", 0)];
        let sink = Fake {
            poison: "bad",
            down: Mutex::new(0),
            writes: Mutex::new(Vec::new()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = rt.block_on(process(&sink, &events));
        assert_eq!(outcome.stored(), 0);
        // Refused alone twice before it counts as poison.
        assert_eq!(*sink.writes.lock().unwrap(), vec![1, 1]);
    }

    /// A store that refuses an event once and takes it the second time: not poison.
    #[test]
    fn a_refusal_that_does_not_repeat_is_not_poison() {
        struct Fickle(Mutex<usize>);
        impl Sink for Fickle {
            fn name(&self) -> &'static str {
                "fickle"
            }
            async fn write(&self, _: &[Event]) -> Result<(), SinkError> {
                let mut refusals = self.0.lock().unwrap();
                if *refusals > 0 {
                    *refusals -= 1;
                    return Err(SinkError::Rejected("cannot read all data".into()));
                }
                Ok(())
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let events = vec![event("a", 0)];
        let outcome = rt.block_on(process(&Fickle(Mutex::new(1)), &events));
        assert_eq!(outcome, Outcome::Done(vec![Verdict::Stored]));
        assert!(SinkError::Rejected(String::new()).is_permanent());
        for transient in [
            SinkError::Unavailable(String::new()),
            SinkError::Unclear(String::new()),
            SinkError::Conflict(String::new()),
            SinkError::LeaseLost(String::new()),
        ] {
            assert!(!transient.is_permanent(), "{transient:?}");
        }
    }
}
