//! recsys-updater: parses the command line and configuration, then calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "recsys-updater", version, about = "Kafka events -> ALS fold-in -> top-N lists in Redis")]
struct Cli {
    /// Configuration file (default: configs/recsys.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address of /metrics and /health (overrides updater.metrics_listen).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    common::telemetry::init();
    let cli = Cli::parse();
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
    common::kafka::ensure_topics(&settings.kafka, Duration::from_secs(10)).await?;
    let listener = tokio::net::TcpListener::bind(settings.updater.metrics_listen)
        .await
        .with_context(|| format!("binding {}", settings.updater.metrics_listen))?;
    let deps = updater::Deps::connect(&settings, listener).await?;
    updater::run(settings, deps, common::shutdown_signal()).await
}
