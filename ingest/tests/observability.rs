//! What an operator sees of a request: its id (kept from the client or made
//! here, echoed in the response) and, when a handler panics, a 500 with the
//! API's JSON error body, counted in `/metrics`, while the server keeps
//! answering. The panicking handler exists only in this test's router.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get as route_get;
use axum::Router;
use ingest::config::Settings;
use ingest::http::AppState;
use ingest::Metrics;
use serde_json::Value;
use tower::ServiceExt;

fn app(extra: Router<AppState>) -> Router {
    let mut settings = Settings::default();
    settings.kafka.brokers = format!("127.0.0.1:{}", common::closed_port());
    let producer = ingest::kafka::producer(&settings).unwrap();
    ingest::http::router_with_routes(&settings, producer, Metrics::new().unwrap(), extra)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn panics(metrics_text: &str) -> f64 {
    metrics_text.lines().find_map(|l| l.strip_prefix("recsys_http_panics_total ")).unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_id_is_kept() {
    let app = app(Router::new());
    let (_, a, _) = send(&app, get("/health")).await;
    let (_, b, _) = send(&app, get("/nope")).await;
    assert!(!a["x-request-id"].is_empty() && a["x-request-id"] != b["x-request-id"]);
    let (_, mine, _) =
        send(&app, Request::get("/health").header("x-request-id", "pos-7").body(Body::empty()).unwrap()).await;
    assert_eq!(mine["x-request-id"], "pos-7");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_is_counted_and_the_server_keeps_serving() {
    let boom: Router<AppState> = Router::new().route(
        "/test/boom",
        route_get(|| async {
            panic!("injected by the test");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let app = app(boom);
    let before = panics(&send(&app, get("/metrics")).await.2);
    let (status, headers, body) = send(&app, get("/test/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "internal", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("x-request-id"), "{body}");
    assert!(headers.contains_key("x-request-id"));
    let (_, _, text) = send(&app, get("/metrics")).await;
    assert!(panics(&text) >= before + 1.0, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("recsys_ingest_http_request_duration_seconds_count{")
            && l.contains("route=\"/test/boom\"")
            && l.contains("status=\"500\"")),
        "{text}"
    );
    assert_eq!(send(&app, get("/health")).await.0, StatusCode::OK, "still serving");
}
