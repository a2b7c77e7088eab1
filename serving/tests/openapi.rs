//! `docs/openapi/serving.json` is what `GET /openapi.json` serves;
//! `RECSYS_BLESS=1 cargo test -p serving --test openapi` rewrites it.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;

use axum::http::StatusCode;

#[tokio::test]
async fn the_committed_document_is_the_served_one() {
    // The route's own handler: the document needs no Redis and no model.
    let resp = serving::openapi::openapi_json().await;
    assert_eq!(resp.status(), StatusCode::OK);
    let served = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(doc["paths"]["/v1/recommendations/{user_id}"]["get"].is_object(), "{served}");

    testkit::golden::assert_file_matches(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/serving.json"),
        &served,
        "RECSYS_BLESS=1 cargo test -p serving --test openapi",
    );
}
