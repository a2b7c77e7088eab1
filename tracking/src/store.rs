//! Redis side of the attribution, exactly once per record across restarts,
//! rebalances and two owners of a partition for a moment, on one Redis node
//! or a Redis Cluster alike: every atomic step touches the keys of one
//! cluster slot ([`Store::attribute_guarded`]).
//!
//! 0. The resume points `track_offsets:{topic}:{partition}` of the batch's
//!    partitions are read: a record at or below its partition's went through
//!    every step before, and is skipped. A partition without one whose batch
//!    starts past its log start has lost its state (nothing of it is applied;
//!    the caller re-reads it from the log start).
//! 1. [`ATTRIBUTE_SCRIPT`], once per user of the batch, over that user's
//!    `track:{user}` only: the state carries, per topic-partition, the offset
//!    of the last of its records applied to it (the guard), so a record at or
//!    below it is not applied again. The script joins the user's newer
//!    records with the state, decides their counter deltas, keeps them in the
//!    state (an outbox, per record) and returns them — also the kept deltas of
//!    records applied before but above the resume point, whose counter step
//!    may not have run (a crash, or the other owner's run in between).
//!    Deltas at or below the resume point are dropped from the outbox.
//! 2. [`COUNTERS_SCRIPT`], once per batch, over the counters (every key
//!    tagged `{s}`: one slot): they keep their own guard, `topic:partition` →
//!    last offset counted, and add only the deltas of records above it; then
//!    the guard moves to the batch's last offset of each partition.
//! 3. Last, the resume points move to the batch's last offsets (never back).
//!
//! A crash between the steps leaves each of them done or not: the replay
//! skips, step by step, what was done, and the outboxes make step 2 see the
//! deltas of step 1 again. Kafka's committed offsets only decide where
//! re-reading starts.
//!
//! Why the join state lives in Redis and not in the process: a restart (or a
//! rebalance that moves a partition to another instance) then loses nothing,
//! and process memory is bounded by one batch.
//!
//! Keys (all under the configured prefix, see [`schemas::RedisKeys`]):
//! - `track:{user}`: MessagePack (JSON costs 1.7 × as much to decode and
//!   re-encode in the script, `bench/state_codec.sh`; [`read_state`] shows one as JSON) of
//!   `{"l": latest impression ts, "i": [impression], "e": [pending event],
//!   "x": [transaction key], "g": {topic-partition: offset}, "o": [outbox entry]}`
//!   — impression `{"r": rec_id, "t": ts, "v": variant, "m": model_version,
//!   "s": ",item,item,", "c"/"a"/"p": counted as click/cart/purchase (0/1)}`;
//!   recent event `{"t", "k": v|a|t, "i": item, "r": rec_id or "", "v":
//!   revenue or "", "x": transaction key, "w": when it was read (wall clock
//!   ms), "m": matched an impression (0/1)}`; `"x"`: the last 64 transaction
//!   keys whose revenue was counted; `"g"`: the guard, topic-partition
//!   (`{topic index}:{partition}`) → offset of its last record applied here;
//!   outbox entry `{"q": topic-partition, "o": offset, "d": [[variant,
//!   model_version, hour, impressions, clicks, carts, purchases, revenue]]}`.
//!   At most `max_impressions_per_user` impressions (newer than the longest
//!   window before `l`) and `max_pending_events_per_user` recent events (read
//!   less than `pending_grace_s` ago); TTL = longest window + grace, from the
//!   last write. A state with nothing left but its guard is kept until then.
//!
//! The join is symmetric, so its result does not depend on the order in
//! which the two topics are read: an event is matched against the user's
//! impressions when it is applied *and* kept for the grace, and an impression
//! is matched against the user's recent events when it is applied. An outcome
//! is a flag per impression (set by any matching event, whichever came
//! first), and revenue is counted once per transaction key of the user, so
//! matching an event twice counts nothing twice.
//! - `stats:{s}:{variant}:{model_version}`: hash `impressions`, `clicks`,
//!   `carts`, `purchases` (integers), `revenue` (float); each such key is also
//!   in the set `stats_index:{s}`, which `GET /v1/stats` reads instead of scanning.
//! - `stats_hourly:{s}:{variant}:{model_version}:{epoch hour of the impression}`:
//!   the same fields, TTL `hourly_retention_h`.
//! - `stats_offsets:{s}`: the counters' guard, hash `topic:partition` → last offset counted.
//! - `track_offsets:{topic}:{partition}`: the resume point and lost-state
//!   witness (the updater's `offsets:` keys are its own; this consumer group
//!   has others).

