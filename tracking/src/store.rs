//! Redis side of the attribution: one Lua script per batch that joins the
//! batch's impressions and events with each user's state, bumps the counters
//! and advances the per-partition offsets of both topics — atomically.
//!
//! Why everything in one script: the counters, the "already counted" flags and
//! the offsets must move together. If a crash can separate them, a replay
//! either counts a click twice (flags/counters written, offset not) or loses
//! it (offset written, counters not). Inside one script Redis applies all or
//! nothing, and a record at or below its partition's stored offset is skipped,
//! so replaying any suffix of either topic, in any interleaving, changes no
//! count. Kafka's committed offsets only decide where re-reading starts.
//!
//! Why the join state lives in Redis and not in the process: a restart (or a
//! rebalance that moves a partition to another instance) then loses nothing,
//! and process memory is bounded by one batch.
//!
//! Keys (all under the configured prefix, see [`schemas::RedisKeys`]):
//! - `track:{user}`: MessagePack (JSON costs 1.7 × as much to decode and
//!   re-encode in the script, `bench/state_codec.sh`; [`read_state`] shows one as JSON) of
//!   `{"l": latest impression ts, "i": [impression], "e": [pending event]}`
//!   — impression `{"r": rec_id, "t": ts, "v": variant, "m": model_version,
//!   "s": ",item,item,", "c"/"a"/"p": counted as click/cart/purchase (0/1)}`;
//!   recent event `{"t", "k": v|a|t, "i": item, "r": rec_id or "", "v":
//!   revenue or "", "x": transaction key, "w": when it was read (wall clock
//!   ms), "m": matched an impression (0/1)}`; `"x"`: the last 64 transaction
//!   keys whose revenue was counted. At most `max_impressions_per_user`
//!   impressions (newer than the longest window before `l`) and
//!   `max_pending_events_per_user` recent events (read less than
//!   `pending_grace_s` ago); TTL = longest window + grace.
//!
//! The join is symmetric, so its result does not depend on the order in
//! which the two topics are read: an event is matched against the user's
//! impressions when it is applied *and* kept for the grace, and an impression
//! is matched against the user's recent events when it is applied. An outcome
//! is a flag per impression (set by any matching event, whichever came
//! first), and revenue is counted once per transaction key of the user, so
//! matching an event twice counts nothing twice.
//! - `stats:{variant}:{model_version}`: hash `impressions`, `clicks`, `carts`,
//!   `purchases` (integers), `revenue` (float); each such key is also in the
//!   set `stats_index`, which `GET /v1/stats` reads instead of scanning.
//! - `stats_hourly:{variant}:{model_version}:{epoch hour of the impression}`:
//!   the same fields, TTL `hourly_retention_h`.
//! - `track_offsets:{topic}:{partition}`: the last offset applied (the
//!   updater's `offsets:` keys are its own; this consumer group has others).
//!
//! The script builds the `stats*` key names itself (from the prefix), because
//! which arms an event touches is only known once the user's impressions are
//! read inside the script. That is fine on one Redis; on Redis Cluster the
//! script would need per-user hash tags like the updater's (docs/design.md §9).

use common::redis_conn::RedisConn;
pub use common::redis_value::StoreError;
use common::redis_value::{as_int, as_str};
use redis::Value;
use rustc_hash::FxHashMap;
use schemas::{Counters, Event, EventKind, Impression, RedisKeys, UserId};

use crate::config::Windows;

/// `attribute.lua`, next to this file; see the module documentation. KEYS: `n_off` offset keys, then `n_users`
/// `track:{user}` keys. ARGV: prefix, click_ms, conversion_ms,
/// max_impressions, max_pending, grace_ms, state_ttl_s, hourly_ttl_s, n_off,
/// n_users, n_records, now (epoch ms), then the batch's highest offset per offset key (also
/// of records that did not parse), then per offset key the log start of its
/// partition and the batch's first offset in it (-1 -1: no lost-state check),
/// then 10 fields per record:
/// impression `i, offset key no, offset, user no, ts, rec_id, variant, model_version, items joined by ',', ""`;
/// event `e, offset key no, offset, user no, ts, kind v|a|t, item, rec_id or "", revenue or "", transaction key`.
pub const ATTRIBUTE_SCRIPT: &str = include_str!("attribute.lua");

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

