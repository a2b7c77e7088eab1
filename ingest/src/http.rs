//! The HTTP API: `POST /v1/events`, `PUT /v1/items/{id}`, `POST /v1/items`,
//! `GET /health`, `GET /metrics`, `GET /openapi.json`; CORS for the
//! configured origins (docs/design.md §8). Events and item updates go through
//! one batch path (`Record`): parse each element, produce the accepted ones
//! and dead-letter the rest, answer once Kafka acknowledged all of them.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use common::http::Guard;
use prometheus::IntCounterVec;
use rdkafka::producer::{FutureProducer, Producer};
use schemas::event::BatchItem;
use schemas::{DeadLetter, DeadLetterSource, Event, EventError, EventLimits, ItemId, ItemUpdate, ItemUpdateError};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::{OpenApi, ToSchema};

use crate::config::Settings;
use crate::error::{ApiError, ErrorBody};
use crate::kafka::{self, OutRecord};
use crate::metrics::Metrics;

/// The OpenAPI document of `GET /openapi.json`, generated from the handlers'
/// annotations; `docs/openapi/ingest.json` is a copy that a test keeps equal.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "recsys-ingest",
        description = "Storefront events into the event log, catalog changes into the item stream (docs/design.md §3, §8)"
    ),
    paths(post_events, put_item, post_items, health, render_metrics, openapi_json),
    components(schemas(IngestResponse, Rejected, ErrorBody))
)]
pub struct ApiDoc;

/// [`ApiDoc`] as served: pretty JSON, built once.
pub fn openapi_document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
/// This OpenAPI document.
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_document()).into_response()
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer,
    events_topic: String,
    items_topic: String,
    dlq_topic: String,
    limits: EventLimits,
    max_batch: usize,
    message_timeout: Duration,
    metrics: Metrics,
    stuck: Arc<kafka::StuckDetector>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("events_topic", &self.inner.events_topic).finish_non_exhaustive()
    }
}

/// One rejected item of a request.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct Rejected {
    /// The item's position in the request (0 for a single object).
    pub index: usize,
    /// Why, as a stable machine code (docs/design.md §3): `invalid_json`,
    /// `not_an_object`, `duplicate_field`, `unknown_field`, `missing_field`,
    /// `null_field`, `invalid_id`, `wrong_type`, `invalid_ts`; for events
    /// also `invalid_event_kind`, `invalid_revenue`,
    /// `transaction_field_on_non_transaction`; for item updates also
    /// `invalid_price`, `invalid_property`, `nothing_to_update`.
    pub code: String,
    /// Why, for people: names the field and the rule.
    pub reason: String,
}

/// The answer to a processed request: every accepted record (event or item
/// update) is in Kafka, every rejected one in the DLQ. 200 when something
/// was accepted (or nothing was sent), 422 when every item was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct IngestResponse {
    /// Records written to their topic (events to the event log, item updates
    /// to the item stream).
    pub accepted: usize,
    /// The rejected items, in request order; each is also dead-lettered.
    pub rejected: Vec<Rejected>,
}

/// The whole HTTP application. `/v1/events` gets the request timeout and the
/// concurrency limit (excess requests are shed with 503 at once, so clients
/// back off instead of queueing); `/health` and `/metrics` stay responsive.
pub fn router(settings: &Settings, producer: FutureProducer, metrics: Metrics) -> Router {
    let stuck = Arc::new(kafka::StuckDetector::new(Duration::from_millis(settings.ingest.stuck_after_ms)));
    router_with(settings, producer, metrics, stuck)
}

/// [`router`] reporting a stuck producer to `stuck` (which [`crate::run`] watches).
pub fn router_with(
    settings: &Settings,
    producer: FutureProducer,
    metrics: Metrics,
    stuck: Arc<kafka::StuckDetector>,
) -> Router {
    build(settings, producer, metrics, stuck, Router::new())
}

/// [`router`] with `extra` routes behind the same layers, for tests that need
/// a handler no production router has (one that panics); production code
/// passes none.
pub fn router_with_routes(
    settings: &Settings,
    producer: FutureProducer,
    metrics: Metrics,
    extra: Router<AppState>,
) -> Router {
    let stuck = Arc::new(kafka::StuckDetector::new(Duration::from_millis(settings.ingest.stuck_after_ms)));
    build(settings, producer, metrics, stuck, extra)
}

