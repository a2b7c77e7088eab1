//! Typed configuration: `configs/recsys.toml`, then `RECSYS__SECTION__KEY`
//! environment variables, then command-line flags (applied by the CLI).
//!
//! Only the sections the trainer reads are typed here; unknown sections (the
//! other processes' settings in the same file) are ignored.

use std::path::Path;

use model::{AlsParams, Solver};
use serde::{Deserialize, Serialize};

use crate::cron::parse_cron;
use crate::gate::GateConfig;
use crate::load::LoadOptions;
use crate::preprocess::{FilterConfig, Weights};
use crate::split::{Protocol, SplitConfig};

/// The trainer's view of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub training: TrainingConfig,
    /// `[model]`: where versions are written (`artifacts_dir`).
    pub model: common::ModelConfig,
    /// `[kafka]`: the event topic read by `--from-kafka`, announcements.
    pub kafka: common::KafkaConfig,
    /// `[redis]`: where the popular and similar lists are published.
    pub redis: common::RedisConfig,
    /// `[trainer]`: the model lifecycle (publication, schedule, retention, webhook).
    pub trainer: TrainerConfig,
}

impl Settings {
    /// Checks every section the trainer uses, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.training.validate()?;
        self.kafka.validate()?;
        self.redis.validate()?;
        self.trainer.validate()
    }
}

/// `[trainer]`: what happens around a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainerConfig {
    /// Model versions kept on disk after each run (the served one and the one
    /// served before it are never deleted, even beyond this count).
    pub keep_versions: usize,
    /// Reading `recsys.events`: metadata and watermark requests, ms.
    pub kafka_request_timeout_ms: u64,
    /// Reading `recsys.events`: longest wait for the next message, ms.
    pub kafka_idle_timeout_ms: u64,
    pub publish: PublishConfig,
    pub schedule: ScheduleConfig,
    pub webhook: WebhookConfig,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            keep_versions: 5,
            kafka_request_timeout_ms: 10_000,
            kafka_idle_timeout_ms: 30_000,
            publish: PublishConfig::default(),
            schedule: ScheduleConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

impl TrainerConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.schedule;
        let cron_ok = parse_cron(&s.cron).is_ok();
        common::config::first_failure(&[
            (self.keep_versions >= 1, "trainer.keep_versions must be ≥ 1"),
            (self.kafka_request_timeout_ms > 0, "trainer.kafka_request_timeout_ms must be > 0"),
            (self.kafka_idle_timeout_ms > 0, "trainer.kafka_idle_timeout_ms must be > 0"),
            ((1..=100_000).contains(&self.publish.batch), "trainer.publish.batch must be in 1..=100000"),
            ((1..=1_000).contains(&self.publish.popular_size), "trainer.publish.popular_size must be in 1..=1000"),
            (self.publish.similar_size <= 1_000, "trainer.publish.similar_size must be ≤ 1000"),
            (self.publish.timeout_ms > 0, "trainer.publish.timeout_ms must be > 0"),
            (cron_ok, "trainer.schedule.cron is not a valid cron expression (5 fields, UTC)"),
            (s.max_attempts >= 1, "trainer.schedule.max_attempts must be ≥ 1"),
            (
                s.backoff_initial_s > 0 && s.backoff_max_s >= s.backoff_initial_s,
                "trainer.schedule.backoff_initial_s must be > 0 and ≤ backoff_max_s",
            ),
            (
                self.webhook.url.is_empty()
                    || self.webhook.url.starts_with("http://")
                    || self.webhook.url.starts_with("https://"),
                "trainer.webhook.url must be empty or an http(s) URL",
            ),
            (
                self.webhook.format != WebhookFormat::Telegram || !self.webhook.chat_id.is_empty(),
                "trainer.webhook.chat_id is required with format = \"telegram\"",
            ),
            (self.webhook.timeout_ms > 0, "trainer.webhook.timeout_ms must be > 0"),
        ])
    }
}