use common::redis_conn::{Masters, RedisConn};
pub use common::redis_value::StoreError;
use common::redis_value::{as_int, as_str};
use redis::Value;
use rustc_hash::FxHashMap;
use schemas::{Counters, Event, EventKind, Impression, ModelVersion, RedisKeys, UserId, Variant};

use crate::config::Windows;

/// `attribute.lua`, next to this file: one user's records of a batch (step 1
/// of the module documentation). KEYS: `track:{user}`. ARGV: click_ms,
/// conversion_ms, max_impressions, max_pending, grace_ms, state_ttl_s, now
/// (epoch ms), n_tp, then per topic-partition of the batch its id
/// (`{topic index}:{partition}`) and its resume point (-1: none), then
/// n_records, then 9 fields per record, impressions first, each
/// topic-partition in offset order:
/// impression `i, topic-partition, offset, ts, rec_id, variant, model_version, items joined by ',', ""`;
/// event `e, topic-partition, offset, ts, kind v|a|t, item, rec_id or "", revenue or "", transaction key`.
/// Reply: impressions applied, duplicate, events applied, duplicate,
/// attributed on event, attributed late, buffered, expired, then the deltas:
/// rows `topic-partition, offset, variant, model_version, hour, impressions,
/// clicks, carts, purchases, revenue` of the records above their resume point.
/// "Applied" is every record above its resume point (this run completes it,
/// also when an earlier run had put it in the state already).
pub const ATTRIBUTE_SCRIPT: &str = include_str!("attribute.lua");

/// `counters.lua`, next to this file: a batch's deltas into the counters
/// (step 2). KEYS: `stats_offsets:{s}`, `stats_index:{s}`, the n_keys
/// `stats:{s}:…` totals, then the `stats_hourly:{s}:…` keys. ARGV:
/// hourly_ttl_s, n_tp, n_keys, n_rows, then per topic-partition its guard
/// field (`topic:partition`) and the batch's last offset in it, then 9 fields
/// per row: topic-partition number (1-based), offset, total key number and
/// hourly key number (KEYS indices), impressions, clicks, carts, purchases,
/// revenue. Rows at or below their guard are skipped; the guard moves to the
/// batch's last offset. Reply: per total key moved, its KEYS index and what
/// was added (impressions, clicks, carts, purchases, revenue as text).
pub const COUNTERS_SCRIPT: &str = include_str!("counters.lua");

/// Moves `KEYS[1]` to `ARGV[1]` unless it already holds a higher offset.
const OFFSET_MAX: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// One parsed record of a batch with its Kafka coordinates.
#[derive(Debug, Clone)]
pub enum Record {
    Impression { topic: usize, partition: i32, offset: i64, impression: Impression },
    Event { topic: usize, partition: i32, offset: i64, event: Event },
}

impl Record {
    /// (topic index, partition, offset).
    pub fn coords(&self) -> (usize, i32, i64) {
        match self {
            Record::Impression { topic, partition, offset, .. } | Record::Event { topic, partition, offset, .. } => {
                (*topic, *partition, *offset)
            }
        }
    }

    fn user(&self) -> &UserId {
        match self {
            Record::Impression { impression, .. } => &impression.user_id,
            Record::Event { event, .. } => event.user_id(),
        }
    }
}

