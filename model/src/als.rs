//! Implicit-feedback ALS with the semantics of the `implicit` library (0.7).
//!
//! For a user `u` with stored pairs `i` of confidence `c_ui = α·r_ui` (preference 1
//! for every stored pair, 0 and confidence 1 for every other item) the user's
//! factors solve
//!
//! ```text
//! (YᵀY + λI + Σ_i (c_ui − 1) y_i y_iᵀ) x_u = Σ_i c_ui y_i
//! ```
//!
//! and symmetrically for items. [`Solver::ConjugateGradient`] runs a few CG steps
//! warm-started from the previous iteration's factors without ever forming the
//! matrix (what `implicit` does); [`Solver::Cholesky`] forms it and solves exactly,
//! which is how the CG result is checked and how a cold user is folded in.
//!
//! Every row is solved by one thread from shared read-only inputs, and `YᵀY` is
//! summed in a fixed block order, so a seed gives the same factors bit for bit
//! whatever the number of threads.

use std::time::{Duration, Instant};

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, MatMut, MatRef, Par, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::csr::Csr;
use crate::dense::{axpy, dot, symv, Factors};

/// Below this squared residual CG stops (the same threshold as `implicit`).
const CG_EPS: f32 = 1e-20;

/// How each row's least-squares system is solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// `steps` conjugate-gradient steps from the current factors.
    ConjugateGradient { steps: usize },
    /// Exact solve through a Cholesky factorisation of the `f × f` system.
    Cholesky,
}

impl Default for Solver {
    fn default() -> Self {
        Solver::ConjugateGradient { steps: 3 }
    }
}

/// Hyper-parameters of a fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlsParams {
    /// Latent factors per user and item.
    pub factors: usize,
    /// Full sweeps (all users, then all items).
    pub iterations: usize,
    /// λ, added to the diagonal, not scaled by counts.
    pub regularization: f32,
    /// Confidence scale: `c = alpha · r`.
    pub alpha: f32,
    /// Row solver.
    pub solver: Solver,
    /// Seed of the initial factors.
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams { factors: 64, iterations: 15, regularization: 0.1, alpha: 4.0, solver: Solver::default(), seed: 42 }
    }
}

/// Progress of one finished iteration.
#[derive(Debug, Clone, Copy)]
pub struct IterationStats {
    /// 1-based iteration number.
    pub iteration: usize,
    /// Time spent in this iteration.
    pub elapsed: Duration,
}

/// Fitted factors.
#[derive(Debug, Clone, PartialEq)]
pub struct AlsModel {
    /// One row per user of the training matrix.
    pub user_factors: Factors,
    /// One row per item of the training matrix.
    pub item_factors: Factors,
}

/// Fits ALS on a user × item matrix of raw summed weights `r` (confidence is
/// `alpha · r`). `on_iteration` is called after every sweep (progress bars).
pub fn fit(user_items: &Csr, params: &AlsParams, on_iteration: impl FnMut(IterationStats)) -> AlsModel {
    fit_with_init(user_items, params, None, on_iteration)
}

/// Whether `init` can start a fit of `user_items` with `factors` factors: one
/// row per user and per item, `factors` columns each.
pub fn warm_start_applies(init: &AlsModel, user_items: &Csr, factors: usize) -> bool {
    init.user_factors.rows() == user_items.n_rows()
        && init.item_factors.rows() == user_items.n_cols()
        && init.user_factors.dim() == factors
        && init.item_factors.dim() == factors
}

/// [`fit`] starting from `init`'s factors instead of random ones (a warm start:
/// a model search continues a candidate, or starts the next one from a
/// neighbour's solution). When `init` is `None` or its shape does not fit
/// ([`warm_start_applies`]) the start is the seeded random one of [`fit`], so
/// the result is then exactly `fit`'s. Deterministic either way.
pub fn fit_with_init(
    user_items: &Csr,
    params: &AlsParams,
    init: Option<&AlsModel>,
    mut on_iteration: impl FnMut(IterationStats),
) -> AlsModel {
    let f = params.factors;
    let (mut x, mut y) = match init.filter(|m| warm_start_applies(m, user_items, f)) {
        Some(m) => (m.user_factors.clone(), m.item_factors.clone()),
        None => {
            // Same draw order as `implicit`: users first, then items, uniform [0, 0.01).
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            let x = Factors::random(user_items.n_rows(), f, 0.01, &mut rng);
            let y = Factors::random(user_items.n_cols(), f, 0.01, &mut rng);
            (x, y)
        }
    };
    let cui = user_items.scaled(params.alpha);
    let ciu = cui.transpose();
    for it in 0..params.iterations {
        let start = Instant::now();
        solve_all(&cui, &mut x, &y, params.regularization, params.solver);
        solve_all(&ciu, &mut y, &x, params.regularization, params.solver);
        on_iteration(IterationStats { iteration: it + 1, elapsed: start.elapsed() });
    }
    AlsModel { user_factors: x, item_factors: y }
}

