//! `recsys-trainer`: the offline half of recsys.
//!
//! Event log (RetailRocket CSV) → cleaning → (user, item) pairs → filter →
//! implicit ALS → offline evaluation → gate → versioned model artifact.
//!
//! Layout:
//! - [`data`]: in-memory data set types shared by every step.
//! - [`load`]: fast, parallel loading and cleaning of CSV event logs (on `schemas::csv`),
//!   with counted rejections and the too-many-rejected check.
//! - [`inspect`]: the `inspect` command: a profile of a data directory before training.
//! - [`preprocess`]: (user, item) pairs, user/item filters, item metadata and statistics.
//! - [`split`]: the seed (per-user temporal) and time (global cutoff) protocols.
//! - [`metrics`]: the seven offline metrics with the original's denominators.
//! - [`pipeline`]: index → fit → recommend → score; the full fit behind a model.
//! - [`search`]: the budgeted model search (successive halving on a validation
//!   split carved from the training side, warm starts).
//! - [`gate`]: the promotion gate against the served model's recorded metrics.
//! - [`train`]: the `train` command: evaluate, fit, write, gate, promote.
//! - [`export`]: writes a split for external comparisons (the `implicit` bench).
//! - [`config`]: `configs/recsys.toml` + `RECSYS__…` environment, typed.
//! - [`cli`]: the `recsys-trainer` command line, one module per subcommand
//!   (`generate` runs the `datagen` crate).
//! - [`kafka_source`]: the event log from `recsys.events` (bounded by the high
//!   watermarks at the start), and the archive + topic rule.
//! - [`nightly`]: one run as `train` and `schedule` do it: load, train, prune, report.
//! - [`lifecycle`]: `CURRENT` / `PREVIOUS`, retention of the last N versions, the run lock.
//! - [`publish`]: Redis popular / similar lists, `model:current`, the announcement.
//! - [`schedule`]: `recsys-trainer schedule` (cron, retries, `/metrics`).
//! - [`cron`]: the schedule's cron expressions (a leaf: `config` validates with it).
//! - [`notify`]: the notification webhook.
//! - [`archive`]: the event log (archive + topic) as a new archive directory.

pub mod archive;
pub mod cli;
pub mod config;
pub mod cron;
pub mod data;
pub mod export;
pub mod gate;
pub mod inspect;
pub mod kafka_source;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod nightly;
pub mod notify;
pub mod pipeline;
pub mod preprocess;
pub mod publish;
pub mod schedule;
pub mod search;
pub mod split;
pub mod train;
