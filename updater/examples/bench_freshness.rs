//! End-to-end freshness through the real broker and Redis: events produced to
//! `recsys.events` at a fixed rate for a fixed time, consumed by an in-process
//! updater with the shipped settings; prints p50 / p90 / p99 of "event produced
//! → its user's list written to Redis" (the updater's own histogram,
//! interpolated within buckets), the updater's own share of it ("batch's first
//! message in the updater's hands → list written", no broker) and the throughput.
//!
//! `scripts/dev-up.sh; cargo run --release -p updater --example bench_freshness -- RATE SECONDS [BATCH_WAIT_MS]`
//! (env `RECSYS_TEST_KAFKA`, `RECSYS_TEST_REDIS` as in the tests).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use schemas::{Event, EventKind, ItemId, UserId};

fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let want = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= want {
            if c == prev.1 {
                return le;
            }
            return prev.0 + (le - prev.0) * (want - prev.1) / (c - prev.1);
        }
        prev = (le, c);
    }
    f64::INFINITY
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<f64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let rate = args.first().copied().unwrap_or(1000.0);
    let seconds = args.get(1).copied().unwrap_or(60.0);
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let tag = format!("{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let mut s = updater::Settings::default();
    s.kafka.brokers = brokers.clone();
    s.kafka.topic_prefix = format!("bench-{tag}.");
    if let Ok(u) = std::env::var("RECSYS_TEST_REDIS") {
        s.redis.url = u;
    }
    s.redis.prefix = format!("bench-{tag}:");
    s.model.artifacts_dir = dir.path().to_owned();
    s.updater.group_id = format!("bench-{tag}");
    if let Some(w) = args.get(2) {
        s.updater.batch_max_wait_ms = *w as u64;
    }
    let spec = SyntheticSpec { users: 5_000, items: 20_000, factors: 64, ..SyntheticSpec::default() };
    synthetic_artifact(&spec).write(dir.path()).unwrap();
    model::artifact::set_current(dir.path(), &spec.version).unwrap();
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let deps = updater::Deps::connect(&s, listener).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(updater::run(s.clone(), deps, async move {
        let _ = rx.await;
    }));
    // Every partition assigned before the first event: a stream that starts
    // during the group join queues up a backlog whose first batches are
    // hundreds of events, a start-up cost rather than the steady state.
    let assigned = || async {
        let t = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        t.lines()
            .find(|l| l.starts_with("recsys_updater_assigned_partitions "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let joined = Instant::now();
    while assigned().await < s.kafka.partitions {
        assert!(joined.elapsed() < Duration::from_secs(60), "the group join took over a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let topic = s.kafka.topic(schemas::topics::EVENTS);
    let n = (rate * seconds) as usize;
    // One event through first, delivered and applied: the first produce to a
    // fresh topic (metadata, the idempotent producer's id) holds the next
    // hundreds of events back and lands them as one burst, a start-up cost
    // rather than the steady state. It is counted in the figures (n + 1 events).
    let warm = Event::new(
        schemas::now_ms(),
        UserId::parse("warmup").unwrap(),
        ItemId::parse(&item_id(0)).unwrap(),
        EventKind::View,
    );
    p.send(FutureRecord::<[u8], [u8]>::to(&topic).key(b"warmup").payload(&warm.to_json()), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    loop {
        let t = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        if t.lines().any(|l| l == "recsys_updater_events_total{outcome=\"applied\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let user = UserId::parse(&format!("f{}", x % 50_000)).unwrap();
        let item = ItemId::parse(&item_id(((x >> 20) % spec.items as u64) as usize)).unwrap();
        let now = schemas::now_ms();
        let payload = Event::new(now, user.clone(), item, EventKind::View).to_json();
        while let Err((e, _)) =
            p.send_result(FutureRecord::<[u8], [u8]>::to(&topic).key(user.as_str().as_bytes()).payload(&payload))
        {
            eprintln!("enqueue: {e}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let due = Duration::from_secs_f64((k + 1) as f64 / rate);
        if let Some(w) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(w).await;
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let sent_s = start.elapsed().as_secs_f64();
    // Let the tail drain.
    let mut text = String::new();
    for _ in 0..200 {
        text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
        let applied = text
            .lines()
            .find(|l| l.starts_with("recsys_updater_events_total{outcome=\"applied\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if applied as usize > n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let buckets = |name: &str, label: &str| -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")) && l.contains(label))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let c: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, c))
            })
            .collect();
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
        b
    };
    let fresh = buckets("recsys_updater_freshness_seconds", "");
    let own = buckets("recsys_updater_processing_seconds", "");
    let count = fresh.last().map_or(0.0, |b| b.1);
    let q = |b: &[(f64, f64)], p: f64| quantile(b, p) * 1000.0;
    println!(
        "broker tansu/sqlite (or RECSYS_TEST_KAFKA), rate {rate}/s for {seconds} s: sent {n} in {sent_s:.1} s ({:.0}/s), \
         applied {count}; freshness (produced -> list written) p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms; \
         the updater's own share (batch opened -> list written) p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        n as f64 / sent_s,
        q(&fresh, 0.5),
        q(&fresh, 0.9),
        q(&fresh, 0.99),
        q(&own, 0.5),
        q(&own, 0.9),
        q(&own, 0.99),
    );
    // Where the time goes: mean seconds per batch stage, and batch sizes.
    let val = |name: &str| -> f64 {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    for stage in ["apply", "fold", "write", "total"] {
        let sum = val(&format!("recsys_updater_stage_duration_seconds_sum{{stage=\"{stage}\"}}"));
        let cnt = val(&format!("recsys_updater_stage_duration_seconds_count{{stage=\"{stage}\"}}"));
        print!("{stage} {:.2} ms  ", 1000.0 * sum / cnt.max(1.0));
    }
    let batches = val("recsys_updater_batches_total");
    println!("per batch; {batches} batches, {:.1} events per batch", n as f64 / batches.max(1.0));
    // The tail by stage (the stage histogram's coarse buckets, interpolated).
    for stage in ["apply", "fold", "write", "replicate", "total"] {
        let b = buckets("recsys_updater_stage_duration_seconds", &format!("stage=\"{stage}\""));
        print!("{stage} p99 {:.1} ms  ", q(&b, 0.99));
    }
    println!("per batch");
    let retries: f64 = text
        .lines()
        .filter(|l| l.starts_with("recsys_updater_batch_retries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let slow: Vec<String> = own.iter().filter(|(le, _)| *le >= 0.05).map(|(le, c)| format!("<={le}: {c}")).collect();
    println!("batch retries {retries}; events by the updater's own share, cumulative: {}", slow.join(", "));
    let _ = tx.send(());
    let _ = task.await;
}
