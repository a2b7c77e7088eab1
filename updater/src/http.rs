//! `/metrics` and `/health` on `updater.metrics_listen`. `/metrics` also
//! renders the registries of tasks hosted beside the pipeline (tracking).

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
    extra: Vec<prometheus::Registry>,
}

/// The router.
pub fn router(metrics: Metrics, model: ModelHandle) -> Router {
    router_with(metrics, model, Vec::new())
}

/// The router; `/metrics` also renders `extra` (the registries of tasks
/// running in the same process, e.g. `recsys_tracking_*`).
/// Bounded like every HTTP server here ([`common::http::INTERNAL`]).
pub fn router_with(metrics: Metrics, model: ModelHandle, extra: Vec<prometheus::Registry>) -> Router {
    let r = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "not_found"}))) });
    common::http::bounded(r, common::http::INTERNAL).with_state(AppState { metrics, model, extra })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    let mut text = s.metrics.render();
    for r in &s.extra {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        match prometheus::TextEncoder::new().encode(&r.gather(), &mut buf) {
            Ok(()) => text.push_str(&String::from_utf8_lossy(&buf)),
            Err(e) => tracing::error!(error = %e, "encoding hosted metrics"),
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Alive; names the served model (null before the first one).
async fn health(State(s): State<AppState>) -> impl IntoResponse {
    let model = s.model.current().map(|m| m.version.to_string());
    Json(serde_json::json!({"status": "ok", "model": model}))
}
