//! The live catalog: every item's availability and category as the compacted
//! topic `recsys.items` last said, folded in memory by a background consumer
//! ([`run`]) and read by every answer through [`crate::routes::Fill`].
//!
//! - The topic is the catalog: the consumer reads it from the beginning, in
//!   its own throw-away group, with partitions assigned (no rebalance wait).
//! - Until it has read up to the high watermarks it saw at start it is not
//!   caught up: `/ready` is 503 and the recommendation route skips the cached
//!   personal list (docs/design.md §8). An empty or missing topic is caught up
//!   at once; a broker that does not answer leaves it not caught up and the
//!   start is retried.
//! - Readers take one read lock per answer (a `RwLock` over one hash map:
//!   updates are applied in batches under the write lock, so an update costs
//!   a hash insert, not a copy of the map).
//! - A record that is not an `ItemUpdate` is counted and logged, never fatal;
//!   a tombstone (no payload) under `{item}/{field}` forgets that field, under
//!   the bare item id the whole item (the model's state applies).
//! - Per field, a value older (`ts`) than the one held is ignored, the
//!   updater's rule: an item's fields travel under separate keys
//!   (`{item}/{field}`, so compaction keeps each), hence in no order
//!   relative to each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use schemas::{EventLimits, ItemUpdate};

use crate::metrics::Metrics;

/// What the live catalog knows of one item (a field the topic never gave is `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveItem {
    pub available: Option<bool>,
    pub category: Option<u64>,
    pub price: Option<f64>,
    /// The `ts` of each field's value (available, category, price): a value
    /// older than the one held is ignored, as the updater does.
    ts: [i64; 3],
}

impl Default for LiveItem {
    fn default() -> Self {
        LiveItem { available: None, category: None, price: None, ts: [i64::MIN; 3] }
    }
}

/// The items by id.
pub type LiveMap = FxHashMap<Box<str>, LiveItem>;

/// The live catalog shared by the consumer and the handlers.
#[derive(Debug, Default)]
pub struct LiveCatalog {
    items: RwLock<LiveMap>,
    caught_up: AtomicBool,
    /// False when `[serving] live_catalog` is off: nothing to wait for.
    enabled: AtomicBool,
}

/// A read view for one answer.
pub type LiveView<'a> = RwLockReadGuard<'a, LiveMap>;

impl LiveCatalog {
    /// A catalog that waits for its consumer (`enabled`) or never will (off).
    pub fn new(enabled: bool) -> LiveCatalog {
        LiveCatalog {
            items: RwLock::default(),
            caught_up: AtomicBool::new(!enabled),
            enabled: AtomicBool::new(enabled),
        }
    }

    /// The map, for one answer. A poisoned lock (a panicking writer) still
    /// holds a consistent map: each insert is whole.
    pub fn view(&self) -> LiveView<'_> {
        self.items.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the topic was read up to the watermarks seen at start (or when off).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// True when `[serving] live_catalog` is on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn set_caught_up(&self, m: &Metrics) {
        self.caught_up.store(true, Ordering::Release);
        m.live_catalog_caught_up.set(1);
    }

    /// Folds a batch of records (`None` = tombstone) into the map; returns
    /// how many were applied.
    pub fn apply(&self, batch: &[(Box<str>, Option<ItemUpdate>)], m: &Metrics) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let mut map = self.items.write().unwrap_or_else(|e| e.into_inner());
        // Counted by transition: a scan of the map per batch would cost the
        // whole catalog per change.
        let mut unavailable = m.live_catalog_unavailable.get();
        for (key, u) in batch {
            match u {
                None => {
                    // `{item}/{field}` forgets that field; a bare id, the item.
                    let (item, field) = key.split_once('/').unwrap_or((key, ""));
                    let was = map.get(item).is_some_and(|i| i.available == Some(false));
                    match field {
                        "" => {
                            map.remove(item);
                        }
                        "available" | "category" | "price" => {
                            if let Some(e) = map.get_mut(item) {
                                match field {
                                    "available" => (e.available, e.ts[0]) = (None, i64::MIN),
                                    "category" => (e.category, e.ts[1]) = (None, i64::MIN),
                                    _ => (e.price, e.ts[2]) = (None, i64::MIN),
                                }
                            }
                        }
                        _ => {}
                    }
                    let now = map.get(item).is_some_and(|i| i.available == Some(false));
                    unavailable += i64::from(now) - i64::from(was);
                }
                Some(u) => {
                    let e = map.entry(key.clone()).or_default();
                    let was = e.available == Some(false);
                    let ts = u.ts();
                    let mut newer = |i: usize| {
                        let yes = ts >= e.ts[i];
                        if yes {
                            e.ts[i] = ts;
                        }
                        yes
                    };
                    let (a, c, p) = (u.available(), u.category(), u.price());
                    if a.is_some() && newer(0) {
                        e.available = a;
                    }
                    if c.is_some() && newer(1) {
                        e.category = c;
                    }
                    if p.is_some() && newer(2) {
                        e.price = p.map(|p| p.get());
                    }
                    unavailable += i64::from(e.available == Some(false)) - i64::from(was);
                }
            }
        }
        m.live_catalog_items.set(map.len() as i64);
        m.live_catalog_unavailable.set(unavailable);
        drop(map);
        m.live_catalog_updates.inc_by(batch.len() as u64);
        batch.len()
    }
}

