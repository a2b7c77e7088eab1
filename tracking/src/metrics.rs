//! Prometheus metrics, `recsys_tracking_*`, in a registry owned by the task
//! (several tasks in one test process do not share counters; the updater
//! renders it on its own `/metrics`). Labels are bounded: A/B variants (2),
//! model versions (one per published model), fixed words, partition numbers.
//!
//! The outcome counters count what *this process* applied: after a restart
//! they start from zero while Redis keeps the totals (Prometheus `rate()` and
//! `increase()` handle the reset; summing over instances gives the total).

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::store::Outcome;

/// Every metric the tracking task exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Impressions counted, by `variant`, `model_version`.
    pub impressions: IntCounterVec,
    /// Impressions that got their first click.
    pub clicks: IntCounterVec,
    /// Impressions that got their first add-to-cart.
    pub carts: IntCounterVec,
    /// Impressions that got their first purchase.
    pub purchases: IntCounterVec,
    /// Revenue of attributed transactions.
    pub revenue: CounterVec,
    /// Records read, by `topic` (`impressions`, `events`) and `outcome`
    /// (`applied`, `duplicate` = at or below the stored offset, `invalid`).
    pub records: IntCounterVec,
    /// Events attributed to an impression, by `when`: `on_event` (the
    /// impression was known) or `late_impression` (the event waited for it).
    pub attributed: IntCounterVec,
    /// Events that matched no impression and were kept, within the grace,
    /// for an impression consumed later.
    pub buffered: IntCounter,
    /// Waiting events given up: their impression was not read within the
    /// grace, or the user's cap of waiting events was reached.
    pub expired: IntCounter,
    /// Batches applied.
    pub batches: IntCounter,
    /// Records per batch.
    pub batch_records: Histogram,
    /// Seconds of one batch's Redis steps (per-user scripts, counters, resume points).
    pub batch_seconds: Histogram,
    /// Batch attempts that failed and were retried.
    pub retries: IntCounter,
    /// Kafka offset commits that failed (the next commit covers them).
    pub commit_errors: IntCounter,
    /// Times Redis was found to have lost the tracking state (no stored
    /// offsets) and the partitions were re-read from the start of their logs.
    pub state_rebuilds: IntCounter,
    /// Messages behind the high watermark, by `topic` and `partition`.
    pub consumer_lag: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let arm = ["variant", "model_version"];
        let m = Metrics {
            impressions: IntCounterVec::new(
                Opts::new("recsys_tracking_impressions_total", "Impressions counted per A/B variant and model version"),
                &arm,
            )?,
            clicks: IntCounterVec::new(
                Opts::new("recsys_tracking_clicks_total", "Impressions with a click (view within the click window)"),
                &arm,
            )?,
            carts: IntCounterVec::new(
                Opts::new(
                    "recsys_tracking_carts_total",
                    "Impressions with an add-to-cart within the conversion window",
                ),
                &arm,
            )?,
            purchases: IntCounterVec::new(
                Opts::new(
                    "recsys_tracking_purchases_total",
                    "Impressions with a purchase within the conversion window",
                ),
                &arm,
            )?,
            revenue: CounterVec::new(
                Opts::new("recsys_tracking_revenue_total", "Revenue of transactions attributed to impressions"),
                &arm,
            )?,
            records: IntCounterVec::new(
                Opts::new("recsys_tracking_records_total", "Kafka records read by topic and outcome"),
                &["topic", "outcome"],
            )?,
            attributed: IntCounterVec::new(
                Opts::new("recsys_tracking_attributed_events_total", "Events attributed to an impression"),
                &["when"],
            )?,
            buffered: IntCounter::new(
                "recsys_tracking_buffered_events_total",
                "Events that matched no impression yet and wait for one within the grace",
            )?,
            expired: IntCounter::new(
                "recsys_tracking_expired_events_total",
                "Events that waited for an impression in vain (grace over or per-user cap)",
            )?,
            batches: IntCounter::new("recsys_tracking_batches_total", "Batches applied")?,
            batch_records: Histogram::with_opts(
                HistogramOpts::new("recsys_tracking_batch_records", "Records per batch")
                    .buckets(vec![1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]),
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("recsys_tracking_batch_duration_seconds", "Seconds of a batch's attribution script")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )?,
            retries: IntCounter::new(
                "recsys_tracking_batch_retries_total",
                "Batch attempts that failed and were retried",
            )?,
            commit_errors: IntCounter::new(
                "recsys_tracking_commit_errors_total",
                "Kafka offset commits of the tracking consumer that failed",
            )?,
            state_rebuilds: IntCounter::new(
                "recsys_tracking_state_rebuilds_total",
                "Times Redis had lost the tracking state and both topics were re-read from the start of their logs",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("recsys_tracking_consumer_lag", "Messages behind the high watermark per topic and partition"),
                &["topic", "partition"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.impressions.clone()))?;
        m.registry.register(Box::new(m.clicks.clone()))?;
        m.registry.register(Box::new(m.carts.clone()))?;
        m.registry.register(Box::new(m.purchases.clone()))?;
        m.registry.register(Box::new(m.revenue.clone()))?;
        m.registry.register(Box::new(m.records.clone()))?;
        m.registry.register(Box::new(m.attributed.clone()))?;
        m.registry.register(Box::new(m.buffered.clone()))?;
        m.registry.register(Box::new(m.expired.clone()))?;
        m.registry.register(Box::new(m.batches.clone()))?;
        m.registry.register(Box::new(m.batch_records.clone()))?;
        m.registry.register(Box::new(m.batch_seconds.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.state_rebuilds.clone()))?;
        m.registry.register(Box::new(m.commit_errors.clone()))?;
        m.registry.register(Box::new(m.consumer_lag.clone()))?;
        for t in ["impressions", "events"] {
            for o in ["applied", "duplicate", "invalid"] {
                m.records.with_label_values(&[t, o]);
            }
        }
        for w in ["on_event", "late_impression"] {
            m.attributed.with_label_values(&[w]);
        }
        Ok(m)
    }

    /// The registry (for a process that renders several on one `/metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records what one batch applied.
    pub fn record(&self, o: &Outcome) {
        for d in &o.deltas {
            let (l, d) = ([d.variant.as_str(), d.model_version.as_str()], &d.added);
            // Touch every series of the arm, so a dashboard sees zeros rather than gaps.
            self.impressions.with_label_values(&l).inc_by(d.impressions);
            self.clicks.with_label_values(&l).inc_by(d.clicks);
            self.carts.with_label_values(&l).inc_by(d.carts);
            self.purchases.with_label_values(&l).inc_by(d.purchases);
            if d.revenue > 0.0 {
                self.revenue.with_label_values(&l).inc_by(d.revenue);
            } else {
                self.revenue.with_label_values(&l);
            }
        }
        self.records.with_label_values(&["impressions", "applied"]).inc_by(o.impressions_applied);
        self.records.with_label_values(&["impressions", "duplicate"]).inc_by(o.impressions_duplicate);
        self.records.with_label_values(&["events", "applied"]).inc_by(o.events_applied);
        self.records.with_label_values(&["events", "duplicate"]).inc_by(o.events_duplicate);
        self.attributed.with_label_values(&["on_event"]).inc_by(o.attributed_on_event);
        self.attributed.with_label_values(&["late_impression"]).inc_by(o.attributed_late);
        self.buffered.inc_by(o.buffered);
        self.expired.inc_by(o.expired);
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
