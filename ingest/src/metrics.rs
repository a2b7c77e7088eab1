//! Prometheus metrics, `recsys_ingest_*`, in a registry owned by the app (so
//! several apps in one test process do not share counters).

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// Every metric ingest exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events acknowledged by Kafka, by source (`http`).
    pub events_accepted: IntCounterVec,
    /// Rejected events (dead-lettered), by source and reason class.
    pub events_rejected: IntCounterVec,
    /// Item updates acknowledged by Kafka, by source (`http`, `replay`).
    pub items_accepted: IntCounterVec,
    /// Rejected item updates (dead-lettered), by source and reason class.
    pub items_rejected: IntCounterVec,
    /// Failed deliveries, by topic and librdkafka error.
    pub produce_errors: IntCounterVec,
    /// Request latency by method, route template and status.
    pub request_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let events_accepted = IntCounterVec::new(
            Opts::new("recsys_ingest_events_accepted_total", "Events acknowledged by Kafka"),
            &["source"],
        )?;
        let events_rejected = IntCounterVec::new(
            Opts::new("recsys_ingest_events_rejected_total", "Events rejected and sent to the dead-letter topic"),
            &["source", "reason"],
        )?;
        let items_accepted = IntCounterVec::new(
            Opts::new("recsys_ingest_items_accepted_total", "Item updates acknowledged by Kafka"),
            &["source"],
        )?;
        let items_rejected = IntCounterVec::new(
            Opts::new("recsys_ingest_items_rejected_total", "Item updates rejected and sent to the dead-letter topic"),
            &["source", "reason"],
        )?;
        let produce_errors = IntCounterVec::new(
            Opts::new("recsys_ingest_produce_errors_total", "Messages Kafka did not acknowledge"),
            &["topic", "error"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new("recsys_ingest_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(events_accepted.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(items_accepted.clone()))?;
        registry.register(Box::new(items_rejected.clone()))?;
        registry.register(Box::new(produce_errors.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        common::memory::register(&registry)?;
        Ok(Metrics {
            registry,
            events_accepted,
            events_rejected,
            items_accepted,
            items_rejected,
            produce_errors,
            request_duration,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the metric types used here.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