/// Counter deltas of one arm and model version, as applied by one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub variant: String,
    pub model_version: String,
    /// What the batch added to the arm's `stats:*` hash.
    pub added: Counters,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Impressions above their partition's resume point (applied now, or
    /// completed now after an interrupted run).
    pub impressions_applied: u64,
    /// Impressions at or below it (already applied before a restart).
    pub impressions_duplicate: u64,
    pub events_applied: u64,
    pub events_duplicate: u64,
    /// Events attributed to an impression already known when they were applied.
    pub attributed_on_event: u64,
    /// Pending events attributed when their impression was applied later.
    pub attributed_late: u64,
    /// Events that matched no impression and wait (within the grace) for one.
    pub buffered: u64,
    /// Waiting events given up (grace over, or the per-user cap reached).
    pub expired: u64,
    /// The counters the batch moved.
    pub deltas: Vec<Delta>,
    /// (topic index, partition) whose state Redis lost: nothing of them was
    /// applied; the caller re-reads them from the start of their logs.
    pub lost: Vec<(usize, i32)>,
}

/// The lost-state check of one topic-partition of a batch: the start of its
/// log and the batch's first offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    pub log_start: i64,
    pub first: i64,
}

/// Where [`Store::attribute_interrupted`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    /// After the per-user states (step 1): no counter moved, no resume point.
    UserStates,
    /// After the counters (step 2): no resume point moved.
    Counters,
}

/// The tracking task's Redis: a reconnecting connection, the key builder,
/// the attribution parameters. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub conn: RedisConn,
    pub keys: RedisKeys,
    pub windows: Windows,
    script: redis::Script,
    counters_script: redis::Script,
    offset_script: redis::Script,
    /// Replicas of each master written to that must hold the writes before
    /// the resume points move past them (`WAIT`), and how long to wait; 0 =
    /// never (`[redis] min_replicas_acked`).
    replicas: (u32, std::time::Duration),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).field("windows", &self.windows).finish()
    }
}

/// The key of a transaction for revenue de-duplication: its id and item, or
/// (without an id) its time and item, so a re-sent identical record adds
/// revenue once.
fn transaction_key(e: &Event) -> String {
    match e.transaction_id() {
        Some(t) => format!("{}@{}", t, e.item_id()),
        None => format!("ts{}@{}", e.ts(), e.item_id()),
    }
}

fn kind_code(k: EventKind) -> &'static str {
    match k {
        EventKind::View => "v",
        EventKind::AddToCart => "a",
        EventKind::Transaction => "t",
    }
}

/// The id of a topic-partition in a user's state (short: it is in every state).
fn tp_id(topic: usize, partition: i32) -> String {
    format!("{topic}:{partition}")
}

/// What the per-user steps of a batch returned, summed.
#[derive(Debug, Default)]
struct UserSteps {
    counts: [u64; 8],
    /// (topic-partition id, offset, variant, model version, hour, counters).
    rows: Vec<(String, i64, String, String, i64, Counters)>,
}

impl Store {
    pub fn new(conn: RedisConn, keys: RedisKeys, windows: Windows) -> Store {
        Store {
            conn,
            keys,
            windows,
            script: redis::Script::new(ATTRIBUTE_SCRIPT),
            counters_script: redis::Script::new(COUNTERS_SCRIPT),
            offset_script: redis::Script::new(OFFSET_MAX),
            replicas: (0, std::time::Duration::ZERO),
        }
    }

    /// From now on waits, before a resume point moves and before the caller
    /// commits, until `n` replicas of each master written to hold the writes
    /// (`WAIT n timeout`); 0 = never. A master failover then cannot take back
    /// a state or a counter the resume points (and Kafka) have passed.
    pub fn with_replicas_acked(mut self, n: u32, timeout: std::time::Duration) -> Store {
        self.replicas = (n, timeout);
        self
    }

    /// `StoreError::NotReplicated` unless the configured replicas of every
    /// master holding one of `keys` acknowledged this connection's writes.
    /// `since`: the masters before the step's first write (a slot whose
    /// master changed since is `StoreError::MasterChanged`).
    async fn wait_replicated(&self, keys: &[String], since: &Masters) -> Result<(), StoreError> {
        let (wanted, timeout) = self.replicas;
        if keys.is_empty() {
            return Ok(());
        }
        self.conn.clone().require_replicas(keys.iter().map(String::as_str), wanted, timeout, since).await
    }

