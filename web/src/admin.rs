//! The admin actions of the running service, which the web only asks for: it writes to no store itself.
//! `POST /api/alerts/test` asks the alerter for a test mail and `POST /api/cleanup/run` asks the aggregator
//! for a round of stuck-install timeouts, both over NATS request–reply (subjects in `schema::names`,
//! replies in `schema::admin`); `GET /api/cleanup/status` asks the aggregator for its cleanup settings and
//! stuck count (no password); `POST /api/github/create-issue` opens a GitHub issue with an app's failure
//! figures of the last 30 days from ClickHouse.
//!
//! The actions need `ADMIN_PASSWORD` (header `X-Admin-Password` or JSON field `password`), compared in
//! constant time; without one configured they answer 404 as if they did not exist. A client address that
//! sent `ADMIN_MAX_FAILURES_PER_MIN` wrong passwords gets 429 until its minute is over (the counts live in
//! a bounded in-memory map, never logged). Neither the password nor the GitHub token is ever logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use schema::admin::{AlertTest, CleanupRun, CleanupStatus, Reply};
use schema::names;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::db::DbError;
use crate::error::ApiError;
use crate::model::AppView;
use crate::params::{self, BadParam, Period, Scope};
use crate::AppState;

/// The header that carries the admin password.
pub const PASSWORD_HEADER: &str = "x-admin-password";

/// Largest body of an admin request (a password and an app name).
const MAX_BODY: usize = 16 * 1024;
/// Client addresses whose failures are counted at once; the oldest are dropped beyond it.
const MAX_CLIENTS: u64 = 10_000;
/// The window of the failure count.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Deadline of the GitHub API call.
const GITHUB_TIMEOUT: Duration = Duration::from_secs(20);
/// The period of the figures in an issue.
const ISSUE_PERIOD: Period = Period::Days30;

/// Whether `name` can be a GitHub owner or repository name.
pub fn is_github_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why an admin request was not answered with its result.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No `ADMIN_PASSWORD` configured: the admin routes do not exist.
    #[error("route not found")]
    Disabled,
    #[error("a valid admin password is required (X-Admin-Password header or JSON field password)")]
    Unauthorized,
    #[error("too many wrong admin passwords from this address; try again in a minute")]
    RateLimited,
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The broker is down, no responder runs, or the responder could not do the work.
    #[error("{0}")]
    Unavailable(String),
    /// The responder did not answer within `ADMIN_REPLY_TIMEOUT_SECS`.
    #[error("no {0} answered within the deadline")]
    Timeout(&'static str),
    #[error("GITHUB_TOKEN, GITHUB_OWNER and GITHUB_REPO must be set to open issues")]
    NotConfigured,
    /// GitHub did not open the issue.
    #[error("{0}")]
    Upstream(String),
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> AdminError {
        AdminError::Api(e.into())
    }
}

impl From<BadParam> for AdminError {
    fn from(e: BadParam) -> AdminError {
        AdminError::Api(e.into())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = match self {
            AdminError::Disabled => return ApiError::NotFound("route").into_response(),
            AdminError::Api(e) => return e.into_response(),
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            AdminError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("60")),
            AdminError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some("5"))
            }
            AdminError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
            AdminError::NotConfigured => (StatusCode::SERVICE_UNAVAILABLE, "not_configured", None),
            AdminError::Upstream(_) => (StatusCode::BAD_GATEWAY, "bad_gateway", None),
        };
        match &self {
            AdminError::Unauthorized => tracing::warn!("admin request with a wrong or no password"),
            AdminError::RateLimited => tracing::debug!("admin request rate limited"),
            other => tracing::warn!(error = %other, "admin request failed"),
        }
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        response
    }
}

/// What the admin routes share: the web's state, its NATS connection, the failure counts and the HTTP
/// client for GitHub.
pub struct Admin {
    app: Arc<AppState>,
    nats: async_nats::Client,
    failures: moka::future::Cache<IpAddr, Arc<AtomicU32>>,
    github: reqwest::Client,
}

type Shared = State<Arc<Admin>>;

