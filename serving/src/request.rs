//! Path and query parameters, checked the same way by every route: a bad one
//! is a 400 whose detail starts with the parameter's name.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use schemas::{ItemId, UserId};

use crate::config::MAX_K;
use crate::error::ApiError;

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

/// The optional `category` query parameter of `/popular`.
pub fn query_category(q: &Option<String>) -> Result<Option<u64>, ApiError> {
    query_param(q, "category")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter("category", format!("must be a non-negative integer, got {:?}", shorten(&v)))
            })
        })
        .transpose()
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
