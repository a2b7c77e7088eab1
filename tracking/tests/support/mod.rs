//! The scripted scenario shared by the tests: impressions and events of eight
//! users (in window, out of window, duplicates, with and without `rec_id`,
//! events before their impression, two model versions, two hours) and the
//! counts they must give, worked out by hand from the rules.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis_conn::RedisConn;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use schemas::{
    Counters, Event, EventKind, Impression, ItemId, ModelVersion, RecId, Revenue, Source, TransactionId, UserId,
    Variant,
};
// The broker, Redis, a random tag per test and its keys deleted (`cleanup`):
// the suites' one harness.
#[allow(unused_imports)] // each test binary uses some of them
pub use testkit::services::{broker, delete_keys as cleanup, redis_config, redis_url, tag};
use tracking::Settings;

/// 2025-11-24T16:00:00Z, on an hour boundary (epoch hour 490000).
pub const T0: i64 = 1_764_000_000_000;
pub const HOUR0: i64 = 490_000;
pub const MIN: i64 = 60_000;
pub const H: i64 = 3_600_000;

/// One record of the scenario, in production order.
#[derive(Debug, Clone)]
pub enum Rec {
    Imp(Impression),
    Ev(Event),
}

impl Rec {
    pub fn user(&self) -> &UserId {
        match self {
            Rec::Imp(i) => &i.user_id,
            Rec::Ev(e) => e.user_id(),
        }
    }
}

pub fn user(tag: &str, u: &str) -> UserId {
    UserId::parse(&format!("{tag}-{u}")).unwrap()
}

fn imp(tag: &str, u: &str, rec: &str, ts: i64, items: &[&str], variant: Variant, version: &str) -> Rec {
    Rec::Imp(Impression {
        rec_id: RecId::parse(&format!("{tag}-{rec}")).unwrap(),
        ts,
        user_id: user(tag, u),
        items: items.iter().map(|i| ItemId::parse(i).unwrap()).collect(),
        variant,
        model_version: ModelVersion::parse(version).unwrap(),
        source: Source::Personal,
    })
}

fn ev(tag: &str, u: &str, kind: EventKind, item: &str, ts: i64) -> Event {
    Event::new(ts, user(tag, u), ItemId::parse(item).unwrap(), kind)
}

fn view(tag: &str, u: &str, item: &str, ts: i64) -> Rec {
    Rec::Ev(ev(tag, u, EventKind::View, item, ts))
}

fn cart(tag: &str, u: &str, item: &str, ts: i64) -> Rec {
    Rec::Ev(ev(tag, u, EventKind::AddToCart, item, ts))
}

fn buy(tag: &str, u: &str, item: &str, ts: i64, tx: &str, revenue: f64) -> Rec {
    Rec::Ev(
        ev(tag, u, EventKind::Transaction, item, ts)
            .with_purchase(Some(TransactionId::parse(tx).unwrap()), Some(Revenue::new(revenue).unwrap()))
            .unwrap(),
    )
}

fn with_rec(r: Rec, tag: &str, rec: &str) -> Rec {
    match r {
        Rec::Ev(e) => Rec::Ev(e.with_rec_id(RecId::parse(&format!("{tag}-{rec}")).unwrap())),
        other => other,
    }
}