/// The objective ALS minimises, for a fitted `model` of `user_items` (raw
/// weights `r`):
///
/// ```text
/// Σ_(u,i) c_ui (p_ui − x_u·y_i)² + λ (‖X‖² + ‖Y‖²)
/// ```
///
/// over every user × item cell (`c = alpha · r`, `p = 1` for stored pairs,
/// `c = 1`, `p = 0` otherwise), summed in f64 without forming the dense
/// matrix: `Σ_u x_uᵀ(YᵀY)x_u` covers every cell as if unstored, and each
/// stored pair corrects its own cell. For tests and diagnostics.
pub fn loss(user_items: &Csr, model: &AlsModel, alpha: f32, regularization: f32) -> f64 {
    let (x, y) = (&model.user_factors, &model.item_factors);
    let f = x.dim();
    let gram = y.gram(0.0);
    let mut gx = vec![0.0f32; f];
    let mut total = 0.0f64;
    for u in 0..x.rows() {
        let xu = x.row(u);
        symv(&gram, xu, &mut gx);
        total += dot(xu, &gx) as f64;
        let (cols, r) = user_items.row(u);
        for (&i, &rv) in cols.iter().zip(r) {
            let s = dot(xu, y.row(i as usize)) as f64;
            let c = (alpha * rv) as f64;
            total += c * (1.0 - s).powi(2) - s * s;
        }
    }
    let norm = |m: &Factors| m.as_slice().iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
    total + regularization as f64 * (norm(x) + norm(y))
}

/// Rows solved together by the block CG. Fixed, so results do not depend on the
/// number of threads.
const CG_BLOCK: usize = 128;

/// Solves every row of `x` against fixed `y` (one half-sweep). `c` holds the
/// confidences of each row's stored pairs.
///
/// CG runs on blocks of rows in lock step: the dense term `YᵀY·p` of every row
/// of a block is one matrix product instead of one matrix–vector product per
/// row, which is what makes large factor counts fast. Each row still follows
/// exactly its own CG recurrence (and stops on its own residual).
pub fn solve_all(c: &Csr, x: &mut Factors, y: &Factors, regularization: f32, solver: Solver) {
    assert_eq!(c.n_rows(), x.rows(), "one factor row per matrix row");
    assert_eq!(c.n_cols(), y.rows(), "one fixed factor row per matrix column");
    let f = x.dim();
    if f == 0 {
        return;
    }
    let yty = y.gram(regularization);
    match solver {
        Solver::ConjugateGradient { steps } => {
            x.as_mut_slice().par_chunks_mut(CG_BLOCK * f).enumerate().for_each_init(
                || BlockScratch::new(CG_BLOCK, f),
                |scratch, (b, xb)| {
                    let op = CgBlock { c, first: b * CG_BLOCK, y, yty: &yty, steps, xb, scratch };
                    pulp::Arch::new().dispatch(op)
                },
            );
        }
        Solver::Cholesky => {
            x.as_mut_slice().par_chunks_mut(f).enumerate().for_each_init(
                || Scratch::new(f),
                |scratch, (u, xu)| {
                    let (cols, conf) = c.row(u);
                    solve_row(y, &yty, cols, conf, solver, xu, scratch);
                },
            );
        }
    }
}

/// Per-thread buffers of the block CG.
#[derive(Debug, Clone)]
struct BlockScratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
    rs_old: Vec<f32>,
    active: Vec<bool>,
}

impl BlockScratch {
    fn new(b: usize, f: usize) -> Self {
        BlockScratch {
            r: vec![0.0; b * f],
            p: vec![0.0; b * f],
            ap: vec![0.0; b * f],
            rs_old: vec![0.0; b],
            active: vec![false; b],
        }
    }
}

/// One block of [`cg_block`] as a `pulp` operation: `Arch::dispatch` runs it
/// inside a function compiled for the CPU's vector extensions (AVX2 / AVX-512),
/// and since everything below is `#[inline(always)]` the vector kernels get that
/// code too, while the binary still runs on any x86-64.
struct CgBlock<'a> {
    c: &'a Csr,
    first: usize,
    y: &'a Factors,
    yty: &'a [f32],
    steps: usize,
    xb: &'a mut [f32],
    scratch: &'a mut BlockScratch,
}

