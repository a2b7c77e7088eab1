//! Day one of a fresh deployment, against the real broker
//! (`RECSYS_TEST_KAFKA`, default 127.0.0.1:9092) and Redis
//! (`RECSYS_TEST_REDIS`): empty topics, no model, and the processes a
//! deployment runs — ingest, the updater (with tracking beside it, as its
//! binary does), serving and the scheduled trainer — started once, in-process
//! (their real `run` functions on port-0 listeners, one shared config file):
//!
//! 1. before any event there is nothing to answer with: the one 503 of the test;
//! 2. events for 200 shoppers: `GET /v1/recommendations` is 200 `popular`
//!    from the live ranking (`live-popular`) at once, `/v1/popular?window=`
//!    shows the decayed counts, the trainer reports "waiting for data";
//! 3. more events pass the trainer's (small) minimum: it trains from the
//!    topic by itself, publishes and announces the model;
//! 4. every one of the 200 shoppers gets a `personal` list from it — no
//!    process restarted, no API request answered 5xx — and tracking counted
//!    the day-one impressions under `live-popular`.
//!
//! Isolated by a random topic prefix, Redis key prefix, consumer groups and
//! artifacts directory. A missing broker fails the test unless
//! `RECSYS_SKIP_BROKER_TESTS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use schemas::{Variant, LIVE_POPULAR_VERSION};
use serde_json::{json, Value};

const USERS: usize = 200;
/// Items in 4 groups of 10; shopper n browses group n % 4.
const GROUPS: usize = 4;
const PER_GROUP: usize = 10;
/// Phase 1: distinct items viewed per shopper; phase 2 adds two more.
const FIRST: usize = 6;

fn item(group: usize, j: usize) -> String {
    format!("sku-{group}-{j}")
}

/// 200 shoppers in the treatment arm under the shipped salt and split (the
/// control arm is served popular lists by design).
fn shoppers(tag: &str) -> Vec<String> {
    let d = serving::config::ServingConfig::default();
    (0..)
        .map(|n| format!("d1-{tag}-{n}"))
        .filter(|u| serving::http::variant_of(&d.ab_salt, u, d.treatment_percent) == Variant::Als)
        .take(USERS)
        .collect()
}

fn event(user: &str, item: &str, kind: &str) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    json!({"ts": now, "user_id": user, "item_id": item, "event": kind})
}

