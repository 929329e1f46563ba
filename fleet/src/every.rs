//! [`Every`]: at most one log line per period, for a warning that could otherwise repeat per request or
//! per snapshot, counting the ones it held back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit for a log line that could otherwise repeat per request or per snapshot.
pub struct Every {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Every {
    pub fn new(period: Duration) -> Every {
        Every {
            period,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(calls suppressed since the last one)` when the line is due now, else `None`.
    pub fn due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.period) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_line_is_due_once_per_period_and_counts_what_it_held_back() {
        let every = Every::new(Duration::from_secs(3600));
        let got: Vec<Option<u64>> = (0..4).map(|_| every.due()).collect();
        assert_eq!(got, [Some(0), None, None, None]);
        let always = Every::new(Duration::ZERO);
        let got: Vec<Option<u64>> = (0..3).map(|_| always.due()).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0)]);
    }
}
