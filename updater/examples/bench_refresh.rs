//! Fold-in + scoring throughput of the updater's CPU stage (`compute::refresh`):
//! user refreshes per second for micro-batches of users with 1–20 history
//! items, against 50,000 items, at 64 and 256 factors; and the scoring GEMM's
//! rate next to the machine's measured f32 matrix-multiply peak.
//!
//! `cargo run --release -p updater --example bench_refresh [-- ITEMS BATCH BATCHES]`

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use schemas::{HistEntry, ItemId, UserId};
use updater::compute::{refresh, ComputeParams, NewItems};
use updater::config::FoldInSolver;
use updater::store::UserHistory;
use updater::ServedModel;

fn model(items: usize, f: usize) -> ServedModel {
    ServedModel::from_artifact(testkit::bench_model::artifact(items, f), "0".repeat(64)).unwrap()
}

fn histories(n: usize, items: usize, seed: u64) -> Vec<UserHistory> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|u| {
            let len = 1 + (next() % 20) as usize;
            let mut its: Vec<(ItemId, HistEntry)> = (0..len)
                .map(|_| {
                    let r = next();
                    let item = ((r % 1000) * (r % 1000) / 1000 * items as u64 / 1000) as usize % items;
                    (
                        ItemId::parse(&item.to_string()).unwrap(),
                        HistEntry { counts: [1 + (r % 3) as u32, (r >> 8) as u32 % 2, 0], last_ts: 0 },
                    )
                })
                .collect();
            its.sort_by(|a, b| a.0.cmp(&b.0));
            its.dedup_by(|a, b| a.0 == b.0);
            UserHistory { user: UserId::parse(&format!("b{u}")).unwrap(), items: its }
        })
        .collect()
}

/// Best of a few runs of one big f32 GEMM: the machine's practical peak.
fn gemm_peak_gflops() -> f64 {
    let (m, n, k) = (1024, 4096, 256);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        matmul(
            MatMut::from_row_major_slice_mut(&mut c, m, n),
            Accum::Replace,
            MatRef::from_row_major_slice(&a, m, k),
            MatRef::from_row_major_slice(&b, k, n),
            1.0,
            Par::rayon(0),
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let items = args.first().copied().unwrap_or(50_000);
    let batch = args.get(1).copied().unwrap_or(512);
    let batches = args.get(2).copied().unwrap_or(20);
    println!("threads {}, items {items}, batch {batch} users, {batches} batches", rayon::current_num_threads());
    let peak = gemm_peak_gflops();
    println!("f32 GEMM peak (faer, 1024x4096x256, all cores): {peak:.1} GFLOP/s");
    for f in [64, 256] {
        let m = model(items, f);
        for (solver, name, block) in [
            (FoldInSolver::Cholesky, "cholesky", 128),
            (FoldInSolver::Cholesky, "cholesky", 32),
            (FoldInSolver::Cholesky, "cholesky", 8),
            (FoldInSolver::Cg, "cg", 32),
        ] {
            let p = ComputeParams {
                solver,
                k: 100,
                rerank: model::rerank::RerankConfig { enabled: false, ..Default::default() },
                score_block: block,
                live: Default::default(),
            };
            let hs: Vec<Vec<UserHistory>> = (0..batches).map(|b| histories(batch, items, 7 + b as u64)).collect();
            // Warm-up.
            let _ = refresh(&m, &NewItems::default(), &p, &hs[0], 0);
            let t = Instant::now();
            let mut users = 0;
            for h in &hs {
                users += refresh(&m, &NewItems::default(), &p, h, 0).len();
            }
            let s = t.elapsed().as_secs_f64();
            let gflops = 2.0 * (users * items * f) as f64 / s / 1e9;
            println!(
                "factors {f:>3} solver {name:<8} block {block:>3}: {:>8.0} user refreshes/s ({:.2} ms per batch of {batch}); \
                 scoring alone would be {gflops:.1} GFLOP/s = {:.0}% of peak over the whole stage",
                users as f64 / s,
                s * 1000.0 / batches as f64,
                100.0 * gflops / peak
            );
        }
    }
}
