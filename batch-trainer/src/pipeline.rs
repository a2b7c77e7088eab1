//! The offline pipeline: split → index → fit → recommend → metrics, and the full
//! fit that becomes a model artifact.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use model::artifact::{CategoryRecord, ItemRecord};
use model::{AlsModel, AlsParams, CategoryIndex, Csr, Factors, Popularity, Scored};
use serde::Serialize;

use crate::config::TrainingConfig;
use crate::data::{CategoryTree, Dataset, RawEvent};
use crate::metrics::{self, Curve, Cutoffs, Metrics, TrainStats, UserResult};
use crate::preprocess::{self, ItemMeta, Pair};
use crate::split::{self, Split};

/// Training pairs with dense user and item indices.
#[derive(Debug, Clone)]
pub struct Indexed {
    /// Source id of each user row, in order of first appearance.
    pub user_ids: Vec<u64>,
    /// Source id of each item column, in order of first appearance.
    pub item_ids: Vec<u64>,
    pub user_index: HashMap<u64, u32>,
    pub item_index: HashMap<u64, u32>,
    /// user × item, values = summed event weights `r`.
    pub matrix: Csr,
}

/// Indexes pairs (users and items numbered in order of first appearance).
pub fn index_pairs(pairs: &[Pair]) -> Indexed {
    let mut user_index: HashMap<u64, u32> = HashMap::new();
    let mut item_index: HashMap<u64, u32> = HashMap::new();
    let mut user_ids = Vec::new();
    let mut item_ids = Vec::new();
    let mut triplets = Vec::with_capacity(pairs.len());
    for p in pairs {
        let u = *user_index.entry(p.user).or_insert_with(|| {
            user_ids.push(p.user);
            (user_ids.len() - 1) as u32
        });
        let i = *item_index.entry(p.item).or_insert_with(|| {
            item_ids.push(p.item);
            (item_ids.len() - 1) as u32
        });
        triplets.push((u, i, p.weight));
    }
    let matrix = Csr::from_triplets(user_ids.len(), item_ids.len(), &triplets)
        .unwrap_or_else(|e| unreachable!("indices are assigned in range: {e}"));
    Indexed { user_ids, item_ids, user_index, item_index, matrix }
}

/// A progress bar, or a hidden one when `show` is false (tests, `--quiet`).
pub fn progress_bar(len: u64, msg: &'static str, show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// A spinner for steps of unknown length (loading), hidden when `show` is false.
pub fn spinner(msg: &'static str, show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        None,
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Fits ALS with a progress bar over iterations.
pub fn fit_with_progress(matrix: &Csr, params: &AlsParams, show: bool) -> AlsModel {
    let pb = progress_bar(params.iterations as u64, "fit", show);
    let model = model::fit(matrix, params, |_| pb.inc(1));
    pb.finish_and_clear();
    model
}

/// Item metadata, category statistics and the re-rank index of one training side.
#[derive(Debug, Clone, Default)]
pub struct ItemContext {
    pub meta: HashMap<u64, ItemMeta>,
    pub category_stats: HashMap<u64, preprocess::CategoryStats>,
    pub rerank: CategoryIndex,
}

/// Builds the item context for `item_ids` from metadata as of `cutoff_ts` and
/// category statistics over `events`.
pub fn item_context(ds: &Dataset, events: &[RawEvent], item_ids: &[u64], cutoff_ts: i64) -> ItemContext {
    let meta = ds.properties.as_ref().map(|p| preprocess::item_metadata(p, cutoff_ts)).unwrap_or_default();
    let category_stats = preprocess::category_stats(events, &meta);
    let busiest = category_stats.values().map(|s| s.events).max().unwrap_or(0).max(1) as f32;
    let popularity = category_stats.iter().map(|(c, s)| (*c, s.events as f32 / busiest)).collect();
    let item_category: Vec<Option<u64>> = item_ids.iter().map(|i| meta.get(i).and_then(|m| m.category)).collect();
    let mut neighbours: HashMap<u64, Vec<u64>> = HashMap::new();
    if let Some(tree) = &ds.tree {
        for c in item_category.iter().flatten() {
            neighbours.entry(*c).or_insert_with(|| tree.neighbours(*c));
        }
    }
    ItemContext { meta, category_stats, rerank: CategoryIndex { item_category, neighbours, popularity } }
}

/// Popularity of item indices: summed event weights of the training pairs.
pub fn pair_popularity(ix: &Indexed) -> Vec<f64> {
    let mut w = vec![0.0f64; ix.item_ids.len()];
    for u in 0..ix.matrix.n_rows() {
        let (cols, vals) = ix.matrix.row(u);
        for (&c, &v) in cols.iter().zip(vals) {
            w[c as usize] += v as f64;
        }
    }
    w
}

/// The original's offline "popular" baseline: add-to-cart events weigh 10 and
/// purchases 8, views nothing, over the training side's events of training items.
pub fn conversion_popularity(train_events: &[RawEvent], ix: &Indexed) -> Vec<f64> {
    let mut w = vec![0.0f64; ix.item_ids.len()];
    for e in train_events {
        let weight = match e.kind {
            schemas::EventKind::View => continue,
            schemas::EventKind::AddToCart => 10.0,
            schemas::EventKind::Transaction => 8.0,
        };
        if let Some(&i) = ix.item_index.get(&e.item) {
            w[i as usize] += weight;
        }
    }
    w
}

/// Wall-clock seconds of each step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub load_s: f64,
    pub split_s: f64,
    pub fit_s: f64,
    pub recommend_s: f64,
    pub metrics_s: f64,
    pub total_s: f64,
    /// Test users scored per second by ALS (GEMM + top-N).
    pub recommend_users_per_s: f64,
}

/// Mean and standard deviation of a metric over repeated fits with different seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub seeds: Vec<u64>,
    pub mean: std::collections::BTreeMap<String, f64>,
    pub std: std::collections::BTreeMap<String, f64>,
}

