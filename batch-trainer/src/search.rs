//! The budgeted model search (`[training.search]`): which factors, α, λ,
//! iterations, event weights and recency half-life fit this shop's data best.
//!
//! - **Where it looks.** A validation split is carved from the evaluation's
//!   training side by the configured protocol (the same [`split`] functions
//!   applied to the training events only), so the test split the gate compares
//!   is never read. Candidates are fitted on the validation split's training
//!   pairs and scored by the configured metric (`recall@20` by default) on its
//!   held-out targets; cold validation users get the candidate's popular list,
//!   as in the evaluation.
//! - **Successive halving.** `candidates` configurations are drawn from a
//!   seeded stream (the configured parameters are candidate 0); round 0 fits
//!   each for `min_iterations`, every round keeps the best 1/`eta`, survivors
//!   continue from their own factors (a warm start: only the new iterations
//!   are paid) with `eta` × more iterations, and the last round runs each
//!   survivor to its own iteration count. In round 0 a candidate starts from
//!   the factors of the previous candidate with the same factor count; its
//!   factors then have had that candidate's sweeps too, so the chosen
//!   configuration is fitted with all the sweeps its factors had (up to
//!   `max_iterations`), not only its own, or the final fit from a random start
//!   would be less converged than what was scored.
//! - **Budget.** Cost is estimated from the arithmetic of a fit (pairs and
//!   rows times factors, per iteration) and of scoring, in units of one fit of
//!   the configured parameters on the validation split: the plan is checked
//!   before anything runs, assuming the most expensive candidates survive
//!   every round, and candidates are dropped from the end of the draw until it
//!   fits. So the search never spends more than `budget_fits`, and the same
//!   seed gives the same trace on any machine (wall-clock time is recorded,
//!   never used to decide).
//! - **Cheap re-weighting.** Weights and decay change the matrix's values,
//!   never its pattern (the filter counts distinct pairs), so the validation
//!   split is built once and each candidate's matrix is re-summed from the
//!   events of its pairs, bit for bit what the split would have built.

use std::collections::HashMap;
use std::time::Instant;

use model::artifact::{SearchPoint, SearchRecord, SearchRound, SearchTrial, SearchValidation};
use model::{AlsModel, AlsParams, Csr, Factors, Popularity};
use schemas::EventKind;

use crate::config::{SearchConfig, TrainingConfig};
use crate::data::{Dataset, RawEvent};
use crate::metrics::{self, UserResult};
use crate::pipeline::{self, Indexed};
use crate::preprocess::Weights;
use crate::split::{self, Protocol, Split, SplitConfig};

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("training.search: {0}")]
    Config(String),
    #[error(
        "training.search: the validation split carved from the training side ({protocol} protocol) has {users} \
         users and none with a held-out target, so no candidate can be scored: train on more history or set \
         training.search.enabled = false"
    )]
    NoValidationTargets { protocol: &'static str, users: usize },
    #[error(
        "training.search: a budget of {budget} fits cannot afford two candidates at {min_iterations} iterations \
         (the cheapest plan costs {needed:.2} fits): raise training.search.budget_fits, or lower \
         training.search.min_iterations or the factor counts"
    )]
    BudgetTooSmall { budget: f64, min_iterations: usize, needed: f64 },
}

/// What a search found: the record for the manifest and the configuration to fit.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    pub record: SearchRecord,
    /// The configured settings with the chosen point applied.
    pub config: TrainingConfig,
}

/// `cfg` with `p`'s hyper-parameters, weights and half-life.
pub fn apply(cfg: &TrainingConfig, p: &SearchPoint) -> TrainingConfig {
    TrainingConfig {
        factors: p.factors,
        iterations: p.iterations,
        alpha: p.alpha,
        regularization: p.regularization,
        weights: p.weights,
        recency_half_life_days: p.recency_half_life_days,
        ..cfg.clone()
    }
}

/// The configured parameters as a point of the space.
pub fn default_point(cfg: &TrainingConfig) -> SearchPoint {
    SearchPoint {
        factors: cfg.factors,
        iterations: cfg.iterations,
        alpha: cfg.alpha,
        regularization: cfg.regularization,
        weights: cfg.weights,
        recency_half_life_days: cfg.recency_half_life_days,
    }
}

