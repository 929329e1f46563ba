//! The HTTP surface of contract §2: `POST /telemetry` (and its alias `POST /`), and fleet's health,
//! readiness and metrics routes. Every answer the edge gives is built here (the request deadline's 408
//! too, through [`timeout_response`]), and every error maps to its status in one place.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;

use crate::broker::{self, PublishFailure, Published};
use crate::metrics as m;
use crate::AppState;

/// Why a request did not get a 202; the only place that picks a status code for an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] schema::Rejection),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive in time")]
    Timeout,
    #[error("too many requests from this client; retry in {0:?}")]
    RateLimited(Duration),
    #[error("the service is temporarily unavailable ({0})")]
    Unavailable(&'static str),
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    #[error("no such path; events go to POST /telemetry")]
    NotFound,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            ApiError::Invalid(r) => (StatusCode::BAD_REQUEST, r.code.as_str(), r.field),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None),
            ApiError::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout", None),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let Some(field) = field {
            body["field"] = json!(field);
        }
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            ApiError::RateLimited(wait) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::MethodNotAllowed) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// The edge's routes with their body limit, and fleet's probes (`/metrics` is on the ops port only,
/// [`ops`]). The request deadline is the server's ([`crate::Config::limits`]).
pub fn router(state: Arc<AppState>) -> Router {
    let telemetry = post(receive).fallback(method_not_allowed);
    Router::new()
        .route("/telemetry", telemetry.clone())
        .route("/", telemetry)
        .layer(RequestBodyLimitLayer::new(state.config.max_body_bytes))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            json_for_layer_errors,
        ))
        .merge(ops(&state).probes())
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// `/healthz`, `/readyz` (broker connected, stream ready, not shutting down) and `/metrics`: served whole
/// on the ops port (`OPS_ADDR`), the probes also on the public one.
pub fn ops(state: &Arc<AppState>) -> fleet::ops::Ops {
    let ready = {
        let state = state.clone();
        move || {
            let connected = fleet::nats::connected(&state.client);
            let stream = state.stream_ready.load(Ordering::Relaxed);
            let draining = state.shutdown.is_triggered();
            (
                connected && stream && !draining,
                json!({ "broker_connected": connected, "stream_ready": stream, "shutting_down": draining }),
            )
        }
    };
    let client = state.client.clone();
    fleet::ops::Ops::json(ready, state.metrics.clone()).on_scrape(move || {
        let connected = fleet::nats::connected(&client);
        metrics::gauge!(m::BROKER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    })
}

/// The answer to a request past `REQUEST_TIMEOUT_MS` (the body did not arrive in time): 408 as JSON.
pub fn timeout_response() -> Response {
    metrics::counter!(m::REJECTED, "reason" => "timeout").increment(1);
    ApiError::Timeout.into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The body limit layer answers in plain text; the contract wants JSON everywhere.
async fn json_for_layer_errors(State(state): State<Arc<AppState>>, response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            metrics::counter!(m::REJECTED, "reason" => "too_large").increment(1);
            ApiError::TooLarge(state.config.max_body_bytes).into_response()
        }
        _ => response,
    }
}

