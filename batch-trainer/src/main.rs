//! `recsys-trainer`: parses the command line and hands it to the library
//! (which answers `config check|print` itself and makes its own runtimes).

use std::process::ExitCode;

use clap::Parser;

// Counted so /metrics can tell live heap from what the allocator retains.
#[global_allocator]
static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
    common::memory::CountingAlloc::new(std::alloc::System);

fn main() -> ExitCode {
    let cli = batch_trainer::cli::Cli::parse();
    let mut start = common::process::Main::new("recsys-trainer", &ALLOC, cli.log);
    // `warn`: the commands print their own results; `RUST_LOG=info` shows more.
    start.default_log_filter = "warn";
    start.run_blocking(|| {
        let code = batch_trainer::cli::run(cli)?;
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    })
}
