//! The catalog task (`recsys.items` → Redis and the in-memory availability)
//! against the real broker and Redis (see `broker.rs` for the environment
//! variables). Each test has its own topic prefix, consumer groups and key
//! prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::redis_conn::RedisConn;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use schemas::item_update::{Price, Properties};
use schemas::{ItemId, ItemUpdate};
use testkit::services::{broker, delete_keys, redis_url, tag, KeysCleanup};
use updater::catalog::{self, CatalogMetrics, LiveCatalog};
use updater::Settings;

async fn settings(brokers: &str, tag: &str) -> Settings {
    let mut s = Settings::default();
    s.kafka.brokers = brokers.to_owned();
    s.kafka.partitions = 2;
    s.kafka.topic_prefix = format!("uc-{tag}.");
    s.redis.url = redis_url();
    s.redis.prefix = format!("uc-{tag}:");
    s.updater.group_id = format!("uc-{tag}");
    s.updater.session_timeout_ms = 6_000;
    s.updater.catalog_batch_max = 7;
    s.updater.catalog_refresh_ms = 50;
    common::kafka::ensure_topics(&s.kafka, Duration::from_secs(10)).await.unwrap();
    s
}

fn producer(s: &Settings) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &s.kafka.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// Produces the records under their keys, in order; returns the highest
/// offset per partition.
async fn produce(p: &FutureProducer, s: &Settings, records: &[(String, ItemUpdate)]) -> BTreeMap<i32, i64> {
    let topic = s.kafka.topic(schemas::topics::ITEMS);
    let mut high = BTreeMap::new();
    for (key, u) in records {
        let payload = u.to_json();
        let rec = FutureRecord::to(&topic).key(key.as_str()).payload(&payload);
        let d = p.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        let (part, off) = (d.partition, d.offset);
        let h = high.entry(part).or_insert(off);
        *h = (*h).max(off);
    }
    high
}

/// A replay-items-like sequence: every item's initial state, then changes,
/// some of them older than what the item already has (out of order).
fn patches(n_items: u64, base: i64) -> Vec<ItemUpdate> {
    let mut out = Vec::new();
    let id = |i: u64| ItemId::parse(&format!("it{i}")).unwrap();
    for i in 0..n_items {
        let price = Price::new(10.0 + i as f64 / 4.0).unwrap();
        out.push(ItemUpdate::new(base, id(i), Some(true), Some(i % 5), Some(price), Properties::default()).unwrap());
    }
    for r in 1..6i64 {
        for i in 0..n_items {
            let k = i as i64 + r;
            let ts = if k % 7 == 0 { base + r * 1000 - 5_000 } else { base + r * 1000 };
            let available = (k % 3 != 1).then_some(k % 2 == 0);
            let category = (k % 4 == 0).then_some((k % 11) as u64);
            let price = (k % 5 == 0).then(|| Price::new(k as f64 * 1.5).unwrap());
            if available.is_none() && category.is_none() && price.is_none() {
                continue;
            }
            out.push(ItemUpdate::new(ts, id(i), available, category, price, Properties::default()).unwrap());
        }
    }
    out
}

type State = BTreeMap<String, BTreeMap<String, String>>;

/// The state the rules give, computed directly: per item and field, the
/// value of the newest `ts`, a tie going to the later record of its key.
fn expected(all: &[(String, ItemUpdate)]) -> State {
    let mut st = State::new();
    for (_, u) in all {
        let e = st.entry(u.item_id().as_str().to_owned()).or_default();
        let mut put = |field: &str, value: String| {
            let ts_field = format!("{field}_ts");
            let cur: i64 = e.get(&ts_field).map_or(-1, |t| t.parse().unwrap());
            if u.ts() >= cur {
                e.insert(field.to_owned(), value);
                e.insert(ts_field, u.ts().to_string());
            }
        };
        if let Some(a) = u.available() {
            put("available", if a { "1" } else { "0" }.into());
        }
        if let Some(c) = u.category() {
            put("category", c.to_string());
        }
        if let Some(p) = u.price() {
            put("price", p.get().to_string());
        }
    }
    st
}

/// The records ingest writes for `patches`: one per field, `{item}/{field}`.
fn records(patches: &[ItemUpdate]) -> Vec<(String, ItemUpdate)> {
    patches.iter().flat_map(ItemUpdate::records).collect()
}

async fn redis_state(conn: &mut RedisConn, s: &Settings, items: impl Iterator<Item = String>) -> State {
    let keys = s.redis.keys();
    let mut st = State::new();
    for id in items {
        let h: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(catalog::item_key(&keys, &id)).query_async(conn).await.unwrap();
        if !h.is_empty() {
            st.insert(id, h);
        }
    }
    st
}

async fn unavailable_set(conn: &mut RedisConn, s: &Settings) -> Vec<String> {
    let mut v: Vec<String> =
        redis::cmd("SMEMBERS").arg(catalog::unavailable_key(&s.redis.keys())).query_async(conn).await.unwrap();
    v.sort();
    v
}

