//! `GET /v1/popular`: the model's popular list (overall or of a category) or
//! a live ranking (docs/day-one.md).

use axum::extract::{RawQuery, State};
use axum::Json;
use rustc_hash::FxHashSet;
use schemas::Source;
use serde::Serialize;
use utoipa::ToSchema;

use super::{available, impression, ScoredItem};
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, query_category, query_param, query_user, shorten};
use crate::state::AppState;

/// `GET /v1/popular`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct PopularResponse {
    pub rec_id: String,
    /// The model the list belongs to; `live-popular` for a live ranking.
    pub model_version: String,
    /// Where the list came from: `model` (the trained model's popular list) or
    /// the name of a live ranking (e.g. `1h`, `24h`).
    pub window: String,
    pub category: Option<u64>,
    /// A live ranking's scores are decayed event counts (weighted by kind).
    pub items: Vec<ScoredItem>,
}

#[utoipa::path(
    get,
    path = "/v1/popular",
    params(
        ("k" = Option<u32>, Query, description = "How many items, 1..=100"),
        ("category" = Option<u64>, Query, description = "A category id (the model's lists only); absent = all items"),
        ("window" = Option<String>, Query, description = "`model`: the trained model's popular list; a live ranking's name from `[popularity] windows` (`1h`, `24h` by default): what is trending, as decayed event counts. Absent: the model's list, or while no model exists the live ranking of `[popularity] fallback_window`"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
    ),
    responses(
        (status = 200, description = "Popular items: the model's (Redis's list when present, else the served model's) or a live ranking's (model_version `live-popular`)", body = PopularResponse),
        (status = 400, description = "Invalid k, category or window (the detail lists the valid windows), or a category with a live window", body = ErrorBody),
        (status = 404, description = "No list for this category", body = ErrorBody),
        (status = 503, description = "No such list yet: no model (window=model or a category), or no event in the live ranking", body = ErrorBody),
    )
)]
/// Popular items, overall or in one category; trending items of a live window.
pub async fn popular(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<PopularResponse>, ApiError> {
    let s = &s.inner;
    let k = parse_k(&q, s.cfg.default_k)?;
    let user = query_user(&q)?;
    let category = query_category(&q)?;
    let window = match query_param(&q, "window") {
        None => None,
        Some(w) if w == schemas::popularity::MODEL_WINDOW => Some(None),
        Some(w) => match s.popularity.window(&w) {
            Some(w) => Some(Some(w.as_str())),
            None => {
                let mut valid = vec![schemas::popularity::MODEL_WINDOW];
                valid.extend(s.popularity.window_names());
                return Err(ApiError::InvalidParameter(
                    "window",
                    format!("unknown window {:?}; valid: {}", shorten(&w), valid.join(", ")),
                ));
            }
        },
    };
    let cat = s.catalog.current();
    let list = match (category, window) {
        (Some(_), Some(Some(w))) => {
            return Err(ApiError::InvalidParameter(
                "category",
                format!("live rankings cover all items; category needs window=model or no window, not {w:?}"),
            ))
        }
        (None, Some(Some(w))) => s.live_list(w).ok_or_else(|| ApiError::PopularNotReady(w.to_owned()))?,
        (None, Some(None)) => s.model_popular(cat.as_deref()).ok_or(ApiError::ModelUnavailable)?,
        (None, None) => s.popular(cat.as_deref()).ok_or(ApiError::NoPopularList)?,
        (Some(c), _) => match s.popular_of(cat.as_deref(), c) {
            Some(l) => l,
            None if cat.is_none() && s.overrides.load().global.is_none() => return Err(ApiError::ModelUnavailable),
            None => return Err(ApiError::CategoryNotFound(c)),
        },
    };
    let items = available(cat.as_deref(), &list.items, &FxHashSet::default(), k);
    let window = match window {
        Some(Some(w)) => w,
        _ if list.model.as_str() == schemas::LIVE_POPULAR_VERSION => s.popularity.fallback_window.as_str(),
        _ => schemas::popularity::MODEL_WINDOW,
    };
    let rec_id = s.rec_id();
    impression(s, user, "popular", &rec_id, &items, &list.model, Source::Popular);
    Ok(Json(PopularResponse {
        rec_id: rec_id.into_string(),
        model_version: list.model.to_string(),
        window: window.to_owned(),
        category,
        items,
    }))
}
