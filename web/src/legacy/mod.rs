//! The running service's read API, shape for shape: `/api/dashboard`, `/api/records` and `/api/errors`
//! answer with the keys, types, defaults and leniency its consumers read (no parameter is ever refused);
//! the fleet's own, richer views of the same paths live under `/api/v2/`. Parameters are normalized into
//! [`params`] types first, which are also the cache keys. Install ids are public hashes
//! ([`crate::ids`]).

pub mod db;
pub mod model;
pub mod params;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use crate::cache::{CacheStatus, SwrCache};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::AppState;
use db::LegacyDb;
use model::{Dashboard, Errors, RecordsPage, RECENT_ERRORS, RECENT_RECORDS};
use params::{Raw, RecordsQuery, Scope};

/// The caches of the legacy views: their JSON, serialized once.
pub struct LegacyCaches {
    pub dashboard: SwrCache<Scope, Bytes, DbError>,
    pub errors: SwrCache<Scope, Bytes, DbError>,
    pub records: SwrCache<RecordsQuery, Bytes, DbError>,
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    // Plain data (strings, numbers, vectors): serializing cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

/// The weight of a cached JSON answer: its bytes (at least 1).
pub fn weigh(body: &Bytes) -> u32 {
    u32::try_from(body.len()).unwrap_or(u32::MAX).max(1)
}

impl LegacyCaches {
    pub fn new(db: &Db, config: &crate::Config, max_bytes: u64) -> LegacyCaches {
        let (capacity, ttl, stale, on) = (
            config.cache_capacity,
            config.cache_ttl(),
            config.cache_max_stale(),
            config.enable_cache,
        );
        let l = LegacyDb { db: db.clone() };
        let d = l.clone();
        let dashboard = SwrCache::new("legacy_dashboard", capacity, ttl, stale, move |scope| {
            let d = d.clone();
            async move {
                d.db.steady(|| dashboard(&d, scope, crate::now()))
                    .await
                    .map(|v| json(&v))
            }
        })
        .weighed(max_bytes, weigh)
        .paced(config.cache_refresh_pace)
        .enabled(on);
        let d = l.clone();
        let errors = SwrCache::new("legacy_errors", capacity, ttl, stale, move |scope| {
            let d = d.clone();
            async move {
                d.db.steady(|| errors(&d, scope, crate::now()))
                    .await
                    .map(|v| json(&v))
            }
        })
        .weighed(max_bytes, weigh)
        .paced(config.cache_refresh_pace)
        .enabled(on);
        let d = l;
        let records = SwrCache::new("legacy_records", capacity, ttl, stale, move |q| {
            let d = d.clone();
            async move {
                d.db.steady(|| records(&d, &q, crate::now()))
                    .await
                    .map(|v| json(&v))
            }
        })
        .weighed(max_bytes, weigh)
        .paced(config.cache_refresh_pace)
        .enabled(on);
        LegacyCaches {
            dashboard,
            errors,
            records,
        }
    }
}

/// `/api/dashboard`: two reads at once (the counts pass, with the failure patterns, and the 20 newest
/// installs).
pub async fn dashboard(db: &LegacyDb, scope: Scope, now: i64) -> Result<Dashboard, DbError> {
    let (dims, recent) = tokio::try_join!(
        db.dashboard_dims(&scope, now),
        db.newest(&scope, now, false, RECENT_RECORDS)
    )?;
    let patterns = crate::legacy::db::patterns(dims.list("pattern_app"));
    let recent = recent.into_iter().map(|r| db.record(r)).collect();
    Ok(Dashboard::build(&dims, scope.days, now, patterns, recent))
}

/// `/api/errors`: the failures pass and the 100 newest failed installs, read at once.
pub async fn errors(db: &LegacyDb, scope: Scope, now: i64) -> Result<Errors, DbError> {
    let (dims, recent) = tokio::try_join!(
        db.errors_dims(&scope, now),
        db.newest(&scope, now, true, RECENT_ERRORS)
    )?;
    let recent = recent.into_iter().map(|r| db.record(r)).collect();
    Ok(Errors::build(&dims, scope.days, now, recent))
}

/// `/api/records`.
pub async fn records(db: &LegacyDb, q: &RecordsQuery, now: i64) -> Result<RecordsPage, DbError> {
    let (total, rows) = db.records(q, now).await?;
    Ok(RecordsPage {
        records: rows.into_iter().map(|r| db.record(r)).collect(),
        page: q.page,
        limit: q.limit,
        total,
        total_pages: total.div_ceil(u64::from(q.limit)),
    })
}

type Shared = State<Arc<AppState>>;
/// A query string that does not parse counts as empty: these routes never answer 400.
type LenientQuery = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn pairs(q: LenientQuery) -> Vec<(String, String)> {
    q.map(|Query(q)| q).unwrap_or_default()
}

fn answer(body: Bytes, status: CacheStatus) -> Response {
    let mut response = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    response.headers_mut().insert(
        crate::http::X_CACHE,
        axum::http::HeaderValue::from_static(status.as_str()),
    );
    response
}

pub async fn api_dashboard(State(s): Shared, q: LenientQuery) -> Result<Response, ApiError> {
    let raw = pairs(q);
    let scope = Scope::parse(&Raw(&raw), 1);
    let (body, status) = s.legacy.dashboard.get(scope).await?;
    Ok(answer(body, status))
}

pub async fn api_errors(State(s): Shared, q: LenientQuery) -> Result<Response, ApiError> {
    let raw = pairs(q);
    let scope = Scope::parse(&Raw(&raw), 7);
    let (body, status) = s.legacy.errors.get(scope).await?;
    Ok(answer(body, status))
}

pub async fn api_records(State(s): Shared, q: LenientQuery) -> Result<Response, ApiError> {
    let raw = pairs(q);
    let query = RecordsQuery::parse(&Raw(&raw));
    let (body, status) = s.legacy.records.get(query).await?;
    Ok(answer(body, status))
}
