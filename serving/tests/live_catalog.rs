//! The live catalog (`recsys.items`) against the real broker and the local
//! Redis: an item marked unavailable on the topic leaves every endpoint's
//! answer within 1 s with no model change and comes back when marked
//! available; `/ready` waits until the topic is read; a malformed record is
//! counted; a broker that is down keeps serving not ready.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use model::synthetic::item_id;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use redis::AsyncCommands;
use schemas::{ItemId, ItemUpdate, Properties, Variant};
use support::*;

async fn produce(p: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    p.send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10)).await.unwrap();
}

fn update(id: &str, available: Option<bool>, category: Option<u64>) -> Vec<u8> {
    ItemUpdate::new(schemas::now_ms(), ItemId::parse(id).unwrap(), available, category, None, Properties::default())
        .unwrap()
        .to_json()
}

async fn json(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_marked_unavailable_leaves_every_answer_within_a_second_and_returns() {
    let Some(b) = testkit::services::broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    s.kafka.brokers = b.clone();
    s.kafka.topic_prefix = format!("slc-{}.", testkit::services::tag());
    s.model.artifacts_dir = dir.path().to_owned();
    s.serving.live_catalog = true;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    publish_similar(&s, dir.path(), 20).await;
    let topic = s.kafka.topic(schemas::topics::ITEMS);
    let p: FutureProducer = ClientConfig::new().set("bootstrap.servers", &b).create().unwrap();
    // Before serving starts: a malformed record, and 300 updates of items the
    // model does not know, all of which must be read before /ready is 200.
    produce(&p, &topic, "bad", b"not an item update").await;
    for n in 0..300 {
        produce(&p, &topic, &format!("x{n}"), &update(&format!("x{n}"), Some(n % 2 == 0), None)).await;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let deps = serving::Deps::connect(&s, listener).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "never ready");
        if let Ok(r) = c.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                break;
            }
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["ready"], false);
            assert!(v["reason"].is_string(), "{v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready means caught up: everything produced before the start was applied.
    let m = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "recsys_serving_live_catalog_caught_up"), 1.0);
    assert_eq!(metric(&m, "recsys_serving_live_catalog_malformed_total"), 1.0);
    assert!(metric(&m, "recsys_serving_live_catalog_updates_total") >= 300.0, "{m}");
    assert_eq!(metric(&m, "recsys_serving_live_catalog_items"), 300.0);
    assert_eq!(metric(&m, "recsys_serving_live_catalog_unavailable"), 150.0);

    // The target: the most popular item, at the top of a warm user's cached list.
    let (_, pop) = json(&c, &format!("{base}/v1/popular?k=10")).await;
    let target = item_ids(&pop)[0].clone();
    let row = target.parse::<usize>().unwrap() - 1000;
    let category = 1 + (row % 8) as u64;
    let warm = user_in(Variant::Als, "lc-warm");
    let control = user_in(Variant::Popular, "lc-ctl");
    let mut list = vec![target.clone()];
    list.extend((0..30).map(item_id).filter(|i| *i != target));
    let mut r = redis::Client::open(s.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys = s.redis.keys();
    let _: () = r.set(keys.recs(&schemas::UserId::parse(&warm).unwrap()), recs_json("v1", &list)).await.unwrap();
    // An item whose published neighbours hold the target.
    let mut neighbour = None;
    for n in 0..200 {
        let (st, v) = json(&c, &format!("{base}/v1/items/{}/similar?k=10", item_id(n))).await;
        if st == 200 && item_ids(&v).contains(&target) {
            neighbour = Some(item_id(n));
            break;
        }
    }
    let neighbour = neighbour.expect("some item has the target among its neighbours");
    let urls = [
        format!("{base}/v1/recommendations/{warm}?k=10"),
        format!("{base}/v1/recommendations/{control}?k=10"),
        format!("{base}/v1/recommendations/{warm}?k=10&category={category}"),
        format!("{base}/v1/popular?k=10"),
        format!("{base}/v1/popular?k=10&category={category}"),
        format!("{base}/v1/items/{neighbour}/similar?k=10"),
    ];
    let (_, v) = json(&c, &urls[0]).await;
    assert_eq!(v["source"], "personal", "{v}");
    for u in &urls {
        let (st, v) = json(&c, u).await;
        assert_eq!(st, 200, "{u}: {v}");
        assert!(item_ids(&v).contains(&target), "{u} answers the target before: {v}");
    }

    // Marked unavailable: gone from every answer within 1 s; k still filled
    // where other candidates exist.
    for (available, present) in [(false, false), (true, true)] {
        let t0 = Instant::now();
        produce(&p, &topic, &target, &update(&target, Some(available), None)).await;
        'wait: loop {
            let elapsed = t0.elapsed();
            assert!(elapsed < Duration::from_secs(1), "available={available} not applied within 1 s");
            for u in &urls {
                let (st, v) = json(&c, u).await;
                assert_eq!(st, 200, "{u}: {v}");
                if item_ids(&v).contains(&target) != present {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue 'wait;
                }
                if !u.contains("similar") {
                    assert_eq!(item_ids(&v).len(), 10, "{u} topped up: {v}");
                }
            }
            eprintln!("available={available}: every answer agrees after {elapsed:?}");
            break;
        }
    }
    let (_, v) = json(&c, &urls[0]).await;
    assert_eq!(v["source"], "personal", "{v}");

    // A live category change moves the item between category filters.
    let other = if category == 3 { 4 } else { 3 };
    produce(&p, &topic, &target, &update(&target, None, Some(other))).await;
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(2), "category change not applied");
        let (_, old) = json(&c, &format!("{base}/v1/popular?k=10&category={category}")).await;
        // k=100: past the category's own list, topped up from the global one.
        let (_, new) = json(&c, &format!("{base}/v1/popular?k=100&category={other}")).await;
        if !item_ids(&old).contains(&target) && item_ids(&new).contains(&target) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new item the model does not know, available with a live category and
    // events in the 1h ranking, is trending in that category at once.
    produce(&p, &topic, "x0/category", &update("x0", None, Some(category))).await;
    let w = schemas::Window::parse("1h").unwrap();
    let _: () = r.hset(keys.trending_landmarks(), "1h", schemas::now_ms() - 1_000).await.unwrap();
    let _: () = r.zadd(keys.trending(&w), "x0", 50.0).await.unwrap();
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(5), "the new item never trended in its live category");
        let (st, v) = json(&c, &format!("{base}/v1/popular?k=10&window=1h&category={category}")).await;
        if st == 200 && item_ids(&v).contains(&"x0".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A malformed record after the start is counted too, and serving goes on.
    produce(&p, &topic, "bad2", b"{\"item_id\": 5}").await;
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(2), "malformed record not counted");
        let m = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if metric(&m, "recsys_serving_live_catalog_malformed_total") == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.get(format!("{base}/ready")).send().await.unwrap().status(), 200);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_keeps_serving_not_ready_and_personal_lists_unserved() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), "v1");
    let mut s = settings(&redis_url());
    let _cleanup = testkit::services::KeysCleanup::new(&s.redis.url, &s.redis.prefix);
    s.model.artifacts_dir = dir.path().to_owned();
    s.serving.live_catalog = true; // the broker is at a closed port
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let deps = serving::Deps::connect(&s, listener).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    let c = reqwest::Client::new();
    let warm = user_in(Variant::Als, "lc-down");
    let mut r = redis::Client::open(s.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let list: Vec<String> = (0..30).map(item_id).collect();
    let _: () =
        r.set(s.redis.keys().recs(&schemas::UserId::parse(&warm).unwrap()), recs_json("v1", &list)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past several start retries, still not ready, for the live catalog.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, v) = json(&c, &format!("{base}/ready")).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!((v["redis"].as_bool(), v["live_catalog"].as_bool()), (Some(true), Some(false)), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("live catalog"), "{v}");
    // Requests still answer, but not from the unchecked cached list.
    let (st, v) = json(&c, &format!("{base}/v1/recommendations/{warm}?k=5")).await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["source"], "personal", "{v}");
    let m = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "recsys_serving_live_catalog_caught_up"), 0.0);
    assert!(metric(&m, "recsys_serving_live_catalog_skipped_lists_total") >= 1.0);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
