//! Command-line interface of `recsys-trainer`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, SolverKind, TrainingConfig};
use crate::gate::Verdict;
use crate::kafka_source::KafkaReport;
use crate::lifecycle::{self, RunLock};
use crate::nightly::{self, Loaded, Source};
use crate::notify::{self, RunReport};
use crate::pipeline::EvalReport;
use crate::split::Protocol;
use crate::{export, generate, pipeline, publish, schedule, train};

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
/// Exit code of a run whose model was promoted (`CURRENT` names it) but whose
/// publication (Redis lists, announcement) failed: re-publish with `models promote`.
pub const EXIT_PUBLISH_FAILED: i32 = 4;

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
    #[command(flatten)]
    pub log: common::cli::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check or print the configuration without running anything.
    #[command(subcommand)]
    Config(common::cli::ConfigCommand),
    /// Evaluate, fit on all data, write a model version and promote it if the gate passes.
    Train(TrainArgs),
    /// Run an offline protocol and print popular / ALS / ALS + re-rank.
    Evaluate(EvaluateArgs),
    /// Write synthetic RetailRocket-format data of any size.
    Generate(GenerateArgs),
    /// Inspect and promote model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Train on a cron schedule until SIGINT/SIGTERM, with /metrics.
    Schedule(ScheduleArgs),
    /// Write the event log (an archive's events, then the topic's newer ones) as
    /// a new archive directory with its kafka_offsets.json.
    Archive(ArchiveArgs),
    /// Profile a data directory before training: rows, users, items, clock,
    /// rejections with examples, count distributions, what the split keeps.
    /// Exits 1 when `train` would refuse the data.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Directory with events.csv (and optionally item_properties_part*.csv, category_tree.csv).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print the profile as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

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
    fn apply(&self, t: &mut TrainingConfig) {
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

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The new archive directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The previous archive (with kafka_offsets.json); its item properties and
    /// category tree are copied.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
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
    fn source(&self) -> anyhow::Result<Source> {
        if self.data_dir.is_none() && !self.from_kafka {
            bail!("no data source: give --data-dir DIR, --from-kafka, or both");
        }
        Ok(Source { data_dir: self.data_dir.clone(), from_kafka: self.from_kafka })
    }
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Root of the model versions (default: `[model] artifacts_dir`).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Train once at start, then follow the cron expression.
    #[arg(long)]
    pub run_now: bool,
    /// One run (data check, retries, webhook), then exit: 0 promoted or
    /// skipped for lack of data, 3 rejected, 4 publication failed, 1 failed.
    /// For an external scheduler; no /metrics.
    #[arg(long, conflicts_with = "run_now")]
    pub once: bool,
    /// Move CURRENT only: no Redis lists, no announcement.
    #[arg(long)]
    pub no_publish: bool,
    /// Address of /metrics and /health (default: `[trainer.schedule] metrics_listen`).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub hyper: HyperArgs,
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

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Move CURRENT only: no Redis lists, no announcement (also `[trainer.publish] enabled`).
    #[arg(long)]
    pub no_publish: bool,
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
    #[command(flatten)]
    pub source: SourceArgs,
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
    /// Serve VERSION (rollback or manual promotion); it is verified first,
    /// then published again (Redis lists, announcement) unless --no-publish.
    Promote {
        version: String,
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
        #[arg(long)]
        no_publish: bool,
    },
}

fn settings(cli: &Cli, hyper: Option<&HyperArgs>) -> anyhow::Result<config::Settings> {
    let mut s = config::load_settings(cli.config.as_deref()).context("reading configuration")?;
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

fn load_data(src: &Source, s: &config::Settings, show: bool) -> anyhow::Result<Loaded> {
    let loaded = nightly::load_source(src, s, show).context("loading the events")?;
    say!("{}", render_load(&loaded.ds));
    if let Some(k) = &loaded.kafka {
        say!("{}", render_kafka(k));
    }
    Ok(loaded)
}

/// What the topic contributed and what was refused.
pub fn render_kafka(k: &KafkaReport) -> String {
    let mut s = String::new();
    for p in &k.partitions {
        let _ = writeln!(
            s,
            "kafka {} partition {}: offsets [{}, {}), {} messages",
            k.topic, p.partition, p.start, p.end, p.messages
        );
    }
    let reasons: Vec<String> = k.invalid.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let _ = writeln!(
        s,
        "kafka {}: {} messages, {} invalid{}",
        k.topic,
        k.messages,
        k.invalid_total(),
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
    );
    for r in &k.samples {
        let _ = writeln!(s, "  invalid at partition {} offset {}: {}", r.partition, r.offset, r.reason);
    }
    s
}

/// A runtime for the asynchronous steps of a command (publication, webhook).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print_publication(r: &publish::PublishReport) {
    sayln!(
        "published {}: popular ({} items), {} category lists, {} similar lists, {} stale lists deleted, \
         announced at partition {} offset {}",
        r.version,
        r.popular_items,
        r.category_lists,
        r.similar_lists,
        r.stale_deleted,
        r.announcement_partition,
        r.announcement_offset
    );
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
            "loaded {}: {} rows, {} kept, {} rejected, {} duplicate{}{}",
            r.file.display(),
            r.rows,
            r.kept,
            r.rejected_rows(),
            r.duplicate,
            if r.skipped > 0 { format!(", {} other properties skipped", r.skipped) } else { String::new() },
            r.clock.map_or(String::new(), |c| format!("; clock: {c}"))
        );
        s.push_str(&r.rejected.render("  "));
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

