//! `recsys-fuzz [TARGET…] [--seconds N] [--seed S]`: fuzzes each target for a
//! bounded time, prints runs and runs/s, writes every input that panicked to
//! `fuzz/crashes/` and exits 1 if there was one. See the library docs.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fuzz::Target;

#[derive(Debug, Parser)]
#[command(name = "recsys-fuzz", about = "Mutation fuzzing of recsys's parsers of untrusted input")]
struct Cli {
    /// Targets (events-json, csv, manifest); all when none is given.
    targets: Vec<String>,
    /// Time budget per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Most inputs per target.
    #[arg(long, default_value_t = u64::MAX)]
    max_runs: u64,
    /// Random seed (a run is reproducible from its seed and the corpus).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let targets: Vec<Target> = if cli.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        match cli.targets.iter().map(|t| Target::from_name(t).ok_or(t)).collect::<Result<Vec<_>, _>>() {
            Ok(t) => t,
            Err(bad) => {
                eprintln!("error: unknown target {bad:?} (events-json, csv, manifest)");
                return ExitCode::FAILURE;
            }
        }
    };
    // Panics are the findings: report them in the summary, not as noise.
    std::panic::set_hook(Box::new(|_| {}));
    let crash_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes");
    let mut failed = false;
    for t in targets {
        let r = match fuzz::fuzz(t, Duration::from_secs(cli.seconds), cli.max_runs, cli.seed) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", t.name());
                return ExitCode::FAILURE;
            }
        };
        println!(
            "{:<12} {:>9} runs in {:>6.1} s ({:>8.0}/s), {} crash(es), corpus {}",
            t.name(),
            r.runs,
            r.seconds,
            r.runs as f64 / r.seconds.max(1e-9),
            r.crashes.len(),
            fuzz::corpus_dir(t).display()
        );
        for (input, msg) in r.crashes.iter().take(20) {
            failed = true;
            let _ = std::fs::create_dir_all(&crash_dir);
            let name = format!("{}-{:016x}", t.name(), fxhash(input));
            let path = crash_dir.join(name);
            let _ = std::fs::write(&path, input);
            println!("  PANIC {msg:?}: input written to {}", path.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3))
}
