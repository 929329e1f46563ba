//! The Prometheus recorder every service installs, with its upkeep. Each crate's `metrics.rs` keeps its
//! metric names, its histogram buckets and its descriptions, and calls [`install`] once, from `main` (or a
//! test binary).

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

pub use metrics_exporter_prometheus::Matcher;

/// How often histogram samples are folded into their buckets, so that memory stays flat even when nobody
/// scrapes `/metrics`.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder with histogram `buckets` per matcher (histograms without
/// one are summaries), runs `describe` (the crate's `describe_*!` calls) and spawns the upkeep task. Must
/// be called inside a Tokio runtime, once per process: a second recorder is refused.
pub fn install(
    buckets: &[(Matcher, &[f64])],
    describe: fn(),
) -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for (matcher, values) in buckets {
        builder = builder.set_buckets_for_metric(matcher.clone(), values)?;
    }
    let handle = builder.install_recorder()?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
