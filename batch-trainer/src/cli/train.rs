//! `recsys-trainer train`: evaluate, fit on all data, write a model version,
//! promote it if the gate passes, publish it, notify the webhook.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::args::{load_data, runtime, settings, HyperArgs, SourceArgs};
use super::evaluate::{command_line, render_report};
use super::output::{print_publication, render_kafka, render_load, write_json, EXIT_PUBLISH_FAILED, EXIT_REJECTED};
use super::report;
use crate::config::Settings;
use crate::gate::Verdict;
use crate::lifecycle::RunLock;
use crate::nightly::{self, RunResult};
use crate::notify::{self, RunReport};
use crate::schedule;
use crate::train::TrainOutcome;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Move CURRENT only: no Redis lists, no announcement (also `[trainer.publish] enabled`).
    #[arg(long)]
    pub no_publish: bool,
    /// Root of the model versions (default: `artifacts_dir` of the `[model]` config section).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Name of the new version (default: UTC time).
    #[arg(long)]
    pub version: Option<String>,
    /// Promote even if the gate rejects the model.
    #[arg(long)]
    pub force: bool,
    /// Also write the outcome (verdict and evaluation) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write DIR/index.html for the new version: the gate's decision
    /// (candidate against served per key metric, the allowed drop, the verdict
    /// and why), then the evaluation page of `evaluate --report` without its curves.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

pub(super) fn run(a: &TrainArgs, config: Option<&Path>, show: bool) -> anyhow::Result<i32> {
    let mut s = settings(config, Some(&a.hyper))?;
    if a.no_publish {
        s.trainer.publish.enabled = false;
    }
    let root = a.artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
    let src = a.source.source()?;
    let started = Instant::now();
    let lock = RunLock::acquire(&root).context("taking the run lock")?;
    let trained = load_data(&src, &s, show).and_then(|loaded| {
        nightly::train_loaded(&s, loaded, &root, a.version.clone(), a.force, show).context("training")
    });
    let r = match trained {
        Ok(r) => r,
        Err(e) => {
            notify_blocking(&s, &nightly::failure_report(started.elapsed(), format!("{e:#}")));
            return Err(e);
        }
    };
    print_train(&r.train);
    for v in &r.pruned {
        sayln!("pruned model version {v} (keep_versions = {})", s.trainer.keep_versions);
    }
    if let Some(p) = &a.json {
        write_json(p, &r.train)?;
    }
    if let Some(dir) = &a.report {
        let path = write_page(dir, &s, &r)?;
        sayln!("report written to {}", path.display());
    }
    if !r.train.promoted {
        sayln!(
            "REJECTED: {} keeps serving {}; the new version is kept for inspection (use --force or `models promote` to override)",
            root.display(),
            r.train.served_before.as_deref().unwrap_or("nothing")
        );
        notify_blocking(&s, &nightly::report_of(&s, &r, started.elapsed(), false, None));
        return Ok(EXIT_REJECTED);
    }
    sayln!("promoted: {} now serves {}", root.join(model::artifact::CURRENT_FILE).display(), r.train.version);
    publish(&s, &root, &r, started, lock)
}

/// Publishes the promoted version (the run lock is held until it is done),
/// then the webhook with the outcome.
fn publish(s: &Settings, root: &Path, r: &RunResult, started: Instant, lock: RunLock) -> anyhow::Result<i32> {
    let rt = runtime()?;
    let published = rt.block_on(nightly::publish_if_enabled(s, root, &r.train.version));
    drop(lock);
    match published {
        Ok(p) => {
            match &p {
                Some(p) => print_publication(p),
                None => sayln!("publication off: Redis and Kafka untouched"),
            }
            let report = nightly::report_of(s, r, started.elapsed(), p.is_some(), None);
            rt.block_on(notify::notify_logged(&s.trainer.webhook, &report));
            Ok(0)
        }
        Err(e) => {
            let msg = schedule::publication_failed(&r.train.version, &e);
            eprintln!("error: {msg}");
            let mut report = nightly::report_of(s, r, started.elapsed(), false, Some(msg));
            report.outcome = notify::Outcome::Failed;
            rt.block_on(notify::notify_logged(&s.trainer.webhook, &report.with_text()));
            Ok(EXIT_PUBLISH_FAILED)
        }
    }
}

/// The page of `--report`: written whatever the gate decided, before any
/// publication, so a rejected version has its page too.
fn write_page(dir: &Path, s: &Settings, r: &RunResult) -> anyhow::Result<PathBuf> {
    let mut load_summary = render_load(&r.loaded.ds);
    if let Some(k) = &r.loaded.kafka {
        load_summary.push_str(&render_kafka(k));
    }
    let page = report::PageInput {
        report: &r.train.report,
        training: &s.training,
        command: &command_line(),
        source: &r.loaded.description,
        load_summary: &load_summary,
        generated_at: &report::generated_now()?,
        search: r.train.search.as_ref().map(|record| report::SearchView { record, default: None }),
    };
    report::write_trained(dir, &page, &report::GateView { candidate: &r.train.version, record: &r.train.gate })
}

/// The webhook from a synchronous command (best effort, never fails it).
fn notify_blocking(s: &Settings, report: &RunReport) {
    if s.trainer.webhook.url.is_empty() {
        return;
    }
    match runtime() {
        Ok(rt) => rt.block_on(notify::notify_logged(&s.trainer.webhook, report)),
        Err(e) => tracing::warn!(error = %e, "webhook not sent"),
    }
}

/// The evaluation table and the gate's verdict of a `train` run.
fn print_train(out: &TrainOutcome) {
    say!("{}", render_report(&out.report));
    match &out.verdict {
        Verdict::NoServedModel => sayln!("gate: no model served yet"),
        Verdict::Passed { comparisons } | Verdict::Rejected { comparisons } => {
            for c in comparisons {
                sayln!(
                    "gate: {:<12} served {:.4} candidate {:.4} ({:+.1} %) {}",
                    c.metric,
                    c.served,
                    c.candidate,
                    100.0 * c.relative_change,
                    if c.ok { "ok" } else { "TOO LOW" }
                );
            }
        }
        Verdict::Incomparable { reason } => sayln!("gate: cannot compare: {reason}"),
    }
    sayln!("gate decision: {}: {}", out.gate.decision.as_str(), out.gate.reason);
    sayln!("model {} written to {}", out.version, out.path.display());
}
