//! `recsys-trainer models list|promote`: the versions on disk, and serving
//! one of them (rollback or manual promotion) with its publication.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::args::{runtime, settings};
use super::output::{print_publication, EXIT_PUBLISH_FAILED};
use crate::config::Settings;
use crate::lifecycle::{self, RunLock};
use crate::{nightly, schedule};

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
    }
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
