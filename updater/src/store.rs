//! Everything the updater keeps in Redis (docs/design.md §5).
//!
//! The heart is [`APPLY_SCRIPT`]: for one partition's slice of a batch it
//! compares each event's offset with `offsets:{topic}:{partition}`, folds the
//! newer ones into `hist:{user}` (and, for items the model does not know, the
//! item's user set) and into the live popularity rankings `trending:{window}`,
//! caps the histories and the rankings, advances the offset, and returns the
//! touched users' full histories — all in one atomic script. A restart, a
//! rebalance or two owners of one partition for a moment (old owner finishing a
//! batch while the new one starts) can therefore never apply an event twice or
//! skip one: the stored offset is a compare-and-set guard, not a hint.
//!
//! A Lua script rather than MULTI/EXEC: the same all-or-nothing execution, plus
//! the read of the stored offset inside the atomic step (MULTI/EXEC would need
//! WATCH and a dedicated connection per partition to get that).

use common::redis_conn::RedisConn;
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

/// `apply.lua`, next to this file; see the module documentation. KEYS: the offset key, then `h` history keys,
/// then `m` item user-set keys, then — with `nw` > 0 live rankings — the
/// landmarks hash and the `nw` ranking keys. ARGV: cap, ttl, n, h, m, floor,
/// first, last, nw, ranking size, now (ms), the weights of view, addtocart and
/// transaction, the rescale bound (windows), then a name and a time constant
/// (ms) per ranking, then 7 per event (offset, history key number, item, kind
/// index 0–2, ts, user-set key number or 0, user id).
///
/// Every applied event (offset above the stored one, so a replayed slice adds
/// nothing) also adds its kind's weight to the item in each ranking, forward
/// decayed (`schemas::popularity`): `w · exp((t − L) / W)` with `t` the
/// event's time, capped at `now` (a producer's clock running ahead must not
/// pin an item to the top), and `L` the ranking's landmark — set to the
/// newest event's time by the first batch, moved forward (every score
/// rescaled with one `ZUNIONSTORE`) once the newest event is more than the
/// rescale bound of windows past it. Each ranking is then trimmed to its size.
///
/// `first` and `last` are the offsets of the slice's first and last messages,
/// valid or not (dead-lettered messages advance the stored offset too, so it
/// always means "everything up to here was handled"). `floor` is the
/// partition's log start (-1 = no check): no stored offset while the slice
/// starts past the floor means Redis lost what was applied (restarted empty,
/// flushed); the script then applies nothing and returns `{-1}`, and the
/// caller re-reads from the floor.
pub const APPLY_SCRIPT: &str = include_str!("apply.lua");

/// The updater's Redis: a reconnecting connection, the key builder and the
/// history bounds. Cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Store {
    pub conn: RedisConn,
    pub keys: RedisKeys,
    script: redis::Script,
    /// Most distinct items per history.
    pub history_cap: usize,
    /// TTL of histories, lists and item user sets, s (0 = none).
    pub ttl_s: u64,
    /// The live rankings kept in the same step (none unless
    /// [`Store::with_live_rankings`]).
    pub live: LiveRankings,
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
            history_cap,
            ttl_s,
            live: LiveRankings::default(),
        }
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

async fn apply(
    conn: &mut RedisConn,
    store: &Store,
    topic: &str,
    partition: i32,
    events: &[ApplyEvent],
    slice: Slice,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let (script, keys, live) = (&store.script, &store.keys, &store.live);
    let mut users: Vec<&UserId> = Vec::new();
    let mut user_no: rustc_hash::FxHashMap<&UserId, usize> = Default::default();
    let mut items: Vec<&ItemId> = Vec::new();
    let mut item_no: rustc_hash::FxHashMap<&ItemId, usize> = Default::default();
    for e in events {
        user_no.entry(&e.user).or_insert_with(|| {
            users.push(&e.user);
            users.len()
        });
        if e.unknown_item {
            item_no.entry(&e.item).or_insert_with(|| {
                items.push(&e.item);
                items.len()
            });
        }
    }
    let mut inv = script.prepare_invoke();
    inv.key(keys.offsets(topic, partition));
    for u in &users {
        inv.key(keys.hist(u));
    }
    for i in &items {
        inv.key(keys.item_users(i));
    }
    if !live.windows.is_empty() {
        inv.key(keys.trending_landmarks());
        for w in &live.windows {
            inv.key(keys.trending(w));
        }
    }
    inv.arg(store.history_cap).arg(store.ttl_s).arg(events.len()).arg(users.len()).arg(items.len());
    inv.arg(slice.floor).arg(slice.first).arg(slice.last);
    let wt = &live.weights;
    inv.arg(live.windows.len()).arg(live.size).arg(now_ms);
    inv.arg(f64::from(wt.view)).arg(f64::from(wt.addtocart)).arg(f64::from(wt.transaction));
    inv.arg(schemas::popularity::RESCALE_AFTER_WINDOWS);
    for w in &live.windows {
        inv.arg(w.as_str()).arg(w.ms());
    }
    for e in events {
        inv.arg(e.offset)
            .arg(user_no[&e.user])
            .arg(e.item.as_str())
            .arg(e.kind.index())
            .arg(e.ts)
            .arg(if e.unknown_item { item_no[&e.item] } else { 0 })
            .arg(e.user.as_str());
    }
    let reply: Value = inv.invoke_async(conn).await?;
    let bad = |what: &str| StoreError::Reply(format!("apply script: {what}"));
    let Value::Array(parts) = reply else { return Err(bad("not an array")) };
    let [applied, hists, counts]: [Value; 3] = parts.try_into().map_err(|_| bad("not 3 parts"))?;
    let applied = as_int(&applied).ok_or_else(|| bad("applied count"))?;
    if applied < 0 {
        return Ok(Applied { applied: 0, duplicates: 0, histories: Vec::new(), unknown_items: Vec::new(), lost: true });
    }
    let applied = applied as usize;
    let Value::Array(hists) = hists else { return Err(bad("histories")) };
    let Value::Array(counts) = counts else { return Err(bad("item counts")) };
    if hists.len() != users.len() || counts.len() != items.len() {
        return Err(bad("wrong number of histories"));
    }
    let histories = users
        .iter()
        .zip(hists)
        .map(|(u, v)| Ok(UserHistory { user: (*u).clone(), items: parse_hash(&v).ok_or_else(|| bad("history"))? }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let unknown_items = items
        .iter()
        .zip(&counts)
        .map(|(i, c)| Ok(((*i).clone(), as_int(c).ok_or_else(|| bad("count"))? as usize)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Applied { applied, duplicates: events.len() - applied, histories, unknown_items, lost: false })
}

/// Parses an HGETALL reply of a history hash. Entries this code could not have
/// written are skipped with a warning rather than failing the whole batch.
fn parse_hash(v: &Value) -> Option<Vec<(ItemId, HistEntry)>> {
    let pairs = as_pairs(v)?;
    let mut out = Vec::with_capacity(pairs.len());
    for (k, val) in pairs {
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
