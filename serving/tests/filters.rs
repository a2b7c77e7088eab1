//! The page filters `category=` (a category and its subcategories) and
//! `exclude=` (item ids) on `/v1/recommendations`, `/v1/items/{id}/similar`
//! and `/v1/popular`, through `Router::oneshot` with the real local Redis on a
//! random key prefix; the impressions of filtered answers through the real
//! broker (`RECSYS_SKIP_BROKER_TESTS=1` skips that one).
//!
//! The synthetic model: items `1000 + row`, row `r` in category `1 + r % 8`,
//! categories 1..=8 with the even ones children of 1 (so the subtree of 1 is
//! rows with `r % 8` in {0, 1, 3, 5, 7}); row 5 is unavailable.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use model::synthetic::item_id;
use redis::AsyncCommands;
use schemas::Variant;
use serving::http::router;
use support::*;

fn row(id: &str) -> usize {
    id.parse::<usize>().unwrap() - 1000
}

fn category_of(r: usize) -> u64 {
    1 + (r % 8) as u64
}

/// Rows of the subtree of category 1.
fn under_1(r: usize) -> bool {
    [0, 1, 3, 5, 7].contains(&(r % 8))
}

/// Available rows with training popularity that `pred` accepts, most popular
/// first (ties to the lower row): what the model's popular lists rank.
fn popular_rows(root: &Path, pred: impl Fn(usize) -> bool) -> Vec<usize> {
    let v = model::artifact::current_version(root).unwrap().unwrap();
    let art = model::artifact::Artifact::read(&root.join(v)).unwrap();
    let mut rows: Vec<(f32, usize)> = art
        .items
        .iter()
        .enumerate()
        .filter(|(r, it)| pred(*r) && it.available != Some(false) && it.popularity > 0.0)
        .map(|(r, it)| (it.popularity as f32, r))
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    rows.into_iter().map(|(_, r)| r).collect()
}

fn rows_of(body: &serde_json::Value) -> Vec<usize> {
    item_ids(body).iter().map(|id| row(id)).collect()
}

