//! Typed configuration: `configs/recsys.toml`, then `RECSYS__SECTION__KEY`
//! environment variables, then command-line flags (applied by the CLI).
//!
//! Only the sections the trainer reads are typed here; unknown sections (the
//! other processes' settings in the same file) are ignored.

use std::path::Path;

use model::{AlsParams, Solver};
use serde::{Deserialize, Serialize};

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
    /// Accepted event time range (epoch ms, end exclusive).
    pub min_ts: i64,
    pub max_ts: i64,
    pub weights: Weights,
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
}

impl Default for TrainingConfig {
    fn default() -> Self {
        let load = LoadOptions::default();
        TrainingConfig {
            factors: 256,
            iterations: 25,
            regularization: 0.1,
            alpha: 4.0,
            solver: SolverKind::Cg,
            cg_steps: 3,
            seed: 42,
            threads: 0,
            min_ts: load.min_ts,
            max_ts: load.max_ts,
            weights: Weights::default(),
            filter: FilterConfig::default(),
            protocol: Protocol::Seed,
            split: SplitConfig::default(),
            k: 20,
            popular_size: 100,
            score_block: model::topn::DEFAULT_BLOCK,
            rerank: RerankConfig::default(),
            gate: GateConfig::default(),
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

    /// Loader options.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions { min_ts: self.min_ts, max_ts: self.max_ts }
    }

    /// Rejects values that would make the pipeline meaningless.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 8] = [
            (self.factors > 0, "training.factors must be > 0"),
            (self.regularization >= 0.0 && self.regularization.is_finite(), "training.regularization must be ≥ 0"),
            (self.alpha > 0.0 && self.alpha.is_finite(), "training.alpha must be > 0"),
            (self.k > 0, "training.k must be > 0"),
            (
                self.split.test_fraction > 0.0 && self.split.test_fraction < 1.0,
                "training.split.test_fraction must be in (0, 1)",
            ),
            (self.min_ts < self.max_ts, "training.min_ts must be below training.max_ts"),
            (self.score_block > 0, "training.score_block must be > 0"),
            (self.gate.max_relative_drop >= 0.0, "training.gate.max_relative_drop must be ≥ 0"),
        ];
        common::config::first_failure(&checks)
    }
}

/// Loads settings from `file` (if given, it must exist; otherwise
/// `configs/recsys.toml` is used when present) and the environment.
pub fn load_settings(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
    load_settings_with_env(file, None)
}

/// [`load_settings`] with the environment given explicitly (`None` = the
/// process environment), so tests need not mutate the process's variables.
pub fn load_settings_with_env(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<Settings, config::ConfigError> {
    common::load_layered(file, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml");
        let s = load_settings_with_env(Some(&path), Some(config::Map::new())).unwrap();
        assert_eq!(s.training, TrainingConfig::default());
        s.training.validate().unwrap();
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[training]\nfactors = 32\nalpha = 2.0\n[training.filter]\nkcore = true\n").unwrap();
        let env = config::Map::from([("RECSYS__TRAINING__ITERATIONS".to_owned(), "7".to_owned())]);
        let s = load_settings_with_env(Some(&f), Some(env)).unwrap();
        assert_eq!(s.training.factors, 32);
        assert_eq!(s.training.alpha, 2.0);
        assert_eq!(s.training.iterations, 7);
        assert!(s.training.filter.kcore);
        assert_eq!(s.training.regularization, 0.1);
    }

    #[test]
    fn missing_explicit_file_is_an_error_and_bad_values_are_refused() {
        assert!(load_settings(Some(Path::new("/nonexistent/recsys.toml"))).is_err());
        let bad = TrainingConfig { factors: 0, ..TrainingConfig::default() };
        assert!(bad.validate().unwrap_err().contains("factors"));
    }
}
