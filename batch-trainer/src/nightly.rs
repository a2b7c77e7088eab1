//! One training run as `train` and `schedule` do it: load (CSV, topic, or an
//! archive plus the topic's newer part) → evaluate, fit, write, gate, promote
//! → prune → publish → report.
//!
//! A scheduled run ([`scheduled_run`]) first checks the loaded data against
//! `[trainer.schedule] min_events` / `min_users` and `[training.filter]`
//! ([`check_data`]): too little is a skipped run ("waiting for data"), not a
//! failure. The check reuses the load that training then uses, so it costs
//! one pass over the events in memory, not a second read of the source.

use std::collections::HashSet;
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
use crate::preprocess;
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
    /// Where the item categories and availability came from (`None`: no catalog).
    pub catalog: Option<String>,
    /// The catalog topic's read (`--from-kafka`; `None` when the topic does not exist).
    pub kafka_catalog: Option<KafkaReport>,
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
        if loaded.ds.properties.is_some() {
            loaded.catalog = Some(format!("{}/item_properties*.csv", dir.display()));
        }
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
        read_catalog(s, &mut loaded, show)?;
    }
    if src.data_dir.is_none() && !src.from_kafka {
        return Err(RunError::NoSource);
    }
    loaded.load_s = t.elapsed().as_secs_f64();
    Ok(loaded)
}

/// Adds the catalog topic's categories and availability to the data set's
/// (after the files' rows, if a directory gave some: each field's value is
/// then the latest by time from either source), so the category re-rank and
/// the unavailable-item rule work without item-properties files.
fn read_catalog(s: &Settings, loaded: &mut Loaded, show: bool) -> Result<(), RunError> {
    let source = KafkaSource {
        brokers: s.kafka.brokers.clone(),
        topic: s.kafka.topic(schemas::topics::ITEMS),
        request_timeout: Duration::from_millis(s.trainer.kafka_request_timeout_ms),
        idle_timeout: Duration::from_millis(s.trainer.kafka_idle_timeout_ms),
    };
    let pb = pipeline::progress_bar(0, "catalog", show);
    let Some(cat) = kafka_source::read_catalog(&source, &mut loaded.ds.names, &pb)? else { return Ok(()) };
    if cat.log.rows.is_empty() {
        loaded.kafka_catalog = Some(cat.report);
        return Ok(());
    }
    let desc = format!("kafka:{}", source.topic);
    loaded.catalog = Some(match loaded.catalog.take() {
        Some(files) => format!("{files} + {desc}"),
        None => desc,
    });
    match &mut loaded.ds.properties {
        Some(p) => {
            p.rows.extend_from_slice(&cat.log.rows);
            p.reports.extend(cat.log.reports);
        }
        None => loaded.ds.properties = Some(cat.log),
    }
    loaded.kafka_catalog = Some(cat.report);
    Ok(())
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
        catalog: loaded.catalog.clone(),
        show_progress: show,
    };
    let out = train::train(&loaded.ds, &s.training, &opts, loaded.load_s)?;
    let pruned = lifecycle::prune(root, s.trainer.keep_versions)?;
    Ok(RunResult { loaded, train: out, pruned })
}

/// The size of a loaded data set, as the schedule's minimums see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCounts {
    /// Events after cleaning.
    pub events: u64,
    /// Distinct users among them.
    pub users: u64,
    /// (user, item) pairs `[training.filter]` keeps; `None` when the minimums
    /// already failed (not computed).
    pub trainable_pairs: Option<u64>,
}

/// Not enough data to train on: what was seen and the operator's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub counts: DataCounts,
    /// `waiting for data: N events, M users in SOURCE, need K events and L users`.
    pub message: String,
    /// The data source (`kafka:TOPIC`, a directory, or both).
    pub source: String,
}

/// Whether `ds` is enough for a scheduled run: at least `min_events` events
/// from `min_users` users, and some pair left by `[training.filter]` (the
/// pairs the model is fitted on: with none, training would fail with "no
/// pairs left after filtering", so that is waiting for data too).
pub fn check_data(ds: &Dataset, s: &Settings, source: &str) -> Result<DataCounts, Waiting> {
    let sched = &s.trainer.schedule;
    let events = &ds.events.events;
    let users: HashSet<u64> = events.iter().map(|e| e.user).collect();
    let mut counts = DataCounts { events: events.len() as u64, users: users.len() as u64, trainable_pairs: None };
    let seen = format!("waiting for data: {} events, {} users in {source}", counts.events, counts.users);
    let need = format!("need {} events and {} users", sched.min_events, sched.min_users);
    let waiting = |counts, message| Waiting { counts, message, source: source.to_owned() };
    if counts.events < sched.min_events || counts.users < sched.min_users {
        return Err(waiting(counts, format!("{seen}, {need}")));
    }
    let (pairs, _) = preprocess::filter_pairs(preprocess::build_pairs(events, &s.training.weights), &s.training.filter);
    counts.trainable_pairs = Some(pairs.len() as u64);
    if pairs.is_empty() {
        let f = &s.training.filter;
        let message = format!(
            "{seen}, {need} and a pair that passes training.filter (a user with ≥ {} items, an item with ≥ {} \
             users): none does yet",
            f.min_user_items, f.min_item_users
        );
        return Err(waiting(counts, message));
    }
    Ok(counts)
}

