//! One training run as `train` and `schedule` do it: load (CSV, topic, or an
//! archive plus the topic's newer part) → evaluate, fit, write, gate, promote
//! → prune → publish → report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::data::{Dataset, LoadReport};
use crate::gate::Verdict;
use crate::kafka_source::{self, ArchiveOffsets, KafkaReadError, KafkaReport, KafkaSource};
use crate::lifecycle::{self, LifecycleError};
use crate::load::{self, LoadError};
use crate::notify::{MetricRow, Outcome, RunReport};
use crate::pipeline;
use crate::publish::{self, PublishError, PublishReport};
use crate::train::{self, TrainError, TrainOptions, TrainOutcome};

/// Where the events come from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A RetailRocket-format directory (events.csv, optional item properties
    /// and category tree).
    pub data_dir: Option<PathBuf>,
    /// Read `recsys.events` (after the archive's offsets when `data_dir` is given).
    pub from_kafka: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no data source: give --data-dir, --from-kafka, or both")]
    NoSource,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading the event topic: {0}")]
    Kafka(#[from] KafkaReadError),
    #[error(
        "{dir} is used with --from-kafka but has no {file}: it cannot be told which topic events the archive already \
         holds (write {{\"topic\": \"{topic}\", \"offsets\": {{}}}} if the archive is older than the topic)",
        file = kafka_source::ARCHIVE_OFFSETS_FILE
    )]
    ArchiveWithoutOffsets { dir: PathBuf, topic: String },
    #[error("{dir}/{file} is about topic {found:?}, not {expected:?}", file = kafka_source::ARCHIVE_OFFSETS_FILE)]
    ArchiveTopic { dir: PathBuf, found: String, expected: String },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

/// What the data set was made of.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub ds: Dataset,
    pub load_s: f64,
    /// For the manifest: `DIR`, `kafka:TOPIC` or `DIR + kafka:TOPIC`.
    pub description: String,
    pub csv: Option<LoadReport>,
    pub kafka: Option<KafkaReport>,
}

/// Loads the source. The archive's events come first (they are older), then
/// the topic's, merged by time (see [`kafka_source`]).
pub fn load_source(src: &Source, s: &Settings, show: bool) -> Result<Loaded, RunError> {
    let t = Instant::now();
    let opts = s.training.load_options();
    let topic_base = schemas::topics::EVENTS;
    let mut loaded = Loaded::default();
    let mut start = std::collections::BTreeMap::new();
    if let Some(dir) = &src.data_dir {
        if src.from_kafka {
            // Checked before the (long) CSV load.
            let a = ArchiveOffsets::read(dir)?
                .ok_or_else(|| RunError::ArchiveWithoutOffsets { dir: dir.clone(), topic: topic_base.into() })?;
            if a.topic != topic_base {
                return Err(RunError::ArchiveTopic { dir: dir.clone(), found: a.topic, expected: topic_base.into() });
            }
            start = a.offsets;
        }
        let spinner = pipeline::spinner("loading", show);
        let ds = load::load_dir(dir, &opts);
        spinner.finish_and_clear();
        loaded.ds = ds?;
        loaded.csv = Some(loaded.ds.events.report.clone());
        loaded.description = dir.display().to_string();
    }
    if src.from_kafka {
        let source = KafkaSource {
            brokers: s.kafka.brokers.clone(),
            topic: s.kafka.topic(topic_base),
            request_timeout: Duration::from_millis(s.trainer.kafka_request_timeout_ms),
            idle_timeout: Duration::from_millis(s.trainer.kafka_idle_timeout_ms),
        };
        let pb = pipeline::progress_bar(0, "kafka", show);
        let k = kafka_source::read_events(&source, &start, &opts, &mut loaded.ds.names, &pb)?;
        let desc = format!("kafka:{}", source.topic);
        loaded.description =
            if loaded.description.is_empty() { desc } else { format!("{} + {desc}", loaded.description) };
        if loaded.csv.is_some() {
            // Archive then topic: the archive holds the older offsets.
            let r = &mut loaded.ds.events.report;
            let kr = &k.log.report;
            r.file = loaded.description.clone().into();
            r.rows += kr.rows;
            r.bad_timestamp += kr.bad_timestamp;
            r.duplicate += kr.duplicate;
            r.kept += kr.kept;
            loaded.ds.events.events.extend_from_slice(&k.log.events);
        } else {
            loaded.ds.events = k.log;
        }
        loaded.kafka = Some(k.report);
    }
    if src.data_dir.is_none() && !src.from_kafka {
        return Err(RunError::NoSource);
    }
    loaded.load_s = t.elapsed().as_secs_f64();
    Ok(loaded)
}

