//! [`ApiError`]: how every failure leaves the API. One body shape,
//! `{"error": {"code", "message", "request_id"}, "errors": [message]}` (the `errors` array is
//! what Vault clients read), with a stable `code`. Internals never leak: 500s say only that
//! something failed and which request id to look up in the logs.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use steward_secrets::{Kind, SecretsError};

/// Marker the error middleware turns into the JSON body (it knows the request id).
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Version metadata for a deleted/destroyed version, rendered as Vault's `data.metadata`.
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            detail: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

/// Status for each engine error kind. Authentication failures are 403, as Vault answers them,
/// so Vault clients behave unchanged; the `code` tells them apart.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated | Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        let status = status_of(e.kind);
        if e.kind == Kind::Internal {
            // Log the detail; answer without it.
            tracing::error!(code = e.code, error = %e.message, "internal error");
            return Self::new(
                status,
                e.code,
                "internal error; the server log has details under this request id",
            );
        }
        if e.code == "store_unavailable" {
            tracing::warn!(error = %e.message, "store unavailable");
        }
        let mut out = Self::new(status, e.code, e.message);
        out.detail = e.detail;
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            detail: self.detail,
        });
        resp
    }
}

/// A fallback code for errors produced outside our handlers (routing, body limits, timeouts).
pub fn code_for_status(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("unknown_route", "no such API route; see /v1/openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that HTTP method; see /v1/openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request body is larger than the server accepts (secrets.max_value_bytes)",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
            "timeout",
            "the request took longer than server.request_timeout",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send JSON"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("bad_request", "the request could not be understood"),
    }
}
