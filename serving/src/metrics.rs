//! `recsys_serving_*` metrics, in a registry of their own. Labels are bounded:
//! route templates (never raw paths), status codes, variants, sources and
//! fixed reason words.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric serving exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Latency by route template and status.
    pub request_duration: HistogramVec,
    /// Requests by route template, status and source (`none` off the recommendation routes).
    pub requests: IntCounterVec,
    /// Recommendation responses by A/B variant and source.
    pub recommendations: IntCounterVec,
    /// Lookups of `recs:{user}`: `hit` or `miss`.
    pub cache_lookups: IntCounterVec,
    /// Users answered, by kind: `warm` (cached list), `history` (events but no
    /// list), `cold` (unknown). The cold share is `cold / sum`.
    pub users: IntCounterVec,
    /// Answers from memory because Redis failed, by reason (`timeout`, `error`).
    pub degraded: IntCounterVec,
    /// Redis failures by operation.
    pub redis_errors: IntCounterVec,
    /// Impressions handed to the producer.
    pub impressions_queued: IntCounter,
    /// Impressions acknowledged by Kafka.
    pub impressions_delivered: IntCounter,
    /// Impressions lost, by reason (`queue_full`, `producer_queue_full`, `delivery_failed`, `encode`).
    pub impressions_dropped: IntCounterVec,
    /// `/similar` and `/popular` answers without `user_id`, by route
    /// (`similar`, `popular`): nothing to attribute them to, so no impression.
    pub impressions_anonymous: IntCounterVec,
    /// Admin requests by action and outcome (`ok`, `failed`, `refused`).
    pub admin_requests: IntCounterVec,
    /// 1 for the served model version.
    pub model_info: IntGaugeVec,
    /// Model loads by outcome (`served`, `refused`).
    pub model_loads: IntCounterVec,
    /// Items the live catalog (`recsys.items`) holds.
    pub live_catalog_items: IntGauge,
    /// Items the live catalog marks unavailable.
    pub live_catalog_unavailable: IntGauge,
    /// Records of `recsys.items` applied (updates and tombstones).
    pub live_catalog_updates: IntCounter,
    /// Records of `recsys.items` that are not an item update (skipped).
    pub live_catalog_malformed: IntCounter,
    /// 1 once the live catalog read the topic up to the watermarks seen at start.
    pub live_catalog_caught_up: IntGauge,
    /// Partitions still to read up to their start watermark.
    pub live_catalog_lag_partitions: IntGauge,
    /// Personal lists not served because the live catalog was not caught up.
    pub live_catalog_skipped: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new("recsys_serving_http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["route", "status"],
        )?;
        let requests = IntCounterVec::new(
            Opts::new("recsys_serving_http_requests_total", "HTTP requests by route template, status and source"),
            &["route", "status", "source"],
        )?;
        let recommendations = IntCounterVec::new(
            Opts::new("recsys_serving_recommendations_total", "Recommendation responses by A/B variant and source"),
            &["variant", "source"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new("recsys_serving_cache_lookups_total", "Lookups of cached lists recs:{user}"),
            &["result"],
        )?;
        let users = IntCounterVec::new(
            Opts::new("recsys_serving_users_total", "Treatment-arm users answered, by kind (warm, history, cold)"),
            &["kind"],
        )?;
        let degraded = IntCounterVec::new(
            Opts::new("recsys_serving_degraded_responses_total", "Responses served from memory because Redis failed"),
            &["reason"],
        )?;
        let redis_errors =
            IntCounterVec::new(Opts::new("recsys_serving_redis_errors_total", "Redis failures by operation"), &["op"])?;
        let impressions_queued =
            IntCounter::new("recsys_serving_impressions_queued_total", "Impressions handed to the Kafka producer")?;
        let impressions_delivered =
            IntCounter::new("recsys_serving_impressions_delivered_total", "Impressions acknowledged by Kafka")?;
        let impressions_dropped = IntCounterVec::new(
            Opts::new("recsys_serving_impressions_dropped_total", "Impressions lost, by reason"),
            &["reason"],
        )?;
        let impressions_anonymous = IntCounterVec::new(
            Opts::new(
                "recsys_serving_impressions_anonymous_total",
                "Similar/popular answers without user_id (no impression published), by route",
            ),
            &["route"],
        )?;
        let admin_requests = IntCounterVec::new(
            Opts::new("recsys_serving_admin_requests_total", "Admin requests by action and outcome"),
            &["action", "outcome"],
        )?;
        let model_info =
            IntGaugeVec::new(Opts::new("recsys_serving_model_info", "1 for the served model version"), &["version"])?;
        let model_loads = IntCounterVec::new(
            Opts::new("recsys_serving_model_loads_total", "Model versions loaded, by outcome"),
            &["outcome"],
        )?;
        let live_catalog_items = IntGauge::new("recsys_serving_live_catalog_items", "Items the live catalog holds")?;
        let live_catalog_unavailable =
            IntGauge::new("recsys_serving_live_catalog_unavailable", "Items the live catalog marks unavailable")?;
        let live_catalog_updates =
            IntCounter::new("recsys_serving_live_catalog_updates_total", "Records of the items topic applied")?;
        let live_catalog_malformed = IntCounter::new(
            "recsys_serving_live_catalog_malformed_total",
            "Records of the items topic that are not an item update (skipped)",
        )?;
        let live_catalog_caught_up = IntGauge::new(
            "recsys_serving_live_catalog_caught_up",
            "1 once the items topic was read up to the watermarks seen at start",
        )?;
        let live_catalog_lag_partitions = IntGauge::new(
            "recsys_serving_live_catalog_lag_partitions",
            "Partitions of the items topic not yet read up to their start watermark",
        )?;
        let live_catalog_skipped = IntCounter::new(
            "recsys_serving_live_catalog_skipped_lists_total",
            "Cached personal lists not served because the live catalog was not caught up",
        )?;
        for c in [
            Box::new(live_catalog_skipped.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(live_catalog_items.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(live_catalog_unavailable.clone()),
            Box::new(live_catalog_updates.clone()),
            Box::new(live_catalog_malformed.clone()),
            Box::new(live_catalog_caught_up.clone()),
            Box::new(live_catalog_lag_partitions.clone()),
            Box::new(request_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(recommendations.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(users.clone()),
            Box::new(degraded.clone()),
            Box::new(redis_errors.clone()),
            Box::new(impressions_queued.clone()),
            Box::new(impressions_delivered.clone()),
            Box::new(impressions_dropped.clone()),
            Box::new(impressions_anonymous.clone()),
            Box::new(admin_requests.clone()),
            Box::new(model_info.clone()),
            Box::new(model_loads.clone()),
        ] {
            registry.register(c)?;
        }
        common::memory::register(&registry)?;
        // Present (at 0) from the start, so dashboards and alerts see them.
        for r in ["timeout", "error"] {
            degraded.with_label_values(&[r]);
        }
        for r in ["queue_full", "producer_queue_full", "delivery_failed", "encode"] {
            impressions_dropped.with_label_values(&[r]);
        }
        for r in ["similar", "popular"] {
            impressions_anonymous.with_label_values(&[r]);
        }
        for r in ["hit", "miss"] {
            cache_lookups.with_label_values(&[r]);
        }
        for k in ["warm", "history", "cold"] {
            users.with_label_values(&[k]);
        }
        Ok(Metrics {
            registry,
            request_duration,
            requests,
            recommendations,
            cache_lookups,
            users,
            degraded,
            redis_errors,
            impressions_queued,
            impressions_delivered,
            impressions_dropped,
            impressions_anonymous,
            admin_requests,
            model_info,
            model_loads,
            live_catalog_items,
            live_catalog_unavailable,
            live_catalog_updates,
            live_catalog_malformed,
            live_catalog_caught_up,
            live_catalog_lag_partitions,
            live_catalog_skipped,
        })
    }

    /// Records the served version (the previous one's gauge goes).
    pub fn model_served(&self, version: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[version]).set(1);
        self.model_loads.with_label_values(&["served"]).inc();
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
