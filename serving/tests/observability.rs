//! What an operator sees of a request: its id (kept from the client or made
//! here, echoed in the response) and, when a handler panics, a 500 with the
//! API's JSON error body, counted in `/metrics`, while the server keeps
//! answering. The panicking handler exists only in this test's router.

#![allow(clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get as route_get;
use axum::Router;
use serving::http::{router, router_with_routes, AppState};
use support::*;

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_id_is_kept() {
    let s = settings(&format!("redis://127.0.0.1:{}", closed_port()));
    let (state, _) = state(&s, None);
    let app = router(state);
    let a = get(&app, "/health").await;
    let b = get(&app, "/no/such/route").await;
    let (ida, idb) = (&a.headers["x-request-id"], &b.headers["x-request-id"]);
    assert!(!ida.is_empty() && ida != idb, "{ida:?} {idb:?}");
    let mine =
        send(&app, Request::get("/health").header("x-request-id", "shop-abc-1").body(Body::empty()).unwrap()).await;
    assert_eq!(mine.headers["x-request-id"], "shop-abc-1");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_is_counted_and_the_server_keeps_serving() {
    let s = settings(&format!("redis://127.0.0.1:{}", closed_port()));
    let (state, _) = state(&s, None);
    let boom: Router<AppState> = Router::new().route(
        "/test/boom",
        route_get(|| async {
            panic!("injected by the test");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let app = router_with_routes(state, boom);
    let panics = |text: &str| metric(text, "recsys_http_panics_total ");
    let before = panics(get(&app, "/metrics").await.body.as_str().unwrap());

    let g = get(&app, "/test/boom").await;
    assert_error(&g, StatusCode::INTERNAL_SERVER_ERROR, "internal", "x-request-id");
    assert!(!g.body["detail"].as_str().unwrap().contains("injected"), "the panic text stays in the log");
    assert!(g.headers.contains_key("x-request-id"));

    let text = get(&app, "/metrics").await;
    let text = text.body.as_str().unwrap();
    assert!(panics(text) >= before + 1.0, "counted: {text}");
    // Recorded under its route like any answer.
    assert!(
        text.lines().any(|l| l.starts_with("recsys_serving_http_requests_total{")
            && l.contains("route=\"/test/boom\"")
            && l.contains("status=\"500\"")),
        "{text}"
    );
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK, "still serving");
}
