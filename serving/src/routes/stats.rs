//! `GET /v1/stats`: the tracking counters of each A/B arm and model version
//! (`schemas::stats`), their rates with Wilson intervals and the treatment
//! against control tests ([`crate::stats`] has the arithmetic).

use axum::extract::State;
use axum::Json;
use rustc_hash::FxHashMap;
use schemas::{Counters, ModelVersion, Variant};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, Inner};
use crate::stats::{self, Interval};

/// One A/B arm and model version in `GET /v1/stats`. Rates are shares of
/// impressions (each impression counts at most once per outcome), with 95 %
/// Wilson score intervals.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct ArmStats {
    pub variant: String,
    pub model_version: String,
    pub impressions: u64,
    /// Impressions with a click.
    pub clicks: u64,
    /// Impressions with an add-to-cart.
    pub carts: u64,
    /// Impressions with a purchase.
    pub purchases: u64,
    /// Revenue of the attributed transactions.
    pub revenue: f64,
    /// clicks / impressions (null without impressions).
    pub ctr: Option<f64>,
    /// 95 % Wilson interval of `ctr`.
    pub ctr_ci95: Option<Interval>,
    /// carts / impressions.
    pub add_to_cart_rate: Option<f64>,
    /// 95 % Wilson interval of `add_to_cart_rate`.
    pub add_to_cart_rate_ci95: Option<Interval>,
    /// purchases / impressions.
    pub conversion_rate: Option<f64>,
    /// 95 % Wilson interval of `conversion_rate`.
    pub conversion_rate_ci95: Option<Interval>,
    /// revenue / impressions.
    pub revenue_per_impression: Option<f64>,
}

impl ArmStats {
    /// The rates and intervals of raw counters.
    pub fn new(
        variant: Variant,
        model_version: &ModelVersion,
        impressions: u64,
        clicks: u64,
        carts: u64,
        purchases: u64,
        revenue: f64,
    ) -> ArmStats {
        let rate = |n: u64| (impressions > 0).then(|| n as f64 / impressions as f64);
        let ci = |n: u64| stats::wilson(n, impressions, stats::Z95);
        ArmStats {
            variant: variant.as_str().to_owned(),
            model_version: model_version.to_string(),
            impressions,
            clicks,
            carts,
            purchases,
            revenue,
            ctr: rate(clicks),
            ctr_ci95: ci(clicks),
            add_to_cart_rate: rate(carts),
            add_to_cart_rate_ci95: ci(carts),
            conversion_rate: rate(purchases),
            conversion_rate_ci95: ci(purchases),
            revenue_per_impression: (impressions > 0).then(|| revenue / impressions as f64),
        }
    }
}

/// Treatment (`als`) against control (`popular`) on one rate.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct Comparison {
    /// The model version both arms were served under; null = every version
    /// pooled per arm.
    pub model_version: Option<String>,
    /// `ctr`, `add_to_cart_rate` or `conversion_rate`.
    pub metric: String,
    pub control_impressions: u64,
    pub treatment_impressions: u64,
    pub control_rate: f64,
    pub treatment_rate: f64,
    /// (treatment − control) / control; null when the control rate is 0.
    pub relative_lift: Option<f64>,
    /// Pooled two-proportion z statistic (positive: treatment higher); null
    /// when undefined (both rates 0, or both 1).
    pub z: Option<f64>,
    /// Two-sided p-value of the z-test.
    pub p_value: Option<f64>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct StatsResponse {
    /// Every arm and model version with counters, by variant then version.
    pub arms: Vec<ArmStats>,
    /// Treatment against control per model version served in both arms, then
    /// pooled over versions (`model_version` null), for each of the three rates.
    pub comparisons: Vec<Comparison>,
}

/// The comparisons of [`StatsResponse`].
pub fn compare_arms(arms: &[ArmStats]) -> Vec<Comparison> {
    type Rates = [u64; 4]; // impressions, clicks, carts, purchases
    let mut by_version: std::collections::BTreeMap<&str, [Option<Rates>; 2]> = Default::default();
    let mut pooled: [Rates; 2] = [[0; 4]; 2];
    for a in arms {
        let side = match a.variant.parse::<Variant>() {
            Ok(Variant::Popular) => 0,
            Ok(Variant::Als) => 1,
            Err(_) => continue,
        };
        let r = [a.impressions, a.clicks, a.carts, a.purchases];
        by_version.entry(a.model_version.as_str()).or_default()[side] = Some(r);
        for (p, v) in pooled[side].iter_mut().zip(r) {
            *p += v;
        }
    }
    let mut out = Vec::new();
    let mut push = |version: Option<&str>, c: Rates, t: Rates| {
        if c[0] == 0 || t[0] == 0 {
            return;
        }
        for (i, metric) in [(1, "ctr"), (2, "add_to_cart_rate"), (3, "conversion_rate")] {
            let (cr, tr) = (c[i] as f64 / c[0] as f64, t[i] as f64 / t[0] as f64);
            let test = stats::two_proportion_z(c[i], c[0], t[i], t[0]);
            out.push(Comparison {
                model_version: version.map(str::to_owned),
                metric: metric.to_owned(),
                control_impressions: c[0],
                treatment_impressions: t[0],
                control_rate: cr,
                treatment_rate: tr,
                relative_lift: stats::relative_lift(cr, tr),
                z: test.map(|t| t.z),
                p_value: test.map(|t| t.p_value),
            });
        }
    };
    for (v, [c, t]) in &by_version {
        if let (Some(c), Some(t)) = (c, t) {
            push(Some(v), *c, *t);
        }
    }
    push(None, pooled[0], pooled[1]);
    out
}

