//! Everything the updater keeps in Redis (docs/design.md §5).
//!
//! The heart is [`Store::apply_guarded`], exactly once per event across
//! restarts, rebalances and two owners of one partition for a moment (old
//! owner finishing a batch while the new one starts), on one Redis node or a
//! Redis Cluster alike. Every atomic step touches the keys of one cluster slot:
//!
//! 1. [`APPLY_SCRIPT`], once per user of the slice (one key, `hist:{user}`):
//!    the history carries, in a guard field `@p{partition}`, the offset of the
//!    last event of that partition applied to it; the script folds the user's
//!    newer events in, caps the history, moves the guard and returns which
//!    events it applied and the whole history. The guard is per user, so no
//!    step needs a key of another user.
//! 2. The user sets of items the model does not know (`SADD`: a set, so a
//!    repeated step changes nothing).
//! 3. [`TRENDING_SCRIPT`] (every live-ranking key tagged `{t}`): the rankings
//!    keep their own per-partition offset and add only the events above it.
//!    Then, when `[redis] min_replicas_acked` asks for it, `WAIT` on every
//!    master written to ([`Store::wait_replicated`]): fewer replicas than
//!    required fails the step (`StoreError::NotReplicated`), so neither the
//!    witness below nor the Kafka offset moves past writes a failover could
//!    still lose, and the retried slice re-applies what the new master lacks.
//! 4. Last, `offsets:{topic}:{partition}` moves to the slice's last offset
//!    (never back). It is no longer the guard but the resume point and the
//!    lost-state witness: no stored offset while the slice starts past the
//!    partition's log start means Redis lost what was applied, and nothing is
//!    applied (the caller re-reads from the log start).
//!
//! A crash between the steps leaves each of them either done or not; the
//! replayed slice then skips what was done, step by step.
//!
//! Lua scripts rather than MULTI/EXEC: the same all-or-nothing execution, plus
//! the read of the guard inside the atomic step (MULTI/EXEC would need WATCH
//! and a dedicated connection to get that).

use common::redis_conn::{Masters, RedisConn};
pub use common::redis_value::StoreError;
use common::redis_value::{as_int, as_pairs};
use redis::Value;
use schemas::{HistEntry, ItemId, ModelVersion, RedisKeys, UserId};
pub use schemas::{RecItem, RecsList};

/// A user's whole history, as Redis holds it after the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct UserHistory {
    pub user: UserId,
    pub items: Vec<(ItemId, HistEntry)>,
}

/// One event of a partition slice, ready for the script.
#[derive(Debug, Clone)]
pub struct ApplyEvent {
    pub offset: i64,
    pub user: UserId,
    pub item: ItemId,
    pub kind: schemas::EventKind,
    pub ts: i64,
    /// The served model does not know the item: record the user in the item's user set.
    pub unknown_item: bool,
}

/// The offsets of one partition's slice of a batch (see [`Store::apply_guarded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The partition's log start; -1 = no lost-state check.
    pub floor: i64,
    /// Offset of the slice's first message (valid or not).
    pub first: i64,
    /// Offset of its last message.
    pub last: i64,
}

/// What one script run did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Events newer than the stored offset, now in the histories.
    pub applied: usize,
    /// Events at or below the stored offset (already applied before).
    pub duplicates: usize,
    /// Histories of every user of the slice (also of users whose events were
    /// all duplicates, so their lists are refreshed after a crash).
    pub histories: Vec<UserHistory>,
    /// For each unknown item of the slice: how many users it now has.
    pub unknown_items: Vec<(ItemId, usize)>,
    /// The partition's stored offset is gone although the slice starts past
    /// the floor given to [`Store::apply_guarded`]: nothing was applied.
    pub lost: bool,
}

/// `apply.lua`, next to this file: one user's events of one partition slice.
/// KEYS: `hist:{user}`. ARGV: cap, ttl, the guard field (`@p{partition}`),
/// n, then 4 per event in offset order (offset, item, kind index 0–2, ts).
/// Events at or below the guard's offset are skipped (already applied);
/// the others are counted into the item's entry (`views,carts,purchases,last_ts`,
/// the newer time kept), the guard moves to the highest applied offset, the
/// history is capped: past `cap` items, it is cut to its `cap - cap/16` most
/// recently touched (in batches, so a full history is not sorted on every
/// event), and its TTL renewed. Reply: {[0-based indices of the applied events], HGETALL}.
pub const APPLY_SCRIPT: &str = include_str!("apply.lua");