/// The training side of the evaluation split of `ds` (what the search may read).
pub fn evaluation_train_events(ds: &Dataset, cfg: &TrainingConfig) -> Vec<RawEvent> {
    // The training side's events do not depend on weights or decay (the pair
    // set and every cut are counts and times), so the configured ones do.
    split::split(cfg.protocol, &ds.events.events, &cfg.weights, 0.0, &cfg.filter, &cfg.split).train_events
}

/// Runs the search on `ds`'s evaluation training side.
pub fn run(ds: &Dataset, cfg: &TrainingConfig, show: bool) -> Result<SearchOutcome, SearchError> {
    let t = Instant::now();
    let train_events = evaluation_train_events(ds, cfg);
    search(&train_events, cfg, show, t)
}

/// The validation split of a training side: the configured protocol applied
/// to `train_events` alone (the time protocol's cutoff from `test_fraction`:
/// an explicit `time_cutoff_ms` is the evaluation's, not the validation's).
pub fn validation_split(train_events: &[RawEvent], cfg: &TrainingConfig) -> Split {
    let inner = SplitConfig { test_fraction: cfg.split.test_fraction, time_cutoff_ms: None };
    split::split(cfg.protocol, train_events, &cfg.weights, 0.0, &cfg.filter, &inner)
}

/// The validation training matrix under any weights and decay: the split's
/// pattern, values re-summed from the events of each pair.
#[derive(Debug, Clone)]
pub struct Reweigher {
    /// (pair index, kind, ts) of every event of a training pair, in row order.
    events: Vec<(u32, EventKind, i64)>,
    /// (user row, item column) of each pair.
    cells: Vec<(u32, u32)>,
    /// Newest event the pairs were built from (the decay's reference).
    newest_ts: Option<i64>,
    n_rows: usize,
    n_cols: usize,
}

impl Reweigher {
    /// `source` must be the events the split built its training pairs from:
    /// for the seed protocol all events given to it, for the time protocol
    /// its training side.
    pub fn new(split: &Split, ix: &Indexed, source: &[RawEvent]) -> Reweigher {
        let mut pos: HashMap<(u64, u64), u32> = HashMap::with_capacity(split.train.len());
        let mut cells = Vec::with_capacity(split.train.len());
        for (k, p) in split.train.iter().enumerate() {
            pos.insert((p.user, p.item), k as u32);
            cells.push((ix.user_index[&p.user], ix.item_index[&p.item]));
        }
        let events = source.iter().filter_map(|e| pos.get(&(e.user, e.item)).map(|&k| (k, e.kind, e.ts))).collect();
        Reweigher {
            events,
            cells,
            newest_ts: source.iter().map(|e| e.ts).max(),
            n_rows: ix.user_ids.len(),
            n_cols: ix.item_ids.len(),
        }
    }

    /// The matrix of raw summed weights with `w` and half-life `h` days.
    pub fn matrix(&self, w: &Weights, h: f64) -> Csr {
        let recency = model::Recency::from_newest(h, self.newest_ts.into_iter());
        let mut sums = vec![0.0f32; self.cells.len()];
        // Row order within each pair, as the split sums them: the same bits.
        for &(k, kind, ts) in &self.events {
            sums[k as usize] += w.decayed(kind, ts, &recency);
        }
        let triplets: Vec<(u32, u32, f32)> = self.cells.iter().zip(&sums).map(|(&(u, i), &v)| (u, i, v)).collect();
        Csr::from_triplets(self.n_rows, self.n_cols, &triplets)
            .unwrap_or_else(|e| unreachable!("cells come from the index: {e}"))
    }
}

