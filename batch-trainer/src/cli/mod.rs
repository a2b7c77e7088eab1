//! Command-line interface of `recsys-trainer`: [`Cli`] and the dispatch to one
//! module per subcommand.
//!
//! - `args`: the flags several subcommands share (source, load, hyper-parameters)
//!   and what they set up (settings, the loaded data, a runtime).
//! - `output`: stdout, exit codes, the load summary, JSON files.
//! - [`train`], [`evaluate`], [`inspect`], [`generate`], [`models`],
//!   [`schedule`], [`archive`]: one subcommand each; `config` is answered here.
//! - [`report`]: the HTML page of `evaluate --report` (inline CSS and SVG).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// First: its macros (`say!`, `sayln!`) are visible to the modules declared after it.
#[macro_use]
mod output;

pub mod archive;
mod args;
pub mod evaluate;
pub mod generate;
pub mod inspect;
pub mod models;
pub mod report;
pub mod schedule;
pub mod train;

pub use archive::ArchiveArgs;
pub use args::{HyperArgs, LoadArgs, SourceArgs};
pub use evaluate::{render_report, EvaluateArgs};
pub use generate::GenerateArgs;
pub use inspect::InspectArgs;
pub use models::ModelsCommand;
pub use output::{render_kafka, render_load, EXIT_PUBLISH_FAILED, EXIT_REJECTED};
pub use schedule::ScheduleArgs;
pub use train::TrainArgs;

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
    /// Run an offline protocol and print popular / ALS / ALS + re-rank
    /// (--report DIR: also an HTML page with Recall@k / NDCG@k curves).
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

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config.as_deref();
    let show = !cli.quiet;
    match &cli.command {
        Command::Config(cmd) => {
            let loaded = args::settings(config, None)
                .and_then(|s| common::config::Effective::of(&s).map_err(anyhow::Error::msg));
            Ok(common::cli::run_config_command(*cmd, "recsys-trainer", config, loaded).into())
        }
        Command::Train(a) => train::run(a, config, show),
        Command::Evaluate(a) => evaluate::run(a, config, show),
        Command::Inspect(a) => inspect::run(a, config),
        Command::Generate(a) => generate::run(a, show),
        Command::Models(m) => models::run(m, config),
        Command::Schedule(a) => schedule::run(a, config),
        Command::Archive(a) => archive::run(a, config, show),
    }
}
