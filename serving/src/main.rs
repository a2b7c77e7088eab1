//! recsys-serving: parses the command line and configuration, then calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<mimalloc::MiMalloc> =
    common::memory::CountingAlloc::new(mimalloc::MiMalloc);

#[derive(Debug, Parser)]
#[command(name = "recsys-serving", version, about = "The recommendation API over Redis")]
struct Cli {
    /// Configuration file (default: $RECSYS_CONFIG, else configs/recsys.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to bind (overrides serving.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    log: common::cli::LogArgs,
    /// Without a subcommand the API is served.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check or print the configuration without starting anything.
    #[command(subcommand)]
    Config(common::cli::ConfigCommand),
}

fn main() -> ExitCode {
    common::memory::install(&ALLOC);
    let cli = Cli::parse();
    common::telemetry::init(cli.log.log_format);
    if let Some(Command::Config(cmd)) = cli.command {
        let loaded = serving::config::load_settings(cli.config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|s| common::config::Effective::of(&s).map_err(anyhow::Error::msg));
        return ExitCode::from(common::cli::run_config_command(cmd, "recsys-serving", cli.config.as_deref(), loaded));
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
    let mut settings = serving::config::load_settings(cli.config.as_deref())?;
    if let Some(l) = cli.listen {
        settings.serving.listen = l;
    }
    // Topics are normally created by ingest; creating the missing ones here too
    // means impressions are not lost when serving starts first. A broker that
    // is down is not fatal: the API serves without it.
    match common::kafka::ensure_topics(&settings.kafka, std::time::Duration::from_secs(5)).await {
        Ok(done) => tracing::debug!(?done, "topics"),
        Err(e) => tracing::warn!(error = %e, "cannot create topics; impressions wait for the broker"),
    }
    let listener = tokio::net::TcpListener::bind(settings.serving.listen).await?;
    let deps = serving::Deps::connect(&settings, listener)?;
    serving::run(settings, deps, serving::shutdown_signal()).await
}
