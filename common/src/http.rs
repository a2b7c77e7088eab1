//! What every HTTP server here shares.
//!
//! - [`bounded`]: bounds for the small internal servers (`/metrics`,
//!   `/health` of the updater and the trainer's schedule): like the public
//!   APIs, they shed load beyond a concurrency limit, time requests out and
//!   cap request bodies, so a misbehaving scraper cannot pile up work in a
//!   process that has better things to do.
//! - [`traced`]: a request id per request (`x-request-id`, kept when the
//!   client sends one, echoed in the response) and a `request` span carrying
//!   it, so every log line of a request can be found from the id a client
//!   reports.
//! - [`catch_panic`]: a handler that panics answers 500 with the JSON error
//!   body every API uses (`{"error": "internal", "detail": …}`), is logged
//!   and counted (`recsys_http_panics_total`), and the process keeps serving.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use prometheus::IntCounter;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

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

/// `router` with `bounds` applied to every route (and the fallback), request
/// ids, a span per request ([`traced`]) and panics answered 500 ([`catch_panic`]).
pub fn bounded<S: Clone + Send + Sync + 'static>(router: Router<S>, bounds: Bounds) -> Router<S> {
    let timeout_ms = bounds.timeout.as_millis() as u64;
    let r = router
        .layer(catch_panic())
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |e: BoxError| async move { refuse(e, timeout_ms) }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(bounds.concurrency))
                .timeout(bounds.timeout),
        )
        .layer(DefaultBodyLimit::max(bounds.max_body_bytes));
    traced(r)
}

/// The header carrying a request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-sent request id copied into the logs.
const MAX_LOGGED_ID: usize = 64;

/// `router` with request ids and a span per request (see the module docs).
/// Apply it last, so the span covers every other layer.
pub fn traced<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let header = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &axum::http::Request<axum::body::Body>| {
            let id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map_or("", |v| &v[..v.len().min(MAX_LOGGED_ID)]);
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        // No line per 5xx here: the handlers log their failures (and a shed
        // request under overload must not flood the log).
        .on_failure(());
    // Layers run outermost first: set the id, copy it to the response, then the span.
    router
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, NextId))
}

/// Request ids: a random per-process prefix and a counter (unique, cheap, and
/// sortable within a process), unless the client sent its own.
#[derive(Debug, Clone, Copy)]
struct NextId;

impl MakeRequestId for NextId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let prefix = *PREFIX.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish() as u32
        });
        let id = format!("{prefix:08x}-{:012x}", NEXT.fetch_add(1, Ordering::Relaxed));
        axum::http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Handler panics of the whole process, `recsys_http_panics_total`: one
/// counter for every server in it, registered in each registry by
/// [`crate::memory::register`] (tests delta-check it: apps share it).
pub fn panics() -> &'static IntCounter {
    static C: std::sync::OnceLock<IntCounter> = std::sync::OnceLock::new();
    #[allow(clippy::expect_used)] // a constant, valid metric name and help
    C.get_or_init(|| {
        IntCounter::new("recsys_http_panics_total", "HTTP request handlers that panicked (answered 500)")
            .expect("valid metric")
    })
}

/// Answers a panicking handler with 500 and the API's JSON error body, logs
/// the panic and counts it in [`panics`]. Apply it inside the layers that
/// record status codes, so the 500 is recorded like any other.
pub fn catch_panic() -> CatchPanicLayer<PanicResponse> {
    CatchPanicLayer::custom(PanicResponse)
}

/// The response to a handler's panic (see [`catch_panic`]).
#[derive(Debug, Clone, Copy)]
pub struct PanicResponse;

impl tower_http::catch_panic::ResponseForPanic for PanicResponse {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> axum::http::Response<Self::ResponseBody> {
        panics().inc();
        let msg = panic_message(err.as_ref());
        tracing::error!(panic = %msg, "request handler panicked; answered 500");
        // The panic's text stays in the log: it may show internals.
        let body = serde_json::json!({
            "error": "internal",
            "detail": "internal error: the request handler failed (the server log has the details under this request's x-request-id)",
        });
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    }
}

/// The text of a panic payload (`panic!("…")` carries a `&str` or a `String`).
pub fn panic_message(err: &(dyn Any + Send)) -> &str {
    err.downcast_ref::<&str>()
        .copied()
        .or_else(|| err.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
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

    fn boom() -> &'static str {
        panic!("injected")
    }

    #[tokio::test]
    async fn internal_servers_answer_a_panic_500_json_count_it_and_carry_request_ids() {
        let app = bounded(
            Router::new().route("/boom", get(|| async { boom() })).route("/ok", get(|| async { "ok" })),
            INTERNAL,
        );
        let before = panics().get();
        let resp = app.clone().oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().contains_key(REQUEST_ID_HEADER));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal");
        assert!(panics().get() > before);
        let ok = app.oneshot(Request::get("/ok").header(REQUEST_ID_HEADER, "abc").body(Body::empty()).unwrap()).await;
        let ok = ok.unwrap();
        assert_eq!((ok.status(), ok.headers()[REQUEST_ID_HEADER].to_str().unwrap()), (StatusCode::OK, "abc"));
    }
}
