//! The consume → apply → fold → write → commit loop.
//!
//! One batch at a time: collect up to `batch_max_events` messages or for
//! `batch_max_wait_ms`, whichever comes first; apply each partition's slice to
//! Redis atomically (`store::APPLY_SCRIPT`); fold in and score the touched
//! users on the rayon pool; write their lists; dead-letter what could not be
//! parsed; wait until the writes reached `[redis] min_replicas_acked`
//! replicas (`WAIT`, so a failover cannot lose what is committed); only then
//! store and commit the Kafka offsets. Any Redis or Kafka
//! failure retries the whole batch (with backoff) — safe, because the stored
//! offsets make applying a batch idempotent — so nothing is skipped and no
//! offset moves past an event whose effects are not in Redis.
//!
//! The loop is `common::kafka::consume` (shared with tracking); the
//! [`Pipeline`] is its step, one method per stage of [`Pipeline::process`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{BatchLoop, BatchStep};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use schemas::{now_ms, DeadLetter, DeadLetterSource, Event, EventLimits, ItemId, RecsList, UserId};

use crate::compute::{self, ComputeParams, NewItems};
use crate::config::Settings;
use crate::kafka::UpdaterContext;
use crate::metrics::Metrics;
use crate::served::{ModelHandle, ServedModel};
use crate::store::{ApplyEvent, Slice, Store, StoreError, UserHistory};

/// Why a batch attempt failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("redis ({stage}): {source}")]
    Store {
        stage: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("dead-letter topic: {0}")]
    DeadLetter(rdkafka::error::KafkaError),
    #[error("compute task: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("partition {0}: the log start moved past the batch; retrying with the new floor")]
    FloorMoved(i32),
}

impl BatchError {
    fn stage(&self) -> &'static str {
        match self {
            BatchError::Store { stage, .. } => stage,
            BatchError::DeadLetter(_) => "dead_letter",
            BatchError::Join(_) => "compute",
            BatchError::FloorMoved(_) => "floor",
        }
    }
}

/// Items folded in against the served version, and when they were last
/// refreshed from Redis (other instances fold items in too).
#[derive(Debug, Default)]
struct NewItemState {
    version: Option<schemas::ModelVersion>,
    items: Arc<NewItems>,
    refreshed: Option<Instant>,
}

/// Everything the loop needs; built by [`crate::run`].
pub struct Pipeline {
    pub settings: Arc<Settings>,
    pub consumer: Arc<StreamConsumer<UpdaterContext>>,
    pub producer: FutureProducer,
    pub store: Store,
    pub model: ModelHandle,
    pub metrics: Metrics,
    events_topic: String,
    dlq_topic: String,
    params: ComputeParams,
    new_items: NewItemState,
    /// First offset of each partition's log (its low watermark), the floor of
    /// the lost-state check (`store::APPLY_SCRIPT`); fetched once per partition.
    floors: BTreeMap<i32, i64>,
    /// When the batch in hand had its first message (see `BatchStep::opened`).
    opened: Option<Instant>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("events_topic", &self.events_topic).finish_non_exhaustive()
    }
}

/// One valid event with its Kafka coordinates.
#[derive(Debug)]
struct Valid {
    partition: i32,
    offset: i64,
    kafka_ts_ms: Option<i64>,
    event: Event,
}

