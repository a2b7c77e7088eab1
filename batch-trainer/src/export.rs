//! Writes an evaluation split as plain files so another implementation (the
//! Python `implicit` benchmark) fits and scores exactly the same data.
//!
//! `train.csv`: `user,item,weight` (dense indices, weight = summed event weight r);
//! `test.csv`: `user,item`, the relevant pairs of warm test users (a target item
//! the training data never saw gets a fresh index ≥ n_items, so it counts in the
//! recall denominator and can never be hit); `params.json`: hyper-parameters and
//! shapes.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::config::TrainingConfig;
use crate::data::Dataset;
use crate::pipeline::index_pairs;
use crate::split;

/// Writes `train.csv`, `test.csv` and `params.json` into `dir`.
pub fn export_split(ds: &Dataset, cfg: &TrainingConfig, dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let s = split::split(
        cfg.protocol,
        &ds.events.events,
        &cfg.weights,
        cfg.recency_half_life_days,
        &cfg.filter,
        &cfg.split,
    );
    let ix = index_pairs(&s.train);
    let mut w = BufWriter::new(fs::File::create(dir.join("train.csv"))?);
    writeln!(w, "user,item,weight")?;
    for u in 0..ix.matrix.n_rows() {
        let (cols, vals) = ix.matrix.row(u);
        for (c, v) in cols.iter().zip(vals) {
            writeln!(w, "{u},{c},{v}")?;
        }
    }
    w.flush()?;
    let mut unseen: HashMap<u64, usize> = HashMap::new();
    let n_items = ix.item_ids.len();
    let mut w = BufWriter::new(fs::File::create(dir.join("test.csv"))?);
    writeln!(w, "user,item")?;
    let mut test_users = 0;
    for u in &s.test_users {
        let (Some(&row), Some(targets)) = (ix.user_index.get(u), s.targets.get(u)) else { continue };
        if targets.is_empty() {
            continue;
        }
        test_users += 1;
        for t in targets {
            let col = match ix.item_index.get(t) {
                Some(&c) => c as usize,
                None => {
                    let next = n_items + unseen.len();
                    *unseen.entry(*t).or_insert(next)
                }
            };
            writeln!(w, "{row},{col}")?;
        }
    }
    w.flush()?;
    let params = serde_json::json!({
        "factors": cfg.factors,
        "iterations": cfg.iterations,
        "regularization": cfg.regularization,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
        "threads": if cfg.threads == 0 { rayon::current_num_threads() } else { cfg.threads },
        "k": cfg.k,
        "n_users": ix.user_ids.len(),
        "n_items": n_items,
        "protocol": s.protocol.as_str(),
        "test_users": test_users,
    });
    fs::write(dir.join("params.json"), serde_json::to_vec_pretty(&params)?)?;
    Ok(())
}
