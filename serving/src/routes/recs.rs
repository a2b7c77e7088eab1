//! `GET /v1/recommendations/{user_id}`: the user's sticky A/B arm, then the
//! cached list → category popular → popular chain (docs/design.md §8), from
//! memory when Redis fails.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{HistEntry, ItemId, ModelVersion, RecItem, Source, UserId, Variant};
use serde::Serialize;
use utoipa::ToSchema;

use super::{available, publish_impression, unavailable, variant_of, ScoredItem, SourceLabel};
use crate::cached::CachedList;
use crate::catalog::Catalog;
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, path_user};
use crate::state::{AppState, Inner, PopList};

/// `GET /v1/recommendations/{user_id}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct RecommendationsResponse {
    pub user_id: String,
    /// Echo it on the events that follow (attribution).
    pub rec_id: String,
    /// A/B arm: `als` (treatment) or `popular` (control).
    pub variant: String,
    /// The model the list comes from; `live-popular` for a live popularity
    /// ranking (before the first model).
    pub model_version: String,
    /// `personal`, `category_popular` or `popular`.
    pub source: String,
    /// True when Redis failed and the list came from memory.
    pub degraded: bool,
    pub items: Vec<ScoredItem>,
}

/// Where a recommendation came from, and its list.
struct Answer {
    source: Source,
    model: ModelVersion,
    items: Vec<ScoredItem>,
    degraded: bool,
}

#[utoipa::path(
    get,
    path = "/v1/recommendations/{user_id}",
    params(
        ("user_id" = String, Path, description = "1–64 characters [A-Za-z0-9._:-]"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=100 (default serving.default_k)"),
    ),
    responses(
        (status = 200, description = "The user's list (personal, category_popular or popular; degraded when Redis failed). Before the first model, and for a user without a model list while no model popular list exists, popular answers come from the live ranking of `[popularity] fallback_window` with model_version `live-popular`", body = RecommendationsResponse),
        (status = 400, description = "Invalid user_id or k", body = ErrorBody),
        (status = 503, description = "Nothing to answer with: no model and no live popularity ranking yet; overloaded (Retry-After) or timed out", body = ErrorBody),
    )
)]
/// A user's recommendations.
pub async fn recommendations(
    State(s): State<AppState>,
    user: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let s = &s.inner;
    let user = path_user(user)?;
    let k = parse_k(&q, s.cfg.default_k)?;
    let variant = variant_of(&s.cfg.ab_salt, user.as_str(), s.cfg.treatment_percent);
    let cat = s.catalog.current();
    let answer = match variant {
        Variant::Popular => popular_answer(s, cat.as_deref(), k, false, &FxHashSet::default())?,
        Variant::Als => treatment(s, cat.as_deref(), &user, k).await?,
    };
    let m = &s.metrics;
    m.recommendations.with_label_values(&[variant.as_str(), answer.source.as_str()]).inc();
    let rec_id = s.rec_id();
    publish_impression(s, user.clone(), variant, &rec_id, &answer.items, &answer.model, answer.source);
    let body = RecommendationsResponse {
        user_id: user.into_string(),
        rec_id: rec_id.into_string(),
        variant: variant.as_str().to_owned(),
        model_version: answer.model.to_string(),
        source: answer.source.as_str().to_owned(),
        degraded: answer.degraded,
        items: answer.items,
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(SourceLabel(answer.source.as_str()));
    Ok(resp)
}

/// The global popular list (the model's, or a live ranking while there is
/// none), without `exclude` (the user's purchases).
fn popular_answer(
    s: &Inner,
    cat: Option<&Catalog>,
    k: usize,
    degraded: bool,
    exclude: &FxHashSet<&str>,
) -> Result<Answer, ApiError> {
    let p = s.popular(cat).ok_or(ApiError::NoPopularList)?;
    let items = available(cat, &p.items, exclude, k);
    Ok(Answer { source: Source::Popular, model: p.model, items, degraded })
}

type Reply = (Option<Vec<u8>>, Vec<(String, String)>);

/// The treatment arm: cached list → category popular → global popular;
/// from memory when Redis fails.
async fn treatment(s: &Inner, cat: Option<&Catalog>, user: &UserId, k: usize) -> Result<Answer, ApiError> {
    let mut conn = s.redis.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(s.keys.recs(user)).cmd("HGETALL").arg(s.keys.hist(user));
    let reply: Reply = match tokio::time::timeout(s.cfg.redis_timeout(), pipe.query_async::<Reply>(&mut conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["recommendations"]).inc();
            s.metrics.degraded.with_label_values(&["error"]).inc();
            tracing::debug!(error = %e, "redis read failed; serving popular from memory");
            return popular_answer(s, cat, k, true, &FxHashSet::default());
        }
        Err(_) => {
            s.metrics.degraded.with_label_values(&["timeout"]).inc();
            return popular_answer(s, cat, k, true, &FxHashSet::default());
        }
    };
    let (recs, hist) = reply;
    let m = &s.metrics;
    let entries: Vec<(&str, HistEntry)> =
        hist.iter().filter_map(|(item, v)| HistEntry::parse(v).map(|e| (item.as_str(), e))).collect();
    let purchased: FxHashSet<&str> = entries.iter().filter(|(_, e)| e.purchased()).map(|(i, _)| *i).collect();

    if let Some(bytes) = recs {
        let keep = |id: &str| !purchased.contains(id) && !unavailable(cat, id);
        match CachedList::parse(&bytes, k, &keep) {
            Ok(list) => {
                m.cache_lookups.with_label_values(&["hit"]).inc();
                let items: Vec<ScoredItem> = list
                    .items
                    .iter()
                    .filter_map(|r| Some(ScoredItem { item_id: ItemId::parse(r.item_id).ok()?, score: r.score }))
                    .collect();
                if !items.is_empty() {
                    m.users.with_label_values(&["warm"]).inc();
                    return Ok(Answer { source: Source::Personal, model: list.model, items, degraded: false });
                }
            }
            Err(e) => {
                m.redis_errors.with_label_values(&["bad_list"]).inc();
                tracing::warn!(user = %user, error = %e, "unreadable cached list; falling back");
            }
        }
    } else {
        m.cache_lookups.with_label_values(&["miss"]).inc();
    }
    if entries.is_empty() {
        m.users.with_label_values(&["cold"]).inc();
        return popular_answer(s, cat, k, false, &purchased);
    }
    m.users.with_label_values(&["history"]).inc();
    match category_popular(s, cat, &entries, &purchased, k) {
        Some(a) => Ok(a),
        // No model categories (or no model yet): popular, minus the purchases.
        None => popular_answer(s, cat, k, false, &purchased),
    }
}