/// A batch's messages sorted out: the valid events, and the rest with the
/// dead letter each becomes and its rejection class.
#[derive(Debug, Default)]
struct Decoded {
    valid: Vec<Valid>,
    dead: Vec<(DeadLetter, &'static str)>,
}

/// Parses and validates every message (`received`: the wall clock of the
/// batch, for events without a time).
fn decode(batch: &[OwnedMessage], received: i64) -> Decoded {
    let mut out = Decoded { valid: Vec::with_capacity(batch.len()), dead: Vec::new() };
    for m in batch {
        let payload = m.payload().unwrap_or_default();
        match decode_one(payload, m.key(), received) {
            Ok(event) => out.valid.push(Valid {
                partition: m.partition(),
                offset: m.offset(),
                kafka_ts_ms: m.timestamp().to_millis(),
                event,
            }),
            Err((reason, class)) => {
                out.dead.push((DeadLetter::new(reason, DeadLetterSource::Updater, received, payload), class))
            }
        }
    }
    out
}

/// One message of the events topic as the apply step sees it: the event, or
/// why it is dead-lettered and its rejection class. An event keyed by another
/// user than its own is refused: its user's events would lose their order.
/// (`recsys-updater verify` expects exactly what this accepts.)
pub(crate) fn decode_one(payload: &[u8], key: Option<&[u8]>, received: i64) -> Result<Event, (String, &'static str)> {
    let limits = EventLimits { min_ts: 0, ..EventLimits::default() };
    match Event::parse_json_with(payload, received, &limits) {
        Ok(ev) if key.is_some_and(|k| k != ev.user_id().as_str().as_bytes()) => Err((
            format!(
                "message key {:?} is not the event's user_id {:?}: the user's events would lose their order",
                String::from_utf8_lossy(key.unwrap_or_default()),
                ev.user_id().as_str()
            ),
            "key_mismatch",
        )),
        Ok(ev) => Ok(ev),
        Err(e) => Err((e.to_string(), "invalid_event")),
    }
}

/// What the apply stage left in Redis.
#[derive(Debug, Default)]
struct InRedis {
    /// Histories of the batch's users, for the fold-in.
    histories: Vec<UserHistory>,
    /// Unknown items of the batch with their user counts.
    unknown_items: Vec<(ItemId, usize)>,
    applied: usize,
    duplicates: usize,
    /// Partitions whose state Redis lost: nothing of them was applied, and
    /// their offsets are not committed (they are re-read from the log start).
    lost: Vec<i32>,
}

impl Pipeline {
    pub fn new(
        settings: Arc<Settings>,
        consumer: Arc<StreamConsumer<UpdaterContext>>,
        producer: FutureProducer,
        store: Store,
        model: ModelHandle,
        metrics: Metrics,
    ) -> Pipeline {
        let events_topic = settings.kafka.topic(schemas::topics::EVENTS);
        let dlq_topic = settings.kafka.topic(schemas::topics::EVENTS_DLQ);
        let params = ComputeParams::from_settings(&settings);
        Pipeline {
            settings,
            consumer,
            producer,
            store,
            model,
            metrics,
            events_topic,
            dlq_topic,
            params,
            new_items: NewItemState::default(),
            floors: BTreeMap::new(),
            opened: None,
        }
    }

    /// Scores against `live`'s availability (the catalog task keeps it).
    pub fn with_live(mut self, live: crate::catalog::LiveCatalog) -> Pipeline {
        self.params.live = live;
        self
    }

    /// Runs until `shutdown` resolves: then finishes the batch in hand,
    /// commits, and returns (`common::kafka::consume`, with [`Pipeline::process`]
    /// as its step).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let u = &self.settings.updater;
        let pace = BatchLoop {
            max: u.batch_max_events,
            wait: u.batch_max_wait(),
            backoff: Duration::from_millis(u.retry_backoff_ms),
            task: "updater",
        };
        common::kafka::consume(self.consumer.clone(), pace, self, shutdown).await?;
        Ok(())
    }

    /// Applies one batch end to end, one stage after the other: decode,
    /// apply to Redis, fold in, write the lists, dead-letter, commit.
    /// Idempotent: may be called again with the same messages after a failure.
    pub async fn process(&mut self, batch: &[OwnedMessage]) -> Result<(), BatchError> {
        let started = Instant::now();
        // Who served each slot before this attempt's first write (a failover
        // during it fails the replication check: docs/design.md §10).
        let since = self.store.masters().await.map_err(|source| BatchError::Store { stage: "apply", source })?;
        let model = self.model.current();
        self.sync_new_items(model.as_deref()).await;
        let decoded = decode(batch, now_ms());
        let InRedis { histories, unknown_items, applied, duplicates, lost } =
            self.apply_to_redis(batch, &decoded.valid, model.as_deref()).await?;
        let mut refreshed = Vec::new();
        if let Some(m) = &model {
            let lists = self.fold_in(m, histories).await?;
            self.write_lists(&lists).await?;
            refreshed = lists.into_iter().map(|(u, _)| u).collect();
        }
        self.dead_letter(&decoded.dead).await?;
        self.wait_replicated(batch, &refreshed, &lost, &since).await?;
        let refreshed = refreshed.len();

        // Metrics, then the offsets (only now is everything in Redis).
        let done = now_ms();
        let processing = self.opened.map(|t| t.elapsed().as_secs_f64());
        for v in decoded.valid.iter().filter(|v| !lost.contains(&v.partition)) {
            if let Some(ts) = v.kafka_ts_ms {
                self.metrics.freshness_seconds.observe(((done - ts).max(0)) as f64 / 1000.0);
            }
            if let Some(s) = processing {
                self.metrics.processing_seconds.observe(s);
            }
        }
        self.metrics.events.with_label_values(&["applied"]).inc_by(applied as u64);
        self.metrics.events.with_label_values(&["duplicate"]).inc_by(duplicates as u64);
        self.metrics.events.with_label_values(&["rejected"]).inc_by(decoded.dead.len() as u64);
        self.metrics.users_refreshed.inc_by(refreshed as u64);
        self.metrics.batches.inc();
        self.metrics.batch_events.observe(batch.len() as f64);
        self.commit(batch, &lost);
        self.metrics.stage_seconds.with_label_values(&["total"]).observe(started.elapsed().as_secs_f64());

        // Items the model does not know, off the critical path of the batch.
        if let Some(m) = &model {
            self.fold_new_items(m, unknown_items).await;
        }
        Ok(())
    }

