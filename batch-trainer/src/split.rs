//! The two offline protocols of docs/design.md §6.
//!
//! - [`Protocol::Seed`] reproduces the original system's per-user temporal split
//!   so our figures are comparable with its published ones. Every test user is
//!   warm by construction, which flatters any model.
//! - [`Protocol::Time`] is the honest one: train on everything before a global
//!   cutoff, test on the add-to-cart / purchase events after it, cold users
//!   included (they get the popular fallback, as in production).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::RawEvent;
use crate::preprocess::{build_pairs_with, filter_pairs, FilterConfig, FilterReport, Pair, Weights};

/// Which offline protocol to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Per-user temporal split of the filtered pairs (the original's).
    Seed,
    /// Global time cutoff; cold users included.
    Time,
}

impl Protocol {
    /// Name used in reports and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Seed => "seed",
            Protocol::Time => "time",
        }
    }
}

/// Split knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    /// Share of each user's pairs (seed) or of all events (time) held out.
    pub test_fraction: f64,
    /// Explicit cutoff for the time protocol (epoch ms); default: the timestamp
    /// with `test_fraction` of the events at or after it.
    pub time_cutoff_ms: Option<i64>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { test_fraction: 0.15, time_cutoff_ms: None }
    }
}

/// A train/test split.
#[derive(Debug, Clone)]
pub struct Split {
    pub protocol: Protocol,
    /// Filtered training pairs.
    pub train: Vec<Pair>,
    /// Events on the training side (for popularity and category statistics).
    pub train_events: Vec<RawEvent>,
    /// Users evaluated, in order of first appearance.
    pub test_users: Vec<u64>,
    /// Relevant items per test user (sorted, distinct; may be empty in the seed
    /// protocol for users whose test pairs were all views).
    pub targets: HashMap<u64, Vec<u64>>,
    /// Item metadata is taken as of this time (no leakage from after it).
    pub cutoff_ts: i64,
    /// Pairs held out (seed) / conversion pairs after the cutoff (time).
    pub test_pairs: usize,
    pub filter: FilterReport,
}

impl Split {
    /// Number of (user, item) target pairs.
    pub fn target_pairs(&self) -> usize {
        self.targets.values().map(Vec::len).sum()
    }

    /// Number of users with at least one target.
    pub fn target_users(&self) -> usize {
        self.targets.values().filter(|t| !t.is_empty()).count()
    }
}

/// `max(floor(n · (1 − test_fraction)), 1)`, the original's cut rule.
pub fn cut_point(n: usize, test_fraction: f64) -> usize {
    ((n as f64 * (1.0 - test_fraction)).floor() as usize).max(1)
}

/// Groups indices `0..n` by `key(i)`, each group ordered by (`ts(i)`, `i`).
/// Indices whose key is `None` are left out.
fn group_sorted(
    n: usize,
    key: impl Fn(usize) -> Option<u64> + Sync,
    ts: impl Fn(usize) -> i64 + Sync,
) -> Vec<(u64, Vec<u32>)> {
    let mut idx: Vec<(u64, i64, u32)> =
        (0..n).into_par_iter().filter_map(|i| key(i).map(|k| (k, ts(i), i as u32))).collect();
    idx.par_sort_unstable();
    let mut out: Vec<(u64, Vec<u32>)> = Vec::new();
    for (k, _, i) in idx {
        match out.last_mut() {
            Some((lk, v)) if *lk == k => v.push(i),
            _ => out.push((k, vec![i])),
        }
    }
    out
}