async fn receive(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request whole rather than a `HeaderMap` extractor, which would copy every header.
    let (parts, body) = request.into_parts();
    let key = state.key_rule.key(peer.ip(), &parts.headers);
    drop(parts);
    if let Err(wait) = state.limiter.check(key) {
        metrics::counter!(m::RATE_LIMITED).increment(1);
        return Err(ApiError::RateLimited(wait));
    }
    let (body, _body_bytes) = read_body(
        body,
        state.config.max_body_bytes,
        &state.body_bytes,
        &state.hot,
    )
    .await?;
    let accepted =
        judge_body(&body, state.config.max_body_bytes, reception()).inspect_err(|e| match e {
            ApiError::Invalid(r) => {
                metrics::counter!(m::REJECTED, "reason" => r.code.as_str()).increment(1);
                tracing::debug!(reason = r.code.as_str(), field = r.field, message = %r.message, "event rejected");
            }
            ApiError::TooLarge(_) => {
                metrics::counter!(m::REJECTED, "reason" => "too_large").increment(1)
            }
            _ => {}
        })?;
    count_repairs(&accepted);

    if state.shutdown.is_triggered() {
        return Err(shed("shutting_down"));
    }
    if !fleet::nats::connected(&state.client) {
        return Err(shed("broker_down"));
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return Err(shed("in_flight"));
    };
    let in_flight = state.hot.in_flight();
    in_flight.increment(1.0);
    let event = &accepted.event;
    let result = broker::publish(
        &state.jetstream,
        event.subject(),
        &accepted.msg_id,
        event.to_json().into(),
        state.config.publish_timeout(),
    )
    .await;
    in_flight.decrement(1.0);
    let (published, took) = result.map_err(|failure| match failure {
        PublishFailure::StreamFull(error) => {
            if let Some(suppressed) = state.stream_full_warning.due() {
                tracing::warn!(
                    %error,
                    suppressed,
                    "event stream full, new events get 503 until old ones age out"
                );
            }
            shed("stream_full")
        }
        failure => {
            tracing::warn!(error = %failure, "publish got no ack");
            match failure {
                PublishFailure::Timeout(_) => shed("publish_timeout"),
                _ => shed("publish_error"),
            }
        }
    })?;
    state.hot.publish_seconds().record(took.as_secs_f64());
    let status = match published {
        Published::Stored => {
            state.hot.accepted().increment(1);
            "accepted"
        }
        Published::Duplicate => {
            metrics::counter!(m::DUPLICATES).increment(1);
            "duplicate"
        }
    };
    // Both parts are ASCII without quotes (a fixed word and a UUID): no escaping needed.
    let body = format!(r#"{{"status":"{status}","id":"{}"}}"#, event.event_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The edge's decision on a whole body, before any broker work: too large (413), invalid (400), or an
/// event to publish. The limit layer already stops a longer body while it streams; the length check here
/// keeps the whole decision in one pure function that tests can drive with any bytes.
pub fn judge_body(
    body: &[u8],
    max_body_bytes: usize,
    reception: schema::Reception,
) -> Result<schema::Accepted, ApiError> {
    if body.len() > max_body_bytes {
        return Err(ApiError::TooLarge(max_body_bytes));
    }
    Ok(schema::validate(body, reception)?)
}

/// The server-side facts of a new event: now, and a UUIDv7 from `uuid` (`now_v7`: ordered within the
/// process even inside one millisecond, which the merge's "smallest id first" relies on; its random
/// part from a fast thread-local generator, the `fast-rng` feature).
fn reception() -> schema::Reception {
    schema::Reception {
        event_id: uuid::Uuid::now_v7(),
        received_at: time::OffsetDateTime::now_utc(),
    }
}

/// Bytes of the body budget (`MAX_BODY_BYTES_IN_FLIGHT`) one request holds until it is answered: as
/// many as of its body arrived.
struct BodyBytes {
    budget: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    gauge: metrics::Gauge,
}

impl BodyBytes {
    fn new(budget: Arc<tokio::sync::Semaphore>, gauge: metrics::Gauge) -> BodyBytes {
        BodyBytes {
            budget,
            permit: None,
            gauge,
        }
    }

    /// Takes `n` more bytes of the budget, or sheds the request at once when they are not there.
    fn reserve(&mut self, n: usize) -> Result<(), ApiError> {
        let n = u32::try_from(n).map_err(|_| shed("body_bytes"))?;
        let more = self
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| shed("body_bytes"))?;
        self.gauge.increment(f64::from(n));
        match &mut self.permit {
            Some(held) => held.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        if let Some(held) = &self.permit {
            self.gauge.decrement(held.num_permits() as f64);
        }
    }
}

fn shed(reason: &'static str) -> ApiError {
    metrics::counter!(m::SHED, "reason" => reason).increment(1);
    ApiError::Unavailable(reason)
}

fn count_repairs(accepted: &schema::Accepted) {
    for kind in &accepted.event.rescued {
        metrics::counter!(m::RESCUED, "kind" => kind.as_str()).increment(1);
    }
    if accepted.unknown_fields > 0 {
        metrics::counter!(m::UNKNOWN_FIELDS).increment(accepted.unknown_fields as u64);
    }
    if accepted.status_coerced {
        metrics::counter!(m::STATUS_COERCED).increment(1);
    }
    for field in &accepted.dropped {
        metrics::counter!(m::DROPPED, "field" => *field).increment(1);
    }
    if let Some(to) = accepted.reclassified {
        let to = match to {
            schema::validate::Reclassified::ToSuccess => "success",
            schema::validate::Reclassified::ToAborted => "aborted",
        };
        metrics::counter!(m::RECLASSIFIED, "to" => to).increment(1);
    }
}

/// Reads the whole body, taking each piece's bytes from the body budget (`MAX_BODY_BYTES_IN_FLIGHT`) as
/// it arrives; the bytes stay taken until the request is answered. When the budget is spent the request
/// is shed at once (503): memory for bodies stays bounded however many arrive together, and a slow
/// upload holds only what it has sent, so idle or trickling uploads cannot starve the others by what
/// they merely announce. The limit layer turns an oversized stream into an error we map to 413.
/// A body that arrives in one piece (the usual small event) is kept as it came, without a copy.
async fn read_body(
    body: Body,
    max: usize,
    budget: &Arc<tokio::sync::Semaphore>,
    hot: &m::Hot,
) -> Result<(bytes::Bytes, BodyBytes), ApiError> {
    use futures::StreamExt;
    let mut held = BodyBytes::new(budget.clone(), hot.body_bytes_in_flight().clone());
    let mut stream = body.into_data_stream();
    let mut first: Option<bytes::Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |err| {
                    err.source()
                })
                .any(|err| err.is::<http_body_util::LengthLimitError>());
            if too_large {
                metrics::counter!(m::REJECTED, "reason" => "too_large").increment(1);
                ApiError::TooLarge(max)
            } else {
                metrics::counter!(m::REJECTED, "reason" => "timeout").increment(1);
                ApiError::Timeout
            }
        })?;
        held.reserve(piece.len())?;
        match first.take() {
            None if buf.is_empty() => first = Some(piece),
            earlier => {
                if let Some(earlier) = earlier {
                    buf.extend_from_slice(&earlier);
                }
                buf.extend_from_slice(&piece);
            }
        }
    }
    Ok((first.unwrap_or_else(|| buf.freeze()), held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_increase_within_the_process_even_inside_one_millisecond() {
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| reception().event_id).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids out of order: the merge keeps the smallest id's values"
        );
    }
}
