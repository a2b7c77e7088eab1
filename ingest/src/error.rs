//! Request-level failures and their HTTP mapping: client faults are 4xx,
//! server faults 5xx, every one with the body `{"error": code, "detail": text}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::http::{ErrorReply, Refused};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// The body of every error response, as the OpenAPI document describes it
/// (`common::http::ErrorReply` writes it).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_json`.
    pub error: String,
    /// Human-readable explanation.
    pub detail: String,
    /// `kafka_partial` only: the request indices the event log holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<Vec<usize>>,
}

/// Why a request was not processed. Item-level rejections are not errors:
/// they are listed in the response (200, or 422 when nothing was accepted)
/// and dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Content-Type must be application/json or text/plain (JSON either way), got {0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("a batch holds at most {max} records, got {len}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("could not read the body: {0}")]
    BadBody(String),
    /// `PUT /v1/items/{id}` with an `{id}` that is not an item id.
    #[error("{0}")]
    InvalidItemId(String),
    /// `PUT /v1/items/{id}` with a body naming another item.
    #[error("{0}")]
    ItemIdMismatch(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} not allowed here")]
    MethodNotAllowed(String),
    #[error("the event log did not acknowledge the events: {0}; nothing was accepted, retry later")]
    KafkaUnavailable(String),
    /// Some events of the request were written, others not: the answer lists
    /// the written ones (`persisted`, request indices) so the client resends
    /// only the rest instead of duplicating what the log already holds.
    #[error("the event log acknowledged only some events: {detail}; resend only those not in `persisted`")]
    KafkaPartial { detail: String, persisted: Vec<usize> },
    #[error("too many requests in progress; retry later")]
    Overloaded,
    #[error("the request took longer than {0} ms; nothing was accepted, retry later")]
    Timeout(u64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status code and the stable, machine-readable error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidItemId(_) => (StatusCode::BAD_REQUEST, "invalid_id"),
            ApiError::ItemIdMismatch(_) => (StatusCode::BAD_REQUEST, "item_id_mismatch"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::KafkaUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable"),
            ApiError::KafkaPartial { .. } => (StatusCode::SERVICE_UNAVAILABLE, "kafka_partial"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Timeout { after_ms } => ApiError::Timeout(after_ms),
            Refused::Overloaded => ApiError::Overloaded,
            Refused::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut reply = ErrorReply::new(status, code, self.to_string());
        if let ApiError::KafkaPartial { persisted, .. } = &self {
            reply = reply.field("persisted", json!(persisted));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is transient (broker, load, deadline): tell
            // clients when to come back rather than letting them hammer.
            reply = reply.retry_after(1);
        }
        reply.into_response()
    }
}