/// The live availability of `id`, if the topic gave one.
pub fn live_available(view: Option<&LiveMap>, id: &str) -> Option<bool> {
    view.and_then(|v| v.get(id)).and_then(|i| i.available)
}

/// The live category of `id`, if the topic gave one.
pub fn live_category(view: Option<&LiveMap>, id: &str) -> Option<u64> {
    view.and_then(|v| v.get(id)).and_then(|i| i.category)
}

/// Records on the topic were checked by ingest; their `ts` is history, so no
/// time window applies here.
fn replay_limits() -> EventLimits {
    EventLimits { min_ts: i64::MIN / 4, max_future_ms: i64::MAX / 4 }
}

/// Parses one record; `Err` is counted as malformed by the caller.
pub fn parse_record(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(Box<str>, Option<ItemUpdate>), String> {
    let Some(payload) = payload else {
        let key = key.ok_or("a tombstone without a key")?;
        let key = std::str::from_utf8(key).map_err(|_| "a tombstone whose key is not UTF-8".to_owned())?;
        return Ok((key.into(), None));
    };
    let u = ItemUpdate::parse_json(payload, schemas::now_ms(), &replay_limits()).map_err(|e| e.to_string())?;
    if let Some(k) = key.filter(|k| !u.fits_key(k)) {
        return Err(format!(
            "key {:?} is not a key of item {:?}'s fields",
            String::from_utf8_lossy(k),
            u.item_id().as_str()
        ));
    }
    Ok((u.item_id().as_str().into(), Some(u)))
}

/// Per partition, the offset the consumer must pass to be caught up.
type Targets = FxHashMap<i32, i64>;

/// Assigns every partition of `topic` from the beginning and returns the high
/// watermarks now; a missing topic has none (caught up at once).
fn start(consumer: &StreamConsumer, topic: &str, timeout: Duration) -> Result<Targets, String> {
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(Targets::default()) };
    if t.error().is_some() || t.partitions().is_empty() {
        // Unknown topic: nothing to read yet; ensure_topics creates it.
        return Ok(Targets::default());
    }
    let mut tpl = TopicPartitionList::new();
    let mut targets = Targets::default();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).map_err(|e| e.to_string())?;
        if high > low {
            targets.insert(p.id(), high);
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(targets)
}

/// Consumes `topic` into `live` until `stop` resolves. Blocking calls of the
/// consumer (metadata, watermarks) run on a blocking thread.
pub async fn run(
    make: impl Fn() -> rdkafka::error::KafkaResult<StreamConsumer> + Send + 'static,
    topic: String,
    live: std::sync::Arc<LiveCatalog>,
    metrics: Metrics,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let retry = Duration::from_secs(1);
    // Start: retried until the broker answers.
    let (consumer, mut targets) = loop {
        let attempt = {
            let topic = topic.clone();
            let consumer = match make() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the live catalog consumer");
                    return;
                }
            };
            tokio::task::spawn_blocking(move || start(&consumer, &topic, Duration::from_secs(5)).map(|t| (consumer, t)))
        };
        tokio::select! {
            _ = &mut stop => return,
            r = attempt => match r {
                Ok(Ok(ok)) => break ok,
                Ok(Err(e)) => tracing::warn!(error = %e, topic, "live catalog: broker not answering; not ready, retrying"),
                Err(e) => tracing::error!(error = %e, "live catalog start task failed"),
            },
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(retry) => {}
        }
    };
    tracing::info!(topic, partitions_to_read = targets.len(), "live catalog: reading the topic from the beginning");
    let lag = |t: &Targets| t.len() as i64;
    metrics.live_catalog_lag_partitions.set(lag(&targets));
    if targets.is_empty() {
        live.set_caught_up(&metrics);
        tracing::info!(topic, "live catalog caught up (empty topic)");
    }
    let mut batch: Vec<(Box<str>, Option<ItemUpdate>)> = Vec::with_capacity(512);
    loop {
        let msg = tokio::select! {
            _ = &mut stop => return,
            m = consumer.recv() => m,
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "live catalog consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let note = |m: &rdkafka::message::BorrowedMessage<'_>, batch: &mut Vec<_>, targets: &mut Targets| {
            match parse_record(m.key(), m.payload()) {
                Ok(r) => batch.push(r),
                Err(e) => {
                    metrics.live_catalog_malformed.inc();
                    tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "malformed record on the items topic; skipped");
                }
            }
            if targets.get(&m.partition()).is_some_and(|&high| m.offset() + 1 >= high) {
                targets.remove(&m.partition());
            }
        };
        note(&m, &mut batch, &mut targets);
        drop(m);
        // Drain what is already buffered so one write lock covers a batch.
        while batch.len() < 512 {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => note(&m, &mut batch, &mut targets),
                _ => break,
            }
        }
        live.apply(&batch, &metrics);
        batch.clear();
        metrics.live_catalog_lag_partitions.set(lag(&targets));
        if targets.is_empty() && !live.caught_up() {
            live.set_caught_up(&metrics);
            tracing::info!(topic, "live catalog caught up");
        }
    }
}

