//! Waiting on a condition in tests: [`poll_until`] runs a check again and again, a short pause apart,
//! until it holds or a deadline passes, and then fails the test with what it waited for. Tests never
//! sleep a fixed time to let something happen; they wait for the thing itself.
//!
//! A check answers with an [`Outcome`]: `bool` (held or not), `Option<T>` (`Some` ends the wait with the
//! value) or `Result<T, E>` (`Ok` ends the wait; the last `Err` is shown when the deadline passes).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Pause between two checks of [`poll_until`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one check of a poll answered: done with a value, or not yet (with why, if it says).
pub trait Outcome {
    /// What the wait returns once the check holds.
    type Value;
    /// `Ok(value)` when the check holds, else `Err` with a note on the last attempt (may be empty).
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs `check` every [`POLL_INTERVAL`] until it holds, and returns its value. Panics with `what` (and
/// the last `Err` of a `Result` check) when `timeout` passes first.
pub async fn poll_until<O: Outcome>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> O,
) -> O::Value {
    poll_until_every(what, timeout, POLL_INTERVAL, check).await
}

/// [`poll_until`] with its own pause between checks, for checks that are expensive themselves.
pub async fn poll_until_every<O: Outcome>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await.into_result() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => fail(what, timeout, &last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

fn fail(what: &str, timeout: Duration, last: &str) -> ! {
    if last.is_empty() {
        panic!("{what}: not within {timeout:?}")
    }
    panic!("{what}: not within {timeout:?} (last check: {last})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let mut calls = 0;
        let value = poll_until("the third call", Duration::from_secs(5), async || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        })
        .await;
        assert_eq!((value, calls), (30, 3));
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within 100ms (last check: still 7)")]
    async fn fails_with_what_it_waited_for_and_the_last_error() {
        poll_until("never", Duration::from_millis(100), async || {
            Err::<(), _>("still 7")
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within 100ms")]
    async fn a_bool_check_fails_with_what_it_waited_for() {
        poll_until("never", Duration::from_millis(100), async || false).await;
    }

    #[tokio::test]
    async fn a_check_that_holds_at_once_returns_even_with_no_time_left() {
        poll_until("now", Duration::ZERO, async || true).await;
    }
}
