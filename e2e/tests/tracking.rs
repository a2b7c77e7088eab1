//! Tracking across processes, against the real broker and Redis (see
//! `tracking/tests/broker.rs` for the environment variables): the scripted
//! scenario of `tracking/tests/support` is produced in two halves; the task is
//! killed (aborted, no graceful shutdown, no final commit) after applying part
//! of the first, a new one finishes; the counts must be exactly the
//! scenario's in Redis, in the `/metrics` of the updater hosting the task and
//! in serving's `/v1/stats`. Then a task in a fresh consumer group re-reads
//! both topics from the start (a restart whose Kafka commits were all lost):
//! nothing changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tracking/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use support::*;
use tower::ServiceExt;
use tracking::Settings;

/// `/metrics` of an updater process hosting this tracking task.
async fn updater_metrics(m: &tracking::Metrics) -> String {
    let app = updater::http::router_with(
        updater::Metrics::new().unwrap(),
        updater::ModelHandle::default(),
        vec![m.registry().clone()],
    );
    let resp = app.oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert!(resp.status().is_success());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains("recsys_updater_events_total"), "the updater's own metrics are there too");
    text
}

/// `GET /v1/stats` of a serving instance on the same Redis prefix.
async fn v1_stats(s: &Settings) -> Value {
    let ss = serving::Settings { redis: s.redis.clone(), kafka: s.kafka.clone(), ..Default::default() };
    let metrics = serving::Metrics::new().unwrap();
    let producer = serving::impressions::producer(&ss, &metrics).unwrap();
    let (publisher, _task) = serving::impressions::start(
        producer,
        ss.kafka.topic(schemas::topics::IMPRESSIONS),
        16,
        metrics.clone(),
        Duration::from_millis(100),
    );
    let redis = common::redis_conn::connect_lazy(&ss.redis).unwrap();
    let state = serving::AppState::new(
        ss.serving.clone(),
        ss.redis.keys(),
        redis,
        serving::CatalogHandle::default(),
        publisher,
        metrics,
    );
    let app = serving::http::router(state);
    let resp = app.oneshot(Request::get("/v1/stats").body(Body::empty()).unwrap()).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_stream_counts_exactly_once_across_a_kill_and_a_replay() {
    let Some(brokers) = broker() else { return };
    let t = tag();
    let s = settings(&brokers, &t).await;
    let mut conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let p = producer(&brokers);
    let recs = interleaved(&t);
    let total = recs.len();
    let (first, second) = recs.split_at(total * 2 / 3);

    // 1. The first two thirds; kill the task once it applied some of them.
    produce(&p, &s, first).await;
    let a = start(&s).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = applied(&mut conn, &s).await.values().sum();
        if n >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the first task applied nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.task.abort();
    let _ = a.task.await;
    drop(a.stop);
    let partly: i64 = applied(&mut conn, &s).await.values().sum();
    eprintln!("killed after {partly} of {} produced records", first.len());

    // 2. The rest; a new task (same group) finishes.
    produce(&p, &s, second).await;
    let b = start(&s).await;
    wait_all_applied(&mut conn, &s, Duration::from_secs(60)).await;
    let keys = s.redis.keys();
    assert_counters(&mut conn, &keys).await;

    // /metrics: each process counts what it applied. The Redis counters above
    // are the exactly-once ones; the first task was aborted, possibly between
    // its script (counted in Redis) and its metric increments, so the sum of
    // the two processes' metrics may miss that last batch, never more.
    let (ta, tb) = (updater_metrics(&a.metrics).await, updater_metrics(&b.metrics).await);
    let applied_records = |text: &str| {
        metric(text, "recsys_tracking_records_total", "outcome=\"applied\",topic=\"impressions\"")
            + metric(text, "recsys_tracking_records_total", "outcome=\"applied\",topic=\"events\"")
    };
    let (ra, rb) = (applied_records(&ta), applied_records(&tb));
    assert!(ra + rb <= total as f64, "no record counted twice: {ra} + {rb} of {total}");
    assert_eq!(rb, (total as i64 - partly) as f64, "the second task applied exactly what the first had not");
    for (variant, version, want) in expected() {
        let l = format!("model_version=\"{version}\",variant=\"{}\"", variant.as_str());
        let sum = |name: &str| metric(&ta, name, &l) + metric(&tb, name, &l);
        assert!(sum("recsys_tracking_impressions_total") <= want.impressions as f64, "{l}");
        assert!(sum("recsys_tracking_clicks_total") <= want.clicks as f64, "{l}");
        assert!(sum("recsys_tracking_purchases_total") <= want.purchases as f64, "{l}");
    }

    // /v1/stats: the same numbers, with rates, intervals and the A/B comparison.
    let stats = v1_stats(&s).await;
    let arms = stats["arms"].as_array().unwrap();
    let rows: Vec<(String, String, u64, u64, u64, u64)> = arms
        .iter()
        .map(|a| {
            let n = |f: &str| a[f].as_u64().unwrap();
            (
                a["variant"].as_str().unwrap().to_owned(),
                a["model_version"].as_str().unwrap().to_owned(),
                n("impressions"),
                n("clicks"),
                n("carts"),
                n("purchases"),
            )
        })
        .collect();
    let want: Vec<(String, String, u64, u64, u64, u64)> = expected()
        .into_iter()
        .map(|(v, m, c)| (v.as_str().to_owned(), m.to_owned(), c.impressions, c.clicks, c.carts, c.purchases))
        .collect();
    assert_eq!(rows, want);
    let als_v1 = &arms[0];
    assert!(
        close(&als_v1["revenue"], 25.5) && close(&als_v1["ctr"], 0.6) && close(&als_v1["revenue_per_impression"], 5.1)
    );
    assert!(close(&als_v1["conversion_rate"], 0.4) && close(&als_v1["add_to_cart_rate"], 0.2));
    let ci = &als_v1["ctr_ci95"];
    assert!(ci["low"].as_f64().unwrap() < 0.6 && ci["high"].as_f64().unwrap() > 0.6, "{ci}");
    // v1: control (popular) CTR 3/3, treatment (als) 3/5: pooled 6/8,
    // se = sqrt(0.75 · 0.25 · (1/3 + 1/5)) = 0.316228, z = −1.264911, p = 0.205903, lift −0.4.
    let cmp = stats["comparisons"].as_array().unwrap();
    let ctr = cmp.iter().find(|c| c["model_version"] == "v1" && c["metric"] == "ctr").unwrap();
    assert!(close(&ctr["control_rate"], 1.0) && close(&ctr["treatment_rate"], 0.6), "{ctr}");
    assert!(close(&ctr["relative_lift"], -0.4) && close(&ctr["z"], -1.264_911_1), "{ctr}");
    assert!(close(&ctr["p_value"], 0.205_903_2), "{ctr}");
    let conv = cmp.iter().find(|c| c["model_version"] == "v1" && c["metric"] == "conversion_rate").unwrap();
    assert!(close(&conv["z"], 0.188_561_8) && close(&conv["p_value"], 0.850_436_3), "{conv}");

    // 3. A task in a fresh group re-reads everything: all duplicates, nothing counted.
    let mut s2 = s.clone();
    s2.tracking.group_id = format!("tt-{t}-replay");
    s2.tracking.batch_max_records = 64;
    let c = start(&s2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = c.metrics.render();
        let dup = metric(&text, "recsys_tracking_records_total", "outcome=\"duplicate\",topic=\"impressions\"")
            + metric(&text, "recsys_tracking_records_total", "outcome=\"duplicate\",topic=\"events\"");
        if dup >= total as f64 {
            assert_eq!(dup, total as f64);
            assert_eq!(applied_records(&text), 0.0);
            assert!(!text.contains("recsys_tracking_impressions_total{"), "no outcome counted by the replay");
            break;
        }
        assert!(Instant::now() < deadline, "the replay did not read everything: {dup} of {total}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_counters(&mut conn, &keys).await;

    // Graceful stops.
    for r in [b, c] {
        let _ = r.stop.unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), r.task).await.unwrap().unwrap().unwrap();
    }
    cleanup(&mut conn, &s.redis.prefix).await;
}
