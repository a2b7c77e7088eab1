//! recsys-updater: parses the command line and configuration, then runs the
//! updater pipeline and (when `[tracking] enabled`) the tracking task beside it,
//! with one shutdown for both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Check the user histories in Redis against the events topic: every
    /// event the topic holds counted exactly once (prints the events lost and
    /// applied twice; exits 1 when either is not 0). Run it when the updaters
    /// have caught up, e.g. after a failover or a restore.
    Verify,
    /// Move the live rankings' and the A/B counters' keys a version before the
    /// Redis Cluster layout wrote (`trending:1h`, `stats:als:v1`, …) to their
    /// current names. Run it with the old version stopped, before the new one
    /// starts; one Redis node ([redis] url). Exits 1 when a key exists under
    /// both names (both are left).
    UpgradeKeys {
        /// Print what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What the updater and its tracking task would load, as one TOML document.
fn effective(file: Option<&std::path::Path>) -> anyhow::Result<common::config::Effective> {
    let u = common::config::effective::<updater::Settings>(file).context("[updater] and the sections it reads")?;
    let t = common::config::effective::<tracking::config::Settings>(file).context("[tracking]")?;
    Ok(u.merge(t))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (file, config) = match cli.command {
        Some(Command::Config(cmd)) => (cli.config.clone(), Some(cmd)),
        Some(Command::Verify | Command::UpgradeKeys { .. }) | None => (None, None),
    };
    common::process::Main::new("recsys-updater", &ALLOC, cli.log)
        .config(file.as_deref(), config, effective)
        .run(|| real_main(cli))
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = cli.config.as_deref();
    let mut settings: updater::Settings =
        common::config::load_settings(file, None).context("loading the configuration")?;
    if let Some(Command::UpgradeKeys { dry_run }) = cli.command {
        let mut conn = common::redis_conn::connect(&settings.redis).await.context("connecting to Redis")?;
        let keys = settings.redis.keys();
        let done = updater::upgrade::upgrade_keys(&mut conn, &keys, dry_run).await?;
        let verb = if dry_run { "would move" } else { "moved" };
        for (old, new) in &done.moved {
            println!("{verb} {old} -> {new}");
        }
        for (old, new) in &done.kept {
            println!("kept {old}: {new} exists already (both left; keep one by hand)");
        }
        if done.old_index_deleted {
            println!(
                "{} {}stats_index (replaced by {})",
                if dry_run { "would delete" } else { "deleted" },
                keys.prefix(),
                keys.stats_index()
            );
        }
        if done.nothing() {
            println!("nothing to upgrade under prefix {:?}: no key of the previous layout", keys.prefix());
        } else {
            println!("{} keys {verb}, {} kept", done.moved.len(), done.kept.len());
        }
        return Ok(if done.kept.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if matches!(cli.command, Some(Command::Verify)) {
        let report = updater::verify::verify(&settings).await?;
        print!("{}", report.render());
        return Ok(if report.exact() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if let Some(l) = cli.metrics_listen {
        settings.updater.metrics_listen = l;
    }
    let tracking_settings: tracking::config::Settings =
        common::config::load_settings(file, None).context("loading the [tracking] configuration")?;
    common::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
    let listener = tokio::net::TcpListener::bind(settings.updater.metrics_listen)
        .await
        .with_context(|| format!("binding {}", settings.updater.metrics_listen))?;
    let mut deps = updater::Deps::connect(&settings, listener).await?;

    // One stop for both tasks: a signal, or either task ending (an error in
    // one must not leave the process half-working), or a panic of the
    // tracking task (the process then exits non-zero with its name).
    let stop = common::Shutdown::new().with_drain_deadline(Duration::from_secs(settings.updater.drain_deadline_s));
    stop.on_signals();
    let tracking_task = if tracking_settings.tracking.enabled {
        let tdeps = tracking::Deps::connect(&tracking_settings).await.context("starting the tracking task")?;
        deps.extra_metrics.push(tdeps.metrics.registry().clone());
        Some(stop.spawn_essential("tracking", tracking::run(tracking_settings, tdeps, stop.cancelled())))
    } else {
        tracing::info!("tracking disabled ([tracking] enabled = false)");
        None
    };
    let result = updater::run(settings, deps, stop.cancelled()).await;
    let drained = stop.drain().await;
    if let Some(t) = tracking_task {
        match t.join().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("tracking")),
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    }
    result?;
    drained.into_result()?;
    Ok(ExitCode::SUCCESS)
}