/// A small deterministic stream (SplitMix64): the draw must not change with a
/// dependency's version, or the same seed would search differently.
struct Stream(u64);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn log_uniform(&mut self, r: [f32; 2]) -> f32 {
        let (lo, hi) = (r[0] as f64, r[1] as f64);
        let v = (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp();
        // Three significant digits: a trace people can read and type back.
        let scale = 10f64.powi(2 - v.log10().floor() as i32);
        ((v * scale).round() / scale).clamp(lo, hi) as f32
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

/// The candidates: the configured parameters first, then `n − 1` draws.
pub fn draw_candidates(cfg: &TrainingConfig) -> Vec<SearchPoint> {
    let s = &cfg.search;
    let mut rng = Stream(s.seed);
    let mut out = vec![default_point(cfg)];
    let iterations: Vec<usize> = (s.min_iterations..=s.max_iterations).collect();
    while out.len() < s.candidates {
        out.push(SearchPoint {
            factors: rng.pick(&s.factors),
            iterations: rng.pick(&iterations),
            alpha: rng.log_uniform(s.alpha),
            regularization: rng.log_uniform(s.regularization),
            weights: Weights {
                view: cfg.weights.view,
                addtocart: rng.log_uniform(s.addtocart),
                transaction: rng.log_uniform(s.transaction),
            },
            recency_half_life_days: rng.pick(&s.recency_half_life_days),
        });
    }
    out
}

/// Estimated arithmetic of fits and scoring on the validation split.
#[derive(Debug, Clone, Copy)]
pub struct CostModel {
    pub nnz: f64,
    pub rows: f64,
    pub items: f64,
    /// Warm validation users scored (one product with every item each).
    pub scored_users: f64,
    /// CG steps (+1 for the residual), or the factor count's worth for Cholesky.
    pub steps: f64,
    /// One fit of the configured parameters, the unit of the budget.
    pub unit: f64,
}

impl CostModel {
    fn new(m: &Csr, scored_users: usize, cfg: &TrainingConfig) -> CostModel {
        let steps = match cfg.solver {
            crate::config::SolverKind::Cg => cfg.cg_steps as f64 + 1.0,
            crate::config::SolverKind::Cholesky => cfg.factors as f64,
        };
        let mut c = CostModel {
            nnz: m.nnz() as f64,
            rows: (m.n_rows() + m.n_cols()) as f64,
            items: m.n_cols() as f64,
            scored_users: scored_users as f64,
            steps,
            unit: 1.0,
        };
        c.unit = c.iteration(cfg.factors) * cfg.iterations.max(1) as f64;
        c
    }

    /// One sweep: per pair and CG step a dot and an axpy each way (4f), per
    /// row and step the dense `YᵀY·p` (2f²).
    fn iteration(&self, f: usize) -> f64 {
        let f = f as f64;
        self.steps * (2.0 * self.nnz * 4.0 * f + self.rows * 2.0 * f * f)
    }

    fn scoring(&self, f: usize) -> f64 {
        2.0 * self.scored_users * self.items * f as f64
    }

    /// A round's cost in fits: `new` more iterations, then scoring.
    pub fn round(&self, f: usize, new: usize) -> f64 {
        (self.iteration(f) * new as f64 + self.scoring(f)) / self.unit
    }
}

/// Successive halving's rounds for `n` candidates: (iteration target, how
/// many are scored). The last round's target is `max_iterations` (each
/// candidate stops at its own count).
pub fn schedule(n: usize, s: &SearchConfig) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut alive, mut it) = (n, s.min_iterations);
    loop {
        let last = alive <= s.eta || it >= s.max_iterations;
        out.push((if last { s.max_iterations } else { it }, alive));
        if last {
            return out;
        }
        alive = alive.div_ceil(s.eta);
        it = it.saturating_mul(s.eta).min(s.max_iterations);
    }
}

fn iterations_after(round_target: usize, p: &SearchPoint) -> usize {
    round_target.min(p.iterations)
}

/// The most a plan can cost: in every round the most expensive candidates survive.
pub fn worst_case_cost(cands: &[SearchPoint], s: &SearchConfig, cost: &CostModel) -> f64 {
    let mut total = 0.0;
    let mut before = 0;
    for (target, alive) in schedule(cands.len(), s) {
        let mut costs: Vec<f64> = cands
            .iter()
            .map(|p| cost.round(p.factors, iterations_after(target, p) - iterations_after(before, p)))
            .collect();
        costs.sort_by(|a, b| b.total_cmp(a));
        total += costs.iter().take(alive).sum::<f64>();
        before = target;
    }
    total
}

/// Everything needed to score a candidate on the validation split.
struct Validation {
    split: Split,
    ix: Indexed,
    reweigher: Reweigher,
    /// Validation users with targets: (row if warm, targets).
    users: Vec<(Option<u32>, Vec<u64>)>,
    metric: (String, usize),
    score_block: usize,
}