/// What one script run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Impressions newer than their partition's stored offset.
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

/// The tracking task's Redis: a reconnecting connection, the key builder,
/// the attribution parameters. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub conn: RedisConn,
    pub keys: RedisKeys,
    pub windows: Windows,
    script: redis::Script,
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

impl Store {
    pub fn new(conn: RedisConn, keys: RedisKeys, windows: Windows) -> Store {
        Store { conn, keys, windows, script: redis::Script::new(ATTRIBUTE_SCRIPT) }
    }

    /// Runs [`ATTRIBUTE_SCRIPT`] for one batch. `topics` names the topics the
    /// records' `topic` indices refer to; `highest` is the batch's highest
    /// offset per (topic index, partition), including records that did not
    /// parse (so the stored offset moves past them too). Impressions are
    /// applied before events (fewer events wait), each topic-partition in
    /// offset order.
    pub async fn attribute(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
    ) -> Result<Outcome, StoreError> {
        self.attribute_guarded(topics, records, highest, &FxHashMap::default()).await
    }

    /// [`Store::attribute`] with the lost-state check for the topic-partitions
    /// in `guards`: one with no stored offset whose batch starts past its log
    /// start is skipped whole and reported in [`Outcome::lost`].
    pub async fn attribute_guarded(
        &self,
        topics: &[&str],
        records: &[Record],
        highest: &[((usize, i32), i64)],
        guards: &FxHashMap<(usize, i32), Guard>,
    ) -> Result<Outcome, StoreError> {
        // Offset key numbers (1-based, in first-seen order) with their
        // topic-partition and the batch's highest offset in it.
        let mut offset_no: FxHashMap<(usize, i32), usize> = FxHashMap::default();
        let mut offset_tps: Vec<(usize, i32)> = Vec::new();
        let mut offset_max: Vec<i64> = Vec::new();
        let coords = highest.iter().copied().chain(records.iter().map(|r| {
            let (t, p, off) = r.coords();
            ((t, p), off)
        }));
        for (tp, off) in coords {
            let n = *offset_no.entry(tp).or_insert_with(|| {
                offset_tps.push(tp);
                offset_max.push(-1);
                offset_tps.len()
            });
            offset_max[n - 1] = offset_max[n - 1].max(off);
        }
        let offset_keys: Vec<String> = offset_tps.iter().map(|&(t, p)| self.keys.track_offsets(topics[t], p)).collect();
        let mut user_no: FxHashMap<&UserId, usize> = FxHashMap::default();
        let mut users: Vec<&UserId> = Vec::new();
        for r in records {
            user_no.entry(r.user()).or_insert_with(|| {
                users.push(r.user());
                users.len()
            });
        }
        let mut ordered: Vec<&Record> = records.iter().filter(|r| matches!(r, Record::Impression { .. })).collect();
        ordered.extend(records.iter().filter(|r| matches!(r, Record::Event { .. })));

        let w = &self.windows;
        let mut inv = self.script.prepare_invoke();
        for k in &offset_keys {
            inv.key(k);
        }
        for u in &users {
            inv.key(self.keys.track(u));
        }
        inv.arg(self.keys.prefix())
            .arg(w.click_ms)
            .arg(w.conversion_ms)
            .arg(w.max_impressions)
            .arg(w.max_pending)
            .arg(w.grace_ms)
            .arg(w.state_ttl_s.max(1))
            .arg(w.hourly_ttl_s.max(1))
            .arg(offset_keys.len())
            .arg(users.len())
            .arg(ordered.len())
            .arg(schemas::now_ms());
        for m in &offset_max {
            inv.arg(*m);
        }
        for tp in &offset_tps {
            let g = guards.get(tp).copied().unwrap_or(Guard { log_start: -1, first: -1 });
            inv.arg(g.log_start).arg(g.first);
        }
        let mut items = String::new();
        for r in ordered {
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
                        .arg(offset_no[&(*topic, *partition)])
                        .arg(*offset)
                        .arg(user_no[&i.user_id])
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
                        .arg(offset_no[&(*topic, *partition)])
                        .arg(*offset)
                        .arg(user_no[e.user_id()])
                        .arg(e.ts())
                        .arg(kind_code(e.kind()))
                        .arg(e.item_id().as_str())
                        .arg(e.rec_id().map_or("", |r| r.as_str()))
                        .arg(revenue)
                        .arg(tx);
                }
            }
        }
        let reply: Value = inv.invoke_async(&mut self.conn.clone()).await?;
        let (mut outcome, lost) = parse_outcome(reply)?;
        outcome.lost = lost.iter().filter_map(|&n| offset_tps.get(n.checked_sub(1)?).copied()).collect();
        Ok(outcome)
    }
}

