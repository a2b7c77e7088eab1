//! The live catalog under load, against the real broker and the local Redis
//! (run in release):
//!
//! 1. availability change → filtered in serving's answers: 100 changes/s to
//!    `recsys.items` (each flips one of the 30 most popular items) while
//!    1,000 events/s are produced to `recsys.events` on the same broker; a
//!    poller reads `/v1/popular?k=100` and notes when each change shows. The
//!    p50/p99/max from the produce call to the first answer that shows it.
//! 2. warm reads: `/v1/recommendations` of warm users (a 100-item cached
//!    list each) unfiltered with nothing unavailable, vs. with 5 % of the
//!    catalog unavailable on the topic and `category=` set; req/s of each.
//!
//! `cargo run --release -p serving --example bench_live_catalog`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use schemas::{ItemId, ItemUpdate, Properties};

fn update(id: &str, available: bool) -> Vec<u8> {
    ItemUpdate::new(schemas::now_ms(), ItemId::parse(id).unwrap(), Some(available), None, None, Properties::default())
        .unwrap()
        .to_json()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

async fn items_of(c: &reqwest::Client, url: &str) -> Vec<String> {
    let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
    v["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap().to_owned()).collect()
}

/// Requests answered in `secs` by `conns` concurrent clients over `users`.
async fn read_rate(base: &str, users: &[String], query: &str, conns: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..conns {
        let (base, users, query, done) = (base.to_owned(), users.to_vec(), query.to_owned(), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut n = w;
            while Instant::now() < until {
                let r = c
                    .get(format!("{base}/v1/recommendations/{}?k=10{query}", users[n % users.len()]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                n += conns;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let redis_url = std::env::var("RECSYS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = tempfile::tempdir().unwrap();
    let items = 1_000;
    let spec = SyntheticSpec { version: "v1".into(), items, categories: 20, ..SyntheticSpec::default() };
    synthetic_artifact(&spec).write(dir.path()).unwrap();
    model::artifact::set_current(dir.path(), "v1").unwrap();
    let mut s = serving::Settings::default();
    s.redis.url = redis_url.clone();
    s.redis.prefix = format!("blc{:016x}:", rand::random::<u64>());
    s.kafka.brokers = brokers.clone();
    s.kafka.topic_prefix = format!("blc-{:016x}.", rand::random::<u64>());
    s.model.artifacts_dir = dir.path().to_owned();
    s.serving.treatment_percent = 100;
    s.serving.live_catalog = true;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    let items_topic = s.kafka.topic(schemas::topics::ITEMS);
    let events_topic = s.kafka.topic(schemas::topics::EVENTS);

    // Warm users: a 100-item cached list each.
    let keys = s.redis.keys();
    let mut r = redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let users: Vec<String> = (0..2_000).map(|u| format!("blc-u{u}")).collect();
    let mut pipe = redis::pipe();
    for (u, name) in users.iter().enumerate() {
        let list = schemas::RecsList {
            model: schemas::ModelVersion::parse("v1").unwrap(),
            updated_ms: 1,
            items: (0..100)
                .map(|i| schemas::RecItem {
                    item_id: ItemId::parse(&item_id((u * 7 + i * 13) % items)).unwrap(),
                    score: 1.0 - i as f32 * 0.001,
                })
                .collect(),
        };
        pipe.cmd("SET").arg(keys.recs(&schemas::UserId::parse(name).unwrap())).arg(list.to_json()).ignore();
    }
    pipe.query_async::<()>(&mut r).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let deps = serving::Deps::connect(&s, listener).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::run(s.clone(), deps, async move {
        let _ = stop_rx.await;
    }));
    let c = reqwest::Client::new();
    loop {
        if let Ok(r) = c.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Part 2 first (nothing unavailable yet): unfiltered warm reads.
    let conns = 32;
    let secs = 10;
    let plain = read_rate(&base, &users, "", conns, secs).await;

    let p: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "1").create().unwrap();
    // Part 1: 1,000 events/s in the background.
    let stop_events = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = {
        let (p, topic, stop) = (p.clone(), events_topic.clone(), stop_events.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..10 {
                    n += 1;
                    let user = format!("blc-e{}", n % 5_000);
                    let body = format!(
                        r#"{{"ts": {}, "user_id": "{user}", "item_id": "{}", "event": "view"}}"#,
                        schemas::now_ms(),
                        item_id((n % 1_000) as usize)
                    );
                    let _ = p.send_result(FutureRecord::to(&topic).key(&user).payload(&body));
                }
            }
        })
    };
    let top: Vec<String> = items_of(&c, &format!("{base}/v1/popular?k=30")).await;
    let mut state: HashMap<String, bool> = top.iter().map(|i| (i.clone(), true)).collect();
    let pending: Arc<std::sync::Mutex<HashMap<String, (Instant, bool)>>> = Arc::default();
    let lat: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let poll_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (base, pending, lat, stop) = (base.clone(), pending.clone(), lat.clone(), poll_stop.clone());
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) || !pending.lock().unwrap().is_empty() {
                let shown = items_of(&c, &format!("{base}/v1/popular?k=100")).await;
                let now = Instant::now();
                pending.lock().unwrap().retain(|id, (t0, available)| {
                    if shown.contains(id) == *available {
                        lat.lock().unwrap().push(now - *t0);
                        false
                    } else {
                        true
                    }
                });
            }
        })
    };
    let changes = 3_000; // 30 s at 100/s
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut k = 0usize;
    for _ in 0..changes {
        tick.tick().await;
        // The next top item without a change in flight.
        let id = loop {
            let id = &top[k % top.len()];
            k += 1;
            if !pending.lock().unwrap().contains_key(id) {
                break id.clone();
            }
        };
        let next = !state[&id];
        state.insert(id.clone(), next);
        let t0 = Instant::now();
        let p = p.clone();
        let topic = items_topic.clone();
        let pending = pending.clone();
        pending.lock().unwrap().insert(id.clone(), (t0, next));
        tokio::spawn(async move {
            p.send(FutureRecord::to(&topic).key(&id).payload(&update(&id, next)), Duration::from_secs(10))
                .await
                .unwrap();
        });
    }
    poll_stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), poller).await.expect("every change shown within 30 s").unwrap();
    stop_events.store(true, Ordering::Relaxed);
    events.await.unwrap();
    let mut lat = lat.lock().unwrap().clone();
    println!(
        "availability change -> answers: {} changes at 100/s with 1,000 events/s: p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0)
    );

    // Part 2: 5 % of the catalog unavailable (every 20th item) and category= set.
    for i in (0..items).step_by(20) {
        let id = item_id(i);
        p.send(FutureRecord::to(&items_topic).key(&id).payload(&update(&id, false)), Duration::from_secs(10))
            .await
            .unwrap();
    }
    for id in &top {
        p.send(FutureRecord::to(&items_topic).key(id).payload(&update(id, true)), Duration::from_secs(10))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let unavailable = m.lines().find(|l| l.starts_with("recsys_serving_live_catalog_unavailable ")).unwrap().to_owned();
    let filtered = read_rate(&base, &users, "&category=1", conns, secs).await;
    println!(
        "warm reads ({conns} connections, {secs} s each): unfiltered {plain:.0} req/s; 5 % unavailable + category=1 \
         {filtered:.0} req/s ({:.2} x) [{unavailable}]",
        filtered / plain
    );
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", s.redis.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut r)
            .await
            .unwrap();
        if !found.is_empty() {
            redis::cmd("DEL").arg(&found).query_async::<()>(&mut r).await.unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
