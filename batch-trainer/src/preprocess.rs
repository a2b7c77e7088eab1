//! From the cleaned event log to the (user, item) pairs ALS trains on, plus
//! the item metadata and statistics the re-rank and the reports use.
//!
//! - [`build_pairs`]: Σ event weights per (user, item), latest timestamp, row
//!   of the first event (the original's tie-breaker).
//! - [`filter_pairs`]: minimum distinct items per user and users per item, in
//!   one pass as the original, or iterated to a k-core.
//! - [`item_metadata`]: category and availability of each item as known at a
//!   cutoff time (no leakage of later values into an evaluation).
//! - [`category_stats`], [`item_popularity`]: counts per category and per item.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{ItemPropertyLog, PropertyValue, RawEvent};

/// Implicit-feedback weight of each event kind (recorded in every manifest,
/// so the updater folds users in with the weights the model was trained with).
pub use model::EventWeights as Weights;

/// Minimum activity filter on the (user, item) pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    /// A pair is kept only if its user has at least this many distinct items.
    pub min_user_items: usize,
    /// A pair is kept only if its item has at least this many distinct users.
    pub min_item_users: usize,
    /// `false`: one pass with counts taken on all input pairs (the original;
    /// some survivors fall below the thresholds). `true`: repeat the pass until
    /// nothing changes, so every survivor meets both thresholds (k-core).
    pub kcore: bool,
}

impl Default for FilterConfig {
    /// 5 items per user, 5 users per item, one pass.
    fn default() -> Self {
        Self { min_user_items: 5, min_item_users: 5, kcore: false }
    }
}

/// One (user, item) interaction, aggregated over all its events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub user: u64,
    pub item: u64,
    /// Σ of the weights of the pair's events.
    pub weight: f32,
    /// Timestamp of the pair's latest event (epoch ms).
    pub ts: i64,
    /// Row index (position in the event log) of the pair's first event; breaks
    /// timestamp ties in the temporal split.
    pub row: u32,
}

/// What [`filter_pairs`] kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterReport {
    pub pairs_in: usize,
    pub pairs_out: usize,
    /// Distinct users in the input.
    pub users_in: usize,
    /// Distinct users in the output.
    pub users_out: usize,
    pub items_in: usize,
    pub items_out: usize,
    /// Filter passes run: 1 without k-core; with k-core, every pass including
    /// the last one, which removes nothing.
    pub rounds: usize,
}

/// Category and availability of an item at some point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    pub category: Option<u64>,
    pub available: Option<bool>,
}

/// Activity of one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryStats {
    /// Events on items of the category.
    pub events: u64,
    /// Distinct users with an event on an item of the category.
    pub users: u64,
    /// Distinct items of the category with at least one event.
    pub items: u64,
}

/// Activity of one item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemPopularity {
    pub events: u64,
    /// Distinct users with an event on the item.
    pub users: u64,
    /// Σ of the event weights.
    pub weight: f64,
}

// ---------------------------------------------------------------------------
// Fast hashing for integer keys.

/// FxHash (the rustc hasher): one rotate, xor and multiply per word. Much
/// faster than SipHash on integer keys; not DoS-resistant, which does not
/// matter for offline data.
#[derive(Debug, Clone, Copy, Default)]
pub struct FxHasher {
    hash: u64,
}

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves its best bits at the top; hashbrown indexes
        // buckets with the low bits, so bring them down.
        self.hash.rotate_left(26)
    }
}

/// [`BuildHasher`] for [`FxHasher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FxBuildHasher;

impl BuildHasher for FxBuildHasher {
    type Hasher = FxHasher;
    #[inline]
    fn build_hasher(&self) -> FxHasher {
        FxHasher::default()
    }
}

/// A `HashMap` with [`FxBuildHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;
/// A `HashSet` with [`FxBuildHasher`].
pub type FxHashSet<T> = HashSet<T, FxBuildHasher>;

fn fx_map<K, V>(capacity: usize) -> FxHashMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, FxBuildHasher)
}

// ---------------------------------------------------------------------------
// Pairs.

/// Below this many events, [`build_pairs`] runs on one thread.
const PARALLEL_MIN_EVENTS: usize = 1 << 16;