/// The seed protocol: preprocessing, then a per-user temporal split of the
/// filtered pairs; targets are test pairs that are also add-to-cart or purchase
/// events in the user's last share of raw events.
pub fn seed_split(
    events: &[RawEvent],
    weights: &Weights,
    half_life_days: f64,
    filter: &FilterConfig,
    cfg: &SplitConfig,
) -> Split {
    // Held-out events are at each user's end, so the newest event overall is
    // the newest a training pair can hold (the served model's reference too).
    let recency = model::Recency::from_newest(half_life_days, events.iter().map(|e| e.ts));
    let (pairs, report) = filter_pairs(build_pairs_with(events, weights, &recency), filter);
    let by_user = group_sorted(pairs.len(), |i| Some(pairs[i].user), |i| pairs[i].ts);
    // Row order breaks timestamp ties: pairs are sorted by (ts, index), and
    // `filter_pairs` keeps pairs in order of first appearance.
    let mut train = Vec::with_capacity(pairs.len());
    let mut test: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut test_pairs = 0;
    for (user, idx) in &by_user {
        let cut = cut_point(idx.len(), cfg.test_fraction);
        train.extend(idx[..cut].iter().map(|&i| pairs[i as usize]));
        if idx.len() > cut {
            test_pairs += idx.len() - cut;
            test.insert(*user, idx[cut..].iter().map(|&i| pairs[i as usize].item).collect());
        }
    }
    // The same cut over each test user's raw events gives the test events.
    // Only test users' events matter here.
    let ev_by_user =
        group_sorted(events.len(), |i| test.contains_key(&events[i].user).then_some(events[i].user), |i| events[i].ts);
    let mut targets: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut held_out = vec![false; events.len()];
    for (user, idx) in &ev_by_user {
        let Some(test_items) = test.get(user) else { unreachable!("only test users were grouped") };
        let cut = cut_point(idx.len(), cfg.test_fraction);
        for &i in &idx[cut..] {
            held_out[i as usize] = true;
        }
        let converted: HashSet<u64> = idx[cut..]
            .iter()
            .map(|&i| &events[i as usize])
            .filter(|e| e.kind.is_conversion())
            .map(|e| e.item)
            .collect();
        let mut t: Vec<u64> = test_items.iter().copied().filter(|i| converted.contains(i)).collect();
        t.sort_unstable();
        t.dedup();
        targets.insert(*user, t);
    }
    let train_events: Vec<RawEvent> = events.iter().zip(&held_out).filter(|(_, &h)| !h).map(|(e, _)| *e).collect();
    let cutoff_ts = train.iter().map(|p| p.ts).max().unwrap_or(i64::MIN);
    let mut test_users: Vec<u64> = test.keys().copied().collect();
    test_users.sort_unstable();
    train.sort_by_key(|p| p.row);
    Split { protocol: Protocol::Seed, train, train_events, test_users, targets, cutoff_ts, test_pairs, filter: report }
}

/// The cutoff of the time protocol: the configured one, or the timestamp such
/// that `test_fraction` of the events are at or after it.
pub fn time_cutoff(events: &[RawEvent], cfg: &SplitConfig) -> i64 {
    if let Some(c) = cfg.time_cutoff_ms {
        return c;
    }
    let mut ts: Vec<i64> = events.par_iter().map(|e| e.ts).collect();
    if ts.is_empty() {
        return 0;
    }
    let k = ((ts.len() as f64) * (1.0 - cfg.test_fraction)).floor() as usize;
    let k = k.min(ts.len() - 1);
    *ts.select_nth_unstable(k).1
}

/// The time protocol: pairs from events before the cutoff (filtered as
/// configured) train; targets are the items each user added to cart or bought at
/// or after the cutoff, except items already in their training pairs (those are
/// never recommended back).
pub fn time_split(
    events: &[RawEvent],
    weights: &Weights,
    half_life_days: f64,
    filter: &FilterConfig,
    cfg: &SplitConfig,
) -> Split {
    let cutoff = time_cutoff(events, cfg);
    let train_events: Vec<RawEvent> = events.iter().filter(|e| e.ts < cutoff).copied().collect();
    // Ages count from the newest training event, as in a model trained at the cutoff.
    let recency = model::Recency::from_newest(half_life_days, train_events.iter().map(|e| e.ts));
    let (train, report) = filter_pairs(build_pairs_with(&train_events, weights, &recency), filter);
    let known: HashSet<(u64, u64)> = train.iter().map(|p| (p.user, p.item)).collect();
    let mut targets: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut test_users = Vec::new();
    let mut test_pairs = 0;
    for e in events.iter().filter(|e| e.ts >= cutoff && e.kind.is_conversion()) {
        if known.contains(&(e.user, e.item)) {
            continue;
        }
        let t = targets.entry(e.user).or_insert_with(|| {
            test_users.push(e.user);
            Vec::new()
        });
        if !t.contains(&e.item) {
            t.push(e.item);
            test_pairs += 1;
        }
    }
    targets.values_mut().for_each(|t| t.sort_unstable());
    Split {
        protocol: Protocol::Time,
        train,
        train_events,
        test_users,
        targets,
        cutoff_ts: cutoff - 1,
        test_pairs,
        filter: report,
    }
}

