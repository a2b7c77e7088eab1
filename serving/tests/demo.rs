//! The demo shop page's routes: absent unless `[serving] demo` is on; when on,
//! the compiled-in files with their types and the page's
//! Content-Security-Policy naming ingest, `config.json`, and `catalog` (what
//! the served model knows of the items shown, 400 for a bad list). The page
//! itself is driven in a real browser by `e2e/tests/demo_browser.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::{header, StatusCode};
use model::synthetic::item_id;
use serving::http::router;
use support::*;

#[tokio::test]
async fn demo_routes_exist_only_when_enabled() {
    let s = settings(&redis_url());
    assert!(!s.serving.demo, "off by default");
    let (state, _) = state(&s, None);
    let app = router(state);
    for path in ["/demo/", "/demo/app.js", "/demo/config.json", "/demo/catalog?items=1"] {
        assert_error(&get(&app, path).await, StatusCode::NOT_FOUND, "not_found", "/demo");
    }
}

#[tokio::test]
async fn the_page_its_files_and_its_two_json_routes() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&redis_url());
    s.serving.demo = true;
    s.serving.demo_ingest_url = "http://127.0.0.1:18081".into();
    let (state, _) = state(&s, Some(catalog(dir.path())));
    let app = router(state);

    let g = get(&app, "/demo").await;
    assert_eq!(g.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(g.headers[header::LOCATION], "/demo/");

    let page = get(&app, "/demo/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let html = page.body.as_str().unwrap();
    assert!(html.contains(r#"<script src="app.js" defer></script>"#), "the script is a file, not inline");
    let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self' http://127.0.0.1:18081;"), "the page may post to ingest only: {csp}");
    // Every element id the script looks up is on the page.
    let js = get(&app, "/demo/app.js").await;
    assert_eq!(js.headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    let js = js.body.as_str().unwrap().to_owned();
    let ids: Vec<&str> = js.split("$(\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert!(ids.len() > 10, "{ids:?}");
    for id in ids {
        assert!(html.contains(&format!(r#"id="{id}""#)), "app.js uses #{id}, which index.html lacks");
    }
    assert!(!js.contains("innerHTML"), "server text is only ever set as text");
    let css = get(&app, "/demo/style.css").await;
    assert_eq!(
        (css.status, css.headers[header::CONTENT_TYPE].to_str().unwrap()),
        (StatusCode::OK, "text/css; charset=utf-8")
    );

    let cfg = get(&app, "/demo/config.json").await;
    assert_eq!(cfg.status, StatusCode::OK);
    assert_eq!(cfg.body["ingest_url"], "http://127.0.0.1:18081");
    assert_eq!(cfg.body["default_k"], s.serving.default_k);
    assert_eq!(cfg.body["treatment_percent"], s.serving.treatment_percent);

    // Synthetic model: item i is in category 1 + i % 8, row 5 unavailable.
    let g = get(&app, &format!("/demo/catalog?items={},{},{},nope", item_id(3), item_id(5), item_id(12))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    let items = g.body.as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!((items[0]["item_id"].as_str(), items[0]["category"].as_u64()), (Some(item_id(3).as_str()), Some(4)));
    assert_eq!((items[0]["available"].as_bool(), items[0]["known"].as_bool()), (Some(true), Some(true)));
    assert_eq!(items[1]["available"], false);
    assert_eq!(items[2]["category"], 5);
    assert_eq!((items[3]["known"].as_bool(), items[3]["category"].is_null()), (Some(false), true));

    assert_error(&get(&app, "/demo/catalog").await, StatusCode::BAD_REQUEST, "invalid_parameter", "items");
    assert_error(&get(&app, "/demo/catalog?items=a,,b").await, StatusCode::BAD_REQUEST, "invalid_parameter", "items");
    let many = vec!["x"; serving::demo::MAX_CATALOG_ITEMS + 1].join(",");
    assert_error(
        &get(&app, &format!("/demo/catalog?items={many}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "at most",
    );
}

#[test]
fn a_demo_needs_a_usable_ingest_url() {
    let mut s = serving::config::Settings::default();
    s.serving.demo_ingest_url = "not a url".into();
    assert!(common::config::Settings::validate(&s).is_ok(), "not checked while the demo is off");
    s.serving.demo = true;
    let e = common::config::Settings::validate(&s).unwrap_err();
    assert!(e.contains("serving.demo_ingest_url"), "{e}");
}
