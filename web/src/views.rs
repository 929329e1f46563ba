//! The routes this fleet adds at the running service's URLs: `GET /api/scripts`, `/script-analysis` and
//! `/error-analysis`, plus `/api/figures` (the dashboard's cards and all-time count, for the page's
//! auto-refresh). `/api/scripts` reads its parameters as leniently as the running service and never
//! answers 400; the pages take the dashboard's filters. Errors become answers only through
//! [`crate::error`], as everywhere.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::error::{ApiError, PageError};
use crate::figures::Figures;
use crate::http::{html, json, json_bytes, raw, RawQuery};
use crate::model::timestamp_i64;
use crate::params::Params;
use crate::scripts::ScriptsQuery;
use crate::{pages, AppState};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/scripts", get(api_scripts))
        .route("/api/figures", get(api_figures))
        .route("/script-analysis", get(script_analysis_page))
        .route("/error-analysis", get(error_analysis_page))
}

/// The parameters of a lenient route: a query string that cannot be read counts as none.
fn lenient(q: RawQuery) -> Vec<(String, String)> {
    raw(q).unwrap_or_default()
}

async fn api_scripts(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let q = ScriptsQuery::parse(&Params(&lenient(q)));
    let ((_, body), status) = s.scripts.cache.get(q).await?;
    Ok(json_bytes(body, status))
}

async fn script_analysis_page(State(s): Shared, q: RawQuery) -> Result<Response, PageError> {
    let q = ScriptsQuery::parse(&Params(&lenient(q)));
    let ((answer, _), status) = s.scripts.cache.get(q.clone()).await?;
    Ok(html(&pages::ScriptAnalysisPage::new(&q, answer), status)?)
}

async fn error_analysis_page(State(s): Shared, q: RawQuery) -> Result<Response, PageError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((e, _), status) = s.caches.errors.get(scope).await?;
    Ok(html(&pages::ErrorAnalysisPage::new(scope, e), status)?)
}

async fn api_figures(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((d, _), status) = s.caches.dashboard.get(scope).await?;
    let (total_all_time, _) = s.all_time.get((scope.repo, scope.slug)).await?;
    let figures = Figures {
        days: d.days,
        repo: d.repo,
        slug: d.slug.clone(),
        generated_at: timestamp_i64(crate::now()),
        cards: d.cards.clone(),
        total_all_time,
    };
    Ok(json(&figures, status))
}
