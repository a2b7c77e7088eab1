//! Bounds for the small internal HTTP servers (`/metrics`, `/health` of the
//! updater and the trainer's schedule): like the public APIs, they shed load
//! beyond a concurrency limit, time requests out and cap request bodies, so a
//! misbehaving scraper cannot pile up work in a process that has better
//! things to do.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};

/// The bounds of an internal server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Requests processed at once; more are answered 503 at once.
    pub concurrency: usize,
    /// Whole-request deadline (→ 503).
    pub timeout: Duration,
    /// Largest request body (→ 413).
    pub max_body_bytes: usize,
}

/// What `/metrics`, `/health` and an admin call need: a handful at a time,
/// well under a second, tiny bodies.
pub const INTERNAL: Bounds = Bounds { concurrency: 32, timeout: Duration::from_secs(10), max_body_bytes: 64 * 1024 };

/// `router` with `bounds` applied to every route (and the fallback).
pub fn bounded<S: Clone + Send + Sync + 'static>(router: Router<S>, bounds: Bounds) -> Router<S> {
    let timeout_ms = bounds.timeout.as_millis() as u64;
    router
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |e: BoxError| async move { refuse(e, timeout_ms) }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(bounds.concurrency))
                .timeout(bounds.timeout),
        )
        .layer(DefaultBodyLimit::max(bounds.max_body_bytes))
}

fn refuse(e: BoxError, timeout_ms: u64) -> Response {
    let (code, detail) = if e.is::<tower::timeout::error::Elapsed>() {
        ("request_timeout", format!("request took longer than {timeout_ms} ms"))
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        ("overloaded", "too many requests in flight".to_owned())
    } else {
        ("internal", e.to_string())
    };
    let mut resp =
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": code, "detail": detail}))).into_response();
    resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    #[tokio::test]
    async fn slow_requests_time_out_excess_ones_are_shed_and_bodies_are_capped() {
        let bounds = Bounds { concurrency: 1, timeout: Duration::from_millis(200), max_body_bytes: 16 };
        let app = bounded(
            Router::new()
                .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
                .route("/echo", post(|b: axum::body::Bytes| async move { b.len().to_string() })),
            bounds,
        );
        let slow = app.clone().oneshot(Request::get("/slow").body(Body::empty()).unwrap());
        let (first, second) = tokio::join!(slow, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            app.clone().oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await
        });
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE, "timed out");
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE, "shed while the first held the slot");
        assert!(second.headers().contains_key("retry-after"));
        let big = app.clone().oneshot(Request::post("/echo").body(Body::from(vec![b'x'; 17])).unwrap()).await;
        assert_eq!(big.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
        let small = app.oneshot(Request::post("/echo").body(Body::from(vec![b'x'; 16])).unwrap()).await;
        assert_eq!(small.unwrap().status(), StatusCode::OK);
    }
}