/// Aggregates events into one [`Pair`] per distinct (user, item), sorted by
/// `row` (order of first appearance). Weight sums are added in row order, so
/// the result does not depend on the thread count.
///
/// # Panics
/// If `events` holds more than `u32::MAX` rows (`Pair::row` is a `u32`).
pub fn build_pairs(events: &[RawEvent], w: &Weights) -> Vec<Pair> {
    build_pairs_with(events, w, &model::Recency::default())
}

/// [`build_pairs`] with each event's weight decayed by its age
/// ([`Weights::decayed`], the updater's fold-in uses the same function).
///
/// # Panics
/// If `events` holds more than `u32::MAX` rows.
pub fn build_pairs_with(events: &[RawEvent], w: &Weights, recency: &model::Recency) -> Vec<Pair> {
    assert!(u32::try_from(events.len()).is_ok(), "build_pairs: {} events exceed the u32 row index", events.len());
    let Some(shards) = shard_rows(events, |e| e.user) else {
        return pairs_of_rows(events, 0..events.len() as u32, events.len(), w, recency);
    };
    // All events of a pair are in one shard (same user), in row order.
    let mut pairs: Vec<Pair> = shards
        .par_iter()
        .flat_map_iter(|rows| pairs_of_rows(events, rows.iter().copied(), rows.len(), w, recency))
        .collect();
    pairs.par_sort_unstable_by_key(|p| p.row);
    pairs
}

/// Splits the row indices of `events` into shards by `key` (a few per
/// thread), each shard in ascending row order, so that per-key aggregates can
/// be computed in parallel and still add up in row order. `None` when the
/// input is too small to be worth it or there is one thread: use the rows
/// `0..len` in one piece then. Rows must fit in a `u32`.
fn shard_rows<K>(events: &[RawEvent], key: K) -> Option<Vec<Vec<u32>>>
where
    K: Fn(&RawEvent) -> u64 + Sync,
{
    let threads = rayon::current_num_threads();
    if events.len() < PARALLEL_MIN_EVENTS || threads == 1 {
        return None;
    }
    let bits = (threads * 8).next_power_of_two().trailing_zeros().max(1);
    let shards = 1usize << bits;
    let shard_of = |k: u64| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
    let block = events.len().div_ceil(threads * 4);
    let per_block: Vec<Vec<Vec<u32>>> = events
        .par_chunks(block)
        .enumerate()
        .map(|(b, chunk)| {
            let mut out = vec![Vec::with_capacity(chunk.len() / shards + 16); shards];
            let base = b * block;
            for (i, e) in chunk.iter().enumerate() {
                out[shard_of(key(e))].push((base + i) as u32);
            }
            out
        })
        .collect();
    let merged = (0..shards)
        .into_par_iter()
        .map(|s| {
            let mut rows = Vec::with_capacity(per_block.iter().map(|b| b[s].len()).sum());
            for b in &per_block {
                rows.extend_from_slice(&b[s]);
            }
            rows
        })
        .collect();
    Some(merged)
}