impl Validation {
    fn score(&self, model: &AlsModel, m: &Csr) -> f64 {
        let k = self.metric.1;
        let warm: Vec<u32> = self.users.iter().filter_map(|u| u.0).collect();
        let f = model.user_factors.dim();
        let mut q = Factors::zeros(0, f);
        for &r in &warm {
            q.push_row(model.user_factors.row(r as usize));
        }
        let cands = model::recommend_all(&q, &model.item_factors, k, self.score_block, |i| m.row(warm[i] as usize).0);
        let mut col = vec![0.0f64; m.n_cols()];
        for u in 0..m.n_rows() {
            let (cols, vals) = m.row(u);
            for (&c, &v) in cols.iter().zip(vals) {
                col[c as usize] += v as f64;
            }
        }
        let ids = |v: &[model::Scored]| -> Vec<u64> { v.iter().map(|s| self.ix.item_ids[s.item as usize]).collect() };
        let popular = ids(&Popularity::from_scores(&col, k).recommend(&[], k));
        let mut warm_lists = cands.iter();
        let lists: Vec<Vec<u64>> = self
            .users
            .iter()
            .map(|(row, _)| match row {
                Some(_) => warm_lists.next().map(|c| ids(c)).unwrap_or_default(),
                None => popular.clone(),
            })
            .collect();
        let results: Vec<UserResult<'_>> =
            self.users.iter().zip(&lists).map(|((_, t), l)| UserResult { recs: l, targets: t }).collect();
        let c = metrics::curve(&results, k);
        if self.metric.0 == "recall" {
            c.recall[k - 1]
        } else {
            c.ndcg[k - 1]
        }
    }
}

