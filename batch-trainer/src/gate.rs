//! The promotion gate: a new model is served only if it is not worse than the
//! served one on the same offline protocol.
//!
//! The original pipeline compared the new metrics with themselves and so never
//! rejected anything; here the candidate's metrics are compared with the ones
//! recorded in the served model's manifest.
//!
//! `train` and `models compare` both decide through [`judge_served`] and
//! describe the decision with [`record`] (what the manifest keeps), so the two
//! cannot disagree on the same pair of evaluations.

use serde::{Deserialize, Serialize};

use model::artifact::Evaluation;
pub use model::artifact::{GateDecision, GateMetric, GateRecord};

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
        let (s, c) = (served.metrics.get(m), candidate.metrics.get(m));
        let (Some(&s), Some(&c)) = (s, c) else {
            let from = match (s, c) {
                (None, None) => "both evaluations",
                (None, Some(_)) => "the served model's evaluation",
                _ => "the candidate's evaluation",
            };
            return Verdict::Incomparable { reason: format!("metric {m} is missing from {from}") };
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

/// The served side of a decision: its version and the evaluation its manifest
/// records (`None` when it records none).
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub version: &'a str,
    pub evaluation: Option<&'a Evaluation>,
}

/// The gate as `train` applies it to what is on disk: nothing served passes,
/// a served version without a recorded evaluation cannot be compared, else [`judge`].
pub fn judge_served(candidate: &Evaluation, served: Option<Served<'_>>, cfg: &GateConfig) -> Verdict {
    match served {
        None => Verdict::NoServedModel,
        Some(Served { version, evaluation: None }) => {
            Verdict::Incomparable { reason: format!("served version {version} has no recorded evaluation") }
        }
        Some(Served { evaluation: Some(e), .. }) => judge(candidate, Some(e), cfg),
    }
}

/// A share as a percentage with one decimal: 0.1 → `10.0 %`.
fn pct(share: f64) -> String {
    format!("{:.1} %", 100.0 * share)
}