/// Runs the configured protocol.
pub fn split(
    protocol: Protocol,
    events: &[RawEvent],
    weights: &Weights,
    half_life_days: f64,
    filter: &FilterConfig,
    cfg: &SplitConfig,
) -> Split {
    match protocol {
        Protocol::Seed => seed_split(events, weights, half_life_days, filter, cfg),
        Protocol::Time => time_split(events, weights, half_life_days, filter, cfg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::EventKind::{self, *};

    fn ev(ts: i64, user: u64, item: u64, kind: EventKind) -> RawEvent {
        RawEvent { ts, user, item, kind, txn: None }
    }

    #[test]
    fn cut_rule_matches_the_original() {
        assert_eq!(cut_point(1, 0.15), 1);
        assert_eq!(cut_point(2, 0.15), 1);
        assert_eq!(cut_point(7, 0.15), 5);
        assert_eq!(cut_point(20, 0.15), 17);
        assert_eq!(cut_point(100, 0.15), 85);
    }

    #[test]
    fn seed_split_by_hand() {
        let no_filter = FilterConfig { min_user_items: 1, min_item_users: 1, kcore: false };
        // User 1 touches items 10..17 (8 pairs → cut 6), the last two later and
        // converted; item 16 only viewed. User 2 has one pair: train only.
        let mut events = Vec::new();
        for (k, item) in (10..16).enumerate() {
            events.push(ev(100 + k as i64, 1, item, View));
        }
        events.push(ev(200, 1, 16, View));
        events.push(ev(201, 1, 17, View));
        events.push(ev(202, 1, 17, AddToCart));
        events.push(ev(50, 2, 10, Transaction));
        let s = seed_split(&events, &Weights::default(), 0.0, &no_filter, &SplitConfig::default());
        assert_eq!(s.test_users, vec![1]);
        assert_eq!(s.test_pairs, 2);
        assert_eq!(s.train.len(), 7);
        assert!(s.train.iter().all(|p| p.item < 16));
        // User 1 has 9 raw events → cut 7: test events are 17/view and 17/cart.
        assert_eq!(s.targets[&1], vec![17]);
        assert_eq!(s.cutoff_ts, 105);
        // The held-out raw events are not on the training side.
        assert_eq!(s.train_events.len(), events.len() - 2);
    }

    #[test]
    fn ties_are_broken_by_row_order() {
        let no_filter = FilterConfig { min_user_items: 1, min_item_users: 1, kcore: false };
        // Two pairs with the same timestamp: the later row goes to test.
        let events = vec![ev(5, 1, 30, View), ev(5, 1, 20, AddToCart)];
        let s = seed_split(&events, &Weights::default(), 0.0, &no_filter, &SplitConfig::default());
        assert_eq!(s.train.len(), 1);
        assert_eq!(s.train[0].item, 30);
        assert_eq!(s.targets[&1], vec![20]);
    }

    #[test]
    fn time_split_by_hand() {
        let no_filter = FilterConfig { min_user_items: 1, min_item_users: 1, kcore: false };
        let events = vec![
            ev(1, 1, 10, View),
            ev(2, 1, 11, AddToCart),
            ev(3, 2, 10, View),
            ev(10, 1, 11, Transaction), // already a train item of user 1: not a target
            ev(11, 1, 12, AddToCart),
            ev(12, 3, 10, Transaction), // cold user
            ev(13, 2, 13, View),        // views are never targets
        ];
        let cfg = SplitConfig { time_cutoff_ms: Some(10), ..SplitConfig::default() };
        let s = time_split(&events, &Weights::default(), 0.0, &no_filter, &cfg);
        assert_eq!(s.train.len(), 3);
        assert_eq!(s.test_users, vec![1, 3]);
        assert_eq!(s.targets[&1], vec![12]);
        assert_eq!(s.targets[&3], vec![10]);
        assert_eq!(s.cutoff_ts, 9);
        assert_eq!(s.train_events.len(), 3);
        // Default cutoff: 15 % of 7 events at or after it → index floor(5.95) = 5.
        assert_eq!(time_cutoff(&events, &SplitConfig::default()), 12);
    }
}
