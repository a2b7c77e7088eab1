//! Offline ranking metrics with the exact definitions and denominators of the
//! original system (ORIGINAL.md, "Offline protocol"), so figures are comparable.
//!
//! Notation: T_u = the relevant (target) items of user u, r_u = |T_u|, h_u@k = hits
//! of T_u among the first k recommendations, U = users with both recommendations
//! and targets.
//! - Precision@k = mean over U of h_u@k / k (k even when fewer were recommended)
//! - Recall@k = mean over U of h_u@k / r_u
//! - NDCG@k = mean over U of DCG/IDCG, binary gains, DCG = Σ 1/log2(rank+1),
//!   IDCG over min(r_u, k) hits
//! - HitRate@k = |{u : h_u@k ≥ 1}| / all users with targets (not only U)
//! - Coverage@k = distinct items in all top-k lists / distinct train items
//! - Novelty@k = mean over all top-k rows of −log2(cnt_i / N_train)
//! - Diversity@k = mean, over users with ≥ 1 categorised item in their top k, of
//!   the number of distinct categories there
//!
//! [`curve`] gives Recall@c and NDCG@c for every c up to a depth in one pass
//! (the `evaluate --report` charts).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

/// One evaluated user: their recommendations (best first) and relevant items, both
/// as item ids of one common id space.
#[derive(Debug, Clone, Copy)]
pub struct UserResult<'a> {
    pub recs: &'a [u64],
    pub targets: &'a [u64],
}

/// What the metrics need to know about the training data.
#[derive(Clone, Copy)]
pub struct TrainStats<'a> {
    /// Training pairs per item (items absent have none).
    pub item_pairs: &'a std::collections::HashMap<u64, u64>,
    /// Number of training pairs.
    pub n_pairs: u64,
    /// Category of an item, if known.
    pub category: &'a dyn Fn(u64) -> Option<u64>,
}

impl std::fmt::Debug for TrainStats<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainStats").field("items", &self.item_pairs.len()).field("n_pairs", &self.n_pairs).finish()
    }
}

/// Cut-offs of the reported metrics.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cutoffs {
    pub precision: usize,
    pub recall: usize,
    pub ndcg: usize,
    pub hit_rate: usize,
    pub beyond_accuracy: usize,
}

impl Default for Cutoffs {
    fn default() -> Self {
        Cutoffs { precision: 5, recall: 20, ndcg: 10, hit_rate: 5, beyond_accuracy: 5 }
    }
}

/// The seven metrics, keyed as in the JSON report (`recall@20`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// A metric by its key, `NaN` if absent.
    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(f64::NAN)
    }
}

fn hits(recs: &[u64], targets: &HashSet<u64>, k: usize) -> usize {
    recs.iter().take(k).filter(|i| targets.contains(i)).count()
}