/// The `evaluate` report; serialises to the JSON contract of the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub protocol: &'static str,
    pub popular: Metrics,
    /// The original's offline baseline: add-to-carts (weight 10) and purchases
    /// (weight 8) only. Reported for comparison; `popular` is what is served.
    pub popular_conversions: Metrics,
    pub als: Metrics,
    pub als_rerank: Metrics,
    /// False when no item has a category: `als_rerank` then equals `als`.
    pub rerank_applied: bool,
    pub timings: Timings,
    pub users: usize,
    pub items: usize,
    pub train_nnz: usize,
    pub test_users: usize,
    pub target_users: usize,
    pub target_pairs: usize,
    pub cold_test_users: usize,
    pub params: AlsParams,
    /// Run-to-run spread of ALS and ALS + re-rank over several seeds, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_als: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_als_rerank: Option<Spread>,
    /// Recall@c and NDCG@c for c = 1..=depth, when asked ([`evaluate_with_curves`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curves: Option<ModelCurves>,
}

/// The curves of each variant, from the first seed's fit (the one the metric
/// table shows).
#[derive(Debug, Clone, Serialize)]
pub struct ModelCurves {
    pub depth: usize,
    pub seed: u64,
    pub popular: Curve,
    pub popular_conversions: Curve,
    pub als: Curve,
    pub als_rerank: Curve,
}

impl EvalReport {
    /// Metrics of the variant that would be served.
    pub fn served(&self, rerank_enabled: bool) -> &Metrics {
        if rerank_enabled && self.rerank_applied {
            &self.als_rerank
        } else {
            &self.als
        }
    }
}

struct Variants {
    als: Vec<Vec<u64>>,
    als_rerank: Vec<Vec<u64>>,
}

