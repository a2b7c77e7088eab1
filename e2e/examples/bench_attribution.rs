//! Per-event cost of the updater with and without attribution, at a given
//! event rate (default 5,000 events/s), against the real local Redis.
//!
//! A synthetic stream (Zipf-like users, one impression of 10 items per two
//! events, a fifth of the events on an item the user was just shown, a few
//! carts and purchases) is cut into the batches each task would see at that
//! rate — each task closes a batch after its default `batch_max_wait_ms` or
//! batch size (updater: 5 ms or 512 events; tracking: see
//! `TrackingConfig::default`) — and each batch goes through, back to back:
//! - updater: parse → `store.apply` (Redis script) → fold-in + scoring
//!   (`compute::refresh`, 64 factors over 50,000 items) → `write_recs`;
//! - tracking: parse both topics → `Store::attribute` (Redis script).
//!
//! The figure of merit is tracking's time per event over the updater's (both
//! include their Redis round trips; the Lua runs on the Redis server).
//!
//! Here, in `e2e`, because it runs both processes' code; tracking does not
//! depend on the updater.
//!
//! `cargo run [--release] -p e2e --example bench_attribution [-- RATE SECONDS ITEMS FACTORS [TRACKING_WAIT_MS]]`

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use schemas::{Event, EventKind, EventLimits, Impression, ItemId, ModelVersion, RecId, Source, UserId, Variant};
use tracking::store::{Record, Store};
use updater::compute::{refresh, ComputeParams, NewItems};
use updater::config::FoldInSolver;
use updater::store::ApplyEvent;
use updater::ServedModel;

fn model(items: usize, f: usize) -> ServedModel {
    ServedModel::from_artifact(testkit::bench_model::artifact(items, f), "0".repeat(64)).unwrap()
}

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Skewed towards small values (a few heavy users / popular items).
    fn skewed(&mut self, n: u64) -> u64 {
        let r = self.next() % 1_000_000;
        r * r / 1_000_000 * n / 1_000_000
    }
}

/// One stream element as it would arrive from Kafka: topic (0 impressions,
/// 1 events), partition, offset, JSON payload, arrival time (s).
struct Msg {
    topic: usize,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    at: f64,
}

fn stream(rate: f64, seconds: f64, items: u64, users: u64) -> Vec<Msg> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut shown: Vec<Vec<u64>> = vec![Vec::new(); users as usize];
    let mut offsets = [[0i64; 6]; 2];
    let mut out = Vec::new();
    let n_events = (rate * seconds) as u64;
    let t0 = 1_764_000_000_000i64;
    let version = ModelVersion::parse("bench").unwrap();
    for n in 0..n_events {
        let at = n as f64 / rate;
        let ts = t0 + (at * 1000.0) as i64;
        let u = rng.skewed(users);
        let user = UserId::parse(&format!("u{u}")).unwrap();
        let partition = (u % 6) as i32;
        if n % 2 == 0 {
            let list: Vec<u64> = (0..10).map(|_| rng.skewed(items)).collect();
            let imp = Impression {
                rec_id: RecId::parse(&format!("r{n}")).unwrap(),
                ts,
                user_id: user.clone(),
                items: list.iter().map(|i| ItemId::from_u64(*i)).collect(),
                variant: if u.is_multiple_of(2) { Variant::Als } else { Variant::Popular },
                model_version: version.clone(),
                source: Source::Personal,
            };
            shown[u as usize] = list;
            let o = &mut offsets[0][partition as usize];
            out.push(Msg { topic: 0, partition, offset: *o, payload: imp.to_json(), at });
            *o += 1;
        }
        let item = if rng.next().is_multiple_of(5) && !shown[u as usize].is_empty() {
            let l = &shown[u as usize];
            l[(rng.next() % l.len() as u64) as usize]
        } else {
            rng.skewed(items)
        };
        let kind = match rng.next() % 100 {
            0..=2 => EventKind::Transaction,
            3..=9 => EventKind::AddToCart,
            _ => EventKind::View,
        };
        let mut e = Event::new(ts, user, ItemId::from_u64(item), kind);
        if kind == EventKind::Transaction {
            e = e.with_purchase(None, Some(schemas::Revenue::new(10.0).unwrap())).unwrap();
        }
        let o = &mut offsets[1][partition as usize];
        out.push(Msg { topic: 1, partition, offset: *o, payload: e.to_json(), at });
        *o += 1;
    }
    out
}