/// The scenario, grouped per user in the order each user's records are
/// produced (a user's records stay in order within each topic; across users
/// and across the two topics the order is free). `tag` makes ids unique per test.
pub fn scenario(tag: &str) -> Vec<Vec<Rec>> {
    use Variant::{Als as A, Popular as P};
    let t = tag;
    vec![
        // u1: click, cart, purchase of one impression; a second view does not
        // click again; the re-sent transaction adds no revenue.
        vec![
            imp(t, "u1", "r1", T0, &["i1", "i2", "i3"], A, "v1"),
            view(t, "u1", "i2", T0 + 5 * MIN),
            view(t, "u1", "i3", T0 + 6 * MIN),
            cart(t, "u1", "i2", T0 + 10 * MIN),
            buy(t, "u1", "i2", T0 + 2 * H, "tx1", 20.0),
            buy(t, "u1", "i2", T0 + 2 * H, "tx1", 20.0),
        ],
        // u2: out of the click window (31 min), out of the conversion window
        // (25 h), an item that was not recommended: nothing but the impression.
        vec![
            imp(t, "u2", "r2", T0, &["i1"], A, "v1"),
            view(t, "u2", "i9", T0 + MIN),
            view(t, "u2", "i1", T0 + 31 * MIN),
            cart(t, "u2", "i1", T0 + 25 * H),
        ],
        // u3: rec_id attributes directly, even for an item not in the list.
        vec![
            imp(t, "u3", "r3", T0, &["i5"], A, "v1"),
            with_rec(view(t, "u3", "i7", T0 + 2 * MIN), t, "r3"),
            with_rec(buy(t, "u3", "i7", T0 + 3 * H, "tx3", 5.5), t, "r3"),
        ],
        // u4 (control): two impressions; a view goes to the latest impression
        // showing the item; the re-sent impression counts once.
        vec![
            imp(t, "u4", "r4", T0, &["i1", "i2"], P, "v1"),
            imp(t, "u4", "r5", T0 + 10 * MIN, &["i2", "i4"], P, "v1"),
            imp(t, "u4", "r5", T0 + 10 * MIN, &["i2", "i4"], P, "v1"),
            view(t, "u4", "i2", T0 + 12 * MIN),
            view(t, "u4", "i1", T0 + 13 * MIN),
        ],
        // u5 (control): events produced before their impression.
        vec![
            view(t, "u5", "i3", T0 + 4 * MIN),
            cart(t, "u5", "i3", T0 + 5 * MIN),
            buy(t, "u5", "i3", T0 + 6 * MIN, "tx5", 7.25),
            imp(t, "u5", "r6", T0, &["i3"], P, "v1"),
        ],
        // u6: a rec_id event before its impression; a rec_id nobody served.
        vec![
            with_rec(view(t, "u6", "i8", T0 + MIN), t, "r7"),
            with_rec(view(t, "u6", "i8", T0 + 2 * MIN), t, "nope"),
            imp(t, "u6", "r7", T0, &["i8"], A, "v1"),
        ],
        // u7: another model version and the next hour; a purchase after 23 h.
        vec![
            imp(t, "u7", "r8", T0 + 65 * MIN, &["i1"], A, "v2"),
            buy(t, "u7", "i1", T0 + 65 * MIN + 23 * H, "tx7", 3.0),
        ],
        // u8: a view before the impression is not a click.
        vec![imp(t, "u8", "r9", T0 + 20 * MIN, &["i1"], A, "v1"), view(t, "u8", "i1", T0 + 10 * MIN)],
    ]
}

/// Round robin over the users: one record of each in turn (so users and
/// partitions interleave), each user's own order kept.
pub fn interleaved(tag: &str) -> Vec<Rec> {
    let mut groups: Vec<std::collections::VecDeque<Rec>> = scenario(tag).into_iter().map(Into::into).collect();
    let mut out = Vec::new();
    while groups.iter().any(|g| !g.is_empty()) {
        for g in &mut groups {
            if let Some(r) = g.pop_front() {
                out.push(r);
            }
        }
    }
    out
}

fn c(impressions: u64, clicks: u64, carts: u64, purchases: u64, revenue: f64) -> Counters {
    Counters { impressions, clicks, carts, purchases, revenue }
}

/// (variant, model version, totals) the scenario must give.
pub fn expected() -> Vec<(Variant, &'static str, Counters)> {
    vec![
        (Variant::Als, "v1", c(5, 3, 1, 2, 25.5)),
        (Variant::Als, "v2", c(1, 0, 0, 1, 3.0)),
        (Variant::Popular, "v1", c(3, 3, 1, 1, 7.25)),
    ]
}

/// (variant, model version, epoch hour, counters) of the hourly keys.
pub fn expected_hourly() -> Vec<(Variant, &'static str, i64, Counters)> {
    vec![
        (Variant::Als, "v1", HOUR0, c(5, 3, 1, 2, 25.5)),
        (Variant::Als, "v2", HOUR0 + 1, c(1, 0, 0, 1, 3.0)),
        (Variant::Popular, "v1", HOUR0, c(3, 3, 1, 1, 7.25)),
    ]
}