impl pulp::WithSimd for CgBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        cg_block(self.c, self.first, self.y, self.yty, self.steps, self.xb, self.scratch)
    }
}

/// `out = a · G` for row-major `a` (`b × f`) and symmetric `G` (`f × f`).
fn times_gram(a: &[f32], g: &[f32], out: &mut [f32], f: usize) {
    let b = a.len() / f;
    matmul(
        MatMut::from_row_major_slice_mut(&mut out[..b * f], b, f),
        Accum::Replace,
        MatRef::from_row_major_slice(a, b, f),
        MatRef::from_row_major_slice(g, f, f),
        1.0,
        Par::Seq,
    );
}

/// CG for the rows `first..first + xb.len()/f` in lock step (see [`solve_all`]).
#[inline(always)]
fn cg_block(c: &Csr, first: usize, y: &Factors, yty: &[f32], steps: usize, xb: &mut [f32], s: &mut BlockScratch) {
    let f = y.dim();
    let b = xb.len() / f;
    let (r, p, ap) = (&mut s.r[..b * f], &mut s.p[..b * f], &mut s.ap[..b * f]);
    // r = b − A x for every row at once: the YᵀY part as one product.
    times_gram(xb, yty, r, f);
    for k in 0..b {
        let (cols, conf) = c.row(first + k);
        let xk = &mut xb[k * f..(k + 1) * f];
        let rk = &mut r[k * f..(k + 1) * f];
        if cols.is_empty() {
            xk.fill(0.0);
            s.active[k] = false;
            continue;
        }
        rk.iter_mut().for_each(|v| *v = -*v);
        for (&i, &ci) in cols.iter().zip(conf) {
            let yi = y.row(i as usize);
            axpy(ci - (ci - 1.0) * dot(yi, xk), yi, rk);
        }
        s.rs_old[k] = dot(rk, rk);
        s.active[k] = s.rs_old[k] >= CG_EPS;
    }
    p.copy_from_slice(r);
    for _ in 0..steps {
        if !s.active[..b].iter().any(|&a| a) {
            break;
        }
        times_gram(p, yty, ap, f);
        for k in 0..b {
            if !s.active[k] {
                continue;
            }
            let (cols, conf) = c.row(first + k);
            let pk = &mut p[k * f..(k + 1) * f];
            let apk = &mut ap[k * f..(k + 1) * f];
            for (&i, &ci) in cols.iter().zip(conf) {
                let yi = y.row(i as usize);
                axpy((ci - 1.0) * dot(yi, pk), yi, apk);
            }
            let step = s.rs_old[k] / dot(pk, apk);
            axpy(step, pk, &mut xb[k * f..(k + 1) * f]);
            let rk = &mut r[k * f..(k + 1) * f];
            axpy(-step, apk, rk);
            let rs_new = dot(rk, rk);
            if rs_new < CG_EPS {
                s.active[k] = false;
                continue;
            }
            let beta = rs_new / s.rs_old[k];
            for (pj, rj) in pk.iter_mut().zip(rk.iter()) {
                *pj = rj + beta * *pj;
            }
            s.rs_old[k] = rs_new;
        }
    }
}

/// Per-thread buffers of [`solve_row`], reused across rows.
#[derive(Debug, Clone)]
pub struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Scratch {
    /// Buffers for `f` factors.
    pub fn new(f: usize) -> Self {
        Scratch { r: vec![0.0; f], p: vec![0.0; f], ap: vec![0.0; f] }
    }
}

/// Solves one row: `x` (warm start for CG, overwritten) against the fixed factors
/// `y`, their Gram matrix `yty` (= `YᵀY + λI`, row-major `f × f`) and the row's
/// stored pairs (`cols`, confidences `conf`). A row without pairs becomes zero.
pub fn solve_row(
    y: &Factors,
    yty: &[f32],
    cols: &[u32],
    conf: &[f32],
    solver: Solver,
    x: &mut [f32],
    scratch: &mut Scratch,
) {
    if cols.is_empty() {
        x.fill(0.0);
        return;
    }
    match solver {
        Solver::ConjugateGradient { steps } => cg_row(y, yty, cols, conf, steps, x, scratch),
        Solver::Cholesky => cholesky_row(y, yty, cols, conf, x),
    }
}