fn assert_distinct(rows: &[usize]) {
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), rows.len(), "an item twice: {rows:?}");
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn recommendations_keep_the_category_subtree_and_still_hold_k_items() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    let (state, _metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let keys = s.redis.keys();
    let mut r = redis_conn(&s.redis.url).await;
    let cat3 = popular_rows(dir.path(), |r| category_of(r) == 3);
    let sub1 = popular_rows(dir.path(), under_1);
    assert!(cat3.len() >= 10 && sub1.len() >= 40, "the synthetic model has enough candidates");

    // Warm: the cached list's items of category 3 first (rows 2, 10, 18, 26
    // of rows 0..30), then category 3's popular items, to k.
    let warm = user_in(Variant::Als, "f-warm");
    let uid = schemas::UserId::parse(&warm).unwrap();
    let list: Vec<String> = (0..30).map(item_id).collect();
    let _: () = r.set(keys.recs(&uid), recs_json("v0", &list)).await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=10&category=3")).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!((g.body["source"].as_str(), g.body["model_version"].as_str()), (Some("personal"), Some("v0")));
    let mut want = vec![2, 10, 18, 26];
    want.extend(cat3.iter().filter(|r| !want.contains(r)).take(6).collect::<Vec<_>>());
    assert_eq!(rows_of(&g.body), want, "personal first, topped up from the category's list");

    // A category with subcategories: its own items and its children's, k of them.
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=40&category=1")).await;
    let got = rows_of(&g.body);
    assert_eq!(got.len(), 40, "{got:?}");
    assert_distinct(&got);
    assert!(got.iter().all(|&r| under_1(r)), "{got:?}");
    assert!(got.iter().any(|&r| category_of(r) == 1) && got.iter().any(|&r| category_of(r) != 1), "{got:?}");
    assert!(!got.contains(&5), "row 5 is unavailable");
    let personal: Vec<usize> = (0..30).filter(|&r| under_1(r) && r != 5).collect();
    assert_eq!(got[..personal.len()], personal, "the cached list's part first");

    // exclude: the cart's items are not shown, and the list still holds k.
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=5&exclude={},{}", item_id(0), item_id(3))).await;
    assert_eq!(rows_of(&g.body), [1, 2, 4, 6, 7]);
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=5&exclude={}&exclude={}", item_id(1), item_id(2))).await;
    assert_eq!(rows_of(&g.body), [0, 3, 4, 6, 7], "several exclude= are one set");
    // Everything cached excluded: topped up from popular.
    let all: Vec<String> = (0..30).map(item_id).collect();
    let g = get(&app, &format!("/v1/recommendations/{warm}?k=10&exclude={}", all.join(","))).await;
    let got = rows_of(&g.body);
    assert_eq!(g.body["source"], "popular", "{:?}", g.body);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|&r| r >= 30), "{got:?}");

    // History (category 4, under 1) but no list: its category's items first, within the page's.
    let hist = user_in(Variant::Als, "f-hist");
    let hid = schemas::UserId::parse(&hist).unwrap();
    let _: () = r.hset(keys.hist(&hid), item_id(3), "5,0,0,5").await.unwrap();
    let _: () = r.hset(keys.hist(&hid), item_id(11), "1,0,1,5").await.unwrap();
    let g = get(&app, &format!("/v1/recommendations/{hist}?k=30&category=1")).await;
    assert_eq!(g.body["source"], "category_popular", "{:?}", g.body);
    let got = rows_of(&g.body);
    let cat4 = popular_rows(dir.path(), |r| category_of(r) == 4 && r != 11);
    assert_eq!(got.len(), 30);
    assert_eq!(got[..cat4.len().min(30)], cat4[..cat4.len().min(30)], "the history's category first");
    assert!(got.iter().all(|&r| under_1(r)) && !got.contains(&11), "bought 11 is skipped: {got:?}");
    // The history's category is outside the page's: the page's category list answers.
    let g = get(&app, &format!("/v1/recommendations/{hist}?k=8&category=3")).await;
    assert_eq!(rows_of(&g.body), cat3[..8]);

    // Cold and control: the category's list (source category_popular), minus exclude.
    let cold = user_in(Variant::Als, "f-cold");
    let control = user_in(Variant::Popular, "f-ctl");
    for user in [&cold, &control] {
        let g = get(&app, &format!("/v1/recommendations/{user}?k=8&category=3&exclude={}", item_id(cat3[0]))).await;
        assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
        assert_eq!(
            (g.body["source"].as_str(), g.body["model_version"].as_str()),
            (Some("category_popular"), Some("v1"))
        );
        assert_eq!(rows_of(&g.body), cat3[1..9]);
        let g = get(&app, &format!("/v1/recommendations/{user}?k=30&category=1")).await;
        assert_eq!(rows_of(&g.body), sub1[..30], "the subtree ranked as one list");
    }
    // A category with fewer candidates than k: all of them, not padded from elsewhere.
    let g = get(&app, &format!("/v1/recommendations/{cold}?k=100&category=3")).await;
    assert_eq!(rows_of(&g.body), cat3);

    // A category the model does not know; one without a model.
    assert_error(
        &get(&app, &format!("/v1/recommendations/{cold}?category=999")).await,
        StatusCode::NOT_FOUND,
        "category_not_found",
        "999",
    );
    let s2 = settings(&redis_url());
    let (bare, _) = support::state(&s2, None);
    let g = get(&router(bare), &format!("/v1/recommendations/{cold}?category=3")).await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "");
}

