//! Dense factor matrices and the small vector kernels the solvers run.
//!
//! Factors are row-major `n × f` `f32` buffers: one row per user or item, so a
//! row is a contiguous slice the solver can stream. Matrix products go through
//! faer; the per-row kernels are written with several independent accumulators
//! so the compiler can vectorise them (a single running sum cannot be reordered
//! under IEEE rules). The kernels are `#[inline(always)]` so that, inlined into
//! a function dispatched with `pulp::Arch` (see `als`), they are compiled for the
//! CPU's widest vector unit (AVX2 / AVX-512) while the binary still runs on any
//! x86-64. `mul_add` is avoided on purpose: without a target that
//! has FMA it becomes a slow library call.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Rows per block when summing Gram matrices. Fixed, so the summation order and
/// hence the result do not depend on the number of threads.
const GRAM_BLOCK: usize = 4096;

/// A row-major matrix of latent factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    rows: usize,
    dim: usize,
    data: Vec<f32>,
}

impl Factors {
    /// All zeros.
    pub fn zeros(rows: usize, dim: usize) -> Self {
        Factors { rows, dim, data: vec![0.0; rows * dim] }
    }

    /// Wraps a row-major buffer; `None` if its length is not `rows * dim`.
    pub fn from_vec(rows: usize, dim: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == rows * dim).then_some(Factors { rows, dim, data })
    }

    /// Uniform values in `[0, scale)` from a seeded stream, as `implicit` does
    /// (`rand(n, f) * 0.01`). Generated sequentially, so reproducible.
    pub fn random(rows: usize, dim: usize, scale: f32, rng: &mut ChaCha8Rng) -> Self {
        let data = (0..rows * dim).map(|_| rng.random::<f32>() * scale).collect();
        Factors { rows, dim, data }
    }

    /// A seeded random matrix (see [`Factors::random`]).
    pub fn seeded(rows: usize, dim: usize, scale: f32, seed: u64) -> Self {
        Self::random(rows, dim, scale, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of factors per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row `i`, mutable.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The whole row-major buffer.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The whole row-major buffer, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Appends a row (used when items are folded in after training).
    pub fn push_row(&mut self, row: &[f32]) {
        assert_eq!(row.len(), self.dim, "row length must equal the factor count");
        self.data.extend_from_slice(row);
        self.rows += 1;
    }

    /// A faer view of the matrix.
    pub fn view(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.data, self.rows, self.dim)
    }

    /// `YᵀY + reg·I` as a row-major `f × f` buffer.
    ///
    /// Blocks of a fixed number of rows are multiplied in parallel and summed in
    /// block order, so the result is bit-identical for any thread count.
    pub fn gram(&self, reg: f32) -> Vec<f32> {
        let f = self.dim;
        let partials: Vec<Vec<f32>> = self
            .data
            .par_chunks(GRAM_BLOCK * f.max(1))
            .map(|block| {
                let n = block.len() / f.max(1);
                let y = MatRef::from_row_major_slice(block, n, f);
                let mut g = vec![0.0f32; f * f];
                matmul(MatMut::from_row_major_slice_mut(&mut g, f, f), Accum::Replace, y.transpose(), y, 1.0, Par::Seq);
                g
            })
            .collect();
        let mut g = vec![0.0f32; f * f];
        for p in &partials {
            axpy(1.0, p, &mut g);
        }
        for d in 0..f {
            g[d * f + d] += reg;
        }
        g
    }
}

/// `a · b`.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    let mut s = 0.0f32;
    for v in acc {
        s += v;
    }
    s + tail
}

/// `y += a · x`.
#[inline(always)]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `out = M · v` for a row-major square `f × f` matrix `M`.
#[inline(always)]
pub fn symv(m: &[f32], v: &[f32], out: &mut [f32]) {
    let f = v.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot(&m[i * f..(i + 1) * f], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_sums() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
        let mut y = b.clone();
        axpy(2.0, &a, &mut y);
        assert!(y.iter().zip(a.iter().zip(&b)).all(|(r, (x, z))| (r - (2.0 * x + z)).abs() < 1e-5));
    }

    #[test]
    fn gram_matches_naive_and_is_thread_independent() {
        let y = Factors::seeded(10_000, 7, 1.0, 3);
        let g = y.gram(0.5);
        for i in 0..7 {
            for j in 0..7 {
                let naive: f64 = (0..y.rows()).map(|r| y.row(r)[i] as f64 * y.row(r)[j] as f64).sum::<f64>()
                    + if i == j { 0.5 } else { 0.0 };
                assert!((g[i * 7 + j] as f64 - naive).abs() / naive.abs().max(1.0) < 1e-4);
            }
        }
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| y.gram(0.5)), g);
    }
}
