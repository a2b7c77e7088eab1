//! `train`: evaluate, fit on everything, write a version, gate, promote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::artifact::{self, Artifact, ArtifactError, Counts, DataRange, Evaluation, Manifest, TopicOffset};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::TrainingConfig;
use crate::data::Dataset;
use crate::gate::{self, GateRecord, Verdict};
use crate::pipeline::{self, EvalReport};

/// Why a training run failed (a rejected model is not a failure: see
/// [`TrainOutcome::promoted`]).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("the served model {version} cannot be read, so the gate cannot compare against it: {source}")]
    ServedUnreadable { version: String, source: ArtifactError },
    #[error("no pairs left after filtering: nothing to train on")]
    Empty,
    /// The evaluation scored nobody: its metrics are zeros, and a gate that
    /// compared them (or promoted them on day one) would judge nothing.
    #[error("no model written: {0}, so the model cannot be evaluated or gated")]
    NoTestUsers(String),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error("report serialisation: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error("--version {0:?} is reserved: serving labels answers from the live popularity ranking with it (see docs/day-one.md); choose another name")]
    ReservedVersion(String),
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub artifacts_dir: PathBuf,
    /// Version name; default derived from the current UTC time.
    pub version: Option<String>,
    /// Promote even if the gate rejects or cannot compare.
    pub force: bool,
    /// Description of the data source for the manifest.
    pub source: String,
    /// Kafka positions the data ends at (empty for CSV).
    pub kafka_offsets: Vec<TopicOffset>,
    /// Where the catalog came from, for the manifest ([`artifact::DataRange::catalog`]).
    pub catalog: Option<String>,
    pub show_progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub version: String,
    pub path: PathBuf,
    pub verdict: Verdict,
    /// The decision as the manifest records it (both sides' numbers, the reason).
    pub gate: GateRecord,
    /// True when `CURRENT` now names this version.
    pub promoted: bool,
    pub served_before: Option<String>,
    pub report: EvalReport,
    /// The model search that chose the parameters (`[training.search] enabled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<model::artifact::SearchRecord>,
}

fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A fresh version name: UTC time to the second, with a counter if taken.
pub fn new_version_name(root: &Path, at: OffsetDateTime) -> String {
    let base = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let mut name = base.clone();
    let mut n = 1;
    while root.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// The evaluation recorded in the manifest: the served variant's metrics.
pub fn evaluation_of(report: &EvalReport, cfg: &TrainingConfig) -> Result<Evaluation, serde_json::Error> {
    Ok(Evaluation {
        protocol: report.protocol.to_owned(),
        metrics: report.served(cfg.rerank.enabled).0.clone(),
        target_users: report.target_users as u64,
        report: serde_json::to_value(report)?,
    })
}

/// Runs the whole pipeline on a loaded data set.
pub fn train(ds: &Dataset, cfg: &TrainingConfig, opts: &TrainOptions, load_s: f64) -> Result<TrainOutcome, TrainError> {
    let root = &opts.artifacts_dir;
    // Checked before any work: impressions and A/B counters of a trained model
    // must never merge with the live ranking's.
    if let Some(v) = opts.version.as_deref().filter(|v| *v == schemas::popularity::LIVE_POPULAR_VERSION) {
        return Err(TrainError::ReservedVersion(v.to_owned()));
    }
    // The search reads only the evaluation's training side; what it chooses is
    // then evaluated on the test split, fitted on everything and gated as usual.
    let searched = if cfg.search.enabled { Some(crate::search::run(ds, cfg, opts.show_progress)?) } else { None };
    if let Some(s) = &searched {
        tracing::info!("model search:\n{}", crate::search::render_trace(&s.record));
    }
    let cfg = searched.as_ref().map_or(cfg, |s| &s.config);
    let report = pipeline::evaluate(ds, cfg, 1, load_s, opts.show_progress);
    let full = pipeline::fit_full(ds, cfg, opts.show_progress);
    if full.indexed.matrix.nnz() == 0 {
        return Err(TrainError::Empty);
    }
    if report.test_users == 0 {
        return Err(TrainError::NoTestUsers(crate::inspect::why_no_test_users(ds, cfg)));
    }
    let served_before = artifact::current_version(root)?;
    let served_eval = match &served_before {
        Some(v) => Some(
            artifact::read_manifest(&root.join(v))
                .map_err(|source| TrainError::ServedUnreadable { version: v.clone(), source })?
                .evaluation,
        ),
        None => None,
    };
    let evaluation = evaluation_of(&report, cfg)?;
    let served = served_before
        .as_deref()
        .zip(served_eval.as_ref())
        .map(|(version, e)| gate::Served { version, evaluation: e.as_ref() });
    let verdict = gate::judge_served(&evaluation, served, &cfg.gate);
    // Recorded before the version is written: the manifest keeps the decision.
    let gate_record = gate::record(&verdict, &evaluation, served, &cfg.gate, opts.force);
    let now = now_utc();
    let version = match &opts.version {
        Some(v) => v.clone(),
        None => new_version_name(root, now),
    };
    let params = cfg.als_params();
    // Ids that are not plain numbers (from the topic) get their text back.
    let mut items = full.items;
    for (it, id) in items.iter_mut().zip(&full.indexed.item_ids) {
        if *id >= crate::data::NAMED_ID_BASE {
            it.id = ds.names.item_name(*id);
        }
    }
    let mut art = Artifact {
        manifest: Manifest {
            format: artifact::FORMAT_VERSION,
            version: version.clone(),
            created_at: now.format(&Rfc3339).unwrap_or_default(),
            parent_version: served_before.clone(),
            params: params.clone(),
            weights: cfg.weights,
            recency: full.recency,
            data: DataRange {
                source: opts.source.clone(),
                first_ts: full.first_ts,
                last_ts: full.last_ts,
                events: ds.events.events.len() as u64,
                catalog: opts.catalog.clone(),
            },
            counts: Counts {
                users: full.indexed.user_ids.len(),
                items: full.indexed.item_ids.len(),
                train_nnz: full.indexed.matrix.nnz(),
                factors: params.factors,
            },
            kafka_offsets: opts.kafka_offsets.clone(),
            evaluation: Some(evaluation),
            gate: Some(gate_record.clone()),
            search: searched.as_ref().map(|s| s.record.clone()),
            files: BTreeMap::new(),
        },
        user_ids: full.indexed.user_ids.iter().map(|u| ds.names.user_name(*u)).collect(),
        items,
        user_factors: full.model.user_factors,
        item_factors: full.model.item_factors,
        categories: full.categories,
        popular: full.popular,
    };
    let path = art.write(root)?;
    let promoted = verdict.passed() || opts.force;
    if promoted {
        // Also remembers the replaced version as PREVIOUS (kept by pruning).
        crate::lifecycle::set_current(root, &version)?;
    }
    Ok(TrainOutcome {
        version,
        path,
        verdict,
        gate: gate_record,
        promoted,
        served_before,
        report,
        search: searched.map(|s| s.record),
    })
}