    /// Histories and offsets, one atomic script per partition of the batch;
    /// a partition whose state Redis lost is re-read from its log start
    /// instead ([`Pipeline::rebuild_partition`]).
    async fn apply_to_redis(
        &mut self,
        batch: &[OwnedMessage],
        valid: &[Valid],
        model: Option<&ServedModel>,
    ) -> Result<InRedis, BatchError> {
        let t = Instant::now();
        let mut by_partition: BTreeMap<i32, Vec<ApplyEvent>> = BTreeMap::new();
        for v in valid {
            by_partition.entry(v.partition).or_default().push(ApplyEvent {
                offset: v.offset,
                user: v.event.user_id().clone(),
                item: v.event.item_id().clone(),
                kind: v.event.kind(),
                ts: v.event.ts(),
                unknown_item: model.is_some_and(|m| !m.item_index.contains_key(v.event.item_id())),
            });
        }
        // Every partition of the batch, with the offsets of its first and last
        // messages (dead-lettered ones included: they advance the stored offset too).
        let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for m in batch {
            let s = spans.entry(m.partition()).or_insert((m.offset(), m.offset()));
            s.0 = s.0.min(m.offset());
            s.1 = s.1.max(m.offset());
        }
        for &p in spans.keys() {
            by_partition.entry(p).or_default();
            if !self.floors.contains_key(&p) {
                let floor = self.log_start(p).await;
                self.floors.insert(p, floor);
            }
        }
        let topic = self.events_topic.as_str();
        let store = &self.store;
        let slices: BTreeMap<i32, Slice> = spans
            .iter()
            .map(|(&p, &(first, last))| (p, Slice { floor: self.floors.get(&p).copied().unwrap_or(-1), first, last }))
            .collect();
        let slices = &slices;
        let results = futures::future::join_all(
            by_partition
                .iter()
                .map(|(p, evs)| async move { (*p, store.apply_guarded(topic, *p, evs, slices[p]).await) }),
        )
        .await;
        let mut out = InRedis::default();
        for (p, r) in results {
            let a = r.map_err(|source| BatchError::Store { stage: "apply", source })?;
            if a.lost {
                out.lost.push(p);
                continue;
            }
            out.applied += a.applied;
            out.duplicates += a.duplicates;
            out.histories.extend(a.histories);
            out.unknown_items.extend(a.unknown_items);
        }
        for &p in &out.lost {
            self.rebuild_partition(p, spans[&p].0).await?;
        }
        self.metrics.stage_seconds.with_label_values(&["apply"]).observe(t.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Folds in and scores every touched user, off the async runtime.
    async fn fold_in(
        &self,
        m: &Arc<ServedModel>,
        histories: Vec<UserHistory>,
    ) -> Result<Vec<(UserId, RecsList)>, BatchError> {
        let t = Instant::now();
        let (m2, items, params) = (m.clone(), self.new_items.items.clone(), self.params.clone());
        let lists =
            tokio::task::spawn_blocking(move || compute::refresh(&m2, &items, &params, &histories, now_ms())).await?;
        self.metrics.stage_seconds.with_label_values(&["fold"]).observe(t.elapsed().as_secs_f64());
        Ok(lists)
    }

    /// The touched users' lists.
    async fn write_lists(&self, lists: &[(UserId, RecsList)]) -> Result<(), BatchError> {
        let t = Instant::now();
        crate::store::write_recs(&mut self.store.conn.clone(), &self.store.keys, lists, self.store.ttl_s)
            .await
            .map_err(|source| BatchError::Store { stage: "write", source })?;
        self.metrics.stage_seconds.with_label_values(&["write"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }

    /// The stored offsets (witnesses) and the lists written, on the required
    /// replicas before the Kafka offsets move past them: a failover losing
    /// them would otherwise leave a list stale until its user's next event, or
    /// a witness missing (a needless rebuild from the log start). The
    /// histories were waited for in the apply step, before the witnesses.
    async fn wait_replicated(
        &self,
        batch: &[OwnedMessage],
        users: &[UserId],
        lost: &[i32],
        since: &common::redis_conn::Masters,
    ) -> Result<(), BatchError> {
        if self.store.replicas.0 == 0 {
            return Ok(());
        }
        let t = Instant::now();
        let keys = &self.store.keys;
        let mut partitions: Vec<i32> = batch.iter().map(Message::partition).filter(|p| !lost.contains(p)).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let written: Vec<String> = partitions
            .iter()
            .map(|&p| keys.offsets(&self.events_topic, p))
            .chain(users.iter().map(|u| keys.recs(u)))
            .collect();
        self.store
            .wait_replicated(written.iter().map(String::as_str), since)
            .await
            .map_err(|source| BatchError::Store { stage: "replicate", source })?;
        self.metrics.stage_seconds.with_label_values(&["replicate"]).observe(t.elapsed().as_secs_f64());
        Ok(())
    }

    /// Dead letters, acknowledged by the broker before their offsets are committed.
    async fn dead_letter(&self, dead: &[(DeadLetter, &'static str)]) -> Result<(), BatchError> {
        if dead.is_empty() {
            return Ok(());
        }
        let sends = dead.iter().map(|(d, _)| {
            let payload = d.to_json();
            let producer = &self.producer;
            let topic = self.dlq_topic.as_str();
            async move {
                producer
                    .send(
                        FutureRecord::<[u8], [u8]>::to(topic).payload(&payload),
                        Timeout::After(Duration::from_secs(10)),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(BatchError::DeadLetter)?;
        }
        for (d, class) in dead {
            self.metrics.rejected.with_label_values(&[class]).inc();
            tracing::warn!(reason = %d.reason, "event dead-lettered");
        }
        Ok(())
    }

    /// The first offset of partition `p`'s log (-1: check skipped for it).
    async fn log_start(&self, p: i32) -> i64 {
        common::kafka::log_start(&self.consumer, &self.events_topic, p).await
    }

    /// Redis has no stored offset for partition `p` although the batch starts
    /// at `first`, past the log start: Redis lost the updater's state
    /// (restarted empty, flushed). Re-read the partition from the start of its
    /// log so every history is rebuilt whole; the stored offsets, written again
    /// as events are re-applied, keep it exactly-once. Nothing of `p` in this
    /// batch is applied or committed.
    async fn rebuild_partition(&mut self, p: i32, first: i64) -> Result<(), BatchError> {
        // Retention may have moved the log start since it was fetched.
        let floor = self.log_start(p).await;
        self.floors.insert(p, floor);
        if floor >= first {
            return Err(BatchError::FloorMoved(p));
        }
        tracing::error!(
            partition = p,
            from = floor,
            batch_starts_at = first,
            "Redis lost the updater's state (no stored offset): re-reading the partition from the start of its log"
        );
        self.metrics.state_rebuilds.inc();
        let (consumer, topic) = (self.consumer.clone(), self.events_topic.clone());
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(&topic, p, rdkafka::Offset::Offset(floor), Duration::from_secs(10))
        })
        .await?;
        if let Err(e) = sought {
            // Not ours any more (rebalance): the new owner finds the same gap.
            tracing::warn!(partition = p, error = %e, "seek for the rebuild failed");
        }
        Ok(())
    }

    fn commit(&self, batch: &[OwnedMessage], skip: &[i32]) {
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch.iter().filter(|m| !skip.contains(&m.partition())) {
            let e = last.entry(m.partition()).or_insert(m.offset());
            *e = (*e).max(m.offset());
        }
        for (p, off) in last {
            // Fails for a partition revoked meanwhile: its new owner re-reads
            // from the last commit and the stored Redis offset skips what was applied.
            if let Err(e) = self.consumer.store_offset(&self.events_topic, p, off) {
                tracing::debug!(partition = p, error = %e, "offset not stored (partition no longer assigned?)");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Async) {
            if !matches!(e, rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "offset commit failed; the next commit covers it");
            }
        }
    }

    /// Resets the folded-in items when the model changed, and reloads the ones
    /// other instances folded in, at most every `new_item_refresh_ms`.
    async fn sync_new_items(&mut self, model: Option<&ServedModel>) {
        let Some(m) = model else { return };
        if self.new_items.version.as_ref() != Some(&m.version) {
            self.new_items = NewItemState { version: Some(m.version.clone()), ..NewItemState::default() };
        }
        let every = Duration::from_millis(self.settings.updater.new_item_refresh_ms);
        if self.settings.updater.new_item_min_users == 0
            || self.new_items.refreshed.is_some_and(|t| t.elapsed() < every)
        {
            return;
        }
        match crate::store::new_items(&mut self.store.conn.clone(), &self.store.keys, &m.version, m.factors()).await {
            Ok(list) => {
                let mut items = NewItems::default();
                for (id, users, f) in list {
                    if !m.item_index.contains_key(&id) {
                        items.upsert(id, users, f);
                    }
                }
                self.metrics.new_items.set(items.len() as i64);
                self.new_items.items = Arc::new(items);
                self.new_items.refreshed = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh folded-in items"),
        }
    }

    /// Folds in every unknown item that now has enough users (again when its
    /// user count has doubled since the last fold). Failures are logged only:
    /// this is derived state and the item's next event retries it.
    async fn fold_new_items(&mut self, m: &Arc<ServedModel>, unknown: Vec<(ItemId, usize)>) {
        let min = self.settings.updater.new_item_min_users;
        if min == 0 {
            return;
        }
        for (item, count) in unknown {
            let done = self.new_items.items.index.get(&item).map(|&j| self.new_items.items.users[j]);
            if count < min || done.is_some_and(|u| count < 2 * u) {
                continue;
            }
            let mut conn = self.store.conn.clone();
            let keys = &self.store.keys;
            let users = match crate::store::item_users(&mut conn, keys, &item, self.settings.updater.new_item_max_users)
                .await
            {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(item = %item, error = %e, "cannot read the item's users");
                    continue;
                }
            };
            let hists = match crate::store::read_histories(&mut conn, keys, &users).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(item = %item, error = %e, "cannot read the item's users' histories");
                    continue;
                }
            };
            let (m2, params, it) = (m.clone(), self.params.clone(), item.clone());
            let solved = tokio::task::spawn_blocking(move || compute::fold_item(&m2, &params, &it, &hists, min)).await;
            let Ok(Some((n, factors))) = solved else { continue };
            if let Err(e) = crate::store::put_new_item(&mut conn, keys, &m.version, &item, n, &factors).await {
                tracing::warn!(item = %item, error = %e, "cannot store the folded-in item");
                continue;
            }
            tracing::info!(item = %item, users = n, model = %m.version, "item folded in");
            self.metrics.items_folded.inc();
            let mut items = (*self.new_items.items).clone();
            items.upsert(item, n, factors);
            self.metrics.new_items.set(items.len() as i64);
            self.new_items.items = Arc::new(items);
        }
    }
}

impl BatchStep for Pipeline {
    /// Nothing: [`Pipeline::process`] decodes on every attempt.
    type Decoded = ();
    type Error = BatchError;

    fn opened(&mut self, at: Instant) {
        self.opened = Some(at);
    }

    async fn decode(&mut self, _batch: &[OwnedMessage]) {}

    async fn apply(&mut self, batch: &[OwnedMessage], _decoded: &()) -> Result<(), BatchError> {
        self.process(batch).await
    }

    fn failed(&mut self, e: &BatchError) {
        self.metrics.retries.with_label_values(&[e.stage()]).inc();
        if let BatchError::Store { source: StoreError::NotReplicated { .. }, .. } = e {
            self.metrics.replication_short.inc();
        }
    }
}
