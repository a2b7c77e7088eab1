//! Every route and status code through `Router::oneshot` (no listener), with
//! the real local Redis (random key prefix) for the data paths, a closed port
//! or a silent listener for the failure paths.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use model::synthetic::item_id;
use redis::AsyncCommands;
use schemas::Variant;
use serving::http::router;
use support::*;

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn warm_history_cold_and_control_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state.clone());
    let keys = s.redis.keys();
    let mut r = redis_conn(&s.redis.url).await;

    // Warm: the cached list minus a purchased item (hist) and an unavailable one (row 5).
    let warm = user_in(Variant::Als, "warm");
    let uid = schemas::UserId::parse(&warm).unwrap();
    let list: Vec<String> = (0..30).map(item_id).collect();
    let _: () = r.set(keys.recs(&uid), recs_json("v0", &list)).await.unwrap();
    let _: () = r.hset(keys.hist(&uid), item_id(1), "1,0,1,5").await.unwrap();
    let _: () = r.hset(keys.hist(&uid), item_id(2), "3,1,0,5").await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=5")).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!(g.body["source"], "personal");
    assert_eq!(g.body["variant"], "als");
    assert_eq!(g.body["model_version"], "v0", "the list's own version");
    assert_eq!(g.body["degraded"], false);
    assert_eq!(g.body["user_id"], warm.as_str());
    assert!(schemas::RecId::parse(g.body["rec_id"].as_str().unwrap()).is_ok());
    assert_eq!(item_ids(&g.body), [0, 2, 3, 4, 6].map(item_id), "bought 1 and unavailable 5 are skipped");
    let again = get(&app, &format!("/v1/recommendations/{warm}?k=5")).await;
    assert_ne!(again.body["rec_id"], g.body["rec_id"], "every response has its own rec_id");
    assert_eq!(get(&app, &format!("/v1/recommendations/{warm}")).await.body["items"].as_array().unwrap().len(), 10);

    // History but no list: popular items of the user's categories (synthetic: item i is in category 1 + i % 8).
    let hist = user_in(Variant::Als, "hist");
    let hid = schemas::UserId::parse(&hist).unwrap();
    let _: () = r.hset(keys.hist(&hid), item_id(3), "5,0,0,5").await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{hist}?k=4")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["source"], "category_popular", "{:?}", g.body);
    assert_eq!(g.body["model_version"], "v1");
    for id in item_ids(&g.body) {
        let row: usize = id.parse::<usize>().unwrap() - 1000;
        assert_eq!(1 + row % 8, 4, "item {id} is in the user's category 4");
    }

    // Cold (treatment arm, nothing in Redis) and control arm: global popular.
    let cold = user_in(Variant::Als, "cold");
    let g = get(&app, &format!("/v1/recommendations/{cold}?k=7")).await;
    assert_eq!((g.body["source"].as_str(), g.body["variant"].as_str()), (Some("popular"), Some("als")));
    assert_eq!(g.body["items"].as_array().unwrap().len(), 7);
    let pop = get(&app, "/v1/popular?k=7").await;
    assert_eq!(item_ids(&g.body), item_ids(&pop.body));
    assert!(!item_ids(&pop.body).contains(&item_id(5)), "unavailable items are never popular");
    let control = user_in(Variant::Popular, "ctl");
    let cid = schemas::UserId::parse(&control).unwrap();
    let _: () = r.set(keys.recs(&cid), recs_json("v0", &list)).await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{control}?k=7")).await;
    assert_eq!((g.body["source"].as_str(), g.body["variant"].as_str()), (Some("popular"), Some("popular")));
    assert_eq!(item_ids(&g.body), item_ids(&pop.body), "control gets popular even with a cached list");

    // A popular list in Redis takes precedence once refreshed.
    let _: () = r.set(keys.popular(), recs_json("v9", &[item_id(42), item_id(43)])).await.unwrap();
    serving::watch::refresh_popular(&state).await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{cold}?k=7")).await;
    assert_eq!(item_ids(&g.body), [item_id(42), item_id(43)]);
    assert_eq!(g.body["model_version"], "v9");
    assert_eq!(get(&app, "/v1/popular").await.body["model_version"], "v9");
    let text = get(&app, "/metrics").await.body.as_str().unwrap().to_owned();
    assert_eq!(metric(&text, "recsys_serving_users_total{kind=\"warm\"}"), 3.0);
    assert_eq!(metric(&text, "recsys_serving_users_total{kind=\"history\"}"), 1.0);
    assert_eq!(metric(&text, "recsys_serving_users_total{kind=\"cold\"}"), 2.0, "asked twice");
    assert_eq!(metric(&text, "recsys_serving_recommendations_total{source=\"personal\",variant=\"als\"}"), 3.0);
    assert!(text.contains("recsys_serving_http_requests_total{route=\"/v1/recommendations/{user_id}\",source=\"personal\",status=\"200\"} 3"), "{text}");
    assert!(text.contains("recsys_serving_http_request_duration_seconds_bucket{route=\"/v1/popular\""));
    assert!(!text.contains(&warm), "no raw ids in labels");
    assert!(metric(&metrics.render(), "recsys_serving_impressions_") > 0.0);
    let _: () = redis::cmd("DEL")
        .arg(keys.recs(&uid))
        .arg(keys.hist(&uid))
        .arg(keys.hist(&hid))
        .arg(keys.recs(&cid))
        .arg(keys.popular())
        .query_async(&mut r)
        .await
        .unwrap();
}