fn cg_row(y: &Factors, yty: &[f32], cols: &[u32], conf: &[f32], steps: usize, x: &mut [f32], s: &mut Scratch) {
    let Scratch { r, p, ap } = s;
    // r = b − A x, with A x = YᵀY x + Σ (c − 1)(y·x) y and b = Σ c y.
    symv(yty, x, r);
    r.iter_mut().for_each(|v| *v = -*v);
    for (&i, &c) in cols.iter().zip(conf) {
        let yi = y.row(i as usize);
        axpy(c - (c - 1.0) * dot(yi, x), yi, r);
    }
    p.copy_from_slice(r);
    let mut rs_old = dot(r, r);
    if rs_old < CG_EPS {
        return;
    }
    for _ in 0..steps {
        symv(yty, p, ap);
        for (&i, &c) in cols.iter().zip(conf) {
            let yi = y.row(i as usize);
            axpy((c - 1.0) * dot(yi, p), yi, ap);
        }
        let step = rs_old / dot(p, ap);
        axpy(step, p, x);
        axpy(-step, ap, r);
        let rs_new = dot(r, r);
        if rs_new < CG_EPS {
            break;
        }
        let beta = rs_new / rs_old;
        for (pk, rk) in p.iter_mut().zip(r.iter()) {
            *pk = rk + beta * *pk;
        }
        rs_old = rs_new;
    }
}

/// Forms the `f × f` system in `f64` and solves it exactly. If it is not positive
/// definite (λ = 0 with too few pairs) the row keeps its value.
fn cholesky_row(y: &Factors, yty: &[f32], cols: &[u32], conf: &[f32], x: &mut [f32]) {
    let f = x.len();
    // Row-major f64 buffers and slice loops (which vectorise) rather than
    // indexed matrix access: building the system is most of the cost at small f.
    let mut a: Vec<f64> = yty.iter().map(|&v| v as f64).collect();
    let mut b = vec![0.0f64; f];
    let mut yi64 = vec![0.0f64; f];
    for (&i, &c) in cols.iter().zip(conf) {
        for (d, s) in yi64.iter_mut().zip(y.row(i as usize)) {
            *d = *s as f64;
        }
        let w = (c - 1.0) as f64;
        for (r, row) in a.chunks_exact_mut(f).enumerate() {
            let wr = w * yi64[r];
            for (ak, yk) in row.iter_mut().zip(&yi64) {
                *ak += wr * yk;
            }
        }
        for (br, yr) in b.iter_mut().zip(&yi64) {
            *br += c as f64 * yr;
        }
    }
    let am = MatRef::from_row_major_slice(&a, f, f);
    if let Ok(llt) = am.llt(Side::Lower) {
        let sol = llt.solve(MatRef::from_column_major_slice(&b, f, 1));
        for (k, v) in x.iter_mut().enumerate() {
            *v = sol[(k, 0)] as f32;
        }
    }
}