#[utoipa::path(
    get,
    path = "/v1/stats",
    responses(
        (status = 200, description = "Tracking counters per A/B arm and model version (empty until tracking writes them), rates with 95 % Wilson intervals, treatment vs control lift with two-proportion z-test p-values", body = StatsResponse),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    )
)]
/// Live impressions, CTR, add-to-cart and conversion rates (95 % Wilson
/// intervals), revenue, revenue per impression, and treatment (`als`) vs
/// control (`popular`) relative lift with two-proportion z-test p-values.
pub async fn stats(State(s): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    let s = &s.inner;
    let work = read_stats(s);
    match tokio::time::timeout(s.cfg.stats_timeout(), work).await {
        Ok(Ok(arms)) => {
            let comparisons = compare_arms(&arms);
            Ok(Json(StatsResponse { arms, comparisons }))
        }
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["stats"]).inc();
            Err(ApiError::RedisUnavailable(e.to_string()))
        }
        Err(_) => {
            s.metrics.redis_errors.with_label_values(&["stats"]).inc();
            Err(ApiError::RedisUnavailable(format!("no answer within {} ms", s.cfg.stats_timeout_ms)))
        }
    }
}

async fn read_stats(s: &Inner) -> redis::RedisResult<Vec<ArmStats>> {
    let mut conn = s.redis.clone();
    // The index the tracking script maintains: no SCAN over a keyspace that
    // holds every user's history.
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(s.keys.stats_index()).query_async(&mut conn).await?;
    let mut keys: Vec<(String, (Variant, ModelVersion))> =
        members.into_iter().filter_map(|k| s.keys.parse_stats(&k).map(|p| (k, p))).collect();
    keys.sort_by(|a, b| a.1.cmp(&b.1));
    keys.dedup_by(|a, b| a.0 == b.0);
    let mut pipe = redis::pipe();
    for (k, _) in &keys {
        pipe.cmd("HGETALL").arg(k);
    }
    let hashes: Vec<FxHashMap<String, String>> =
        if keys.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
    Ok(keys
        .into_iter()
        .zip(hashes)
        // An indexed key whose hash is gone (deleted by an operator) shows nothing.
        .filter(|(_, h)| !h.is_empty())
        .map(|((_, (variant, version)), h)| {
            let c = Counters::from_hash(&h);
            ArmStats::new(variant, &version, c.impressions, c.clicks, c.carts, c.purchases, c.revenue)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_rates_intervals_and_comparisons() {
        let v1 = ModelVersion::parse("v1").unwrap();
        let v2 = ModelVersion::parse("v2").unwrap();
        let als = ArmStats::new(Variant::Als, &v1, 1000, 130, 40, 12, 300.0);
        assert_eq!(als.ctr, Some(0.13));
        assert_eq!(als.revenue_per_impression, Some(0.3));
        let ci = als.ctr_ci95.unwrap();
        assert!(ci.low < 0.13 && 0.13 < ci.high, "{ci:?}");
        let empty = ArmStats::new(Variant::Popular, &v2, 0, 0, 0, 0, 0.0);
        assert_eq!((empty.ctr, empty.ctr_ci95, empty.revenue_per_impression), (None, None, None));
        let arms = vec![
            als,
            ArmStats::new(Variant::Als, &v2, 200, 20, 0, 0, 0.0),
            ArmStats::new(Variant::Popular, &v1, 1000, 100, 40, 0, 0.0),
            empty,
        ];
        let c = compare_arms(&arms);
        // v1 (both arms), then pooled; v2 has no control impressions.
        let keys: Vec<(Option<&str>, &str)> =
            c.iter().map(|c| (c.model_version.as_deref(), c.metric.as_str())).collect();
        assert_eq!(
            keys,
            [
                (Some("v1"), "ctr"),
                (Some("v1"), "add_to_cart_rate"),
                (Some("v1"), "conversion_rate"),
                (None, "ctr"),
                (None, "add_to_cart_rate"),
                (None, "conversion_rate"),
            ]
        );
        // v1 CTR: 130/1000 vs 100/1000 (the hand-computed case of stats.rs).
        assert!((c[0].relative_lift.unwrap() - 0.3).abs() < 1e-12);
        assert!((c[0].z.unwrap() - 2.102_740_6).abs() < 1e-6);
        assert!((c[0].p_value.unwrap() - 0.035_488_5).abs() < 1e-6);
        // Equal cart rates: no lift, p = 1. Control converts nothing: lift undefined, the test is not.
        assert_eq!(c[1].relative_lift, Some(0.0));
        assert!((c[1].p_value.unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(c[2].relative_lift, None);
        assert!(c[2].p_value.unwrap() < 0.001);
        // Pooled: treatment 150 / 1200 against 100 / 1000.
        assert_eq!((c[3].treatment_impressions, c[3].control_impressions), (1200, 1000));
        assert!((c[3].treatment_rate - 0.125).abs() < 1e-12 && (c[3].control_rate - 0.1).abs() < 1e-12);
        assert!(compare_arms(&arms[..2]).is_empty(), "no control arm, nothing to compare");
    }
}
