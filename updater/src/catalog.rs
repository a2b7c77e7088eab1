//! The live catalog: `recsys.items` (compacted, one field per record, key
//! `{item}/{field}`) → each item's
//! latest state in Redis, and the set of unavailable items kept in memory for
//! the scoring (docs/design.md §10, "Catalog state").
//!
//! Its own consumer group (`[updater] catalog_group_id`, default `{group_id}-catalog`), beside the event
//! pipeline and the tracking task. Exactly once like the histories: one Lua
//! script per batch (`catalog.lua`) merges the patches into `{catalog}:item:{id}`
//! hashes and `{catalog}:unavailable` together with the per-partition offsets,
//! skipping records at or below them. A field value older (`ts`) than the
//! one stored is ignored: the fields of one item travel under separate keys,
//! hence partitions, and one field's records can arrive out of time order
//! too (two producers, a replay after live updates); the newest fact wins.
//!
//! Lost state: a partition with no stored offset whose batch starts past the
//! log start was applied before and Redis forgot it (restarted empty,
//! flushed); the partition is then re-read from its log start — the
//! compacted topic holds the whole catalog, so that rebuilds it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::kafka::{BatchLoop, BatchStep};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{EventLimits, ItemId, ItemUpdate, RedisKeys};

use crate::config::Settings;
use crate::served::ServedModel;

/// `catalog.lua`. KEYS: [1] the offsets hash (field `topic:partition`),
/// [2] the unavailable set, then each record's item hash, in record order
/// (all in the `{catalog}` slot). ARGV: [1] record count n, [2] partition
/// count p, then p × (field, the batch's first offset, the log start or -1),
/// then n × (field, offset, item id, ts, available `1`/`0`/empty,
/// `category|price` with absent sides empty, or empty). Reply: {applied,
/// stale (every field it set older than the stored one's ts), duplicates (at or below the stored offset),
/// unavailable count, [fields whose state was lost], [item, `1`/`0`] of
/// each applied availability in order}.
const CATALOG_SCRIPT: &str = include_str!("catalog.lua");

/// Why a batch could not be applied (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The live availability the scoring uses, in memory (no Redis read per
/// user): item → latest `available` as this process knows it. Updated from
/// each batch this instance applies, and re-read from Redis's
/// `{catalog}:unavailable` at start and at most every `[updater]
/// catalog_refresh_ms` after a batch, so items other instances of the group
/// mark unavailable are excluded too. An item absent from the map follows the
/// model's own flag (`ServedModel::unavailable`); a live `true` overrides
/// that flag, so an item back in stock can enter lists without a new model.
#[derive(Debug, Clone, Default)]
pub struct LiveCatalog {
    state: Arc<RwLock<Arc<FxHashMap<ItemId, bool>>>>,
}

impl LiveCatalog {
    /// The current map (a snapshot: cheap to hold through a scoring pass).
    pub fn snapshot(&self) -> Arc<FxHashMap<ItemId, bool>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the live catalog says the item cannot be bought.
    pub fn is_unavailable(&self, item: &ItemId) -> bool {
        self.snapshot().get(item) == Some(&false)
    }

    /// Items currently known unavailable.
    pub fn unavailable_count(&self) -> usize {
        self.snapshot().values().filter(|a| !**a).count()
    }

    /// Sets the given items' availability (the outcome of a batch).
    pub fn set(&self, changes: impl IntoIterator<Item = (ItemId, bool)>) {
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**g).clone();
        next.extend(changes);
        *g = Arc::new(next);
    }

    /// Re-reads Redis's unavailable set: its members are unavailable, and an
    /// item this map holds unavailable that is no longer in it became
    /// available (through any instance).
    pub async fn refresh(
        &self,
        conn: &mut common::redis_conn::RedisConn,
        keys: &RedisKeys,
    ) -> Result<usize, CatalogError> {
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(unavailable_key(keys)).query_async(conn).await?;
        let set: FxHashSet<ItemId> = members.iter().filter_map(|m| ItemId::parse(m).ok()).collect();
        let n = set.len();
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next: FxHashMap<ItemId, bool> = FxHashMap::default();
        for (id, a) in g.iter() {
            next.insert(id.clone(), *a && !set.contains(id));
        }
        for id in set {
            next.insert(id, false);
        }
        *g = Arc::new(next);
        Ok(n)
    }
}

