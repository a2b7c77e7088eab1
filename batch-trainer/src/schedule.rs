//! `recsys-trainer schedule`: trains on a cron expression (UTC) until SIGINT /
//! SIGTERM, one run at a time, retrying failures with exponential backoff,
//! with `/metrics` and `/health`.
//!
//! - **One run at a time.** Runs happen in this loop, never concurrently; a
//!   tick that falls during a run is skipped (the next one is computed after
//!   the run), and the artifacts root's [`RunLock`] keeps a manual `train` or
//!   `models promote` from interleaving.
//! - **Retries.** A run that fails (an error: Kafka, disk, …) is retried up to
//!   `max_attempts` times, waiting `backoff_initial_s`, doubled each time, at
//!   most `backoff_max_s`. A rejected model is an answer, not a failure: no
//!   retry; nor is a split without test users retried (the same data would
//!   give the same split). A publication that fails after `CURRENT` moved is retried on its
//!   own (never by training again); what still fails is re-published by the
//!   reconciliation at the next tick and at start-up ([`publish::reconcile`]).
//! - **Not enough data** is an answer, not a failure: a run whose source holds
//!   fewer than `min_events` events or `min_users` users (or nothing that
//!   passes `[training.filter]`) is *skipped* ("waiting for data: N events,
//!   M users, need …"; see [`nightly::check_data`]), without retry, and the
//!   served model, if any, stays. The first skipped run of a streak is logged
//!   at warn and sent to the webhook; the checks repeating it are logged at info.
//! - **Day one.** While there is no model (no `CURRENT`), the data is checked
//!   at start and then every `bootstrap_interval_s` (besides the cron), so
//!   the first model is trained as soon as there is enough; once `CURRENT`
//!   exists, only the cron expression (and `--run-now`) start runs.
//! - **Shutdown.** The signal stops the loop while idle or backing off at
//!   once; a run in progress is finished (its version is written atomically
//!   either way), then the process exits.
//! - **Metrics** (`recsys_trainer_*`): see [`Metrics`]. One increment of
//!   `runs_total` per attempt.
//! - **`--once`** ([`run_once`]): one run with the same check, retries and
//!   webhook, then exit, for an external scheduler (a Kubernetes CronJob, a
//!   systemd timer).

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use common::Shutdown;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::cron::{next_after, parse_cron};
use crate::lifecycle::RunLock;
use crate::nightly::{self, DataCounts, RunError, Scheduled, Source};
use crate::notify::{self, Outcome, RunReport};
use crate::publish;
use crate::train::TrainError;

/// Delay before attempt `attempt + 1` (attempt ≥ 1): initial · 2^(attempt−1), capped.
pub fn backoff(initial_s: u64, max_s: u64, attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.saturating_sub(1).min(32)).unwrap_or(u64::MAX);
    Duration::from_secs(initial_s.saturating_mul(factor).min(max_s))
}

/// The schedule's Prometheus metrics (names are a contract: a dashboard uses them).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Unix time of the last run that ended promoted or rejected (the
    /// pipeline worked, whatever the gate said).
    pub last_success: Gauge,
    /// Seconds of the last attempt, whatever its outcome.
    pub last_duration: Gauge,
    /// Attempts by outcome: `promoted`, `rejected`, `failed`, `skipped`.
    pub runs: IntCounterVec,
    /// Events the last trained model used (after cleaning).
    pub last_rows: IntGauge,
    /// The last trained candidate's key metrics: `recall_at_20`,
    /// `precision_at_5`, `ndcg_at_10`, `hit_rate_at_5`.
    pub last_metric: GaugeVec,
    /// 1 while a run is in progress.
    pub running: IntGauge,
    /// Events (after cleaning) the last data check saw.
    pub data_events: IntGauge,
    /// Distinct users the last data check saw.
    pub data_users: IntGauge,
    /// 1 when the last run was skipped for lack of data.
    pub waiting_for_data: IntGauge,
}