/// The admin routes, to be merged into the web's router.
pub fn router(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let admin = Arc::new(Admin {
        app: state.clone(),
        nats: state.jetstream.client(),
        failures: moka::future::Cache::builder()
            .max_capacity(MAX_CLIENTS)
            .time_to_live(FAILURE_WINDOW)
            .build(),
        github: reqwest::Client::builder()
            .timeout(GITHUB_TIMEOUT)
            .user_agent(concat!("telemetry-web/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default(),
    });
    let router = Router::new().route("/api/cleanup/status", get(cleanup_status));
    // Without a password the actions are not routed at all: every method gets the router's 404.
    let router = if state.config.admin_password.is_empty() {
        router
    } else {
        router
            .route("/api/alerts/test", post(alerts_test))
            .route("/api/cleanup/run", post(cleanup_run))
            .route("/api/github/create-issue", post(create_issue))
    };
    router.with_state(admin)
}

/// The client an admin request counts against: the edge's rule ([`fleet::client::client_key`]) with the
/// local proxies (loopback and private ranges, the front door) trusted, IPv6 clients per /64 (one
/// subscriber's network, which it can walk through).
pub fn client_addr(peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    fleet::client::client_key(peer.ip(), headers, fleet::client::default_trusted_proxies())
}

impl Admin {
    /// Checks the password of `request` and returns its JSON body (empty when it has none).
    async fn authorize(&self, request: Request) -> Result<Body, AdminError> {
        let expected = &self.app.config.admin_password;
        if expected.is_empty() {
            return Err(AdminError::Disabled);
        }
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let client = client_addr(peer, request.headers());
        let limit = self.app.config.admin_max_failures_per_min;
        if let Some(count) = self.failures.get(&client).await {
            if count.load(Ordering::Relaxed) >= limit {
                return Err(AdminError::RateLimited);
            }
        }
        let header = request.headers().get(PASSWORD_HEADER).cloned();
        let body = Body::read(request).await;
        let given: Option<&[u8]> = match &header {
            Some(value) => Some(value.as_bytes()),
            None => body
                .as_ref()
                .ok()
                .and_then(|b| b.fields.get("password"))
                .and_then(Value::as_str)
                .map(str::as_bytes),
        };
        let matches = given.is_some_and(|g| bool::from(g.ct_eq(expected.expose().as_bytes())));
        if !matches {
            let count = self
                .failures
                .get_with(client, async { Arc::new(AtomicU32::new(0)) })
                .await;
            count.fetch_add(1, Ordering::Relaxed);
            return Err(AdminError::Unauthorized);
        }
        body
    }

    /// Asks the service behind `subject` and returns its answer. `service` names it in errors; a
    /// deadline passed is `on_timeout`.
    async fn ask<T: DeserializeOwned>(
        &self,
        subject: &'static str,
        service: &'static str,
        on_timeout: fn(&'static str) -> AdminError,
    ) -> Result<T, AdminError> {
        if !fleet::nats::connected(&self.nats) {
            return Err(AdminError::Unavailable(
                "the broker is not reachable; try again shortly".into(),
            ));
        }
        let deadline = Duration::from_secs(self.app.config.admin_reply_timeout_secs);
        let request = async_nats::Request::new()
            .payload(Bytes::new())
            .timeout(Some(deadline));
        let reply = match self.nats.send_request(subject, request).await {
            Ok(reply) => reply,
            Err(e) => {
                return Err(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        AdminError::Unavailable(format!("no {service} is running"))
                    }
                    async_nats::RequestErrorKind::TimedOut => on_timeout(service),
                    _ => AdminError::Unavailable(format!("asking the {service}: {e}")),
                })
            }
        };
        match serde_json::from_slice::<Reply<T>>(&reply.payload) {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Err { error }) => Err(AdminError::Unavailable(format!("{service}: {error}"))),
            Err(e) => Err(AdminError::Unavailable(format!(
                "the {service} answered something unreadable: {e}"
            ))),
        }
    }
}

/// The JSON body of an admin request: an object, or nothing.
struct Body {
    fields: Map<String, Value>,
}

impl Body {
    /// Reads the body; an empty body is an empty object, anything but a JSON object is a 400.
    async fn read(request: Request) -> Result<Body, AdminError> {
        let bad = |message: &str| {
            AdminError::from(BadParam {
                param: "body",
                message: message.to_string(),
            })
        };
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
            .await
            .map_err(|_| bad("must be a JSON object of at most 16 KiB"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body { fields: Map::new() });
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => Ok(Body { fields }),
            _ => Err(bad("must be a JSON object")),
        }
    }

