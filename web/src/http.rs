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
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::cache::CacheStatus;
use crate::error::{ApiError, PageError};
use crate::params::{self, BadParam, Params, RecordsQuery};
use crate::{legacy, metrics, model, pages, static_files, AppState};

type Shared = State<Arc<AppState>>;
pub(crate) type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;
type RawPath = Result<Path<String>, PathRejection>;

/// Content-Security-Policy: everything from this origin only; no inline script or style.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(dashboard_page))
        .route("/dashboard", get(dashboard_page))
        .route("/dashboard/errors", get(errors_page))
        .route("/dashboard/apps/{nsapp}", get(app_page))
        .route("/dashboard/installs", get(installs_page))
        .route("/dashboard/installs/{id}", get(detail_page))
        .route("/dashboard/alerts", get(alerts_page))
        .route("/dashboard/exit-codes", get(exit_codes_page))
        .route("/api/dashboard", get(legacy::api_dashboard))
        .route("/api/errors", get(legacy::api_errors))
        .route("/api/apps/{nsapp}", get(api_app))
        .route("/api/records", get(legacy::api_records))
        .route("/api/records.csv", get(api_records_csv))
        .route("/api/records/{id}", get(api_record))
        .route("/api/exit-codes", get(api_exit_codes))
        .route("/api/alerts", get(api_alerts))
        .route("/api/live", get(api_live))
        .route("/api/openapi.json", get(api_openapi))
        .route("/static/{*path}", get(static_file))
        .route("/api/v2/dashboard", get(api_dashboard))
        .route("/api/v2/errors", get(api_errors))
        .route("/api/v2/apps/{nsapp}", get(api_app))
        .route("/api/v2/records", get(api_records))
        .route("/api/v2/records.csv", get(api_records_csv))
        .route("/api/v2/records/{id}", get(api_record))
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/livez", get(|| async { "ok" }))
        .merge(crate::admin::router(&state))
        .merge(crate::views::routes())
        .merge(ops(&state).readiness())
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

/// `/healthz` (`ok`), `/readyz` (`ready`; 503 `clickhouse not reachable`, `waiting for the writer's
/// clickhouse migrations` or `shutting down`) and
/// `/metrics`, in plain text: served whole on the ops port (`WEB_OPS_ADDR`); the public port serves its
/// `/readyz`, and its own `/health` and `/healthz` ([`health`]) in the running service's shape.
pub fn ops(state: &Arc<AppState>) -> fleet::ops::Ops {
    let shared = state.clone();
    let ready = move || {
        let s = shared.clone();
        async move {
            if s.shutdown.is_triggered() {
                (false, "shutting down")
            } else {
                match s.db.ready().await {
                    Ok(()) => (true, "ready"),
                    Err(why) => (false, why.as_str()),
                }
            }
        }
    };
    fleet::ops::Ops::text(ready, state.metrics.clone())
}

/// `/health` and `/healthz`: `{"status":"ok"|"degraded","time":RFC 3339}`, 200 or 503 (ClickHouse cannot
/// be queried).
/// `/livez` is the process-alive probe (always `ok`): a liveness probe on `/healthz` would restart the web
/// while ClickHouse is down, when its cached answers are still worth serving.
async fn health(State(s): Shared) -> Response {
    let ok = s.db.ready().await.is_ok();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "time": model::timestamp_i64(crate::now()).text,
    });
    let status = if ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
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

pub(crate) fn raw(query: RawQuery) -> Result<Vec<(String, String)>, ApiError> {
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

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn with_cache(mut response: Response, status: CacheStatus) -> Response {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(status.as_str()));
    response
}

pub(crate) fn json<T: Serialize>(value: &T, status: CacheStatus) -> Response {
    with_cache(Json(value).into_response(), status)
}

/// A cached answer's JSON, serialized when it was loaded.
pub(crate) fn json_bytes(body: axum::body::Bytes, status: CacheStatus) -> Response {
    with_cache(
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        status,
    )
}