/// Polls a future once (the buffered-message drain of [`run`]).
trait NowOrNever: std::future::Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(self);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}

impl<F: std::future::Future> NowOrNever for F {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> (Box<str>, Option<ItemUpdate>) {
        parse_record(None, Some(json.as_bytes())).unwrap()
    }

    #[test]
    fn older_values_field_tombstones_and_foreign_keys() {
        let m = Metrics::new().unwrap();
        let live = LiveCatalog::new(true);
        live.apply(
            &[
                rec(r#"{"item_id": "a", "ts": 1500000000005, "available": false}"#),
                rec(r#"{"item_id": "a", "ts": 1500000000001, "available": true, "category": 4}"#),
            ],
            &m,
        );
        let v = live.view();
        assert_eq!(live_available(Some(&v), "a"), Some(false), "an older availability is ignored");
        assert_eq!(live_category(Some(&v), "a"), Some(4), "the category was newer than none");
        drop(v);
        assert_eq!(m.live_catalog_unavailable.get(), 1);
        live.apply(&[(Box::from("a/available"), None)], &m);
        let v = live.view();
        assert_eq!((live_available(Some(&v), "a"), live_category(Some(&v), "a")), (None, Some(4)));
        drop(v);
        assert_eq!(m.live_catalog_unavailable.get(), 0);
        let j = br#"{"item_id": "a", "ts": 1500000000000, "available": true}"#;
        assert!(parse_record(Some(b"a/available"), Some(j)).is_ok());
        assert!(parse_record(Some(b"a"), Some(j)).is_ok(), "a whole patch under the bare id");
        assert!(parse_record(Some(b"b/available"), Some(j)).is_err(), "another item's key");
        assert!(parse_record(Some(b"a/price"), Some(j)).is_err(), "another field's key");
    }

    #[test]
    fn patches_fold_per_field_and_the_gauges_follow_transitions() {
        let m = Metrics::new().unwrap();
        let live = LiveCatalog::new(true);
        assert!(!live.caught_up());
        live.apply(
            &[
                rec(r#"{"item_id": "a", "ts": 1500000000000, "available": false}"#),
                rec(r#"{"item_id": "b", "ts": 1500000000000, "available": false, "category": 7}"#),
                rec(r#"{"item_id": "a", "ts": 1500000000001, "category": 3}"#),
            ],
            &m,
        );
        let v = live.view();
        assert_eq!(live_available(Some(&v), "a"), Some(false), "a later patch without available keeps it");
        assert_eq!(live_category(Some(&v), "a"), Some(3));
        assert_eq!(live_available(Some(&v), "zz"), None);
        drop(v);
        assert_eq!((m.live_catalog_items.get(), m.live_catalog_unavailable.get()), (2, 2));
        live.apply(&[rec(r#"{"item_id": "a", "ts": 1500000000002, "available": true}"#)], &m);
        live.apply(&[(Box::from("b"), None)], &m);
        assert_eq!((m.live_catalog_items.get(), m.live_catalog_unavailable.get()), (1, 0));
        assert_eq!(m.live_catalog_updates.get(), 5);
    }

    #[test]
    fn malformed_records_are_errors_and_old_timestamps_are_not() {
        assert!(parse_record(Some(b"k"), Some(b"not json")).is_err());
        assert!(parse_record(Some(b"k"), Some(br#"{"item_id": "a", "ts": 1}"#)).is_err(), "nothing to update");
        assert!(parse_record(None, None).is_err(), "a tombstone needs a key");
        assert_eq!(parse_record(Some(b"a"), None).unwrap(), (Box::from("a"), None));
        // ts older than ingest's window: history on a compacted topic, accepted.
        assert!(parse_record(Some(b"a"), Some(br#"{"item_id": "a", "ts": 1, "available": true}"#)).is_ok());
    }
}
