//! What every binary's `main` does, once: count the heap, start logging,
//! answer `config check` / `config print` without starting anything, run the
//! process on a runtime, and turn its outcome into an exit code
//! (`error: {e:#}` on stderr and 1 for an error).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{ConfigCommand, LogArgs};
use crate::config::Effective;
use crate::memory::HeapStats;

/// What the process loads, for `config check` / `config print`.
pub type EffectiveFn = fn(Option<&Path>) -> anyhow::Result<Effective>;

/// One binary's start.
pub struct Main<'a> {
    /// The binary's name in messages (`recsys-serving`).
    pub program: &'static str,
    /// The binary's `#[global_allocator]`, whose live bytes `/metrics` shows.
    pub alloc: &'static dyn HeapStats,
    /// `--log-format`.
    pub log: LogArgs,
    /// The `RUST_LOG` default (`info`; the trainer prints its own results and says `warn`).
    pub default_log_filter: &'static str,
    /// `--config`.
    pub config_file: Option<&'a Path>,
    /// `config check|print` when the command line asked for it, and what
    /// the process would load.
    pub config_command: Option<(ConfigCommand, EffectiveFn)>,
}

impl std::fmt::Debug for Main<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Main")
            .field("program", &self.program)
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

impl<'a> Main<'a> {
    pub fn new(program: &'static str, alloc: &'static dyn HeapStats, log: LogArgs) -> Main<'a> {
        Main { program, alloc, log, default_log_filter: "info", config_file: None, config_command: None }
    }

    /// The configuration file named on the command line, and the `config`
    /// subcommand if it was given.
    pub fn config(mut self, file: Option<&'a Path>, command: Option<ConfigCommand>, effective: EffectiveFn) -> Self {
        self.config_file = file;
        self.config_command = command.map(|c| (c, effective));
        self
    }

    /// Starts logging; answers the `config` subcommand if asked (`Some`).
    fn start(&self) -> Option<ExitCode> {
        crate::memory::install(self.alloc);
        crate::telemetry::init_with_default(self.log.log_format, self.default_log_filter);
        self.config_command.map(|(cmd, effective)| {
            let loaded = effective(self.config_file);
            ExitCode::from(crate::cli::run_config_command(cmd, self.program, self.config_file, loaded))
        })
    }

    /// Runs `body` on a multi-thread runtime (after the steps above).
    pub fn run<F>(self, body: impl FnOnce() -> F) -> ExitCode
    where
        F: Future<Output = anyhow::Result<ExitCode>>,
    {
        if let Some(code) = self.start() {
            return code;
        }
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: starting the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        exit_code(rt.block_on(body()))
    }

    /// Runs `body` on this thread (a command line that makes its own runtimes).
    pub fn run_blocking(self, body: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
        match self.start() {
            Some(code) => code,
            None => exit_code(body()),
        }
    }
}

/// `Ok(code)` as is; an error printed as `error: {e:#}`, exit 1.
pub fn exit_code(r: anyhow::Result<ExitCode>) -> ExitCode {
    r.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