/// `[trainer.publish]`: what a promoted model publishes besides `CURRENT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishConfig {
    /// Off: `CURRENT` moves and nothing else (offline use without Redis / Kafka).
    pub enabled: bool,
    /// Items in `popular` and in each `popular:cat:{c}`.
    pub popular_size: usize,
    /// Neighbours in each `similar:{item}` (0: no similar lists).
    pub similar_size: usize,
    /// Redis commands per pipeline.
    pub batch: usize,
    /// Announcement delivery and each Redis pipeline, ms.
    pub timeout_ms: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig { enabled: true, popular_size: 200, similar_size: 50, batch: 500, timeout_ms: 10_000 }
    }
}

/// `[trainer.schedule]`: `recsys-trainer schedule`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleConfig {
    /// Cron expression (minute hour day-of-month month day-of-week), UTC.
    pub cron: String,
    /// Attempts of a failing run (training errors; a rejected model is not retried).
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt up to `backoff_max_s`.
    pub backoff_initial_s: u64,
    pub backoff_max_s: u64,
    /// `/metrics` and `/health` (the `--metrics-listen` flag overrides it).
    pub metrics_listen: std::net::SocketAddr,
    /// A scheduled run trains only when the source holds at least this many
    /// events (after cleaning); otherwise it is a skipped run, "waiting for data".
    pub min_events: u64,
    /// … and at least this many distinct users.
    pub min_users: u64,
    /// While no model is served (no `CURRENT`), the data is checked again this
    /// often (s), and the first model is trained as soon as there is enough;
    /// afterwards only the cron expression starts runs. 0: the cron only.
    pub bootstrap_interval_s: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: "0 3 * * *".into(),
            max_attempts: 4,
            backoff_initial_s: 60,
            backoff_max_s: 1_800,
            metrics_listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9103)),
            min_events: 1_000,
            min_users: 50,
            bootstrap_interval_s: 300,
        }
    }
}

/// Shape of the webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The full JSON report (see `notify`).
    Generic,
    /// `{"chat_id", "text"}`: Telegram's `sendMessage` (and chat tools that take the same).
    Telegram,
}

/// `[trainer.webhook]`: a notification after every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Empty: no notification.
    pub url: String,
    pub format: WebhookFormat,
    /// Telegram chat id (format = "telegram").
    pub chat_id: String,
    pub timeout_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig { url: String::new(), format: WebhookFormat::Generic, chat_id: String::new(), timeout_ms: 5_000 }
    }
}

/// Which row solver ALS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SolverKind {
    /// Conjugate gradient, warm-started (`implicit`'s default).
    Cg,
    /// Exact Cholesky solve (slower; checks CG).
    Cholesky,
}

pub use model::rerank::RerankConfig;

/// `[training]`: every number of the offline pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingConfig {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub solver: SolverKind,
    pub cg_steps: usize,
    pub seed: u64,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// An explicit event-time window (epoch ms, end exclusive); none by
    /// default: a log's whole history is used.
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    /// The CSV files' clock: `auto` (detected per file), `s`, `ms`, `us`, `ns` or `iso`.
    pub time_unit: String,
    /// Header names of fields under other names, `user_id=customer,item_id=sku`.
    pub columns: String,
    /// Largest share of a file's rows that may be rejected (0..=1); more fails the load.
    pub max_bad_rows: f64,
    pub weights: Weights,
    /// Half-life in days of an event's weight in the confidence
    /// (`weight · 2^(−age / half-life)`, age from the newest training event);
    /// 0 = off, every event weighs the same whatever its age.
    pub recency_half_life_days: f64,
    pub filter: FilterConfig,
    pub protocol: Protocol,
    pub split: SplitConfig,
    /// Recommendations per user in the evaluation.
    pub k: usize,
    /// Length of the stored popular list.
    pub popular_size: usize,
    /// Users scored per matrix product.
    pub score_block: usize,
    pub rerank: RerankConfig,
    pub gate: GateConfig,
    /// `[training.search]`: the budgeted model search (off by default).
    pub search: SearchConfig,
}