/// `trending.lua`, next to this file: the live rankings' share of a slice.
/// KEYS: `trending:{t}:landmarks`, `trending:{t}:offsets`, then the `nw`
/// ranking keys. ARGV: the guard field (`topic:partition`), the slice's last
/// offset, nw, ranking size, now (ms), the weights of view, addtocart and
/// transaction, the rescale bound (windows), n, then a name and a time
/// constant (ms) per ranking, then 4 per event (offset, item, kind, ts).
///
/// Every event above the stored offset adds its kind's weight to the item in
/// each ranking, forward decayed (`schemas::popularity`): `w · exp((t − L) / W)`
/// with `t` the event's time, capped at `now` (a producer's clock running
/// ahead must not pin an item to the top), and `L` the ranking's landmark —
/// set to the newest event's time by the first batch, moved forward (every
/// score rescaled with one `ZUNIONSTORE`) once the newest event is more than
/// the rescale bound of windows past it. Each ranking is then trimmed to its
/// size and the stored offset moves to the slice's last. Reply: events added.
pub const TRENDING_SCRIPT: &str = include_str!("trending.lua");

/// Moves `KEYS[1]` to `ARGV[1]` unless it already holds a higher offset.
const OFFSET_MAX: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// The updater's Redis: a reconnecting connection, the key builder and the
/// history bounds. Cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Store {
    pub conn: RedisConn,
    pub keys: RedisKeys,
    script: redis::Script,
    trending_script: redis::Script,
    offset_script: redis::Script,
    /// Most distinct items per history.
    pub history_cap: usize,
    /// TTL of histories, lists and item user sets, s (0 = none).
    pub ttl_s: u64,
    /// The live rankings kept in the same step (none unless
    /// [`Store::with_live_rankings`]).
    pub live: LiveRankings,
    /// Replicas that must acknowledge the writes before progress moves past
    /// them, and how long one `WAIT` may take (0: no wait; see
    /// [`Store::with_replicas_acked`]).
    pub replicas: (u32, std::time::Duration),
}

/// The live popularity rankings the apply step keeps (`schemas::popularity`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveRankings {
    /// One ranking per window (empty = none).
    pub windows: Vec<schemas::Window>,
    /// Items kept per ranking.
    pub size: usize,
    /// What one event of each kind adds (the model's confidence weights).
    pub weights: model::EventWeights,
}

impl LiveRankings {
    /// The rankings `[popularity]` asks for, weighted as `[training.weights]`.
    pub fn new(cfg: &schemas::PopularityConfig, weights: model::EventWeights) -> LiveRankings {
        LiveRankings { windows: cfg.windows.clone(), size: cfg.size, weights }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).field("history_cap", &self.history_cap).finish()
    }
}

impl Store {
    pub fn new(conn: RedisConn, keys: RedisKeys, history_cap: usize, ttl_s: u64) -> Store {
        Store {
            conn,
            keys,
            script: redis::Script::new(APPLY_SCRIPT),
            trending_script: redis::Script::new(TRENDING_SCRIPT),
            offset_script: redis::Script::new(OFFSET_MAX),
            history_cap,
            ttl_s,
            live: LiveRankings::default(),
            replicas: (0, std::time::Duration::ZERO),
        }
    }

    /// From now on waits, before any progress is recorded, until `n` replicas
    /// of each master written to hold the writes (`WAIT n timeout`); 0 = never.
    pub fn with_replicas_acked(mut self, n: u32, timeout: std::time::Duration) -> Store {
        self.replicas = (n, timeout);
        self
    }