/// The search on a training side (the test side is not given, so it cannot be read).
pub fn search(
    train_events: &[RawEvent],
    cfg: &TrainingConfig,
    show: bool,
    started: Instant,
) -> Result<SearchOutcome, SearchError> {
    let s = &cfg.search;
    s.validate().map_err(SearchError::Config)?;
    let (metric_name, metric_k) = s.parsed_metric().map_err(SearchError::Config)?;
    let split = validation_split(train_events, cfg);
    let ix = pipeline::index_pairs(&split.train);
    let source: Vec<RawEvent> = match split.protocol {
        Protocol::Seed => train_events.to_vec(),
        Protocol::Time => split.train_events.clone(),
    };
    let reweigher = Reweigher::new(&split, &ix, &source);
    drop(source);
    let users: Vec<(Option<u32>, Vec<u64>)> = split
        .test_users
        .iter()
        .filter_map(|u| {
            split.targets.get(u).filter(|t| !t.is_empty()).map(|t| (ix.user_index.get(u).copied(), t.clone()))
        })
        .collect();
    if users.is_empty() {
        return Err(SearchError::NoValidationTargets { protocol: split.protocol.as_str(), users: ix.user_ids.len() });
    }
    let val = Validation {
        reweigher,
        users,
        metric: (metric_name.to_owned(), metric_k),
        score_block: cfg.score_block,
        split,
        ix,
    };
    let base = val.reweigher.matrix(&cfg.weights, cfg.recency_half_life_days);
    let cost = CostModel::new(&base, val.users.iter().filter(|u| u.0.is_some()).count(), cfg);

    let mut cands = draw_candidates(cfg);
    let mut planned = worst_case_cost(&cands, s, &cost);
    while planned > s.budget_fits && cands.len() > 2 {
        cands.pop();
        planned = worst_case_cost(&cands, s, &cost);
    }
    if planned > s.budget_fits {
        return Err(SearchError::BudgetTooSmall {
            budget: s.budget_fits,
            min_iterations: s.min_iterations,
            needed: planned,
        });
    }

    let plan = schedule(cands.len(), s);
    let pb = pipeline::progress_bar(plan.iter().map(|r| r.1 as u64).sum(), "search", show);
    let mut spent = 0.0f64;
    let mut trials: Vec<SearchTrial> = Vec::new();
    let mut rounds: Vec<SearchRound> = Vec::new();
    // Factors after the last round each live candidate ran, and its matrix.
    let mut models: HashMap<usize, AlsModel> = HashMap::new();
    let mut matrices: HashMap<usize, Csr> = HashMap::new();
    let mut scores: HashMap<usize, f64> = HashMap::new();
    // Sweeps each candidate's factors have had, a neighbour's start included.
    let mut sweeps: HashMap<usize, usize> = HashMap::new();
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    let mut before = 0usize;
    for (round, &(target, n_alive)) in plan.iter().enumerate() {
        debug_assert_eq!(alive.len(), n_alive);
        let keep = if round + 1 < plan.len() { plan[round + 1].1 } else { 1 };
        // Round 0: the last candidate fitted with each factor count (a neighbour's start).
        let mut last_of_factors: HashMap<usize, usize> = HashMap::new();
        let mut round_scores: Vec<(usize, f64)> = Vec::new();
        for &c in &alive {
            let p = &cands[c];
            let t = Instant::now();
            let (done, total) = (iterations_after(before, p), iterations_after(target, p));
            let new = total - done;
            let matrix = match matrices.remove(&c) {
                Some(m) => m,
                None => val.reweigher.matrix(&p.weights, p.recency_half_life_days),
            };
            let (init, start) = if round == 0 {
                match last_of_factors.get(&p.factors).and_then(|n| models.get(n).map(|m| (m, *n))) {
                    Some((m, n)) => {
                        sweeps.insert(c, sweeps.get(&n).copied().unwrap_or(0));
                        (Some(m.clone()), format!("candidate {n}"))
                    }
                    None => (None, "random".to_owned()),
                }
            } else {
                (models.remove(&c), "own".to_owned())
            };
            let swept = sweeps.get(&c).copied().unwrap_or(0) + new;
            sweeps.insert(c, swept);
            let trial_cost = cost.round(p.factors, new);
            let (model, score) = if new == 0 && scores.contains_key(&c) {
                // Stopped at its own iteration count in an earlier round: nothing new to fit or score.
                let m = init.unwrap_or_else(|| unreachable!("a live candidate keeps its factors"));
                (m, scores[&c])
            } else {
                spent += trial_cost;
                let params = AlsParams {
                    factors: p.factors,
                    iterations: new,
                    alpha: p.alpha,
                    regularization: p.regularization,
                    seed: cfg.seed,
                    ..cfg.als_params()
                };
                let model = model::fit_with_init(&matrix, &params, init.as_ref(), |_| {});
                let score = val.score(&model, &matrix);
                (model, score)
            };
            let charged = if new == 0 && scores.contains_key(&c) { 0.0 } else { trial_cost };
            scores.insert(c, score);
            trials.push(SearchTrial {
                candidate: c,
                round,
                point: SearchPoint { iterations: total, ..p.clone() },
                new_iterations: new,
                start,
                sweeps: swept,
                score,
                cost_fits: charged,
                seconds: t.elapsed().as_secs_f64(),
            });
            round_scores.push((c, score));
            models.insert(c, model);
            matrices.insert(c, matrix);
            if round == 0 {
                last_of_factors.insert(p.factors, c);
            }
            // Memory: keep the factors that can still survive, and the neighbours' starts.
            let mut ranked = round_scores.clone();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let wanted: Vec<usize> =
                ranked.iter().take(keep).map(|r| r.0).chain(last_of_factors.values().copied()).collect();
            for (c2, _) in &round_scores {
                if !wanted.contains(c2) {
                    models.remove(c2);
                    matrices.remove(c2);
                }
            }
            pb.inc(1);
        }
        round_scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept: Vec<usize> = round_scores.iter().take(keep).map(|r| r.0).collect();
        models.retain(|c, _| kept.contains(c));
        matrices.retain(|c, _| kept.contains(c));
        rounds.push(SearchRound { round, iterations: target, candidates: alive.clone(), kept: kept.clone() });
        alive = kept;
        before = target;
    }
    pb.finish_and_clear();
    debug_assert!(spent <= s.budget_fits * (1.0 + 1e-9), "spent {spent} of {}", s.budget_fits);
    let chosen_candidate = alive[0];
    let chosen = SearchPoint {
        iterations: sweeps[&chosen_candidate].min(s.max_iterations.max(cands[chosen_candidate].iterations)),
        ..cands[chosen_candidate].clone()
    };
    let chosen_score = scores[&chosen_candidate];
    let record = SearchRecord {
        metric: s.metric.clone(),
        seed: s.seed,
        budget_fits: s.budget_fits,
        spent_fits: spent,
        seconds: started.elapsed().as_secs_f64(),
        validation: SearchValidation {
            protocol: val.split.protocol.as_str().to_owned(),
            users: val.ix.user_ids.len(),
            items: val.ix.item_ids.len(),
            train_pairs: val.split.train.len(),
            target_users: val.users.len(),
        },
        candidates: cands,
        rounds,
        trials,
        default_candidate: 0,
        chosen_candidate,
        chosen: chosen.clone(),
        chosen_score,
    };
    Ok(SearchOutcome { config: apply(cfg, &chosen), record })
}

