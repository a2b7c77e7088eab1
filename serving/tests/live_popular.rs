//! The live popularity rankings (`trending:{window}`, `docs/day-one.md`)
//! through the routes, with the real local Redis on a random key prefix: the
//! rankings are written as the updater's apply script writes them, read by the
//! background refresh, and answer before any model exists, under the
//! version `live-popular`.

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use model::synthetic::item_id;
use redis::AsyncCommands;
use schemas::popularity::forward_weight;
use schemas::{now_ms, Variant, Window, LIVE_POPULAR_VERSION};
use serving::http::router;
use support::*;

const H: i64 = 3_600_000;

/// Writes a ranking of `window` whose items have these decayed counts now.
async fn write_ranking(
    r: &mut redis::aio::MultiplexedConnection,
    keys: &schemas::RedisKeys,
    window: &str,
    counts: &[(String, f64)],
) {
    let w = Window::parse(window).unwrap();
    // A landmark two hours back: scores are counts × exp((now − L) / W).
    let (now, landmark) = (now_ms(), now_ms() - 2 * H);
    let _: () = r.hset(keys.trending_landmarks(), window, landmark).await.unwrap();
    for (item, count) in counts {
        let _: () = r.zadd(keys.trending(&w), item, count * forward_weight(now, landmark, w.ms())).await.unwrap();
    }
}

async fn cleanup(r: &mut redis::aio::MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = r.keys(format!("{prefix}*")).await.unwrap();
    if !keys.is_empty() {
        let _: () = r.del(keys).await.unwrap();
    }
}

fn scores(body: &serde_json::Value) -> Vec<f64> {
    body["items"].as_array().unwrap().iter().map(|i| i["score"].as_f64().unwrap()).collect()
}

#[tokio::test]
async fn before_the_first_model_the_live_ranking_answers_and_503_only_without_it() {
    let s = settings(&redis_url());
    let (state, _m) = state(&s, None);
    let app = router(state.clone());
    let keys = s.redis.keys();
    let mut r = redis::Client::open(s.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let cold = user_in(Variant::Als, "live-cold");
    let control = user_in(Variant::Popular, "live-control");

    // Nothing at all: the one case that cannot be answered.
    serving::watch::refresh_popular(&state).await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{cold}")).await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "live popularity ranking");
    assert_eq!(get(&app, "/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);

    // The updater has applied events: a 24 h ranking (the fallback) and a 1 h one.
    let day: Vec<(String, f64)> = (0..30).map(|i| (item_id(i), 100.0 - i as f64)).collect();
    write_ranking(&mut r, &keys, "24h", &day).await;
    write_ranking(&mut r, &keys, "1h", &[(item_id(7), 3.0), (item_id(8), 2.0)]).await;
    // Read in the background, never per request: nothing changes until the refresh.
    let g = get(&app, &format!("/v1/recommendations/{cold}")).await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    serving::watch::refresh_popular(&state).await.unwrap();

    for user in [&cold, &control] {
        let g = get(&app, &format!("/v1/recommendations/{user}?k=5")).await;
        assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
        assert_eq!(g.body["source"], "popular");
        assert_eq!(g.body["model_version"], LIVE_POPULAR_VERSION);
        assert_eq!(item_ids(&g.body), (0..5).map(item_id).collect::<Vec<_>>());
        let sc = scores(&g.body);
        assert!((sc[0] - 100.0).abs() < 0.01 && (sc[4] - 96.0).abs() < 0.01, "decayed counts: {sc:?}");
    }
    // A shopper with a history but no model: the live list minus what they bought.
    let buyer = user_in(Variant::Als, "live-buyer");
    let _: () = r.hset(keys.hist(&schemas::UserId::parse(&buyer).unwrap()), item_id(1), "1,0,1,5").await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{buyer}?k=3")).await;
    assert_eq!((g.status, g.body["source"].as_str()), (StatusCode::OK, Some("popular")));
    assert_eq!(item_ids(&g.body), [item_id(0), item_id(2), item_id(3)], "the bought item is left out");

    // /v1/popular: the fallback ranking by default, any configured window by name.
    let g = get(&app, "/v1/popular?k=2").await;
    assert_eq!((g.status, g.body["window"].as_str()), (StatusCode::OK, Some("24h")));
    assert_eq!(g.body["model_version"], LIVE_POPULAR_VERSION);
    let g = get(&app, "/v1/popular?window=1h&k=5").await;
    assert_eq!((g.status, g.body["window"].as_str()), (StatusCode::OK, Some("1h")));
    assert_eq!(item_ids(&g.body), [item_id(7), item_id(8)]);
    assert_error(
        &get(&app, "/v1/popular?window=model").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "model_unavailable",
        "",
    );
    let g = get(&app, "/v1/popular?window=2h").await;
    assert_error(&g, StatusCode::BAD_REQUEST, "invalid_parameter", "valid: model, 1h, 24h");
    assert!(g.body["detail"].as_str().unwrap().starts_with("window"), "{:?}", g.body);
    // A category is placed by the served model's tree: none yet, so no category filter.
    let g = get(&app, "/v1/popular?window=1h&category=3").await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "");
    let g = get(&app, "/ready").await;
    assert_eq!((g.status, g.body["live_popular"].as_bool()), (StatusCode::OK, Some(true)), "{:?}", g.body);

    // An emptied ranking (the operator deleted it): popular_not_ready for that window only.
    let _: () = r.del(keys.trending(&Window::parse("1h").unwrap())).await.unwrap();
    serving::watch::refresh_popular(&state).await.unwrap();
    let g = get(&app, "/v1/popular?window=1h").await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "popular_not_ready", "1h");
    assert_eq!(get(&app, "/v1/popular?window=24h").await.status, StatusCode::OK);
    cleanup(&mut r, &s.redis.prefix).await;
}

#[tokio::test]
async fn with_a_model_its_lists_answer_and_the_live_ones_stay_trending() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, _m) = state(&s, Some(catalog(dir.path())));
    let app = router(state.clone());
    let keys = s.redis.keys();
    let mut r = redis::Client::open(s.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    // Item row 5 is unavailable in the model: never shown, whatever is trending.
    write_ranking(&mut r, &keys, "1h", &[(item_id(5), 9.0), (item_id(9), 4.0), ("brand-new".to_owned(), 2.0)]).await;
    serving::watch::refresh_popular(&state).await.unwrap();

    let cold = user_in(Variant::Als, "live-model-cold");
    let g = get(&app, &format!("/v1/recommendations/{cold}")).await;
    assert_eq!((g.body["source"].as_str(), g.body["model_version"].as_str()), (Some("popular"), Some("v1")));
    let g = get(&app, "/v1/popular").await;
    assert_eq!((g.body["model_version"].as_str(), g.body["window"].as_str()), (Some("v1"), Some("model")));
    let model_list = item_ids(&g.body);
    assert_eq!(item_ids(&get(&app, "/v1/popular?window=model").await.body), model_list);
    assert_eq!(get(&app, "/v1/popular?category=1").await.status, StatusCode::OK);
    let g = get(&app, "/v1/popular?window=1h").await;
    assert_eq!((g.status, g.body["model_version"].as_str()), (StatusCode::OK, Some(LIVE_POPULAR_VERSION)));
    assert_eq!(item_ids(&g.body), [item_id(9), "brand-new".to_owned()], "unavailable left out; unknown items kept");
    // No 24 h ranking yet: that window is not ready, the default is the model's.
    assert_error(
        &get(&app, "/v1/popular?window=24h").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "popular_not_ready",
        "24h",
    );
    cleanup(&mut r, &s.redis.prefix).await;
}
