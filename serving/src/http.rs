//! The HTTP application (docs/design.md §8): every route of [`crate::routes`]
//! and the OpenAPI document, the `/v1/*` guard (concurrency limit, deadline),
//! the request metrics, and JSON answers for unknown routes and methods.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use common::http::Guard;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::routes::{ops, popular, recs, similar, stats, SourceLabel};

// The router's inputs, under the paths other crates' tests name.
pub use crate::routes::variant_of;
pub use crate::state::{Admin, AppState};

/// The whole application. The `/v1/*` routes get the request timeout and the
/// concurrency limit (excess requests are shed at once with 503 and
/// `Retry-After`); health, readiness and metrics stay responsive.
pub fn router(state: AppState) -> Router {
    router_with_routes(state, Router::new())
}

/// [`router`] with `extra` routes behind the same layers, for tests that need
/// a handler no production router has (one that panics); production code
/// passes none. A request id and a span wrap everything; a handler's panic is
/// answered 500 inside the layer that records status codes.
pub fn router_with_routes(state: AppState, extra: Router<AppState>) -> Router {
    let cfg = &state.inner.cfg;
    let retry_after_s = cfg.retry_after_s;
    let demo = cfg.demo;
    let guard = Guard { concurrency: cfg.concurrency_limit, timeout: cfg.request_timeout() };
    let metrics = state.inner.metrics.clone();
    let v1 = Router::new()
        .route("/v1/recommendations/{user_id}", get(recs::recommendations))
        .route("/v1/items/{item_id}/similar", get(similar::similar))
        .route("/v1/popular", get(popular::popular))
        .route("/v1/stats", get(stats::stats))
        .route_layer(common::http::guard(guard, move |r| ApiError::refused(r, retry_after_s)));
    let app = Router::new()
        .merge(v1)
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::render_metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/admin/v1/reload", post(ops::admin_reload))
        .merge(if demo { crate::demo::routes() } else { Router::new() })
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    common::http::api(app, middleware::from_fn_with_state(metrics, track))
}

/// Records every response under its route template (never a raw path).
async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // MatchedPath holds an Arc<str>: cloning it costs no allocation per request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |m| m.as_str());
    let resp = next.run(req).await;
    let status = resp.status();
    let source = resp.extensions().get::<SourceLabel>().map_or("none", |s| s.0);
    metrics.request_duration.with_label_values(&[route, status.as_str()]).observe(start.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, status.as_str(), source]).inc();
    resp
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
