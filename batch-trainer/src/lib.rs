//! `recsys-trainer`: the offline half of recsys.
//!
//! Event log (RetailRocket CSV) → cleaning → (user, item) pairs → filter →
//! implicit ALS → offline evaluation → gate → versioned model artifact.
//!
//! Layout:
//! - [`data`]: in-memory data set types shared by every step.
//! - [`load`]: fast, parallel loading and cleaning of the RetailRocket CSV files.
//! - [`preprocess`]: (user, item) pairs, user/item filters, item metadata and statistics.
//! - [`split`]: the seed (per-user temporal) and time (global cutoff) protocols.
//! - [`metrics`]: the seven offline metrics with the original's denominators.
//! - [`pipeline`]: index → fit → recommend → score; the full fit behind a model.
//! - [`gate`]: the promotion gate against the served model's recorded metrics.
//! - [`train`]: the `train` command: evaluate, fit, write, gate, promote.
//! - [`export`]: writes a split for external comparisons (the `implicit` bench).
//! - [`config`]: `configs/recsys.toml` + `RECSYS__…` environment, typed.
//! - [`cli`]: the `recsys-trainer` command line.
//! - [`generate`]: synthetic RetailRocket-shaped data (all four files) at any scale.

pub mod cli;
pub mod config;
pub mod data;
pub mod export;
pub mod gate;
pub mod generate;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod preprocess;
pub mod split;
pub mod train;
