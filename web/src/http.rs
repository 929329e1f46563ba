//! Routes and handlers. Every route is a GET; there is no endpoint that writes and no admin action.
//! Parameters become closed types in [`crate::params`] first; errors become answers only through
//! [`crate::error`]. Every answer gets the security headers (CSP limited to 'self', nosniff, frame deny,
//! no-referrer) and is counted and timed per route; fleet's `/healthz`, `/readyz` and `/metrics` too.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::cache::CacheStatus;
use crate::error::{ApiError, PageError};
use crate::params::{self, BadParam, Params, RecordsQuery};
use crate::{metrics, model, pages, static_files, AppState};

type Shared = State<Arc<AppState>>;
type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;
type RawPath = Result<Path<String>, PathRejection>;

/// Content-Security-Policy: everything from this origin only; no inline script or style.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(dashboard_page))
        .route("/dashboard/errors", get(errors_page))
        .route("/dashboard/apps/{nsapp}", get(app_page))
        .route("/dashboard/installs", get(installs_page))
        .route("/dashboard/installs/{id}", get(detail_page))
        .route("/dashboard/alerts", get(alerts_page))
        .route("/dashboard/exit-codes", get(exit_codes_page))
        .route("/api/dashboard", get(api_dashboard))
        .route("/api/errors", get(api_errors))
        .route("/api/apps/{nsapp}", get(api_app))
        .route("/api/records", get(api_records))
        .route("/api/records.csv", get(api_records_csv))
        .route("/api/records/{id}", get(api_record))
        .route("/api/exit-codes", get(api_exit_codes))
        .route("/api/alerts", get(api_alerts))
        .route("/api/live", get(api_live))
        .route("/api/openapi.json", get(api_openapi))
        .route("/static/{*path}", get(static_file))
        .merge(ops(&state).probes())
        .route_layer(middleware::from_fn(measure))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Counts and times each answer by its route pattern (never by the raw path).
async fn measure(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    ::metrics::histogram!(metrics::REQUEST_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    ::metrics::counter!(metrics::REQUESTS, "route" => route, "status" => response.status().as_str().to_string())
        .increment(1);
    response
}

/// `/healthz` (`ok`), `/readyz` (`ready`; 503 `clickhouse not reachable` or `shutting down`) and
/// `/metrics`, in plain text: served whole on the ops port (`WEB_OPS_ADDR`), the probes also on the
/// public one.
pub fn ops(state: &Arc<AppState>) -> fleet::ops::Ops {
    let shared = state.clone();
    let ready = move || {
        let s = shared.clone();
        async move {
            if s.shutdown.is_triggered() {
                (false, "shutting down")
            } else if s.db.ready().await {
                (true, "ready")
            } else {
                (false, "clickhouse not reachable")
            }
        }
    };
    fleet::ops::Ops::text(ready, state.metrics.clone())
}

/// The answer to a request past `REQUEST_TIMEOUT_MS`: 503 `unavailable`, with the security headers.
pub fn timeout_response() -> Response {
    let mut response = ApiError::Unavailable("request deadline passed".into()).into_response();
    secure(response.headers_mut());
    response
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    secure(response.headers_mut());
    response
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}

fn raw(query: RawQuery) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::BadParam(BadParam {
            param: "query",
            message: e.body_text(),
        })
    })
}

fn path(p: RawPath, param: &'static str) -> Result<String, ApiError> {
    p.map(|Path(v)| v).map_err(|e| {
        ApiError::BadParam(BadParam {
            param,
            message: e.body_text(),
        })
    })
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn with_cache(mut response: Response, status: CacheStatus) -> Response {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    response
}

fn json<T: Serialize>(value: &T, status: CacheStatus) -> Response {
    with_cache(Json(value).into_response(), status)
}

/// A cached answer's JSON, serialized when it was loaded.
fn json_bytes(body: axum::body::Bytes, status: CacheStatus) -> Response {
    with_cache(
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        status,
    )
}

fn html(template: &impl askama::Template, status: CacheStatus) -> Result<Response, ApiError> {
    let body = template
        .render()
        .map_err(|e| ApiError::Unavailable(format!("render: {e}")))?;
    Ok(with_cache(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        status,
    ))
}

async fn api_dashboard(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((_, body), status) = s.caches.dashboard.get(scope).await?;
    Ok(json_bytes(body, status))
}

async fn dashboard_page(State(s): Shared, q: RawQuery) -> Result<Response, PageError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((d, _), status) = s.caches.dashboard.get(scope).await?;
    let live = live_or_unavailable(&s, scope.repo).await;
    Ok(html(&pages::DashboardPage::new(scope, d, live), status)?)
}

async fn live_or_unavailable(s: &AppState, repo: params::Repo) -> Arc<crate::live::Live> {
    match s.caches.live.get(repo).await {
        Ok((live, _)) => live,
        Err(e) => {
            tracing::debug!(error = %e, "live figures unavailable");
            Arc::new(crate::live::Live::unavailable(repo))
        }
    }
}

async fn api_live(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let scope = Params(&raw(q)?).scope()?;
    let live = live_or_unavailable(&s, scope.repo).await;
    Ok(json(&*live, CacheStatus::Hit))
}

async fn api_errors(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((_, body), status) = s.caches.errors.get(scope).await?;
    Ok(json_bytes(body, status))
}

async fn errors_page(State(s): Shared, q: RawQuery) -> Result<Response, PageError> {
    let scope = Params(&raw(q)?).scope()?;
    let ((e, _), status) = s.caches.errors.get(scope).await?;
    Ok(html(&pages::ErrorsPage::new(scope, e), status)?)
}

