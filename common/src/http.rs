//! What every HTTP server here shares.
//!
//! - [`guard`]: the guard of request-handling routes — a concurrency limit
//!   beyond which requests are refused at once (clients back off instead of
//!   queueing) and a deadline — with the refusal ([`Refused`]) answered as the
//!   process's own error.
//! - [`ErrorReply`]: the error answer of every API, `{"error": code,
//!   "detail": text}` with `Retry-After` when given; each process keeps its
//!   own error enum and maps it to one.
//! - [`api`]: the outer layers of a public API: a handler's panic answered
//!   500 inside the process's request metrics, then request ids and a span.
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
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::Route;
use axum::{Json, Router};
use prometheus::IntCounter;
use serde::Serialize;
use tower::layer::util::{Identity, Stack};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};
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
    let g = Guard { concurrency: bounds.concurrency, timeout: bounds.timeout };
    let r =
        router.layer(catch_panic()).layer(guard(g, |r: Refused| r)).layer(DefaultBodyLimit::max(bounds.max_body_bytes));
    traced(r)
}

/// The guard of request-handling routes (see [`guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// Requests processed at once; more are refused at once ([`Refused::Overloaded`]).
    pub concurrency: usize,
    /// Whole-request deadline ([`Refused::Timeout`]).
    pub timeout: Duration,
}

/// Why a [`guard`] answered instead of the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The request was still running at the deadline, in ms.
    Timeout { after_ms: u64 },
    /// The concurrency limit was reached.
    Overloaded,
    /// Any other failure of the guard's layers (none is known to happen).
    Failed(String),
}

impl Refused {
    fn of(e: BoxError, timeout_ms: u64) -> Refused {
        if e.is::<tower::timeout::error::Elapsed>() {
            Refused::Timeout { after_ms: timeout_ms }
        } else if e.is::<tower::load_shed::error::Overloaded>() {
            Refused::Overloaded
        } else {
            Refused::Failed(e.to_string())
        }
    }
}

/// What the internal servers answer ([`bounded`]): 503, `Retry-After: 1`.
impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (code, detail) = match self {
            Refused::Timeout { after_ms } => ("request_timeout", format!("request took longer than {after_ms} ms")),
            Refused::Overloaded => ("overloaded", "too many requests in flight".to_owned()),
            Refused::Failed(e) => ("internal", e),
        };
        ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, code, detail).retry_after(1).into_response()
    }
}

/// The layer of `g`: load shedding beyond `g.concurrency` requests (one
/// limit shared by every route the layer is applied to) and the deadline
/// `g.timeout`; `refuse` turns a [`Refused`] into the process's error answer.
/// Public APIs apply it with `Router::route_layer` to their request-handling
/// routes only, so health and metrics stay responsive under load.
#[allow(clippy::type_complexity)] // the layer stack, spelled out so both `layer` and `route_layer` accept it
pub fn guard<E, F>(
    g: Guard,
    refuse: F,
) -> ServiceBuilder<
    Stack<
        TimeoutLayer,
        Stack<
            GlobalConcurrencyLimitLayer,
            Stack<
                LoadShedLayer,
                Stack<
                    HandleErrorLayer<
                        impl FnOnce(BoxError) -> std::future::Ready<E> + Clone + Send + Sync + 'static,
                        (),
                    >,
                    Identity,
                >,
            >,
        >,
    >,
>
where
    E: IntoResponse + Send + 'static,
    F: Fn(Refused) -> E + Clone + Send + Sync + 'static,
{
    let timeout_ms = g.timeout.as_millis() as u64;
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| std::future::ready(refuse(Refused::of(e, timeout_ms)))))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(g.concurrency))
        .timeout(g.timeout)
}

/// The outer layers of a public API, around `app` (its routes, fallbacks and
/// state): a handler's panic answered 500 ([`catch_panic`]) inside `record`
/// (the process's request metrics, so the 500 is recorded like any other),
/// then request ids and a span around everything ([`traced`]).
pub fn api<L>(app: Router, record: L) -> Router
where
    L: Layer<Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Response: IntoResponse + 'static,
    <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    traced(app.layer(catch_panic()).layer(record))
}

/// The body of every error answer: `{"error": code, "detail": text}`, plus
/// the fields a process adds ([`ErrorReply::field`]).
#[derive(Debug, Serialize)]
struct ErrorJson {
    error: &'static str,
    detail: String,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// An API's error answer: a status, the JSON error body with a stable
/// machine-readable code and a human-readable detail, and `Retry-After` when
/// the client should come back. Each process maps its own error enum to one.
#[derive(Debug)]
pub struct ErrorReply {
    status: StatusCode,
    body: ErrorJson,
    retry_after_s: Option<u64>,
}

impl ErrorReply {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ErrorReply {
        ErrorReply {
            status,
            body: ErrorJson { error: code, detail: detail.into(), extra: serde_json::Map::new() },
            retry_after_s: None,
        }
    }

    /// Answers with `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> ErrorReply {
        self.retry_after_s = Some(seconds);
        self
    }

    /// Adds a field to the body beside `error` and `detail`.
    pub fn field(mut self, name: &str, value: serde_json::Value) -> ErrorReply {
        self.body.extra.insert(name.to_owned(), value);
        self
    }
}

impl IntoResponse for ErrorReply {
    /// Logs a server error, except a shed request: under overload one line
    /// per refusal would flood the log (the metrics count them).
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.body.error != "overloaded" {
            tracing::warn!(error = %self.body.detail, code = self.body.error, "request failed");
        }
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
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
        let detail = "internal error: the request handler failed (the server log has the details under this request's x-request-id)";
        let body = ErrorJson { error: "internal", detail: detail.to_owned(), extra: serde_json::Map::new() };
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

    #[tokio::test]
    async fn a_guarded_route_answers_the_process_error_and_other_routes_stay_open() {
        let g = Guard { concurrency: 4, timeout: Duration::from_millis(50) };
        let refuse = |r: Refused| match r {
            Refused::Timeout { after_ms } => {
                ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "slow", format!("{after_ms}")).retry_after(7)
            }
            other => ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "other", format!("{other:?}")),
        };
        let slow = || async { tokio::time::sleep(Duration::from_secs(5)).await };
        let app = Router::new()
            .route("/guarded", get(slow))
            .route_layer(guard(g, refuse))
            .route("/open", get(|| async { tokio::time::sleep(Duration::from_millis(100)).await }));
        let resp = app.clone().oneshot(Request::get("/guarded").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(
            (resp.status(), resp.headers()["retry-after"].to_str().unwrap()),
            (StatusCode::SERVICE_UNAVAILABLE, "7")
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"slow","detail":"50"}"#);
        let open = app.oneshot(Request::get("/open").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "outside the guard: no deadline");
        let extra =
            ErrorReply::new(StatusCode::CONFLICT, "c", "d").field("persisted", serde_json::json!([1])).into_response();
        let body = axum::body::to_bytes(extra.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"c","detail":"d","persisted":[1]}"#);
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