    /// Attributes one batch (see the module documentation). `topics` names
    /// the topics the records' `topic` indices refer to; `highest` is the
    /// batch's highest offset per (topic index, partition), including records
    /// that did not parse (so the resume point moves past them too).
    /// Impressions are applied before events (fewer events wait), each
    /// topic-partition in offset order.
    pub async fn attribute(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
    ) -> Result<Outcome, StoreError> {
        self.attribute_guarded(topics, records, highest, &FxHashMap::default()).await
    }

    /// [`Store::attribute`] with the lost-state check for the topic-partitions
    /// in `guards`: one with no resume point whose batch starts past its log
    /// start is skipped whole and reported in [`Outcome::lost`].
    pub async fn attribute_guarded(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
        guards: &FxHashMap<(usize, i32), Guard>,
    ) -> Result<Outcome, StoreError> {
        self.run(topics, records, highest, guards, None).await
    }

    /// [`Store::attribute`] stopped after `step`, as a crash there would
    /// leave Redis: for the tests of the replay after such a crash.
    pub async fn attribute_interrupted(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
        step: StopAfter,
    ) -> Result<Outcome, StoreError> {
        self.run(topics, records, highest, &FxHashMap::default(), Some(step)).await
    }

    async fn run(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
        guards: &FxHashMap<(usize, i32), Guard>,
        stop: Option<StopAfter>,
    ) -> Result<Outcome, StoreError> {
        let mut conn = self.conn.clone();
        // Who served each slot before the first write: a failover during the
        // attempt (the counters' master dying after it decided "already
        // counted", say) must fail it, not let the resume points move.
        let since = if self.replicas.0 > 0 { conn.masters().await? } else { Masters::default() };
        // The batch's topic-partitions (first-seen order) and their last offsets.
        let mut tps: Vec<(usize, i32)> = Vec::new();
        let mut last: FxHashMap<(usize, i32), i64> = FxHashMap::default();
        let coords = highest.iter().copied().chain(records.iter().map(|r| {
            let (t, p, off) = r.coords();
            ((t, p), off)
        }));
        for (tp, off) in coords {
            let e = last.entry(tp).or_insert_with(|| {
                tps.push(tp);
                -1
            });
            *e = (*e).max(off);
        }
        if tps.is_empty() {
            return Ok(Outcome::default());
        }

        // 0. The resume points, and the lost-state check.
        let resume_keys: Vec<String> = tps.iter().map(|&(t, p)| self.keys.track_offsets(topics[t], p)).collect();
        let mut p = redis::pipe();
        for k in &resume_keys {
            p.cmd("GET").arg(k);
        }
        let resume: Vec<Option<i64>> = p.query_async(&mut conn).await?;
        let mut lost = Vec::new();
        let mut floor: FxHashMap<(usize, i32), i64> = FxHashMap::default();
        for (&tp, stored) in tps.iter().zip(&resume) {
            match (stored, guards.get(&tp)) {
                (None, Some(g)) if g.log_start >= 0 && g.first > g.log_start => lost.push(tp),
                _ => {
                    floor.insert(tp, stored.unwrap_or(-1));
                }
            }
        }
        let live: Vec<(usize, i32)> = tps.iter().copied().filter(|tp| floor.contains_key(tp)).collect();

        // 1. Per user, over its own state.
        let steps = self.user_steps(&mut conn, records, &floor).await?;
        let [applied_i, dup_i, applied_e, dup_e, on_event, late, buffered, expired] = steps.counts;
        let mut outcome = Outcome {
            impressions_applied: applied_i,
            impressions_duplicate: dup_i,
            events_applied: applied_e,
            events_duplicate: dup_e,
            attributed_on_event: on_event,
            attributed_late: late,
            buffered,
            expired,
            deltas: Vec::new(),
            lost,
        };

        if stop == Some(StopAfter::UserStates) {
            return Ok(outcome);
        }

        // 2. The counters, under their own guard.
        if !steps.rows.is_empty() {
            outcome.deltas = self.count(&mut conn, topics, &live, &last, steps.rows).await?;
        }
        if stop == Some(StopAfter::Counters) {
            return Ok(outcome);
        }

        // The states and counters must survive a failover before the resume
        // points pass them: a promoted replica without them would hold an
        // older guard while Kafka has moved on, and the records would be lost.
        let mut written: Vec<String> = records
            .iter()
            .filter(|r| {
                let (t, p, _) = r.coords();
                floor.contains_key(&(t, p))
            })
            .map(|r| self.keys.track(r.user()))
            .collect();
        written.sort_unstable();
        written.dedup();
        written.push(self.keys.stats_offsets());
        self.wait_replicated(&written, &since).await?;

        // 3. The resume points, last.
        let moves = live.iter().map(|&(t, p)| {
            let mut inv = self.offset_script.prepare_invoke();
            inv.key(self.keys.track_offsets(topics[t], p)).arg(last[&(t, p)]);
            let mut c = conn.clone();
            async move { inv.invoke_async::<i64>(&mut c).await }
        });
        futures::future::try_join_all(moves).await?;
        // And the resume points themselves before the caller commits: the
        // lost-state witness must not go back behind Kafka's offsets.
        let resume_keys: Vec<String> = live.iter().map(|&(t, p)| self.keys.track_offsets(topics[t], p)).collect();
        self.wait_replicated(&resume_keys, &since).await?;
        Ok(outcome)
    }