/// `[training.search]`: a seeded successive-halving search over the ALS
/// hyper-parameters, the event weights and the recency half-life, scored on a
/// validation split carved from the training side (see [`crate::search`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchConfig {
    /// Off: the configured parameters are fitted as they are.
    pub enabled: bool,
    /// Budget, in fits of the configured parameters on the validation split's
    /// training side (the search's estimated cost never exceeds it).
    pub budget_fits: f64,
    /// Validation metric: `recall@K` or `ndcg@K`.
    pub metric: String,
    /// Seed of the candidates drawn (and of every candidate's initial factors).
    pub seed: u64,
    /// Candidates in the first round (fewer when the budget cannot afford
    /// them), the configured parameters among them.
    pub candidates: usize,
    /// Each round keeps the best 1/eta of its candidates.
    pub eta: usize,
    /// Iterations of the first round; each next round multiplies them by eta,
    /// up to `max_iterations`.
    pub min_iterations: usize,
    pub max_iterations: usize,
    /// Factor counts to choose from.
    pub factors: Vec<usize>,
    /// `[low, high]` ranges, drawn log-uniformly.
    pub alpha: [f32; 2],
    pub regularization: [f32; 2],
    /// Weights of an add-to-cart and a purchase (a view keeps
    /// `training.weights.view`: α already scales all three).
    pub addtocart: [f32; 2],
    pub transaction: [f32; 2],
    /// Half-lives to choose from, days (0 = no decay).
    pub recency_half_life_days: Vec<f64>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: false,
            budget_fits: 10.0,
            metric: "recall@20".into(),
            seed: 7,
            candidates: 60,
            eta: 3,
            min_iterations: 3,
            max_iterations: 25,
            factors: vec![32, 64, 128, 256],
            alpha: [0.5, 40.0],
            regularization: [0.01, 10.0],
            addtocart: [1.0, 16.0],
            transaction: [1.0, 32.0],
            recency_half_life_days: vec![0.0, 7.0, 30.0, 90.0],
        }
    }
}

impl SearchConfig {
    /// The metric as (`recall` | `ndcg`, K).
    pub fn parsed_metric(&self) -> Result<(&str, usize), String> {
        let bad = || {
            format!(
                "training.search.metric must be recall@K or ndcg@K with K in 1..=100 (e.g. \"recall@20\"), got {:?}",
                self.metric
            )
        };
        let (name, k) = self.metric.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        match name {
            "recall" | "ndcg" if (1..=100).contains(&k) => Ok((if name == "recall" { "recall" } else { "ndcg" }, k)),
            _ => Err(bad()),
        }
    }

    /// Rejects settings the search cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.parsed_metric()?;
        let range_ok = |r: &[f32; 2]| r[0] > 0.0 && r[1] >= r[0] && r[1].is_finite();
        common::config::first_failure(&[
            (
                self.budget_fits.is_finite() && self.budget_fits > 0.0,
                "training.search.budget_fits must be > 0 (a multiple of one fit of the configured parameters)",
            ),
            ((2..=1_000).contains(&self.candidates), "training.search.candidates must be in 2..=1000"),
            ((2..=10).contains(&self.eta), "training.search.eta must be in 2..=10"),
            (
                self.min_iterations >= 1 && self.min_iterations <= self.max_iterations && self.max_iterations <= 1_000,
                "training.search.min_iterations must be ≥ 1 and ≤ max_iterations (≤ 1000)",
            ),
            (
                !self.factors.is_empty() && self.factors.iter().all(|&f| (1..=4_096).contains(&f)),
                "training.search.factors must list at least one factor count, each in 1..=4096",
            ),
            (range_ok(&self.alpha), "training.search.alpha must be [low, high] with 0 < low ≤ high"),
            (range_ok(&self.regularization), "training.search.regularization must be [low, high] with 0 < low ≤ high"),
            (range_ok(&self.addtocart), "training.search.addtocart must be [low, high] with 0 < low ≤ high"),
            (range_ok(&self.transaction), "training.search.transaction must be [low, high] with 0 < low ≤ high"),
            (
                !self.recency_half_life_days.is_empty()
                    && self.recency_half_life_days.iter().all(|h| h.is_finite() && *h >= 0.0),
                "training.search.recency_half_life_days must list at least one half-life, each ≥ 0 (0 = off)",
            ),
        ])
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            factors: 256,
            iterations: 25,
            regularization: 0.1,
            alpha: 4.0,
            solver: SolverKind::Cg,
            cg_steps: 3,
            seed: 42,
            threads: 0,
            min_ts: None,
            max_ts: None,
            time_unit: "auto".into(),
            columns: String::new(),
            max_bad_rows: crate::load::DEFAULT_MAX_BAD_ROWS,
            weights: Weights::default(),
            recency_half_life_days: 0.0,
            filter: FilterConfig::default(),
            protocol: Protocol::Seed,
            split: SplitConfig::default(),
            k: 20,
            popular_size: 100,
            score_block: model::topn::DEFAULT_BLOCK,
            rerank: RerankConfig::default(),
            gate: GateConfig::default(),
            search: SearchConfig::default(),
        }
    }
}

