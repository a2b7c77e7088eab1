//! The command-line pieces every binary shares: `--log-format` and the
//! `config check` / `config print` subcommands.

use std::path::{Path, PathBuf};

use crate::config::Effective;
use crate::telemetry::LogFormat;

/// Flags every binary takes (flatten them into its `Cli`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines as text or as one JSON object per line (stderr).
    #[arg(long, global = true, value_enum, env = crate::telemetry::LOG_FORMAT_ENV, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `config …`: check or show the configuration without starting anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration (file and RECSYS__ variables) as
    /// the process would at start; print "ok" and the file used. Exits 1
    /// naming the key at fault.
    Check,
    /// Print the effective configuration (file, then RECSYS__ variables, then
    /// defaults for what neither sets) as TOML, secrets masked.
    Print,
}

/// Runs `cmd` for `program` over what its loader made of the configuration
/// (`file` as given on the command line, resolved like the loader does);
/// returns the exit code (0 valid, 1 not).
pub fn run_config_command(
    cmd: ConfigCommand,
    program: &str,
    file: Option<&Path>,
    loaded: anyhow::Result<Effective>,
) -> u8 {
    let used = describe_file(crate::config::config_file(file, None));
    match (cmd, loaded) {
        (_, Err(e)) => {
            eprintln!("error: {program}: configuration ({used}): {e:#}");
            1
        }
        (ConfigCommand::Check, Ok(_)) => {
            println!("ok: {program} configuration ({used})");
            0
        }
        (ConfigCommand::Print, Ok(e)) => {
            println!("# {program}: effective configuration ({used}; RECSYS__ variables applied; secrets masked)");
            print!("{}", e.render_masked());
            0
        }
    }
}

fn describe_file(f: Option<PathBuf>) -> String {
    match f {
        Some(f) => format!("file {}", f.display()),
        None => format!("no file: {} is absent, defaults apply", crate::config::DEFAULT_CONFIG_FILE),
    }
}
