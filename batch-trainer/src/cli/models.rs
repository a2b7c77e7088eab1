//! `recsys-trainer models list|promote|compare`: the versions on disk, serving
//! one of them (rollback or manual promotion) with its publication, and the
//! gate's decision between two of them from their manifests.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::args::{runtime, settings};
use super::evaluate::command_line;
use super::output::{print_publication, EXIT_PUBLISH_FAILED, EXIT_REJECTED};
use super::report;
use crate::config::Settings;
use crate::lifecycle::{self, RunLock};
use crate::{gate, nightly, schedule};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List versions, marking the served one.
    List {
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
        /// Print a JSON array instead: per version its name, `current`, creation
        /// time, parent, counts, data range, parameters and recorded evaluation
        /// (protocol, metrics, target users), or `error` when unreadable.
        #[arg(long)]
        json: bool,
    },
    /// Serve VERSION (rollback or manual promotion); it is verified first,
    /// then published again (Redis lists, announcement) unless --no-publish.
    Promote {
        version: String,
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
        #[arg(long)]
        no_publish: bool,
    },
    /// Apply the gate of `train` to two versions' recorded evaluations (nothing
    /// is retrained): CANDIDATE against SERVED (default: the version CURRENT
    /// names). Prints each key metric of both and the decision; exits 3 when
    /// the gate would not promote the candidate (rejected or incomparable).
    Compare {
        candidate: String,
        served: Option<String>,
        #[arg(long)]
        artifacts_dir: Option<PathBuf>,
        /// Print the decision as JSON instead: the record `train` keeps in the
        /// manifest's `gate` (decision, reason, both sides per metric).
        #[arg(long)]
        json: bool,
        /// Also write DIR/index.html: the gate section, both versions' recorded
        /// metrics, data and parameters.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
}

pub(super) fn run(m: &ModelsCommand, config: Option<&Path>) -> anyhow::Result<i32> {
    let s = settings(config, None)?;
    match m {
        ModelsCommand::List { artifacts_dir, json } => {
            let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
            if *json {
                sayln!("{}", serde_json::to_string_pretty(&list_json(&root)?)?);
            } else {
                list(&root)?;
            }
            Ok(0)
        }
        ModelsCommand::Promote { version, artifacts_dir, no_publish } => {
            let mut s = s;
            if *no_publish {
                s.trainer.publish.enabled = false;
            }
            let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
            promote(&s, &root, version)
        }
        ModelsCommand::Compare { candidate, served, artifacts_dir, json, report } => {
            let root = artifacts_dir.clone().unwrap_or(s.model.artifacts_dir.clone());
            compare(&s, &root, candidate, served.as_deref(), *json, report.as_deref())
        }
    }
}

/// The manifest of `version`, the error naming the version when it is absent or unreadable.
fn manifest_of(root: &Path, version: &str) -> anyhow::Result<model::artifact::Manifest> {
    if !root.join(version).is_dir() {
        bail!("no model version {version} under {}", root.display());
    }
    model::artifact::read_manifest(&root.join(version))
        .with_context(|| format!("reading the manifest of model version {version}"))
}

/// `models compare`: the decision `train` would record for `candidate` if
/// `served` were served, with the gate settings in effect now.
fn compare(
    s: &Settings,
    root: &Path,
    candidate: &str,
    served: Option<&str>,
    json: bool,
    report_dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let served = match served {
        Some(v) => v.to_owned(),
        None => model::artifact::current_version(root)?.with_context(|| {
            format!("nothing is served under {} (no CURRENT): name the version to compare against", root.display())
        })?,
    };
    let a = manifest_of(root, candidate)?;
    let b = manifest_of(root, &served)?;
    let Some(a_eval) = a.evaluation.as_ref() else {
        bail!("model version {candidate} has no recorded evaluation: there is nothing to compare (train records one)");
    };
    let side = Some(gate::Served { version: &served, evaluation: b.evaluation.as_ref() });
    let verdict = gate::judge_served(a_eval, side, &s.training.gate);
    let record = gate::record(&verdict, a_eval, side, &s.training.gate, false);
    if json {
        sayln!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print_comparison(candidate, &record);
        if let Some(g) = &a.gate {
            sayln!(
                "recorded when {candidate} was trained: {} against {}",
                g.decision.as_str(),
                g.served_version.as_deref().unwrap_or("nothing served")
            );
        }
    }
    if let Some(dir) = report_dir {
        let page = report::ComparisonPage {
            candidate: &a,
            served: &b,
            record: &record,
            command: &command_line(),
            generated_at: &report::generated_now()?,
        };
        let path = report::write_comparison(dir, &page)?;
        // stdout stays one JSON document with --json.
        if json {
            eprintln!("report written to {}", path.display());
        } else {
            sayln!("report written to {}", path.display());
        }
    }
    Ok(if verdict.passed() { 0 } else { EXIT_REJECTED })
}

