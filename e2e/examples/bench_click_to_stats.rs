//! Click → `/v1/stats`: how long after a storefront posts a click with its
//! `rec_id` the click is counted in `GET /v1/stats`, while background events
//! flow at a fixed rate through the same processes.
//!
//! In-process, on the real broker and Redis, with the shipped settings:
//! recsys-ingest, recsys-updater with tracking beside it (as its binary runs
//! it), recsys-serving, and a synthetic model. Background: anonymous-to-
//! tracking views, add-to-carts and purchases (RetailRocket's mix) posted to
//! ingest over HTTP in batches of 10 at RATE events/s; they carry no rec_id
//! and their users were never shown a list, so every click counted comes
//! from the probes. Probes, one at a time: a fresh shopper reads
//! `/v1/recommendations` (an impression), posts a view of the first item with
//! the answer's rec_id; the time starts when ingest has answered 200 (the
//! event is in Kafka) and stops at the first `/v1/stats` answer (polled every
//! 10 ms) whose click total has grown by one.
//!
//! `scripts/dev-up.sh; cargo run --release -p e2e --example bench_click_to_stats -- [RATE [SECONDS]]`
//! (defaults 1000 events/s for 60 s; env `RECSYS_TEST_KAFKA`, `RECSYS_TEST_REDIS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
use serde_json::{json, Value};

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn total_clicks(http: &reqwest::Client, api: &str) -> u64 {
    let v: Value = http.get(format!("{api}/v1/stats")).send().await.unwrap().json().await.unwrap();
    v["arms"].as_array().unwrap().iter().map(|a| a["clicks"].as_u64().unwrap()).sum()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<f64> = std::env::args().skip(1).map(|a| a.parse().expect("RATE SECONDS")).collect();
    let rate = args.first().copied().unwrap_or(1000.0);
    let seconds = args.get(1).copied().unwrap_or(60.0);
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &brokers, &tag, &[]);
    let shared = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    common::kafka::ensure_topics(&shared.kafka, Duration::from_secs(10)).await.unwrap();
    let spec = SyntheticSpec { users: 5_000, items: 20_000, factors: 64, categories: 50, ..SyntheticSpec::default() };
    let root = dir.path().join("models");
    synthetic_artifact(&spec).write(&root).unwrap();
    model::artifact::set_current(&root, &spec.version).unwrap();

    let ingest = start_ingest(&cfg).await;
    let updater = start_updater(&cfg).await;
    let tracking = {
        let s = common::config::load_settings::<tracking::config::Settings>(Some(&cfg), no_env()).unwrap();
        let deps = tracking::Deps::connect(&s).await.unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tracking::run(s, deps, async move {
            let _ = rx.await;
        }));
        (stop, task)
    };
    let serving = start_serving(&cfg).await;
    let api = format!("http://{}", serving.addr);
    let events_url = format!("http://{}/v1/events", ingest.addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_for("serving to be ready", Duration::from_secs(30), || async {
        http.get(format!("{api}/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Consumer groups join before the clock starts.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Background load: batches of 10 events at `rate`.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent, http, url) = (stop.clone(), sent.clone(), http.clone(), events_url.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut batch_no = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..10)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let r = x % 1000;
                        let kind = if r < 967 {
                            "view"
                        } else if r < 992 {
                            "addtocart"
                        } else {
                            "transaction"
                        };
                        let item = item_id(((x >> 20) % 20_000 * ((x >> 40) % 20_000) / 20_000) as usize);
                        json!({"user_id": format!("bg{}", (x >> 8) % 200_000), "item_id": item, "event": kind})
                    })
                    .collect();
                let h = http.clone();
                let u = url.clone();
                let s = sent.clone();
                tokio::spawn(async move {
                    if let Ok(r) = h.post(u).json(&batch).send().await {
                        if r.status().is_success() {
                            s.fetch_add(10, Ordering::Relaxed);
                        }
                    }
                });
                batch_no += 1;
                let due = Duration::from_secs_f64(batch_no as f64 * 10.0 / rate);
                if let Some(w) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(w).await;
                }
            }
        })
    };

    let mut latencies = Vec::new();
    let mut post_ms = Vec::new();
    let started = Instant::now();
    let mut probe = 0u64;
    let mut clicks = total_clicks(&http, &api).await;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        probe += 1;
        let user = format!("probe-{tag}-{probe}");
        let recs: Value =
            http.get(format!("{api}/v1/recommendations/{user}?k=10")).send().await.unwrap().json().await.unwrap();
        let item = recs["items"][0]["item_id"].as_str().expect("a list").to_owned();
        let ev = json!({"user_id": user, "item_id": item, "event": "view", "rec_id": recs["rec_id"]});
        let t = Instant::now();
        let r = http.post(&events_url).json(&ev).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let posted = Instant::now();
        post_ms.push(posted.duration_since(t).as_secs_f64() * 1000.0);
        loop {
            let now = total_clicks(&http, &api).await;
            if now > clicks {
                assert_eq!(now, clicks + 1, "only probes click");
                clicks = now;
                latencies.push(posted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(posted.elapsed() < Duration::from_secs(60), "click of {user} never counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    post_ms.sort_by(f64::total_cmp);
    println!(
        "background {:.0} events/s accepted (target {rate}), {} probes in {elapsed:.0} s",
        sent.load(Ordering::Relaxed) as f64 / elapsed,
        latencies.len()
    );
    println!(
        "click posted (ingest answered) -> counted in /v1/stats: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.9),
        quantile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    println!(
        "the POST itself (acks=all): p50 {:.0} ms, p99 {:.0} ms",
        quantile(&post_ms, 0.5),
        quantile(&post_ms, 0.99)
    );

    serving.stop().await;
    let _ = tracking.0.send(());
    tracking.1.await.unwrap().unwrap();
    updater.stop().await;
    ingest.stop().await;
    cleanup_redis(&shared.redis.prefix).await;
}
