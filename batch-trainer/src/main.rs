//! `recsys-trainer`: parses the command line, starts logging, runs.

use clap::Parser;

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

fn main() {
    common::memory::install(&ALLOC);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = batch_trainer::cli::Cli::parse();
    match batch_trainer::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
