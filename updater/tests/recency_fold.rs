//! Online/offline agreement of the recency decay: a user folded in by the
//! updater from its Redis history (counts and latest time per item) gets the
//! vector the trainer's confidences give, once the model's manifest carries
//! the half-life and reference time.

#![allow(clippy::unwrap_used)]

use batch_trainer::data::RawEvent;
use batch_trainer::preprocess::{build_pairs_with, Weights};
use model::synthetic::{item_id, synthetic_artifact, user_id, SyntheticSpec};
use model::{fit, AlsParams, Csr, Recency, Solver};
use schemas::{EventKind, HistEntry, ItemId, UserId};
use updater::compute::{fold_user, split_history};
use updater::store::UserHistory;
use updater::ServedModel;

const USERS: usize = 40;
const ITEMS: usize = 30;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_430_000_000_000;

/// Every event of a (user, item) pair at one time, so the history's latest
/// time is every event's time and the two sides must agree exactly.
fn events() -> Vec<RawEvent> {
    let mut out = Vec::new();
    for u in 0..USERS as u64 {
        let base = if u < USERS as u64 / 2 { 0 } else { ITEMS as u64 / 2 };
        for k in 0..8u64 {
            let i = base + (u + 3 * k) % (ITEMS as u64 / 2);
            let ts = T0 + ((u * 7 + i * 13) % 60) as i64 * DAY + (u * 1000 + i) as i64;
            let mut push = |kind, n| {
                for _ in 0..n {
                    out.push(RawEvent { ts, user: u, item: i, kind, txn: None });
                }
            };
            push(EventKind::View, 1 + (u + i) % 3);
            push(EventKind::AddToCart, u64::from((u + i).is_multiple_of(4)));
            push(EventKind::Transaction, u64::from((u + i).is_multiple_of(7)));
        }
    }
    out
}

fn history(events: &[RawEvent], user: u64) -> UserHistory {
    let mut items: Vec<(ItemId, HistEntry)> = Vec::new();
    for e in events.iter().filter(|e| e.user == user) {
        let id = ItemId::parse(&item_id(e.item as usize)).unwrap();
        let pos = match items.iter().position(|(i, _)| *i == id) {
            Some(p) => p,
            None => {
                items.push((id, HistEntry::default()));
                items.len() - 1
            }
        };
        let h = &mut items[pos].1;
        h.counts[e.kind.index()] += 1;
        h.last_ts = h.last_ts.max(e.ts);
    }
    UserHistory { user: UserId::parse(&user_id(user as usize)).unwrap(), items }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn fold_in_with_decay_equals_the_trainers_user_vector() {
    let events = events();
    let weights = Weights::default();
    let recency = Recency::from_newest(7.0, events.iter().map(|e| e.ts));
    let pairs = build_pairs_with(&events, &weights, &recency);
    let triplets: Vec<(u32, u32, f32)> = pairs.iter().map(|p| (p.user as u32, p.item as u32, p.weight)).collect();
    let m = Csr::from_triplets(USERS, ITEMS, &triplets).unwrap();
    let params = AlsParams { factors: 8, iterations: 15, solver: Solver::Cholesky, ..AlsParams::default() };
    let trained = fit(&m, &params, |_| {});

    // A version with these factors and the decay in its manifest, written and
    // read back as the updater loads it.
    let spec = SyntheticSpec { users: USERS, items: ITEMS, factors: 8, ..SyntheticSpec::default() };
    let mut art = synthetic_artifact(&spec);
    art.user_factors = trained.user_factors.clone();
    art.item_factors = trained.item_factors.clone();
    art.manifest.params = params.clone();
    art.manifest.recency = recency;
    let dir = tempfile::tempdir().unwrap();
    let path = art.write(dir.path()).unwrap();
    let served = ServedModel::load(&path).unwrap();
    assert_eq!(served.recency, recency);

    let y = &trained.item_factors;
    let yty = y.gram(params.regularization);
    let mut worst_undecayed = 0.0f32;
    for u in 0..USERS {
        let s = split_history(&served, &history(&events, u as u64));
        let online = fold_user(&served, &s.known, Solver::Cholesky).unwrap();
        // The trainer's user solve (its row of confidences against the final
        // items; model's als tests show this is the training half-sweep's).
        let (cols, r) = m.row(u);
        let row: Vec<(u32, f32)> = cols.iter().copied().zip(r.iter().copied()).collect();
        // Equal up to the order of the float sums (per event offline,
        // count × weight online).
        assert_eq!(s.known.len(), row.len(), "user {u}");
        for (a, b) in s.known.iter().zip(&row) {
            assert!(a.0 == b.0 && (a.1 - b.1).abs() <= 1e-6 * b.1, "user {u}: history {a:?}, trainer {b:?}");
        }
        let mut offline = vec![0.0f32; 8];
        model::fold_in(y, &yty, &row, params.alpha, Solver::Cholesky, &mut offline);
        let d = max_diff(&online, &offline);
        assert!(d < 1e-5, "user {u}: fold-in differs from the trainer's vector by {d}");

        let mut plain: Vec<(u32, f32)> = history(&events, u as u64)
            .items
            .iter()
            .filter_map(|(id, e)| served.item_index.get(id).map(|&row| (row, e.weighted(|k| served.weights.of(k)))))
            .collect();
        plain.sort_by_key(|&(r, _)| r);
        let mut x = vec![0.0f32; 8];
        model::fold_in(y, &yty, &plain, params.alpha, Solver::Cholesky, &mut x);
        worst_undecayed = worst_undecayed.max(max_diff(&x, &offline));
    }
    // The decay matters: without it the fold-in would not match.
    assert!(worst_undecayed > 1e-2, "decay changed nothing ({worst_undecayed})");
}