    /// Waits until the configured replicas of every master holding one of
    /// `keys` acknowledged this connection's writes to it; fewer by the
    /// timeout is `StoreError::NotReplicated` (the caller must not move its
    /// progress past the writes). Nothing to do when no replicas are asked for.
    /// `since`: [`Store::masters`] before the first write being waited for (a
    /// slot whose master changed since is `StoreError::MasterChanged`).
    pub async fn wait_replicated<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        since: &Masters,
    ) -> Result<(), StoreError> {
        let (wanted, timeout) = self.replicas;
        self.conn.clone().require_replicas(keys, wanted, timeout, since).await
    }

    /// Which node serves each slot now, when replicas are waited for (else
    /// nothing is asked): taken before a step's writes, for [`Store::wait_replicated`].
    pub async fn masters(&self) -> Result<Masters, StoreError> {
        if self.replicas.0 == 0 {
            return Ok(Masters::default());
        }
        Ok(self.conn.clone().masters().await?)
    }

    /// Keeps `live` in the apply step from now on.
    pub fn with_live_rankings(mut self, live: LiveRankings) -> Store {
        self.live = live;
        self
    }

    /// Runs [`APPLY_SCRIPT`] for one partition's events (in offset order).
    pub async fn apply(&self, topic: &str, partition: i32, events: &[ApplyEvent]) -> Result<Applied, StoreError> {
        let first = events.first().map_or(-1, |e| e.offset);
        let last = events.last().map_or(-1, |e| e.offset);
        self.apply_guarded(topic, partition, events, Slice { floor: -1, first, last }).await
    }

    /// [`Store::apply`] for a slice whose messages span `slice.first..=slice.last`
    /// (`events` are its valid ones, possibly none): the stored offset moves to
    /// `slice.last`; refused (`lost`) when the stored offset is missing although
    /// the slice starts above `slice.floor`, the partition's log start — Redis
    /// lost the state, and applying from the middle of the log would leave
    /// every history without its older events.
    pub async fn apply_guarded(
        &self,
        topic: &str,
        partition: i32,
        events: &[ApplyEvent],
        slice: Slice,
    ) -> Result<Applied, StoreError> {
        apply(&mut self.conn.clone(), self, topic, partition, events, slice, schemas::now_ms()).await
    }
}

/// The guard field of a partition in a user's history (`@` is never in an item id).
pub fn guard_field(partition: i32) -> String {
    format!("@p{partition}")
}

