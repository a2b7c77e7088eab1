//! Layered configuration: one file for every process (`configs/recsys.toml`),
//! every key overridable by `RECSYS__SECTION__KEY`; each process deserialises
//! only the sections it reads and ignores the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The file read when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "configs/recsys.toml";

/// Names the configuration file when no `--config` is given (containers set it).
pub const CONFIG_FILE_ENV: &str = "RECSYS_CONFIG";

/// Loads `T` from `file` (which must exist when given; otherwise the file
/// `RECSYS_CONFIG` names, which must exist too, or else [`DEFAULT_CONFIG_FILE`]
/// when present) overlaid with the environment: `env = None` reads the
/// process's variables, `Some(map)` only the map (so tests need not mutate the
/// process environment).
pub fn load_layered<T: DeserializeOwned>(
    file: Option<&Path>,
    env: Option<config::Map<String, String>>,
) -> Result<T, config::ConfigError> {
    let mut b = config::Config::builder();
    let from_env = match &env {
        None => std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from),
        Some(map) => map.get(CONFIG_FILE_ENV).map(PathBuf::from),
    };
    match file.or(from_env.as_deref()) {
        Some(f) => b = b.add_source(config::File::from(f).required(true)),
        None => b = b.add_source(config::File::with_name(DEFAULT_CONFIG_FILE).required(false)),
    }
    b = b.add_source(
        config::Environment::with_prefix("RECSYS").prefix_separator("__").separator("__").try_parsing(true).source(env),
    );
    b.build()?.try_deserialize()
}

/// Returns the message of the first failed check, for `validate` functions
/// that name the offending key.
pub fn first_failure(checks: &[(bool, &str)]) -> Result<(), String> {
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, msg)) => Err((*msg).to_owned()),
        None => Ok(()),
    }
}

/// `[kafka]`: shared by every process that talks to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Partition count of topics created at start-up.
    pub partitions: i32,
    /// Replication factor of topics created at start-up.
    pub replication_factor: i32,
    /// Prepended to every topic name (isolates environments and test runs).
    pub topic_prefix: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            partitions: 6,
            replication_factor: 1,
            topic_prefix: String::new(),
        }
    }
}

impl KafkaConfig {
    /// A topic's full name: the prefix and one of `schemas::topics`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{}", self.topic_prefix, name)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        first_failure(&[
            (!self.brokers.trim().is_empty(), "kafka.brokers must not be empty"),
            (self.partitions > 0, "kafka.partitions must be > 0"),
            (self.replication_factor > 0, "kafka.replication_factor must be > 0"),
        ])
    }
}

/// `[redis]`: where the updater writes and serving reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS).
    pub url: String,
    /// Prepended to every key (`schemas::RedisKeys`); include the separator.
    pub prefix: String,
    /// Connection attempt timeout, ms.
    pub connect_timeout_ms: u64,
    /// How long one command may take before it fails, ms.
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "recsys:".into(),
            connect_timeout_ms: 1_000,
            response_timeout_ms: 1_000,
        }
    }
}

impl RedisConfig {
    /// The key builder for this prefix.
    pub fn keys(&self) -> schemas::RedisKeys {
        schemas::RedisKeys::new(self.prefix.clone())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        first_failure(&[
            (
                self.url.starts_with("redis://")
                    || self.url.starts_with("rediss://")
                    || self.url.starts_with("unix://"),
                "redis.url must start with redis://, rediss:// or unix://",
            ),
            (self.connect_timeout_ms > 0, "redis.connect_timeout_ms must be > 0"),
            (self.response_timeout_ms > 0, "redis.response_timeout_ms must be > 0"),
        ])
    }
}

/// `[model]`: where model versions live (written by the trainer, read by the
/// updater and serving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Root of the version directories and `CURRENT`.
    pub artifacts_dir: PathBuf,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { artifacts_dir: PathBuf::from("artifacts/models") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Both {
        kafka: KafkaConfig,
        redis: RedisConfig,
        model: ModelConfig,
    }

    fn repo_config() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
    }

    #[test]
    fn shared_sections_of_the_shipped_file_are_the_defaults() {
        let b: Both = load_layered(Some(&repo_config()), Some(config::Map::new())).unwrap();
        assert_eq!(b.kafka, KafkaConfig::default());
        assert_eq!(b.redis, RedisConfig::default());
        assert_eq!(b.model, ModelConfig::default());
    }

    #[test]
    fn contract_environment_overrides_apply() {
        let env = config::Map::from([
            ("RECSYS__KAFKA__BROKERS".to_owned(), "k1:9092,k2:9092".to_owned()),
            ("RECSYS__REDIS__URL".to_owned(), "redis://10.1.1.1:6380".to_owned()),
            ("RECSYS__REDIS__PREFIX".to_owned(), "staging:".to_owned()),
            ("RECSYS__MODEL__ARTIFACTS_DIR".to_owned(), "/srv/models".to_owned()),
        ]);
        let b: Both = load_layered(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(b.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(b.redis.url, "redis://10.1.1.1:6380");
        assert_eq!(b.redis.keys().prefix(), "staging:");
        assert_eq!(b.model.artifacts_dir, PathBuf::from("/srv/models"));
    }

    #[test]
    fn a_named_file_must_exist_and_bad_values_name_their_key() {
        assert!(load_layered::<Both>(Some(Path::new("/nonexistent/recsys.toml")), None).is_err());
        let r = RedisConfig { url: "http://x".into(), ..RedisConfig::default() };
        assert!(r.validate().unwrap_err().contains("redis.url"));
        let k = KafkaConfig { partitions: 0, ..KafkaConfig::default() };
        assert!(k.validate().unwrap_err().contains("kafka.partitions"));
    }

    #[test]
    fn recsys_config_names_the_file_when_no_flag_does() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("other.toml");
        std::fs::write(&f, "[kafka]\nbrokers = \"from-file:9092\"\n").unwrap();
        let env = config::Map::from([(CONFIG_FILE_ENV.to_owned(), f.display().to_string())]);
        let b: Both = load_layered(None, Some(env.clone())).unwrap();
        assert_eq!(b.kafka.brokers, "from-file:9092");
        // An explicit file wins over the variable.
        let b: Both = load_layered(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(b.kafka.brokers, KafkaConfig::default().brokers);
        // A named file that is missing is an error, not silently the defaults.
        let missing = config::Map::from([(CONFIG_FILE_ENV.to_owned(), "/nonexistent/x.toml".to_owned())]);
        assert!(load_layered::<Both>(None, Some(missing)).is_err());
    }
}
