//! Path and query parameters, checked the same way by every route: a bad one
//! is a 400 whose detail starts with the parameter's name.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use rustc_hash::FxHashSet;
use schemas::{ItemId, UserId};

use crate::catalog::Catalog;
use crate::config::MAX_K;
use crate::error::ApiError;
use crate::live_catalog::{live_category, LiveMap};

/// Most item ids one request may `exclude` (a cart, or what the page already
/// shows, fits; the URL stays a few kilobytes).
pub const MAX_EXCLUDE: usize = 100;

/// The decoded value of query parameter `name` (the first one).
pub fn query_param<'a>(q: &'a Option<String>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(q.as_deref()?.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v)
}

/// At most 80 characters of a client's value, for an error detail.
pub fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `k` in 1..=100, the configured default when absent.
pub fn parse_k(q: &Option<String>, default: usize) -> Result<usize, ApiError> {
    match query_param(q, "k") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
            _ => Err(ApiError::InvalidParameter("k", format!("must be an integer in 1..=100, got {:?}", shorten(&v)))),
        },
    }
}

/// The optional `user_id` query parameter of `/similar` and `/popular`.
pub fn query_user(q: &Option<String>) -> Result<Option<UserId>, ApiError> {
    query_param(q, "user_id")
        .map(|u| UserId::parse(&u).map_err(|e| ApiError::InvalidParameter("user_id", e.to_string())))
        .transpose()
}

/// Every decoded value of query parameter `name`, in order.
fn query_values<'a>(q: &'a Option<String>, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    form_urlencoded::parse(q.as_deref().unwrap_or_default().as_bytes()).filter(move |(n, _)| n == name).map(|(_, v)| v)
}

/// The optional `category` query parameter; given twice it is refused (which
/// one the page meant is not ours to guess).
pub fn query_category(q: &Option<String>) -> Result<Option<u64>, ApiError> {
    let mut values = query_values(q, "category");
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::InvalidParameter("category", "given more than once".into()));
    }
    v.parse::<u64>().map(Some).map_err(|_| {
        ApiError::InvalidParameter("category", format!("must be a non-negative integer, got {:?}", shorten(&v)))
    })
}

/// The `exclude` query parameter: comma-separated item ids, possibly over
/// several `exclude=` (their union); at most [`MAX_EXCLUDE`] ids in all.
pub fn query_exclude(q: &Option<String>) -> Result<FxHashSet<String>, ApiError> {
    let mut out = FxHashSet::default();
    let mut given = 0usize;
    for v in query_values(q, "exclude") {
        for id in v.split(',') {
            given += 1;
            if given > MAX_EXCLUDE {
                return Err(ApiError::InvalidParameter(
                    "exclude",
                    format!("at most {MAX_EXCLUDE} item ids, got more than that"),
                ));
            }
            if id.is_empty() {
                return Err(ApiError::InvalidParameter(
                    "exclude",
                    "an empty item id (a doubled, leading or trailing comma, or exclude= without ids)".into(),
                ));
            }
            let id = ItemId::parse(id)
                .map_err(|e| ApiError::InvalidParameter("exclude", format!("item id {:?}: {e}", shorten(id))))?;
            out.insert(id.into_string());
        }
    }
    Ok(out)
}

/// The filters a page puts on a list: only items of a category and its
/// subcategories (`category=ID`), none of the given items (`exclude=ID,ID`).
#[derive(Debug, Default)]
pub struct Filters {
    pub category: Option<u64>,
    pub exclude: FxHashSet<String>,
}

impl Filters {
    /// Reads `category` and `exclude`.
    pub fn parse(q: &Option<String>) -> Result<Filters, ApiError> {
        Ok(Filters { category: query_category(q)?, exclude: query_exclude(q)? })
    }

    /// Checks the category against the served model, the one source of the
    /// tree: none served is 503 `model_unavailable`, a category it does not
    /// know 404 `category_not_found`.
    pub fn check(&self, cat: Option<&Catalog>) -> Result<(), ApiError> {
        match (self.category, cat) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(ApiError::ModelUnavailable),
            (Some(c), Some(cat)) if cat.knows_category(c) => Ok(()),
            (Some(c), Some(_)) => Err(ApiError::CategoryNotFound(c)),
        }
    }

    /// True when the item may be shown. Under a category the item's category
    /// is the live catalog's when it gave one, else the served model's, placed
    /// in the served model's tree; an item with neither is left out: nothing
    /// says it belongs on the page.
    pub fn admits(&self, cat: Option<&Catalog>, live: Option<&LiveMap>, id: &str) -> bool {
        !self.exclude.contains(id)
            && self.category.is_none_or(|root| {
                cat.is_some_and(|c| match live_category(live, id) {
                    Some(lc) => c.in_subtree(lc, root),
                    None => c.item_in_subtree(id, root),
                })
            })
    }
}

/// The path's `user_id`.
pub fn path_user(p: Result<Path<String>, PathRejection>) -> Result<UserId, ApiError> {
    let user = path_id(p, "user_id")?;
    UserId::parse(&user).map_err(|e| ApiError::InvalidParameter("user_id", e.to_string()))
}

/// The path's `item_id`.
pub fn path_item(p: Result<Path<String>, PathRejection>) -> Result<ItemId, ApiError> {
    let item = path_id(p, "item_id")?;
    ItemId::parse(&item).map_err(|e| ApiError::InvalidParameter("item_id", e.to_string()))
}

fn path_id(p: Result<Path<String>, PathRejection>, name: &'static str) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| ApiError::InvalidParameter(name, e.body_text()))
}