#[tokio::test]
async fn similar_popular_stats_and_the_meta_routes() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, _m) = state(&s, Some(catalog(dir.path())));
    let app = router(state);

    // The trainer's lists (serving computes no neighbours).
    let similar_keys = publish_similar(&s, dir.path(), 20).await;
    let g = get(&app, &format!("/v1/items/{}/similar?k=5", item_id(3))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!(g.body["model_version"], "v1");
    let ids = item_ids(&g.body);
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&item_id(3)) && !ids.contains(&item_id(5)), "never itself nor unavailable");
    let scores: Vec<f64> = g.body["items"].as_array().unwrap().iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0001, "{scores:?}");

    // A list of another model version (the trainer moves CURRENT before it
    // rewrites the lists) is answered under its own version, minus what the
    // served model marks unavailable (row 5).
    let mut r = redis_conn(&s.redis.url).await;
    let item4 = schemas::ItemId::parse(&item_id(4)).unwrap();
    let older = recs_json("v0", &[item_id(5), item_id(7), item_id(8)]);
    let _: () = r.set(s.redis.keys().similar(&item4), older).await.unwrap();
    let g = get(&app, &format!("/v1/items/{}/similar?k=5", item_id(4))).await;
    assert_eq!((g.status, g.body["model_version"].as_str()), (StatusCode::OK, Some("v0")), "{:?}", g.body);
    assert_eq!(item_ids(&g.body), [item_id(7), item_id(8)]);

    let g = get(&app, "/v1/popular?k=3&category=2").await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["category"], 2);
    for id in item_ids(&g.body) {
        assert_eq!(1 + (id.parse::<usize>().unwrap() - 1000) % 8, 2);
    }

    // Stats: the counters that exist.
    let keys = s.redis.keys();
    let v1 = schemas::ModelVersion::parse("v1").unwrap();
    let _: () = r
        .hset_multiple(
            keys.stats(Variant::Als, &v1),
            &[("impressions", "200"), ("clicks", "20"), ("carts", "5"), ("purchases", "2"), ("revenue", "31.5")],
        )
        .await
        .unwrap();
    let _: () = r.hset(keys.stats(Variant::Popular, &v1), "impressions", "0").await.unwrap();
    // (The tracking script indexes the keys it writes; done by hand here.)
    let _: () =
        r.sadd(keys.stats_index(), &[keys.stats(Variant::Als, &v1), keys.stats(Variant::Popular, &v1)]).await.unwrap();
    let g = get(&app, "/v1/stats").await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    let arms = g.body["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    assert_eq!(arms[0]["variant"], "als");
    assert_eq!(arms[0]["ctr"], 0.1);
    assert_eq!(arms[0]["add_to_cart_rate"], 0.025);
    assert_eq!(arms[0]["conversion_rate"], 0.01);
    assert_eq!(arms[0]["revenue"], 31.5);
    // 20 / 200: Wilson 95 % [0.065670, 0.149406] (serving::stats has the arithmetic).
    assert!((arms[0]["ctr_ci95"]["low"].as_f64().unwrap() - 0.065_670_4).abs() < 1e-6, "{:?}", arms[0]);
    assert!((arms[0]["ctr_ci95"]["high"].as_f64().unwrap() - 0.149_405_8).abs() < 1e-6, "{:?}", arms[0]);
    assert_eq!(arms[0]["revenue_per_impression"], 0.1575);
    assert_eq!(arms[1]["variant"], "popular");
    assert!(arms[1]["ctr"].is_null() && arms[1]["ctr_ci95"].is_null());
    assert_eq!(g.body["comparisons"], serde_json::json!([]), "no control impressions: nothing to compare");
    let _: () = redis::cmd("DEL")
        .arg(keys.stats(Variant::Als, &v1))
        .arg(keys.stats(Variant::Popular, &v1))
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(get(&app, "/v1/stats").await.body["arms"].as_array().unwrap().len(), 0);
    let _: () = redis::cmd("DEL").arg(&similar_keys).query_async(&mut r).await.unwrap();

    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
    let g = get(&app, "/ready").await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!(g.body["model"], "v1");
    let g = get(&app, "/openapi.json").await;
    assert_eq!(g.status, StatusCode::OK);
    for p in ["/v1/recommendations/{user_id}", "/v1/items/{item_id}/similar", "/v1/popular", "/v1/stats", "/ready"] {
        assert!(g.body["paths"][p]["get"].is_object(), "{p} missing from the OpenAPI document");
    }
    assert!(g.body["components"]["schemas"]["RecommendationsResponse"].is_object());
    let m = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(m.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn bad_input_is_a_json_400_naming_the_parameter_and_unknowns_are_404() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, _m) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let long = "x".repeat(65);
    for (uri, param) in [
        (format!("/v1/recommendations/{long}"), "user_id"),
        ("/v1/recommendations/a%20b".to_owned(), "user_id"),
        ("/v1/recommendations/a%2Fb".to_owned(), "user_id"),
        ("/v1/recommendations/u1?k=0".to_owned(), "k"),
        ("/v1/recommendations/u1?k=101".to_owned(), "k"),
        ("/v1/recommendations/u1?k=ten".to_owned(), "k"),
        ("/v1/recommendations/u1?k=".to_owned(), "k"),
        ("/v1/items/bad!id/similar".to_owned(), "item_id"),
        ("/v1/items/1000/similar?k=-1".to_owned(), "k"),
        ("/v1/popular?k=1000".to_owned(), "k"),
        ("/v1/popular?category=shoes".to_owned(), "category"),
        ("/v1/popular?category=-3".to_owned(), "category"),
        ("/v1/popular?user_id=a%20b".to_owned(), "user_id"),
        ("/v1/items/1000/similar?user_id=".to_owned(), "user_id"),
    ] {
        let g = get(&app, &uri).await;
        assert_error(&g, StatusCode::BAD_REQUEST, "invalid_parameter", param);
        assert!(g.body["detail"].as_str().unwrap().starts_with(param), "{uri}: {:?}", g.body);
    }
    assert_error(&get(&app, "/v2/nothing").await, StatusCode::NOT_FOUND, "not_found", "/v2/nothing");
    assert_error(&get(&app, "/v1/recommendations").await, StatusCode::NOT_FOUND, "not_found", "");
    assert_error(&get(&app, "/v1/items/999999/similar").await, StatusCode::NOT_FOUND, "item_not_found", "999999");
    assert_error(&get(&app, "/v1/popular?category=777").await, StatusCode::NOT_FOUND, "category_not_found", "777");
    let g = send(&app, Request::post("/v1/popular").body(Body::empty()).unwrap()).await;
    assert_error(&g, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "POST");
}