/// Recommends for every user of `users` with a fitted model: ALS top-`len` (train
/// items excluded), and the category re-rank of the ALS candidates. Cold users
/// get the popular list. Returns the lists as source item ids, in `users` order.
///
/// `len` ≥ `k` only for the curves: the first `k` items are the same whatever
/// `len` is. The re-rank reorders the same window of `max(k, candidates)` ALS
/// candidates as without curves; deeper ranks follow in ALS order.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn recommend_variants(
    users: &[u64],
    ix: &Indexed,
    model: &AlsModel,
    ctx: &ItemContext,
    popular: &Popularity,
    cfg: &TrainingConfig,
    len: usize,
    show: bool,
) -> Variants {
    let len = len.max(cfg.k);
    let window = cfg.k.max(cfg.rerank.candidates);
    let n_cand = window.max(len);
    let known: Vec<(usize, u32)> =
        users.iter().enumerate().filter_map(|(pos, u)| ix.user_index.get(u).map(|&row| (pos, row))).collect();
    let f = model.user_factors.dim();
    let mut queries = Factors::zeros(0, f);
    for &(_, row) in &known {
        queries.push_row(model.user_factors.row(row as usize));
    }
    let pb = progress_bar(known.len() as u64, "recommend", show);
    // Chunks keep the progress bar moving; each chunk is spread over the pool.
    let chunk = cfg.score_block * 64;
    let mut cands: Vec<Vec<Scored>> = Vec::with_capacity(known.len());
    for start in (0..known.len()).step_by(chunk.max(1)) {
        let end = (start + chunk).min(known.len());
        let q = Factors::from_vec(end - start, f, queries.as_slice()[start * f..end * f].to_vec())
            .unwrap_or_else(|| unreachable!("whole rows"));
        cands.extend(model::recommend_all(&q, &model.item_factors, n_cand, cfg.score_block, |r| {
            ix.matrix.row(known[start + r].1 as usize).0
        }));
        pb.inc((end - start) as u64);
    }
    pb.finish_and_clear();

    let to_ids = |v: &[Scored]| -> Vec<u64> { v.iter().map(|s| ix.item_ids[s.item as usize]).collect() };
    let pop_all = to_ids(&popular.recommend(&[], len));
    let mut als = vec![pop_all.clone(); users.len()];
    let mut als_rerank = als.clone();
    let use_rerank = !ctx.rerank.is_empty();
    for ((pos, row), c) in known.iter().zip(&cands) {
        als[*pos] = to_ids(&c[..c.len().min(len)]);
        als_rerank[*pos] = if use_rerank {
            let history = ix.matrix.row(*row as usize).0;
            let w = &c[..c.len().min(window)];
            let mut list = ctx.rerank.rerank(w, history, &cfg.rerank.params, window);
            list.extend_from_slice(&c[w.len()..]);
            list.truncate(len);
            to_ids(&list)
        } else {
            als[*pos].clone()
        };
    }
    Variants { als, als_rerank }
}

/// Training pairs per item, the denominator data of Novelty (computed once per split).
fn item_pair_counts(split: &Split) -> HashMap<u64, u64> {
    let mut item_pairs: HashMap<u64, u64> = HashMap::new();
    for p in &split.train {
        *item_pairs.entry(p.item).or_default() += 1;
    }
    item_pairs
}

/// The lists of `users` cut to `len`, with their targets.
fn user_results<'a>(split: &'a Split, users: &[u64], lists: &'a [Vec<u64>], len: usize) -> Vec<UserResult<'a>> {
    const EMPTY: &[u64] = &[];
    users
        .iter()
        .zip(lists)
        .map(|(u, recs)| UserResult {
            recs: &recs[..recs.len().min(len)],
            targets: split.targets.get(u).map_or(EMPTY, Vec::as_slice),
        })
        .collect()
}

/// The metrics of the first `k` items of each list.
fn score(
    split: &Split,
    users: &[u64],
    ix: &Indexed,
    ctx: &ItemContext,
    item_pairs: &HashMap<u64, u64>,
    lists: &[Vec<u64>],
    k: usize,
) -> Metrics {
    let category = |i: u64| ctx.meta.get(&i).and_then(|m| m.category);
    let train = TrainStats { item_pairs, n_pairs: split.train.len() as u64, category: &category };
    metrics::compute(&user_results(split, users, lists, k), &train, ix.item_ids.len(), Cutoffs::default())
}

