//! Retrying with capped exponential backoff (backon), the one policy every service uses while a broker
//! or store is away: start at 100 ms, double, cap at a maximum, never give up on its own.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The fleet's backoff: 100 ms doubling up to `max`, with jitter (replicas do not retry in step),
/// without a limit on attempts.
pub fn backoff(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Runs `op` until it succeeds, with [`backoff`] capped at 5 s, logging each failure with `what`.
pub async fn forever<T, E, Fut>(what: &str, mut op: impl FnMut() -> Fut) -> T
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = backoff(Duration::from_secs(5)).build();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                let wait = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, ?wait, what, "not ready, retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