/// The webhook from a synchronous command (best effort, never fails it).
fn notify_blocking(s: &config::Settings, report: &RunReport) {
    if s.trainer.webhook.url.is_empty() {
        return;
    }
    match runtime() {
        Ok(rt) => rt.block_on(notify::notify_logged(&s.trainer.webhook, report)),
        Err(e) => tracing::warn!(error = %e, "webhook not sent"),
    }
}

/// The evaluation table and the gate's verdict of a `train` run.
fn print_train(out: &train::TrainOutcome) {
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
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

/// Prints the report of `schedule --once` and maps its outcome to the exit code.
fn once_exit(r: &RunReport) -> i32 {
    match r.outcome {
        notify::Outcome::Failed => {
            eprint!("error: {}", r.text);
            // A version means training worked and the publication failed.
            if r.version.is_some() {
                EXIT_PUBLISH_FAILED
            } else {
                1
            }
        }
        notify::Outcome::Rejected => {
            say!("{}", r.text);
            EXIT_REJECTED
        }
        // Not enough data yet is an answer, not an error: the message says so.
        notify::Outcome::Promoted | notify::Outcome::Skipped => {
            say!("{}", r.text);
            0
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let show = !cli.quiet;
    match &cli.command {
        Command::Config(cmd) => {
            let loaded =
                settings(&cli, None).and_then(|s| common::config::Effective::of(&s).map_err(anyhow::Error::msg));
            Ok(common::cli::run_config_command(*cmd, "recsys-trainer", cli.config.as_deref(), loaded).into())
        }
        Command::Evaluate(a) => {
            let s = settings(&cli, Some(&a.hyper))?;
            let loaded = load_data(&a.source.source()?, &s, show)?;
            let ds = &loaded.ds;
            if let Some(dir) = &a.export_split {
                export::export_split(ds, &s.training, dir)
                    .with_context(|| format!("exporting split to {}", dir.display()))?;
            }
            let report = pipeline::evaluate(ds, &s.training, a.repeats, loaded.load_s, show);
            say!("{}", render_report(&report));
            if let Some(p) = &a.json {
                write_json(p, &report)?;
            }
            if report.test_users == 0 {
                // A table of zeros is not an evaluation.
                let split = crate::split::split(
                    s.training.protocol,
                    &ds.events.events,
                    &s.training.weights,
                    &s.training.filter,
                    &s.training.split,
                );
                bail!("{}", crate::inspect::no_test_users(&split.filter, &s.training));
            }
            Ok(0)
        }
        Command::Inspect(a) => {
            let mut s = config::load_settings(cli.config.as_deref()).context("reading configuration")?;
            a.load.apply(&mut s.training);
            s.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
            let opts = s.training.load_options();
            let ds = crate::load::read_dir(&a.data_dir, &opts)
                .with_context(|| format!("reading {}", a.data_dir.display()))?;
            let p = crate::inspect::profile(&ds, &s.training, &opts);
            if a.json {
                sayln!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                say!("{}", crate::inspect::render(&p));
            }
            if let Some(first) = p.problems.first() {
                bail!("the data would not train: {first}");
            }
            Ok(0)
        }
        Command::Train(a) => {
            let mut s = settings(&cli, Some(&a.hyper))?;
            if a.no_publish {
                s.trainer.publish.enabled = false;
            }
            let root = a.artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
            let src = a.source.source()?;
            let started = Instant::now();
            let lock = RunLock::acquire(&root).context("taking the run lock")?;
            let trained = load_data(&src, &s, show).and_then(|loaded| {
                nightly::train_loaded(&s, loaded, &root, a.version.clone(), a.force, show).context("training")
            });
            let r = match trained {
                Ok(r) => r,
                Err(e) => {
                    let report = nightly::failure_report(started.elapsed(), format!("{e:#}"));
                    notify_blocking(&s, &report);
                    return Err(e);
                }
            };
            print_train(&r.train);
            for v in &r.pruned {
                sayln!("pruned model version {v} (keep_versions = {})", s.trainer.keep_versions);
            }
            if let Some(p) = &a.json {
                write_json(p, &r.train)?;
            }
            if !r.train.promoted {
                sayln!(
                    "REJECTED: {} keeps serving {}; the new version is kept for inspection (use --force or `models promote` to override)",
                    root.display(),
                    r.train.served_before.as_deref().unwrap_or("nothing")
                );
                notify_blocking(&s, &nightly::report_of(&s, &r, started.elapsed(), false, None));
                return Ok(EXIT_REJECTED);
            }
            sayln!("promoted: {} now serves {}", root.join(model::artifact::CURRENT_FILE).display(), r.train.version);
            let rt = runtime()?;
            let published = rt.block_on(nightly::publish_if_enabled(&s, &root, &r.train.version));
            drop(lock);
            match published {
                Ok(p) => {
                    match &p {
                        Some(p) => print_publication(p),
                        None => sayln!("publication off: Redis and Kafka untouched"),
                    }
                    let report = nightly::report_of(&s, &r, started.elapsed(), p.is_some(), None);
                    rt.block_on(notify::notify_logged(&s.trainer.webhook, &report));
                    Ok(0)
                }
                Err(e) => {
                    let msg = schedule::publication_failed(&r.train.version, &e);
                    eprintln!("error: {msg}");
                    let mut report = nightly::report_of(&s, &r, started.elapsed(), false, Some(msg));
                    report.outcome = notify::Outcome::Failed;
                    rt.block_on(notify::notify_logged(&s.trainer.webhook, &report.with_text()));
                    Ok(EXIT_PUBLISH_FAILED)
                }
            }
        }
        Command::Schedule(a) => {
            let mut s = settings(&cli, Some(&a.hyper))?;
            if a.no_publish {
                s.trainer.publish.enabled = false;
            }
            let opts = schedule::ScheduleOptions {
                source: a.source.source()?,
                artifacts_dir: a.artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone()),
                run_now: a.run_now,
                show_progress: false,
            };
            if a.once {
                let report = runtime()?
                    .block_on(schedule::run_once(s, opts, common::shutdown_signal()))
                    .context("schedule --once")?;
                return Ok(once_exit(&report));
            }
            let addr = a.metrics_listen.unwrap_or(s.trainer.schedule.metrics_listen);
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} for /metrics"))?;
                // No trigger other than the cron expression and --run-now.
                let (_tx, rx) = tokio::sync::mpsc::channel(1);
                schedule::run(s, opts, listener, rx, common::shutdown_signal()).await.context("schedule")?;
                anyhow::Ok(())
            })?;
            Ok(0)
        }
        Command::Archive(a) => {
            let s = settings(&cli, None)?;
            let src = Source { data_dir: a.data_dir.clone(), from_kafka: true };
            let loaded = load_data(&src, &s, show)?;
            let r = crate::archive::write_archive(&loaded, a.data_dir.as_deref(), &a.out)
                .with_context(|| format!("writing the archive {}", a.out.display()))?;
            sayln!(
                "archived {} events to {} (topic offsets {:?}; copied {:?})",
                r.events,
                r.dir.display(),
                r.offsets.offsets,
                r.copied
            );
            Ok(0)
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
                ModelsCommand::Promote { version, artifacts_dir, no_publish } => {
                    let mut s = s;
                    if *no_publish {
                        s.trainer.publish.enabled = false;
                    }
                    let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
                    if !root.join(version).is_dir() {
                        bail!("no model version {version} under {}", root.display());
                    }
                    let _lock = RunLock::acquire(&root).context("taking the run lock")?;
                    lifecycle::set_current(&root, version).with_context(|| format!("promoting {version}"))?;
                    sayln!("{} now serves {version}", root.display());
                    match runtime()?.block_on(nightly::publish_if_enabled(&s, &root, version)) {
                        Ok(Some(p)) => print_publication(&p),
                        Ok(None) => sayln!("publication off: Redis and Kafka untouched"),
                        Err(e) => {
                            eprintln!("error: {}", schedule::publication_failed(version, &e));
                            return Ok(EXIT_PUBLISH_FAILED);
                        }
                    }
                    Ok(0)
                }
            }
        }
    }
}