async fn apply(
    conn: &mut RedisConn,
    store: &Store,
    topic: &str,
    partition: i32,
    events: &[ApplyEvent],
    slice: Slice,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let (keys, live) = (&store.keys, &store.live);
    let since = store.masters().await?;
    let offsets_key = keys.offsets(topic, partition);
    let bad = |what: &str| StoreError::Reply(format!("apply: {what}"));
    if slice.floor >= 0 && slice.first > slice.floor {
        let stored: Option<i64> = redis::cmd("GET").arg(&offsets_key).query_async(conn).await?;
        if stored.is_none() {
            return Ok(Applied {
                applied: 0,
                duplicates: 0,
                histories: Vec::new(),
                unknown_items: Vec::new(),
                lost: true,
            });
        }
    }

    // 1. Per user, its events in offset order.
    let mut users: Vec<&UserId> = Vec::new();
    let mut per_user: rustc_hash::FxHashMap<&UserId, Vec<usize>> = Default::default();
    for (i, e) in events.iter().enumerate() {
        per_user
            .entry(&e.user)
            .or_insert_with(|| {
                users.push(&e.user);
                Vec::new()
            })
            .push(i);
    }
    let field = guard_field(partition);
    let runs = users.iter().map(|u| {
        let idx = &per_user[u];
        let mut inv = store.script.prepare_invoke();
        inv.key(keys.hist(u)).arg(store.history_cap).arg(store.ttl_s).arg(&field).arg(idx.len());
        for &i in idx {
            let e = &events[i];
            inv.arg(e.offset).arg(e.item.as_str()).arg(e.kind.index()).arg(e.ts);
        }
        let mut c = conn.clone();
        async move { inv.invoke_async::<Value>(&mut c).await }
    });
    // Concurrent: one multiplexed connection (per node) pipelines them.
    let replies = futures::future::try_join_all(runs).await?;
    let mut applied_mask = vec![false; events.len()];
    let mut histories = Vec::with_capacity(users.len());
    for (u, reply) in users.iter().zip(replies) {
        let Value::Array(parts) = reply else { return Err(bad("not an array")) };
        let [done, hist]: [Value; 2] = parts.try_into().map_err(|_| bad("not 2 parts"))?;
        let Value::Array(done) = done else { return Err(bad("applied indices")) };
        let idx = &per_user[u];
        for d in &done {
            let j = as_int(d).ok_or_else(|| bad("applied index"))?;
            let i = *usize::try_from(j).ok().and_then(|j| idx.get(j)).ok_or_else(|| bad("applied index"))?;
            applied_mask[i] = true;
        }
        histories.push(UserHistory { user: (*u).clone(), items: parse_hash(&hist).ok_or_else(|| bad("history"))? });
    }
    let applied = applied_mask.iter().filter(|&&a| a).count();

    // 2. Users of unknown items (idempotent: a set).
    let mut items: Vec<&ItemId> = Vec::new();
    let mut seen: rustc_hash::FxHashSet<&ItemId> = Default::default();
    let mut p = redis::pipe();
    for (i, e) in events.iter().enumerate() {
        if !e.unknown_item {
            continue;
        }
        if seen.insert(&e.item) {
            items.push(&e.item);
        }
        if applied_mask[i] {
            p.cmd("SADD").arg(keys.item_users(&e.item)).arg(e.user.as_str()).ignore();
            if store.ttl_s > 0 {
                p.cmd("EXPIRE").arg(keys.item_users(&e.item)).arg(store.ttl_s).ignore();
            }
        }
    }
    for i in &items {
        p.cmd("SCARD").arg(keys.item_users(i));
    }
    let counts: Vec<i64> = if p.is_empty() { Vec::new() } else { p.query_async(conn).await? };
    if counts.len() != items.len() {
        return Err(bad("wrong number of item counts"));
    }
    let unknown_items = items.iter().zip(&counts).map(|(i, &c)| ((*i).clone(), c.max(0) as usize)).collect();

    // 3. The live rankings, under their own guard.
    if !live.windows.is_empty() {
        let mut inv = store.trending_script.prepare_invoke();
        inv.key(keys.trending_landmarks()).key(keys.trending_offsets());
        for w in &live.windows {
            inv.key(keys.trending(w));
        }
        let wt = &live.weights;
        inv.arg(format!("{topic}:{partition}")).arg(slice.last).arg(live.windows.len()).arg(live.size).arg(now_ms);
        inv.arg(f64::from(wt.view)).arg(f64::from(wt.addtocart)).arg(f64::from(wt.transaction));
        inv.arg(schemas::popularity::RESCALE_AFTER_WINDOWS).arg(events.len());
        for w in &live.windows {
            inv.arg(w.as_str()).arg(w.ms());
        }
        for e in events {
            inv.arg(e.offset).arg(e.item.as_str()).arg(e.kind.index()).arg(e.ts);
        }
        let _: i64 = inv.invoke_async(conn).await?;
    }

    // Every write above on `wanted` replicas before the witness moves.
    if store.replicas.0 > 0 {
        let hist: Vec<String> = users.iter().map(|u| keys.hist(u)).collect();
        let item_users: Vec<String> = items.iter().map(|i| keys.item_users(i)).collect();
        let trending = (!live.windows.is_empty()).then(|| keys.trending_landmarks());
        store.wait_replicated(hist.iter().chain(&item_users).chain(&trending).map(String::as_str), &since).await?;
    }

    // 4. The resume point and lost-state witness, last.
    let last = events.iter().map(|e| e.offset).chain([slice.last]).max().unwrap_or(-1);
    if last >= 0 {
        let _: i64 = store.offset_script.key(&offsets_key).arg(last).invoke_async(conn).await?;
    }
    Ok(Applied { applied, duplicates: events.len() - applied, histories, unknown_items, lost: false })
}