/// Folds one user (or, with the roles swapped, one item) into a fitted model:
/// solves the row's system against the fixed factors `y` and cached `yty`
/// (= `YᵀY + λI`), the same equation the trainer solves. `history` holds
/// `(column, r)` pairs with raw summed weights; confidence is `alpha · r`.
/// `Solver::Cholesky` gives the exact fixed point of training.
pub fn fold_in(y: &Factors, yty: &[f32], history: &[(u32, f32)], alpha: f32, solver: Solver, x: &mut [f32]) {
    let mut sorted: Vec<(u32, f32)> = history.to_vec();
    sorted.sort_by_key(|&(i, _)| i);
    // Merge duplicate columns so a repeated item counts as one summed pair.
    let mut cols: Vec<u32> = Vec::with_capacity(sorted.len());
    let mut conf: Vec<f32> = Vec::with_capacity(sorted.len());
    for (i, r) in sorted {
        if cols.last() == Some(&i) {
            if let Some(last) = conf.last_mut() {
                *last += alpha * r;
            }
        } else {
            cols.push(i);
            conf.push(alpha * r);
        }
    }
    solve_row(y, yty, &cols, &conf, solver, x, &mut Scratch::new(x.len()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook system with the full confidence matrix (1 for unstored
    /// items), built densely in f64 and solved by Gaussian elimination.
    #[allow(clippy::needless_range_loop)] // the textbook index form is the point here
    fn brute_force(y: &Factors, reg: f64, cols: &[u32], conf: &[f32]) -> Vec<f64> {
        let f = y.dim();
        let mut a = vec![vec![0.0f64; f + 1]; f];
        for item in 0..y.rows() {
            let (c, p) = match cols.iter().position(|&c| c as usize == item) {
                Some(k) => (conf[k] as f64, 1.0),
                None => (1.0, 0.0),
            };
            let yi = y.row(item);
            for r in 0..f {
                for k in 0..f {
                    a[r][k] += c * yi[r] as f64 * yi[k] as f64;
                }
                a[r][f] += c * p * yi[r] as f64;
            }
        }
        for (r, row) in a.iter_mut().enumerate() {
            row[r] += reg;
        }
        for col in 0..f {
            let piv = (col..f).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap();
            a.swap(col, piv);
            for r in 0..f {
                if r != col {
                    let m = a[r][col] / a[col][col];
                    for k in col..=f {
                        a[r][k] -= m * a[col][k];
                    }
                }
            }
        }
        (0..f).map(|r| a[r][f] / a[r][r]).collect()
    }

    fn max_rel_err(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-12);
        got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max) / scale
    }

    #[test]
    fn cholesky_and_converged_cg_match_the_dense_solution() {
        let y = Factors::seeded(40, 6, 1.0, 7);
        let reg = 0.1;
        let yty = y.gram(reg);
        let cols = [1u32, 5, 9, 22, 39];
        let conf = [4.0f32, 8.0, 1.0, 36.0, 12.0];
        let want = brute_force(&y, reg as f64, &cols, &conf);

        let mut x = vec![0.0f32; 6];
        solve_row(&y, &yty, &cols, &conf, Solver::Cholesky, &mut x, &mut Scratch::new(6));
        assert!(max_rel_err(&x, &want) < 1e-4, "cholesky {x:?} vs {want:?}");

        // CG on an f-dimensional SPD system converges in at most f steps.
        let mut x = vec![0.0f32; 6];
        solve_row(&y, &yty, &cols, &conf, Solver::ConjugateGradient { steps: 30 }, &mut x, &mut Scratch::new(6));
        assert!(max_rel_err(&x, &want) < 1e-3, "cg {x:?} vs {want:?}");
    }

    #[test]
    fn three_cg_steps_reduce_the_error_from_a_warm_start() {
        let y = Factors::seeded(60, 16, 1.0, 11);
        let yty = y.gram(0.1);
        let cols = [0u32, 3, 17, 42];
        let conf = [4.0f32, 4.0, 8.0, 32.0];
        let want = brute_force(&y, 0.1, &cols, &conf);
        let mut x = vec![0.001f32; 16];
        let before = max_rel_err(&x, &want);
        solve_row(&y, &yty, &cols, &conf, Solver::default(), &mut x, &mut Scratch::new(16));
        assert!(max_rel_err(&x, &want) < before);
    }

    #[test]
    fn empty_rows_become_zero() {
        let y = Factors::seeded(5, 3, 1.0, 1);
        let mut x = vec![1.0f32; 3];
        solve_row(&y, &y.gram(0.1), &[], &[], Solver::default(), &mut x, &mut Scratch::new(3));
        assert_eq!(x, vec![0.0; 3]);
    }

    fn toy_matrix() -> Csr {
        // Two blocks of users with disjoint tastes.
        let mut t = Vec::new();
        for u in 0..30u32 {
            let base = if u < 15 { 0 } else { 10 };
            for k in 0..6u32 {
                t.push((u, base + (u + k) % 10, 1.0 + (k % 3) as f32));
            }
        }
        Csr::from_triplets(30, 20, &t).unwrap()
    }

    #[test]
    fn fit_is_deterministic_across_thread_counts() {
        let m = toy_matrix();
        let params = AlsParams { factors: 8, iterations: 5, ..AlsParams::default() };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| fit(&m, &params, |_| {}))
        };
        let a = run(1);
        assert_eq!(a, run(2));
        assert_eq!(a, run(4));
        let other = fit(&m, &AlsParams { seed: 43, ..params.clone() }, |_| {});
        assert_ne!(a, other);
    }

    #[test]
    fn warm_start_from_a_converged_fit_needs_fewer_iterations() {
        let m = toy_matrix();
        let params = AlsParams { factors: 6, iterations: 60, ..AlsParams::default() };
        let (a, reg) = (params.alpha, params.regularization);
        let converged = fit(&m, &params, |_| {});
        let target = loss(&m, &converged, a, reg);
        // Iterations until the loss is within 0.1 % of the converged one.
        let needed = |init: Option<&AlsModel>| {
            (1..=60)
                .find(|&n| {
                    let p = AlsParams { iterations: n, ..params.clone() };
                    loss(&m, &fit_with_init(&m, &p, init, |_| {}), a, reg) <= target * 1.001
                })
                .unwrap_or(usize::MAX)
        };
        let cold = needed(None);
        let warm = needed(Some(&converged));
        assert_eq!(warm, 1, "a converged start is already there");
        assert!(cold > 3, "a random start needs several sweeps (took {cold})");
        // One more sweep from the fixed point keeps the loss (it may only fall).
        let again = fit_with_init(&m, &AlsParams { iterations: 1, ..params.clone() }, Some(&converged), |_| {});
        assert!(loss(&m, &again, a, reg) <= target * (1.0 + 1e-4));
    }

    #[test]
    fn warm_start_is_deterministic_and_falls_back_to_the_seeded_start() {
        let m = toy_matrix();
        let params = AlsParams { factors: 8, iterations: 3, ..AlsParams::default() };
        let base = fit(&m, &params, |_| {});
        let p2 = AlsParams { alpha: 10.0, regularization: 1.0, ..params.clone() };
        let w1 = fit_with_init(&m, &p2, Some(&base), |_| {});
        assert_eq!(w1, fit_with_init(&m, &p2, Some(&base), |_| {}));
        assert_ne!(w1, fit(&m, &p2, |_| {}), "the start mattered");
        // Another factor count cannot use `base`: the seeded random start, exactly `fit`'s.
        let p3 = AlsParams { factors: 4, ..params.clone() };
        assert!(!warm_start_applies(&base, &m, 4));
        assert_eq!(fit_with_init(&m, &p3, Some(&base), |_| {}), fit(&m, &p3, |_| {}));
        assert_eq!(fit_with_init(&m, &params, None, |_| {}), base);
        // Zero iterations return the start itself.
        let p0 = AlsParams { iterations: 0, ..params.clone() };
        assert_eq!(fit_with_init(&m, &p0, Some(&base), |_| {}), base);
    }

    #[test]
    fn loss_matches_the_dense_sum() {
        let m = toy_matrix();
        let model = fit(&m, &AlsParams { factors: 4, iterations: 2, ..AlsParams::default() }, |_| {});
        let (alpha, reg) = (4.0f32, 0.1f32);
        let mut want = 0.0f64;
        for u in 0..m.n_rows() {
            for i in 0..m.n_cols() {
                let s = dot(model.user_factors.row(u), model.item_factors.row(i)) as f64;
                let (c, p) = match m.get(u, i as u32) {
                    Some(r) => ((alpha * r) as f64, 1.0),
                    None => (1.0, 0.0),
                };
                want += c * (p - s).powi(2);
            }
        }
        let sq = |f: &Factors| f.as_slice().iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        want += reg as f64 * (sq(&model.user_factors) + sq(&model.item_factors));
        let got = loss(&m, &model, alpha, reg);
        assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "{got} vs {want}");
    }

    #[test]
    fn fit_recovers_block_structure_and_fold_in_matches_training() {
        let m = toy_matrix();
        let params = AlsParams { factors: 8, iterations: 15, solver: Solver::Cholesky, ..AlsParams::default() };
        let mut iters = 0;
        let model = fit(&m, &params, |s| iters = s.iteration);
        assert_eq!(iters, 15);
        // A block-0 user scores a block-0 item it has not seen above any block-1 item.
        let x0 = model.user_factors.row(0);
        let unseen_same = (0..10u32).find(|&i| m.get(0, i).is_none()).unwrap();
        let best_other = (10..20).map(|i| dot(x0, model.item_factors.row(i))).fold(f32::MIN, f32::max);
        assert!(dot(x0, model.item_factors.row(unseen_same as usize)) > best_other);

        // With the exact solver, folding a trained user in again reproduces the
        // factors the last user half-sweep produced (items moved after it, so
        // re-solve against the final items and compare with that).
        let y = &model.item_factors;
        let yty = y.gram(params.regularization);
        let (cols, r) = m.row(3);
        let hist: Vec<(u32, f32)> = cols.iter().copied().zip(r.iter().copied()).collect();
        let mut folded = vec![0.0f32; 8];
        fold_in(y, &yty, &hist, params.alpha, Solver::Cholesky, &mut folded);
        let mut trained = model.user_factors.clone();
        solve_all(&m.scaled(params.alpha), &mut trained, y, params.regularization, Solver::Cholesky);
        let diff = folded.iter().zip(trained.row(3)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "fold-in differs from training by {diff}");
    }
}
