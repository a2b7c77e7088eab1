//! `recsys-trainer schedule`: trains on the cron expression until SIGINT /
//! SIGTERM with `/metrics`, or once (`--once`) for an external scheduler.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::args::{runtime, settings, HyperArgs, SourceArgs};
use super::output::{EXIT_PUBLISH_FAILED, EXIT_REJECTED};
use crate::notify::{Outcome, RunReport};
use crate::schedule;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Root of the model versions (default: `[model] artifacts_dir`).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Train once at start, then follow the cron expression.
    #[arg(long)]
    pub run_now: bool,
    /// One run (data check, retries, webhook), then exit: 0 promoted or
    /// skipped for lack of data, 3 rejected, 4 publication failed, 1 failed.
    /// For an external scheduler; no /metrics.
    #[arg(long, conflicts_with = "run_now")]
    pub once: bool,
    /// Move CURRENT only: no Redis lists, no announcement.
    #[arg(long)]
    pub no_publish: bool,
    /// Address of /metrics and /health (default: `[trainer.schedule] metrics_listen`).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

pub(super) fn run(a: &ScheduleArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let mut s = settings(config, Some(&a.hyper))?;
    if a.no_publish {
        s.trainer.publish.enabled = false;
    }
    let opts = schedule::ScheduleOptions {
        source: a.source.source()?,
        artifacts_dir: a.artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone()),
        run_now: a.run_now,
        show_progress: false,
    };
    if a.once {
        let report =
            runtime()?.block_on(schedule::run_once(s, opts, common::shutdown_signal())).context("schedule --once")?;
        return Ok(once_exit(&report));
    }
    let addr = a.metrics_listen.unwrap_or(s.trainer.schedule.metrics_listen);
    runtime()?.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr} for /metrics"))?;
        // No trigger other than the cron expression and --run-now.
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        schedule::run(s, opts, listener, rx, common::shutdown_signal()).await.context("schedule")?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// Prints the report of `schedule --once` and maps its outcome to the exit code.
fn once_exit(r: &RunReport) -> i32 {
    match r.outcome {
        Outcome::Failed => {
            eprint!("error: {}", r.text);
            // A version means training worked and the publication failed.
            if r.version.is_some() {
                EXIT_PUBLISH_FAILED
            } else {
                1
            }
        }
        Outcome::Rejected => {
            say!("{}", r.text);
            EXIT_REJECTED
        }
        // Not enough data yet is an answer, not an error: the message says so.
        Outcome::Promoted | Outcome::Skipped => {
            say!("{}", r.text);
            0
        }
    }
}
