//! The updater's refresh throughput on one Redis node against a Redis Cluster,
//! same machine, same run: EVENTS view events (50,000 users, a 20,000-item
//! 64-factor model) are produced into a fresh topic first, then an in-process
//! updater with the shipped settings consumes the backlog as fast as it can;
//! the clock runs from its first applied event to its last. Rounds alternate
//! single node and cluster so both see the same machine. Prints events/s and
//! lists written/s per run and the cluster / single ratio of the medians.
//!
//! With the cluster the updater also waits for a replica of every master it
//! wrote to (`[redis] min_replicas_acked` = 1, the shipped default there)
//! before moving its offsets: that cost is part of the figure.
//!
//! `scripts/dev-up.sh --cluster; cargo run --release -p updater --example bench_cluster -- [EVENTS] [ROUNDS]`
//! (env `RECSYS_TEST_KAFKA`, `RECSYS_TEST_REDIS`, `RECSYS_TEST_REDIS_CLUSTER`;
//! the cluster defaults to 127.0.0.1:7000-7002).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use schemas::{Event, EventKind, ItemId, UserId};

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// One run: (events/s, lists/s).
async fn run(redis: common::RedisConfig, events: usize, brokers: &str) -> (f64, f64) {
    let tag = format!("{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().unwrap();
    let mut s = updater::Settings::default();
    s.kafka.brokers = brokers.to_owned();
    s.kafka.partitions = 3;
    s.kafka.topic_prefix = format!("bench-{tag}.");
    s.redis = common::RedisConfig { prefix: format!("bench-{tag}:"), ..redis };
    s.model.artifacts_dir = dir.path().to_owned();
    s.updater.group_id = format!("bench-{tag}");
    let spec = SyntheticSpec { users: 5_000, items: 20_000, factors: 64, ..SyntheticSpec::default() };
    synthetic_artifact(&spec).write(dir.path()).unwrap();
    model::artifact::set_current(dir.path(), &spec.version).unwrap();
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let topic = s.kafka.topic(schemas::topics::EVENTS);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let now = schemas::now_ms();
    for _ in 0..events {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let user = UserId::parse(&format!("c{}", x % 50_000)).unwrap();
        let item = ItemId::parse(&item_id(((x >> 20) % spec.items as u64) as usize)).unwrap();
        let payload = Event::new(now, user.clone(), item, EventKind::View).to_json();
        // A full queue: wait for deliveries to make room.
        while p
            .send_result(FutureRecord::<[u8], [u8]>::to(&topic).key(user.as_str().as_bytes()).payload(&payload))
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let deps = updater::Deps::connect(&s, listener).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(updater::run(s.clone(), deps, async move {
        let _ = rx.await;
    }));
    let scrape = || async { reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap() };
    let applied = |t: &str| metric(t, "recsys_updater_events_total{outcome=\"applied\"}");
    let mut first: Option<(Instant, f64, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (end, text) = loop {
        let t = scrape().await;
        let a = applied(&t);
        if first.is_none() && a > 0.0 {
            first = Some((Instant::now(), a, metric(&t, "recsys_updater_users_refreshed_total")));
        }
        if a as usize >= events {
            break (Instant::now(), t);
        }
        assert!(Instant::now() < deadline, "only {a} of {events} applied in 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (start, a0, r0) = first.unwrap();
    let secs = (end - start).as_secs_f64();
    let lists = metric(&text, "recsys_updater_users_refreshed_total") - r0;
    let _ = tx.send(());
    let _ = task.await;
    let mut conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let keys = conn.scan_all(&format!("{}*", s.redis.prefix)).await.unwrap();
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await.unwrap();
    }
    ((events as f64 - a0) / secs, lists / secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let events = args.first().copied().unwrap_or(30_000);
    let rounds = args.get(1).copied().unwrap_or(2);
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let single = common::RedisConfig {
        url: std::env::var("RECSYS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ..Default::default()
    };
    let nodes: Vec<String> = std::env::var("RECSYS_TEST_REDIS_CLUSTER")
        .unwrap_or_else(|_| "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let cluster = common::RedisConfig { url: String::new(), cluster_nodes: nodes, ..Default::default() };
    let (mut se, mut sl, mut ce, mut cl) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let (e, l) = run(single.clone(), events, &brokers).await;
        println!("round {round} single node: {e:.0} events/s, {l:.0} lists/s");
        se.push(e);
        sl.push(l);
        let (e, l) = run(cluster.clone(), events, &brokers).await;
        println!("round {round} cluster:     {e:.0} events/s, {l:.0} lists/s");
        ce.push(e);
        cl.push(l);
    }
    let (se, sl, ce, cl) = (median(&mut se), median(&mut sl), median(&mut ce), median(&mut cl));
    println!(
        "median of {rounds}, {events} events each: single {se:.0} events/s {sl:.0} lists/s; cluster {ce:.0} events/s \
         {cl:.0} lists/s; cluster / single: events {:.2}, lists {:.2}",
        ce / se,
        cl / sl
    );
}
