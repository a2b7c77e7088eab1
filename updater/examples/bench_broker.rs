//! The broker's own floor under the freshness figure: messages produced at a
//! fixed rate (acks=all, idempotent, as ingest does) and consumed by a plain
//! consumer with the updater's fetch settings; prints p50 / p90 / p99 / max of
//! "produce call → message in the consumer's hands", no Redis, no fold-in.
//!
//! `cargo run --release -p updater --example bench_broker -- RATE SECONDS [NAGLE_OFF=0|1] [FETCH_WAIT_MS=5] [LINGER_MS=1]`
//! (env `RECSYS_TEST_KAFKA`, default 127.0.0.1:9092).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<f64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let rate = args.first().copied().unwrap_or(1000.0);
    let seconds = args.get(1).copied().unwrap_or(20.0);
    let nagle_off = args.get(2).copied().unwrap_or(0.0) > 0.0;
    let fetch_wait = args.get(3).copied().unwrap_or(5.0) as u64;
    let linger = args.get(4).copied().unwrap_or(1.0) as u64;
    let brokers = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let mut kafka = common::KafkaConfig { brokers: brokers.clone(), partitions: 6, ..common::KafkaConfig::default() };
    kafka.topic_prefix = format!("bb-{:08x}.", rand::random::<u32>());
    common::kafka::ensure_topics(&kafka, Duration::from_secs(10)).await.unwrap();
    let topic = kafka.topic(schemas::topics::EVENTS);

    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger.to_string());
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("group.id", format!("bb-{:08x}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait.to_string())
        .set("fetch.min.bytes", "1");
    if nagle_off {
        pc.set("socket.nagle.disable", "true");
        cc.set("socket.nagle.disable", "true");
    }
    let p: FutureProducer = pc.create().unwrap();
    let c: StreamConsumer = cc.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..kafka.partitions {
        tpl.add_partition_offset(&topic, part, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let n = (rate * seconds) as usize;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            let m = c.recv().await.unwrap();
            let sent: i64 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
            lat.push((now_us() - sent) as f64 / 1000.0);
        }
        lat
    });
    let start = Instant::now();
    for k in 0..n {
        let payload = now_us().to_string();
        let key = format!("u{}", k % 997);
        while p.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)).is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let due = Duration::from_secs_f64((k + 1) as f64 / rate);
        if let Some(w) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(w).await;
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let mut lat = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    lat.sort_by(f64::total_cmp);
    let q = |x: f64| lat[((lat.len() as f64 * x) as usize).min(lat.len() - 1)];
    println!(
        "produce -> consume, {rate}/s x {seconds} s, nagle {}, fetch.wait.max.ms {fetch_wait}, linger.ms {linger}: \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        if nagle_off { "off" } else { "on" },
        q(0.5),
        q(0.9),
        q(0.99),
        lat[lat.len() - 1]
    );
}