#[tokio::test]
async fn without_a_model_popular_answers_are_503_and_ready_fails() {
    let s = settings(&redis_url());
    let (state, _m) = state(&s, None);
    let app = router(state);
    let cold = user_in(Variant::Popular, "nomodel");
    let g = get(&app, &format!("/v1/recommendations/{cold}")).await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "model");
    assert!(g.headers.contains_key(header::RETRY_AFTER));
    assert_error(&get(&app, "/v1/popular").await, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "");
    assert_error(&get(&app, "/v1/items/1000/similar").await, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "");
    let g = get(&app, "/ready").await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((g.body["redis"].as_bool(), g.body["ready"].as_bool()), (Some(true), Some(false)));

    // A known item whose similar list the trainer has not published (yet): 503 similar_not_ready.
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let v = model::artifact::current_version(dir.path()).unwrap().unwrap();
    let (state2, _m) = support::state(&s, Some(serving::Catalog::load(&dir.path().join(v)).unwrap()));
    let g = get(&router(state2), &format!("/v1/items/{}/similar", item_id(1))).await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "similar_not_ready", "v1");
}

#[tokio::test]
async fn redis_down_degrades_to_the_in_memory_popular_list() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&format!("redis://127.0.0.1:{}", closed_port()));
    let (state, metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let user = user_in(Variant::Als, "deg");
    let t = std::time::Instant::now();
    let g = get(&app, &format!("/v1/recommendations/{user}?k=6")).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!((g.body["source"].as_str(), g.body["degraded"].as_bool()), (Some("popular"), Some(true)));
    assert_eq!(g.body["items"].as_array().unwrap().len(), 6);
    assert!(t.elapsed() < Duration::from_millis(1_000), "{:?}", t.elapsed());
    let g = get(&app, "/ready").await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(g.body["redis"], false);
    assert_error(&get(&app, "/v1/stats").await, StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", "");
    // Similar lists live in Redis only (the trainer's): no answer from memory.
    let g = get(&app, &format!("/v1/items/{}/similar", item_id(1))).await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", "");
    assert!(metric(&metrics.render(), "recsys_serving_degraded_responses_total") >= 1.0);
    // Kafka is down too (closed port): the impression is queued or dropped, never awaited.
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
}

/// Accepts connections and never answers: a Redis that hangs.
async fn silent_listener() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    port
}

