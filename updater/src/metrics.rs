//! Prometheus metrics, `recsys_updater_*`, in a registry owned by the app (so
//! several updaters in one test process do not share counters). Every metric
//! is recorded in exactly one place in the pipeline.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the updater exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events read from Kafka, by outcome: `applied`, `duplicate` (at or below
    /// the stored offset), `rejected` (dead-lettered).
    pub events: IntCounterVec,
    /// Rejected messages by reason class.
    pub rejected: IntCounterVec,
    /// Batches processed.
    pub batches: IntCounter,
    /// Events per batch.
    pub batch_events: Histogram,
    /// Seconds of a batch's stages: `apply` (Redis script), `fold` (fold-in +
    /// scoring), `write` (lists to Redis), `total`.
    pub stage_seconds: HistogramVec,
    /// Lists written to `recs:{user}`.
    pub users_refreshed: IntCounter,
    /// Seconds from the event's Kafka timestamp (set when ingest produced it)
    /// to its user's list written in Redis.
    pub freshness_seconds: Histogram,
    /// Seconds from the first message of an event's batch in the updater's
    /// hands to its user's list written: the updater's own share of the
    /// freshness, without the broker's (each event counted at its batch's worst).
    pub processing_seconds: Histogram,
    /// Consumer lag per partition (high watermark − position), from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// Partitions of the events topic this instance holds in its consumer group.
    pub assigned_partitions: IntGauge,
    /// Batch attempts that failed and were retried, by stage.
    pub retries: IntCounterVec,
    /// Kafka offset commits that failed (the next commit covers them).
    pub commit_errors: IntCounter,
    /// Model versions loaded (`ok`) or refused (`refused`).
    pub model_loads: IntCounterVec,
    /// The served model: 1 for the served version's label.
    pub model_info: IntGaugeVec,
    /// When the served model was loaded (unix seconds).
    pub model_loaded_at: IntGauge,
    /// Items folded in (not in the served model).
    pub items_folded: IntCounter,
    /// Items currently folded in against the served model.
    pub new_items: IntGauge,
    /// Lists rewritten by the background pass after a model swap.
    pub refold_users: IntCounter,
    /// 1 while this instance runs that pass.
    pub refold_running: IntGauge,
    /// Partitions re-read from the start of their log because Redis had lost
    /// their stored offset (restarted empty, flushed).
    pub state_rebuilds: IntCounter,
    /// Replication waits (`WAIT`, `[redis] min_replicas_acked`) answered by
    /// fewer replicas than required: the batch was retried, not committed.
    pub replication_short: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let latency = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new("recsys_updater_events_total", "Events read from Kafka by outcome"),
                &["outcome"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new("recsys_updater_rejected_events_total", "Messages sent to the dead-letter topic by reason"),
                &["reason"],
            )?,
            batches: IntCounter::new("recsys_updater_batches_total", "Micro-batches processed")?,
            batch_events: Histogram::with_opts(
                HistogramOpts::new("recsys_updater_batch_events", "Events per micro-batch")
                    .buckets(vec![1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]),
            )?,
            stage_seconds: HistogramVec::new(
                HistogramOpts::new("recsys_updater_stage_duration_seconds", "Seconds per batch stage")
                    .buckets(latency.clone()),
                &["stage"],
            )?,
            users_refreshed: IntCounter::new("recsys_updater_users_refreshed_total", "Lists written to Redis")?,
            freshness_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "recsys_updater_freshness_seconds",
                    "Event produced to Kafka -> its user's list written to Redis",
                )
                .buckets(vec![
                    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            processing_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "recsys_updater_processing_seconds",
                    "Event's batch opened in the updater -> its user's list written to Redis",
                )
                .buckets(vec![
                    0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.012, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                    0.25, 0.5, 1.0, 5.0,
                ]),
            )?,
            assigned_partitions: IntGauge::new(
                "recsys_updater_assigned_partitions",
                "Partitions of the events topic this instance holds in its consumer group",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("recsys_updater_consumer_lag", "Messages behind the high watermark per partition"),
                &["partition"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("recsys_updater_batch_retries_total", "Batch attempts that failed and were retried"),
                &["stage"],
            )?,
            commit_errors: IntCounter::new("recsys_updater_commit_errors_total", "Kafka offset commits that failed")?,
            model_loads: IntCounterVec::new(
                Opts::new("recsys_updater_model_loads_total", "Model versions loaded or refused"),
                &["outcome"],
            )?,
            model_info: IntGaugeVec::new(
                Opts::new("recsys_updater_model_info", "The served model version (value 1)"),
                &["version"],
            )?,
            model_loaded_at: IntGauge::new(
                "recsys_updater_model_loaded_timestamp_seconds",
                "When the served model was loaded",
            )?,
            items_folded: IntCounter::new("recsys_updater_items_folded_total", "Items folded in")?,
            new_items: IntGauge::new("recsys_updater_new_items", "Items folded in against the served model")?,
            refold_users: IntCounter::new(
                "recsys_updater_refold_users_total",
                "Lists rewritten from a new model by the background pass",
            )?,
            refold_running: IntGauge::new("recsys_updater_refold_running", "1 while the background re-fold runs here")?,
            state_rebuilds: IntCounter::new(
                "recsys_updater_state_rebuilds_total",
                "Partitions re-read from their log start because Redis lost their stored offset",
            )?,
            replication_short: IntCounter::new(
                "recsys_updater_replication_short_total",
                "Replication waits (WAIT) answered by fewer replicas than redis.min_replicas_acked; the batch was retried",
            )?,
            registry,
        };
        common::memory::register(&m.registry)?;
        m.registry.register(Box::new(m.events.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.batches.clone()))?;
        m.registry.register(Box::new(m.batch_events.clone()))?;
        m.registry.register(Box::new(m.stage_seconds.clone()))?;
        m.registry.register(Box::new(m.users_refreshed.clone()))?;
        m.registry.register(Box::new(m.freshness_seconds.clone()))?;
        m.registry.register(Box::new(m.processing_seconds.clone()))?;
        m.registry.register(Box::new(m.consumer_lag.clone()))?;
        m.registry.register(Box::new(m.assigned_partitions.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.commit_errors.clone()))?;
        m.registry.register(Box::new(m.model_loads.clone()))?;
        m.registry.register(Box::new(m.model_info.clone()))?;
        m.registry.register(Box::new(m.model_loaded_at.clone()))?;
        m.registry.register(Box::new(m.items_folded.clone()))?;
        m.registry.register(Box::new(m.new_items.clone()))?;
        m.registry.register(Box::new(m.refold_users.clone()))?;
        m.registry.register(Box::new(m.refold_running.clone()))?;
        m.registry.register(Box::new(m.state_rebuilds.clone()))?;
        m.registry.register(Box::new(m.replication_short.clone()))?;
        for o in ["applied", "duplicate", "rejected"] {
            m.events.with_label_values(&[o]);
        }
        Ok(m)
    }

    /// Records a newly served model version.
    pub fn model_served(&self, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[version]).set(1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.model_loaded_at.set(now as i64);
        self.model_loads.with_label_values(&["ok"]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
