//! `recsys-ingest replay` against a bare rdkafka producer sending the same
//! messages pre-serialized, into the same broker with the same producer
//! settings (acks=all, idempotent, lz4, linger): prints both rates and their
//! ratio (target ≥ 0.8). Each run gets fresh topics.
//!
//! `scripts/dev-up.sh`
//! `cargo run --release -p batch-trainer -- generate --out /tmp/rr --events 100000`
//! `cargo run --release -p ingest --example bench_replay -- /tmp/rr/events.csv`
//! (broker from `RECSYS_TEST_KAFKA`, default 127.0.0.1:9092).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingest::replay::{Pace, ReplayOptions};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

async fn fresh(brokers: &str, tag: &str) -> ingest::Settings {
    let mut s = ingest::Settings::default();
    s.kafka.brokers = brokers.to_owned();
    s.kafka.partitions = 3;
    s.kafka.topic_prefix = format!("bench-{tag}-{:08x}.", rand::random::<u32>());
    s.ingest.min_ts = 0;
    ingest::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    s
}

/// RetailRocket line → (key, the event JSON ingest would produce).
fn serialize(line: &str) -> Option<(String, Vec<u8>)> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() < 4 || f[0] == "timestamp" {
        return None;
    }
    let mut v = serde_json::json!({"ts": f[0].parse::<i64>().ok()?, "user_id": f[1], "item_id": f[3], "event": f[2]});
    if let Some(t) = f.get(4).filter(|t| !t.is_empty()) {
        v["transaction_id"] = serde_json::Value::String((*t).to_owned());
    }
    Some((f[1].to_owned(), serde_json::to_vec(&v).ok()?))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let file = PathBuf::from(std::env::args().nth(1).expect("usage: bench_replay EVENTS.csv"));
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let text = std::fs::read_to_string(&file).unwrap();
    let msgs: Vec<(String, Vec<u8>)> = text.lines().filter_map(serialize).collect();
    println!("{} messages from {}", msgs.len(), file.display());

    // Bare producer: same config, pre-serialized payloads, the same bound on
    // deliveries in flight as replay.
    let s = fresh(&brokers, "bare").await;
    let p: FutureProducer = s.producer_config().create().unwrap();
    let topic = s.kafka.topic(schemas::topics::EVENTS);
    let start = Instant::now();
    let mut pending = VecDeque::new();
    for (k, v) in &msgs {
        loop {
            match p.send_result(FutureRecord::<[u8], [u8]>::to(&topic).key(k.as_bytes()).payload(v)) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err((_, _)) => {
                    if let Some(f) = pending.pop_front() {
                        f.await.unwrap().map_err(|(e, _)| e).unwrap();
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        if pending.len() >= s.ingest.replay_max_in_flight {
            pending.pop_front().unwrap().await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let bare = msgs.len() as f64 / start.elapsed().as_secs_f64();
    println!("bare producer: {bare:.0} messages/s");

    let s = fresh(&brokers, "replay").await;
    let p = ingest::kafka::producer(&s).unwrap();
    let opts = ReplayOptions { file, pace: Pace::Max, progress: false };
    let sum = ingest::replay::replay(&s, &p, &opts).await.unwrap();
    let replay = sum.events_per_second();
    println!(
        "recsys-ingest replay: {replay:.0} messages/s (sent {}, rejected {}, failed {}); ratio {:.2} (target >= 0.80)",
        sum.sent,
        sum.rejected,
        sum.failed,
        replay / bare
    );
}
