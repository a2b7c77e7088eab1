//! Command-line interface of `recsys-trainer`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, SolverKind, TrainingConfig};
use crate::gate::Verdict;
use crate::pipeline::EvalReport;
use crate::split::Protocol;
use crate::{export, generate, load, pipeline, train};

/// Writes to stdout; a closed pipe (`recsys-trainer … | head`) ends the process
/// quietly instead of panicking, as command-line tools do.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

macro_rules! say {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! sayln {
    ($($t:tt)*) => { emit(&format!("{}\n", format!($($t)*))) };
}

/// Exit code of a run whose model the gate rejected (it is kept, not served).
pub const EXIT_REJECTED: i32 = 3;

/// Offline trainer of recsys: RetailRocket event log → implicit ALS → evaluated,
/// versioned model.
#[derive(Debug, Parser)]
#[command(name = "recsys-trainer", version, about)]
pub struct Cli {
    /// Configuration file (default: configs/recsys.toml when present).
    #[arg(long, global = true, env = "RECSYS_CONFIG")]
    pub config: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate, fit on all data, write a model version and promote it if the gate passes.
    Train(TrainArgs),
    /// Run an offline protocol and print popular / ALS / ALS + re-rank.
    Evaluate(EvaluateArgs),
    /// Write synthetic RetailRocket-format data of any size.
    Generate(GenerateArgs),
    /// Inspect and promote model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
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
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Directory with events.csv (and optionally item_properties_part*.csv, category_tree.csv).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Root of the model versions (default: `artifacts_dir` of the `[model]` config section).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Name of the new version (default: UTC time).
    #[arg(long)]
    pub version: Option<String>,
    /// Promote even if the gate rejects the model.
    #[arg(long)]
    pub force: bool,
    /// Also write the outcome (verdict and evaluation) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Fit this many times with consecutive seeds and report the spread.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Write the split (train.csv, test.csv, params.json) for external comparisons.
    #[arg(long)]
    pub export_split: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of events.
    #[arg(long)]
    pub events: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List versions, marking the served one.
    List {
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
    },
    /// Serve VERSION (rollback or manual promotion); it is verified first.
    Promote {
        version: String,
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
    },
}

fn settings(cli: &Cli, hyper: Option<&HyperArgs>) -> anyhow::Result<config::Settings> {
    let mut s = config::load_settings(cli.config.as_deref()).context("reading configuration")?;
    if let Some(h) = hyper {
        h.apply(&mut s.training);
    }
    s.training.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
    if s.training.threads > 0 {
        // Fails only if a pool already exists (tests); the existing one is then used.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(s.training.threads).build_global();
    }
    Ok(s)
}

fn load_data(dir: &Path, cfg: &TrainingConfig, show: bool) -> anyhow::Result<(crate::data::Dataset, f64)> {
    let t = Instant::now();
    let spinner = pipeline::spinner("loading", show);
    let ds = load::load_dir(dir, &cfg.load_options()).with_context(|| format!("loading {}", dir.display()));
    spinner.finish_and_clear();
    let ds = ds?;
    say!("{}", render_load(&ds));
    Ok((ds, t.elapsed().as_secs_f64()))
}

/// What each file contributed and what was rejected, one line per file.
pub fn render_load(ds: &crate::data::Dataset) -> String {
    let mut reports = vec![&ds.events.report];
    if let Some(p) = &ds.properties {
        reports.extend(p.reports.iter());
    }
    let mut s = String::new();
    for r in reports {
        let _ = writeln!(
            s,
            "loaded {}: {} rows, {} kept; rejected {} empty field, {} unknown event, {} bad timestamp, {} duplicate",
            r.file.display(),
            r.rows,
            r.kept,
            r.null_field,
            r.unknown_event,
            r.bad_timestamp,
            r.duplicate
        );
    }
    match &ds.tree {
        Some(t) => {
            let _ = writeln!(s, "category tree: {} categories", t.parent.len());
        }
        None => s.push_str("category tree: none\n"),
    }
    if ds.properties.is_none() {
        s.push_str("item properties: none (no categories: the re-rank is a no-op)\n");
    }
    s
}

/// The one-screen table of an evaluation.
pub fn render_report(r: &EvalReport) -> String {
    let keys = ["recall@20", "precision@5", "ndcg@10", "hit_rate@5", "coverage@5", "novelty@5", "diversity@5"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "protocol {}: {} users x {} items, {} train pairs; {} test users ({} with targets, {} cold), {} target pairs",
        r.protocol, r.users, r.items, r.train_nnz, r.test_users, r.target_users, r.cold_test_users, r.target_pairs
    );
    let _ = write!(s, "{:<16}", "model");
    for k in keys {
        let _ = write!(s, "{k:>12}");
    }
    s.push('\n');
    let rerank_name = if r.rerank_applied { "als_rerank" } else { "als_rerank*" };
    for (name, m) in [
        ("popular", &r.popular),
        ("popular_conv", &r.popular_conversions),
        ("als", &r.als),
        (rerank_name, &r.als_rerank),
    ] {
        let _ = write!(s, "{name:<16}");
        for k in keys {
            let _ = write!(s, "{:>12.4}", m.get(k));
        }
        s.push('\n');
    }
    for (name, sp) in [("als", &r.spread_als), ("als_rerank", &r.spread_als_rerank)] {
        if let Some(sp) = sp {
            let _ = write!(s, "{:<16}", format!("{name} ±sd"));
            for k in keys {
                let _ = write!(s, "{:>12.4}", sp.std.get(k).copied().unwrap_or(f64::NAN));
            }
            let _ = writeln!(s, "   (seeds {:?})", sp.seeds);
        }
    }
    if !r.rerank_applied {
        s.push_str("* no item categories known: the re-rank is a no-op\n");
    }
    let t = &r.timings;
    let _ = writeln!(
        s,
        "timings: load {:.2}s, split {:.2}s, fit {:.2}s, recommend {:.2}s ({:.0} users/s), metrics {:.2}s, total {:.2}s",
        t.load_s, t.split_s, t.fit_s, t.recommend_s, t.recommend_users_per_s, t.metrics_s, t.total_s
    );
    s
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let show = !cli.quiet;
    match &cli.command {
        Command::Evaluate(a) => {
            let s = settings(&cli, Some(&a.hyper))?;
            let (ds, load_s) = load_data(&a.data_dir, &s.training, show)?;
            if let Some(dir) = &a.export_split {
                export::export_split(&ds, &s.training, dir)
                    .with_context(|| format!("exporting split to {}", dir.display()))?;
            }
            let report = pipeline::evaluate(&ds, &s.training, a.repeats, load_s, show);
            say!("{}", render_report(&report));
            if let Some(p) = &a.json {
                write_json(p, &report)?;
            }
            Ok(0)
        }
        Command::Train(a) => {
            let s = settings(&cli, Some(&a.hyper))?;
            let root = a.artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
            let (ds, load_s) = load_data(&a.data_dir, &s.training, show)?;
            let opts = train::TrainOptions {
                artifacts_dir: root.clone(),
                version: a.version.clone(),
                force: a.force,
                source: a.data_dir.display().to_string(),
                kafka_offsets: Vec::new(),
                show_progress: show,
            };
            let out = train::train(&ds, &s.training, &opts, load_s).context("training")?;
            say!("{}", render_report(&out.report));
            match &out.verdict {
                Verdict::NoServedModel => sayln!("gate: no model served yet"),
                Verdict::Passed { comparisons } | Verdict::Rejected { comparisons } => {
                    for c in comparisons {
                        sayln!(
                            "gate: {:<12} served {:.4} candidate {:.4} ({:+.1} %) {}",
                            c.metric,
                            c.served,
                            c.candidate,
                            100.0 * c.relative_change,
                            if c.ok { "ok" } else { "TOO LOW" }
                        );
                    }
                }
                Verdict::Incomparable { reason } => sayln!("gate: cannot compare: {reason}"),
            }
            sayln!("model {} written to {}", out.version, out.path.display());
            if let Some(p) = &a.json {
                write_json(p, &out)?;
            }
            if out.promoted {
                sayln!("promoted: {} now serves {}", root.join(model::artifact::CURRENT_FILE).display(), out.version);
                Ok(0)
            } else {
                sayln!(
                    "REJECTED: {} keeps serving {}; the new version is kept for inspection (use --force or `models promote` to override)",
                    root.display(),
                    out.served_before.as_deref().unwrap_or("nothing")
                );
                Ok(EXIT_REJECTED)
            }
        }
        Command::Generate(a) => {
            let cfg = generate::GenerateConfig::new(a.events, a.seed);
            let pb = pipeline::progress_bar(a.events, "generate", show);
            let report =
                generate::generate(&cfg, &a.out, Some(&pb)).with_context(|| format!("writing {}", a.out.display()))?;
            pb.finish_and_clear();
            sayln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(0)
        }
        Command::Models(m) => {
            let s = settings(&cli, None)?;
            match m {
                ModelsCommand::List { artifacts_dir } => {
                    let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
                    let current = model::artifact::current_version(&root)?;
                    for v in model::artifact::list_versions(&root)? {
                        let m = model::artifact::read_manifest(&root.join(&v));
                        let mark = if current.as_deref() == Some(v.as_str()) { "*" } else { " " };
                        match m {
                            Ok(m) => {
                                let metrics = m
                                    .evaluation
                                    .as_ref()
                                    .map(|e| {
                                        e.metrics
                                            .iter()
                                            .map(|(k, v)| format!("{k}={v:.4}"))
                                            .collect::<Vec<_>>()
                                            .join(" ")
                                    })
                                    .unwrap_or_default();
                                sayln!(
                                    "{mark} {v}  created {}  users {} items {} f {}  {metrics}",
                                    m.created_at,
                                    m.counts.users,
                                    m.counts.items,
                                    m.counts.factors
                                );
                            }
                            Err(e) => sayln!("{mark} {v}  unreadable: {e}"),
                        }
                    }
                    Ok(0)
                }
                ModelsCommand::Promote { version, artifacts_dir } => {
                    let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
                    if !root.join(version).is_dir() {
                        bail!("no model version {version} under {}", root.display());
                    }
                    model::artifact::set_current(&root, version).with_context(|| format!("promoting {version}"))?;
                    sayln!("{} now serves {version}", root.display());
                    Ok(0)
                }
            }
        }
    }
}