pub(crate) fn html(
    template: &impl askama::Template,
    status: CacheStatus,
) -> Result<Response, ApiError> {
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
    let (total_all_time, _) = s.all_time.get((scope.repo, scope.slug)).await?;
    let mut page = pages::DashboardPage::new(scope, d, live);
    page.total_all_time = total_all_time;
    page.refresh_secs = s.config.dashboard_refresh_secs;
    Ok(html(&page, status)?)
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

/// The real id behind a public install id of a path, or 404.
async fn resolve(s: &AppState, p: RawPath) -> Result<(String, u32), ApiError> {
    let public = params::execution_id(&path(p, "execution_id")?)?;
    s.db.resolve(&public)
        .await?
        .ok_or(ApiError::NotFound("install"))
}

async fn api_record(State(s): Shared, p: RawPath) -> Result<Response, ApiError> {
    let (id, started_at) = resolve(&s, p).await?;
    let detail =
        s.db.detail(&id, started_at)
            .await?
            .ok_or(ApiError::NotFound("install"))?;
    Ok(json(&detail, CacheStatus::Miss))
}

async fn detail_page(State(s): Shared, p: RawPath) -> Result<Response, PageError> {
    let (id, started_at) = resolve(&s, p).await?;
    let detail =
        s.db.detail(&id, started_at)
            .await?
            .ok_or(ApiError::NotFound("install"))?;
    Ok(html(&pages::DetailPage::new(detail), CacheStatus::Miss)?)
}

/// The CSV export, streamed: at most `CSV_MAX_CONCURRENT` at once (one more is a fast 503 with
/// Retry-After), rows read from ClickHouse while they are sent, at most `CSV_MAX_ROWS`.
async fn api_records_csv(State(s): Shared, q: RawQuery) -> Result<Response, ApiError> {
    let q = records_query(&s, q)?;
    let permit = s
        .csv_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("too many CSV exports at once; try again shortly"))?;
    let mut export = s.db.export(&q, crate::now(), s.config.csv_max_rows)?;
    // The first row before the status line: a store that does not answer is a 503, not a cut body.
    let first = export.next().await?;
    let mut head = String::from(CSV_HEADER);
    if let Some(record) = first {
        csv_row(&mut head, &record);
    }
    let rows = futures::stream::unfold(Some((export, permit, Some(head))), |state| async move {
        let (mut export, permit, head) = state?;
        if let Some(head) = head {
            return Some((
                Ok(axum::body::Bytes::from(head)),
                Some((export, permit, None)),
            ));
        }
        let mut chunk = String::new();
        loop {
            match export.next().await {
                Ok(Some(record)) => {
                    csv_row(&mut chunk, &record);
                    if chunk.len() >= 32 * 1024 {
                        break;
                    }
                }
                Ok(None) if chunk.is_empty() => return None,
                Ok(None) => {
                    // Sent below; the permit is released when the stream ends.
                    return Some((Ok(chunk.into()), None));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "csv export cut");
                    return Some((Err(e), None));
                }
            }
        }
        Some((Ok(chunk.into()), Some((export, permit, None))))
    });
    let body = axum::body::Body::from_stream(rows);
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

const CSV_HEADER: &str = "execution_id,started_at,finished_at,nsapp,type,status,repo_source,os_type,os_version,pve_version,method,exit_code,exit_description,error_category,duration,core_count,ram_size,disk_size\n";

/// The CSV of the installation log: RFC 4180 quoting, and a leading `'` on cells a spreadsheet would
/// take for a formula (app names come from strangers).
pub fn csv(rows: &[model::Record]) -> String {
    let mut out = String::from(CSV_HEADER);
    for r in rows {
        csv_row(&mut out, r);
    }
    out
}

/// One line of the CSV.
fn csv_row(out: &mut String, r: &model::Record) {
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
    {
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
            cell(out, f);
        }
        out.push('\n');
    }
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
