//! The HTTP API: `POST /v1/events`, `GET /health`, `GET /metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::http::Guard;
use rdkafka::producer::{FutureProducer, Producer};
use schemas::{DeadLetter, DeadLetterSource, Event, EventError, EventLimits};
use serde::Serialize;

use crate::config::Settings;
use crate::error::ApiError;
use crate::kafka::{self, OutRecord};
use crate::metrics::{reason_class, Metrics};

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer,
    events_topic: String,
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

/// The 200 answer: every accepted event is in Kafka, every rejected one in the DLQ.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct IngestResponse {
    pub accepted: usize,
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
            dlq_topic: settings.kafka.topic(schemas::topics::EVENTS_DLQ),
            limits: ingest.limits(),
            max_batch: ingest.max_batch,
            message_timeout: std::time::Duration::from_millis(ingest.message_timeout_ms),
            metrics: metrics.clone(),
            stuck,
        }),
    };
    let guard = Guard { concurrency: ingest.concurrency_limit, timeout: ingest.request_timeout() };
    let app = Router::new()
        .route("/v1/events", post(post_events).layer(common::http::guard(guard, ApiError::from)))
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(ingest.max_body_bytes))
        .with_state(state);
    common::http::api(app, middleware::from_fn_with_state(metrics, track))
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

/// `ok`, or 503 once the producer can no longer produce: a fatal error of the
/// idempotent producer (librdkafka then refuses everything, to keep the log's
/// order and uniqueness) or a stuck one (see [`kafka::StuckDetector`]). The
/// process must be replaced; [`crate::run`] exits too.
async fn health(State(s): State<AppState>) -> Response {
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

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.inner.metrics.render())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// `application/json`, or any `application/…+json`, with optional parameters.
fn is_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no Content-Type".into()));
    };
    let text = v.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!("{:?}", text.chars().take(100).collect::<String>())))
    }
}

/// `POST /v1/events`: one event object or an array of them.
async fn post_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResponse>, ApiError> {
    is_json(&headers)?;
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(r.body_text())
        } else {
            ApiError::BadBody(r.body_text())
        }
    })?;
    let s = &s.inner;
    let now = schemas::now_ms();
    // schemas owns the rules: one result per element, with its original text.
    let items = Event::parse_json_batch(&bytes, now, &s.limits).map_err(|e| match e {
        EventError::Json(msg) => ApiError::InvalidJson(msg),
        other => ApiError::InvalidJson(other.to_string()),
    })?;
    if items.len() > s.max_batch {
        return Err(ApiError::BatchTooLarge { len: items.len(), max: s.max_batch });
    }

    let mut events: Vec<(Event, Vec<u8>)> = Vec::with_capacity(items.len());
    // The request index of each accepted event, to name the persisted ones
    // when only part of a request reaches the log.
    let mut event_index: Vec<usize> = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut dead: Vec<Vec<u8>> = Vec::new();
    let mut classes = Vec::new();
    for item in items {
        match item.result {
            Ok(e) => {
                let payload = e.to_json();
                events.push((e, payload));
                event_index.push(item.index);
            }
            Err(err) => {
                let reason = err.to_string();
                dead.push(DeadLetter::new(reason.clone(), DeadLetterSource::Http, now, item.raw.as_bytes()).to_json());
                classes.push(reason_class(&err));
                rejected.push(Rejected { index: item.index, reason });
            }
        }
    }
    let mut records: Vec<OutRecord<'_>> = events
        .iter()
        .map(|(e, payload)| OutRecord { topic: &s.events_topic, key: Some(e.key()), payload: payload.clone() })
        .collect();
    records.extend(dead.into_iter().map(|payload| OutRecord { topic: &s.dlq_topic, key: None, payload }));

    let metrics = &s.metrics;
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
        let persisted: Vec<usize> =
            event_index.iter().zip(&e.acked).filter(|(_, &ok)| ok).map(|(&index, _)| index).collect();
        if persisted.is_empty() {
            ApiError::KafkaUnavailable(e.to_string())
        } else {
            metrics.events_accepted.with_label_values(&["http"]).inc_by(persisted.len() as u64);
            ApiError::KafkaPartial { detail: e.to_string(), persisted }
        }
    })?;

    if !records.is_empty() {
        stuck.acknowledged();
    }
    metrics.events_accepted.with_label_values(&["http"]).inc_by(events.len() as u64);
    for c in classes {
        metrics.events_rejected.with_label_values(&["http", c]).inc();
    }
    Ok(Json(IngestResponse { accepted: events.len(), rejected }))
}
