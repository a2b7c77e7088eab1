//! What the live popularity rankings add to the apply script: the same
//! batches (512 events: 10,000 users, 50,000 items with a skewed popularity,
//! views / carts / purchases 90 / 8 / 2 %) applied through
//! `Store::apply` without rankings and with `[popularity]`'s two windows
//! (1 h, 24 h; 1,000 items kept), each on its own fresh key prefix of the
//! local Redis (deleted afterwards), batch by batch in alternation so both
//! see the same machine load. Prints per-batch latency quantiles.
//!
//! `cargo run -p updater --example bench_apply [-- BATCHES]` (the dev profile is
//! optimised; the time is spent in Redis)

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use schemas::{EventKind, ItemId, UserId, Window};
use updater::store::{ApplyEvent, LiveRankings, Store};

fn batches(n: usize, size: usize) -> Vec<Vec<ApplyEvent>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let now = schemas::now_ms();
    let mut offset = 0i64;
    (0..n)
        .map(|_| {
            (0..size)
                .map(|_| {
                    let r = next();
                    // Skew: the square of a uniform draw favours low item numbers.
                    let u = (r % 50_000) as f64 / 50_000.0;
                    let item = (u * u * 50_000.0) as u64;
                    let kind = match (r >> 32) % 100 {
                        0..=1 => EventKind::Transaction,
                        2..=9 => EventKind::AddToCart,
                        _ => EventKind::View,
                    };
                    offset += 1;
                    ApplyEvent {
                        offset,
                        user: UserId::parse(&format!("u{}", (r >> 16) % 10_000)).unwrap(),
                        item: ItemId::parse(&item.to_string()).unwrap(),
                        kind,
                        ts: now - 3_600_000 + offset,
                        unknown_item: false,
                    }
                })
                .collect()
        })
        .collect()
}

async fn store(live: LiveRankings) -> (Store, String) {
    let cfg = common::RedisConfig { prefix: format!("bench-apply-{:x}:", rand::random::<u64>()), ..Default::default() };
    let conn = common::redis_conn::connect(&cfg).await.unwrap();
    (Store::new(conn, cfg.keys(), 500, 0).with_live_rankings(live), cfg.prefix)
}

async fn apply(store: &Store, b: &[ApplyEvent]) -> Duration {
    let t = Instant::now();
    store.apply("bench", 0, b).await.unwrap();
    t.elapsed()
}

async fn cleanup(store: &Store, prefix: &str) {
    let mut c = store.conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap();
    for chunk in keys.chunks(5_000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut c).await.unwrap();
    }
}

fn q(t: &[Duration], p: f64) -> f64 {
    t[((t.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).map_or(400, |a| a.parse().unwrap());
    let b = batches(n, 512);
    let live = LiveRankings {
        windows: vec![Window::parse("1h").unwrap(), Window::parse("24h").unwrap()],
        size: 1_000,
        weights: model::EventWeights::default(),
    };
    let (plain, p1) = store(LiveRankings::default()).await;
    let (ranked, p2) = store(live).await;
    let (mut tp, mut tr) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, batch) in b.iter().enumerate() {
        if i % 2 == 0 {
            tp.push(apply(&plain, batch).await);
            tr.push(apply(&ranked, batch).await);
        } else {
            tr.push(apply(&ranked, batch).await);
            tp.push(apply(&plain, batch).await);
        }
    }
    cleanup(&plain, &p1).await;
    cleanup(&ranked, &p2).await;
    for (name, mut t) in [("histories only", tp), ("with rankings (1h, 24h)", tr)] {
        t.sort();
        println!(
            "{name:>24}: {n} batches of 512: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            q(&t, 0.5),
            q(&t, 0.9),
            q(&t, 0.99),
            q(&t, 1.0)
        );
    }
}