fn spread(seeds: &[u64], runs: &[Metrics]) -> Spread {
    let mut mean = std::collections::BTreeMap::new();
    let mut std = std::collections::BTreeMap::new();
    if let Some(first) = runs.first() {
        for key in first.0.keys() {
            let vals: Vec<f64> = runs.iter().map(|m| m.get(key)).collect();
            let mu = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (vals.len().max(2) - 1) as f64;
            mean.insert(key.clone(), mu);
            std.insert(key.clone(), var.sqrt());
        }
    }
    Spread { seeds: seeds.to_vec(), mean, std }
}

/// Runs the configured protocol on a loaded data set: popular / ALS / ALS +
/// re-rank, with `repeats` extra fits over consecutive seeds for the spread.
pub fn evaluate(ds: &Dataset, cfg: &TrainingConfig, repeats: usize, load_s: f64, show: bool) -> EvalReport {
    evaluate_inner(ds, cfg, repeats, load_s, show, None, Scope::WithTargets)
}

/// [`evaluate`], plus [`ModelCurves`] up to `depth` (lists of `max(depth, k)`
/// items are scored once; the metric table is the same as [`evaluate`]'s).
pub fn evaluate_with_curves(
    ds: &Dataset,
    cfg: &TrainingConfig,
    repeats: usize,
    load_s: f64,
    show: bool,
    depth: usize,
) -> EvalReport {
    evaluate_inner(ds, cfg, repeats, load_s, show, Some(depth), Scope::WithTargets)
}

/// Which test users get recommendation lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Only users with at least one target: the accuracy metrics see no one
    /// else (a user without targets adds 0 to every numerator and is in no
    /// denominator), so they are the same as over all test users, and the
    /// beyond-accuracy metrics describe the lists of these users.
    WithTargets,
    /// Every test user, as before the scope existed: the reference the tests
    /// compare [`Scope::WithTargets`] against.
    #[cfg_attr(not(test), allow(dead_code))]
    All,
}