impl TrainingConfig {
    /// ALS hyper-parameters.
    pub fn als_params(&self) -> AlsParams {
        AlsParams {
            factors: self.factors,
            iterations: self.iterations,
            regularization: self.regularization,
            alpha: self.alpha,
            solver: match self.solver {
                SolverKind::Cg => Solver::ConjugateGradient { steps: self.cg_steps },
                SolverKind::Cholesky => Solver::Cholesky,
            },
            seed: self.seed,
        }
    }

    /// Loader options. Call [`TrainingConfig::validate`] first: a bad
    /// `time_unit` or `columns` falls back to the default here.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            min_ts: self.min_ts.unwrap_or(i64::MIN),
            max_ts: self.max_ts.unwrap_or(i64::MAX),
            clock: self.time_unit.parse().unwrap_or_default(),
            columns: schemas::csv::ColumnMap::parse(&self.columns).unwrap_or_default(),
            max_bad_rows: self.max_bad_rows,
        }
    }

    /// Rejects values that would make the pipeline meaningless.
    pub fn validate(&self) -> Result<(), String> {
        self.time_unit.parse::<schemas::csv::ClockOption>().map_err(|e| format!("training.time_unit: {e}"))?;
        schemas::csv::ColumnMap::parse(&self.columns).map_err(|e| format!("training.columns: {e}"))?;
        let checks: [(bool, &str); 10] = [
            (self.factors > 0, "training.factors must be > 0"),
            (self.regularization >= 0.0 && self.regularization.is_finite(), "training.regularization must be ≥ 0"),
            (self.alpha > 0.0 && self.alpha.is_finite(), "training.alpha must be > 0"),
            (
                self.recency_half_life_days >= 0.0 && self.recency_half_life_days.is_finite(),
                "training.recency_half_life_days must be >= 0 (0 = off)",
            ),
            (self.k > 0, "training.k must be > 0"),
            (
                self.split.test_fraction > 0.0 && self.split.test_fraction < 1.0,
                "training.split.test_fraction must be in (0, 1)",
            ),
            (
                self.min_ts.unwrap_or(i64::MIN) < self.max_ts.unwrap_or(i64::MAX),
                "training.min_ts must be below training.max_ts",
            ),
            ((0.0..=1.0).contains(&self.max_bad_rows), "training.max_bad_rows must be in [0, 1]"),
            (self.score_block > 0, "training.score_block must be > 0"),
            (self.gate.max_relative_drop >= 0.0, "training.gate.max_relative_drop must be ≥ 0"),
        ];
        common::config::first_failure(&checks)?;
        self.search.validate()
    }
}

impl common::config::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        Settings::validate(self)
    }
}