/// The hash tag every catalog key carries: `catalog.lua` touches an item's
/// hash, the unavailable set and the offsets in one atomic step, which a
/// Redis Cluster allows only within one hash slot. The whole catalog (a
/// million items: ~150 MB) thus lives on one master; the per-user state,
/// which is what grows with shoppers, spreads over all (docs/design.md §5).
const TAG: &str = "{catalog}";

/// `{catalog}:item:{id}`: hash of `available` (`1`/`0`), `category`,
/// `price`, each with its value's `ts` (`available_ts`, …).
pub fn item_key(keys: &RedisKeys, item: &str) -> String {
    format!("{}{TAG}:item:{item}", keys.prefix())
}

/// `{catalog}:unavailable`: set of the ids whose latest `available` is false.
pub fn unavailable_key(keys: &RedisKeys) -> String {
    format!("{}{TAG}:unavailable", keys.prefix())
}

/// `{catalog}:offsets`: hash `topic:partition` → last applied offset.
pub fn offsets_key(keys: &RedisKeys) -> String {
    format!("{}{TAG}:offsets", keys.prefix())
}

/// `recsys_updater_catalog_*`, in a registry of its own (rendered on the
/// updater's `/metrics` beside the pipeline's).
#[derive(Debug, Clone)]
pub struct CatalogMetrics {
    pub registry: Registry,
    /// Patches by outcome: `applied`, `stale` (older ts), `duplicate`, `invalid`.
    pub records: IntCounterVec,
    /// Items whose latest state is unavailable.
    pub unavailable: IntGauge,
    /// Partitions re-read from their log start because Redis had lost them.
    pub rebuilds: IntCounter,
    /// Batch attempts that failed and were retried.
    pub retries: IntCounter,
}

impl CatalogMetrics {
    pub fn new() -> prometheus::Result<CatalogMetrics> {
        let registry = Registry::new();
        let m = CatalogMetrics {
            records: IntCounterVec::new(
                Opts::new("recsys_updater_catalog_records_total", "recsys.items patches by outcome"),
                &["outcome"],
            )?,
            unavailable: IntGauge::new("recsys_updater_catalog_unavailable_items", "Items currently unavailable")?,
            rebuilds: IntCounter::new(
                "recsys_updater_catalog_rebuilds_total",
                "Catalog partitions re-read from the log start because Redis lost their state",
            )?,
            retries: IntCounter::new("recsys_updater_catalog_retries_total", "Catalog batch attempts retried")?,
            registry,
        };
        m.registry.register(Box::new(m.records.clone()))?;
        m.registry.register(Box::new(m.unavailable.clone()))?;
        m.registry.register(Box::new(m.rebuilds.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }
}

/// The catalog consumer: its own group, commits only after the script,
/// and a new group starts at the beginning (the compacted log is the catalog).
pub fn consumer_config(s: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka.brokers)
        .set("group.id", s.updater.catalog_group())
        .set("client.id", "recsys-updater-catalog")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", s.updater.fetch_wait_max_ms.to_string())
        .set("session.timeout.ms", s.updater.session_timeout_ms.to_string());
    c
}

/// The consumer of `recsys.items` (with the configured prefix), subscribed.
pub fn consumer(s: &Settings) -> KafkaResult<StreamConsumer> {
    let c: StreamConsumer = consumer_config(s).create()?;
    c.subscribe(&[&s.kafka.topic(schemas::topics::ITEMS)])?;
    Ok(c)
}

/// A patch ready for the script.
#[derive(Debug)]
struct Patch {
    partition: i32,
    offset: i64,
    update: ItemUpdate,
}

/// Per partition: (first offset, highest offset) of the batch.
type Spans = BTreeMap<i32, (i64, i64)>;

struct Apply {
    consumer: Arc<StreamConsumer>,
    conn: common::redis_conn::RedisConn,
    keys: RedisKeys,
    topic: String,
    script: redis::Script,
    live: LiveCatalog,
    metrics: CatalogMetrics,
    log_starts: BTreeMap<i32, i64>,
    refresh_every: Duration,
    refreshed: Instant,
    /// Partitions sought back to their log start and not yet re-applied.
    rebuilding: std::collections::BTreeSet<i32>,
}

impl BatchStep for Apply {
    type Decoded = (Vec<Patch>, Spans);
    type Error = CatalogError;