/// Parses an HGETALL reply of a history hash. Entries this code could not have
/// written are skipped with a warning rather than failing the whole batch.
fn parse_hash(v: &Value) -> Option<Vec<(ItemId, HistEntry)>> {
    let pairs = as_pairs(v)?;
    let mut out = Vec::with_capacity(pairs.len());
    for (k, val) in pairs {
        if k.starts_with('@') {
            continue; // a guard field (see `guard_field`)
        }
        match (ItemId::parse(k), HistEntry::parse(val)) {
            (Ok(item), Some(e)) => out.push((item, e)),
            _ => tracing::warn!(field = k, value = val, "skipping a malformed history entry"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// Reads the histories of `users` (one pipelined round trip).
pub async fn read_histories(
    conn: &mut RedisConn,
    keys: &RedisKeys,
    users: &[UserId],
) -> Result<Vec<UserHistory>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = redis::pipe();
    for u in users {
        p.cmd("HGETALL").arg(keys.hist(u));
    }
    let replies: Vec<Value> = p.query_async(conn).await?;
    users
        .iter()
        .zip(replies)
        .map(|(u, v)| {
            Ok(UserHistory {
                user: u.clone(),
                items: parse_hash(&v).ok_or_else(|| StoreError::Reply("history is not a hash".into()))?,
            })
        })
        .collect()
}

/// Writes every list (one pipelined round trip), with the TTL when non-zero.
pub async fn write_recs(
    conn: &mut RedisConn,
    keys: &RedisKeys,
    lists: &[(UserId, RecsList)],
    ttl_s: u64,
) -> Result<(), StoreError> {
    if lists.is_empty() {
        return Ok(());
    }
    let mut p = redis::pipe();
    for (u, l) in lists {
        let json = l.to_json();
        if ttl_s > 0 {
            p.cmd("SET").arg(keys.recs(u)).arg(json).arg("EX").arg(ttl_s).ignore();
        } else {
            p.cmd("SET").arg(keys.recs(u)).arg(json).ignore();
        }
    }
    p.query_async::<()>(conn).await?;
    Ok(())
}

/// Users recorded for an item the model does not know (at most `max`).
pub async fn item_users(
    conn: &mut RedisConn,
    keys: &RedisKeys,
    item: &ItemId,
    max: usize,
) -> Result<Vec<UserId>, StoreError> {
    let ids: Vec<String> = redis::cmd("SRANDMEMBER").arg(keys.item_users(item)).arg(max).query_async(conn).await?;
    let mut v: Vec<UserId> = ids.iter().filter_map(|s| UserId::parse(s).ok()).collect();
    v.sort();
    Ok(v)
}

/// Stores a folded-in item's factors for every instance: field = item id,
/// value = user count (u32 LE) then the factors (f32 LE).
pub async fn put_new_item(
    conn: &mut RedisConn,
    keys: &RedisKeys,
    version: &ModelVersion,
    item: &ItemId,
    users: usize,
    factors: &[f32],
) -> Result<(), StoreError> {
    let mut bytes = Vec::with_capacity(4 + factors.len() * 4);
    bytes.extend_from_slice(&(users as u32).to_le_bytes());
    for v in factors {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    redis::cmd("HSET").arg(keys.new_items(version)).arg(item.as_str()).arg(bytes).query_async::<()>(conn).await?;
    Ok(())
}

/// Every folded-in item of a model version: (item, users it was folded from, factors).
pub async fn new_items(
    conn: &mut RedisConn,
    keys: &RedisKeys,
    version: &ModelVersion,
    f: usize,
) -> Result<Vec<(ItemId, usize, Vec<f32>)>, StoreError> {
    let raw: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL").arg(keys.new_items(version)).query_async(conn).await?;
    let mut out = Vec::with_capacity(raw.len());
    for (k, b) in raw {
        let Ok(item) = ItemId::parse(&k) else { continue };
        if b.len() != 4 + 4 * f {
            // Written for another factor count: ignore (a new model has new keys anyway).
            continue;
        }
        let users = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let v: Vec<f32> = b[4..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if v.iter().all(|x| x.is_finite()) {
            out.push((item, users, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_entries_parse_the_script_format() {
        let e = HistEntry::parse("3,1,1,1433221332117").unwrap();
        assert_eq!(e, HistEntry { counts: [3, 1, 1], last_ts: 1433221332117 });
        assert!(e.purchased());
        let w = model::EventWeights::default();
        assert_eq!(e.weighted(|k| w.of(k)), 3.0 + 4.0 + 8.0);
        for bad in ["", "1,2,3", "1,2,3,4,5", "x,1,1,1", "1,1,1,x", "-1,1,1,1", "1.5,1,1,1"] {
            assert_eq!(HistEntry::parse(bad), None, "{bad}");
        }
    }
}
