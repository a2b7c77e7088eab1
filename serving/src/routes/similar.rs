//! `GET /v1/items/{item_id}/similar`: an item's nearest items.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use schemas::Source;
use serde::Serialize;
use utoipa::ToSchema;

use super::{impression, ScoredItem};
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, path_item, query_user};
use crate::state::AppState;

/// `GET /v1/items/{item_id}/similar`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct SimilarResponse {
    pub item_id: String,
    pub rec_id: String,
    pub model_version: String,
    /// Cosine similarity of item factors.
    pub items: Vec<ScoredItem>,
}

#[utoipa::path(
    get,
    path = "/v1/items/{item_id}/similar",
    params(
        ("item_id" = String, Path, description = "1–64 characters [A-Za-z0-9._:-]"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=100"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
    ),
    responses(
        (status = 200, description = "Nearest items by cosine of item factors", body = SimilarResponse),
        (status = 400, description = "Invalid item_id or k", body = ErrorBody),
        (status = 404, description = "Item unknown to the served model", body = ErrorBody),
        (status = 503, description = "No model, or its neighbours are still being computed", body = ErrorBody),
    )
)]
/// The items nearest to an item.
pub async fn similar(
    State(s): State<AppState>,
    item: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<SimilarResponse>, ApiError> {
    let s = &s.inner;
    let item = path_item(item)?;
    let k = parse_k(&q, s.cfg.default_k)?;
    let user = query_user(&q)?;
    let cat = s.catalog.current().ok_or(ApiError::ModelUnavailable)?;
    let row = cat.row(item.as_str()).ok_or_else(|| ApiError::ItemNotFound(item.to_string()))?;
    let lists = cat.similar.get().ok_or_else(|| ApiError::SimilarNotReady(cat.version.to_string()))?;
    let items: Vec<ScoredItem> = lists[row as usize]
        .iter()
        .take(k)
        .map(|sc| ScoredItem { item_id: cat.items[sc.item as usize].clone(), score: sc.score })
        .collect();
    let rec_id = s.rec_id();
    impression(s, user, "similar", &rec_id, &items, &cat.version, Source::Similar);
    Ok(Json(SimilarResponse {
        item_id: item.into_string(),
        rec_id: rec_id.into_string(),
        model_version: cat.version.to_string(),
        items,
    }))
}