/// The popular items of the user's most-weighted categories, interleaved, then
/// global popular items to fill `k`; `None` when no category is known.
fn category_popular(
    s: &Inner,
    cat: Option<&Catalog>,
    entries: &[(&str, HistEntry)],
    purchased: &FxHashSet<&str>,
    k: usize,
) -> Option<Answer> {
    let c = cat?;
    let w = c.weights;
    let mut by_cat: FxHashMap<u64, f32> = FxHashMap::default();
    for (item, e) in entries {
        if let Some(category) = c.row(item).and_then(|r| c.category[r as usize]) {
            *by_cat.entry(category).or_default() += e.weighted(|kind| w.of(kind));
        }
    }
    let mut cats: Vec<(u64, f32)> = by_cat.into_iter().collect();
    cats.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cats.truncate(s.cfg.history_categories);
    let lists: Vec<PopList> = cats.iter().filter_map(|(id, _)| s.popular_of(Some(c), *id)).collect();
    let first = lists.first()?;
    let model = first.model.clone();
    let mut taken: FxHashSet<ItemId> = FxHashSet::default();
    let mut items = Vec::with_capacity(k);
    let mut cursors = vec![0usize; lists.len()];
    let mut push = |r: &RecItem, items: &mut Vec<ScoredItem>| {
        if !purchased.contains(r.item_id.as_str()) && taken.insert(r.item_id.clone()) {
            items.push(ScoredItem::from(r.clone()));
        }
    };
    // Round robin over the categories, best category first.
    while items.len() < k && lists.iter().zip(&cursors).any(|(l, &c)| c < l.items.len()) {
        for (l, cur) in lists.iter().zip(cursors.iter_mut()) {
            if items.len() >= k {
                break;
            }
            if let Some(r) = l.items.get(*cur) {
                *cur += 1;
                push(r, &mut items);
            }
        }
    }
    if items.len() < k {
        if let Some(p) = s.popular(Some(c)) {
            for r in p.items.iter() {
                if items.len() >= k {
                    break;
                }
                push(r, &mut items);
            }
        }
    }
    Some(Answer { source: Source::CategoryPopular, model, items, degraded: false })
}
