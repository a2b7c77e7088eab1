//! A synthetic served model of any size for the benches: `items` items in
//! 300 categories, 1,000 users, seeded random factors. Its scores mean
//! nothing; its shapes are those of a real model, which is what a timing
//! needs.

#![allow(clippy::unwrap_used)]

use model::artifact::{Artifact, Counts, DataRange, ItemRecord, Manifest, FORMAT_VERSION};
use model::{AlsParams, EventWeights, Factors, Popularity};

/// The artifact, version `bench`, with `f` factors; a bench loads it with
/// `ServedModel::from_artifact(artifact, "0".repeat(64))`.
pub fn artifact(items: usize, f: usize) -> Artifact {
    Artifact {
        manifest: Manifest {
            format: FORMAT_VERSION,
            version: "bench".into(),
            created_at: "2026-11-29T00:00:00Z".into(),
            parent_version: None,
            params: AlsParams { factors: f, ..AlsParams::default() },
            weights: EventWeights::default(),
            recency: model::Recency::default(),
            data: DataRange { source: "bench".into(), first_ts: 0, last_ts: 0, events: 0, catalog: None },
            counts: Counts { users: 1000, items, train_nnz: 0, factors: f },
            kafka_offsets: vec![],
            evaluation: None,
            gate: None,
            search: None,
            files: Default::default(),
        },
        user_ids: (0..1000).map(|u| format!("u{u}")).collect(),
        items: (0..items)
            .map(|i| ItemRecord {
                id: i.to_string(),
                category: Some((i % 300) as u64),
                available: None,
                popularity: 1.0,
            })
            .collect(),
        user_factors: Factors::seeded(1000, f, 0.1, 1),
        item_factors: Factors::seeded(items, f, 0.1, 2),
        categories: vec![],
        popular: Popularity::default(),
    }
}
