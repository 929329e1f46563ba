//! The dashboard's headline figures: the cards of the period plus the installs ever stored for the same
//! repo and slug filters (the all-time card). `/api/figures` answers them as JSON for the page's
//! auto-refresh (`/static/refresh.js`, every `DASHBOARD_REFRESH_SECS`); the page renders the same values
//! on the server. The all-time count has its own cache, keyed by the repo and slug filters.

use serde::Serialize;

use crate::cache::SwrCache;
use crate::db::{BindFilter, Db, DbError};
use crate::model::{Cards, Timestamp};
use crate::params::{Repo, Slug};

/// The all-time count per repo and slug filter.
pub type AllTime = SwrCache<(Repo, Slug), u64, DbError>;

pub fn all_time_cache(config: &crate::Config, db: Db) -> AllTime {
    SwrCache::new(
        "all_time",
        config.cache_capacity,
        config.cache_ttl(),
        config.cache_max_stale(),
        move |(repo, slug): (Repo, Slug)| {
            let db = db.clone();
            async move { db.steady(|| count(&db, repo, slug)).await }
        },
    )
    .paced(config.cache_refresh_pace)
    .enabled(config.enable_cache)
}

/// Installs ever stored for the filters.
pub async fn count(db: &Db, repo: Repo, slug: Slug) -> Result<u64, DbError> {
    let (repo, slug) = (repo.sql_value(), slug.sql_value().to_string());
    db.timed(
        "all_time",
        db.query(
            "SELECT toUInt64(count()) FROM ?.installs_final \
             WHERE (? = '' OR repo_source = ?) AND (? = '' OR ifNull(repo_slug, '') = ?)",
        )
        .bind_filter(repo)
        .bind_filter(&slug)
        .fetch_one::<u64>(),
    )
    .await
}

/// The answer of `/api/figures`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub days: &'static str,
    pub repo: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    pub generated_at: Timestamp,
    #[serde(flatten)]
    pub cards: Cards,
    /// Installs ever stored for the repo and slug filters.
    pub total_all_time: u64,
}
