//! The promotion gate: a new model is served only if it is not worse than the
//! served one on the same offline protocol.
//!
//! The original pipeline compared the new metrics with themselves and so never
//! rejected anything; here the candidate's metrics are compared with the ones
//! recorded in the served model's manifest.

use serde::{Deserialize, Serialize};

use model::artifact::Evaluation;

/// Gate knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// Largest allowed relative drop of any key metric (0.10 = 10 %).
    pub max_relative_drop: f64,
    /// The key metrics.
    pub metrics: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            max_relative_drop: 0.10,
            metrics: ["precision@5", "recall@20", "ndcg@10", "hit_rate@5"].map(String::from).to_vec(),
        }
    }
}

/// One metric compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub served: f64,
    pub candidate: f64,
    /// `(candidate − served) / served`; 0 when the served value is 0.
    pub relative_change: f64,
    pub ok: bool,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing is served yet: the first model passes.
    NoServedModel,
    /// Every key metric is within the allowed drop.
    Passed { comparisons: Vec<Comparison> },
    /// At least one key metric dropped too far.
    Rejected { comparisons: Vec<Comparison> },
    /// The served model was evaluated differently (or not at all): the two cannot
    /// be compared, so the candidate is not promoted automatically.
    Incomparable { reason: String },
}

impl Verdict {
    /// True when the candidate may be promoted.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::NoServedModel | Verdict::Passed { .. })
    }
}

/// Compares a candidate's evaluation with the served model's.
pub fn judge(candidate: &Evaluation, served: Option<&Evaluation>, cfg: &GateConfig) -> Verdict {
    let Some(served) = served else {
        return Verdict::NoServedModel;
    };
    if served.protocol != candidate.protocol {
        return Verdict::Incomparable {
            reason: format!(
                "served model was evaluated with protocol {:?}, candidate with {:?}",
                served.protocol, candidate.protocol
            ),
        };
    }
    let mut comparisons = Vec::new();
    for m in &cfg.metrics {
        let (Some(&s), Some(&c)) = (served.metrics.get(m), candidate.metrics.get(m)) else {
            return Verdict::Incomparable { reason: format!("metric {m} is missing from one of the evaluations") };
        };
        let rel = if s > 0.0 { (c - s) / s } else { 0.0 };
        let ok = c.is_finite() && rel >= -cfg.max_relative_drop;
        comparisons.push(Comparison { metric: m.clone(), served: s, candidate: c, relative_change: rel, ok });
    }
    if comparisons.iter().all(|c| c.ok) {
        Verdict::Passed { comparisons }
    } else {
        Verdict::Rejected { comparisons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn eval(protocol: &str, p5: f64, r20: f64) -> Evaluation {
        Evaluation {
            protocol: protocol.into(),
            metrics: BTreeMap::from([
                ("precision@5".into(), p5),
                ("recall@20".into(), r20),
                ("ndcg@10".into(), 0.1),
                ("hit_rate@5".into(), 0.15),
            ]),
            target_users: 100,
            report: serde_json::Value::Null,
        }
    }

    #[test]
    fn passes_within_ten_percent_and_rejects_beyond() {
        let cfg = GateConfig::default();
        let served = eval("seed", 0.033, 0.25);
        assert_eq!(judge(&eval("seed", 0.03, 0.25), None, &cfg), Verdict::NoServedModel);
        // 0.0300 / 0.033 = −9.1 %: allowed.
        assert!(judge(&eval("seed", 0.030, 0.25), Some(&served), &cfg).passed());
        // Recall −12 %: rejected, and the comparison says which metric failed.
        let v = judge(&eval("seed", 0.033, 0.22), Some(&served), &cfg);
        let Verdict::Rejected { comparisons } = &v else { panic!("{v:?}") };
        let bad: Vec<&str> = comparisons.iter().filter(|c| !c.ok).map(|c| c.metric.as_str()).collect();
        assert_eq!(bad, vec!["recall@20"]);
        // Better is always fine; NaN never is.
        assert!(judge(&eval("seed", 0.05, 0.3), Some(&served), &cfg).passed());
        assert!(!judge(&eval("seed", f64::NAN, 0.3), Some(&served), &cfg).passed());
    }

    #[test]
    fn different_protocols_are_not_compared() {
        let cfg = GateConfig::default();
        let v = judge(&eval("time", 0.5, 0.5), Some(&eval("seed", 0.03, 0.25)), &cfg);
        assert!(matches!(v, Verdict::Incomparable { .. }));
        assert!(!v.passed());
    }
}