/// The events of shopper `n`: views of `FIRST` items of its group (phase 1),
/// or a view and an add-to-cart of the next two (phase 2).
fn events_of(n: usize, user: &str, phase: u8) -> Vec<Value> {
    let g = n % GROUPS;
    let at = |k: usize| item(g, (n / GROUPS + k) % PER_GROUP);
    match phase {
        1 => (0..FIRST).map(|k| event(user, &at(k), "view")).collect(),
        _ => vec![event(user, &at(FIRST), "view"), event(user, &at(FIRST + 1), "addtocart")],
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Posts `events` in batches; a 503 (the broker busy, nothing accepted) is
/// retried as a storefront would, and counted.
async fn post_all(client: &reqwest::Client, ingest: std::net::SocketAddr, events: &[Value]) -> usize {
    let mut retried = 0;
    for chunk in events.chunks(250) {
        let mut attempt = 0;
        loop {
            let r = client.post(format!("http://{ingest}/v1/events")).json(&chunk).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            if status == 200 {
                assert_eq!(body["accepted"], chunk.len(), "{body}");
                break;
            }
            assert!(status == 503 && attempt < 10, "POST /v1/events: {status} {body}");
            retried += 1;
            attempt += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    retried
}

/// Weighted event counts per item (view 1, addtocart 4: the shipped weights).
fn weighted(events: &[Value]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in events {
        let w = if e["event"] == "addtocart" { 4.0 } else { 1.0 };
        *out.entry(e["item_id"].as_str().unwrap().to_owned()).or_insert(0.0) += w;
    }
    out
}

async fn metrics_text(client: &reqwest::Client, addr: std::net::SocketAddr) -> String {
    client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_shop_is_served_from_its_first_event_and_turns_personal_by_itself() {
    let Some(brokers) = broker() else { return };
    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let phase1 = USERS * FIRST;
    let cfg = write_config(
        dir.path(),
        &brokers,
        &tag,
        &[
            // Serving re-reads the live ranking often, so "at once" is a few hundred ms.
            ("serving.popular_refresh_ms", 200.into()),
            // The trainer checks the topic every 2 s while no model exists and
            // trains once it holds more than phase 1 (from every shopper).
            ("trainer.schedule.bootstrap_interval_s", 2.into()),
            ("trainer.schedule.min_events", ((phase1 + 1) as i64).into()),
            ("trainer.schedule.min_users", (USERS as i64).into()),
            ("trainer.kafka_idle_timeout_ms", 15_000.into()),
        ],
    );
    let shared = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    let keys = shared.redis.keys();
    common::kafka::ensure_topics(&shared.kafka, Duration::from_secs(10)).await.unwrap();
    let root = dir.path().join("models");
    assert_eq!(model::artifact::current_version(&root).unwrap(), None, "no model");

    // The processes of a deployment, each started once.
    let ingest = start_ingest(&cfg).await;
    let updater = start_updater(&cfg).await;
    let tracking = {
        let s = common::config::load_settings::<tracking::config::Settings>(Some(&cfg), no_env()).unwrap();
        let deps = tracking::Deps::connect(&s).await.unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        (
            stop,
            tokio::spawn(tracking::run(s, deps, async move {
                let _ = rx.await;
            })),
        )
    };
    let serving = start_serving(&cfg).await;
    let trainer = {
        let s = common::load_layered::<batch_trainer::config::Settings>(Some(&cfg), no_env()).unwrap();
        let opts = batch_trainer::schedule::ScheduleOptions {
            source: batch_trainer::nightly::Source { data_dir: None, from_kafka: true },
            artifacts_dir: root.clone(),
            run_now: false,
            show_progress: false,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // No trigger: the schedule decides by itself when to train.
        let (_never, triggers) = tokio::sync::mpsc::channel(1);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(batch_trainer::schedule::run(s, opts, listener, triggers, async move {
            let _ = rx.await;
        }));
        (addr, stop, task, _never)
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let api = format!("http://{}", serving.addr);

    // 1. Nothing yet: the one answer that cannot be given.
    wait_for("serving to listen", Duration::from_secs(30), || async {
        client.get(format!("{api}/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (status, body) = get_json(&client, &format!("{api}/v1/recommendations/nobody-{tag}")).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("model_unavailable")), "{body}");
    assert_eq!(get_json(&client, &format!("{api}/ready")).await.0, 503);

    // 2. Events for 200 shoppers: popular answers from the live ranking at once.
    let users = shoppers(&tag);
    let first: Vec<Value> = users.iter().enumerate().flat_map(|(n, u)| events_of(n, u, 1)).collect();
    let mut retried = post_all(&client, ingest.addr, &first).await;
    let posted_at = Instant::now();
    wait_for("a live popular answer", Duration::from_secs(60), || async {
        let (s, v) = get_json(&client, &format!("{api}/v1/recommendations/{}", users[0])).await;
        s == 200 && v["model_version"] == LIVE_POPULAR_VERSION
    })
    .await;
    eprintln!("live popular answer {:?} after the events were accepted", posted_at.elapsed());
    // Every shopper's events are applied (their histories hold them) before the counts are compared.
    let redis = common::redis_conn::connect(&shared.redis).await.unwrap();
    let keys2 = keys.clone();
    wait_for("every phase-1 event in the histories", Duration::from_secs(60), || {
        let (mut redis, keys, users) = (redis.clone(), keys2.clone(), users.clone());
        async move {
            for u in &users {
                if history(&mut redis, &keys, u).await.values().sum::<u64>() < FIRST as u64 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // one more serving refresh
    for u in users.iter().step_by(20) {
        let (s, v) = get_json(&client, &format!("{api}/v1/recommendations/{u}?k=5")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["source"].as_str(), v["model_version"].as_str()), (Some("popular"), Some(LIVE_POPULAR_VERSION)));
        assert_eq!(v["items"].as_array().unwrap().len(), 5, "{v}");
    }
    let want = weighted(&first);
    for window in ["1h", "24h"] {
        let (s, v) = get_json(&client, &format!("{api}/v1/popular?window={window}&k=20")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["model_version"].as_str(), v["window"].as_str()), (Some(LIVE_POPULAR_VERSION), Some(window)));
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 20, "{v}");
        let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        let top = want.values().copied().fold(0.0, f64::max);
        assert!((scores[0] - top).abs() < 0.02 * top, "top {} vs {top}", scores[0]);
        for i in items {
            // Seconds old: decayed by well under 1 % in an hour's window.
            let (id, got) = (i["item_id"].as_str().unwrap(), i["score"].as_f64().unwrap());
            assert!((got - want[id]).abs() <= 0.01 * want[id], "{window} {id}: {got} vs {}", want[id]);
        }
    }
    let (s, v) = get_json(&client, &format!("{api}/v1/popular")).await;
    assert_eq!((s, v["window"].as_str(), v["model_version"].as_str()), (200, Some("24h"), Some(LIVE_POPULAR_VERSION)));
    let (s, v) = get_json(&client, &format!("{api}/v1/popular?window=model")).await;
    assert_eq!((s, v["error"].as_str()), (503, Some("model_unavailable")), "{v}");
    let (s, v) = get_json(&client, &format!("{api}/v1/popular?window=2h")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_parameter")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("model, 1h, 24h"), "{v}");
    let ready = get_json(&client, &format!("{api}/ready")).await;
    assert_eq!((ready.0, ready.1["live_popular"].as_bool()), (200, Some(true)), "{}", ready.1);
    // The trainer waits: not enough events yet.
    let (trainer_addr, ..) = &trainer;
    let trainer_addr = *trainer_addr;
    wait_for("the trainer's skipped run", Duration::from_secs(60), || async {
        let m = metrics_text(&client, trainer_addr).await;
        m.contains("recsys_trainer_waiting_for_data 1")
            && !m.contains("recsys_trainer_runs_total{outcome=\"skipped\"} 0")
    })
    .await;
    assert_eq!(model::artifact::current_version(&root).unwrap(), None, "no model below the minimum");

    // From here on, clients read all the time: no answer may be a 5xx.
    let running = Arc::new(AtomicBool::new(true));
    let poller = {
        let (client, api, running, users) = (client.clone(), api.clone(), running.clone(), users.clone());
        tokio::spawn(async move {
            let (mut requests, mut failures, mut degraded) = (0u64, Vec::new(), 0u64);
            let mut sources = BTreeMap::<String, u64>::new();
            let mut n = 0usize;
            while running.load(Ordering::Relaxed) {
                for url in [
                    format!("{api}/v1/recommendations/{}?k=10", users[n % users.len()]),
                    format!("{api}/v1/recommendations/d1-cold-{n}?k=5"),
                    format!("{api}/v1/popular?k=5"),
                    format!("{api}/v1/popular?window=1h&k=5"),
                ] {
                    let (s, v) = get_json(&client, &url).await;
                    requests += 1;
                    if s >= 500 {
                        failures.push(format!("{url}: {s} {v}"));
                    }
                    // 200 from memory when Redis was slower than 50 ms (the trainer shares the 2 cores).
                    degraded += u64::from(v["degraded"] == true);
                    if let Some(src) = v["source"].as_str() {
                        *sources.entry(format!("{src}/{}", v["model_version"].as_str().unwrap_or("?"))).or_default() +=
                            1;
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (requests, failures, degraded, sources)
        })
    };

    // 3. More events: past the minimum, the trainer trains by itself.
    let second: Vec<Value> = users.iter().enumerate().flat_map(|(n, u)| events_of(n, u, 2)).collect();
    retried += post_all(&client, ingest.addr, &second).await;
    let asked = Instant::now();
    // The run is recorded once its publication (Redis, the announcement) is done.
    wait_for("the first model, trained and published by the schedule", Duration::from_secs(240), || async {
        metrics_text(&client, trainer_addr).await.contains("recsys_trainer_runs_total{outcome=\"promoted\"} 1")
    })
    .await;
    let version = model::artifact::current_version(&root).unwrap().expect("CURRENT names the promoted model");
    eprintln!("model {version} promoted and published {:?} after the events passed the minimum", asked.elapsed());
    let m = metrics_text(&client, trainer_addr).await;
    assert!(m.contains("recsys_trainer_waiting_for_data 0"), "{m}");
    assert!(m.contains("recsys_trainer_runs_total{outcome=\"failed\"} 0"), "{m}");
    // Announced: serving swaps to it (its CURRENT poll is off in this config).
    wait_for("serving to serve the model", Duration::from_secs(60), || async {
        let (s, v) = get_json(&client, &format!("{api}/v1/popular?window=model&k=1")).await;
        s == 200 && v["model_version"] == version.as_str()
    })
    .await;

    // 4. Every shopper personal, from this model, without a restart.
    let announced = Instant::now();
    let mut pending: Vec<String> = users.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "{} of {USERS} shoppers still without a personal list", pending.len());
        let mut still = Vec::new();
        for u in pending {
            let (s, v) = get_json(&client, &format!("{api}/v1/recommendations/{u}?k=10")).await;
            if !(s == 200 && v["source"] == "personal" && v["model_version"] == version.as_str()) {
                still.push(u);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    eprintln!("all {USERS} shoppers personal {:?} after serving swapped", announced.elapsed());
    // The live ranking keeps answering "trending" beside the model.
    let (s, v) = get_json(&client, &format!("{api}/v1/popular?window=1h&k=3")).await;
    assert_eq!((s, v["model_version"].as_str()), (200, Some(LIVE_POPULAR_VERSION)), "{v}");
    let (s, v) = get_json(&client, &format!("{api}/v1/popular?k=3")).await;
    assert_eq!((s, v["model_version"].as_str(), v["window"].as_str()), (200, Some(version.as_str()), Some("model")));

    running.store(false, Ordering::Relaxed);
    let (requests, failures, degraded, sources) = poller.await.unwrap();
    eprintln!(
        "{requests} requests while the model arrived ({degraded} degraded): {sources:?}; {retried} ingest batches retried"
    );
    assert!(failures.is_empty(), "{} of {requests} requests failed: {failures:#?}", failures.len());
    assert!(sources.contains_key(&format!("popular/{LIVE_POPULAR_VERSION}")), "{sources:?}");
    assert!(sources.contains_key(&format!("personal/{version}")), "{sources:?}");

    // Tracking counts the day-one impressions under their own version.
    wait_for("live-popular impressions in /v1/stats", Duration::from_secs(60), || async {
        let (s, v) = get_json(&client, &format!("{api}/v1/stats")).await;
        s == 200
            && v["arms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["model_version"] == LIVE_POPULAR_VERSION && a["impressions"].as_u64().unwrap_or(0) > 0)
    })
    .await;

    // Nothing exited or restarted along the way.
    assert!(!ingest.exited() && !updater.exited() && !serving.exited() && !trainer.2.is_finished());
    assert!(!tracking.1.is_finished());
    let (_, trainer_stop, trainer_task, _) = trainer;
    trainer_stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), trainer_task).await.unwrap().unwrap().unwrap();
    tracking.0.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), tracking.1).await.unwrap().unwrap().unwrap();
    serving.stop().await;
    updater.stop().await;
    ingest.stop().await;
    cleanup_redis(&shared.redis.prefix).await;
}
