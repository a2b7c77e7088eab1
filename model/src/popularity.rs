//! The popular-items fallback: one documented algorithm for the API fallback and
//! the offline baseline alike (the original had two that disagreed).
//!
//! Items are ranked by a non-negative score (by default the summed event weights
//! of the training pairs), ties to the lower item index.

use serde::{Deserialize, Serialize};

use crate::topn::Scored;

/// Items ranked by popularity, best first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Popularity {
    ranked: Vec<Scored>,
}

impl Popularity {
    /// Ranks items by `scores[item]`, keeping the best `keep` with a positive score.
    pub fn from_scores(scores: &[f64], keep: usize) -> Self {
        let mut ranked: Vec<Scored> = scores
            .iter()
            .enumerate()
            .filter(|(_, &s)| s > 0.0 && s.is_finite())
            .map(|(i, &s)| Scored { item: i as u32, score: s as f32 })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        ranked.truncate(keep);
        Popularity { ranked }
    }

    /// The ranked list.
    pub fn ranked(&self) -> &[Scored] {
        &self.ranked
    }

    /// The top `k` items not in `exclude`.
    pub fn recommend(&self, exclude: &[u32], k: usize) -> Vec<Scored> {
        self.ranked.iter().filter(|s| !exclude.contains(&s.item)).take(k).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_filters_and_excludes() {
        let p = Popularity::from_scores(&[1.0, 5.0, 0.0, 5.0, 3.0], 3);
        let items: Vec<u32> = p.ranked().iter().map(|s| s.item).collect();
        assert_eq!(items, vec![1, 3, 4]);
        let rec: Vec<u32> = p.recommend(&[3], 5).iter().map(|s| s.item).collect();
        assert_eq!(rec, vec![1, 4]);
    }
}