async fn stored_offsets(conn: &mut RedisConn, s: &Settings) -> BTreeMap<i32, i64> {
    let h: HashMap<String, i64> =
        redis::cmd("HGETALL").arg(catalog::offsets_key(&s.redis.keys())).query_async(conn).await.unwrap();
    h.into_iter().map(|(f, o)| (f.rsplit(':').next().unwrap().parse().unwrap(), o)).collect()
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), catalog::CatalogError>>,
    live: LiveCatalog,
    metrics: CatalogMetrics,
}

async fn start(s: &Settings) -> Running {
    let consumer = catalog::consumer(s).unwrap();
    let conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let live = LiveCatalog::default();
    let metrics = CatalogMetrics::new().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(catalog::run(
        std::sync::Arc::new(s.clone()),
        consumer,
        conn,
        live.clone(),
        metrics.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    Running { stop: tx, task, live, metrics }
}

impl Running {
    async fn stop(self) -> (LiveCatalog, CatalogMetrics) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        (self.live, self.metrics)
    }
}

/// Waits until the stored offsets reach `high` and the metrics saw `records` patches.
async fn wait_for(conn: &mut RedisConn, s: &Settings, high: &BTreeMap<i32, i64>, m: &CatalogMetrics, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_offsets(conn, s).await;
        let seen: u64 = ["applied", "stale", "duplicate"].iter().map(|o| m.records.with_label_values(&[o]).get()).sum();
        if high.iter().all(|(p, h)| stored.get(p).is_some_and(|o| o >= h)) && seen >= records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stored offsets {stored:?}, wanted {high:?}; {seen} of {records} patches seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn items(st: &State) -> impl Iterator<Item = String> + '_ {
    st.keys().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_fold_exactly_once_and_a_lost_state_is_rebuilt_from_the_topic() {
    let Some(brokers) = broker() else { return };
    let t = tag();
    let s = settings(&brokers, &t).await;
    let _cleanup = KeysCleanup::new(s.redis.url.clone(), s.redis.prefix.clone());
    let mut conn = common::redis_conn::connect(&s.redis).await.unwrap();
    let p = producer(&s);
    let base = 1_700_000_000_000;
    let mut all = records(&patches(40, base));
    let high = produce(&p, &s, &all).await;

    // 1. The state equals the last value per item under the rules.
    let r = start(&s).await;
    wait_for(&mut conn, &s, &high, &r.metrics, all.len() as u64).await;
    let want = expected(&all);
    let got = redis_state(&mut conn, &s, items(&want)).await;
    assert_eq!(got, want);
    let want_unavailable: Vec<String> = want
        .iter()
        .filter(|(_, h)| h.get("available").map(String::as_str) == Some("0"))
        .map(|(k, _)| k.clone())
        .collect();
    let mut sorted = want_unavailable.clone();
    sorted.sort();
    assert_eq!(unavailable_set(&mut conn, &s).await, sorted);
    assert!(!sorted.is_empty() && sorted.len() < want.len(), "the sequence must leave some items unavailable");
    let stale = r.metrics.records.with_label_values(&["stale"]).get();
    assert!(stale > 0, "the sequence has out-of-order patches");
    assert_eq!(r.metrics.unavailable.get(), sorted.len() as i64);
    let (live, _) = r.stop().await;
    for id in &want_unavailable {
        assert!(live.is_unavailable(&ItemId::parse(id).unwrap()), "{id} unavailable in memory");
    }
    assert_eq!(live.unavailable_count(), sorted.len());

    // 2. Duplicate delivery: a fresh group re-reads everything; nothing changes.
    let mut dup = s.clone();
    dup.updater.catalog_group_id = format!("uc-{t}-again");
    let r = start(&dup).await;
    wait_for(&mut conn, &dup, &high, &r.metrics, all.len() as u64).await;
    assert_eq!(r.metrics.records.with_label_values(&["applied"]).get(), 0);
    assert_eq!(r.metrics.records.with_label_values(&["duplicate"]).get(), all.len() as u64);
    r.stop().await;
    assert_eq!(redis_state(&mut conn, &s, items(&want)).await, want);
    assert_eq!(unavailable_set(&mut conn, &s).await, sorted);

    // 3. Redis loses the prefix; the next patches (one per item, price only)
    // find no stored offset past the log start: each partition is re-read
    // from the start and the state is the whole sequence's again.
    delete_keys(&mut conn, &s.redis.prefix).await;
    assert!(redis_state(&mut conn, &s, items(&want)).await.is_empty());
    // Under the bare item id: the whole-patch form a producer writing to the
    // topic itself may use is accepted too.
    let more: Vec<(String, ItemUpdate)> = (0..40u64)
        .map(|i| {
            let id = ItemId::parse(&format!("it{i}")).unwrap();
            let u =
                ItemUpdate::new(base + 100_000, id, None, None, Some(Price::new(99.0).unwrap()), Properties::default())
                    .unwrap();
            (format!("it{i}"), u)
        })
        .collect();
    let r = start(&s).await;
    let high2 = produce(&p, &s, &more).await;
    all.extend(more);
    wait_for(&mut conn, &s, &high2, &r.metrics, 40).await;
    assert!(r.metrics.rebuilds.get() >= 1, "the lost state was noticed");
    let want2 = expected(&all);
    assert_eq!(redis_state(&mut conn, &s, items(&want2)).await, want2);
    assert_eq!(unavailable_set(&mut conn, &s).await, sorted);
    r.stop().await;
}
