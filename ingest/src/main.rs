//! recsys-ingest: parses the command line and configuration, then calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ingest::replay::{Pace, ReplayOptions, ReplaySummary};
use ingest::replay_items::ItemsOptions;

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

#[derive(Debug, Parser)]
#[command(
    name = "recsys-ingest",
    version,
    about = "Storefront events and catalog changes -> Kafka (HTTP API and CSV replay)"
)]
struct Cli {
    /// Configuration file (default: $RECSYS_CONFIG, else configs/recsys.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    log: common::cli::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve POST /v1/events, /health and /metrics (the default).
    Serve {
        /// Address to bind (overrides ingest.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Replay a RetailRocket events.csv into Kafka, keyed by user id.
    Replay {
        /// The events.csv file.
        file: PathBuf,
        #[command(flatten)]
        how: ReplayArgs,
    },
    /// Replay RetailRocket item_properties_part*.csv files into recsys.items,
    /// merged in time order, one message per field keyed `{item}/{field}`.
    ReplayItems {
        /// The item-property files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        how: ReplayArgs,
    },
    /// Check or print the configuration without starting anything.
    #[command(subcommand)]
    Config(common::cli::ConfigCommand),
}

/// How to replay, for both replays.
#[derive(Debug, Args)]
struct ReplayArgs {
    /// Send at most this many messages per second.
    #[arg(long, conflicts_with_all = ["max", "speedup"])]
    rate: Option<f64>,
    /// Send as fast as the broker acknowledges (the default).
    #[arg(long, conflicts_with = "speedup")]
    max: bool,
    /// Replay in event time, X times faster than it happened.
    #[arg(long)]
    speedup: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Column names of the file, as `user_id=customer,item_id=sku`
    /// (overrides ingest.replay_columns; the trainer takes the same).
    #[arg(long)]
    columns: Option<String>,
    /// Unit of the timestamp column: auto, s, ms, us, ns or iso
    /// (overrides ingest.replay_time_unit; auto detects it from the values).
    #[arg(long)]
    time_unit: Option<String>,
}

impl ReplayArgs {
    /// Applies the overrides to `settings` and returns the pace.
    fn apply(self, settings: &mut ingest::Settings) -> anyhow::Result<Pace> {
        if let Some(c) = self.columns {
            settings.ingest.replay_columns = c;
        }
        if let Some(t) = self.time_unit {
            settings.ingest.replay_time_unit = t;
        }
        settings.ingest.message_timeout_ms = settings.ingest.replay_message_timeout_ms;
        match (self.rate, self.speedup) {
            (Some(r), _) if r > 0.0 && r.is_finite() => Ok(Pace::Rate(r)),
            (_, Some(x)) if x > 0.0 && x.is_finite() => Ok(Pace::Speedup(x)),
            (None, None) => Ok(Pace::Max),
            _ => anyhow::bail!("--rate and --speedup must be positive"),
        }
    }
}

/// Prints a replay's counts; the exit code says whether every message was acknowledged.
fn report(s: ReplaySummary, what: &str, dlq: &str) -> ExitCode {
    println!(
        "lines {}, sent {} {what}, rejected {} (to {dlq}), failed {}, in {:.2} s ({:.0} messages/s)",
        s.lines,
        s.sent,
        s.rejected,
        s.failed,
        s.elapsed.as_secs_f64(),
        s.events_per_second()
    );
    if let Some(clock) = s.clock {
        println!("timestamps read as {clock}");
    }
    let rejections = s.render_rejections();
    if !rejections.is_empty() {
        println!("rejections:\n{rejections}");
    }
    if let Some(e) = s.first_error {
        eprintln!("error: {} messages not acknowledged (first: {e})", s.failed);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (file, config) = match cli.command {
        Some(Command::Config(cmd)) => (cli.config.clone(), Some(cmd)),
        _ => (None, None),
    };
    common::process::Main::new("recsys-ingest", &ALLOC, cli.log)
        .config(file.as_deref(), config, common::config::effective::<ingest::Settings>)
        .run(|| real_main(cli))
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings: ingest::Settings = common::config::load_settings(cli.config.as_deref(), None)?;
    let command = cli.command.unwrap_or(Command::Serve { listen: None });
    match command {
        Command::Serve { listen } => {
            if let Some(l) = listen {
                settings.ingest.listen = l;
            }
            for (topic, outcome) in ingest::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await? {
                tracing::info!(%topic, ?outcome, "topic");
            }
            let producer = ingest::kafka::producer(&settings)?;
            let listener = tokio::net::TcpListener::bind(settings.ingest.listen).await?;
            ingest::run(settings, listener, producer, ingest::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { file, how } => {
            let progress = !how.quiet;
            let pace = how.apply(&mut settings)?;
            ingest::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
            let producer = ingest::kafka::producer(&settings)?;
            let opts = ReplayOptions { file, pace, progress };
            let s = ingest::replay::replay(&settings, &producer, &opts).await?;
            Ok(report(s, "events", &settings.kafka.topic(schemas::topics::EVENTS_DLQ)))
        }
        Command::ReplayItems { files, how } => {
            let progress = !how.quiet;
            let pace = how.apply(&mut settings)?;
            ingest::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
            let producer = ingest::kafka::producer(&settings)?;
            let opts = ItemsOptions { files, pace, progress };
            let s = ingest::replay_items::replay_items(&settings, &producer, &opts).await?;
            Ok(report(s, "item field messages", &settings.kafka.topic(schemas::topics::EVENTS_DLQ)))
        }
        // Answered by `Main` before the runtime starts.
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}
