//! recsys-ingest: parses the command line and configuration, then calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ingest::replay::{Pace, ReplayOptions};

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

#[derive(Debug, Parser)]
#[command(name = "recsys-ingest", version, about = "Storefront events -> Kafka (HTTP API and CSV replay)")]
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
        /// Send at most this many lines per second.
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
    },
    /// Check or print the configuration without starting anything.
    #[command(subcommand)]
    Config(common::cli::ConfigCommand),
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
        Command::Replay { file, rate, max: _, speedup, quiet, columns, time_unit } => {
            if let Some(c) = columns {
                settings.ingest.replay_columns = c;
            }
            if let Some(t) = time_unit {
                settings.ingest.replay_time_unit = t;
            }
            let pace = match (rate, speedup) {
                (Some(r), _) if r > 0.0 && r.is_finite() => Pace::Rate(r),
                (_, Some(x)) if x > 0.0 && x.is_finite() => Pace::Speedup(x),
                (None, None) => Pace::Max,
                _ => anyhow::bail!("--rate and --speedup must be positive"),
            };
            ingest::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
            settings.ingest.message_timeout_ms = settings.ingest.replay_message_timeout_ms;
            let producer = ingest::kafka::producer(&settings)?;
            let opts = ReplayOptions { file, pace, progress: !quiet };
            let s = ingest::replay::replay(&settings, &producer, &opts).await?;
            println!(
                "lines {}, sent {}, rejected {} (to {}), failed {}, in {:.2} s ({:.0} messages/s)",
                s.lines,
                s.sent,
                s.rejected,
                settings.kafka.topic(schemas::topics::EVENTS_DLQ),
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
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        // Answered by `Main` before the runtime starts.
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}