    async fn decode(&mut self, batch: &[OwnedMessage]) -> (Vec<Patch>, Spans) {
        let now = schemas::now_ms();
        // The topic is the catalog at any age: no record is too old.
        let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
        let mut patches = Vec::with_capacity(batch.len());
        let mut spans = Spans::new();
        for m in batch {
            let s = spans.entry(m.partition()).or_insert((m.offset(), m.offset()));
            s.0 = s.0.min(m.offset());
            s.1 = s.1.max(m.offset());
            let Some(payload) = m.payload() else {
                // A tombstone: ingest never writes one; an item leaves the
                // catalog by `available: false`.
                self.metrics.records.with_label_values(&["invalid"]).inc();
                tracing::warn!(partition = m.partition(), offset = m.offset(), "catalog: skipping a tombstone");
                continue;
            };
            match ItemUpdate::parse_json(payload, now, &limits) {
                Ok(update) if m.key().is_some_and(|k| !update.fits_key(k)) => {
                    self.metrics.records.with_label_values(&["invalid"]).inc();
                    tracing::warn!(
                        key = %String::from_utf8_lossy(m.key().unwrap_or_default()),
                        item = update.item_id().as_str(),
                        partition = m.partition(),
                        offset = m.offset(),
                        "catalog: skipping a record whose key is not its item's field"
                    );
                }
                Ok(update) => patches.push(Patch { partition: m.partition(), offset: m.offset(), update }),
                Err(e) => {
                    self.metrics.records.with_label_values(&["invalid"]).inc();
                    tracing::warn!(error = %e, partition = m.partition(), offset = m.offset(), "catalog: skipping an invalid patch");
                }
            }
        }
        for &p in spans.keys() {
            if let std::collections::btree_map::Entry::Vacant(v) = self.log_starts.entry(p) {
                v.insert(common::kafka::log_start(&self.consumer, &self.topic, p).await);
            }
        }
        (patches, spans)
    }

    async fn apply(&mut self, _batch: &[OwnedMessage], decoded: &(Vec<Patch>, Spans)) -> Result<(), CatalogError> {
        let (patches, spans) = decoded;
        let field = |p: i32| format!("{}:{p}", self.topic);
        let mut inv = self.script.prepare_invoke();
        inv.key(offsets_key(&self.keys)).key(unavailable_key(&self.keys));
        inv.arg(patches.len()).arg(spans.len());
        for (&p, &(first, _)) in spans {
            // A partition being re-read from its start is not checked: on a
            // compacted log its first record may lie past the log start.
            let floor = if self.rebuilding.contains(&p) { -1 } else { self.log_starts.get(&p).copied().unwrap_or(-1) };
            inv.arg(field(p)).arg(first).arg(floor);
        }
        for pt in patches {
            let u = &pt.update;
            let id = u.item_id().as_str();
            let av = match u.available() {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            };
            let rest = if u.category().is_none() && u.price().is_none() {
                String::new()
            } else {
                format!(
                    "{}|{}",
                    u.category().map(|c| c.to_string()).unwrap_or_default(),
                    u.price().map(|p| p.get().to_string()).unwrap_or_default()
                )
            };
            inv.key(item_key(&self.keys, id));
            inv.arg(field(pt.partition)).arg(pt.offset).arg(id).arg(u.ts()).arg(av).arg(rest);
        }
        let (applied, stale, dup, unavailable, lost, changed): (u64, u64, u64, i64, Vec<String>, Vec<String>) =
            inv.invoke_async(&mut self.conn).await?;
        let m = &self.metrics;
        m.records.with_label_values(&["applied"]).inc_by(applied);
        m.records.with_label_values(&["stale"]).inc_by(stale);
        m.records.with_label_values(&["duplicate"]).inc_by(dup);
        m.unavailable.set(unavailable);
        // The availability the script applied, in order (a later patch of
        // the same item overrides an earlier one).
        self.live.set(changed.chunks_exact(2).filter_map(|c| Some((ItemId::parse(&c[0]).ok()?, c[1] == "1"))));
        let lost: Vec<i32> = spans.keys().copied().filter(|&p| lost.contains(&field(p))).collect();
        // Fail closed: a Redis that lost the catalog has an empty unavailable
        // set, and reading it would mark every sold-out item available in
        // memory; the in-memory view waits until the partitions are re-read.
        if lost.is_empty() && self.rebuilding.is_empty() && self.refreshed.elapsed() >= self.refresh_every {
            self.live.refresh(&mut self.conn, &self.keys).await?;
            self.refreshed = Instant::now();
        }
        for p in spans.keys() {
            self.rebuilding.remove(p);
        }
        for &p in &lost {
            self.rebuild(p).await;
        }
        for (&p, &(_, high)) in spans {
            if lost.contains(&p) {
                continue;
            }
            if let Err(e) = self.consumer.store_offset(&self.topic, p, high) {
                tracing::debug!(partition = p, error = %e, "catalog: offset not stored (partition revoked?)");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                tracing::warn!(error = %e, "catalog: offset commit failed; the next commit covers it");
            }
        }
        Ok(())
    }

