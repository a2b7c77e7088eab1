//! The demo shop page at `/demo/` (`[serving] demo = true`, on in
//! `scripts/demo.sh`): plain HTML, CSS and JavaScript compiled into the binary
//! (no build step, no CDN: the machines it runs on often reach neither), which
//! drives the real APIs from the browser — recommendations and popular items
//! from this process, events posted to recsys-ingest (cross-origin, so that
//! ingest must allow this origin in `[ingest] cors_origins`), the A/B numbers
//! from `/v1/stats`.
//!
//! Besides the three files, two small JSON routes exist only for the page:
//! `config.json` (where ingest is) and `catalog` (the categories of the items
//! shown, which the public API does not return). Neither publishes an
//! impression.

use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::ApiError;
use crate::request::query_param;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../static/demo/index.html");
const APP_JS: &str = include_str!("../static/demo/app.js");
const STYLE_CSS: &str = include_str!("../static/demo/style.css");

/// Most item ids one `catalog` request may name (the page asks for what it shows).
pub const MAX_CATALOG_ITEMS: usize = 200;

/// The demo's routes, merged into the application when `[serving] demo` is on.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(index))
        .route("/demo/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/demo/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/demo/config.json", get(config))
        .route("/demo/catalog", get(catalog))
}

/// The page may load its own files and talk to this process and to ingest,
/// nothing else.
async fn index(State(s): State<AppState>) -> Response {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        s.inner.cfg.demo_ingest_url
    );
    let mut resp = asset("text/html; charset=utf-8", INDEX_HTML);
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// Compiled-in files are never stale for the binary serving them, but the
/// next binary may change them: browsers revalidate every time.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// `GET /demo/config.json`.
#[derive(Debug, Serialize)]
struct DemoConfig {
    /// Where the page posts events.
    ingest_url: String,
    /// The page's list length.
    default_k: usize,
    /// Share of shoppers in the `als` arm (the others always see popular items).
    treatment_percent: u8,
}

async fn config(State(s): State<AppState>) -> Json<DemoConfig> {
    let cfg = &s.inner.cfg;
    Json(DemoConfig {
        ingest_url: cfg.demo_ingest_url.clone(),
        default_k: cfg.default_k,
        treatment_percent: cfg.treatment_percent,
    })
}

/// One item of `GET /demo/catalog`.
#[derive(Debug, Serialize, PartialEq)]
struct CatalogItem {
    item_id: String,
    /// The item's category in the served model (null when unknown).
    category: Option<u64>,
    /// `false` when the model knows the item as unavailable.
    available: bool,
    /// Whether the served model knows the item at all.
    known: bool,
}

/// `GET /demo/catalog?items=ID,ID…`: what the served model knows of the items.
async fn catalog(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<Vec<CatalogItem>>, ApiError> {
    let raw = query_param(&q, "items")
        .ok_or_else(|| ApiError::InvalidParameter("items", "a comma-separated list of item ids is required".into()))?;
    let ids: Vec<&str> = raw.split(',').collect();
    if ids.len() > MAX_CATALOG_ITEMS {
        return Err(ApiError::InvalidParameter("items", format!("at most {MAX_CATALOG_ITEMS} item ids")));
    }
    let cat = s.inner.catalog.current();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = schemas::ItemId::parse(id).map_err(|e| ApiError::InvalidParameter("items", e.to_string()))?;
        let row = cat.as_ref().and_then(|c| c.row(id.as_str()).map(|r| (c, r as usize)));
        out.push(CatalogItem {
            item_id: id.as_str().to_owned(),
            category: row.and_then(|(c, r)| c.category[r]),
            available: row.is_none_or(|(c, r)| c.available[r]),
            known: row.is_some(),
        });
    }
    Ok(Json(out))
}
