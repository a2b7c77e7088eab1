//! `GET /v1/popular`: the model's popular list (overall or of a category's
//! subtree, topped up from the overall one) or a live ranking (docs/day-one.md),
//! which a `category=` filters through the served model's tree.

use axum::extract::{RawQuery, State};
use axum::Json;
use schemas::Source;
use serde::Serialize;
use utoipa::ToSchema;

use super::{category_list, impression, Fill, ScoredItem};
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, query_param, query_user, shorten, Filters};
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
        ("category" = Option<u64>, Query, description = "A category id: its popular items and its subcategories' (a leaf category: its own list, Redis popular:cat:{c} when present; a category with subcategories: the served model's popularity over the subtree), topped up from the model's global list within the subtree. With a live window: the ranking's items of the subtree, as the served model places them, not topped up. Needs a served model (503 model_unavailable); one it does not know is 404 category_not_found; absent = all items"),
        ("exclude" = Option<String>, Query, description = "Item ids to leave out (e.g. the cart, or what the page already shows): comma-separated, also over several exclude=; at most 100 ids, each 1–64 characters [A-Za-z0-9._:-]"),
        ("window" = Option<String>, Query, description = "`model`: the trained model's popular list; a live ranking's name from `[popularity] windows` (`1h`, `24h` by default): what is trending, as decayed event counts. Absent: the model's list, or while no model exists the live ranking of `[popularity] fallback_window`"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
    ),
    responses(
        (status = 200, description = "Popular items: the model's (Redis's list when present, else the served model's) or a live ranking's (model_version `live-popular`)", body = PopularResponse),
        (status = 400, description = "Invalid k, category, exclude or window (the detail lists the valid windows)", body = ErrorBody),
        (status = 404, description = "A category unknown to the served model (a known one answers 200, possibly with fewer than k items)", body = ErrorBody),
        (status = 503, description = "No such list yet: no model (window=model or a category), or no event in the live ranking", body = ErrorBody),
    )
)]
/// Popular items, overall or in one category; trending items of a live window.
pub async fn popular(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<PopularResponse>, ApiError> {
    let s = &s.inner;
    let k = parse_k(&q, s.cfg.default_k)?;
    let user = query_user(&q)?;
    let filters = Filters::parse(&q)?;
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
    let cat = cat.as_deref();
    filters.check(cat)?;
    let view = s.live_catalog.view();
    let live = Some(&*view);
    let keep = |id: &str| filters.admits(cat, live, id);
    let mut fill = Fill::new(k, cat, live, &keep);
    let fallback = match (filters.category, window, cat) {
        // A live ranking holds what had events, whatever its category: under
        // a category it is filtered by the served model's tree, never padded
        // with the model's lists (they are not trending).
        (_, Some(Some(w)), _) => {
            let l = s.live_list(w).ok_or_else(|| ApiError::PopularNotReady(w.to_owned()))?;
            fill.extend(Source::Popular, &l.model, &l.items);
            l.model
        }
        (Some(c), _, Some(cat)) => {
            if let Some(l) = category_list(s, cat, c) {
                fill.extend(Source::Popular, &l.model, &l.items);
            }
            if let Some(p) = s.model_popular(Some(cat)).filter(|_| !fill.full()) {
                fill.extend(Source::Popular, &p.model, &p.items);
            }
            cat.version.clone()
        }
        (None, Some(None), _) => {
            let l = s.model_popular(cat).ok_or(ApiError::ModelUnavailable)?;
            fill.extend(Source::Popular, &l.model, &l.items);
            l.model
        }
        (None, None, _) => {
            let l = s.popular(cat).ok_or(ApiError::NoPopularList)?;
            fill.extend(Source::Popular, &l.model, &l.items);
            l.model
        }
        // Filters::check refused a category without a served model.
        (Some(_), _, None) => return Err(ApiError::ModelUnavailable),
    };
    let model = fill.first.take().map_or(fallback, |(_, m)| m);
    let items = fill.items;
    let window = match window {
        Some(Some(w)) => w,
        _ if model.as_str() == schemas::LIVE_POPULAR_VERSION => s.popularity.fallback_window.as_str(),
        _ => schemas::popularity::MODEL_WINDOW,
    };
    let rec_id = s.rec_id();
    impression(s, user, "popular", &rec_id, &items, &model, Source::Popular);
    Ok(Json(PopularResponse {
        rec_id: rec_id.into_string(),
        model_version: model.to_string(),
        window: window.to_owned(),
        category: filters.category,
        items,
    }))
}
