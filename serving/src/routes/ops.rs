//! What operators and orchestrators call: `/health`, `/ready`, `/metrics` and
//! `POST /admin/v1/reload`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::watch;

/// `GET /ready`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ReadyResponse {
    pub ready: bool,
    pub redis: bool,
    pub model: Option<String>,
    /// The live ranking that answers while no model exists has been read.
    pub live_popular: bool,
    /// The live catalog (`recsys.items`) was read up to where it stood at
    /// start (true when `[serving] live_catalog` is off).
    pub live_catalog: bool,
    /// Why not ready, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "The process is alive")))]
/// Alive.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, description = "Redis answers, and a model version is known or the live popularity ranking answers", body = ReadyResponse),
        (status = 503, description = "Redis does not answer, there is neither a model nor a live ranking yet, or the live catalog is not caught up (`reason` says which)", body = ReadyResponse),
    )
)]
/// Ready to serve: Redis reachable, and a model version known or (day one,
/// before the first model) the live popularity ranking loaded.
pub async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let s = &s.inner;
    let mut conn = s.redis.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("PING").cmd("GET").arg(s.keys.model_current());
    let probe = tokio::time::timeout(s.cfg.stats_timeout(), pipe.query_async::<(String, Option<String>)>(&mut conn));
    let (redis_ok, redis_model) = match probe.await {
        Ok(Ok((_, m))) => (true, m),
        _ => (false, None),
    };
    let model = s.catalog.current().map(|c| c.version.to_string()).or(redis_model);
    let live_popular = s.live_list(s.popularity.fallback_window.as_str()).is_some();
    let live_catalog = s.live_catalog.caught_up();
    let reason = if !redis_ok {
        Some("redis does not answer".to_owned())
    } else if model.is_none() && !live_popular {
        Some("no model and no live popularity ranking yet".to_owned())
    } else if !live_catalog {
        Some("the live catalog (items topic) is not read up to where it stood at start".to_owned())
    } else {
        None
    };
    let ready = reason.is_none();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadyResponse { ready, redis: redis_ok, model, live_popular, live_catalog, reason }))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition")))]
/// Prometheus metrics.
pub async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.inner.metrics.render())
}

/// `POST /admin/v1/reload`: serve `CURRENT` now (after `recsys-trainer models
/// promote --no-publish`, or when an announcement was missed) and re-read the
/// Redis popular lists. Bearer token required.
#[utoipa::path(
    post,
    path = "/admin/v1/reload",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The served version after the reload, and whether it changed", body = ReloadResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "No admin token configured: admin routes are off", body = ErrorBody),
        (status = 409, description = "CURRENT names a version that cannot be served; the old one stays", body = ErrorBody),
    )
)]
pub async fn admin_reload(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<ReloadResponse>, ApiError> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(e) = s.inner.admin.auth.check(auth) {
        s.inner.metrics.admin_requests.with_label_values(&["reload", "refused"]).inc();
        return Err(e.into());
    }
    let r = watch::reload_current(&s.inner.admin.model_root, &s).await;
    let outcome = if r.is_ok() { "ok" } else { "failed" };
    s.inner.metrics.admin_requests.with_label_values(&["reload", outcome]).inc();
    let reloaded = r.map_err(ApiError::ReloadRefused)?;
    let popular_refreshed = watch::refresh_popular(&s).await.is_ok();
    tracing::info!(?reloaded, popular_refreshed, "admin reload");
    let (model_version, changed) = match reloaded {
        watch::Reloaded::Swapped(v) => (Some(v), true),
        watch::Reloaded::Unchanged(v) => (Some(v), false),
        watch::Reloaded::NoModel => (None, false),
    };
    Ok(Json(ReloadResponse { model_version, changed, popular_refreshed }))
}

/// `POST /admin/v1/reload`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ReloadResponse {
    /// The version served after the reload (null: no `CURRENT` yet).
    pub model_version: Option<String>,
    /// True when the reload swapped the served version.
    pub changed: bool,
    /// False when the Redis popular lists could not be re-read (the old ones stay).
    pub popular_refreshed: bool,
}