    fn string(&self, names: &[&'static str]) -> Option<&str> {
        names
            .iter()
            .find_map(|n| self.fields.get(*n))
            .and_then(Value::as_str)
    }
}

fn timeout(service: &'static str) -> AdminError {
    AdminError::Timeout(service)
}

fn unavailable(service: &'static str) -> AdminError {
    AdminError::Unavailable(format!("no {service} answered within the deadline"))
}

/// `POST /api/alerts/test`: the alerter's `{sent, message}`; 200 when the mail went, 502 when it did not.
async fn alerts_test(State(a): Shared, request: Request) -> Result<Response, AdminError> {
    a.authorize(request).await?;
    let answer: AlertTest = a
        .ask(
            names::ADMIN_ALERTS_TEST_SUBJECT,
            "telemetry-alerter",
            timeout,
        )
        .await?;
    let status = if answer.sent {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((status, Json(answer)).into_response())
}

/// `POST /api/cleanup/run`: the aggregator's `{updated, message}`.
async fn cleanup_run(State(a): Shared, request: Request) -> Result<Json<CleanupRun>, AdminError> {
    a.authorize(request).await?;
    let answer = a
        .ask(
            names::ADMIN_CLEANUP_RUN_SUBJECT,
            "telemetry-aggregator",
            timeout,
        )
        .await?;
    Ok(Json(answer))
}

/// `GET /api/cleanup/status` (no password): `{stuck_count, stuck_after_hours, check_interval, enabled}`.
async fn cleanup_status(State(a): Shared) -> Result<Json<CleanupStatus>, AdminError> {
    let answer = a
        .ask(
            names::ADMIN_CLEANUP_STATUS_SUBJECT,
            "telemetry-aggregator",
            unavailable,
        )
        .await?;
    Ok(Json(answer))
}

/// The answer of `POST /api/github/create-issue`.
#[derive(Debug, Serialize)]
struct Created {
    number: u64,
    url: String,
    title: String,
}

#[derive(Deserialize)]
struct GithubIssue {
    number: u64,
    html_url: String,
}

/// `POST /api/github/create-issue` with `{"app": "<nsapp>"}` (or `nsapp`): opens an issue with the app's
/// failure figures of the last 30 days; 201 `{number, url, title}`.
async fn create_issue(State(a): Shared, request: Request) -> Result<Response, AdminError> {
    let body = a.authorize(request).await?;
    let config = &a.app.config;
    let (Some(owner), Some(repo)) = (&config.github_owner, &config.github_repo) else {
        return Err(AdminError::NotConfigured);
    };
    if config.github_token.is_empty() {
        return Err(AdminError::NotConfigured);
    }
    let app = body.string(&["app", "nsapp"]).ok_or_else(|| BadParam {
        param: "app",
        message: "the JSON body needs the app's name as \"app\"".into(),
    })?;
    let app = params::app_name(app)?;
    let scope = Scope {
        period: ISSUE_PERIOD,
        ..Scope::default()
    };
    let view = a.app.db.app(&app, scope, crate::now()).await?;
    if view.cards.total_installs == 0 {
        return Err(ApiError::NotFound("installs of this app in the last 30 days").into());
    }
    let (title, text) = issue(&view);
    let url = format!(
        "{}/repos/{owner}/{repo}/issues",
        config.github_api_url.trim_end_matches('/')
    );
    let sent = a
        .github
        .post(&url)
        .bearer_auth(config.github_token.expose())
        .header(header::ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .json(&serde_json::json!({ "title": title, "body": text }))
        .send()
        .await
        .map_err(|e| AdminError::Upstream(format!("GitHub not reachable: {}", e.without_url())))?;
    let status = sent.status();
    if !status.is_success() {
        let message = sent
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        return Err(AdminError::Upstream(format!(
            "GitHub answered {status}: {message}"
        )));
    }
    let created: GithubIssue = sent
        .json()
        .await
        .map_err(|e| AdminError::Upstream(format!("GitHub's answer: {}", e.without_url())))?;
    tracing::info!(number = created.number, "github issue opened");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            number: created.number,
            url: created.html_url,
            title,
        }),
    )
        .into_response())
}