/// Pairs of the given rows (ascending), in order of first appearance.
fn pairs_of_rows(
    events: &[RawEvent],
    rows: impl Iterator<Item = u32>,
    capacity: usize,
    w: &Weights,
    recency: &model::Recency,
) -> Vec<Pair> {
    let mut index: FxHashMap<(u64, u64), u32> = fx_map(capacity);
    let mut pairs: Vec<Pair> = Vec::with_capacity(capacity);
    for row in rows {
        let e = &events[row as usize];
        let weight = w.decayed(e.kind, e.ts, recency);
        match index.entry((e.user, e.item)) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let p = &mut pairs[*o.get() as usize];
                p.weight += weight;
                p.ts = p.ts.max(e.ts);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(pairs.len() as u32);
                pairs.push(Pair { user: e.user, item: e.item, weight, ts: e.ts, row });
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------
// Filter.

/// Keeps the pairs whose user has ≥ `min_user_items` distinct items and whose
/// item has ≥ `min_item_users` distinct users; see [`FilterConfig::kcore`] for
/// one pass vs. iterated. Input order is preserved.
///
/// `pairs` must hold each (user, item) at most once, as [`build_pairs`]
/// returns them: a user's number of pairs is its number of distinct items.
pub fn filter_pairs(pairs: Vec<Pair>, cfg: &FilterConfig) -> (Vec<Pair>, FilterReport) {
    // Dense ids so every pass counts into plain arrays.
    let (user_ids, n_users) = dense_ids(&pairs, |p| p.user);
    let (item_ids, n_items) = dense_ids(&pairs, |p| p.item);
    let dense: Vec<(u32, u32)> = user_ids.into_iter().zip(item_ids).collect();

    let mut alive: Vec<u32> = (0..pairs.len() as u32).collect();
    let mut user_cnt = vec![0usize; n_users];
    let mut item_cnt = vec![0usize; n_items];
    let mut rounds = 0;
    loop {
        rounds += 1;
        user_cnt.fill(0);
        item_cnt.fill(0);
        for &k in &alive {
            let (u, i) = dense[k as usize];
            user_cnt[u as usize] += 1;
            item_cnt[i as usize] += 1;
        }
        let before = alive.len();
        alive.retain(|&k| {
            let (u, i) = dense[k as usize];
            user_cnt[u as usize] >= cfg.min_user_items && item_cnt[i as usize] >= cfg.min_item_users
        });
        if !cfg.kcore || alive.len() == before {
            break;
        }
    }

    let mut user_seen = vec![false; n_users];
    let mut item_seen = vec![false; n_items];
    for &k in &alive {
        let (u, i) = dense[k as usize];
        user_seen[u as usize] = true;
        item_seen[i as usize] = true;
    }
    let report = FilterReport {
        pairs_in: pairs.len(),
        pairs_out: alive.len(),
        users_in: n_users,
        users_out: user_seen.iter().filter(|&&s| s).count(),
        items_in: n_items,
        items_out: item_seen.iter().filter(|&&s| s).count(),
        rounds,
    };
    let out = alive.iter().map(|&k| pairs[k as usize]).collect();
    tracing::info!(?report, "filtered pairs");
    (out, report)
}

/// Numbers the distinct `key`s of `pairs` 0, 1, … (in key order): returns
/// the number of each pair's key and the number of distinct keys. A parallel
/// sort, faster than a hash map on millions of rows.
fn dense_ids<K>(pairs: &[Pair], key: K) -> (Vec<u32>, usize)
where
    K: Fn(&Pair) -> u64 + Sync,
{
    assert!(u32::try_from(pairs.len()).is_ok(), "filter_pairs: {} pairs exceed the u32 index", pairs.len());
    let mut sorted: Vec<(u64, u32)> = pairs.par_iter().enumerate().map(|(i, p)| (key(p), i as u32)).collect();
    sorted.par_sort_unstable();
    let mut ids = vec![0u32; pairs.len()];
    let mut distinct = 0u32;
    for (j, &(k, i)) in sorted.iter().enumerate() {
        if j > 0 && sorted[j - 1].0 != k {
            distinct += 1;
        }
        ids[i as usize] = distinct;
    }
    let n = if pairs.is_empty() { 0 } else { distinct as usize + 1 };
    (ids, n)
}

// ---------------------------------------------------------------------------
// Item metadata and statistics.

/// The category and availability of every item of the log as known at
/// `cutoff_ts`: for each field, the value of the row with the latest timestamp
/// ≤ `cutoff_ts` (on equal timestamps the later row of the log wins). Rows after
/// the cutoff are ignored, so an item whose rows of a field are all later has
/// `None` there. Every item that appears in the log is in the map.
pub fn item_metadata(props: &ItemPropertyLog, cutoff_ts: i64) -> HashMap<u64, ItemMeta> {
    #[derive(Default)]
    struct Latest {
        category: Option<(i64, u64)>,
        available: Option<(i64, bool)>,
    }
    let mut latest: FxHashMap<u64, Latest> = fx_map(props.rows.len() / 4);
    for p in &props.rows {
        let entry = latest.entry(p.item).or_default();
        if p.ts > cutoff_ts {
            continue;
        }
        match p.value {
            PropertyValue::Category(c) => {
                if entry.category.is_none_or(|(t, _)| p.ts >= t) {
                    entry.category = Some((p.ts, c));
                }
            }
            PropertyValue::Available(a) => {
                if entry.available.is_none_or(|(t, _)| p.ts >= t) {
                    entry.available = Some((p.ts, a));
                }
            }
        }
    }
    latest
        .into_iter()
        .map(|(item, l)| {
            let meta = ItemMeta { category: l.category.map(|(_, c)| c), available: l.available.map(|(_, a)| a) };
            (item, meta)
        })
        .collect()
}

/// Events, distinct users and distinct items per category, over the events
/// whose item has a category in `meta` (the others are not counted).
pub fn category_stats(events: &[RawEvent], meta: &HashMap<u64, ItemMeta>) -> HashMap<u64, CategoryStats> {
    let mut stats: FxHashMap<u64, CategoryStats> = fx_map(1024);
    let mut users: FxHashSet<(u64, u64)> = FxHashSet::default();
    let mut items: FxHashSet<(u64, u64)> = FxHashSet::default();
    for e in events {
        let Some(cat) = meta.get(&e.item).and_then(|m| m.category) else {
            continue;
        };
        let s = stats.entry(cat).or_default();
        s.events += 1;
        if users.insert((cat, e.user)) {
            s.users += 1;
        }
        if items.insert((cat, e.item)) {
            s.items += 1;
        }
    }
    stats.into_iter().collect()
}

/// Events, distinct users and Σ event weights per item. The weights are added
/// in row order, whatever the thread count.
pub fn item_popularity(events: &[RawEvent], w: &Weights) -> HashMap<u64, ItemPopularity> {
    let popularity_of = |rows: &mut dyn Iterator<Item = u32>, n: usize| {
        let mut pop: FxHashMap<u64, ItemPopularity> = fx_map(n / 4);
        let mut seen: FxHashSet<(u64, u64)> = HashSet::with_capacity_and_hasher(n, FxBuildHasher);
        for row in rows {
            let e = &events[row as usize];
            let p = pop.entry(e.item).or_default();
            p.events += 1;
            p.weight += f64::from(w.of(e.kind));
            if seen.insert((e.item, e.user)) {
                p.users += 1;
            }
        }
        pop
    };
    match shard_rows(events, |e| e.item) {
        // One item is in one shard only: the shards' maps are disjoint.
        Some(shards) => shards
            .par_iter()
            .map(|rows| popularity_of(&mut rows.iter().copied(), rows.len()))
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect(),
        None => popularity_of(&mut (0..events.len() as u32), events.len()).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ItemProperty;
    use schemas::EventKind;

    const V: EventKind = EventKind::View;
    const C: EventKind = EventKind::AddToCart;
    const X: EventKind = EventKind::Transaction;

    fn ev(ts: i64, user: u64, item: u64, kind: EventKind) -> RawEvent {
        RawEvent { ts, user, item, kind, txn: (kind == X).then_some(1) }
    }

    fn pair(user: u64, item: u64) -> Pair {
        Pair { user, item, weight: 1.0, ts: 0, row: 0 }
    }

    fn prop(ts: i64, item: u64, value: PropertyValue) -> ItemProperty {
        ItemProperty { ts, item, value }
    }

    #[test]
    fn weights_default_and_serde_default() {
        let w = Weights::default();
        assert_eq!((w.of(V), w.of(C), w.of(X)), (1.0, 4.0, 8.0));
        let w: Weights = serde_json::from_str(r#"{"transaction": 10}"#).unwrap();
        assert_eq!((w.of(V), w.of(C), w.of(X)), (1.0, 4.0, 10.0));
        let f: FilterConfig = serde_json::from_str(r#"{"kcore": true}"#).unwrap();
        assert_eq!(f, FilterConfig { min_user_items: 5, min_item_users: 5, kcore: true });
    }

    #[test]
    fn build_pairs_sums_weights_latest_ts_first_row() {
        let events = [
            ev(50, 1, 10, V), // row 0: pair (1,10)
            ev(40, 2, 10, V), // row 1: pair (2,10)
            ev(30, 1, 10, C), // row 2: (1,10) earlier ts, ts stays 50
            ev(60, 1, 11, X), // row 3: pair (1,11)
            ev(70, 1, 10, X), // row 4: (1,10) latest ts 70
            ev(10, 2, 10, V), // row 5
            ev(0, 0, 0, V),   // row 6: ids 0
        ];
        let pairs = build_pairs(&events, &Weights::default());
        let expect = [
            Pair { user: 1, item: 10, weight: 13.0, ts: 70, row: 0 },
            Pair { user: 2, item: 10, weight: 2.0, ts: 40, row: 1 },
            Pair { user: 1, item: 11, weight: 8.0, ts: 60, row: 3 },
            Pair { user: 0, item: 0, weight: 1.0, ts: 0, row: 6 },
        ];
        assert_eq!(pairs, expect);
        let custom = Weights { view: 0.5, addtocart: 2.0, transaction: 3.0 };
        let w: Vec<f32> = build_pairs(&events, &custom).iter().map(|p| p.weight).collect();
        assert_eq!(w, vec![5.5, 1.0, 3.0, 0.5]);
        assert!(build_pairs(&[], &custom).is_empty());
    }

    /// Straightforward reference for the parallel path.
    fn naive_pairs(events: &[RawEvent], w: &Weights) -> Vec<Pair> {
        let mut out: Vec<Pair> = Vec::new();
        let mut at: HashMap<(u64, u64), usize> = HashMap::new();
        for (row, e) in events.iter().enumerate() {
            if let Some(&k) = at.get(&(e.user, e.item)) {
                out[k].weight += w.of(e.kind);
                out[k].ts = out[k].ts.max(e.ts);
            } else {
                at.insert((e.user, e.item), out.len());
                out.push(Pair { user: e.user, item: e.item, weight: w.of(e.kind), ts: e.ts, row: row as u32 });
            }
        }
        out
    }

    #[test]
    fn build_pairs_parallel_matches_reference() {
        let mut x: u64 = 99;
        let events: Vec<RawEvent> = (0..3 * PARALLEL_MIN_EVENTS)
            .map(|i| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ev((x >> 44) as i64, (x >> 8) % 3000, (x >> 30) % 500, EventKind::ALL[i % 3])
            })
            .collect();
        let w = Weights { view: 0.1, addtocart: 0.3, transaction: 0.7 };
        let expect = naive_pairs(&events, &w);
        assert!(expect.len() < events.len(), "the data must repeat pairs");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let got = pool.install(|| build_pairs(&events, &w));
        assert_eq!(got, expect); // bitwise equal f32 sums: same addition order
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(single.install(|| build_pairs(&events, &w)), expect);
    }

    /// Users 1..=3 with 2 items each on items 100/101 (3 users each), user 4
    /// with items 100, 102, 103 (one user each for 102 and 103).
    fn sample_pairs() -> Vec<Pair> {
        vec![
            pair(1, 100),
            pair(1, 101),
            pair(2, 100),
            pair(2, 101),
            pair(4, 100),
            pair(3, 100),
            pair(4, 102),
            pair(3, 101),
            pair(4, 103),
        ]
    }

    #[test]
    fn filter_one_pass_counts_on_all_input_pairs() {
        // min 3 items per user, min 3 users per item: only user 4 has 3 items,
        // only items 100 (4 users) and 101 (3 users) have 3 users.
        let cfg = FilterConfig { min_user_items: 3, min_item_users: 3, kcore: false };
        let (out, report) = filter_pairs(sample_pairs(), &cfg);
        assert_eq!(out, vec![pair(4, 100)]);
        // The survivor is below both thresholds after filtering: one pass only.
        assert_eq!(
            report,
            FilterReport { pairs_in: 9, pairs_out: 1, users_in: 4, users_out: 1, items_in: 4, items_out: 1, rounds: 1 }
        );

        // min 2 / 2: users 1..=4 all have ≥ 2 items; items 102/103 fall out.
        // User 4 keeps a single item (100) though it needs 2.
        let cfg = FilterConfig { min_user_items: 2, min_item_users: 2, kcore: false };
        let (out, report) = filter_pairs(sample_pairs(), &cfg);
        let expect: Vec<Pair> = sample_pairs().into_iter().filter(|p| p.item <= 101).collect();
        assert_eq!(out, expect); // input order kept
        assert_eq!((report.pairs_out, report.users_out, report.items_out), (7, 4, 2));
        assert_eq!(out.iter().filter(|p| p.user == 4).count(), 1);
    }

    #[test]
    fn filter_kcore_iterates_until_every_survivor_qualifies() {
        let cfg = FilterConfig { min_user_items: 2, min_item_users: 2, kcore: true };
        let (out, report) = filter_pairs(sample_pairs(), &cfg);
        // Pass 1 drops 102/103, pass 2 drops (4,100), pass 3 removes nothing.
        let expect: Vec<Pair> = sample_pairs().into_iter().filter(|p| p.item <= 101 && p.user != 4).collect();
        assert_eq!(out, expect);
        assert_eq!(report.rounds, 3);
        assert_eq!((report.pairs_out, report.users_out, report.items_out), (6, 3, 2));
        assert_k_core(&out, &cfg);

        // Cascade: min 3 / 3 kills everything.
        let cfg = FilterConfig { min_user_items: 3, min_item_users: 3, kcore: true };
        let (out, report) = filter_pairs(sample_pairs(), &cfg);
        assert!(out.is_empty());
        assert_eq!((report.users_out, report.items_out, report.rounds), (0, 0, 3));

        // Thresholds of 0 or 1 keep everything in one pass.
        let cfg = FilterConfig { min_user_items: 1, min_item_users: 0, kcore: true };
        let (out, report) = filter_pairs(sample_pairs(), &cfg);
        assert_eq!(out, sample_pairs());
        assert_eq!(report.rounds, 1);
    }

    fn assert_k_core(pairs: &[Pair], cfg: &FilterConfig) {
        let mut users: HashMap<u64, usize> = HashMap::new();
        let mut items: HashMap<u64, usize> = HashMap::new();
        for p in pairs {
            *users.entry(p.user).or_default() += 1;
            *items.entry(p.item).or_default() += 1;
        }
        assert!(users.values().all(|&n| n >= cfg.min_user_items), "{users:?}");
        assert!(items.values().all(|&n| n >= cfg.min_item_users), "{items:?}");
    }

    #[test]
    fn filter_kcore_on_random_pairs() {
        let mut x: u64 = 5;
        let events: Vec<RawEvent> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                // Half the events on a few busy ids, half on many rare ones.
                let u = if x >> 63 == 1 { (x >> 33) % 200 } else { 200 + (x >> 33) % 5000 };
                let i = if (x >> 62) & 1 == 1 { (x >> 13) % 100 } else { 100 + (x >> 13) % 3000 };
                ev(0, u, i, V)
            })
            .collect();
        let pairs = build_pairs(&events, &Weights::default());
        let cfg = FilterConfig { min_user_items: 5, min_item_users: 5, kcore: false };
        let (one, r1) = filter_pairs(pairs.clone(), &cfg);
        let cfg_k = FilterConfig { kcore: true, ..cfg };
        let (core, rk) = filter_pairs(pairs, &cfg_k);
        assert_k_core(&core, &cfg_k);
        assert!(rk.rounds > 1 && core.len() < one.len() && !core.is_empty(), "{r1:?} {rk:?}");
        // The k-core is a subsequence of the one-pass result, in the same order.
        let mut it = one.iter();
        assert!(core.iter().all(|c| it.any(|o| o == c)));
    }

    #[test]
    fn item_metadata_respects_the_cutoff() {
        use PropertyValue::{Available, Category};
        let props = ItemPropertyLog {
            rows: vec![
                prop(100, 1, Category(10)),
                prop(300, 1, Category(30)), // after the cutoff: ignored
                prop(200, 1, Category(20)), // latest ≤ cutoff
                prop(150, 1, Available(true)),
                prop(250, 1, Available(false)), // exactly at the cutoff: counts
                prop(50, 2, Category(5)),
                prop(50, 2, Category(6)),      // same ts: the later row wins
                prop(400, 2, Available(true)), // only later availability
                prop(260, 3, Category(9)),     // item 3 known only after the cutoff
                prop(10, 0, Available(true)),  // id 0
            ],
            reports: Vec::new(),
        };
        let meta = item_metadata(&props, 250);
        assert_eq!(meta.len(), 4);
        assert_eq!(meta[&1], ItemMeta { category: Some(20), available: Some(false) });
        assert_eq!(meta[&2], ItemMeta { category: Some(6), available: None });
        assert_eq!(meta[&3], ItemMeta::default());
        assert_eq!(meta[&0], ItemMeta { category: None, available: Some(true) });
        // With no cutoff, the last values (the original's leaky behaviour).
        let all = item_metadata(&props, i64::MAX);
        assert_eq!(all[&1], ItemMeta { category: Some(30), available: Some(false) });
        assert_eq!(all[&2], ItemMeta { category: Some(6), available: Some(true) });
        assert_eq!(all[&3].category, Some(9));
        // Before anything: every field None.
        assert!(item_metadata(&props, 0).values().all(|m| *m == ItemMeta::default()));
    }

    #[test]
    fn category_stats_counts_events_users_items() {
        let meta: HashMap<u64, ItemMeta> = [
            (10, ItemMeta { category: Some(1), available: None }),
            (11, ItemMeta { category: Some(1), available: Some(true) }),
            (20, ItemMeta { category: Some(2), available: None }),
            (30, ItemMeta { category: None, available: Some(true) }),
        ]
        .into();
        let events = [
            ev(0, 1, 10, V),
            ev(0, 1, 10, C),
            ev(0, 2, 11, V),
            ev(0, 1, 11, X),
            ev(0, 3, 20, V),
            ev(0, 3, 30, V), // no category
            ev(0, 4, 99, V), // no metadata
        ];
        let stats = category_stats(&events, &meta);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[&1], CategoryStats { events: 4, users: 2, items: 2 });
        assert_eq!(stats[&2], CategoryStats { events: 1, users: 1, items: 1 });
    }

    #[test]
    fn item_popularity_counts_events_users_weight() {
        let events = [ev(0, 1, 10, V), ev(0, 1, 10, C), ev(0, 2, 10, X), ev(0, 0, 0, V)];
        let pop = item_popularity(&events, &Weights::default());
        assert_eq!(pop.len(), 2);
        assert_eq!(pop[&10], ItemPopularity { events: 3, users: 2, weight: 13.0 });
        assert_eq!(pop[&0], ItemPopularity { events: 1, users: 1, weight: 1.0 });
    }

    #[test]
    fn item_popularity_parallel_matches_single_thread() {
        let mut x: u64 = 3;
        let events: Vec<RawEvent> = (0..2 * PARALLEL_MIN_EVENTS)
            .map(|i| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ev(0, (x >> 8) % 2000, (x >> 30) % 700, EventKind::ALL[i % 3])
            })
            .collect();
        let w = Weights { view: 0.1, addtocart: 0.3, transaction: 0.7 };
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let one = single.install(|| item_popularity(&events, &w));
        let many = pool.install(|| item_popularity(&events, &w));
        assert_eq!(one, many); // bitwise equal f64 sums
        assert_eq!(one.values().map(|p| p.events).sum::<u64>(), events.len() as u64);
        // Distinct users per item = pairs per item.
        let pairs = build_pairs(&events, &w);
        for (item, p) in &one {
            let n = pairs.iter().filter(|q| q.item == *item).count() as u64;
            assert_eq!(p.users, n, "item {item}");
        }
    }

    #[test]
    fn fx_hasher_distinguishes_tuples() {
        let h = |a: u64, b: u64| FxBuildHasher.hash_one((a, b));
        assert_ne!(h(1, 2), h(2, 1));
        assert_ne!(h(0, 0), h(0, 1));
        assert_eq!(h(7, 9), h(7, 9));
        let mut set: FxHashSet<(u64, u64)> = FxHashSet::default();
        for a in 0..300 {
            for b in 0..300 {
                set.insert((a, b));
            }
        }
        assert_eq!(set.len(), 90_000);
        // Byte writes: different lengths of zero bytes differ.
        assert_ne!(FxBuildHasher.hash_one(&[0u8][..]), FxBuildHasher.hash_one(&[0u8, 0][..]));
    }
}