/// Every route; a request id and a span around everything, and a handler's
/// panic answered 500 inside the layer that records status codes.
fn build(
    settings: &Settings,
    producer: FutureProducer,
    metrics: Metrics,
    stuck: Arc<kafka::StuckDetector>,
    extra: Router<AppState>,
) -> Router {
    let ingest = &settings.ingest;
    let state = AppState {
        inner: Arc::new(Inner {
            producer,
            events_topic: settings.kafka.topic(schemas::topics::EVENTS),
            items_topic: settings.kafka.topic(schemas::topics::ITEMS),
            dlq_topic: settings.kafka.topic(schemas::topics::EVENTS_DLQ),
            limits: ingest.limits(),
            max_batch: ingest.max_batch,
            message_timeout: std::time::Duration::from_millis(ingest.message_timeout_ms),
            metrics: metrics.clone(),
            stuck,
        }),
    };
    let guard = Guard { concurrency: ingest.concurrency_limit, timeout: ingest.request_timeout() };
    let mut app = Router::new()
        .route("/v1/events", post(post_events).layer(common::http::guard(guard, ApiError::from)))
        .route("/v1/items", post(post_items).layer(common::http::guard(guard, ApiError::from)))
        .route("/v1/items/{id}", put(put_item).layer(common::http::guard(guard, ApiError::from)))
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(ingest.max_body_bytes));
    if let Some(cors) = cors(&ingest.cors_origins) {
        // Outside the routes, so a preflight (OPTIONS) is answered here
        // without a route of its own and without taking a request slot.
        app = app.layer(cors).layer(middleware::from_fn(only_for_allowed));
    }
    common::http::api(app.with_state(state), middleware::from_fn_with_state(metrics, track))
}

/// CORS for exactly `origins` (validated by the configuration): `POST` and
/// `PUT` with a JSON `Content-Type` (which browsers preflight); `None` when empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::POST, Method::PUT, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

/// tower-http's preflight answer names the allowed methods and headers to
/// any origin; an origin that is not allowed gets no CORS header at all, so
/// nothing suggests it could be.
async fn only_for_allowed(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        h.remove(header::ACCESS_CONTROL_ALLOW_METHODS);
        h.remove(header::ACCESS_CONTROL_ALLOW_HEADERS);
        h.remove(header::ACCESS_CONTROL_MAX_AGE);
    }
    resp
}

/// Records every response's latency under its route template (never a raw path).
async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    metrics
        .request_duration
        .with_label_values(&[method.as_str(), &route, resp.status().as_str()])
        .observe(start.elapsed().as_secs_f64());
    resp
}

// `ok`, or 503 once the producer can no longer produce: a fatal error of the
// idempotent producer (librdkafka then refuses everything, to keep the log's
// order and uniqueness) or a stuck one (see `kafka::StuckDetector`). The
// process must be replaced; `crate::run` exits too.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "The producer can produce: `{\"status\": \"ok\"}`"),
        (status = 503, description = "The producer can no longer produce; the process exits to be replaced"),
    )
)]
/// Alive and able to produce.
pub async fn health(State(s): State<AppState>) -> Response {
    let failed = match (s.inner.producer.client().fatal_error(), s.inner.stuck.stuck_for()) {
        (Some((code, reason)), _) => Some(format!("{code:?}: {reason}")),
        (None, Some(d)) => Some(format!("the broker has refused every message for {} s", d.as_secs())),
        (None, None) => None,
    };
    match failed {
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "failed", "error": error})))
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition")))]
/// Prometheus metrics.
pub async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.inner.metrics.render())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// `application/json`, any `application/…+json`, or `text/plain` (what
/// `navigator.sendBeacon` sends for a string body, which browsers post
/// without a preflight), with optional parameters; the body is JSON in each.
fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no Content-Type".into()));
    };
    let text = v.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!("{:?}", text.chars().take(100).collect::<String>())))
    }
}

#[utoipa::path(
    post,
    path = "/v1/events",
    request_body(
        description = "One event object or an array of them (docs/data-format.md); `text/plain` holding the same JSON is accepted for `navigator.sendBeacon`",
        content(("application/json"), ("text/plain")),
    ),
    responses(BatchAnswers)
)]
/// `POST /v1/events`: one event object or an array of them.
pub async fn post_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_batch::<Event>(&s.inner, &s.inner.events_topic, &headers, body).await
}

#[utoipa::path(
    post,
    path = "/v1/items",
    request_body(
        description = "One item update or an array of them (docs/data-format.md, schemas/json/item_update.schema.json); `text/plain` holding the same JSON is accepted",
        content(("application/json"), ("text/plain")),
    ),
    responses(BatchAnswers)
)]
/// `POST /v1/items`: one item update or an array of them, each naming its `item_id`.
pub async fn post_items(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    post_batch::<ItemUpdate>(&s.inner, &s.inner.items_topic, &headers, body).await
}