    /// Step 1: [`ATTRIBUTE_SCRIPT`] for every user with records on a
    /// topic-partition in `floor` (the others are lost), concurrently.
    async fn user_steps(
        &self,
        conn: &mut RedisConn,
        records: &[Record],
        floor: &FxHashMap<(usize, i32), i64>,
    ) -> Result<UserSteps, StoreError> {
        let mut users: Vec<&UserId> = Vec::new();
        let mut per_user: FxHashMap<&UserId, Vec<&Record>> = FxHashMap::default();
        let ordered = records
            .iter()
            .filter(|r| matches!(r, Record::Impression { .. }))
            .chain(records.iter().filter(|r| matches!(r, Record::Event { .. })));
        for r in ordered {
            let (t, p, _) = r.coords();
            if !floor.contains_key(&(t, p)) {
                continue;
            }
            per_user
                .entry(r.user())
                .or_insert_with(|| {
                    users.push(r.user());
                    Vec::new()
                })
                .push(r);
        }
        let w = &self.windows;
        let now = schemas::now_ms();
        // Every resume point of the batch goes to every user: the script also
        // drops counted deltas of the user's other topic's partition.
        let mut tps: Vec<(usize, i32)> = floor.keys().copied().collect();
        tps.sort_unstable();
        let runs = users.iter().map(|u| {
            let recs = &per_user[u];
            let mut inv = self.script.prepare_invoke();
            inv.key(self.keys.track(u))
                .arg(w.click_ms)
                .arg(w.conversion_ms)
                .arg(w.max_impressions)
                .arg(w.max_pending)
                .arg(w.grace_ms)
                .arg(w.state_ttl_s.max(1))
                .arg(now)
                .arg(tps.len());
            for &(t, p) in &tps {
                inv.arg(tp_id(t, p)).arg(floor[&(t, p)]);
            }
            inv.arg(recs.len());
            let mut items = String::new();
            for r in recs {
                match r {
                    Record::Impression { topic, partition, offset, impression: i } => {
                        items.clear();
                        for (n, it) in i.items.iter().enumerate() {
                            if n > 0 {
                                items.push(',');
                            }
                            items.push_str(it.as_str());
                        }
                        inv.arg("i")
                            .arg(tp_id(*topic, *partition))
                            .arg(*offset)
                            .arg(i.ts)
                            .arg(i.rec_id.as_str())
                            .arg(i.variant.as_str())
                            .arg(i.model_version.as_str())
                            .arg(items.as_str())
                            .arg("");
                    }
                    Record::Event { topic, partition, offset, event: e } => {
                        let revenue = e.revenue().map(|r| format!("{:?}", r.get())).unwrap_or_default();
                        let tx = if e.kind() == EventKind::Transaction { transaction_key(e) } else { String::new() };
                        inv.arg("e")
                            .arg(tp_id(*topic, *partition))
                            .arg(*offset)
                            .arg(e.ts())
                            .arg(kind_code(e.kind()))
                            .arg(e.item_id().as_str())
                            .arg(e.rec_id().map_or("", |r| r.as_str()))
                            .arg(revenue)
                            .arg(tx);
                    }
                }
            }
            let mut c = conn.clone();
            async move { inv.invoke_async::<Value>(&mut c).await }
        });
        // Concurrent: one multiplexed connection (per node) pipelines them.
        let replies = futures::future::try_join_all(runs).await?;
        let mut out = UserSteps::default();
        for reply in replies {
            parse_user_step(reply, &mut out)?;
        }
        Ok(out)
    }

