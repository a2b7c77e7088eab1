//! The live catalog through the whole product, against the real broker
//! (`RECSYS_TEST_KAFKA`) and Redis (`RECSYS_TEST_REDIS`): a model trained
//! from a generated log's files is published; ingest, the updater and serving
//! run; a new shopper gets a personal list. Then the storefront's back office
//! marks two items sold out through ingest (`POST /v1/items`):
//!
//! - every answer (the shopper's personal list, popular, the neighbours of an
//!   item the shopper viewed) leaves them out within a second of ingest's
//!   200, with no model change;
//! - the updater's Redis state says so, and the shopper's next list (written
//!   after the change, from new events) does not hold them at all: the
//!   updater scores with the live state, not only serving's read-time filter;
//! - marked available again (`PUT /v1/items/{id}`), they come back.
//!
//! A missing broker fails the test unless `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::*;
use schemas::{UserId, Variant};
use serde_json::{json, Value};

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|i| i["item_id"].as_str().unwrap_or_default().to_owned()).collect())
}

/// A storefront's POST: retried on 503 (a new producer, a busy broker), as a
/// storefront would; the accepted count must be all.
async fn post(client: &reqwest::Client, url: &str, body: &Value) {
    for attempt in 0.. {
        let r = client.post(url).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if status == 503 && attempt < 5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        assert_eq!(status, 200, "POST {url}: {v}");
        let n = body.as_array().map_or(1, Vec::len);
        assert_eq!(v["accepted"], n, "{v}");
        return;
    }
}

/// A user id in the treatment arm (personal lists) under the shipped salt.
fn treatment_user(tag: &str) -> String {
    let d = serving::config::ServingConfig::default();
    (0..)
        .map(|n| format!("{tag}-{n}"))
        .find(|u| serving::http::variant_of(&d.ab_salt, u, d.treatment_percent) == Variant::Als)
        .unwrap()
}

