//! The one place where errors become responses: a JSON body `{"error","message","field"}` for the API, the
//! same status with a small HTML page for the pages. Bad parameters are 400 (a debug line and a counter,
//! never an error log); an unreachable ClickHouse is 503. Nothing here answers 500.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;
use crate::params::BadParam;

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadParam(#[from] BadParam),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("data store unavailable: {0}")]
    Unavailable(String),
    /// A bounded resource is in use (CSV exports): 503 at once, with Retry-After.
    #[error("{0}")]
    Busy(&'static str),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<Arc<DbError>> for ApiError {
    fn from(e: Arc<DbError>) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            ApiError::BadParam(e) => (StatusCode::BAD_REQUEST, "invalid_parameter", Some(e.param)),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
        }
    }

    fn log(&self) {
        match self {
            ApiError::BadParam(e) => {
                tracing::debug!(param = e.param, message = %e.message, "bad parameter")
            }
            ApiError::NotFound(what) => tracing::debug!(what, "not found"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "answering 503"),
            ApiError::Busy(what) => tracing::debug!(what, "busy"),
        }
    }

    /// The human sentence of the answer (the store's own error text stays in the log).
    fn message(&self) -> String {
        match self {
            ApiError::Unavailable(_) => "the data store is not reachable; try again shortly".into(),
            other => other.to_string(),
        }
    }

    /// The HTML form of the error, for pages.
    pub fn page(self) -> Response {
        self.log();
        let (status, code, _) = self.parts();
        let body = crate::pages::error_page(status.as_u16(), code, &self.message());
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let (status, code, field) = self.parts();
        let body = Body {
            error: code,
            message: self.message(),
            field,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

/// An error of a page handler: rendered as HTML.
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.page()
    }
}