    /// Step 2: [`COUNTERS_SCRIPT`] for the rows of the batch; what it added per arm.
    async fn count(
        &self,
        conn: &mut RedisConn,
        topics: &[&str],
        live: &[(usize, i32)],
        last: &FxHashMap<(usize, i32), i64>,
        rows: Vec<(String, i64, String, String, i64, Counters)>,
    ) -> Result<Vec<Delta>, StoreError> {
        let bad = |what: &str| StoreError::Reply(format!("counter step: {what}"));
        let tp_no: FxHashMap<String, usize> =
            live.iter().enumerate().map(|(n, &(t, p))| (tp_id(t, p), n + 1)).collect();
        // Total and hourly keys, numbered as KEYS (totals from 3 on, then hourly).
        let mut totals: Vec<(String, String)> = Vec::new();
        let mut total_no: FxHashMap<(String, String), usize> = FxHashMap::default();
        let mut hourly: Vec<(String, String, i64)> = Vec::new();
        let mut hourly_no: FxHashMap<(String, String, i64), usize> = FxHashMap::default();
        let mut numbered = Vec::with_capacity(rows.len());
        for (tp, offset, variant, version, hour, c) in rows {
            let t = *tp_no.get(&tp).ok_or_else(|| bad("a row of another partition"))?;
            let arm = (variant, version);
            let k = match total_no.get(&arm) {
                Some(&k) => k,
                None => {
                    totals.push(arm.clone());
                    total_no.insert(arm.clone(), totals.len());
                    totals.len()
                }
            };
            let h = (arm.0, arm.1, hour);
            let hk = match hourly_no.get(&h) {
                Some(&n) => n,
                None => {
                    hourly.push(h.clone());
                    hourly_no.insert(h, hourly.len());
                    hourly.len()
                }
            };
            numbered.push((t, offset, k, hk, c));
        }
        let parse = |variant: &str, version: &str| -> Result<(Variant, ModelVersion), StoreError> {
            Ok((
                variant.parse().map_err(|_| bad("a variant"))?,
                ModelVersion::parse(version).map_err(|_| bad("a model version"))?,
            ))
        };
        let mut inv = self.counters_script.prepare_invoke();
        inv.key(self.keys.stats_offsets()).key(self.keys.stats_index());
        for (variant, version) in &totals {
            let (v, m) = parse(variant, version)?;
            inv.key(self.keys.stats(v, &m));
        }
        for (variant, version, hour) in &hourly {
            let (v, m) = parse(variant, version)?;
            inv.key(self.keys.stats_hourly(v, &m, *hour));
        }
        inv.arg(self.windows.hourly_ttl_s.max(1)).arg(live.len()).arg(totals.len()).arg(numbered.len());
        for &(t, p) in live {
            inv.arg(format!("{}:{}", topics[t], p)).arg(last[&(t, p)]);
        }
        let n_totals = totals.len();
        for (t, offset, k, hk, c) in numbered {
            inv.arg(t)
                .arg(offset)
                .arg(2 + k)
                .arg(2 + n_totals + hk)
                .arg(c.impressions)
                .arg(c.clicks)
                .arg(c.carts)
                .arg(c.purchases)
                .arg(format!("{:?}", c.revenue));
        }
        let reply: Value = inv.invoke_async(conn).await?;
        let Value::Array(moved) = reply else { return Err(bad("not an array")) };
        let mut deltas = Vec::with_capacity(moved.len());
        for row in &moved {
            let Value::Array(f) = row else { return Err(bad("a delta")) };
            if f.len() != 6 {
                return Err(bad("a delta's length"));
            }
            let int = |i: usize| as_int(&f[i]).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("a delta count"));
            let k = usize::try_from(int(0)?).map_err(|_| bad("a key number"))?;
            let (variant, version) =
                k.checked_sub(3).and_then(|k| totals.get(k)).ok_or_else(|| bad("a key number"))?.clone();
            let revenue = as_str(&f[5]).and_then(|r| r.parse().ok()).ok_or_else(|| bad("revenue"))?;
            deltas.push(Delta {
                variant,
                model_version: version,
                added: Counters { impressions: int(1)?, clicks: int(2)?, carts: int(3)?, purchases: int(4)?, revenue },
            });
        }
        Ok(deltas)
    }
}

