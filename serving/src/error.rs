//! Request failures and their HTTP mapping: every one answers
//! `{"error": code, "detail": text}` (`common::http::ErrorReply`); a bad
//! parameter's detail names it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use common::http::{ErrorReply, Refused};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response, as the OpenAPI document describes it
/// (`common::http::ErrorReply` writes it).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_parameter`.
    pub error: String,
    /// Human-readable explanation naming the offending parameter.
    pub detail: String,
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path or query parameter is invalid: (parameter, reason).
    #[error("{0}: {1}")]
    InvalidParameter(&'static str, String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("unknown item {0}")]
    ItemNotFound(String),
    /// A `category=` the served model's tree and items do not name.
    #[error("category {0} is unknown to the served model")]
    CategoryNotFound(u64),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("no model version is loaded yet")]
    ModelUnavailable,
    /// A popular answer with neither a model list nor a live ranking (a fresh
    /// deployment before its first event); same code as `ModelUnavailable`.
    #[error("no model version is loaded yet and the live popularity ranking has no events")]
    NoPopularList,
    /// `GET /v1/popular?window=NAME` before the live ranking holds anything.
    #[error("the live popularity ranking {0} has no events yet")]
    PopularNotReady(String),
    /// The trainer has not published the item's similar list (yet).
    #[error("no similar list of item {item} is published yet (model {model} is served; the trainer publishes them)")]
    SimilarNotReady { item: String, model: String },
    #[error("redis: {0}")]
    RedisUnavailable(String),
    #[error("too many requests in flight")]
    Overloaded { retry_after_s: u64 },
    #[error("request took longer than {0} ms")]
    Timeout(u64),
    #[error("internal error: {0}")]
    Internal(String),
    /// An admin route without the right bearer token.
    #[error("{0}")]
    Unauthorized(common::AuthError),
    /// An admin route while no admin token is configured.
    #[error("{0}")]
    AdminDisabled(common::AuthError),
    /// An admin reload found a `CURRENT` that cannot be served.
    #[error("{0}")]
    ReloadRefused(String),
}

impl From<common::AuthError> for ApiError {
    fn from(e: common::AuthError) -> Self {
        match e {
            common::AuthError::Disabled => ApiError::AdminDisabled(e),
            common::AuthError::Missing | common::AuthError::Invalid => ApiError::Unauthorized(e),
        }
    }
}

impl ApiError {
    /// Status code and stable error code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidParameter(..) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ItemNotFound(_) => (StatusCode::NOT_FOUND, "item_not_found"),
            ApiError::CategoryNotFound(_) => (StatusCode::NOT_FOUND, "category_not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::ModelUnavailable | ApiError::NoPopularList => {
                (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable")
            }
            ApiError::SimilarNotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "similar_not_ready"),
            ApiError::PopularNotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "popular_not_ready"),
            ApiError::RedisUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::AdminDisabled(_) => (StatusCode::FORBIDDEN, "admin_disabled"),
            ApiError::ReloadRefused(_) => (StatusCode::CONFLICT, "reload_refused"),
        }
    }
}

impl ApiError {
    /// The answer to a request the `/v1/*` guard refused; a shed request is
    /// told to come back after `retry_after_s`.
    pub fn refused(r: Refused, retry_after_s: u64) -> ApiError {
        match r {
            Refused::Timeout { after_ms } => ApiError::Timeout(after_ms),
            Refused::Overloaded => ApiError::Overloaded { retry_after_s },
            Refused::Failed(e) => ApiError::Internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let retry = match &self {
            ApiError::Overloaded { retry_after_s } => Some(*retry_after_s),
            ApiError::ModelUnavailable
            | ApiError::NoPopularList
            | ApiError::SimilarNotReady { .. }
            | ApiError::PopularNotReady(_)
            | ApiError::Timeout(_) => Some(1),
            _ => None,
        };
        let mut reply = ErrorReply::new(status, code, self.to_string());
        if let Some(s) = retry {
            reply = reply.retry_after(s);
        }
        let mut resp = reply.into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"recsys-admin\""));
        }
        resp
    }
}