/// Cuts the stream into the batches a task closing a batch `wait` after its
/// first message would see (capped at `max` messages).
fn batches<'a>(msgs: &'a [&'a Msg], wait: f64, max: usize) -> Vec<&'a [&'a Msg]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < msgs.len() {
        let until = msgs[start].at + wait;
        let mut end = start + 1;
        while end < msgs.len() && msgs[end].at < until && end - start < max {
            end += 1;
        }
        out.push(&msgs[start..end]);
        start = end;
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|a| a.parse::<f64>().ok()).unwrap_or(d);
    let (rate, seconds, items, factors) =
        (arg(0, 5_000.0), arg(1, 6.0), arg(2, 50_000.0) as usize, arg(3, 64.0) as usize);
    let users = 20_000;
    let url = testkit::services::redis_url();
    let prefix = format!("bench-{:x}:", rand::random::<u32>());
    let rc = common::RedisConfig { url, prefix: prefix.clone(), ..Default::default() };
    let conn = common::redis_conn::connect(&rc).await.unwrap();
    let keys = rc.keys();

    let m = std::sync::Arc::new(model(items, factors));
    let msgs = stream(rate, seconds, items as u64, users);
    let events: Vec<&Msg> = msgs.iter().filter(|m| m.topic == 1).collect();
    let all: Vec<&Msg> = msgs.iter().collect();
    let n_events = events.len();
    println!(
        "stream: {n_events} events + {} impressions at {rate} events/s ({seconds} s), {users} users, {items} items, {factors} factors",
        msgs.len() - n_events
    );

    // Updater: batches of 5 ms of events.
    let ustore = updater::store::Store::new(conn.clone(), keys.clone(), 500, 3_600);
    let params = ComputeParams {
        solver: FoldInSolver::Cholesky,
        k: 100,
        rerank: model::rerank::RerankConfig { enabled: false, ..Default::default() },
        score_block: 128,
        live: Default::default(),
    };
    let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
    let now = schemas::now_ms();
    let ucfg = updater::config::UpdaterConfig::default();
    let ub = batches(&events, ucfg.batch_max_wait_ms as f64 / 1000.0, ucfg.batch_max_events);
    let started = Instant::now();
    let mut redis_time = Duration::ZERO;
    for b in &ub {
        let t = Instant::now();
        let mut by_p: std::collections::BTreeMap<i32, Vec<ApplyEvent>> = Default::default();
        for msg in *b {
            let e = Event::parse_json_with(&msg.payload, now, &limits).unwrap();
            by_p.entry(msg.partition).or_default().push(ApplyEvent {
                offset: msg.offset,
                user: e.user_id().clone(),
                item: e.item_id().clone(),
                kind: e.kind(),
                ts: e.ts(),
                unknown_item: false,
            });
        }
        // Partitions concurrently, as the pipeline does.
        let applied = futures::future::join_all(by_p.iter().map(|(p, evs)| ustore.apply("ev", *p, evs))).await;
        let mut hs = Vec::new();
        for a in applied {
            hs.extend(a.unwrap().histories);
        }
        redis_time += t.elapsed();
        let m2 = m.clone();
        let p2 = params.clone();
        let lists = tokio::task::spawn_blocking(move || refresh(&m2, &NewItems::default(), &p2, &hs, 0)).await.unwrap();
        let t = Instant::now();
        updater::store::write_recs(&mut conn.clone(), &keys, &lists, 3_600).await.unwrap();
        redis_time += t.elapsed();
    }
    let updater_s = started.elapsed().as_secs_f64();

    // Tracking: batches of 20 ms of both topics.
    let mut cfg = tracking::TrackingConfig::default();
    if let Some(ms) = args.get(4).and_then(|a| a.parse().ok()) {
        cfg.batch_max_wait_ms = ms;
    }
    let tstore = Store::new(conn.clone(), keys.clone(), cfg.windows());
    let tb = batches(&all, cfg.batch_max_wait_ms as f64 / 1000.0, cfg.batch_max_records);
    let topics = ["imp", "ev"];
    let started = Instant::now();
    let mut attributed = 0u64;
    let mut tracking_redis = Duration::ZERO;
    for b in &tb {
        let mut records = Vec::with_capacity(b.len());
        let mut highest: std::collections::BTreeMap<(usize, i32), i64> = Default::default();
        for msg in *b {
            let h = highest.entry((msg.topic, msg.partition)).or_insert(msg.offset);
            *h = (*h).max(msg.offset);
            let (topic, partition, offset) = (msg.topic, msg.partition, msg.offset);
            records.push(if msg.topic == 0 {
                Record::Impression {
                    topic,
                    partition,
                    offset,
                    impression: Impression::parse_json(&msg.payload).unwrap(),
                }
            } else {
                Record::Event {
                    topic,
                    partition,
                    offset,
                    event: Event::parse_json_with(&msg.payload, now, &limits).unwrap(),
                }
            });
        }
        let highest: Vec<_> = highest.into_iter().collect();
        let t = Instant::now();
        let o = tstore.attribute(&topics, &records, &highest).await.unwrap();
        tracking_redis += t.elapsed();
        attributed += o.attributed_on_event + o.attributed_late;
    }
    let tracking_s = started.elapsed().as_secs_f64();

    let per = |s: f64| s / n_events as f64 * 1e6;
    println!(
        "updater : {} batches ({} ms / {} events), {:.1} µs/event ({:.1} of it Redis), {:.0} events/s sustainable",
        ub.len(),
        ucfg.batch_max_wait_ms,
        ucfg.batch_max_events,
        per(updater_s),
        per(redis_time.as_secs_f64()),
        n_events as f64 / updater_s
    );
    println!(
        "tracking: {} batches ({} ms / {} records), {:.1} µs/event ({:.1} of it the script call; impressions included), {attributed} events attributed",
        tb.len(),
        cfg.batch_max_wait_ms,
        cfg.batch_max_records,
        per(tracking_s),
        per(tracking_redis.as_secs_f64())
    );
    println!(
        "attribution adds {:.1} % to the updater's per-event cost (target ≤ 10 %)",
        100.0 * tracking_s / updater_s
    );
    let mut c = conn.clone();
    // The join state the script decodes and re-encodes per touched user.
    let tk: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}track:*")).query_async(&mut c).await.unwrap();
    let mut sizes: Vec<usize> = Vec::with_capacity(tk.len());
    for k in &tk {
        sizes.push(redis::cmd("STRLEN").arg(k).query_async(&mut c).await.unwrap());
    }
    sizes.sort_unstable();
    if !sizes.is_empty() {
        println!(
            "state   : {} users, {:.0} bytes mean, p50 {}, p99 {}, max {}",
            sizes.len(),
            sizes.iter().sum::<usize>() as f64 / sizes.len() as f64,
            sizes[sizes.len() / 2],
            sizes[sizes.len() * 99 / 100],
            sizes[sizes.len() - 1]
        );
    }
    let ks: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
    for chunk in ks.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut c).await.unwrap();
    }
}