/// Trains `version` from the files in `data` and publishes it.
async fn train_and_publish(cfg: &Path, data: &Path, version: &str) {
    let s = common::load_layered::<batch_trainer::config::Settings>(Some(cfg), no_env()).unwrap();
    let root = s.model.artifacts_dir.clone();
    let (s2, root2, v, d) = (s.clone(), root.clone(), version.to_owned(), data.to_path_buf());
    let r = tokio::task::spawn_blocking(move || {
        let src = batch_trainer::nightly::Source { data_dir: Some(d), from_kafka: false };
        batch_trainer::nightly::train_run(&s2, &src, &root2, Some(v), false, false)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(r.train.promoted, "{:?}", r.train.verdict);
    batch_trainer::nightly::publish_if_enabled(&s, &root, version).await.unwrap().expect("publication is on");
}

/// Polls `urls` until none answers any of `items` (`present == false`) or
/// every one answers all of them (`true`); returns how long after `t0`.
async fn until(
    client: &reqwest::Client,
    urls: &[String],
    items: &[String],
    present: bool,
    t0: Instant,
    limit: Duration,
) -> Duration {
    loop {
        let mut last = Vec::new();
        for u in urls {
            let (st, v) = get_json(client, u).await;
            assert_eq!(st, 200, "{u}: {v}");
            let got = ids(&v);
            let ok =
                if present { items.iter().all(|i| got.contains(i)) } else { !items.iter().any(|i| got.contains(i)) };
            if !ok {
                last.push(format!("{u}: {v}"));
            }
        }
        let elapsed = t0.elapsed();
        if last.is_empty() {
            return elapsed;
        }
        assert!(elapsed < limit, "present={present} not reached in {limit:?}: {last:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn items_marked_sold_out_through_ingest_leave_every_answer_and_every_new_list() {
    let Some(brokers) = broker() else { return };
    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &brokers, &tag, &[]);
    let shared = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    let keys = shared.redis.keys();
    common::kafka::ensure_topics(&shared.kafka, Duration::from_secs(10)).await.unwrap();

    let data = dir.path().join("data");
    datagen::generate(&datagen::GenerateConfig::new(60_000, 11), &data, None).unwrap();
    train_and_publish(&cfg, &data, "cat-v1").await;

    let ingest = start_ingest(&cfg).await;
    let updater = start_updater(&cfg).await;
    let serving = start_serving(&cfg).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let api = format!("http://{}", serving.addr);
    let ing = format!("http://{}", ingest.addr);
    wait_for("serving /ready", Duration::from_secs(30), || async {
        client.get(format!("{api}/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    // A new shopper views a few popular items and gets a personal list.
    let user = treatment_user(&format!("cat-{tag}"));
    let (_, popular) = get_json(&client, &format!("{api}/v1/popular?k=20")).await;
    let top = ids(&popular);
    assert_eq!(top.len(), 20, "{popular}");
    let viewed = &top[3..8];
    let events: Vec<Value> = viewed.iter().map(|i| view(&user, i)).collect();
    post(&client, &format!("{ing}/v1/events"), &Value::from(events)).await;
    let rec_url = format!("{api}/v1/recommendations/{user}?k=10");
    wait_for("the shopper's personal list", Duration::from_secs(60), || async {
        let (s, v) = get_json(&client, &rec_url).await;
        s == 200 && v["source"] == "personal"
    })
    .await;
    let (_, personal) = get_json(&client, &rec_url).await;
    let first = ids(&personal);
    assert_eq!(first.len(), 10, "{personal}");

    // The items to sell out: the shopper's top pick and the most popular item
    // (viewed items are not recommended back, so top[0] may be either).
    let mut gone = vec![first[0].clone()];
    if !gone.contains(&top[0]) {
        gone.push(top[0].clone());
    }
    let similar_url = format!("{api}/v1/items/{}/similar?k=10", viewed[0]);
    let urls = [rec_url.clone(), format!("{api}/v1/popular?k=20"), similar_url.clone()];
    let (_, similar) = get_json(&client, &similar_url).await;
    eprintln!("before: personal {first:?}, popular {top:?}, similar {:?}", ids(&similar));

    // 1. Sold out through ingest: every answer leaves them within 1 s.
    let batch: Vec<Value> = gone.iter().map(|i| json!({"item_id": i, "available": false})).collect();
    post(&client, &format!("{ing}/v1/items"), &Value::from(batch)).await;
    let took = until(&client, &urls, &gone, false, Instant::now(), Duration::from_secs(1)).await;
    eprintln!("sold out {gone:?}: gone from every answer {took:?} after ingest's 200");
    let (_, v) = get_json(&client, &rec_url).await;
    assert_eq!((v["source"].as_str(), ids(&v).len()), (Some("personal"), 10), "topped up: {v}");
    assert_eq!(v["model_version"], "cat-v1", "no model change");

    // 2. The updater's state, then a list written after the change.
    let mut conn = common::redis_conn::connect(&shared.redis).await.unwrap();
    let unavailable_key = updater::catalog::unavailable_key(&keys);
    wait_for("the updater's unavailable set", Duration::from_secs(10), || {
        let (mut conn, key, gone) = (conn.clone(), unavailable_key.clone(), gone.clone());
        async move {
            let set: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(&mut conn).await.unwrap();
            gone.iter().all(|g| set.contains(g))
        }
    })
    .await;
    let recs_key = keys.recs(&UserId::parse(&user).unwrap());
    let stored = |raw: Option<String>| -> (i64, Vec<String>) {
        let v: Value = serde_json::from_str(&raw.expect("a cached list")).unwrap();
        (v["updated_ms"].as_i64().unwrap(), ids(&v))
    };
    let (before_ms, _) = stored(redis::cmd("GET").arg(&recs_key).query_async(&mut conn).await.unwrap());
    let more: Vec<Value> = top[8..11].iter().map(|i| view(&user, i)).collect();
    post(&client, &format!("{ing}/v1/events"), &Value::from(more)).await;
    let t0 = Instant::now();
    let rewritten = loop {
        let (ms, list) = stored(redis::cmd("GET").arg(&recs_key).query_async(&mut conn).await.unwrap());
        if ms > before_ms {
            break list;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the list was not rewritten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(rewritten.len() >= 10, "written long enough to survive filtering: {rewritten:?}");
    for g in &gone {
        assert!(!rewritten.contains(g), "{g} is sold out but entered the list written after: {rewritten:?}");
    }

    // 3. Back in stock (one PUT each): they return where the model puts them.
    let t0 = Instant::now();
    for g in &gone {
        let r = client.put(format!("{ing}/v1/items/{g}")).json(&json!({"available": true})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let popular_url = [format!("{api}/v1/popular?k=20")];
    let took = until(&client, &popular_url, std::slice::from_ref(&top[0]), true, t0, Duration::from_secs(2)).await;
    eprintln!("back in stock: the most popular item answered again {took:?} after the first PUT");
    wait_for("the updater's unavailable set emptied", Duration::from_secs(10), || {
        let (mut conn, key, gone) = (conn.clone(), unavailable_key.clone(), gone.clone());
        async move {
            let set: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(&mut conn).await.unwrap();
            !gone.iter().any(|g| set.contains(g))
        }
    })
    .await;

    serving.stop().await;
    updater.stop().await;
    ingest.stop().await;
    cleanup_redis(&shared.redis.prefix).await;
}