/// What one run did.
#[derive(Debug)]
pub struct RunResult {
    pub loaded: Loaded,
    pub train: TrainOutcome,
    /// Versions deleted by retention.
    pub pruned: Vec<String>,
}

/// Load, train (writes the version and moves `CURRENT` when it passes the
/// gate), prune. CPU-bound and blocking; the caller holds the [`lifecycle::RunLock`].
pub fn train_run(
    s: &Settings,
    src: &Source,
    root: &Path,
    version: Option<String>,
    force: bool,
    show: bool,
) -> Result<RunResult, RunError> {
    let loaded = load_source(src, s, show)?;
    train_loaded(s, loaded, root, version, force, show)
}

/// [`train_run`] on data already loaded.
pub fn train_loaded(
    s: &Settings,
    loaded: Loaded,
    root: &Path,
    version: Option<String>,
    force: bool,
    show: bool,
) -> Result<RunResult, RunError> {
    let opts = TrainOptions {
        artifacts_dir: root.to_path_buf(),
        version,
        force,
        source: loaded.description.clone(),
        kafka_offsets: loaded.kafka.as_ref().map(KafkaReport::offsets).unwrap_or_default(),
        show_progress: show,
    };
    let out = train::train(&loaded.ds, &s.training, &opts, loaded.load_s)?;
    let pruned = lifecycle::prune(root, s.trainer.keep_versions)?;
    Ok(RunResult { loaded, train: out, pruned })
}

/// Publishes `version` when publication is on: `Ok(None)` when it is off.
pub async fn publish_if_enabled(
    s: &Settings,
    root: &Path,
    version: &str,
) -> Result<Option<PublishReport>, PublishError> {
    if !s.trainer.publish.enabled {
        tracing::info!(version, "publication is off: CURRENT moved, Redis and Kafka untouched");
        return Ok(None);
    }
    publish::publish_version(s, root, version).await.map(Some)
}

/// The metric rows of a run: the gate's comparisons when there were any,
/// else the candidate's key metrics.
pub fn metric_rows(s: &Settings, out: &TrainOutcome) -> Vec<MetricRow> {
    match &out.verdict {
        Verdict::Passed { comparisons } | Verdict::Rejected { comparisons } => comparisons
            .iter()
            .map(|c| MetricRow {
                metric: c.metric.clone(),
                candidate: c.candidate,
                served: Some(c.served),
                relative_change: Some(c.relative_change),
                ok: Some(c.ok),
            })
            .collect(),
        Verdict::NoServedModel | Verdict::Incomparable { .. } => {
            let served = out.report.served(s.training.rerank.enabled);
            s.training
                .gate
                .metrics
                .iter()
                .map(|m| MetricRow {
                    metric: m.clone(),
                    candidate: served.get(m),
                    served: None,
                    relative_change: None,
                    ok: None,
                })
                .collect()
        }
    }
}

/// The report of a run that trained (promoted or rejected).
pub fn report_of(s: &Settings, r: &RunResult, duration: Duration, published: bool, error: Option<String>) -> RunReport {
    RunReport {
        source: "recsys-trainer",
        outcome: if r.train.promoted { Outcome::Promoted } else { Outcome::Rejected },
        version: Some(r.train.version.clone()),
        served_before: r.train.served_before.clone(),
        duration_s: duration.as_secs_f64(),
        rows: r.loaded.ds.events.events.len() as u64,
        metrics: metric_rows(s, &r.train),
        error,
        published,
        text: String::new(),
    }
    .with_text()
}

/// The report of a run that failed.
pub fn failure_report(duration: Duration, error: String) -> RunReport {
    RunReport {
        source: "recsys-trainer",
        outcome: Outcome::Failed,
        version: None,
        served_before: None,
        duration_s: duration.as_secs_f64(),
        rows: 0,
        metrics: Vec::new(),
        error: Some(error),
        published: false,
        text: String::new(),
    }
    .with_text()
}