#[allow(clippy::too_many_arguments)] // private; the public wrappers fix the last two
fn evaluate_inner(
    ds: &Dataset,
    cfg: &TrainingConfig,
    repeats: usize,
    load_s: f64,
    show: bool,
    depth: Option<usize>,
    scope: Scope,
) -> EvalReport {
    let len = depth.unwrap_or(0).max(cfg.k);
    let t0 = Instant::now();
    let split = split::split(
        cfg.protocol,
        &ds.events.events,
        &cfg.weights,
        cfg.recency_half_life_days,
        &cfg.filter,
        &cfg.split,
    );
    let ix = index_pairs(&split.train);
    let ctx = item_context(ds, &split.train_events, &ix.item_ids, split.cutoff_ts);
    let popular = Popularity::from_scores(&pair_popularity(&ix), ix.item_ids.len());
    let item_pairs = item_pair_counts(&split);
    let users: Vec<u64> = match scope {
        Scope::WithTargets => {
            split.test_users.iter().copied().filter(|u| split.targets.get(u).is_some_and(|t| !t.is_empty())).collect()
        }
        Scope::All => split.test_users.clone(),
    };
    let split_s = t0.elapsed().as_secs_f64();

    let mut timings = Timings { load_s, split_s, ..Timings::default() };
    let mut als_runs = Vec::new();
    let mut rerank_runs = Vec::new();
    let seeds: Vec<u64> = (0..repeats.max(1) as u64).map(|i| cfg.seed + i).collect();
    let mut first: Option<(Metrics, Metrics)> = None;
    let mut first_curves: Option<(Curve, Curve)> = None;
    for &seed in &seeds {
        let params = AlsParams { seed, ..cfg.als_params() };
        let t = Instant::now();
        let model = fit_with_progress(&ix.matrix, &params, show);
        let fit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let v = recommend_variants(&users, &ix, &model, &ctx, &popular, cfg, len, show);
        let recommend_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let als = score(&split, &users, &ix, &ctx, &item_pairs, &v.als, cfg.k);
        let als_rerank = score(&split, &users, &ix, &ctx, &item_pairs, &v.als_rerank, cfg.k);
        if first.is_none() {
            if let Some(d) = depth {
                first_curves = Some((
                    metrics::curve(&user_results(&split, &users, &v.als, d), d),
                    metrics::curve(&user_results(&split, &users, &v.als_rerank, d), d),
                ));
            }
            let warm = users.iter().filter(|u| ix.user_index.contains_key(u)).count();
            timings.fit_s = fit_s;
            timings.recommend_s = recommend_s;
            timings.recommend_users_per_s = warm as f64 / recommend_s.max(1e-9);
            timings.metrics_s = t.elapsed().as_secs_f64();
            first = Some((als.clone(), als_rerank.clone()));
        }
        als_runs.push(als);
        rerank_runs.push(als_rerank);
    }
    let (als, als_rerank) = first.unwrap_or_default();

    // A popularity list scored like a model: each user's own train items excluded.
    let score_popularity = |pop: &Popularity| {
        let lists: Vec<Vec<u64>> = users
            .iter()
            .map(|u| {
                let exclude = ix.user_index.get(u).map(|&r| ix.matrix.row(r as usize).0).unwrap_or(&[]);
                pop.recommend(exclude, len).iter().map(|s| ix.item_ids[s.item as usize]).collect()
            })
            .collect();
        let curve = depth.map(|d| metrics::curve(&user_results(&split, &users, &lists, d), d));
        (score(&split, &users, &ix, &ctx, &item_pairs, &lists, cfg.k), curve)
    };
    let (popular_m, popular_curve) = score_popularity(&popular);
    let conversions = Popularity::from_scores(&conversion_popularity(&split.train_events, &ix), ix.item_ids.len());
    let (popular_conversions, conversions_curve) = score_popularity(&conversions);
    let curves = match (depth, first_curves, popular_curve, conversions_curve) {
        (Some(depth), Some((als, als_rerank)), Some(popular), Some(popular_conversions)) => {
            Some(ModelCurves { depth, seed: cfg.seed, popular, popular_conversions, als, als_rerank })
        }
        _ => None,
    };
    timings.total_s = load_s + t0.elapsed().as_secs_f64();
    let cold = split.test_users.iter().filter(|u| !ix.user_index.contains_key(u)).count();
    EvalReport {
        protocol: split.protocol.as_str(),
        popular: popular_m,
        popular_conversions,
        als,
        als_rerank,
        rerank_applied: !ctx.rerank.is_empty(),
        timings,
        users: ix.user_ids.len(),
        items: ix.item_ids.len(),
        train_nnz: ix.matrix.nnz(),
        test_users: split.test_users.len(),
        target_users: split.target_users(),
        target_pairs: split.target_pairs(),
        cold_test_users: cold,
        params: cfg.als_params(),
        spread_als: (repeats > 1).then(|| spread(&seeds, &als_runs)),
        spread_als_rerank: (repeats > 1).then(|| spread(&seeds, &rerank_runs)),
        curves,
    }
}

/// Everything a model artifact holds apart from its manifest.
#[derive(Debug, Clone)]
pub struct FullModel {
    pub indexed: Indexed,
    pub model: AlsModel,
    pub items: Vec<ItemRecord>,
    pub categories: Vec<CategoryRecord>,
    pub popular: Popularity,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The decay the confidences were built with (recorded in the manifest).
    pub recency: model::Recency,
}

/// Category records of the tree with statistics (categories seen only in item
/// metadata are included too).
pub fn category_records(
    tree: Option<&CategoryTree>,
    stats: &HashMap<u64, preprocess::CategoryStats>,
) -> Vec<CategoryRecord> {
    let mut ids: Vec<u64> = tree.map(|t| t.parent.keys().copied().collect()).unwrap_or_default();
    ids.extend(stats.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let s = stats.get(&id).cloned().unwrap_or_default();
            CategoryRecord {
                id,
                parent: tree.and_then(|t| t.parent.get(&id).copied().flatten()),
                depth: tree.map_or(1, |t| t.depth(id)) as u32,
                events: s.events,
                users: s.users,
                items: s.items,
            }
        })
        .collect()
}