/// The answers of the batch routes (`POST /v1/events`, `POST /v1/items`),
/// for the OpenAPI document; the handlers answer through [`produce_batch`].
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // only described, never built
enum BatchAnswers {
    #[response(
        status = 200,
        description = "Processed; at least one record accepted (or an empty array): the accepted ones are in their topic (events in the event log, item updates on the item stream), each rejected item is listed with its code and dead-lettered"
    )]
    Processed(IngestResponse),
    #[response(
        status = 422,
        description = "Processed, every item rejected (listed with its code, each dead-lettered); nothing accepted"
    )]
    AllRejected(IngestResponse),
    #[response(status = 400, description = "`invalid_json`, `bad_request`: the body is not JSON; nothing processed")]
    NotJson(ErrorBody),
    #[response(status = 413, description = "`payload_too_large`, `batch_too_large`: nothing processed")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "`unsupported_media_type`: not JSON or text/plain")]
    MediaType(ErrorBody),
    #[response(
        status = 503,
        description = "`kafka_unavailable`, `kafka_partial` (its `persisted` lists the request indices written), `overloaded`, `request_timeout`: retry after `Retry-After`"
    )]
    Unavailable(ErrorBody),
}

/// A batch route: the body parsed by `T`'s rules (schemas owns them: one
/// result per element, with its original text), then [`produce_batch`].
async fn post_batch<T: Record>(
    s: &Inner,
    topic: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = json_body(headers, body)?;
    let now = schemas::now_ms();
    let items = T::parse_batch(&bytes, now, &s.limits).map_err(ApiError::InvalidJson)?;
    produce_batch(s, topic, items, now).await
}

#[utoipa::path(
    put,
    path = "/v1/items/{id}",
    params(("id" = String, Path, description = "The item id (1-64 characters of A-Z a-z 0-9 . _ : -)")),
    request_body(
        description = "One item update; `item_id` may be left out, and one given must equal `{id}`",
        content(("application/json"), ("text/plain")),
    ),
    responses(
        (status = 200, description = "Accepted: the update is on the item stream (`accepted` 1)", body = IngestResponse),
        (status = 422, description = "Rejected (listed with its code, dead-lettered); nothing accepted", body = IngestResponse),
        (status = 400, description = "`invalid_json`, `bad_request`: the body is not JSON; `invalid_id`: `{id}` is not an item id; `item_id_mismatch`: the body names another item; nothing processed", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: nothing processed", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not JSON or text/plain", body = ErrorBody),
        (status = 503, description = "`kafka_unavailable`, `overloaded`, `request_timeout`: retry after `Retry-After`", body = ErrorBody),
    )
)]
/// `PUT /v1/items/{id}`: one update of item `{id}`.
pub async fn put_item(
    State(s): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|r| ApiError::InvalidItemId(r.body_text()))?;
    let item = ItemId::parse(&id).map_err(|e| ApiError::InvalidItemId(format!("the item id in the URL: {e}")))?;
    let bytes = json_body(&headers, body)?;
    let s = &s.inner;
    let now = schemas::now_ms();
    let result = match ItemUpdate::parse_json_for(&bytes, Some(&item), now, &s.limits) {
        Err(ItemUpdateError::Json(msg)) => return Err(ApiError::InvalidJson(msg)),
        Err(e @ ItemUpdateError::ItemIdMismatch { .. }) => return Err(ApiError::ItemIdMismatch(e.to_string())),
        other => other,
    };
    // The body parsed as JSON, so it is UTF-8 (the lossy copy never replaces anything).
    let text = String::from_utf8_lossy(&bytes);
    produce_batch(s, &s.items_topic, vec![BatchItem { index: 0, raw: text.trim(), result }], now).await
}

/// The checked `Content-Type` and the body of a JSON request.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    is_json(headers)?;
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(r.body_text())
        } else {
            ApiError::BadBody(r.body_text())
        }
    })
}

/// What the batch path needs of a record type.
trait Record {
    type Error: std::fmt::Display;
    /// Its Kafka messages, key and canonical JSON each: one for an event,
    /// one per field for an item update (`ItemUpdate::records`).
    fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The stable code of a rejection (`Rejected::code`, the metric's label).
    fn code(e: &Self::Error) -> &'static str;
    /// Its accepted and rejected counters.
    fn counters(m: &Metrics) -> (&IntCounterVec, &IntCounterVec);
    /// A body of one record or an array of them, each parsed on its own;
    /// `Err` (the message) only when the body is not JSON at all.
    fn parse_batch<'a>(
        body: &'a [u8],
        now: i64,
        limits: &EventLimits,
    ) -> Result<Vec<BatchItem<'a, Self, Self::Error>>, String>
    where
        Self: Sized;
}