/// Loads settings from `file` (if given, it must exist; otherwise
/// `configs/recsys.toml` is used when present) and the environment, without
/// checking them: the command line overrides keys first (`--factors` …), then
/// the caller validates ([`common::config::load_settings`] loads and checks).
pub fn load_settings(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
    common::load_layered(file, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml");
        let s = common::load_layered::<Settings>(Some(&path), Some(config::Map::new())).unwrap();
        assert_eq!(s.training, TrainingConfig::default());
        assert_eq!(s.trainer, TrainerConfig::default());
        s.validate().unwrap();
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[training]\nfactors = 32\nalpha = 2.0\n[training.filter]\nkcore = true\n").unwrap();
        let env = config::Map::from([
            ("RECSYS__TRAINING__ITERATIONS".to_owned(), "7".to_owned()),
            ("RECSYS__TRAINER__PUBLISH__ENABLED".to_owned(), "false".to_owned()),
            ("RECSYS__TRAINER__SCHEDULE__CRON".to_owned(), "30 2 * * 1".to_owned()),
        ]);
        let s = common::load_layered::<Settings>(Some(&f), Some(env)).unwrap();
        assert_eq!(s.training.factors, 32);
        assert_eq!(s.training.alpha, 2.0);
        assert_eq!(s.training.iterations, 7);
        assert!(s.training.filter.kcore);
        assert_eq!(s.training.regularization, 0.1);
        assert!(!s.trainer.publish.enabled);
        assert_eq!(s.trainer.schedule.cron, "30 2 * * 1");
        s.validate().unwrap();
    }

    #[test]
    fn missing_explicit_file_is_an_error_and_bad_values_are_refused() {
        assert!(load_settings(Some(Path::new("/nonexistent/recsys.toml"))).is_err());
        let bad = TrainingConfig { factors: 0, ..TrainingConfig::default() };
        assert!(bad.validate().unwrap_err().contains("factors"));
        let mut t = TrainerConfig::default();
        t.schedule.cron = "every night".into();
        assert!(t.validate().unwrap_err().contains("trainer.schedule.cron"));
        let t = TrainerConfig {
            webhook: WebhookConfig {
                url: "https://api.telegram.org/botX/sendMessage".into(),
                format: WebhookFormat::Telegram,
                ..WebhookConfig::default()
            },
            ..TrainerConfig::default()
        };
        assert!(t.validate().unwrap_err().contains("chat_id"));
        let t = TrainerConfig { keep_versions: 0, ..TrainerConfig::default() };
        assert!(t.validate().unwrap_err().contains("keep_versions"));
    }

    #[test]
    fn search_settings_are_read_and_bad_ones_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[training.search]\nenabled = true\nbudget_fits = 4\nmetric = \"ndcg@10\"\nfactors = [16, 32]\n",
        )
        .unwrap();
        let s = common::load_layered::<Settings>(Some(&f), Some(config::Map::new())).unwrap();
        assert!(s.training.search.enabled);
        assert_eq!(s.training.search.budget_fits, 4.0);
        assert_eq!(s.training.search.parsed_metric().unwrap(), ("ndcg", 10));
        assert_eq!(s.training.search.factors, vec![16, 32]);
        s.validate().unwrap();

        let bad = |f: fn(&mut SearchConfig)| {
            let mut t = TrainingConfig::default();
            f(&mut t.search);
            t.validate().unwrap_err()
        };
        assert!(bad(|s| s.metric = "recall".into()).contains("training.search.metric must be recall@K or ndcg@K"));
        assert!(bad(|s| s.metric = "precision@5".into()).contains("got \"precision@5\""));
        assert!(bad(|s| s.metric = "recall@0".into()).contains("training.search.metric"));
        assert!(bad(|s| s.budget_fits = 0.0).contains("training.search.budget_fits must be > 0"));
        assert!(bad(|s| s.budget_fits = f64::NAN).contains("training.search.budget_fits"));
        assert!(bad(|s| s.candidates = 1).contains("training.search.candidates"));
        assert!(bad(|s| s.eta = 1).contains("training.search.eta"));
        assert!(bad(|s| s.min_iterations = 30).contains("training.search.min_iterations"));
        assert!(bad(|s| s.factors.clear()).contains("training.search.factors"));
        assert!(bad(|s| s.alpha = [4.0, 1.0]).contains("training.search.alpha"));
        assert!(bad(|s| s.regularization = [0.0, 1.0]).contains("training.search.regularization"));
        assert!(bad(|s| s.recency_half_life_days = vec![-1.0]).contains("training.search.recency_half_life_days"));
        // Checked even while the search is off: a typo fails at once, not the night it is enabled.
        assert!(!TrainingConfig::default().search.enabled);
    }
}