/// The outcome, and the numbers (1-based) of the offset keys found lost.
fn parse_outcome(reply: Value) -> Result<(Outcome, Vec<usize>), StoreError> {
    let bad = |what: &str| StoreError::Reply(format!("attribution script: {what}"));
    let Value::Array(parts) = reply else { return Err(bad("not an array")) };
    if parts.len() != 10 {
        return Err(bad("not 10 parts"));
    }
    let n = |i: usize| as_int(&parts[i]).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("a count"));
    let mut o = Outcome {
        impressions_applied: n(0)?,
        impressions_duplicate: n(1)?,
        events_applied: n(2)?,
        events_duplicate: n(3)?,
        attributed_on_event: n(4)?,
        attributed_late: n(5)?,
        buffered: n(6)?,
        expired: n(7)?,
        deltas: Vec::new(),
        lost: Vec::new(),
    };
    let Value::Array(rows) = &parts[8] else { return Err(bad("deltas")) };
    for row in rows {
        let Value::Array(f) = row else { return Err(bad("a delta")) };
        if f.len() != 7 {
            return Err(bad("a delta's length"));
        }
        let int = |i: usize| as_int(&f[i]).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| bad("a delta count"));
        let text = |i: usize| as_str(&f[i]).map(str::to_owned).ok_or_else(|| bad("a delta name"));
        o.deltas.push(Delta {
            variant: text(0)?,
            model_version: text(1)?,
            added: Counters {
                impressions: int(2)?,
                clicks: int(3)?,
                carts: int(4)?,
                purchases: int(5)?,
                revenue: text(6)?.parse().map_err(|_| bad("revenue"))?,
            },
        });
    }
    let Value::Array(lost) = &parts[9] else { return Err(bad("lost partitions")) };
    let lost = lost
        .iter()
        .map(|v| as_int(v).and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad("a lost partition")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((o, lost))
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
    use super::ATTRIBUTE_SCRIPT;
    use schemas::stats::{COUNTER_FIELDS, REVENUE_FIELD};

    /// Serving and the tests read the hashes by the names in `schemas`: the
    /// script must write exactly those.
    #[test]
    fn the_script_writes_the_stats_fields_schemas_names() {
        let line = ATTRIBUTE_SCRIPT.lines().find(|l| l.starts_with("local names = ")).expect("the names line");
        let names: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        assert_eq!(names, COUNTER_FIELDS);
        let revenue = format!("'HINCRBYFLOAT', key, '{REVENUE_FIELD}'");
        assert_eq!(ATTRIBUTE_SCRIPT.matches(&revenue).count(), 2, "totals and hourly: {revenue}");
    }
}
