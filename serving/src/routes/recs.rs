//! `GET /v1/recommendations/{user_id}`: the user's sticky A/B arm, then the
//! cached list → category popular → popular chain (docs/design.md §8), each
//! step topping up what the one before left short, from memory when Redis
//! fails. The page's filters (`category=`, `exclude=`) apply to every step.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{HistEntry, ItemId, ModelVersion, Source, UserId, Variant};
use serde::Serialize;
use utoipa::ToSchema;

use super::{category_list, publish_impression, variant_of, Fill, ScoredItem, SourceLabel};
use crate::cached::CachedList;
use crate::catalog::Catalog;
use crate::error::{ApiError, ErrorBody};
use crate::request::{parse_k, path_user, Filters};
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
        ("category" = Option<u64>, Query, description = "A category id: only items of this category or of its subcategories (the served model's tree); items the model does not know are left out. Needs a served model (503 model_unavailable without one); a category it does not know is 404 category_not_found"),
        ("exclude" = Option<String>, Query, description = "Item ids to leave out (e.g. the cart, or what the page already shows): comma-separated, also over several exclude=; at most 100 ids, each 1–64 characters [A-Za-z0-9._:-]"),
    ),
    responses(
        (status = 200, description = "The user's list (personal, category_popular or popular, named after the step its first item came from; each step of the chain tops up what the one before left short of k, within the filters; degraded when Redis failed). Before the first model, and for a user without a model list while no model popular list exists, popular answers come from the live ranking of `[popularity] fallback_window` with model_version `live-popular`", body = RecommendationsResponse),
        (status = 400, description = "Invalid user_id, k, category or exclude", body = ErrorBody),
        (status = 404, description = "A category unknown to the served model", body = ErrorBody),
        (status = 503, description = "Nothing to answer with: no model and no live popularity ranking yet, or a category without a served model; overloaded (Retry-After) or timed out", body = ErrorBody),
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
    let filters = Filters::parse(&q)?;
    let variant = variant_of(&s.cfg.ab_salt, user.as_str(), s.cfg.treatment_percent);
    let cat = s.catalog.current();
    filters.check(cat.as_deref())?;
    let answer = match variant {
        Variant::Popular => popular_answer(s, cat.as_deref(), k, false, &filters, &FxHashSet::default())?,
        Variant::Als => treatment(s, cat.as_deref(), &user, k, &filters).await?,
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

/// The end of every chain: the page's category list (with `category=`), then
/// the global popular list (the model's, or a live ranking while there is
/// none). The answer is named after the list its first item came from; an
/// empty one after the global list.
fn popular_tail(
    s: &Inner,
    cat: Option<&Catalog>,
    filters: &Filters,
    mut fill: Fill<'_>,
    degraded: bool,
) -> Result<Answer, ApiError> {
    if let (Some(c), Some(cat)) = (filters.category, cat) {
        if let Some(l) = category_list(s, cat, c).filter(|_| !fill.full()) {
            fill.extend(Source::CategoryPopular, &l.model, &l.items);
        }
    }
    let p = if fill.full() { None } else { s.popular(cat) };
    if let Some(p) = &p {
        fill.extend(Source::Popular, &p.model, &p.items);
    }
    let (source, model) = match (fill.first.take(), p) {
        (Some(first), _) => first,
        (None, Some(p)) => (Source::Popular, p.model),
        (None, None) => return Err(ApiError::NoPopularList),
    };
    Ok(Answer { source, model, items: fill.items, degraded })
}

/// The control arm, and the treatment arm without Redis: popular items (of
/// the page's category first), without `purchased`.
fn popular_answer(
    s: &Inner,
    cat: Option<&Catalog>,
    k: usize,
    degraded: bool,
    filters: &Filters,
    purchased: &FxHashSet<&str>,
) -> Result<Answer, ApiError> {
    let view = s.live_catalog.view();
    let live = Some(&*view);
    let keep = |id: &str| !purchased.contains(id) && filters.admits(cat, live, id);
    popular_tail(s, cat, filters, Fill::new(k, cat, live, &keep), degraded)
}

type Reply = (Option<Vec<u8>>, Vec<(String, String)>);

/// The treatment arm: cached list → category popular → global popular, each
/// topping up what the one before left short of `k`; from memory when Redis
/// fails.
async fn treatment(
    s: &Inner,
    cat: Option<&Catalog>,
    user: &UserId,
    k: usize,
    filters: &Filters,
) -> Result<Answer, ApiError> {
    let mut conn = s.redis.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(s.keys.recs(user)).cmd("HGETALL").arg(s.keys.hist(user));
    let reply: Reply = match tokio::time::timeout(s.cfg.redis_timeout(), pipe.query_async::<Reply>(&mut conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["recommendations"]).inc();
            s.metrics.degraded.with_label_values(&["error"]).inc();
            tracing::debug!(error = %e, "redis read failed; serving popular from memory");
            return popular_answer(s, cat, k, true, filters, &FxHashSet::default());
        }
        Err(_) => {
            s.metrics.degraded.with_label_values(&["timeout"]).inc();
            return popular_answer(s, cat, k, true, filters, &FxHashSet::default());
        }
    };
    let (recs, hist) = reply;
    let m = &s.metrics;
    let entries: Vec<(&str, HistEntry)> =
        hist.iter().filter_map(|(item, v)| HistEntry::parse(v).map(|e| (item.as_str(), e))).collect();
    let purchased: FxHashSet<&str> = entries.iter().filter(|(_, e)| e.purchased()).map(|(i, _)| *i).collect();
    let view = s.live_catalog.view();
    let live = Some(&*view);
    let keep = |id: &str| !purchased.contains(id) && filters.admits(cat, live, id);
    let mut fill = Fill::new(k, cat, live, &keep);
    // Until the live catalog has read the topic up to where it stood at start,
    // a cached list may hold items sold out since it was computed that the
    // catalog does not know of yet: it is skipped (the popular lists below are
    // checked against the model and what was read so far; /ready is 503).
    let recs = if s.live_catalog.caught_up() {
        recs
    } else {
        m.live_catalog_skipped.inc();
        None
    };

    if let Some(bytes) = recs {
        let accept = |id: &str| fill.accepts(id);
        match CachedList::parse(&bytes, k, &accept) {
            Ok(list) => {
                m.cache_lookups.with_label_values(&["hit"]).inc();
                for r in &list.items {
                    if let Ok(item_id) = ItemId::parse(r.item_id) {
                        fill.offer(Source::Personal, &list.model, ScoredItem { item_id, score: r.score });
                    }
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
    let kind = match (fill.items.is_empty(), entries.is_empty()) {
        (false, _) => "warm",
        (true, true) => "cold",
        (true, false) => "history",
    };
    m.users.with_label_values(&[kind]).inc();
    if !fill.full() && !entries.is_empty() {
        history_categories(s, cat, &entries, &mut fill);
    }
    popular_tail(s, cat, filters, fill, false)
}

/// The popular items of the user's most-weighted categories, interleaved best
/// category first (nothing without a served model).
fn history_categories(s: &Inner, cat: Option<&Catalog>, entries: &[(&str, HistEntry)], fill: &mut Fill<'_>) {
    let Some(c) = cat else { return };
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
    let mut cursors = vec![0usize; lists.len()];
    // Round robin over the categories, best category first.
    while !fill.full() && lists.iter().zip(&cursors).any(|(l, &c)| c < l.items.len()) {
        for (l, cur) in lists.iter().zip(cursors.iter_mut()) {
            if let Some(r) = l.items.get(*cur) {
                *cur += 1;
                fill.extend(Source::CategoryPopular, &l.model, std::slice::from_ref(r));
            }
        }
    }
}