/// The trace as text: one line per trial, then the choice.
pub fn render_trace(r: &SearchRecord) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let v = &r.validation;
    let _ = writeln!(
        s,
        "search: {} candidates, {} rounds, validation {} protocol ({} users, {} items, {} train pairs, {} with targets), metric {}",
        r.candidates.len(),
        r.rounds.len(),
        v.protocol,
        v.users,
        v.items,
        v.train_pairs,
        v.target_users,
        r.metric
    );
    let _ = writeln!(
        s,
        "{:>5} {:>4} {:>7} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>12} {:>9} {:>7}",
        "round",
        "cand",
        "factors",
        "iters",
        "alpha",
        "lambda",
        "view",
        "cart",
        "buy",
        "h-life",
        "start",
        r.metric,
        "cost"
    );
    for t in &r.trials {
        let p = &t.point;
        let _ = writeln!(
            s,
            "{:>5} {:>4} {:>7} {:>5} {:>6} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>12} {:>9.4} {:>7.3}",
            t.round,
            t.candidate,
            p.factors,
            p.iterations,
            t.sweeps,
            p.alpha,
            p.regularization,
            p.weights.view,
            p.weights.addtocart,
            p.weights.transaction,
            p.recency_half_life_days,
            t.start,
            t.score,
            t.cost_fits
        );
    }
    let c = &r.chosen;
    let _ = writeln!(
        s,
        "chosen: candidate {}{} — factors {}, iterations {}, alpha {}, regularization {}, weights {}/{}/{}, half-life {} d; validation {} {:.4}",
        r.chosen_candidate,
        if r.chosen_candidate == r.default_candidate { " (the configured parameters)" } else { "" },
        c.factors,
        c.iterations,
        c.alpha,
        c.regularization,
        c.weights.view,
        c.weights.addtocart,
        c.weights.transaction,
        c.recency_half_life_days,
        r.metric,
        r.chosen_score
    );
    let _ = writeln!(s, "cost: {:.2} of {} fits (estimated), {:.1} s", r.spent_fits, r.budget_fits, r.seconds);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::FilterConfig;

    /// Users in four taste groups over 80 items, events spread over 60 days
    /// (newer events lean to a second taste, so decay and weights matter).
    fn events(users: u64, seed: u64) -> Vec<RawEvent> {
        let mut rng = Stream(seed);
        let mut out = Vec::new();
        let day = 86_400_000i64;
        for u in 0..users {
            let group = u % 4;
            for e in 0..(12 + rng.next_u64() % 20) {
                let ts = 1_500_000_000_000 + (rng.unit() * 60.0 * day as f64) as i64 + e as i64;
                let late = ts > 1_500_000_000_000 + 40 * day;
                let g = if late && rng.unit() < 0.6 { (group + 1) % 4 } else { group };
                let item = if rng.unit() < 0.85 { g * 20 + rng.next_u64() % 20 } else { rng.next_u64() % 80 };
                let kind = match rng.next_u64() % 10 {
                    0..=5 => EventKind::View,
                    6..=8 => EventKind::AddToCart,
                    _ => EventKind::Transaction,
                };
                out.push(RawEvent { ts, user: u, item, kind, txn: None });
            }
        }
        out.sort_by_key(|e| e.ts);
        out
    }

    fn cfg(protocol: Protocol) -> TrainingConfig {
        let mut c = TrainingConfig {
            factors: 16,
            iterations: 8,
            protocol,
            filter: FilterConfig { min_user_items: 2, min_item_users: 2, kcore: false },
            ..TrainingConfig::default()
        };
        c.search = SearchConfig {
            enabled: true,
            budget_fits: 6.0,
            candidates: 9,
            max_iterations: 12,
            factors: vec![4, 8, 16],
            ..SearchConfig::default()
        };
        c
    }

    fn ds(ev: Vec<RawEvent>) -> Dataset {
        let mut d = Dataset::default();
        d.events.events = ev;
        d
    }

    /// The record without wall-clock fields, which alone may differ between runs.
    fn timeless(mut r: SearchRecord) -> SearchRecord {
        r.seconds = 0.0;
        r.trials.iter_mut().for_each(|t| t.seconds = 0.0);
        r
    }

    #[test]
    fn reweighting_gives_the_matrix_the_split_builds() {
        let ev = events(120, 1);
        for protocol in [Protocol::Seed, Protocol::Time] {
            let c = cfg(protocol);
            let train_events = validation_split(&ev, &c).train_events.clone();
            let base = validation_split(&train_events, &c);
            let ix = pipeline::index_pairs(&base.train);
            let source = if protocol == Protocol::Seed { train_events.clone() } else { base.train_events.clone() };
            let rw = Reweigher::new(&base, &ix, &source);
            for (w, h) in [
                (Weights::default(), 0.0),
                (Weights { view: 1.0, addtocart: 2.5, transaction: 17.0 }, 7.0),
                (Weights { view: 0.5, addtocart: 9.0, transaction: 1.0 }, 30.0),
            ] {
                let inner = SplitConfig { test_fraction: c.split.test_fraction, time_cutoff_ms: None };
                let want = split::split(protocol, &train_events, &w, h, &c.filter, &inner);
                let want_ix = pipeline::index_pairs(&want.train);
                assert_eq!(want_ix.user_ids, ix.user_ids, "{protocol:?}: same rows");
                assert_eq!(rw.matrix(&w, h), want_ix.matrix, "{protocol:?} {w:?} {h}");
            }
        }
    }

    #[test]
    fn the_plan_never_exceeds_the_budget_and_the_run_counts_what_it_fits() {
        let d = ds(events(160, 2));
        for budget in [1.5, 3.0, 6.0, 20.0] {
            let mut c = cfg(Protocol::Seed);
            c.search.budget_fits = budget;
            let r = run(&d, &c, false).unwrap().record;
            assert!(r.spent_fits <= budget + 1e-9, "spent {} of {budget}", r.spent_fits);
            let charged: f64 = r.trials.iter().map(|t| t.cost_fits).sum();
            assert!((charged - r.spent_fits).abs() < 1e-9);
            // Every trial is a round's candidate, and the rounds follow the schedule.
            let plan = schedule(r.candidates.len(), &c.search);
            assert_eq!(r.rounds.len(), plan.len());
            for (round, (target, alive)) in r.rounds.iter().zip(&plan) {
                assert_eq!(round.candidates.len(), *alive);
                assert_eq!(round.iterations, *target);
                assert_eq!(r.trials.iter().filter(|t| t.round == round.round).count(), *alive);
            }
            // Survivors are warm-started: the iterations a candidate ran add up
            // to its last trial's total, never more.
            for (i, p) in r.candidates.iter().enumerate() {
                let ts: Vec<&SearchTrial> = r.trials.iter().filter(|t| t.candidate == i).collect();
                let ran: usize = ts.iter().map(|t| t.new_iterations).sum();
                let last = ts.last().unwrap();
                assert_eq!(ran, last.point.iterations);
                assert!(last.point.iterations <= p.iterations);
                assert!(ts.iter().skip(1).all(|t| t.start == "own"));
            }
            assert_eq!(r.chosen_candidate, *r.rounds.last().unwrap().kept.first().unwrap());
            // The chosen configuration is fitted with every sweep its factors had.
            let last = r.trials.iter().rev().find(|t| t.candidate == r.chosen_candidate).unwrap();
            assert!(last.sweeps >= last.point.iterations);
            assert_eq!(r.chosen.iterations, last.sweeps.min(c.search.max_iterations));
            for t in r.trials.iter().filter(|t| t.round == 0) {
                let from = t.start.strip_prefix("candidate ").map(|n| n.parse::<usize>().unwrap());
                let base =
                    from.map_or(0, |n| r.trials.iter().find(|u| u.round == 0 && u.candidate == n).unwrap().sweeps);
                assert_eq!(t.sweeps, base + t.new_iterations, "{t:?}");
            }
            assert!(r.candidates.len() >= 2);
        }
        // A small budget affords fewer candidates than a large one.
        let small = {
            let mut c = cfg(Protocol::Seed);
            c.search.budget_fits = 1.5;
            run(&d, &c, false).unwrap().record
        };
        let mut c = cfg(Protocol::Seed);
        c.search.budget_fits = 20.0;
        assert!(small.candidates.len() < run(&d, &c, false).unwrap().record.candidates.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_search_and_another_seed_another() {
        let d = ds(events(140, 3));
        let c = cfg(Protocol::Time);
        let a = run(&d, &c, false).unwrap();
        let b = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| run(&d, &c, false).unwrap());
        assert_eq!(timeless(a.record.clone()), timeless(b.record));
        assert_eq!(a.config, b.config);
        let mut c2 = c.clone();
        c2.search.seed = 8;
        assert_ne!(run(&d, &c2, false).unwrap().record.candidates, a.record.candidates);
        // Candidate 0 is the configured parameters.
        assert_eq!(a.record.candidates[0], default_point(&c));
    }

    #[test]
    fn the_test_side_is_never_read() {
        for protocol in [Protocol::Seed, Protocol::Time] {
            let ev = events(160, 4);
            let c = cfg(protocol);
            let outer = split::split(protocol, &ev, &c.weights, 0.0, &c.filter, &c.split);
            // The validation split only holds training-side events.
            let val = validation_split(&outer.train_events, &c);
            let train_side: std::collections::HashSet<(i64, u64, u64)> =
                outer.train_events.iter().map(|e| (e.ts, e.user, e.item)).collect();
            assert!(val.train_events.iter().all(|e| train_side.contains(&(e.ts, e.user, e.item))));
            let seen: std::collections::HashSet<(u64, u64)> =
                outer.train_events.iter().map(|e| (e.user, e.item)).collect();
            for (u, t) in &val.targets {
                assert!(t.iter().all(|i| seen.contains(&(*u, *i))), "validation target outside the training side");
            }
            // Rewriting every held-out event (kind; for the time protocol also
            // the item) changes the test split but not one number of the search.
            let held: std::collections::HashSet<(i64, u64, u64)> =
                ev.iter().map(|e| (e.ts, e.user, e.item)).filter(|k| !train_side.contains(k)).collect();
            assert!(!held.is_empty());
            let mut changed = ev.clone();
            for e in changed.iter_mut().filter(|e| held.contains(&(e.ts, e.user, e.item))) {
                e.kind = if e.kind == EventKind::View { EventKind::Transaction } else { EventKind::View };
                if protocol == Protocol::Time {
                    e.item = (e.item + 37) % 80;
                }
            }
            let changed_outer = split::split(protocol, &changed, &c.weights, 0.0, &c.filter, &c.split);
            assert_ne!(changed_outer.targets, outer.targets, "{protocol:?}: the test split did change");
            let a = run(&ds(ev), &c, false).unwrap().record;
            let b = run(&ds(changed), &c, false).unwrap().record;
            assert_eq!(timeless(a), timeless(b), "{protocol:?}");
        }
    }

    #[test]
    fn impossible_searches_are_refused_with_the_key_to_change() {
        let d = ds(events(120, 5));
        let mut c = cfg(Protocol::Seed);
        c.search.budget_fits = 0.01;
        let e = run(&d, &c, false).unwrap_err().to_string();
        assert!(e.contains("budget of 0.01 fits cannot afford two candidates"), "{e}");
        assert!(e.contains("training.search.budget_fits"), "{e}");
        // Views only: nothing to hold out as a target.
        let views: Vec<RawEvent> =
            events(120, 5).into_iter().map(|e| RawEvent { kind: EventKind::View, ..e }).collect();
        let e = run(&ds(views), &cfg(Protocol::Time), false).unwrap_err().to_string();
        assert!(e.contains("none with a held-out target"), "{e}");
        let mut c = cfg(Protocol::Seed);
        c.search.metric = "mrr@10".into();
        assert!(run(&d, &c, false).unwrap_err().to_string().contains("training.search.metric"));
    }

    #[test]
    fn schedule_halves_and_ends_at_the_iteration_cap() {
        let s =
            SearchConfig { candidates: 24, eta: 3, min_iterations: 3, max_iterations: 25, ..SearchConfig::default() };
        assert_eq!(schedule(24, &s), vec![(3, 24), (9, 8), (25, 3)]);
        assert_eq!(schedule(2, &s), vec![(25, 2)]);
        let s2 = SearchConfig { eta: 2, min_iterations: 4, max_iterations: 8, ..s };
        assert_eq!(schedule(16, &s2), vec![(4, 16), (8, 8)]);
    }
}
