//! The CPU half of a batch, free of I/O so it can be tested and benchmarked on
//! its own: fold every touched user in against the served model, score them all
//! with one matrix product per block, merge in folded-in new items, re-rank,
//! and build the `recs:{user}` lists. Runs on the rayon pool, never on the
//! async runtime.

use model::rerank::RerankConfig;
use model::topn::{score_block, Scored};
use model::{Factors, Solver};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use schemas::{ItemId, UserId};

use crate::config::FoldInSolver;
use crate::served::ServedModel;
use crate::store::{RecItem, RecsList, UserHistory};

/// Items folded in against one model version (docs/design.md §4, symmetric solve),
/// scored beside the model's own items until the next model replaces them.
#[derive(Debug, Clone, Default)]
pub struct NewItems {
    pub ids: Vec<ItemId>,
    /// Users each item was folded from.
    pub users: Vec<usize>,
    pub factors: Vec<Vec<f32>>,
    pub index: FxHashMap<ItemId, usize>,
}

impl NewItems {
    /// Adds or replaces an item.
    pub fn upsert(&mut self, id: ItemId, users: usize, factors: Vec<f32>) {
        match self.index.get(&id) {
            Some(&j) => {
                self.users[j] = users;
                self.factors[j] = factors;
            }
            None => {
                self.index.insert(id.clone(), self.ids.len());
                self.ids.push(id);
                self.users.push(users);
                self.factors.push(factors);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What a refresh needs besides the model.
#[derive(Debug, Clone)]
pub struct ComputeParams {
    pub solver: FoldInSolver,
    /// List length.
    pub k: usize,
    pub rerank: RerankConfig,
    /// Users scored per matrix product.
    pub score_block: usize,
    /// The live catalog's availability, which overrides the model's own flags.
    pub live: crate::catalog::LiveCatalog,
}

impl ComputeParams {
    /// The shipped settings' parameters.
    pub fn from_settings(s: &crate::config::Settings) -> ComputeParams {
        ComputeParams {
            solver: s.updater.solver,
            // Longer than serving shows, so its own unavailability filter
            // leaves enough (docs/design.md, "Catalog state").
            k: s.updater.recs_size + s.updater.list_margin,
            rerank: s.training.rerank.clone(),
            score_block: s.updater.score_block,
            live: crate::catalog::LiveCatalog::default(),
        }
    }

    fn solver(&self, m: &ServedModel) -> Solver {
        match self.solver {
            FoldInSolver::Cholesky => Solver::Cholesky,
            FoldInSolver::Cg => m.solver,
        }
    }
}

/// A user's history split by what the model knows.
#[derive(Debug, Clone, Default)]
pub struct SplitHistory {
    /// (item row, summed weight) of items the model knows.
    pub known: Vec<(u32, f32)>,
    /// Items the model does not know.
    pub unknown: Vec<ItemId>,
}

/// Splits a history into known item rows and unknown items.
pub fn split_history(m: &ServedModel, h: &UserHistory) -> SplitHistory {
    let mut s = SplitHistory::default();
    for (item, e) in &h.items {
        match m.item_index.get(item) {
            Some(&row) => s.known.push((row, m.entry_weight(e))),
            None => s.unknown.push(item.clone()),
        }
    }
    s.known.sort_by_key(|&(r, _)| r);
    s
}

/// Folds one user in: `None` when no history item is known to the model (the
/// user has no factors; serving falls back to category-popular items).
pub fn fold_user(m: &ServedModel, known: &[(u32, f32)], solver: Solver) -> Option<Vec<f32>> {
    if known.is_empty() {
        return None;
    }
    let mut x = vec![0.0f32; m.factors()];
    model::fold_in(&m.y, &m.yty, known, m.alpha, solver, &mut x);
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Builds the lists of every user that can have one (users without known
/// items are left out). Output order follows `histories`.
pub fn refresh(
    m: &ServedModel,
    new_items: &NewItems,
    p: &ComputeParams,
    histories: &[UserHistory],
    now_ms: i64,
) -> Vec<(UserId, RecsList)> {
    let solver = p.solver(m);
    let f = m.factors();
    let n_items = m.y.rows() as u32;
    // Fold in parallel; keep the users with factors.
    let folded: Vec<(usize, SplitHistory, Vec<f32>)> = histories
        .par_iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let s = split_history(m, h);
            let x = fold_user(m, &s.known, solver)?;
            Some((i, s, x))
        })
        .collect();
    let want = p.k.max(if p.rerank.enabled { p.rerank.candidates } else { 0 });
    let live = p.live.snapshot();
    let unavailable = crate::catalog::unavailable_rows(m, &live);
    // Unavailable items and history items are never recommended; asking the
    // heap for a few more than `want` is not needed since they are excluded there.
    folded
        .par_chunks(p.score_block.max(1))
        .flat_map_iter(|block| {
            let mut q = Vec::with_capacity(block.len() * f);
            let mut excl: Vec<Vec<u32>> = Vec::with_capacity(block.len());
            for (_, s, x) in block {
                q.extend_from_slice(x);
                let mut e: Vec<u32> = s.known.iter().map(|&(r, _)| r).collect();
                e.extend_from_slice(&unavailable);
                e.sort_unstable();
                excl.push(e);
            }
            let refs: Vec<&[u32]> = excl.iter().map(Vec::as_slice).collect();
            let tops = score_block(&q, &m.y, &refs, want);
            block
                .iter()
                .zip(tops)
                .map(|((i, s, x), top)| {
                    let h = &histories[*i];
                    let merged = merge_new_items(top, x, s, new_items, n_items, want);
                    let ranked = rerank(m, p, merged, &s.known);
                    let items = ranked
                        .into_iter()
                        .map(|c| RecItem {
                            item_id: if c.item < n_items {
                                m.item_ids[c.item as usize].clone()
                            } else {
                                new_items.ids[(c.item - n_items) as usize].clone()
                            },
                            score: c.score,
                        })
                        .filter(|r| live.get(&r.item_id) != Some(&false))
                        .collect();
                    (h.user.clone(), RecsList { model: m.version.clone(), updated_ms: now_ms, items })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Adds the folded-in new items (rows `n_items + j`) the user has not touched.
fn merge_new_items(
    mut top: Vec<Scored>,
    x: &[f32],
    s: &SplitHistory,
    new_items: &NewItems,
    n_items: u32,
    want: usize,
) -> Vec<Scored> {
    if new_items.is_empty() {
        return top;
    }
    for (j, (id, y)) in new_items.ids.iter().zip(&new_items.factors).enumerate() {
        if s.unknown.contains(id) {
            continue;
        }
        let score = model::dense::dot(x, y);
        if score.is_finite() {
            top.push(Scored { item: n_items + j as u32, score });
        }
    }
    top.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    top.truncate(want);
    top
}

/// The configured category re-rank of the first `candidates`, keeping each
/// item's ALS score (so a list's scores stay comparable with a direct fold-in);
/// then cut to `k`.
fn rerank(m: &ServedModel, p: &ComputeParams, mut list: Vec<Scored>, known: &[(u32, f32)]) -> Vec<Scored> {
    if p.rerank.enabled && !m.categories.is_empty() && !list.is_empty() {
        let n = p.rerank.candidates.min(list.len());
        let als: FxHashMap<u32, f32> = list[..n].iter().map(|c| (c.item, c.score)).collect();
        let history: Vec<u32> = known.iter().map(|&(r, _)| r).collect();
        let reordered = m.categories.rerank(&list[..n], &history, &p.rerank.params, n);
        let head: Vec<Scored> = reordered.into_iter().map(|c| Scored { item: c.item, score: als[&c.item] }).collect();
        list.splice(..n, head);
    }
    list.truncate(p.k);
    list
}

/// Folds a new item in from the users that have it (the symmetric solve with
/// the user factors fixed, against `XᵀX + λI` of the trained users). `users`
/// pairs each user's history with their summed weight on the item. `None`
/// when fewer than `min_users` of them have factors.
pub fn fold_item(
    m: &ServedModel,
    p: &ComputeParams,
    item: &ItemId,
    users: &[UserHistory],
    min_users: usize,
) -> Option<(usize, Vec<f32>)> {
    let solver = p.solver(m);
    let f = m.factors();
    let rows: Vec<(Vec<f32>, f32)> = users
        .par_iter()
        .filter_map(|h| {
            let w = m.entry_weight(&h.items.iter().find(|(i, _)| i == item)?.1);
            let s = split_history(m, h);
            Some((fold_user(m, &s.known, solver)?, w))
        })
        .collect();
    if rows.len() < min_users.max(1) {
        return None;
    }
    let mut data = Vec::with_capacity(rows.len() * f);
    let mut hist = Vec::with_capacity(rows.len());
    for (j, (x, w)) in rows.iter().enumerate() {
        data.extend_from_slice(x);
        hist.push((j as u32, *w));
    }
    let xs = Factors::from_vec(rows.len(), f, data)?;
    let mut y = vec![0.0f32; f];
    model::fold_in(&xs, &m.xtx, &hist, m.alpha, solver, &mut y);
    y.iter().all(|v| v.is_finite()).then_some((rows.len(), y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synthetic::{item_id, synthetic_artifact, SyntheticSpec};
    use schemas::HistEntry;

    fn served() -> ServedModel {
        let mut art = synthetic_artifact(&SyntheticSpec::default());
        art.items[5].available = Some(false);
        ServedModel::from_artifact(art, "0".repeat(64)).unwrap()
    }

    fn hist(user: &str, items: &[(&str, [u32; 3])]) -> UserHistory {
        UserHistory {
            user: UserId::parse(user).unwrap(),
            items: items
                .iter()
                .map(|(i, c)| (ItemId::parse(i).unwrap(), HistEntry { counts: *c, last_ts: 1 }))
                .collect(),
        }
    }

    fn params(rerank: bool) -> ComputeParams {
        ComputeParams {
            solver: FoldInSolver::Cholesky,
            k: 30,
            rerank: RerankConfig { enabled: rerank, ..Default::default() },
            score_block: 32,
            live: Default::default(),
        }
    }

    #[test]
    fn lists_exclude_history_and_unavailable_items_and_keep_als_scores() {
        let m = served();
        let h = vec![
            hist("a", &[(&item_id(1), [2, 0, 0]), (&item_id(2), [0, 1, 0]), ("unknown-9", [1, 0, 0])]),
            hist("cold", &[("unknown-9", [1, 0, 0])]),
        ];
        for rerank in [false, true] {
            let out = refresh(&m, &NewItems::default(), &params(rerank), &h, 42);
            assert_eq!(out.len(), 1, "a user without known items gets no list");
            let (u, list) = &out[0];
            assert_eq!(u.as_str(), "a");
            assert_eq!((list.model.as_str(), list.updated_ms, list.items.len()), ("v1", 42, 30));
            let s = split_history(&m, &h[0]);
            let x = fold_user(&m, &s.known, Solver::Cholesky).unwrap();
            for e in &list.items {
                assert!(![item_id(1), item_id(2), item_id(5)].contains(&e.item_id.to_string()), "{e:?}");
                let r = m.item_index[&e.item_id] as usize;
                assert!((e.score - model::dense::dot(&x, m.y.row(r))).abs() < 1e-5);
            }
            // Same set either way: the re-rank only reorders the head.
            let mut items: Vec<String> = list.items.iter().map(|e| e.item_id.to_string()).collect();
            items.sort();
            let plain = refresh(&m, &NewItems::default(), &params(false), &h, 42);
            let mut want: Vec<String> = plain[0].1.items.iter().map(|e| e.item_id.to_string()).collect();
            want.sort();
            assert_eq!(items, want);
        }
    }

    #[test]
    fn folded_in_items_compete_with_the_model_items() {
        let m = served();
        let h = vec![hist("a", &[(&item_id(1), [2, 0, 0])])];
        let x = fold_user(&m, &split_history(&m, &h[0]).known, Solver::Cholesky).unwrap();
        // A new item pointing along the user's factors outscores everything.
        let mut items = NewItems::default();
        items.upsert(ItemId::parse("launch").unwrap(), 5, x.iter().map(|v| v * 100.0).collect());
        let out = refresh(&m, &items, &params(false), &h, 1);
        assert_eq!(out[0].1.items[0].item_id.as_str(), "launch");
        // ... unless the user already has it.
        let h2 = vec![hist("a", &[(&item_id(1), [2, 0, 0]), ("launch", [1, 0, 0])])];
        let out = refresh(&m, &items, &params(false), &h2, 1);
        assert!(out[0].1.items.iter().all(|e| e.item_id.as_str() != "launch"));
    }

    #[test]
    fn an_item_needs_enough_users_with_factors() {
        let m = served();
        let item = ItemId::parse("launch").unwrap();
        let users: Vec<UserHistory> =
            (0..4).map(|u| hist(&format!("u{u}"), &[(&item_id(u), [1, 0, 0]), ("launch", [1, 0, 0])])).collect();
        assert!(fold_item(&m, &params(false), &item, &users, 5).is_none());
        let (n, y) = fold_item(&m, &params(false), &item, &users, 4).unwrap();
        assert_eq!((n, y.len()), (4, m.factors()));
        assert!(y.iter().any(|v| *v != 0.0));
    }
}