#[tokio::test]
async fn with_redis_down_the_filters_still_apply_to_the_in_memory_lists() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&format!("redis://127.0.0.1:{}", closed_port()));
    let (state, _metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let cat3 = popular_rows(dir.path(), |r| category_of(r) == 3);
    let user = user_in(Variant::Als, "f-deg");
    let g = get(&app, &format!("/v1/recommendations/{user}?k=6&category=3&exclude={}", item_id(cat3[1]))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!(g.body["degraded"], true);
    let mut want = cat3[..7].to_vec();
    want.remove(1);
    assert_eq!(rows_of(&g.body), want);
}

#[tokio::test]
async fn popular_lists_and_live_rankings_are_filtered() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    let (state, _metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state.clone());
    let keys = s.redis.keys();
    let mut r = redis_conn(&s.redis.url).await;
    // The model's global list: its 100 most popular items.
    let mut all = popular_rows(dir.path(), |_| true);
    all.truncate(100);
    let cat2 = popular_rows(dir.path(), |r| category_of(r) == 2);
    let sub1 = popular_rows(dir.path(), under_1);

    // A leaf category: its own list, as before; one with subcategories: the subtree.
    let g = get(&app, "/v1/popular?k=5&category=2").await;
    assert_eq!((g.body["category"].as_u64(), g.body["window"].as_str()), (Some(2), Some("model")));
    assert_eq!(rows_of(&g.body), cat2[..5]);
    let g = get(&app, "/v1/popular?k=40&category=1").await;
    assert_eq!(rows_of(&g.body), sub1[..40]);
    let g = get(&app, &format!("/v1/popular?k=5&category=1&exclude={},{}", item_id(sub1[0]), item_id(sub1[3]))).await;
    assert_eq!(rows_of(&g.body), [sub1[1], sub1[2], sub1[4], sub1[5], sub1[6]]);
    let g = get(&app, &format!("/v1/popular?k=5&exclude={}", item_id(all[0]))).await;
    assert_eq!(rows_of(&g.body), all[1..6]);
    let g = get(&app, &format!("/v1/popular?k=5&window=model&exclude={}", item_id(all[2]))).await;
    assert_eq!(rows_of(&g.body), [all[0], all[1], all[3], all[4], all[5]]);

    // The Redis list of a leaf category answers it; short, it is topped up
    // from the global list within the category.
    let _: () = r.set(keys.popular_category(2), recs_json("v1", &[item_id(cat2[3]), item_id(cat2[1])])).await.unwrap();
    serving::watch::refresh_popular(&state).await.unwrap();
    let g = get(&app, "/v1/popular?k=4&category=2").await;
    let global_in_2: Vec<usize> = all.iter().copied().filter(|&r| category_of(r) == 2).collect();
    let mut want = vec![cat2[3], cat2[1]];
    want.extend(global_in_2.iter().filter(|r| !want.contains(r)).take(2).collect::<Vec<_>>());
    assert_eq!(rows_of(&g.body), want);

    // A live ranking under a category: its items of the subtree, in its order;
    // an id the model does not know has no category and is left out.
    let w = schemas::Window::parse("1h").unwrap();
    let (now, landmark) = (schemas::now_ms(), schemas::now_ms() - 1_000);
    let _: () = r.hset(keys.trending_landmarks(), "1h", landmark).await.unwrap();
    let ranking = [item_id(2), item_id(1), "new-item".to_owned(), item_id(8), item_id(5), item_id(16), item_id(0)];
    for (n, id) in ranking.iter().enumerate() {
        let count = 100.0 - n as f64;
        let score = count * schemas::popularity::forward_weight(now, landmark, w.ms());
        let _: () = r.zadd(keys.trending(&w), id, score).await.unwrap();
    }
    serving::watch::refresh_popular(&state).await.unwrap();
    let g = get(&app, "/v1/popular?window=1h&category=1&k=10").await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert_eq!((g.body["window"].as_str(), g.body["model_version"].as_str()), (Some("1h"), Some("live-popular")));
    assert_eq!(rows_of(&g.body), [1, 8, 16, 0], "2 is in root 3, 5 unavailable; not padded");
    let g = get(&app, &format!("/v1/popular?window=1h&category=1&k=2&exclude={}", item_id(8))).await;
    assert_eq!(rows_of(&g.body), [1, 16]);
    let g = get(&app, &format!("/v1/popular?window=1h&k=3&exclude={}", item_id(2))).await;
    assert_eq!(item_ids(&g.body), [item_id(1), "new-item".to_owned(), item_id(8)]);

    // A category the model knows but without any candidate in the ranking: 200, empty.
    let g = get(&app, "/v1/popular?window=1h&category=7").await;
    assert_eq!((g.status, g.body["items"].as_array().unwrap().len()), (StatusCode::OK, 0), "{:?}", g.body);
    assert_error(
        &get(&app, "/v1/popular?window=1h&category=999").await,
        StatusCode::NOT_FOUND,
        "category_not_found",
        "999",
    );
    let (bare, _) = support::state(&s, None);
    let g = get(&router(bare), "/v1/popular?window=1h&category=1").await;
    assert_error(&g, StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", "");
}

#[tokio::test]
async fn similar_lists_are_filtered_but_not_padded() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    let (state, _metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    publish_similar(&s, dir.path(), 60).await;
    let item = item_id(4);
    let full = rows_of(&get(&app, &format!("/v1/items/{item}/similar?k=100")).await.body);
    assert!(full.len() >= 50, "{full:?}");

    let g = get(&app, &format!("/v1/items/{item}/similar?k=10&category=1")).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    let want: Vec<usize> = full.iter().copied().filter(|&r| under_1(r)).take(10).collect();
    assert_eq!(rows_of(&g.body), want);
    let g = get(&app, &format!("/v1/items/{item}/similar?k=5&exclude={},{}", item_id(full[0]), item_id(full[2]))).await;
    assert_eq!(rows_of(&g.body), [full[1], full[3], full[4], full[5], full[6]]);
    // Fewer neighbours in the category than k: those, nothing else.
    let g = get(&app, &format!("/v1/items/{item}/similar?k=100&category=3")).await;
    let want: Vec<usize> = full.iter().copied().filter(|&r| category_of(r) == 3).collect();
    assert_eq!(rows_of(&g.body), want);
    assert_error(
        &get(&app, &format!("/v1/items/{item}/similar?category=999")).await,
        StatusCode::NOT_FOUND,
        "category_not_found",
        "999",
    );
}

#[tokio::test]
async fn malformed_filters_are_a_json_400_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let s = settings(&redis_url());
    let (state, _metrics) = state(&s, Some(catalog(dir.path())));
    let app = router(state);
    let user = user_in(Variant::Als, "f-bad");
    let many: Vec<String> = (0..101).map(item_id).collect();
    let hundred: Vec<String> = (0..100).map(item_id).collect();
    let bad = [
        ("category=shoes", "category", "non-negative integer"),
        ("category=-1", "category", "non-negative integer"),
        ("category=", "category", "non-negative integer"),
        ("category=18446744073709551616", "category", "non-negative integer"),
        ("category=1&category=2", "category", "more than once"),
        ("exclude=", "exclude", "empty"),
        ("exclude=1001,,1002", "exclude", "empty"),
        ("exclude=1001,", "exclude", "empty"),
        ("exclude=,1001", "exclude", "empty"),
        ("exclude=1001&exclude=", "exclude", "empty"),
        ("exclude=a%2Fb", "exclude", "a/b"),
        ("exclude=a%20b", "exclude", "a b"),
        (&*format!("exclude={}", "x".repeat(65)), "exclude", "at most 64"),
        (&*format!("exclude={}", many.join(",")), "exclude", "at most 100"),
        (&*format!("exclude={}&exclude={}", hundred.join(","), item_id(100)), "exclude", "at most 100"),
    ];
    for base in
        [format!("/v1/recommendations/{user}"), format!("/v1/items/{}/similar", item_id(1)), "/v1/popular".into()]
    {
        for (q, name, mentions) in &bad {
            let g = get(&app, &format!("{base}?k=3&{q}")).await;
            assert_error(&g, StatusCode::BAD_REQUEST, "invalid_parameter", name);
            let detail = g.body["detail"].as_str().unwrap();
            assert!(detail.starts_with(name) && detail.contains(mentions), "{base}?{q}: {detail:?}");
        }
    }
    // At the cap is fine.
    let g = get(&app, &format!("/v1/popular?k=3&exclude={}", hundred.join(","))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", g.body);
    assert!(rows_of(&g.body).iter().all(|&r| r >= 100));
}

/// Reads `want` messages of `topic` from the beginning (all partitions).
fn read_n(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("serving-filters-{}", testkit::services::tag()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), timeout).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want {
        assert!(Instant::now() < deadline, "timed out reading {topic}: {} of {want}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impression_of_a_filtered_answer_names_the_items_shown() {
    let Some(b) = testkit::services::broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    s.kafka.brokers = b.clone();
    s.kafka.topic_prefix = format!("sf-{}.", testkit::services::tag());
    s.model.artifacts_dir = dir.path().to_owned();
    s.serving.impression_timeout_ms = 10_000;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let deps = serving::Deps::connect(&s, listener).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_similar(&s, dir.path(), 40).await;
    let mut r = redis_conn(&s.redis.url).await;
    let warm = user_in(Variant::Als, "f-imp");
    let uid = schemas::UserId::parse(&warm).unwrap();
    let list: Vec<String> = (0..30).map(item_id).collect();
    let _: () = r.set(s.redis.keys().recs(&uid), recs_json("v0", &list)).await.unwrap();

    let ex = format!("exclude={},{}", item_id(2), item_id(10));
    let urls = [
        format!("{base}/v1/recommendations/{warm}?k=6&category=3&{ex}"),
        format!("{base}/v1/popular?k=6&category=1&{ex}&user_id={warm}"),
        format!("{base}/v1/items/{}/similar?k=6&category=1&{ex}&user_id={warm}", item_id(4)),
    ];
    let mut sent = Vec::new();
    for url in &urls {
        let v: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        assert!(!item_ids(&v).is_empty(), "{url}: {v}");
        assert!(!item_ids(&v).contains(&item_id(2)) && !item_ids(&v).contains(&item_id(10)), "{url}: {v}");
        sent.push(v);
    }
    let got = read_n(&b, &s.kafka.topic(schemas::topics::IMPRESSIONS), sent.len(), Duration::from_secs(30));
    let imps: Vec<schemas::Impression> = got.iter().map(|p| schemas::Impression::parse_json(p).unwrap()).collect();
    for v in &sent {
        let imp = imps.iter().find(|i| v["rec_id"] == i.rec_id.as_str()).unwrap();
        assert_eq!(imp.items.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>(), item_ids(v));
        assert_eq!(imp.model_version.as_str(), v["model_version"]);
    }
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
