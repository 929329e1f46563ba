//! The live strip: the last hour's rollup from the KV bucket `telemetry_stats`, written by the aggregator
//! (layout and value types in `schema::stats`, documented in aggregator/README.md). When the bucket
//! or the key is missing (the aggregator is not running yet) the strip says so instead of failing.

use async_nats::jetstream;
use schema::span::Span;
use schema::stats::{group_key, GroupStats, Meta, Scope as KvScope, KEY_META};
use serde::Serialize;

use crate::params::Repo;

/// The window of the live strip.
pub const LIVE_WINDOW_SECS: u64 = 3600;

/// Why the live figures could not be read (never shown as a failure: the strip reads "unavailable").
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("kv: {0}")]
    Kv(String),
}

/// What the strip shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    /// False when the aggregator has published nothing (yet).
    pub available: bool,
    pub window: String,
    pub repo: &'static str,
    pub started: u64,
    pub in_progress: u64,
    pub success: u64,
    pub failed: u64,
    pub aborted: u64,
    pub unknown: u64,
    /// failed / (success + failed), percent; `null` when both are 0.
    pub failure_rate: Option<f64>,
    pub duration_p50_secs: Option<u32>,
    pub duration_p95_secs: Option<u32>,
    /// When the aggregator last published (RFC 3339).
    pub generated_at: Option<String>,
}

impl Live {
    pub fn unavailable(repo: Repo) -> Live {
        Live {
            available: false,
            window: Span::from_secs(LIVE_WINDOW_SECS).label(),
            repo: repo.as_str(),
            started: 0,
            in_progress: 0,
            success: 0,
            failed: 0,
            aborted: 0,
            unknown: 0,
            failure_rate: None,
            duration_p50_secs: None,
            duration_p95_secs: None,
            generated_at: None,
        }
    }
}

/// Reads `1h.global` or `1h.repo.<repo>` and the `meta` heartbeat.
pub async fn read(js: &jetstream::Context, repo: Repo) -> Result<Live, LiveError> {
    let store = match js.get_key_value(schema::names::STATS_BUCKET).await {
        Ok(store) => store,
        Err(e) => {
            tracing::debug!(error = %e, "stats bucket not readable");
            return Ok(Live::unavailable(repo));
        }
    };
    let window = Span::from_secs(LIVE_WINDOW_SECS);
    let key = match repo.0 {
        None => group_key(window, KvScope::Global, ""),
        Some(r) => group_key(window, KvScope::Repo, r.as_str()),
    };
    let stats = store
        .get(&key)
        .await
        .map_err(|e| LiveError::Kv(e.to_string()))?;
    let meta = store
        .get(KEY_META)
        .await
        .map_err(|e| LiveError::Kv(e.to_string()))?;
    let generated_at = meta
        .and_then(|m| serde_json::from_slice::<Meta>(&m).ok())
        .and_then(|m| {
            m.generated_at
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let mut live = Live::unavailable(repo);
    live.generated_at = generated_at.clone();
    match stats.map(|v| serde_json::from_slice::<GroupStats>(&v)) {
        Some(Ok(s)) => Ok(Live {
            available: true,
            window: s.window,
            repo: repo.as_str(),
            started: s.started,
            in_progress: s.in_progress,
            success: s.success,
            failed: s.failed,
            aborted: s.aborted,
            unknown: s.unknown,
            failure_rate: s.failure_rate.map(|r| (r * 10_000.0).round() / 100.0),
            duration_p50_secs: s.duration_p50_secs,
            duration_p95_secs: s.duration_p95_secs,
            generated_at,
        }),
        // A repo with no installs in the window has no key while the aggregator runs: zero, not unknown.
        None if repo.0.is_some() && generated_at.is_some() => {
            live.available = true;
            Ok(live)
        }
        None => Ok(live),
        Some(Err(e)) => Err(LiveError::Kv(format!("{key}: {e}"))),
    }
}
