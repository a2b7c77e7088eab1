//! recsys tracking: joins the impressions the API served (`recsys.impressions`)
//! with the storefront's events (`recsys.events`) and counts, per A/B variant
//! and model version, impressions, clicks, add-to-carts, purchases and
//! attributed revenue — in Redis (`stats:*`, `stats_hourly:*`, read by
//! `GET /v1/stats` of every serving instance) and as Prometheus metrics
//! (docs/design.md §7; `tracking/README.md` has the full account).
//!
//! Attribution: a `view` of an item of an impression at most
//! `click_window_s` after it is a click; an `addtocart` / `transaction` at most
//! `conversion_window_s` after it is a cart / purchase; an event carrying a
//! `rec_id` is attributed to that impression directly; otherwise to every
//! impression of the user, in window, that showed the item. Each impression
//! counts at most once per outcome; a transaction's revenue once. The result
//! does not depend on how the two topics' records interleave.
//!
//! Exactly once across restarts, on one Redis node or a Redis Cluster: the
//! join state (each user's recent impressions with their "already counted"
//! flags, and events still waiting for an impression) is in Redis, one key
//! per user carrying the guard of its own records; one Lua script per user
//! applies the user's records of a batch and returns their counter deltas,
//! one script per batch adds them to the counters under the counters' own
//! per-partition guard, and the per-partition resume points of both topics
//! move last ([`store`]). Kafka offsets are committed only after that, and
//! only decide where re-reading starts.
//!
//! Layout: [`config`] (`[tracking]`), [`store`] (the script,
//! `attribute.lua`), [`metrics`] (`recsys_tracking_*`), [`run`] (the consume
//! → attribute → commit loop: `common::kafka::consume` with an attribute →
//! commit step).
//! [`run`] takes an already-made consumer and Redis connection ([`Deps`]) so
//! tests drive it with their own topics, group and key prefix; `recsys-updater`
//! runs it beside its pipeline.

pub mod config;
pub mod metrics;
pub mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{BatchLoop, BatchStep};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use schemas::{Event, EventLimits, Impression};

pub use config::{Settings, TrackingConfig};
pub use metrics::Metrics;
use rustc_hash::FxHashMap;
pub use store::{Guard, Outcome, Record, Store, StoreError};

/// Why the task could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The consumer's librdkafka context: per-partition lag of both topics from
/// the statistics callback, rebalances and failed commits in the log.
#[derive(Debug, Clone)]
pub struct TrackingContext {
    pub metrics: Metrics,
    /// (full topic name, label) of the two topics.
    pub topics: [(String, &'static str); 2],
}

impl ClientContext for TrackingContext {
    fn stats(&self, stats: Statistics) {
        for (name, label) in &self.topics {
            let Some(t) = stats.topics.get(name) else { continue };
            for (p, s) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if *p < 0 || s.fetch_state != "active" {
                    continue;
                }
                let lag = if s.consumer_lag_stored >= 0 { s.consumer_lag_stored } else { s.consumer_lag };
                if lag >= 0 {
                    self.metrics.consumer_lag.with_label_values(&[*label, p.to_string().as_str()]).set(lag);
                }
            }
        }
    }
}

impl ConsumerContext for TrackingContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => tracing::info!(partitions = ?partitions(tpl), "tracking: partitions assigned"),
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    if let Some((_, label)) = self.topics.iter().find(|(n, _)| n == e.topic()) {
                        let _ = self
                            .metrics
                            .consumer_lag
                            .remove_label_values(&[*label, e.partition().to_string().as_str()]);
                    }
                }
                tracing::info!(partitions = ?partitions(tpl), "tracking: partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "tracking: rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "tracking: offset commit failed; the next commit covers it");
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

/// The consumer of both topics (with the configured prefix), subscribed.
pub fn consumer(settings: &Settings, metrics: &Metrics) -> KafkaResult<StreamConsumer<TrackingContext>> {
    let [imp, ev] = topic_names(settings);
    let ctx =
        TrackingContext { metrics: metrics.clone(), topics: [(imp.clone(), "impressions"), (ev.clone(), "events")] };
    let c: StreamConsumer<TrackingContext> = settings.consumer_config().create_with_context(ctx)?;
    c.subscribe(&[&imp, &ev])?;
    Ok(c)
}

/// The full names of `recsys.impressions` and `recsys.events`.
pub fn topic_names(settings: &Settings) -> [String; 2] {
    [settings.kafka.topic(schemas::topics::IMPRESSIONS), settings.kafka.topic(schemas::topics::EVENTS)]
}

/// What [`run`] needs, made by the caller.
pub struct Deps {
    /// Subscribed to both topics (see [`consumer`]).
    pub consumer: StreamConsumer<TrackingContext>,
    /// Redis.
    pub redis: common::redis_conn::RedisConn,
    /// The registry the consumer's context reports into.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").field("metrics", &self.metrics).finish_non_exhaustive()
    }
}

