//! `docs/openapi/ingest.json` is what `GET /openapi.json` serves;
//! `RECSYS_BLESS=1 cargo test -p ingest --test openapi` rewrites it.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

#[tokio::test]
async fn the_committed_document_is_the_served_one() {
    // Building the router connects nowhere; no request here produces.
    let settings = ingest::Settings::default();
    let producer = ingest::kafka::producer(&settings).unwrap();
    let app = ingest::http::router(&settings, producer, ingest::Metrics::new().unwrap());
    let resp = app.oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(doc["paths"]["/v1/events"]["post"]["responses"]["422"].is_object(), "{served}");

    testkit::golden::assert_file_matches(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/ingest.json"),
        &served,
        "RECSYS_BLESS=1 cargo test -p ingest --test openapi",
    );
}
