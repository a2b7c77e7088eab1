//! Benchmark: ALS fit time on a random sparse matrix of RetailRocket's filtered
//! shape (≈ 50k users × 50k items, 380k pairs).
//!
//! `cargo run --release -p model --example bench_fit -- [users] [items] [nnz] [factors] [iterations]`

use std::time::Instant;

use model::{fit, AlsParams, Csr};
use rand::{Rng, SeedableRng};

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let (users, items, nnz, f, iters) = (arg(1, 50_000), arg(2, 50_000), arg(3, 380_000), arg(4, 64), arg(5, 15));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // Skewed item choice, like real popularity.
    let t: Vec<(u32, u32, f32)> = (0..nnz)
        .map(|_| {
            let u = rng.random_range(0..users) as u32;
            let x: f64 = rng.random();
            let i = ((x * x * x) * items as f64) as u32;
            (u, i.min(items as u32 - 1), [1.0, 1.0, 1.0, 4.0, 8.0][rng.random_range(0..5)])
        })
        .collect();
    let m = Csr::from_triplets(users, items, &t).expect("in range");
    let params = AlsParams { factors: f, iterations: iters, ..AlsParams::default() };
    let start = Instant::now();
    let model = fit(&m, &params, |_| {});
    let s = start.elapsed().as_secs_f64();
    println!(
        "fit: {users} users x {items} items, {} pairs, {f} factors, {iters} iterations, CG 3 steps: {s:.2} s ({:.3} s/iteration), threads {}",
        m.nnz(),
        s / iters as f64,
        rayon::current_num_threads()
    );
    std::hint::black_box(model);
}