async fn api_app(State(s): Shared, p: RawPath, q: RawQuery) -> Result<Response, ApiError> {
    let nsapp = params::app_name(&path(p, "nsapp")?)?;
    let scope = Params(&raw(q)?).scope()?;
    let ((_, body), status) = s.caches.app.get((nsapp, scope)).await?;
    Ok(json_bytes(body, status))
}

async fn app_page(State(s): Shared, p: RawPath, q: RawQuery) -> Result<Response, PageError> {
    let nsapp = params::app_name(&path(p, "nsapp")?)?;
    let scope = Params(&raw(q)?).scope()?;
    let ((a, _), status) = s.caches.app.get((nsapp, scope)).await?;
    Ok(html(&pages::AppPage::new(scope, a), status)?)
}

fn records_query(s: &AppState, q: RawQuery) -> Result<RecordsQuery, ApiError> {
    Ok(Params(&raw(q)?).records(s.config.page_size)?)
}

async fn api_records(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let q = records_query(&s, q)?;
    let ((_, body), status) = s.caches.records.get(q).await?;
    Ok(json_bytes(body, status))
}

async fn installs_page(State(s): Shared, q: RawQuery) -> Result<Response, PageError> {
    let q = records_query(&s, q)?;
    let ((p, _), status) = s.caches.records.get(q.clone()).await?;
    Ok(html(&pages::InstallsPage::new(&q, p), status)?)
}

async fn api_record(State(s): Shared, p: RawPath) -> Result<Response, ApiError> {
    let id = params::execution_id(&path(p, "execution_id")?)?;
    let detail =
        s.db.detail(&id)
            .await?
            .ok_or(ApiError::NotFound("install"))?;
    Ok(json(&detail, CacheStatus::Miss))
}

async fn detail_page(State(s): Shared, p: RawPath) -> Result<Response, PageError> {
    let id = params::execution_id(&path(p, "execution_id")?)?;
    let detail =
        s.db.detail(&id)
            .await?
            .ok_or(ApiError::NotFound("install"))?;
    Ok(html(&pages::DetailPage::new(detail), CacheStatus::Miss)?)
}

async fn api_records_csv(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let q = records_query(&s, q)?;
    let rows = s.db.export(&q, crate::now(), s.config.csv_max_rows).await?;
    let body = csv(&rows);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"installs.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// The CSV of the installation log: RFC 4180 quoting, and a leading `'` on cells a spreadsheet would
/// take for a formula (app names come from strangers).
pub fn csv(rows: &[model::Record]) -> String {
    fn cell(out: &mut String, value: &str) {
        let guarded = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
        let needs_quotes = guarded || value.contains([',', '"', '\n', '\r']);
        if needs_quotes {
            out.push('"');
            if guarded {
                out.push('\'');
            }
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(value);
        }
    }
    fn opt<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_default()
    }
    let mut out = String::from(
        "execution_id,started_at,finished_at,nsapp,type,status,repo_source,os_type,os_version,pve_version,method,exit_code,exit_description,error_category,duration,core_count,ram_size,disk_size\n",
    );
    for r in rows {
        let fields = [
            r.execution_id.clone(),
            r.started_at.text.clone(),
            r.finished_at
                .as_ref()
                .map(|t| t.text.clone())
                .unwrap_or_default(),
            r.nsapp.clone(),
            r.kind.clone(),
            r.status.clone(),
            r.repo_source.clone(),
            opt(&r.os_type),
            opt(&r.os_version),
            opt(&r.pve_version),
            opt(&r.method),
            opt(&r.exit_code),
            opt(&r.exit_description),
            opt(&r.error_category),
            opt(&r.duration),
            opt(&r.core_count),
            opt(&r.ram_size),
            opt(&r.disk_size),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            cell(&mut out, f);
        }
        out.push('\n');
    }
    out
}

async fn api_exit_codes() -> Response {
    json(&model::exit_code_table(), CacheStatus::Hit)
}

async fn exit_codes_page() -> Result<Response, PageError> {
    let page = pages::ExitCodesPage {
        layout: pages::Layout::new("exit-codes", params::Scope::default()),
        codes: model::exit_code_table(),
    };
    Ok(html(&page, CacheStatus::Hit)?)
}

async fn api_alerts(State(s): Shared) -> Result<Response, ApiError> {
    let (alerts, status) = s
        .caches
        .alerts
        .get(())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(json(&*alerts, status))
}

async fn alerts_page(State(s): Shared) -> Result<Response, PageError> {
    let (alerts, status) = s
        .caches
        .alerts
        .get(())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(html(&pages::AlertsPage::new(alerts), status)?)
}

async fn api_openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        static_files::OPENAPI,
    )
        .into_response()
}

async fn static_file(Path(path): Path<String>) -> Response {
    match static_files::get(&path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            file.bytes,
        )
            .into_response(),
        None => ApiError::NotFound("static file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{timestamp, Record};

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let record = Record {
            execution_id: "a1".into(),
            nsapp: "=HYPERLINK(\"x\")".into(),
            kind: "lxc".into(),
            status: "failed".into(),
            repo_source: "ProxmoxVE".into(),
            repo_slug: None,
            os_type: Some("debian, 12".into()),
            os_version: None,
            pve_version: None,
            method: None,
            exit_code: Some(100),
            exit_description: Some("apt".into()),
            error_category: Some("apt".into()),
            started_at: timestamp(0),
            finished_at: None,
            duration: Some(5),
            core_count: None,
            ram_size: None,
            disk_size: None,
        };
        let text = csv(&[record]);
        let line = text.lines().nth(1).expect("row");
        assert!(line.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{line}");
        assert!(line.contains(",\"debian, 12\","), "{line}");
        assert_eq!(text.lines().count(), 2);
    }
}
