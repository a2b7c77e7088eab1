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
    let cli = Cli::parse();
    let (file, config) = match cli.command {
        Some(Command::Config(cmd)) => (cli.config.clone(), Some(cmd)),
        None => (None, None),
    };
    common::process::Main::new("recsys-serving", &ALLOC, cli.log)
        .config(file.as_deref(), config, common::config::effective::<serving::Settings>)
        .run(|| real_main(cli))
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut settings: serving::Settings = common::config::load_settings(cli.config.as_deref(), None)?;
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
    serving::run(settings, deps, serving::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
