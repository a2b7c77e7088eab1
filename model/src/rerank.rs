//! The category re-rank of the original system, kept formula for formula so the
//! offline figures stay comparable (see ORIGINAL.md, "Category re-rank").
//!
//! For a candidate at ALS rank `r` (1-based): `als = 1/r`; `cat = 1.0` if its
//! category is one of the user's top categories, `0.5` if it is a tree neighbour
//! (parent or child) of one of them, else `0.2 × category popularity`, `0` without
//! a category. The blend `α·als + β·cat` uses weights that depend on how much
//! history the user has: little history trusts categories more.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::topn::Scored;

/// Knobs of the re-rank; the defaults are the original's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankParams {
    /// How many of the user's most frequent categories count as "theirs".
    pub top_categories: usize,
    /// Score of a candidate in a tree neighbour of the user's categories.
    pub neighbour_score: f32,
    /// Multiplier of the normalised category popularity for other candidates.
    pub popularity_score: f32,
    /// (α, β) for users with fewer than `short_history` history rows.
    pub short_weights: (f32, f32),
    pub short_history: usize,
    /// (α, β) for users with fewer than `medium_history` rows.
    pub medium_weights: (f32, f32),
    pub medium_history: usize,
    /// (α, β) for everyone else.
    pub long_weights: (f32, f32),
}

impl Default for RerankParams {
    fn default() -> Self {
        RerankParams {
            top_categories: 3,
            neighbour_score: 0.5,
            popularity_score: 0.2,
            short_weights: (0.3, 0.7),
            short_history: 5,
            medium_weights: (0.5, 0.5),
            medium_history: 20,
            long_weights: (0.6, 0.4),
        }
    }
}

/// `[training.rerank]`: whether the served lists are re-ranked, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankConfig {
    /// Serve (and gate on) ALS + re-rank instead of plain ALS.
    pub enabled: bool,
    /// ALS candidates re-ranked per user before keeping `k`.
    pub candidates: usize,
    #[serde(flatten)]
    pub params: RerankParams,
}

impl Default for RerankConfig {
    fn default() -> Self {
        RerankConfig { enabled: true, candidates: 20, params: RerankParams::default() }
    }
}

/// What the re-rank needs to know about items and categories.
#[derive(Debug, Clone, Default)]
pub struct CategoryIndex {
    /// Category of each item index, if known.
    pub item_category: Vec<Option<u64>>,
    /// Tree neighbours (parent and children) of each category.
    pub neighbours: HashMap<u64, Vec<u64>>,
    /// Events of the category divided by events of the busiest category.
    pub popularity: HashMap<u64, f32>,
}

impl CategoryIndex {
    /// True when no item has a category: the re-rank would be a no-op.
    pub fn is_empty(&self) -> bool {
        self.item_category.iter().all(Option::is_none)
    }

    /// The category of an item index.
    pub fn category(&self, item: u32) -> Option<u64> {
        self.item_category.get(item as usize).copied().flatten()
    }

    /// The user's most frequent categories over their history items (ties to the
    /// lower category id, so the result is deterministic).
    pub fn top_categories(&self, history: &[u32], n: usize) -> Vec<u64> {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for &i in history {
            if let Some(c) = self.category(i) {
                *counts.entry(c).or_default() += 1;
            }
        }
        let mut v: Vec<(u64, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().take(n).map(|(c, _)| c).collect()
    }

    /// Re-ranks `candidates` (best first, as ALS returned them) for a user whose
    /// history rows are `history` (item indices, one per row), keeping `k`.
    /// Returned scores are the blended scores.
    pub fn rerank(&self, candidates: &[Scored], history: &[u32], params: &RerankParams, k: usize) -> Vec<Scored> {
        let top = self.top_categories(history, params.top_categories);
        let near: Vec<u64> = top.iter().flat_map(|c| self.neighbours.get(c).into_iter().flatten().copied()).collect();
        let (a, b) = if history.len() < params.short_history {
            params.short_weights
        } else if history.len() < params.medium_history {
            params.medium_weights
        } else {
            params.long_weights
        };
        let mut scored: Vec<Scored> = candidates
            .iter()
            .enumerate()
            .map(|(r, c)| {
                let cat = match self.category(c.item) {
                    None => 0.0,
                    Some(cat) if top.contains(&cat) => 1.0,
                    Some(cat) if near.contains(&cat) => params.neighbour_score,
                    Some(cat) => params.popularity_score * self.popularity.get(&cat).copied().unwrap_or(0.0),
                };
                Scored { item: c.item, score: a / (r + 1) as f32 + b * cat }
            })
            .collect();
        // Stable: equal blends keep the ALS order.
        scored.sort_by(|x, y| y.score.total_cmp(&x.score));
        scored.truncate(k);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> CategoryIndex {
        // items 0..6 → categories; 10 is the user's, 11 its child, 20 unrelated.
        CategoryIndex {
            item_category: vec![Some(10), Some(10), Some(11), Some(20), None, Some(30)],
            neighbours: HashMap::from([(10, vec![11]), (11, vec![10])]),
            popularity: HashMap::from([(10, 1.0), (11, 0.5), (20, 0.25), (30, 0.0)]),
        }
    }

    fn cand(items: &[u32]) -> Vec<Scored> {
        items.iter().map(|&item| Scored { item, score: 0.0 }).collect()
    }

    #[test]
    fn hand_computed_blend() {
        let idx = index();
        let p = RerankParams { top_categories: 1, ..RerankParams::default() };
        // 3 history rows, all category 10 → short weights (0.3, 0.7).
        let out = idx.rerank(&cand(&[3, 4, 2, 0]), &[0, 1, 0], &p, 4);
        let want = [
            (0, 0.3 / 4.0 + 0.7 * 1.0),        // own category, rank 4
            (2, 0.3 / 3.0 + 0.7 * 0.5),        // child category, rank 3
            (3, 0.3 / 1.0 + 0.7 * 0.2 * 0.25), // other category, rank 1
            (4, 0.3 / 2.0),                    // no category, rank 2
        ];
        for (got, (item, score)) in out.iter().zip(want) {
            assert_eq!(got.item, item);
            assert!((got.score - score).abs() < 1e-6, "{got:?} vs {score}");
        }
    }

    #[test]
    fn weights_follow_history_length_and_k_truncates() {
        let idx = index();
        let p = RerankParams::default();
        let long: Vec<u32> = vec![3; 25]; // 25 rows in category 20 → (0.6, 0.4)
        let out = idx.rerank(&cand(&[0, 3]), &long, &p, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item, 3);
        assert!((out[0].score - (0.6 / 2.0 + 0.4)).abs() < 1e-6);
        assert_eq!(idx.top_categories(&[0, 2, 2, 5], 2), vec![11, 10]);
    }
}
