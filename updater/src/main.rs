//! recsys-updater: parses the command line and configuration, then runs the
//! updater pipeline and (when `[tracking] enabled`) the tracking task beside it,
//! with one shutdown for both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

#[derive(Debug, Parser)]
#[command(name = "recsys-updater", version, about = "Kafka events -> ALS fold-in -> top-N lists in Redis")]
struct Cli {
    /// Configuration file (default: $RECSYS_CONFIG, else configs/recsys.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address of /metrics and /health (overrides updater.metrics_listen).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    log: common::cli::LogArgs,
    /// Without a subcommand the updater runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check or print the configuration ([updater] and the sections it reads,
    /// [tracking]) without starting anything.
    #[command(subcommand)]
    Config(common::cli::ConfigCommand),
}

/// What the updater and its tracking task would load, as one TOML document.
fn effective(file: Option<&std::path::Path>) -> anyhow::Result<common::config::Effective> {
    let u = updater::config::load_settings(file).context("[updater] and the sections it reads")?;
    let t = tracking::config::load_settings(file).context("[tracking]")?;
    let (u, t) = (common::config::Effective::of(&u), common::config::Effective::of(&t));
    Ok(u.map_err(anyhow::Error::msg)?.merge(t.map_err(anyhow::Error::msg)?))
}

fn main() -> ExitCode {
    common::memory::install(&ALLOC);
    let cli = Cli::parse();
    common::telemetry::init(cli.log.log_format);
    if let Some(Command::Config(cmd)) = cli.command {
        return ExitCode::from(common::cli::run_config_command(
            cmd,
            "recsys-updater",
            cli.config.as_deref(),
            effective(cli.config.as_deref()),
        ));
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut settings = updater::config::load_settings(cli.config.as_deref()).context("loading the configuration")?;
    if let Some(l) = cli.metrics_listen {
        settings.updater.metrics_listen = l;
    }
    let tracking_settings =
        tracking::config::load_settings(cli.config.as_deref()).context("loading the [tracking] configuration")?;
    common::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
    let listener = tokio::net::TcpListener::bind(settings.updater.metrics_listen)
        .await
        .with_context(|| format!("binding {}", settings.updater.metrics_listen))?;
    let mut deps = updater::Deps::connect(&settings, listener).await?;

    // One stop switch for both tasks: a signal, or either task ending (an
    // error in one must not leave the process half-working).
    let stop = Arc::new(tokio::sync::watch::channel(false).0);
    let stopped = |stop: &Arc<tokio::sync::watch::Sender<bool>>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // A panic of the tracking task stops the updater too (and the process
    // exits non-zero) rather than leaving it running without attribution.
    let tasks = common::tasks::Supervisor::new();
    tokio::spawn({
        let (stop, failed) = (stop.clone(), tasks.failed());
        async move {
            tokio::select! {
                () = common::shutdown_signal() => {}
                e = failed => tracing::error!(error = %e, "stopping the updater"),
            }
            stop.send_replace(true);
        }
    });
    let tracking_task = if tracking_settings.tracking.enabled {
        let tdeps = tracking::Deps::connect(&tracking_settings).await.context("starting the tracking task")?;
        deps.extra_metrics.push(tdeps.metrics.registry().clone());
        let (stop, until) = (stop.clone(), stopped(&stop));
        Some(tasks.spawn("tracking", async move {
            let r = tracking::run(tracking_settings, tdeps, until).await;
            stop.send_replace(true);
            r
        }))
    } else {
        tracing::info!("tracking disabled ([tracking] enabled = false)");
        None
    };
    let result = updater::run(settings, deps, stopped(&stop)).await;
    stop.send_replace(true);
    if let Some(t) = tracking_task {
        match t.join().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("tracking")),
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    result
}