#[tokio::test]
async fn a_slow_redis_times_out_and_excess_requests_are_shed_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let port = silent_listener().await;
    let mut s = settings(&format!("redis://127.0.0.1:{port}"));
    s.serving.concurrency_limit = 1;
    s.serving.request_timeout_ms = 400;
    s.serving.stats_timeout_ms = 5_000;
    s.serving.retry_after_s = 2;
    let (state, metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);

    // A slow Redis: the recommendation is answered degraded within the 50 ms budget.
    let user = user_in(Variant::Als, "slow");
    let t = std::time::Instant::now();
    let g = get(&app, &format!("/v1/recommendations/{user}")).await;
    assert_eq!((g.status, g.body["degraded"].as_bool()), (StatusCode::OK, Some(true)), "{:?}", g.body);
    assert!(t.elapsed() < Duration::from_millis(300), "{:?}", t.elapsed());
    assert!(metric(&metrics.render(), "recsys_serving_degraded_responses_total{reason=\"timeout\"}") >= 1.0);

    // Stats waits on the silent Redis longer than the request deadline → 503 request_timeout,
    // and while it holds the only slot another request is shed.
    let app2 = app.clone();
    let slow = tokio::spawn(async move { get(&app2, "/v1/stats").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shed = get(&app, "/v1/popular").await;
    assert_error(&shed, StatusCode::SERVICE_UNAVAILABLE, "overloaded", "");
    assert_eq!(shed.headers[header::RETRY_AFTER], "2");
    let g = slow.await.unwrap();
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "request_timeout", "400");
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK, "health is outside the limit");
}