/// Adds one [`ATTRIBUTE_SCRIPT`] reply to `out`.
fn parse_user_step(reply: Value, out: &mut UserSteps) -> Result<(), StoreError> {
    let bad = |what: &str| StoreError::Reply(format!("attribution script: {what}"));
    let Value::Array(parts) = reply else { return Err(bad("not an array")) };
    if parts.len() != 9 {
        return Err(bad("not 9 parts"));
    }
    for (i, c) in out.counts.iter_mut().enumerate() {
        *c += as_int(&parts[i]).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("a count"))?;
    }
    let Value::Array(rows) = &parts[8] else { return Err(bad("deltas")) };
    for row in rows {
        let Value::Array(f) = row else { return Err(bad("a delta")) };
        if f.len() != 10 {
            return Err(bad("a delta's length"));
        }
        let int = |i: usize| as_int(&f[i]).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("a delta count"));
        let text = |i: usize| as_str(&f[i]).map(str::to_owned).ok_or_else(|| bad("a delta field"));
        let number = |i: usize| text(i)?.parse::<i64>().map_err(|_| bad("an offset or hour"));
        out.rows.push((
            text(0)?,
            number(1)?,
            text(2)?,
            text(3)?,
            number(4)?,
            Counters {
                impressions: int(5)?,
                clicks: int(6)?,
                carts: int(7)?,
                purchases: int(8)?,
                revenue: text(9)?.parse().map_err(|_| bad("revenue"))?,
            },
        ));
    }
    Ok(())
}

/// Reads a `stats:*` or `stats_hourly:*` hash.
pub async fn read_counters(conn: &mut RedisConn, key: &str) -> Result<Counters, StoreError> {
    let h: FxHashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(conn).await?;
    Ok(Counters::from_hash(&h))
}

/// Turns one `track:{user}` state (MessagePack) into JSON inside Redis.
const STATE_AS_JSON: &str = include_str!("state_as_json.lua");

/// One user's join state (`track:{user}`, stored as MessagePack) as JSON,
/// `None` when the user has none: for tests, and the way to look at a user by
/// hand (`redis-cli EVAL "return cjson.encode(cmsgpack.unpack(redis.call('GET',
/// KEYS[1])))" 1 recsys:track:USER`).
pub async fn read_state(conn: &mut RedisConn, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let raw: Option<String> = redis::Script::new(STATE_AS_JSON).key(key).invoke_async(conn).await?;
    raw.map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Reply(format!("state of {key}: {e}")))).transpose()
}

#[cfg(test)]
mod tests {
    use super::COUNTERS_SCRIPT;
    use schemas::stats::{COUNTER_FIELDS, REVENUE_FIELD};

    /// Serving and the tests read the hashes by the names in `schemas`: the
    /// script must write exactly those.
    #[test]
    fn the_script_writes_the_stats_fields_schemas_names() {
        let line = COUNTERS_SCRIPT.lines().find(|l| l.starts_with("local names = ")).expect("the names line");
        let names: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        assert_eq!(names, COUNTER_FIELDS);
        let revenue = format!("'HINCRBYFLOAT', key, '{REVENUE_FIELD}'");
        assert_eq!(COUNTERS_SCRIPT.matches(&revenue).count(), 1, "totals and hourly, one loop: {revenue}");
    }
}