impl Deps {
    /// Connects everything `settings` names (Redis must answer now).
    pub async fn connect(settings: &Settings) -> Result<Deps, TrackingError> {
        let metrics = Metrics::new()?;
        let consumer = consumer(settings, &metrics)?;
        let redis = common::redis_conn::connect(&settings.redis).await?;
        Ok(Deps { consumer, redis, metrics })
    }
}

/// Consumes until `shutdown` resolves; then finishes the batch in hand,
/// commits its offsets and returns. Redis failures are retried (with backoff)
/// until the batch lands or shutdown comes, so no record is skipped. The loop
/// is `common::kafka::consume`, with `Attribution` as its step.
pub async fn run(settings: Settings, deps: Deps, shutdown: impl Future<Output = ()>) -> Result<(), TrackingError> {
    let Deps { consumer, redis, metrics } = deps;
    let consumer = Arc::new(consumer);
    let t = &settings.tracking;
    let topics = topic_names(&settings);
    tracing::info!(group = %t.group_id, impressions = %topics[0], events = %topics[1], "tracking started");
    let pace = BatchLoop {
        max: t.batch_max_records,
        wait: t.batch_max_wait(),
        backoff: Duration::from_millis(t.retry_backoff_ms),
        task: "tracking",
    };
    let step = Attribution {
        consumer: consumer.clone(),
        store: Store::new(redis, settings.redis.keys(), t.windows())
            .with_replicas_acked(settings.redis.replicas_to_wait(), settings.redis.replicas_ack_timeout()),
        topics,
        metrics,
        log_starts: BTreeMap::new(),
    };
    if let Err(e) = common::kafka::consume(consumer, pace, step, shutdown).await {
        tracing::warn!(error = %e, "tracking: final commit task");
    }
    Ok(())
}

/// The step of tracking's consumer loop: a batch's records attributed in
/// Redis ([`Store::attribute_guarded`]), then its offsets committed.
struct Attribution {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    store: Store,
    /// The full names of the two topics (see [`topic_names`]).
    topics: [String; 2],
    metrics: Metrics,
    /// The first offset of each partition's log, for the lost-state check.
    log_starts: BTreeMap<(usize, i32), i64>,
}

/// A batch as [`parse_batch`] reads it.
#[derive(Debug)]
struct Parsed {
    records: Vec<Record>,
    highest: Vec<Highest>,
    firsts: Firsts,
}

impl BatchStep for Attribution {
    type Decoded = Parsed;
    type Error = StoreError;

    /// Parses the batch (once: invalid records are counted once) and looks up
    /// the log start of each partition it is the first to touch.
    async fn decode(&mut self, batch: &[OwnedMessage]) -> Parsed {
        let topics = [self.topics[0].as_str(), self.topics[1].as_str()];
        let (records, highest, firsts) = parse_batch(batch, &topics, &self.metrics);
        for &tp in firsts.keys() {
            if let std::collections::btree_map::Entry::Vacant(v) = self.log_starts.entry(tp) {
                v.insert(common::kafka::log_start(&self.consumer, topics[tp.0], tp.1).await);
            }
        }
        Parsed { records, highest, firsts }
    }

    async fn apply(&mut self, batch: &[OwnedMessage], parsed: &Parsed) -> Result<(), StoreError> {
        let topics = [self.topics[0].as_str(), self.topics[1].as_str()];
        let Parsed { records, highest, firsts } = parsed;
        let mut lost: Vec<(usize, i32)> = Vec::new();
        loop {
            let started = Instant::now();
            let guards: FxHashMap<(usize, i32), Guard> = firsts
                .iter()
                .map(|(&tp, &first)| (tp, Guard { log_start: self.log_starts.get(&tp).copied().unwrap_or(-1), first }))
                .collect();
            let outcome = self.store.attribute_guarded(&topics, records, highest, &guards).await?;
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.record(&outcome);
            if !outcome.lost.is_empty() {
                // Retention may have moved a log start since it was read:
                // then this batch is all there is; apply it.
                let mut moved = false;
                for &tp in &outcome.lost {
                    let start = common::kafka::log_start(&self.consumer, topics[tp.0], tp.1).await;
                    moved |= start >= firsts[&tp];
                    self.log_starts.insert(tp, start);
                }
                if moved {
                    continue;
                }
                lost = outcome.lost;
                rebuild(&self.consumer, &self.store, &topics, &self.log_starts, &self.metrics).await;
            }
            self.metrics.batches.inc();
            self.metrics.batch_records.observe(batch.len() as f64);
            break;
        }
        let kept: Vec<Highest> = highest.iter().copied().filter(|(tp, _)| !lost.contains(tp)).collect();
        commit(&self.consumer, &topics, &kept, &self.metrics);
        Ok(())
    }

    fn failed(&mut self, _error: &StoreError) {
        self.metrics.retries.inc();
    }
}

/// ((topic index, partition), highest offset of the batch).
pub type Highest = ((usize, i32), i64);

/// The batch's first offset per (topic index, partition).
pub type Firsts = BTreeMap<(usize, i32), i64>;

