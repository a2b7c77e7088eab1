//! The notification webhook: one POST after every run (promoted, rejected,
//! failed; `schedule` also posts the first of a streak of skipped runs, with
//! its `reason`). Best effort: a webhook that fails is logged, never fails the run.
//!
//! `format = "generic"` posts [`RunReport`] as JSON:
//!
//! ```json
//! {"source": "recsys-trainer", "outcome": "rejected", "version": "20261129T030000Z",
//!  "served_before": "20261128T030000Z", "duration_s": 412.5, "rows": 2756101,
//!  "metrics": [{"metric": "recall@20", "candidate": 0.21, "served": 0.25,
//!               "relative_change": -0.16, "ok": false}],
//!  "error": null, "published": false, "text": "recsys-trainer: model 2026… REJECTED …"}
//! ```
//!
//! `format = "telegram"` posts `{"chat_id": "<chat_id>", "text": "<text>"}`, the
//! body of the Telegram Bot API's `sendMessage` (url
//! `https://api.telegram.org/bot<token>/sendMessage`), which many chat tools accept.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::{WebhookConfig, WebhookFormat};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Promoted,
    Rejected,
    Failed,
    /// Not enough data to train (see `reason`); nothing served changes.
    Skipped,
}

impl Outcome {
    /// The label value of `recsys_trainer_runs_total{outcome}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One metric of the run: the candidate's value and, when a model was served
/// and comparable, the served one's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    pub metric: String,
    pub candidate: f64,
    pub served: Option<f64>,
    pub relative_change: Option<f64>,
    pub ok: Option<bool>,
}

/// What a run did, as reported to the webhook (and kept for `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub source: &'static str,
    pub outcome: Outcome,
    /// The version written (absent when the run failed before writing one).
    pub version: Option<String>,
    pub served_before: Option<String>,
    pub duration_s: f64,
    /// Events the model was trained on (after cleaning).
    pub rows: u64,
    pub metrics: Vec<MetricRow>,
    /// The failure (for `failed`, or a publication failure after promotion).
    pub error: Option<String>,
    /// Whether Redis lists and the announcement went out.
    pub published: bool,
    /// Why the run was skipped (`skipped` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human summary (what the Telegram shape sends).
    pub text: String,
}

impl RunReport {
    /// Fills `text` from the other fields.
    pub fn with_text(mut self) -> RunReport {
        self.text = render_text(&self);
        self
    }
}

/// The human summary: outcome line, then one line per metric.
pub fn render_text(r: &RunReport) -> String {
    let mut s = String::new();
    if let Some(reason) = &r.reason {
        let _ = writeln!(s, "recsys-trainer: {}: {reason}", r.outcome.as_str().to_uppercase());
        return s;
    }
    let version = r.version.as_deref().unwrap_or("-");
    let _ = write!(s, "recsys-trainer: {} model {version}", r.outcome.as_str().to_uppercase());
    let _ = write!(s, " in {:.0} s, {} events", r.duration_s, r.rows);
    if let Some(b) = &r.served_before {
        let _ = write!(s, "; served before: {b}");
    }
    s.push('\n');
    for m in &r.metrics {
        let _ = write!(s, "{:<12} {:.4}", m.metric, m.candidate);
        if let (Some(sv), Some(ch)) = (m.served, m.relative_change) {
            let _ = write!(s, " (served {sv:.4}, {:+.1} %)", 100.0 * ch);
        }
        if m.ok == Some(false) {
            s.push_str(" TOO LOW");
        }
        s.push('\n');
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "error: {e}");
    }
    s
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook: {0}")]
    Http(#[from] reqwest::Error),
    #[error("webhook answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// The body for the configured format.
pub fn body(cfg: &WebhookConfig, r: &RunReport) -> serde_json::Value {
    match cfg.format {
        WebhookFormat::Generic => serde_json::to_value(r).unwrap_or_default(),
        WebhookFormat::Telegram => serde_json::json!({ "chat_id": cfg.chat_id, "text": r.text }),
    }
}

/// Posts the report; `Ok(false)` when no webhook is configured.
pub async fn notify(cfg: &WebhookConfig, r: &RunReport) -> Result<bool, NotifyError> {
    if cfg.url.is_empty() {
        return Ok(false);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms)).build()?;
    // Errors drop the URL: a Telegram URL carries the bot token.
    let resp = client.post(&cfg.url).json(&body(cfg, r)).send().await.map_err(reqwest::Error::without_url)?;
    let status = resp.status();
    if !status.is_success() {
        let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        return Err(NotifyError::Status { status: status.as_u16(), body });
    }
    Ok(true)
}

/// [`notify`], logging instead of failing (the URL is never logged: it may hold a token).
pub async fn notify_logged(cfg: &WebhookConfig, r: &RunReport) {
    match notify(cfg, r).await {
        Ok(true) => tracing::info!(outcome = r.outcome.as_str(), "webhook notified"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "webhook notification failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome) -> RunReport {
        RunReport {
            source: "recsys-trainer",
            outcome,
            version: Some("v2".into()),
            served_before: Some("v1".into()),
            duration_s: 12.0,
            rows: 1000,
            metrics: vec![MetricRow {
                metric: "recall@20".into(),
                candidate: 0.2,
                served: Some(0.25),
                relative_change: Some(-0.2),
                ok: Some(false),
            }],
            error: None,
            published: false,
            reason: None,
            text: String::new(),
        }
        .with_text()
    }

    #[test]
    fn text_and_shapes() {
        let r = report(Outcome::Rejected);
        assert!(r.text.starts_with("recsys-trainer: REJECTED model v2"), "{}", r.text);
        assert!(r.text.contains("recall@20    0.2000 (served 0.2500, -20.0 %) TOO LOW"), "{}", r.text);
        let g = body(&WebhookConfig::default(), &r);
        assert_eq!(g["outcome"], "rejected");
        assert_eq!(g["metrics"][0]["served"], 0.25);
        let t = body(
            &WebhookConfig { format: WebhookFormat::Telegram, chat_id: "-100123".into(), ..WebhookConfig::default() },
            &r,
        );
        assert_eq!(t, serde_json::json!({"chat_id": "-100123", "text": r.text}));
    }
}
