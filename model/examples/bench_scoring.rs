//! Benchmark: batched top-N scoring throughput.
//!
//! `cargo run --release -p model --example bench_scoring -- [users] [items] [factors] [k]`
//! (defaults 20000 50000 256 20) prints users/s and the achieved GFLOP/s.

use std::time::Instant;

use model::{recommend_all, Factors};

fn arg(n: usize, default: usize) -> usize {
    std::env::args().nth(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let (users, items, f, k) = (arg(1, 20_000), arg(2, 50_000), arg(3, 256), arg(4, 20));
    let u = Factors::seeded(users, f, 1.0, 1);
    let y = Factors::seeded(items, f, 1.0, 2);
    // Every user excludes ~10 items, like a train history.
    let excl: Vec<Vec<u32>> =
        (0..users).map(|i| (0..10).map(|j| ((i * 31 + j * 7919) % items) as u32).collect()).collect();
    for block in [32, 64, 128] {
        let t = Instant::now();
        let recs = recommend_all(&u, &y, k, block, |i| &excl[i]);
        let s = t.elapsed().as_secs_f64();
        assert_eq!(recs.len(), users);
        let gflops = 2.0 * users as f64 * items as f64 * f as f64 / s / 1e9;
        println!(
            "scoring: {users} users x {items} items x {f} factors, k={k}, block {block}: {s:.2} s, {:.0} users/s, {gflops:.1} GFLOP/s, threads {}",
            users as f64 / s,
            rayon::current_num_threads()
        );
    }
}
