//! `GET /v1/items/{item_id}/similar`: an item's nearest items, as the trainer
//! published them (`similar:{item}`, one GET). Serving computes nothing from
//! the factors (docs/design.md §8):
//! - the item must be known to the served model (404 otherwise, no Redis
//!   read); items the served model marks unavailable are left out;
//! - no list yet (a publication still under way, or one that failed): 503
//!   `similar_not_ready` with `Retry-After`, as while neighbours used to be
//!   computed;
//! - a list of another model version than the served one (the trainer moves
//!   `CURRENT` before it rewrites the lists) is answered as it is, under its
//!   own `model_version`, like a cached `recs:{user}`: refusing it would turn
//!   every model swap into a window of errors, and the impression then names
//!   the model the list came from;
//! - `category=` and `exclude=` filter the list (no other list tops it up: an
//!   item's neighbours are the trainer's, nothing else is similar).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use schemas::{ItemId, Source};
use serde::Serialize;
use utoipa::ToSchema;

use super::{impression, unavailable, ScoredItem};
use crate::cached::CachedList;
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, path_item, query_user, Filters};
use crate::state::AppState;

/// `GET /v1/items/{item_id}/similar`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct SimilarResponse {
    pub item_id: String,
    pub rec_id: String,
    /// The model the list was computed with (the served one, or for a moment
    /// after a swap the one before it).
    pub model_version: String,
    /// Cosine similarity of item factors.
    pub items: Vec<ScoredItem>,
}

#[utoipa::path(
    get,
    path = "/v1/items/{item_id}/similar",
    params(
        ("item_id" = String, Path, description = "1–64 characters [A-Za-z0-9._:-]"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=100 (at most the trainer's `publish.similar_size`)"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
        ("category" = Option<u64>, Query, description = "A category id: only items of this category or of its subcategories (the served model's tree). A category the served model does not know is 404 category_not_found"),
        ("exclude" = Option<String>, Query, description = "Item ids to leave out (e.g. the cart, or what the page already shows): comma-separated, also over several exclude=; at most 100 ids, each 1–64 characters [A-Za-z0-9._:-]"),
    ),
    responses(
        (status = 200, description = "Nearest items by cosine of item factors, as the trainer published them (`similar:{item}`), minus items the served model marks unavailable and what the filters leave out (the published list only: a filtered answer may hold fewer than k)", body = SimilarResponse),
        (status = 400, description = "Invalid item_id, k, category or exclude", body = ErrorBody),
        (status = 404, description = "Item or category unknown to the served model", body = ErrorBody),
        (status = 500, description = "The published list is unreadable", body = ErrorBody),
        (status = 503, description = "No model; no list published for the item yet (similar_not_ready, Retry-After); Redis unavailable", body = ErrorBody),
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
    let filters = Filters::parse(&q)?;
    let cat = s.catalog.current().ok_or(ApiError::ModelUnavailable)?;
    filters.check(Some(&cat))?;
    if cat.row(item.as_str()).is_none() {
        return Err(ApiError::ItemNotFound(item.into_string()));
    }
    let mut conn = s.redis.clone();
    let mut get = redis::cmd("GET");
    get.arg(s.keys.similar(&item));
    let bytes = match tokio::time::timeout(s.cfg.redis_timeout(), get.query_async::<Option<Vec<u8>>>(&mut conn)).await {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => {
            return Err(ApiError::SimilarNotReady { item: item.into_string(), model: cat.version.to_string() })
        }
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["similar"]).inc();
            return Err(ApiError::RedisUnavailable(e.to_string()));
        }
        Err(_) => {
            s.metrics.redis_errors.with_label_values(&["similar"]).inc();
            return Err(ApiError::RedisUnavailable(format!("no answer within {} ms", s.cfg.redis_timeout_ms)));
        }
    };
    let view = s.live_catalog.view();
    let live = Some(&*view);
    let keep = |id: &str| !unavailable(Some(&cat), live, id) && filters.admits(Some(&cat), live, id);
    let list = CachedList::parse(&bytes, k, &keep).map_err(|e| {
        s.metrics.redis_errors.with_label_values(&["bad_list"]).inc();
        ApiError::Internal(format!("the similar list of item {item} is unreadable: {e}"))
    })?;
    let items: Vec<ScoredItem> = list
        .items
        .iter()
        .filter_map(|r| Some(ScoredItem { item_id: ItemId::parse(r.item_id).ok()?, score: r.score }))
        .collect();
    let rec_id = s.rec_id();
    impression(s, user, "similar", &rec_id, &items, &list.model, Source::Similar);
    Ok(Json(SimilarResponse {
        item_id: item.into_string(),
        rec_id: rec_id.into_string(),
        model_version: list.model.to_string(),
        items,
    }))
}