fn ndcg(recs: &[u64], targets: &HashSet<u64>, k: usize) -> f64 {
    let dcg: f64 = recs
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, i)| targets.contains(i))
        .map(|(rank, _)| 1.0 / ((rank + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..targets.len().min(k)).map(|rank| 1.0 / ((rank + 2) as f64).log2()).sum();
    if ideal > 0.0 {
        dcg / ideal
    } else {
        0.0
    }
}

/// Computes all metrics over `users` (every user that received recommendations
/// or has targets). `n_train_items` is the number of distinct training items.
pub fn compute(users: &[UserResult<'_>], train: &TrainStats<'_>, n_train_items: usize, c: Cutoffs) -> Metrics {
    let (mut p_sum, mut r_sum, mut n_sum, mut n_u) = (0.0, 0.0, 0.0, 0usize);
    let (mut hit_users, mut target_users) = (0usize, 0usize);
    let mut covered: HashSet<u64> = HashSet::new();
    let (mut nov_sum, mut nov_rows) = (0.0, 0usize);
    let (mut div_sum, mut div_users) = (0.0, 0usize);
    for u in users {
        let targets: HashSet<u64> = u.targets.iter().copied().collect();
        if !targets.is_empty() {
            target_users += 1;
            if hits(u.recs, &targets, c.hit_rate) > 0 {
                hit_users += 1;
            }
            if !u.recs.is_empty() {
                n_u += 1;
                p_sum += hits(u.recs, &targets, c.precision) as f64 / c.precision as f64;
                r_sum += hits(u.recs, &targets, c.recall) as f64 / targets.len() as f64;
                n_sum += ndcg(u.recs, &targets, c.ndcg);
            }
        }
        let top = &u.recs[..u.recs.len().min(c.beyond_accuracy)];
        covered.extend(top.iter().copied());
        for i in top {
            let cnt = train.item_pairs.get(i).copied().unwrap_or(0);
            // An item without training pairs cannot be recommended by a model
            // fitted on them; counting it as 1 keeps the log finite.
            nov_sum += -((cnt.max(1) as f64) / train.n_pairs.max(1) as f64).log2();
            nov_rows += 1;
        }
        let cats: HashSet<u64> = top.iter().filter_map(|&i| (train.category)(i)).collect();
        if !cats.is_empty() {
            div_sum += cats.len() as f64;
            div_users += 1;
        }
    }
    let mean = |s: f64, n: usize| if n > 0 { s / n as f64 } else { 0.0 };
    let mut m = BTreeMap::new();
    m.insert(format!("precision@{}", c.precision), mean(p_sum, n_u));
    m.insert(format!("recall@{}", c.recall), mean(r_sum, n_u));
    m.insert(format!("ndcg@{}", c.ndcg), mean(n_sum, n_u));
    m.insert(format!("hit_rate@{}", c.hit_rate), mean(hit_users as f64, target_users));
    m.insert(format!("coverage@{}", c.beyond_accuracy), mean(covered.len() as f64, n_train_items));
    m.insert(format!("novelty@{}", c.beyond_accuracy), mean(nov_sum, nov_rows));
    m.insert(format!("diversity@{}", c.beyond_accuracy), mean(div_sum, div_users));
    Metrics(m)
}

/// Recall@c and NDCG@c at every cut-off c = 1..=depth (index c − 1), with the
/// definitions and the users U of [`compute`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Curve {
    pub recall: Vec<f64>,
    pub ndcg: Vec<f64>,
}

/// [`Curve`] of `users` in one pass over each list: a user's hits and DCG are
/// running sums along the ranks, so all cut-offs cost what the deepest one does.
pub fn curve(users: &[UserResult<'_>], depth: usize) -> Curve {
    let discount: Vec<f64> = (0..depth).map(|rank| 1.0 / ((rank + 2) as f64).log2()).collect();
    // ideal[j] = IDCG with j + 1 hits.
    let ideal: Vec<f64> = discount
        .iter()
        .scan(0.0, |acc, d| {
            *acc += d;
            Some(*acc)
        })
        .collect();
    let (mut recall, mut ndcg, mut n_u) = (vec![0.0; depth], vec![0.0; depth], 0usize);
    for u in users {
        let targets: HashSet<u64> = u.targets.iter().copied().collect();
        if targets.is_empty() || u.recs.is_empty() {
            continue;
        }
        n_u += 1;
        let (mut h, mut dcg) = (0usize, 0.0);
        for c in 0..depth {
            if u.recs.get(c).is_some_and(|i| targets.contains(i)) {
                h += 1;
                dcg += discount[c];
            }
            recall[c] += h as f64 / targets.len() as f64;
            ndcg[c] += dcg / ideal[targets.len().min(c + 1) - 1];
        }
    }
    if n_u > 0 {
        for v in recall.iter_mut().chain(ndcg.iter_mut()) {
            *v /= n_u as f64;
        }
    }
    Curve { recall, ndcg }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn hand_computed_case() {
        // Items 1..=6 in train with pair counts; N_train = 16.
        let counts = HashMap::from([(1, 8), (2, 4), (3, 2), (4, 1), (5, 1), (6, 0)]);
        let cat = |i: u64| match i {
            1 | 2 => Some(100),
            3 => Some(200),
            _ => None,
        };
        let train = TrainStats { item_pairs: &counts, n_pairs: 16, category: &cat };
        let c = Cutoffs { precision: 2, recall: 3, ndcg: 3, hit_rate: 2, beyond_accuracy: 2 };
        let users = [
            // hits at ranks 2 and 3; 3 targets (one never recommended).
            UserResult { recs: &[1, 3, 2], targets: &[3, 2, 9] },
            // no hits in the top 2 (hit at rank 3).
            UserResult { recs: &[4, 5, 3], targets: &[3] },
            // targets but no recommendations: counts for HitRate only.
            UserResult { recs: &[], targets: &[1] },
            // recommendations but no targets: beyond-accuracy metrics only.
            UserResult { recs: &[1, 2], targets: &[] },
        ];
        let m = compute(&users, &train, 6, c);
        // U = users 0 and 1.
        close(m.get("precision@2"), (1.0 / 2.0 + 0.0) / 2.0);
        close(m.get("recall@3"), (2.0 / 3.0 + 1.0 / 1.0) / 2.0);
        let l = |r: f64| 1.0 / (r + 1.0).log2();
        let ndcg0 = (l(2.0) + l(3.0)) / (l(1.0) + l(2.0) + l(3.0));
        let ndcg1 = l(3.0) / l(1.0);
        close(m.get("ndcg@3"), (ndcg0 + ndcg1) / 2.0);
        // HitRate over all 3 users with targets: only user 0 hits in the top 2.
        close(m.get("hit_rate@2"), 1.0 / 3.0);
        // Top-2 lists: {1,3}, {4,5}, {}, {1,2} → 5 distinct of 6 train items.
        close(m.get("coverage@2"), 5.0 / 6.0);
        let nov = |cnt: f64| -(cnt / 16.0).log2();
        close(m.get("novelty@2"), (nov(8.0) + nov(2.0) + nov(1.0) + nov(1.0) + nov(8.0) + nov(4.0)) / 6.0);
        // Users with categorised items: {100,200} → 2, {100} → 1.
        close(m.get("diversity@2"), 1.5);
    }

    #[test]
    fn curve_equals_compute_at_every_cut_off() {
        // Lists shorter than the depth, duplicates-free, users without targets
        // or without recommendations: the same users U as compute().
        let lists: Vec<(Vec<u64>, Vec<u64>)> = (0..40u64)
            .map(|u| {
                // 13 is prime to 97: at most 36 distinct items per list.
                let recs: Vec<u64> = (0..(u % 13) * 3).map(|r| (u * 7 + r * 13) % 97).collect();
                let targets: Vec<u64> = (0..u % 5).map(|t| (u * 11 + t * 5) % 97).collect();
                (recs, targets)
            })
            .collect();
        let users: Vec<UserResult<'_>> = lists.iter().map(|(r, t)| UserResult { recs: r, targets: t }).collect();
        let counts = HashMap::new();
        let cat = |_: u64| None;
        let train = TrainStats { item_pairs: &counts, n_pairs: 1, category: &cat };
        let curve = curve(&users, 50);
        assert_eq!((curve.recall.len(), curve.ndcg.len()), (50, 50));
        assert!(curve.recall.iter().any(|&v| v > 0.0), "the case must have hits");
        for c in 1..=50 {
            let cut = Cutoffs { precision: c, recall: c, ndcg: c, hit_rate: c, beyond_accuracy: c };
            let m = compute(&users, &train, 97, cut);
            assert!((curve.recall[c - 1] - m.get(&format!("recall@{c}"))).abs() < 1e-12, "recall@{c}");
            assert!((curve.ndcg[c - 1] - m.get(&format!("ndcg@{c}"))).abs() < 1e-12, "ndcg@{c}");
        }
        assert_eq!(super::curve(&[], 3), Curve { recall: vec![0.0; 3], ndcg: vec![0.0; 3] });
    }

    #[test]
    fn empty_input_gives_zeros_not_nan() {
        let counts = HashMap::new();
        let cat = |_: u64| None;
        let train = TrainStats { item_pairs: &counts, n_pairs: 0, category: &cat };
        let m = compute(&[], &train, 0, Cutoffs::default());
        assert!(m.0.values().all(|v| *v == 0.0));
        assert_eq!(m.0.len(), 7);
    }
}