#[tokio::test]
async fn admin_reload_needs_the_bearer_token_and_refuses_an_unusable_model() {
    const TOKEN: &str = "test-admin-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let reload = |auth: Option<&str>| {
        let mut r = Request::post("/admin/v1/reload");
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        r.body(Body::empty()).unwrap()
    };

    // No token configured: the admin routes are off.
    let (off, _m) = state(&s, Some(catalog(dir.path())));
    let g = send(&router(off), reload(Some(&format!("Bearer {TOKEN}")))).await;
    assert_error(&g, StatusCode::FORBIDDEN, "admin_disabled", "RECSYS__ADMIN__TOKEN");

    let (st, metrics) = state(&s, Some(catalog(dir.path())));
    let auth = common::AdminConfig { token: common::Secret::new(TOKEN), token_file: None }.resolve().unwrap();
    let app = router(st.with_admin(serving::http::Admin { auth, model_root: dir.path().to_owned() }));
    for bad in [None, Some(TOKEN.to_owned()), Some("Bearer nope".to_owned()), Some(format!("Bearer {TOKEN}x"))] {
        let g = send(&app, reload(bad.as_deref())).await;
        assert_eq!(g.status, StatusCode::UNAUTHORIZED, "{bad:?}: {:?}", g.body);
        assert_eq!(g.body["error"], "unauthorized");
        assert!(g.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
        assert!(!g.body.to_string().contains(TOKEN), "the token is never echoed");
    }
    let ok = format!("Bearer {TOKEN}");
    let g = send(&app, reload(Some(&ok))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!((g.body["model_version"].as_str(), g.body["changed"].as_bool()), (Some("v1"), Some(false)));

    // A new CURRENT (e.g. `models promote --no-publish`) is served at once.
    write_model(dir.path(), "v2");
    let g = send(&app, reload(Some(&ok))).await;
    assert_eq!((g.body["model_version"].as_str(), g.body["changed"].as_bool()), (Some("v2"), Some(true)));
    assert_eq!(get(&app, "/v1/popular").await.body["model_version"], "v2");

    // CURRENT naming a broken version: 409, v2 keeps serving.
    std::fs::create_dir_all(dir.path().join("v3")).unwrap();
    std::fs::write(dir.path().join("v3/manifest.json"), b"{ truncated").unwrap();
    // (set_current refuses an unreadable version: the damage is done by hand.)
    std::fs::write(dir.path().join(model::artifact::CURRENT_FILE), "v3\n").unwrap();
    let g = send(&app, reload(Some(&ok))).await;
    assert_error(&g, StatusCode::CONFLICT, "reload_refused", "v3");
    assert_eq!(get(&app, "/v1/popular").await.body["model_version"], "v2");
    let text = metrics.render();
    assert_eq!(metric(&text, "recsys_serving_admin_requests_total{action=\"reload\",outcome=\"refused\"}"), 4.0);
    assert_eq!(metric(&text, "recsys_serving_admin_requests_total{action=\"reload\",outcome=\"ok\"}"), 2.0);
    assert_eq!(metric(&text, "recsys_serving_admin_requests_total{action=\"reload\",outcome=\"failed\"}"), 1.0);
}

/// docs/reliability.md's table of hostile requests to serving (`--nocapture` prints it):
/// every one is a clear 4xx JSON error naming the parameter, none a 5xx.
#[tokio::test]
async fn hostile_requests_get_clear_4xx_answers() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, _m) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let long = "u".repeat(65);
    // (60 kB: the `http` crate refuses longer URIs before they reach a server.)
    let huge_query = format!("/v1/popular?k=5&x={}", "a".repeat(60_000));
    let cases: Vec<(&str, String, &str)> = vec![
        ("user id of 65 characters", format!("/v1/recommendations/{long}"), "400 invalid_parameter user_id"),
        ("user id with a control character (%07)", "/v1/recommendations/a%07b".into(), "400 invalid_parameter user_id"),
        ("user id of invalid UTF-8 (%FF)", "/v1/recommendations/%FF%FE".into(), "400 invalid_parameter user_id"),
        ("user id with an encoded slash", "/v1/recommendations/a%2F..%2Fb".into(), "400 invalid_parameter user_id"),
        ("empty user id", "/v1/recommendations/".into(), "404 not_found"),
        ("k = 0", "/v1/recommendations/u1?k=0".into(), "400 invalid_parameter k"),
        ("k = 101", "/v1/recommendations/u1?k=101".into(), "400 invalid_parameter k"),
        ("k = -1", "/v1/recommendations/u1?k=-1".into(), "400 invalid_parameter k"),
        ("k = 2⁶⁴", "/v1/recommendations/u1?k=18446744073709551616".into(), "400 invalid_parameter k"),
        ("k = 1e3", "/v1/recommendations/u1?k=1e3".into(), "400 invalid_parameter k"),
        ("k = NaN", "/v1/recommendations/u1?k=NaN".into(), "400 invalid_parameter k"),
        ("category = -3", "/v1/popular?category=-3".into(), "400 invalid_parameter category"),
        ("category = 2⁶⁴", "/v1/popular?category=18446744073709551616".into(), "400 invalid_parameter category"),
        ("user_id query with a space", "/v1/popular?user_id=a%20b".into(), "400 invalid_parameter user_id"),
        ("item id with a quote", "/v1/items/a%22b/similar".into(), "400 invalid_parameter item_id"),
        ("unknown item", "/v1/items/999999/similar".into(), "404 item_not_found"),
        ("unknown route", "/v1/../../etc/passwd".into(), "404 not_found"),
        ("60 kB query string (unknown parameter ignored)", huge_query, "200"),
    ];
    println!("| request | answer |\n| --- | --- |");
    for (name, uri, want) in &cases {
        let g = get(&app, uri).await;
        let got = if g.status == StatusCode::OK {
            "200".to_owned()
        } else {
            let detail = g.body["detail"].as_str().unwrap_or_default();
            let param = detail.split(':').next().unwrap_or_default();
            let code = g.body["error"].as_str().unwrap_or_default();
            if code == "invalid_parameter" {
                format!("{} {code} {param}", g.status.as_u16())
            } else {
                format!("{} {code}", g.status.as_u16())
            }
        };
        println!("| {name} | {got} |");
        assert_eq!(&got, want, "{name}: {:?}", g.body);
    }
    let g = send(&app, Request::delete("/v1/popular").body(Body::empty()).unwrap()).await;
    println!("| DELETE /v1/popular | {} {} |", g.status.as_u16(), g.body["error"].as_str().unwrap());
    assert_eq!(g.status, StatusCode::METHOD_NOT_ALLOWED);
}