/// The batch's valid records, and the highest and the first offset per
/// (topic index, partition), invalid records included. Invalid records are
/// counted and skipped: the updater dead-letters invalid events, and an
/// impression that does not parse cannot be attributed.
pub fn parse_batch(
    batch: &[OwnedMessage],
    topics: &[&str; 2],
    metrics: &Metrics,
) -> (Vec<Record>, Vec<Highest>, Firsts) {
    let received = schemas::now_ms();
    // Tracking never rejects an event for its age: the updater already
    // decided what enters the system.
    let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
    let mut records = Vec::with_capacity(batch.len());
    let mut highest: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut firsts = Firsts::new();
    for m in batch {
        let Some(topic) = topics.iter().position(|t| *t == m.topic()) else { continue };
        let e = highest.entry((topic, m.partition())).or_insert(m.offset());
        *e = (*e).max(m.offset());
        let f = firsts.entry((topic, m.partition())).or_insert(m.offset());
        *f = (*f).min(m.offset());
        let payload = m.payload().unwrap_or_default();
        let (partition, offset) = (m.partition(), m.offset());
        if topic == 0 {
            match Impression::parse_json(payload) {
                Ok(impression) => records.push(Record::Impression { topic, partition, offset, impression }),
                Err(e) => {
                    metrics.records.with_label_values(&["impressions", "invalid"]).inc();
                    tracing::warn!(error = %e, partition, offset, "tracking: skipping an invalid impression");
                }
            }
        } else {
            match Event::parse_json_with(payload, received, &limits) {
                Ok(event) => records.push(Record::Event { topic, partition, offset, event }),
                Err(e) => {
                    metrics.records.with_label_values(&["events", "invalid"]).inc();
                    tracing::debug!(error = %e, partition, offset, "tracking: skipping an invalid event");
                }
            }
        }
    }
    (records, highest.into_iter().collect(), firsts)
}

/// Redis lost the tracking state (restarted empty, or flushed). An outcome
/// depends on records of both topics, so every partition this instance owns,
/// of both topics, that has no resume point (`track_offsets:`) is re-read from
/// the start of its log — safe for any of them: no resume point means nothing
/// of it was completed since the state was lost, and whatever survived (a
/// user's guard, the counters' guard) skips what it already holds.
async fn rebuild(
    consumer: &Arc<StreamConsumer<TrackingContext>>,
    store: &Store,
    topics: &[&str; 2],
    log_starts: &BTreeMap<(usize, i32), i64>,
    metrics: &Metrics,
) {
    metrics.state_rebuilds.inc();
    let assigned: Vec<(usize, i32)> = match consumer.assignment() {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .filter_map(|e| Some((topics.iter().position(|t| *t == e.topic())?, e.partition())))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "tracking: no assignment to rebuild");
            return;
        }
    };
    let keys: Vec<String> = assigned.iter().map(|&(t, p)| store.keys.track_offsets(topics[t], p)).collect();
    // One GET per key, not MGET: on a Redis Cluster the keys are in several slots.
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("GET").arg(k);
    }
    let stored: Vec<Option<i64>> = if keys.is_empty() {
        Vec::new()
    } else {
        match pipe.query_async(&mut store.conn.clone()).await {
            Ok(v) => v,
            Err(e) => {
                // The next batch of a lost partition finds the same gap.
                tracing::warn!(error = %e, "tracking: cannot read the stored offsets; rebuild postponed");
                return;
            }
        }
    };
    for (&(t, p), s) in assigned.iter().zip(stored) {
        if s.is_some() {
            continue;
        }
        let from = match log_starts.get(&(t, p)) {
            Some(&start) if start >= 0 => start,
            _ => common::kafka::log_start(consumer, topics[t], p).await.max(0),
        };
        tracing::error!(
            topic = topics[t],
            partition = p,
            from,
            "Redis lost the tracking state (no stored offset): re-reading the partition from the start of its log"
        );
        let (c, name) = (consumer.clone(), topics[t].to_owned());
        let sought = tokio::task::spawn_blocking(move || {
            c.seek(&name, p, rdkafka::Offset::Offset(from), Duration::from_secs(10))
        })
        .await;
        match sought {
            Ok(Ok(())) => {}
            // Not ours any more (rebalance): its new owner finds the same gap.
            Ok(Err(e)) => {
                tracing::warn!(topic = topics[t], partition = p, error = %e, "tracking: seek for the rebuild failed")
            }
            Err(e) => tracing::warn!(error = %e, "tracking: seek task failed"),
        }
    }
}

fn commit(consumer: &StreamConsumer<TrackingContext>, topics: &[&str; 2], highest: &[Highest], metrics: &Metrics) {
    for &((t, p), off) in highest {
        // Fails for a partition revoked meanwhile: its new owner re-reads
        // from the last commit and the stored Redis offset skips what was applied.
        if let Err(e) = consumer.store_offset(topics[t], p, off) {
            tracing::debug!(topic = topics[t], partition = p, error = %e, "offset not stored (partition revoked?)");
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
        if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
            metrics.commit_errors.inc();
            tracing::warn!(error = %e, "tracking: offset commit failed; the next commit covers it");
        }
    }
}