impl Record for Event {
    type Error = EventError;
    fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(self.key().to_vec(), self.to_json())]
    }
    fn code(e: &EventError) -> &'static str {
        e.code()
    }
    fn counters(m: &Metrics) -> (&IntCounterVec, &IntCounterVec) {
        (&m.events_accepted, &m.events_rejected)
    }
    fn parse_batch<'a>(body: &'a [u8], now: i64, limits: &EventLimits) -> Result<Vec<BatchItem<'a>>, String> {
        Event::parse_json_batch(body, now, limits).map_err(|e| match e {
            EventError::Json(msg) => msg,
            other => other.to_string(),
        })
    }
}

impl Record for ItemUpdate {
    type Error = ItemUpdateError;
    fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.records().into_iter().map(|(key, r)| (key.into_bytes(), r.to_json())).collect()
    }
    fn code(e: &ItemUpdateError) -> &'static str {
        e.code()
    }
    fn counters(m: &Metrics) -> (&IntCounterVec, &IntCounterVec) {
        (&m.items_accepted, &m.items_rejected)
    }
    fn parse_batch<'a>(
        body: &'a [u8],
        now: i64,
        limits: &EventLimits,
    ) -> Result<Vec<BatchItem<'a, Self, ItemUpdateError>>, String> {
        ItemUpdate::parse_json_batch(body, now, limits).map_err(|e| match e {
            ItemUpdateError::Json(msg) => msg,
            other => other.to_string(),
        })
    }
}

/// The batch path: each accepted record to `topic` under its key, each
/// rejected one to the DLQ with its reason, in request order; the answer
/// once Kafka acknowledged every message (see [`IngestResponse`]).
async fn produce_batch<T: Record>(
    s: &Inner,
    topic: &str,
    items: Vec<BatchItem<'_, T, T::Error>>,
    now: i64,
) -> Result<Response, ApiError> {
    if items.len() > s.max_batch {
        return Err(ApiError::BatchTooLarge { len: items.len(), max: s.max_batch });
    }
    // Each accepted record's messages (one or more, see Record::messages).
    let mut accepted: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::with_capacity(items.len());
    // The request index of each accepted record, to name the persisted ones
    // when only part of a request reaches the log.
    let mut accepted_index: Vec<usize> = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut dead: Vec<Vec<u8>> = Vec::new();
    let mut classes = Vec::new();
    for item in items {
        match item.result {
            Ok(r) => {
                accepted.push(r.messages());
                accepted_index.push(item.index);
            }
            Err(err) => {
                let reason = err.to_string();
                dead.push(DeadLetter::new(reason.clone(), DeadLetterSource::Http, now, item.raw.as_bytes()).to_json());
                let code = T::code(&err);
                classes.push(code);
                rejected.push(Rejected { index: item.index, code: code.to_owned(), reason });
            }
        }
    }
    let mut records: Vec<OutRecord<'_>> = accepted
        .iter()
        .flatten()
        .map(|(key, payload)| OutRecord { topic, key: Some(key), payload: payload.clone() })
        .collect();
    records.extend(dead.into_iter().map(|payload| OutRecord { topic: &s.dlq_topic, key: None, payload }));

    let metrics = &s.metrics;
    let (accepted_total, rejected_total) = T::counters(metrics);
    let stuck = &s.stuck;
    kafka::produce_all(&s.producer, &records, s.message_timeout, |topic, err| {
        metrics.produce_errors.with_label_values(&[topic, &kafka::error_label(err)]).inc();
        stuck.failed(err);
    })
    .await
    .map_err(|e| {
        if e.acked.iter().any(|&a| a) {
            stuck.acknowledged();
        }
        // A record is persisted when every one of its messages was
        // acknowledged; a retry of the others rewrites equal values.
        let mut acked = e.acked.iter();
        let persisted: Vec<usize> = accepted_index
            .iter()
            .zip(&accepted)
            .filter(|(_, msgs)| msgs.iter().fold(true, |all, _| acked.next().copied().unwrap_or(false) && all))
            .map(|(&index, _)| index)
            .collect();
        if persisted.is_empty() {
            ApiError::KafkaUnavailable(e.to_string())
        } else {
            accepted_total.with_label_values(&["http"]).inc_by(persisted.len() as u64);
            ApiError::KafkaPartial { detail: e.to_string(), persisted }
        }
    })?;

    if !records.is_empty() {
        stuck.acknowledged();
    }
    accepted_total.with_label_values(&["http"]).inc_by(accepted.len() as u64);
    for c in classes {
        rejected_total.with_label_values(&["http", c]).inc();
    }
    // Nothing accepted while something was rejected: a client that only
    // checks for success must notice (docs/design.md §10).
    let status =
        if accepted.is_empty() && !rejected.is_empty() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    Ok((status, Json(IngestResponse { accepted: accepted.len(), rejected })).into_response())
}
