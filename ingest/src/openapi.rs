//! The OpenAPI document of `GET /openapi.json`, generated from the handlers'
//! annotations; `docs/openapi/ingest.json` is a copy that a test keeps equal.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::http::{self, IngestResponse, Rejected};

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "recsys-ingest", description = "Storefront events into the event log (docs/design.md §3, §8)"),
    paths(http::post_events, http::health, http::render_metrics, openapi_json),
    components(schemas(IngestResponse, Rejected, ErrorBody))
)]
pub struct ApiDoc;

/// The document as served: pretty JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
/// This OpenAPI document.
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}