/// What a scheduled run did: trained (whatever the gate said), or found too
/// little data.
#[derive(Debug)]
pub enum Scheduled {
    Trained { result: Box<RunResult>, counts: DataCounts },
    Waiting(Waiting),
}

/// Load, check the data ([`check_data`]), then train on the same load
/// ([`train_loaded`]) when there is enough.
pub fn scheduled_run(s: &Settings, src: &Source, root: &Path, show: bool) -> Result<Scheduled, RunError> {
    let loaded = load_source(src, s, show)?;
    match check_data(&loaded.ds, s, &loaded.description) {
        Ok(counts) => {
            let result = Box::new(train_loaded(s, loaded, root, None, false, show)?);
            Ok(Scheduled::Trained { result, counts })
        }
        Err(w) => Ok(Scheduled::Waiting(w)),
    }
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
        reason: None,
        text: String::new(),
    }
    .with_text()
}

/// The report of a skipped run: `rows` is the events seen, `reason` the message.
pub fn skipped_report(duration: Duration, w: &Waiting) -> RunReport {
    RunReport {
        source: "recsys-trainer",
        outcome: Outcome::Skipped,
        version: None,
        served_before: None,
        duration_s: duration.as_secs_f64(),
        rows: w.counts.events,
        metrics: Vec::new(),
        error: None,
        published: false,
        reason: Some(w.message.clone()),
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
        reason: None,
        text: String::new(),
    }
    .with_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{EventLog, RawEvent};
    use schemas::EventKind;

    fn dataset(pairs: &[(u64, u64)]) -> Dataset {
        let events = pairs
            .iter()
            .enumerate()
            .map(|(i, &(user, item))| RawEvent { ts: i as i64, user, item, kind: EventKind::View, txn: None })
            .collect();
        Dataset { events: EventLog { events, ..EventLog::default() }, ..Dataset::default() }
    }

    /// `users` users who each viewed the same `items` items.
    fn dense(users: u64, items: u64) -> Dataset {
        let pairs: Vec<(u64, u64)> = (0..users).flat_map(|u| (0..items).map(move |i| (u, i))).collect();
        dataset(&pairs)
    }

    fn settings(min_events: u64, min_users: u64) -> Settings {
        let mut s = Settings::default();
        s.trainer.schedule.min_events = min_events;
        s.trainer.schedule.min_users = min_users;
        s
    }

    #[test]
    fn empty_data_waits_with_its_counts() {
        let w = check_data(&Dataset::default(), &settings(1000, 50), "kafka:t").unwrap_err();
        assert_eq!(w.counts, DataCounts { events: 0, users: 0, trainable_pairs: None });
        assert_eq!(w.message, "waiting for data: 0 events, 0 users in kafka:t, need 1000 events and 50 users");
        assert_eq!(w.source, "kafka:t");
    }

    #[test]
    fn each_minimum_holds_on_its_own() {
        // 10 users x 6 items = 60 events: passes the default filter (5 and 5).
        let ds = dense(10, 6);
        let w = check_data(&ds, &settings(61, 10), "d").unwrap_err();
        assert!(w.message.starts_with("waiting for data: 60 events, 10 users in d, need 61 events"), "{}", w.message);
        let w = check_data(&ds, &settings(60, 11), "d").unwrap_err();
        assert_eq!(w.counts.users, 10);
        let c = check_data(&ds, &settings(60, 10), "d").unwrap();
        assert_eq!(c, DataCounts { events: 60, users: 10, trainable_pairs: Some(60) });
    }

    #[test]
    fn data_that_the_filter_empties_waits_instead_of_failing_training() {
        // Enough events and users, but every user has one item: no pair passes
        // min_user_items = 5, which would be train's "no pairs left" failure.
        let pairs: Vec<(u64, u64)> = (0..200).map(|u| (u, u % 7)).collect();
        let ds = dataset(&pairs);
        let w = check_data(&ds, &settings(100, 100), "d").unwrap_err();
        assert_eq!(w.counts.trainable_pairs, Some(0));
        assert!(w.message.contains("training.filter"), "{}", w.message);
        assert!(w.message.contains("200 events, 200 users"), "{}", w.message);
        // Zero minimums still never let an empty data set through.
        assert!(check_data(&Dataset::default(), &settings(0, 0), "d").is_err());
    }

    #[test]
    fn data_that_passes_the_check_trains_and_is_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(100, 20);
        s.training.factors = 4;
        s.training.iterations = 2;
        s.trainer.publish.enabled = false;
        let ds = dense(30, 8);
        let counts = check_data(&ds, &s, "d").unwrap();
        assert_eq!(counts.events, 240);
        let loaded = Loaded { ds, description: "d".into(), ..Loaded::default() };
        let r = train_loaded(&s, loaded, dir.path(), Some("v1".into()), false, false).unwrap();
        assert!(r.train.promoted);
        assert_eq!(model::artifact::current_version(dir.path()).unwrap().as_deref(), Some("v1"));
    }

    #[test]
    fn a_skipped_report_carries_the_message() {
        let w = Waiting {
            counts: DataCounts { events: 3, users: 2, trainable_pairs: None },
            message: "waiting for data: 3 events, 2 users in d, need 1000 events and 50 users".into(),
            source: "d".into(),
        };
        let r = skipped_report(Duration::from_millis(5), &w);
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!(r.rows, 3);
        assert_eq!(r.text, format!("recsys-trainer: SKIPPED: {}\n", w.message));
        assert_eq!(serde_json::to_value(&r).unwrap()["reason"], w.message.as_str());
    }
}
