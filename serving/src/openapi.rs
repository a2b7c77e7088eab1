//! The OpenAPI document of `GET /openapi.json`, generated from the handlers'
//! annotations.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::routes::ops::{self, ReadyResponse, ReloadResponse};
use crate::routes::popular::{self, PopularResponse};
use crate::routes::recs::{self, RecommendationsResponse};
use crate::routes::similar::{self, SimilarResponse};
use crate::routes::stats::{self, ArmStats, Comparison, StatsResponse};
use crate::routes::ScoredItem;
use crate::stats::Interval;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "recsys-serving", description = "Real-time recommendations over Redis (docs/design.md §7–8)"),
    paths(
        recs::recommendations,
        similar::similar,
        popular::popular,
        stats::stats,
        ops::health,
        ops::ready,
        ops::render_metrics,
        ops::admin_reload
    ),
    modifiers(&BearerAuth),
    components(schemas(
        ReloadResponse,
        RecommendationsResponse,
        SimilarResponse,
        PopularResponse,
        StatsResponse,
        ArmStats,
        Comparison,
        Interval,
        ScoredItem,
        ReadyResponse,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the admin routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc =
        DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}