/// Key metrics exported, with their `metric` label.
pub const METRIC_LABELS: [(&str, &str); 4] = [
    ("recall@20", "recall_at_20"),
    ("precision@5", "precision_at_5"),
    ("ndcg@10", "ndcg_at_10"),
    ("hit_rate@5", "hit_rate_at_5"),
];

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let m = Metrics {
            registry: Registry::new(),
            last_success: Gauge::new(
                "recsys_trainer_last_success_timestamp_seconds",
                "Unix time of the last run that ended promoted or rejected",
            )?,
            last_duration: Gauge::new("recsys_trainer_last_run_duration_seconds", "Seconds of the last run")?,
            runs: IntCounterVec::new(
                Opts::new("recsys_trainer_runs_total", "Training runs (attempts) by outcome"),
                &["outcome"],
            )?,
            last_rows: IntGauge::new("recsys_trainer_last_rows", "Events the last trained model used")?,
            last_metric: GaugeVec::new(
                Opts::new("recsys_trainer_last_metric", "Offline metrics of the last trained candidate"),
                &["metric"],
            )?,
            running: IntGauge::new("recsys_trainer_running", "1 while a training run is in progress")?,
            data_events: IntGauge::new(
                "recsys_trainer_data_events",
                "Events (after cleaning) the last data check saw",
            )?,
            data_users: IntGauge::new("recsys_trainer_data_users", "Distinct users the last data check saw")?,
            waiting_for_data: IntGauge::new(
                "recsys_trainer_waiting_for_data",
                "1 when the last run was skipped: fewer events or users than the minimums",
            )?,
        };
        common::memory::register(&m.registry)?;
        m.registry.register(Box::new(m.last_success.clone()))?;
        m.registry.register(Box::new(m.last_duration.clone()))?;
        m.registry.register(Box::new(m.runs.clone()))?;
        m.registry.register(Box::new(m.last_rows.clone()))?;
        m.registry.register(Box::new(m.last_metric.clone()))?;
        m.registry.register(Box::new(m.running.clone()))?;
        m.registry.register(Box::new(m.data_events.clone()))?;
        m.registry.register(Box::new(m.data_users.clone()))?;
        m.registry.register(Box::new(m.waiting_for_data.clone()))?;
        // Every outcome is exported from the start, so rate() works from the first run.
        for o in [Outcome::Promoted, Outcome::Rejected, Outcome::Failed, Outcome::Skipped] {
            m.runs.with_label_values(&[o.as_str()]);
        }
        Ok(m)
    }

    /// Records one attempt.
    pub fn record(&self, r: &RunReport) {
        self.runs.with_label_values(&[r.outcome.as_str()]).inc();
        self.last_duration.set(r.duration_s);
        if r.outcome != Outcome::Failed {
            self.waiting_for_data.set(i64::from(r.outcome == Outcome::Skipped));
        }
        // A skipped run is no success: no new model, and the staleness alert
        // must still fire when the data dries up under a served model.
        if matches!(r.outcome, Outcome::Promoted | Outcome::Rejected) {
            self.last_success.set(Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        if r.version.is_some() {
            self.last_rows.set(r.rows as i64);
            for (name, label) in METRIC_LABELS {
                if let Some(m) = r.metrics.iter().find(|m| m.metric == name) {
                    self.last_metric.with_label_values(&[label]).set(m.candidate);
                }
            }
        }
    }

    /// What a data check saw.
    pub fn record_data(&self, c: &DataCounts) {
        self.data_events.set(c.events.try_into().unwrap_or(i64::MAX));
        self.data_users.set(c.users.try_into().unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// `/metrics` and `/health`, bounded like every HTTP server here
/// ([`common::http::INTERNAL`]).
pub fn router(metrics: Metrics) -> Router {
    let r = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response() }
            }),
        )
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    common::http::bounded(r, common::http::INTERNAL)
}

/// What the schedule trains on and where.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub source: Source,
    pub artifacts_dir: PathBuf,
    /// Run once at start, then follow the cron expression.
    pub run_now: bool,
    pub show_progress: bool,
}

