//! `recsys-trainer`: parses the command line, starts logging, runs.

use clap::Parser;

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

fn main() {
    common::memory::install(&ALLOC);
    let cli = batch_trainer::cli::Cli::parse();
    // `warn`: the commands print their own results; `RUST_LOG=info` shows more.
    common::telemetry::init_with_default(cli.log.log_format, "warn");
    match batch_trainer::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
