//! The flags several subcommands share, and what they set up: the settings
//! the flags override, the loaded data (printed as it is loaded), the async
//! runtime of a command's asynchronous steps.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::output::{render_kafka, render_load};
use crate::config::{self, SolverKind, TrainingConfig};
use crate::nightly::{self, Loaded, Source};
use crate::split::Protocol;

/// How CSV files are read (override `[training]`; see docs/data-format.md).
#[derive(Debug, Clone, Default, Args)]
pub struct LoadArgs {
    /// Header names of fields under other names, e.g. `user_id=customer,item_id=sku`
    /// (fields: ts, user_id, event, item_id, transaction_id, property, value).
    #[arg(long)]
    pub columns: Option<String>,
    /// Clock of the timestamps: auto (detected per file), s, ms, us, ns or iso.
    #[arg(long)]
    pub time_unit: Option<String>,
    /// Largest share of a file's rows that may be rejected (0..1, default 0.05).
    #[arg(long)]
    pub max_bad_rows: Option<f64>,
    /// Only events at or after this time (epoch ms or ISO-8601); default: no bound.
    #[arg(long, value_parser = parse_time)]
    pub min_ts: Option<i64>,
    /// Only events before this time (epoch ms or ISO-8601); default: no bound.
    #[arg(long, value_parser = parse_time)]
    pub max_ts: Option<i64>,
}

/// Epoch milliseconds or ISO-8601 (`2015-06-01`, `2015-06-01T12:00:00Z`).
fn parse_time(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .or_else(|| schemas::csv::TimeUnit::Iso8601.to_ms(s.as_bytes()))
        .ok_or_else(|| format!("{s:?} is neither epoch milliseconds nor ISO-8601"))
}

impl LoadArgs {
    pub(super) fn apply(&self, t: &mut TrainingConfig) {
        if let Some(v) = &self.columns {
            t.columns = v.clone();
        }
        if let Some(v) = &self.time_unit {
            t.time_unit = v.clone();
        }
        if let Some(v) = self.max_bad_rows {
            t.max_bad_rows = v;
        }
        if let Some(v) = self.min_ts {
            t.min_ts = Some(v);
        }
        if let Some(v) = self.max_ts {
            t.max_ts = Some(v);
        }
    }
}

/// Where the events come from (at least one).
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// Directory with events.csv (and optionally item_properties_part*.csv,
    /// category_tree.csv). With --from-kafka: an archive whose kafka_offsets.json
    /// says which topic events it holds; the topic is read after them.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Read the event topic (`[kafka]`) from the start, or from the archive's
    /// offsets, up to its end offsets taken at start.
    #[arg(long)]
    pub from_kafka: bool,
}

impl SourceArgs {
    pub(super) fn source(&self) -> anyhow::Result<Source> {
        if self.data_dir.is_none() && !self.from_kafka {
            bail!("no data source: give --data-dir DIR, --from-kafka, or both");
        }
        Ok(Source { data_dir: self.data_dir.clone(), from_kafka: self.from_kafka })
    }
}

/// Flags that override `[training]` for experiments.
#[derive(Debug, Clone, Default, Args)]
pub struct HyperArgs {
    #[arg(long)]
    pub factors: Option<usize>,
    #[arg(long)]
    pub iterations: Option<usize>,
    #[arg(long)]
    pub regularization: Option<f32>,
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Worker threads (0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum)]
    pub solver: Option<SolverKind>,
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Iterative k-core filter instead of the single pass.
    #[arg(long)]
    pub kcore: bool,
    /// Serve and gate on plain ALS (the table still shows ALS + re-rank).
    #[arg(long)]
    pub no_rerank: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

impl HyperArgs {
    fn apply(&self, t: &mut TrainingConfig) {
        if let Some(v) = self.factors {
            t.factors = v;
        }
        if let Some(v) = self.iterations {
            t.iterations = v;
        }
        if let Some(v) = self.regularization {
            t.regularization = v;
        }
        if let Some(v) = self.alpha {
            t.alpha = v;
        }
        if let Some(v) = self.threads {
            t.threads = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(v) = self.solver {
            t.solver = v;
        }
        if let Some(v) = self.protocol {
            t.protocol = v;
        }
        if self.kcore {
            t.filter.kcore = true;
        }
        if self.no_rerank {
            t.rerank.enabled = false;
        }
        self.load.apply(t);
    }
}

/// The settings of `file` (`--config`) with `hyper`'s overrides, validated;
/// sizes the global thread pool.
pub(super) fn settings(file: Option<&Path>, hyper: Option<&HyperArgs>) -> anyhow::Result<config::Settings> {
    let mut s = config::load_settings(file).context("reading configuration")?;
    if let Some(h) = hyper {
        h.apply(&mut s.training);
    }
    s.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
    if s.training.threads > 0 {
        // Fails only if a pool already exists (tests); the existing one is then used.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(s.training.threads).build_global();
    }
    Ok(s)
}

/// Loads the source and prints what each file and the topic contributed.
pub(super) fn load_data(src: &Source, s: &config::Settings, show: bool) -> anyhow::Result<Loaded> {
    let loaded = nightly::load_source(src, s, show).context("loading the events")?;
    say!("{}", render_load(&loaded.ds));
    if let Some(k) = &loaded.kafka {
        say!("{}", render_kafka(k));
    }
    Ok(loaded)
}

/// A runtime for the asynchronous steps of a command (publication, webhook).
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}
