//! Shared by the integration tests: reading a topic back, whole; the
//! broker of the suites (`testkit::services`).
#![allow(dead_code, clippy::unwrap_used)]

#[allow(unused_imports)] // not every test binary needs the broker
pub use testkit::services::broker;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads every message of `topic` (all partitions, from the beginning up to
/// the high watermark at the time of the call), in partition then offset order.
pub fn read_topic(brokers: &str, topic: &str, timeout: Duration) -> Vec<Got> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ingest-test-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let md = consumer.fetch_metadata(Some(topic), timeout).expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut want: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, timeout).expect("watermarks");
        assert_eq!(lo, 0, "partition {p} of {topic} starts at {lo}");
        if hi > 0 {
            want.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
    }
    let mut out = Vec::new();
    if want.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut done: HashMap<i32, i64> = HashMap::new();
    while want.iter().any(|(p, hi)| done.get(p).copied().unwrap_or(0) < *hi) {
        assert!(Instant::now() < deadline, "timed out reading {topic}: have {done:?}, want {want:?}");
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("consume");
        done.insert(m.partition(), m.offset() + 1);
        out.push(Got {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    out.sort_by_key(|g| (g.partition, g.offset));
    out
}

/// Total messages in `topic` (sum of the high watermarks).
pub fn count(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("consumer");
    let t = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), t).expect("metadata");
    md.topics()[0].partitions().iter().map(|p| consumer.fetch_watermarks(topic, p.id(), t).expect("watermarks").1).sum()
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