/// Checks the totals and hourly counters under `keys` against the scenario.
pub async fn assert_counters(conn: &mut common::redis_conn::RedisConn, keys: &schemas::RedisKeys) {
    for (variant, version, want) in expected() {
        let key = keys.stats(variant, &ModelVersion::parse(version).unwrap());
        let got = tracking::store::read_counters(conn, &key).await.unwrap();
        assert_eq!(got, want, "{key}");
    }
    for (variant, version, hour, want) in expected_hourly() {
        let key = keys.stats_hourly(variant, &ModelVersion::parse(version).unwrap(), hour);
        let got = tracking::store::read_counters(conn, &key).await.unwrap();
        assert_eq!(got, want, "{key}");
        let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(conn).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL");
    }
    let stats = conn.scan_all(&format!("{}stats:*", keys.prefix())).await.unwrap();
    assert_eq!(stats.len(), expected().len(), "no other arm was counted: {stats:?}");
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Produces `recs` in order, key = user id (each acknowledged before the next,
/// so the production order is the log order).
pub async fn produce(p: &FutureProducer, s: &Settings, recs: &[Rec]) {
    for r in recs {
        send(p, s, r, None).await;
    }
}

/// Produces `rec` to partition `partition` of its topic (not by its key).
pub async fn produce_to(p: &FutureProducer, s: &Settings, rec: &Rec, partition: i32) {
    send(p, s, rec, Some(partition)).await;
}

/// One record to its topic, keyed by its user; to `partition` when given.
async fn send(p: &FutureProducer, s: &Settings, rec: &Rec, partition: Option<i32>) {
    let [imp, ev] = tracking::topic_names(s);
    let (topic, payload) = match rec {
        Rec::Imp(i) => (&imp, i.to_json()),
        Rec::Ev(e) => (&ev, e.to_json()),
    };
    let key = rec.user().as_str().as_bytes();
    let mut record = FutureRecord::to(topic).key(key).payload(&payload);
    if let Some(n) = partition {
        record = record.partition(n);
    }
    p.send(record, Timeout::After(Duration::from_secs(10))).await.map_err(|(e, _)| e).unwrap();
}

pub fn high_watermarks(brokers: &str, topic: &str, partitions: i32) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions).map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap().1)).collect()
}

/// Applied records per topic-partition, from the Redis offsets.
pub async fn applied(conn: &mut RedisConn, s: &Settings) -> BTreeMap<(String, i32), i64> {
    let keys = s.redis.keys();
    let mut out = BTreeMap::new();
    for t in tracking::topic_names(s) {
        for p in 0..s.kafka.partitions {
            let v: Option<i64> = redis::cmd("GET").arg(keys.track_offsets(&t, p)).query_async(conn).await.unwrap();
            out.insert((t.clone(), p), v.map_or(0, |o| o + 1));
        }
    }
    out
}

pub async fn wait_all_applied(conn: &mut RedisConn, s: &Settings, timeout: Duration) {
    let mut ends = BTreeMap::new();
    for t in tracking::topic_names(s) {
        for (p, end) in high_watermarks(&s.kafka.brokers, &t, s.kafka.partitions) {
            ends.insert((t.clone(), p), end);
        }
    }
    let start = Instant::now();
    loop {
        let got = applied(conn, s).await;
        if got == ends {
            return;
        }
        assert!(start.elapsed() < timeout, "not all applied within {timeout:?}: {got:?} of {ends:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let want = format!("{name}{{{labels}}} ");
    text.lines().filter_map(|l| l.strip_prefix(&want)).filter_map(|v| v.parse::<f64>().ok()).sum()
}

/// Settings on fresh topics (3 partitions), group and key prefix.
pub async fn settings(brokers: &str, tag: &str) -> Settings {
    let mut s = Settings::default();
    s.kafka.brokers = brokers.to_owned();
    s.kafka.partitions = 3;
    s.kafka.topic_prefix = format!("tt-{tag}.");
    // The single node, or the cluster of RECSYS_TEST_REDIS_CLUSTER.
    s.redis = redis_config(&format!("tt-{tag}:"));
    s.tracking.group_id = format!("tt-{tag}");
    s.tracking.session_timeout_ms = 6_000;
    // Small batches, so a kill lands between batches of the stream.
    s.tracking.batch_max_records = 3;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    s
}

/// A tracking task running in this test, and how to stop it.
pub struct Running {
    pub metrics: tracking::Metrics,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), tracking::TrackingError>>,
}

/// Starts `tracking::run` on `s`, stopped by sending on `stop`.
pub async fn start(s: &Settings) -> Running {
    let deps = tracking::Deps::connect(s).await.unwrap();
    let metrics = deps.metrics.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tracking::run(s.clone(), deps, async move {
        let _ = rx.await;
    }));
    Running { metrics, stop: Some(tx), task }
}