/// The decision `verdict` leads to (`force`: promoted whatever it says), with
/// the numbers of both sides and the reason in words.
pub fn record(
    verdict: &Verdict,
    candidate: &Evaluation,
    served: Option<Served<'_>>,
    cfg: &GateConfig,
    force: bool,
) -> GateRecord {
    let served_eval = served.and_then(|s| s.evaluation);
    let served_name = served.map(|s| s.version).unwrap_or("none");
    let allowed = pct(cfg.max_relative_drop);
    let comparisons = match verdict {
        Verdict::Passed { comparisons } | Verdict::Rejected { comparisons } => comparisons.as_slice(),
        Verdict::NoServedModel | Verdict::Incomparable { .. } => &[],
    };
    let metrics = cfg
        .metrics
        .iter()
        .map(|m| {
            let compared = comparisons.iter().find(|c| &c.metric == m);
            GateMetric {
                metric: m.clone(),
                candidate: candidate.metrics.get(m).copied(),
                served: served_eval.and_then(|e| e.metrics.get(m).copied()),
                relative_change: compared.map(|c| c.relative_change),
                ok: compared.map(|c| c.ok),
            }
        })
        .collect();
    let (decision, reason) = match verdict {
        Verdict::NoServedModel => {
            (GateDecision::FirstModel, "no model was served: the first model is promoted without a comparison".into())
        }
        Verdict::Passed { comparisons } => {
            let changes: Vec<String> =
                comparisons.iter().map(|c| format!("{} {:+.1} %", c.metric, 100.0 * c.relative_change)).collect();
            let why = format!(
                "every key metric is within the allowed drop of {allowed} of served version {served_name}: {}",
                changes.join(", ")
            );
            (GateDecision::Promoted, why)
        }
        Verdict::Rejected { comparisons } => {
            let failed: Vec<String> = comparisons
                .iter()
                .filter(|c| !c.ok)
                .map(|c| {
                    if c.candidate.is_finite() {
                        format!("{} fell {} ({:.4} → {:.4})", c.metric, pct(-c.relative_change), c.served, c.candidate)
                    } else {
                        format!("{} is not a number ({})", c.metric, c.candidate)
                    }
                })
                .collect();
            let why = format!(
                "{} against served version {served_name}: more than the allowed drop of {allowed}",
                failed.join("; ")
            );
            (GateDecision::Rejected, why)
        }
        Verdict::Incomparable { reason } => (
            GateDecision::Incomparable,
            format!("cannot be compared with served version {served_name}: {reason}; not promoted automatically"),
        ),
    };
    let (decision, reason) = match decision {
        GateDecision::Rejected | GateDecision::Incomparable if force => (
            GateDecision::Forced,
            format!("promoted with --force although the gate said {}: {reason}", decision.as_str()),
        ),
        d => (d, reason),
    };
    GateRecord {
        decision,
        reason,
        served_version: served.map(|s| s.version.to_owned()),
        protocol: candidate.protocol.clone(),
        served_protocol: served_eval.map(|e| e.protocol.clone()),
        max_relative_drop: cfg.max_relative_drop,
        metrics,
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

    #[test]
    fn the_record_holds_both_sides_and_says_why() {
        let cfg = GateConfig::default();
        let served_eval = eval("seed", 0.033, 0.25);
        let served = Some(Served { version: "v1", evaluation: Some(&served_eval) });
        let cand = eval("seed", 0.033, 0.22);
        let v = judge_served(&cand, served, &cfg);
        let r = record(&v, &cand, served, &cfg, false);
        assert_eq!(r.decision, GateDecision::Rejected);
        assert_eq!(
            r.reason,
            "recall@20 fell 12.0 % (0.2500 → 0.2200) against served version v1: more than the allowed drop of 10.0 %"
        );
        assert_eq!(r.served_version.as_deref(), Some("v1"));
        assert_eq!(r.metrics.len(), 4);
        let recall = &r.metrics[1];
        assert_eq!((recall.metric.as_str(), recall.candidate, recall.served), ("recall@20", Some(0.22), Some(0.25)));
        assert_eq!(recall.ok, Some(false));
        assert!((recall.relative_change.unwrap() + 0.12).abs() < 1e-12);
        // The same numbers forced: promoted, and the reason keeps the rejection.
        let f = record(&v, &cand, served, &cfg, true);
        assert_eq!(f.decision, GateDecision::Forced);
        assert!(f.reason.starts_with("promoted with --force although the gate said rejected: recall@20 fell"));
        // Force changes nothing when the gate passes.
        let better = eval("seed", 0.04, 0.3);
        let p = record(&judge_served(&better, served, &cfg), &better, served, &cfg, true);
        assert_eq!(p.decision, GateDecision::Promoted);
        assert!(p.reason.contains("precision@5 +21.2 %"), "{}", p.reason);
    }

    #[test]
    fn nothing_served_and_nothing_recorded() {
        let cfg = GateConfig::default();
        let cand = eval("seed", 0.03, 0.25);
        let first = record(&judge_served(&cand, None, &cfg), &cand, None, &cfg, false);
        assert_eq!(first.decision, GateDecision::FirstModel);
        assert_eq!(first.served_version, None);
        assert!(first.metrics.iter().all(|m| m.candidate.is_some() && m.served.is_none() && m.ok.is_none()));
        let bare = Some(Served { version: "old", evaluation: None });
        let v = judge_served(&cand, bare, &cfg);
        let r = record(&v, &cand, bare, &cfg, false);
        assert_eq!(r.decision, GateDecision::Incomparable);
        assert_eq!(
            r.reason,
            "cannot be compared with served version old: served version old has no recorded evaluation; not \
             promoted automatically"
        );
        // Another protocol: the served values are shown, not compared.
        let time = eval("time", 0.5, 0.5);
        let other = Some(Served { version: "t", evaluation: Some(&time) });
        let r = record(&judge_served(&cand, other, &cfg), &cand, other, &cfg, false);
        assert_eq!(r.decision, GateDecision::Incomparable);
        assert_eq!(r.served_protocol.as_deref(), Some("time"));
        assert!(r.reason.contains("protocol \"time\""), "{}", r.reason);
        assert_eq!(r.metrics[0].served, Some(0.5));
        assert_eq!(r.metrics[0].relative_change, None);
        // A metric only one side has names that side.
        let mut partial = eval("seed", 0.03, 0.25);
        partial.metrics.remove("ndcg@10");
        let v = judge_served(&partial, Some(Served { version: "v1", evaluation: Some(&cand) }), &cfg);
        assert_eq!(
            v,
            Verdict::Incomparable { reason: "metric ndcg@10 is missing from the candidate's evaluation".into() }
        );
    }
}