/// The comparison as a table and the decision with its reason.
fn print_comparison(candidate: &str, r: &gate::GateRecord) {
    let served = r.served_version.as_deref().unwrap_or("-");
    sayln!("{candidate} (candidate) against {served} (served), allowed drop {:.1} %", 100.0 * r.max_relative_drop);
    sayln!("{:<14}{:>12}{:>12}{:>10}  check", "metric", "candidate", "served", "change");
    let v = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    for m in &r.metrics {
        sayln!(
            "{:<14}{:>12}{:>12}{:>10}  {}",
            m.metric,
            v(m.candidate),
            v(m.served),
            m.relative_change.map(|c| format!("{:+.1} %", 100.0 * c)).unwrap_or_else(|| "-".into()),
            match m.ok {
                Some(true) => "ok",
                Some(false) => "TOO LOW",
                None => "not compared",
            }
        );
    }
    sayln!("verdict: {}: {}", r.decision.as_str(), r.reason);
}

/// One line per version; `*` marks the served one.
fn list(root: &Path) -> anyhow::Result<()> {
    let current = model::artifact::current_version(root)?;
    for v in model::artifact::list_versions(root)? {
        let m = model::artifact::read_manifest(&root.join(&v));
        let mark = if current.as_deref() == Some(v.as_str()) { "*" } else { " " };
        match m {
            Ok(m) => {
                let metrics = m
                    .evaluation
                    .as_ref()
                    .map(|e| e.metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                sayln!(
                    "{mark} {v}  created {}  users {} items {} f {}  {metrics}",
                    m.created_at,
                    m.counts.users,
                    m.counts.items,
                    m.counts.factors
                );
            }
            Err(e) => sayln!("{mark} {v}  unreadable: {e}"),
        }
    }
    Ok(())
}

/// The versions as JSON, oldest name first like [`list`]; the evaluation
/// without its full report (that stays in the manifest).
fn list_json(root: &Path) -> anyhow::Result<serde_json::Value> {
    let current = model::artifact::current_version(root)?;
    let rows = model::artifact::list_versions(root)?
        .into_iter()
        .map(|v| {
            let is_current = current.as_deref() == Some(v.as_str());
            match model::artifact::read_manifest(&root.join(&v)) {
                Ok(m) => serde_json::json!({
                    "version": v,
                    "current": is_current,
                    "created_at": m.created_at,
                    "parent_version": m.parent_version,
                    "counts": m.counts,
                    "data": m.data,
                    "params": m.params,
                    "evaluation": m.evaluation.as_ref().map(|e| serde_json::json!({
                        "protocol": e.protocol,
                        "metrics": e.metrics,
                        "target_users": e.target_users,
                    })),
                }),
                Err(e) => serde_json::json!({ "version": v, "current": is_current, "error": e.to_string() }),
            }
        })
        .collect();
    Ok(serde_json::Value::Array(rows))
}

/// Moves `CURRENT` to `version` (verified first), then publishes it.
fn promote(s: &Settings, root: &Path, version: &str) -> anyhow::Result<i32> {
    if !root.join(version).is_dir() {
        bail!("no model version {version} under {}", root.display());
    }
    let _lock = RunLock::acquire(root).context("taking the run lock")?;
    lifecycle::set_current(root, version).with_context(|| format!("promoting {version}"))?;
    sayln!("{} now serves {version}", root.display());
    match runtime()?.block_on(nightly::publish_if_enabled(s, root, version)) {
        Ok(Some(p)) => print_publication(&p),
        Ok(None) => sayln!("publication off: Redis and Kafka untouched"),
        Err(e) => {
            eprintln!("error: {}", schedule::publication_failed(version, &e));
            return Ok(EXIT_PUBLISH_FAILED);
        }
    }
    Ok(0)
}