/// Text for a Markdown table cell or code span: no backticks, pipes or line breaks, so that a stranger's
/// app name or log line can neither break the table nor mention anyone (it sits in a code span).
fn code(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '`' => '\'',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    format!("`{}`", cleaned.replace('|', "\\|"))
}

/// The title and Markdown body of the issue of an app: installs, failures, failure rate, top exit codes,
/// error categories and errors of the period.
pub fn issue(view: &AppView) -> (String, String) {
    use std::fmt::Write;
    let c = &view.cards;
    let title = format!(
        "{}: {:.1}% of installs failed in the last {} days",
        view.nsapp, c.failure_rate, view.days
    );
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Telemetry of {} over the last {} days (since {}, repository {}).\n",
        code(&view.nsapp),
        view.days,
        view.since.text,
        view.repo
    );
    let _ = writeln!(body, "| figure | value |\n|---|---|");
    let _ = writeln!(body, "| installs | {} |", c.total_installs);
    let _ = writeln!(body, "| succeeded | {} |", c.success_count);
    let _ = writeln!(body, "| failed | {} |", c.failed_count);
    let _ = writeln!(body, "| aborted | {} |", c.aborted_count);
    let _ = writeln!(body, "| failure rate | {:.1}% |", c.failure_rate);
    if !view.exit_codes.is_empty() {
        let _ = writeln!(
            body,
            "\n### Top exit codes\n\n| exit code | meaning | installs |\n|---|---|---|"
        );
        for e in &view.exit_codes {
            let _ = writeln!(
                body,
                "| {} | {} | {} |",
                e.code,
                e.description.replace('|', "\\|"),
                e.count
            );
        }
    }
    if !view.error_categories.is_empty() {
        let _ = writeln!(
            body,
            "\n### Error categories\n\n| category | installs |\n|---|---|"
        );
        for e in &view.error_categories {
            let _ = writeln!(body, "| {} | {} |", code(&e.name), e.count);
        }
    }
    if !view.signatures.is_empty() {
        let _ = writeln!(body, "\n### Top errors\n\n| error | installs |\n|---|---|");
        for s in view.signatures.iter().take(10) {
            let _ = writeln!(body, "| {} | {} |", code(&s.signature), s.count);
        }
    }
    let _ = writeln!(
        body,
        "\n_Opened from the telemetry dashboard (`/dashboard/apps/{}`)._",
        fleet::percent::encode(&view.nsapp)
    );
    (title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_or_the_last_hop_of_a_local_proxy() {
        let check = |peer: &str, forwarded: Option<&str>, expected: &str| {
            let mut headers = HeaderMap::new();
            if let Some(f) = forwarded {
                headers.insert("x-forwarded-for", f.parse().expect("header"));
            }
            let peer: SocketAddr = peer.parse().expect("peer");
            assert_eq!(
                client_addr(Some(peer), &headers),
                expected.parse::<IpAddr>().expect("ip"),
                "{peer} {forwarded:?}"
            );
        };
        check("127.0.0.1:5000", None, "127.0.0.1");
        check(
            "127.0.0.1:5000",
            Some("198.51.100.1, 203.0.113.9"),
            "203.0.113.9",
        );
        check("10.0.0.2:5000", Some("203.0.113.9"), "203.0.113.9");
        check("10.0.0.2:5000", Some("garbage"), "10.0.0.2");
        check("10.0.0.2:5000", Some("203.0.113.9, garbage"), "10.0.0.2");
        // A client on a public address cannot choose its own key.
        check("198.51.100.7:5000", Some("203.0.113.9"), "198.51.100.7");
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let check = |ip: &str, key: &str| {
            assert_eq!(
                fleet::client::bucket(ip.parse().expect("ip")),
                key.parse::<IpAddr>().expect("key"),
                "{ip}"
            );
        };
        check("203.0.113.9", "203.0.113.9");
        check("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::");
        check("2001:db8:1:2::1", "2001:db8:1:2::");
    }

    #[test]
    fn github_names() {
        let check = |name: &str, ok: bool| assert_eq!(is_github_name(name), ok, "{name:?}");
        check("community-scripts", true);
        check("ProxmoxVE", true);
        check("a/b", false);
        check("..", false);
        check("", false);
    }

    #[test]
    fn cells_cannot_break_the_table_or_mention_anyone() {
        assert_eq!(code("a|b`@team\nx"), "`a\\|b'@team x`");
    }
}
