//! Small, deterministic, fully trained model versions for tests, examples and
//! benchmarks of the processes that read models (updater, serving): real ALS
//! factors fitted on a synthetic power-law interaction matrix, written in the
//! artifact format like the trainer's.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::artifact::{Artifact, CategoryRecord, Counts, DataRange, ItemRecord, Manifest, FORMAT_VERSION};
use crate::{fit, AlsParams, Csr, EventWeights, Popularity, Solver};

/// Shape of a synthetic model.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub version: String,
    pub users: usize,
    pub items: usize,
    pub factors: usize,
    /// Distinct items per user (inclusive range).
    pub items_per_user: (usize, usize),
    /// Categories (items are spread round-robin); 0 = no categories.
    pub categories: usize,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            version: "v1".into(),
            users: 300,
            items: 200,
            factors: 16,
            items_per_user: (2, 12),
            categories: 8,
            seed: 7,
        }
    }
}

/// Item id of item row `i`: `"{1000 + i}"`. User id of row `u`: `"u{u}"`.
pub fn item_id(i: usize) -> String {
    (1000 + i).to_string()
}

/// User id of user row `u`.
pub fn user_id(u: usize) -> String {
    format!("u{u}")
}

/// Fits and returns the artifact (not yet written).
pub fn synthetic_artifact(spec: &SyntheticSpec) -> Artifact {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut triplets = Vec::new();
    for u in 0..spec.users {
        let n = rng.random_range(spec.items_per_user.0..=spec.items_per_user.1).min(spec.items);
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < n {
            // Power-law popularity: item rank ~ u^2 concentrates on low rows.
            let x: f64 = rng.random();
            seen.insert(((x * x) * spec.items as f64) as usize % spec.items);
        }
        for i in seen {
            let w = [1.0f32, 1.0, 1.0, 2.0, 4.0, 8.0][rng.random_range(0..6)];
            triplets.push((u as u32, i as u32, w));
        }
    }
    let csr = Csr::from_triplets(spec.users, spec.items, &triplets).expect("indices in range");
    let params = AlsParams {
        factors: spec.factors,
        iterations: 10,
        solver: Solver::Cholesky,
        seed: spec.seed,
        ..AlsParams::default()
    };
    let m = fit(&csr, &params, |_| {});
    let mut pop = vec![0.0f64; spec.items];
    for &(_, i, w) in &triplets {
        pop[i as usize] += w as f64;
    }
    let cat = |i: usize| (spec.categories > 0).then(|| 1 + (i % spec.categories) as u64);
    let categories = (0..spec.categories as u64)
        .map(|c| CategoryRecord {
            id: c + 1,
            // A two-level tree: odd categories are children of 1.
            parent: (c > 0 && c % 2 == 1).then_some(1),
            depth: if c > 0 && c % 2 == 1 { 2 } else { 1 },
            events: 10 * (c + 1),
            users: c + 1,
            items: 1,
        })
        .collect();
    Artifact {
        manifest: Manifest {
            format: FORMAT_VERSION,
            version: spec.version.clone(),
            created_at: "2026-11-29T00:00:00Z".into(),
            parent_version: None,
            params,
            weights: EventWeights::default(),
            recency: crate::Recency::default(),
            data: DataRange {
                source: "synthetic".into(),
                first_ts: 0,
                last_ts: 0,
                events: triplets.len() as u64,
                catalog: None,
            },
            counts: Counts { users: spec.users, items: spec.items, train_nnz: csr.nnz(), factors: spec.factors },
            kafka_offsets: Vec::new(),
            evaluation: None,
            gate: None,
            search: None,
            files: BTreeMap::new(),
        },
        user_ids: (0..spec.users).map(user_id).collect(),
        items: (0..spec.items)
            .map(|i| ItemRecord { id: item_id(i), category: cat(i), available: None, popularity: pop[i] })
            .collect(),
        user_factors: m.user_factors,
        item_factors: m.item_factors,
        categories,
        popular: Popularity::from_scores(&pop, 100),
    }
}