/// Why the schedule could not run at all (a failing run is not one of these).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("trainer.schedule.cron {expr:?}: {message}")]
    Cron { expr: String, message: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The state of a running schedule between runs.
#[derive(Debug, Default)]
struct Streak {
    /// The previous run was skipped: a repeat is logged at info, not notified.
    skipped: bool,
}

/// Runs the schedule until `shutdown` resolves. `triggers` starts a run now
/// (tests; a closed channel is simply never heard again). Returns the metrics
/// for inspection.
pub async fn run(
    settings: Settings,
    opts: ScheduleOptions,
    listener: tokio::net::TcpListener,
    mut triggers: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Metrics, ScheduleError> {
    let cron = parse_cron(&settings.trainer.schedule.cron)
        .map_err(|e| ScheduleError::Cron { expr: settings.trainer.schedule.cron.clone(), message: e.to_string() })?;
    let metrics = Metrics::new()?;
    let stop = Shutdown::new();
    stop.cancel_on(shutdown);
    tracing::info!(addr = %listener.local_addr()?, "recsys-trainer schedule metrics listening");
    let app = router(metrics.clone());
    let server =
        stop.spawn("metrics server", axum::serve(listener, app).with_graceful_shutdown(stop.cancelled()).into_future());

    reconcile(&settings, &opts).await;
    let bootstrap_every = Duration::from_secs(settings.trainer.schedule.bootstrap_interval_s);
    let mut pending_now = opts.run_now || bootstrapping(&settings, &opts);
    let mut triggers_open = true;
    let mut streak = Streak::default();
    loop {
        if stop.is_cancelled() {
            break;
        }
        if !pending_now {
            let now = Utc::now();
            let until_cron = next_after(&cron, now).map(|next| (next, (next - now).to_std().unwrap_or_default()));
            let wait = if bootstrapping(&settings, &opts) {
                tracing::info!(every = ?bootstrap_every, "no model yet: checking the data again");
                Some(until_cron.map_or(bootstrap_every, |(_, w)| w.min(bootstrap_every)))
            } else {
                if let Some((next, _)) = until_cron {
                    tracing::info!(next = %next.to_rfc3339(), "next training run");
                }
                until_cron.map(|(_, w)| w)
            };
            let Some(wait) = wait else {
                tracing::error!(cron = %settings.trainer.schedule.cron, "the cron expression never fires again");
                stop.cancelled().await;
                break;
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                t = triggers.recv(), if triggers_open => {
                    if t.is_none() {
                        triggers_open = false;
                        continue;
                    }
                    tracing::info!("training run triggered");
                }
            }
        }
        pending_now = false;
        run_with_retries(&settings, &opts, &metrics, &stop, &mut streak).await;
    }
    tracing::info!("schedule stopped");
    stop.drain().await;
    // A panic of the server task (or its abort at the drain deadline) is an
    // error of the process, not dropped.
    server.join().await.map_err(std::io::Error::other)??;
    Ok(metrics)
}

/// One run (data check, retries, webhook) and its final report, without the
/// loop or the metrics listener: `schedule --once`. `shutdown` cuts a backoff
/// short, as in [`run`].
pub async fn run_once(
    settings: Settings,
    opts: ScheduleOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunReport, ScheduleError> {
    let metrics = Metrics::new()?;
    let stop = Shutdown::new();
    stop.cancel_on(shutdown);
    reconcile(&settings, &opts).await;
    Ok(run_with_retries(&settings, &opts, &metrics, &stop, &mut Streak::default()).await)
}

/// True while no model is served and the bootstrap checks are on. An
/// unreadable `CURRENT` is not "no model": the cron alone then runs, and the
/// run's own error says what is wrong.
fn bootstrapping(settings: &Settings, opts: &ScheduleOptions) -> bool {
    settings.trainer.schedule.bootstrap_interval_s > 0
        && matches!(model::artifact::current_version(&opts.artifacts_dir), Ok(None))
}

/// Re-publishes `CURRENT` if its publication is incomplete (logged, not fatal).
async fn reconcile(settings: &Settings, opts: &ScheduleOptions) {
    if !settings.trainer.publish.enabled {
        return;
    }
    match publish::reconcile(settings, &opts.artifacts_dir).await {
        Ok(Some(r)) => tracing::info!(version = %r.version, "re-published CURRENT"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot check or repeat the publication of CURRENT"),
    }
}

/// Sleeps `d` unless stopped first; true when stopped.
async fn sleep_or_stop(d: Duration, stop: &Shutdown) -> bool {
    if stop.is_cancelled() {
        return true;
    }
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// One scheduled run: attempts until one does not fail (or attempts run out),
/// then the webhook with the final outcome, which is returned.
async fn run_with_retries(
    settings: &Settings,
    opts: &ScheduleOptions,
    metrics: &Metrics,
    stop: &Shutdown,
    streak: &mut Streak,
) -> RunReport {
    let cfg = &settings.trainer.schedule;
    let mut attempt = 1;
    loop {
        reconcile(settings, opts).await;
        metrics.running.set(1);
        let (report, retry) = attempt_once(settings, opts, metrics, stop).await;
        metrics.running.set(0);
        metrics.record(&report);
        let more = retry && attempt < cfg.max_attempts;
        if !more {
            let mut report = report;
            if report.outcome == Outcome::Failed && attempt > 1 {
                report.error = report.error.map(|e| format!("{e} (after {attempt} attempts)"));
                report = report.with_text();
            }
            let repeat = report.outcome == Outcome::Skipped && streak.skipped;
            streak.skipped = report.outcome == Outcome::Skipped;
            if let Some(reason) = &report.reason {
                if repeat {
                    tracing::info!(events = report.rows, "{reason}");
                } else {
                    tracing::warn!(events = report.rows, "{reason}");
                }
            }
            if !repeat {
                notify::notify_logged(&settings.trainer.webhook, &report).await;
            }
            return report;
        }
        let delay = backoff(cfg.backoff_initial_s, cfg.backoff_max_s, attempt);
        tracing::warn!(attempt, error = ?report.error, ?delay, "training run failed; retrying");
        if sleep_or_stop(delay, stop).await {
            streak.skipped = false;
            notify::notify_logged(&settings.trainer.webhook, &report).await;
            return report;
        }
        attempt += 1;
    }
}

/// One attempt: `(report, whether a failure is worth retrying by training again)`.
async fn attempt_once(
    settings: &Settings,
    opts: &ScheduleOptions,
    metrics: &Metrics,
    stop: &Shutdown,
) -> (RunReport, bool) {
    let t = Instant::now();
    let lock = match RunLock::acquire(&opts.artifacts_dir) {
        Ok(l) => l,
        Err(e) => return (nightly::failure_report(t.elapsed(), e.to_string()), true),
    };
    let (s, o) = (settings.clone(), opts.clone());
    let trained =
        tokio::task::spawn_blocking(move || nightly::scheduled_run(&s, &o.source, &o.artifacts_dir, o.show_progress))
            .await;
    let r = match trained {
        Ok(Ok(Scheduled::Trained { result, counts })) => {
            metrics.record_data(&counts);
            result
        }
        Ok(Ok(Scheduled::Waiting(w))) => {
            metrics.record_data(&w.counts);
            return (nightly::skipped_report(t.elapsed(), &w), false);
        }
        Ok(Err(e)) => {
            // The same data would leave the split without test users again.
            let retry = !matches!(e, RunError::Train(TrainError::NoTestUsers(_)));
            return (nightly::failure_report(t.elapsed(), e.to_string()), retry);
        }
        Err(e) => return (nightly::failure_report(t.elapsed(), format!("training task: {e}")), true),
    };
    if !r.train.promoted {
        tracing::warn!(version = %r.train.version, "model rejected by the gate; nothing served changes");
        return (nightly::report_of(settings, &r, t.elapsed(), false, None), false);
    }
    // CURRENT has moved: retry the publication alone.
    let cfg = &settings.trainer.schedule;
    let mut attempt = 1;
    loop {
        match nightly::publish_if_enabled(settings, &opts.artifacts_dir, &r.train.version).await {
            Ok(p) => {
                drop(lock);
                return (nightly::report_of(settings, &r, t.elapsed(), p.is_some(), None), false);
            }
            Err(e) if attempt < cfg.max_attempts => {
                let delay = backoff(cfg.backoff_initial_s, cfg.backoff_max_s, attempt);
                tracing::warn!(attempt, error = %e, ?delay, "publication failed; retrying");
                if sleep_or_stop(delay, stop).await {
                    let mut report = nightly::report_of(
                        settings,
                        &r,
                        t.elapsed(),
                        false,
                        Some(publication_failed(&r.train.version, &e)),
                    );
                    report.outcome = Outcome::Failed;
                    return (report.with_text(), false);
                }
                attempt += 1;
            }
            Err(e) => {
                let mut report = nightly::report_of(
                    settings,
                    &r,
                    t.elapsed(),
                    false,
                    Some(publication_failed(&r.train.version, &e)),
                );
                report.outcome = Outcome::Failed;
                return (report.with_text(), false);
            }
        }
    }
}

/// The message of a publication failure after `CURRENT` moved.
pub fn publication_failed(version: &str, e: &publish::PublishError) -> String {
    format!(
        "model {version} is promoted (CURRENT names it) but its publication failed: {e}; \
         run `recsys-trainer models promote {version}` to publish it again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        // The cron expression's own test is in `cron`.
        assert_eq!(backoff(60, 1800, 1), Duration::from_secs(60));
        assert_eq!(backoff(60, 1800, 2), Duration::from_secs(120));
        assert_eq!(backoff(60, 1800, 5), Duration::from_secs(960));
        assert_eq!(backoff(60, 1800, 6), Duration::from_secs(1800));
        assert_eq!(backoff(60, 1800, 200), Duration::from_secs(1800));
    }

    #[test]
    fn metrics_have_the_contracted_names() {
        let m = Metrics::new().unwrap();
        let r = RunReport {
            source: "recsys-trainer",
            outcome: Outcome::Promoted,
            version: Some("v1".into()),
            served_before: None,
            duration_s: 3.5,
            rows: 1234,
            metrics: vec![notify::MetricRow {
                metric: "recall@20".into(),
                candidate: 0.25,
                served: None,
                relative_change: None,
                ok: None,
            }],
            error: None,
            published: true,
            reason: None,
            text: String::new(),
        };
        m.record(&r);
        let text = m.render();
        for needle in [
            "recsys_trainer_last_success_timestamp_seconds ",
            "recsys_trainer_last_run_duration_seconds 3.5",
            "recsys_trainer_runs_total{outcome=\"promoted\"} 1",
            "recsys_trainer_runs_total{outcome=\"rejected\"} 0",
            "recsys_trainer_runs_total{outcome=\"failed\"} 0",
            "recsys_trainer_runs_total{outcome=\"skipped\"} 0",
            "recsys_trainer_data_events 0",
            "recsys_trainer_data_users 0",
            "recsys_trainer_waiting_for_data 0",
            "recsys_trainer_last_rows 1234",
            "recsys_trainer_last_metric{metric=\"recall_at_20\"} 0.25",
            "recsys_trainer_running 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn a_skipped_run_is_counted_and_is_no_success() {
        let m = Metrics::new().unwrap();
        let w = nightly::Waiting {
            counts: DataCounts { events: 7, users: 3, trainable_pairs: None },
            message: "waiting for data: 7 events, 3 users in d, need 1000 events and 50 users".into(),
            source: "d".into(),
        };
        m.record_data(&w.counts);
        m.record(&nightly::skipped_report(Duration::from_millis(20), &w));
        let text = m.render();
        for needle in [
            "recsys_trainer_runs_total{outcome=\"skipped\"} 1",
            "recsys_trainer_data_events 7",
            "recsys_trainer_data_users 3",
            "recsys_trainer_waiting_for_data 1",
            "recsys_trainer_last_success_timestamp_seconds 0",
            "recsys_trainer_last_rows 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