    fn failed(&mut self, _error: &CatalogError) {
        self.metrics.retries.inc();
    }
}

impl Apply {
    /// Re-reads partition `p` from its log start (no stored offset: nothing
    /// of it is in Redis, so re-reading all of it is exactly once again).
    async fn rebuild(&mut self, p: i32) {
        self.metrics.rebuilds.inc();
        let from = common::kafka::log_start(&self.consumer, &self.topic, p).await.max(0);
        self.log_starts.insert(p, from);
        self.rebuilding.insert(p);
        tracing::error!(topic = %self.topic, partition = p, from, "Redis lost the catalog state: re-reading the partition from its log start");
        let (c, name) = (self.consumer.clone(), self.topic.clone());
        match tokio::task::spawn_blocking(move || {
            c.seek(&name, p, rdkafka::Offset::Offset(from), Duration::from_secs(10))
        })
        .await
        {
            Ok(Ok(())) => {}
            // Not ours any more: its new owner finds the same gap.
            Ok(Err(e)) => tracing::warn!(partition = p, error = %e, "catalog: seek for the rebuild failed"),
            Err(e) => tracing::warn!(error = %e, "catalog: seek task failed"),
        }
    }
}

/// Consumes `recsys.items` until `shutdown`, keeping Redis's catalog state and
/// `live` current.
pub async fn run(
    settings: Arc<Settings>,
    consumer: StreamConsumer,
    mut conn: common::redis_conn::RedisConn,
    live: LiveCatalog,
    metrics: CatalogMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CatalogError> {
    let keys = settings.redis.keys();
    metrics.unavailable.set(live.refresh(&mut conn, &keys).await? as i64);
    let consumer = Arc::new(consumer);
    let u = &settings.updater;
    let pace = BatchLoop {
        max: u.catalog_batch_max,
        wait: u.batch_max_wait(),
        backoff: Duration::from_millis(u.retry_backoff_ms),
        task: "catalog",
    };
    let step = Apply {
        consumer: consumer.clone(),
        conn,
        keys,
        topic: settings.kafka.topic(schemas::topics::ITEMS),
        script: redis::Script::new(CATALOG_SCRIPT),
        live,
        metrics,
        log_starts: BTreeMap::new(),
        refresh_every: Duration::from_millis(u.catalog_refresh_ms),
        refreshed: Instant::now(),
        rebuilding: Default::default(),
    };
    if let Err(e) = common::kafka::consume(consumer, pace, step, shutdown).await {
        tracing::warn!(error = %e, "catalog: final commit task");
    }
    Ok(())
}

/// The model rows never to recommend: the model's own unavailable items that
/// the live catalog has not since seen available, and the live catalog's
/// unavailable items the model knows (sorted, deduplicated).
pub fn unavailable_rows(m: &ServedModel, live: &FxHashMap<ItemId, bool>) -> Vec<u32> {
    let mut rows: Vec<u32> =
        m.unavailable.iter().copied().filter(|&r| live.get(&m.item_ids[r as usize]) != Some(&true)).collect();
    rows.extend(live.iter().filter(|(_, a)| !**a).filter_map(|(id, _)| m.item_index.get(id).copied()));
    rows.sort_unstable();
    rows.dedup();
    rows
}
