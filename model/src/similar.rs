//! Item-to-item neighbours: cosine similarity of item factors, top `k` per
//! item, as one batched scoring pass (the normalised item matrix scored
//! against itself with [`crate::topn::recommend_all`], each item excluding itself).
//!
//! Cost is `items² · factors` multiply-adds (≈ 6·10¹¹ for 50k items × 256
//! factors): once per model version, never per request. The trainer computes
//! them when it publishes a model (`similar:{item}` in Redis); serving answers
//! from those lists and never calls this.

use crate::dense::Factors;
use crate::topn::{recommend_all, Scored, DEFAULT_BLOCK};

/// Rows scaled to unit length (a zero row stays zero and scores 0 against everything).
pub fn normalised(y: &Factors) -> Factors {
    let mut out = y.clone();
    for i in 0..out.rows() {
        let row = out.row_mut(i);
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// For every item row, the `k` other items with the highest cosine
/// similarity of their factors, best first (ties to the lower index).
pub fn similar_items(y: &Factors, k: usize) -> Vec<Vec<Scored>> {
    let n = normalised(y);
    let rows: Vec<u32> = (0..n.rows() as u32).collect();
    recommend_all(&n, &n, k, DEFAULT_BLOCK, |i| &rows[i..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_by_angle_not_length_and_never_itself() {
        // 0 and 2 point the same way (2 is longer); 1 is orthogonal; 3 is opposite 0.
        let y = Factors::from_vec(4, 2, vec![1.0, 0.0, 0.0, 1.0, 5.0, 0.0, -1.0, 0.0]).unwrap();
        let s = similar_items(&y, 2);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0][0].item, 2);
        assert!((s[0][0].score - 1.0).abs() < 1e-6);
        assert_eq!(s[0][1].item, 1, "orthogonal (0) before opposite (-1)");
        assert!(s.iter().enumerate().all(|(i, l)| l.iter().all(|x| x.item as usize != i)));
        assert_eq!(s[3][0].item, 1);
    }

    #[test]
    fn matches_a_naive_cosine() {
        let y = Factors::seeded(50, 8, 1.0, 3);
        let fast = similar_items(&y, 5);
        for (i, got_i) in fast.iter().enumerate() {
            let cos = |j: usize| {
                let (a, b) = (y.row(i), y.row(j));
                let d: f32 = a.iter().zip(b).map(|(x, z)| x * z).sum();
                d / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
            };
            let mut all: Vec<(usize, f32)> = (0..50).filter(|&j| j != i).map(|j| (j, cos(j))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (got, want) in got_i.iter().zip(&all) {
                assert!((got.score - want.1).abs() < 1e-4, "item {i}: {got:?} vs {want:?}");
            }
        }
    }
}