/// Fits the model that is served: all (filtered) pairs of the whole log, item
/// metadata as of the last event.
pub fn fit_full(ds: &Dataset, cfg: &TrainingConfig, show: bool) -> FullModel {
    let events = &ds.events.events;
    let recency = model::Recency::from_newest(cfg.recency_half_life_days, events.iter().map(|e| e.ts));
    let (pairs, _) =
        preprocess::filter_pairs(preprocess::build_pairs_with(events, &cfg.weights, &recency), &cfg.filter);
    let ix = index_pairs(&pairs);
    let first_ts = events.iter().map(|e| e.ts).min().unwrap_or(0);
    let last_ts = events.iter().map(|e| e.ts).max().unwrap_or(0);
    let ctx = item_context(ds, events, &ix.item_ids, last_ts);
    let model = fit_with_progress(&ix.matrix, &cfg.als_params(), show);
    let weights = pair_popularity(&ix);
    let items = ix
        .item_ids
        .iter()
        .zip(&weights)
        .map(|(id, w)| {
            let m = ctx.meta.get(id).copied().unwrap_or_default();
            ItemRecord { id: id.to_string(), category: m.category, available: m.available, popularity: *w }
        })
        .collect();
    let categories = category_records(ds.tree.as_ref(), &ctx.category_stats);
    let popular = Popularity::from_scores(&weights, cfg.popular_size);
    FullModel { indexed: ix, model, items, categories, popular, first_ts, last_ts, recency }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{self, LoadOptions};
    use crate::split::Protocol;

    /// Recommending only for users with targets must leave every accuracy
    /// metric and curve bit-identical to recommending for all test users.
    #[test]
    fn users_with_targets_give_the_accuracy_of_all_test_users() {
        let dir = tempfile::tempdir().unwrap();
        datagen::generate(&datagen::GenerateConfig::new(60_000, 7), dir.path(), None).unwrap();
        let ds = load::load_dir(dir.path(), &LoadOptions::default()).unwrap();
        for protocol in [Protocol::Seed, Protocol::Time] {
            let cfg = TrainingConfig { protocol, factors: 16, iterations: 4, ..TrainingConfig::default() };
            let full = evaluate_inner(&ds, &cfg, 2, 0.0, false, Some(30), Scope::All);
            let less = evaluate_inner(&ds, &cfg, 2, 0.0, false, Some(30), Scope::WithTargets);
            // Only meaningful if some test users have no target: in the seed
            // protocol, the generated log's users whose held-out pairs are views.
            assert!(full.target_users > 0, "{protocol:?}");
            if protocol == Protocol::Seed {
                assert!(full.target_users < full.test_users, "{} of {}", full.target_users, full.test_users);
            }
            assert_eq!(
                (full.test_users, full.target_users, full.cold_test_users),
                (less.test_users, less.target_users, less.cold_test_users)
            );
            let accuracy = ["precision@5", "recall@20", "ndcg@10", "hit_rate@5"];
            let pairs = [
                (&full.popular, &less.popular),
                (&full.popular_conversions, &less.popular_conversions),
                (&full.als, &less.als),
                (&full.als_rerank, &less.als_rerank),
            ];
            assert!(full.als.get("recall@20") > 0.0, "{protocol:?}: no hits, nothing compared");
            for (i, (a, b)) in pairs.iter().enumerate() {
                for k in accuracy {
                    assert!(a.get(k).is_finite(), "{protocol:?} variant {i} {k}");
                    assert_eq!(a.get(k).to_bits(), b.get(k).to_bits(), "{protocol:?} variant {i} {k}");
                }
            }
            let (sa, sb) = (full.spread_als.unwrap(), less.spread_als.unwrap());
            for k in accuracy {
                assert_eq!(sa.std[k].to_bits(), sb.std[k].to_bits(), "{protocol:?} spread {k}");
            }
            let (ca, cb) = (full.curves.unwrap(), less.curves.unwrap());
            for (a, b) in [(&ca.als, &cb.als), (&ca.als_rerank, &cb.als_rerank), (&ca.popular, &cb.popular)] {
                assert_eq!(a.recall, b.recall, "{protocol:?}");
                assert_eq!(a.ndcg, b.ndcg, "{protocol:?}");
            }
        }
    }
}
