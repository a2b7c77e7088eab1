//! `/metrics` and `/health` on `updater.metrics_listen`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::Metrics;
use crate::served::ModelHandle;

#[derive(Debug, Clone)]
struct AppState {
    metrics: Metrics,
    model: ModelHandle,
}

/// The router.
pub fn router(metrics: Metrics, model: ModelHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "not_found"}))) })
        .with_state(AppState { metrics, model })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

/// Alive; names the served model (null before the first one).
async fn health(State(s): State<AppState>) -> impl IntoResponse {
    let model = s.model.current().map(|m| m.version.to_string());
    Json(serde_json::json!({"status": "ok", "model": model}))
}
