//! Typed configuration: `[updater]`, `[kafka]`, `[redis]`, `[model]` and the
//! re-rank of `[training.rerank]` from `configs/recsys.toml`, then
//! `RECSYS__SECTION__KEY` environment variables, then command-line flags
//! (applied by `main`).

use std::net::SocketAddr;
use std::time::Duration;

use common::config::first_failure;
use common::{KafkaConfig, ModelConfig, RedisConfig};
use model::rerank::RerankConfig;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The updater's view of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub updater: UpdaterConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub model: ModelConfig,
    /// Only `[training.rerank]` and `[training.weights]` are read: the updater
    /// serves what the trainer evaluated and gated.
    pub training: TrainingSection,
    /// `[popularity]`: the live rankings kept in the apply step.
    pub popularity: schemas::PopularityConfig,
}

/// The part of `[training]` the updater reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSection {
    pub rerank: RerankConfig,
    /// The model's confidence weights: what one event of each kind adds to
    /// the live rankings (a model's own weights fold its users in).
    pub weights: model::EventWeights,
}

/// How a user is folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoldInSolver {
    /// Exact solve: a folded-in user equals a trained one (training's fixed point).
    Cholesky,
    /// The model's own conjugate-gradient steps from zero: cheaper at large
    /// factor counts, approximate.
    Cg,
}

/// `[updater]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdaterConfig {
    /// Address of `/metrics` and `/health`.
    pub metrics_listen: SocketAddr,
    /// Kafka consumer group shared by every updater instance.
    pub group_id: String,
    /// A micro-batch closes at this many events ...
    pub batch_max_events: usize,
    /// ... or this long after its first event, ms.
    pub batch_max_wait_ms: u64,
    /// librdkafka `fetch.wait.max.ms`: how long the broker may hold a fetch
    /// waiting for data (its default, 500 ms, would dominate freshness).
    pub fetch_wait_max_ms: u64,
    /// librdkafka `session.timeout.ms`: how soon a dead instance's partitions move.
    pub session_timeout_ms: u64,
    /// Most distinct items kept in a user's history: past it, the least recently
    /// touched go, down to 15/16 of it (a batch, so a full history is not
    /// sorted on every event).
    pub history_max_items: usize,
    /// Length of the cached `recs:{user}` list.
    pub recs_size: usize,
    /// Time to live of `recs:{user}` and `hist:{user}`, seconds (0 = none).
    pub recs_ttl_s: u64,
    /// Fold-in solver.
    pub solver: FoldInSolver,
    /// Users scored per matrix product (the score buffer is this × items floats).
    pub score_block: usize,
    /// An item the model does not know is folded in once this many users with
    /// factors have events on it (0 disables item fold-in).
    pub new_item_min_users: usize,
    /// At most this many of an item's users are used to fold it in.
    pub new_item_max_users: usize,
    /// How often the cache of other instances' folded-in items is refreshed, ms.
    pub new_item_refresh_ms: u64,
    /// How often `CURRENT` is checked for a model version the announcements missed, s.
    pub model_poll_interval_s: u64,
    /// On shutdown, how long the process waits for its tasks (the model follower,
    /// the re-fold, the metrics server, the tracking task) before aborting the rest, s
    /// (docs/design.md §8).
    pub drain_deadline_s: u64,
    /// Delay between attempts of a batch whose Redis write failed, ms (doubling, capped at 5 s).
    pub retry_backoff_ms: u64,
    /// After a model swap, every user with a history gets a list from the new
    /// model in the background at most this many users per second (0 = only
    /// on the user's next event). Bounded so the pass never starves the
    /// live stream of CPU or Redis.
    pub refold_rate_per_s: u32,
    /// Users per step of that pass (one SCAN, one fold-in block, one write).
    pub refold_batch: usize,
    /// Kafka consumer group of the `recsys.items` task (the catalog state);
    /// empty: `{group_id}-catalog`, so a group per deployment follows from one key.
    pub catalog_group_id: String,
    /// A catalog batch closes at this many patches (or `batch_max_wait_ms`).
    pub catalog_batch_max: usize,
    /// How often, at most, the in-memory unavailable set is re-read from Redis
    /// after a catalog batch (it picks up other instances' partitions), ms.
    pub catalog_refresh_ms: u64,
    /// Items written to `recs:{user}` beyond `recs_size`: serving filters
    /// items that became unavailable after a list was written, and still has
    /// `recs_size` left when at most this many of the list did.
    pub list_margin: usize,
}

impl Default for UpdaterConfig {
    fn default() -> Self {
        UpdaterConfig {
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
            group_id: "recsys-updater".into(),
            batch_max_events: 512,
            batch_max_wait_ms: 5,
            fetch_wait_max_ms: 5,
            session_timeout_ms: 10_000,
            history_max_items: 500,
            recs_size: 100,
            recs_ttl_s: 30 * 86_400,
            solver: FoldInSolver::Cholesky,
            score_block: 128,
            new_item_min_users: 5,
            new_item_max_users: 1_000,
            new_item_refresh_ms: 1_000,
            model_poll_interval_s: 30,
            drain_deadline_s: 30,
            retry_backoff_ms: 100,
            refold_rate_per_s: 1_000,
            refold_batch: 256,
            catalog_group_id: String::new(),
            catalog_batch_max: 1_024,
            catalog_refresh_ms: 1_000,
            list_margin: 20,
        }
    }
}

impl UpdaterConfig {
    /// The catalog task's consumer group (see `catalog_group_id`).
    pub fn catalog_group(&self) -> String {
        if self.catalog_group_id.trim().is_empty() {
            format!("{}-catalog", self.group_id)
        } else {
            self.catalog_group_id.clone()
        }
    }

    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }
}

impl Settings {
    /// The event consumer: a group member that commits only what it stored
    /// after the Redis write, starts a new group at the beginning of the log,
    /// and fetches with a short broker wait so freshness is not librdkafka's
    /// default half second.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", &self.updater.group_id)
            .set("client.id", "recsys-updater")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.updater.fetch_wait_max_ms.to_string())
            .set("fetch.min.bytes", "1")
            .set("session.timeout.ms", self.updater.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (self.updater.session_timeout_ms / 5).max(100).to_string())
            .set("partition.assignment.strategy", "range")
            // Per-partition lag for the metrics arrives through the stats callback.
            .set("statistics.interval.ms", "1000");
        c
    }

    /// The producer of dead letters (same guarantees as ingest's).
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "1")
            .set("client.id", "recsys-updater");
        c
    }

    /// The consumer of `recsys.models`: every instance must see every
    /// announcement, so each has its own throw-away group and starts at the end
    /// (the served version at start comes from `CURRENT`).
    pub fn announcement_consumer_config(&self, instance: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", format!("{}-models-{instance}", self.updater.group_id))
            .set("client.id", "recsys-updater-models")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "100")
            .set("session.timeout.ms", "10000");
        c
    }
}

impl common::config::Settings for Settings {
    // Of [training], only [training.rerank] is the updater's: the trainer checks the rest.
    const PARTIAL_SECTIONS: &'static [&'static str] = &["training"];

    /// Rejects values that cannot work, naming the key.
    fn validate(&self) -> Result<(), String> {
        let u = &self.updater;
        first_failure(&[
            (!u.group_id.trim().is_empty(), "updater.group_id must not be empty"),
            (u.batch_max_events > 0, "updater.batch_max_events must be > 0"),
            (u.batch_max_wait_ms > 0, "updater.batch_max_wait_ms must be > 0"),
            (u.session_timeout_ms >= 1_000, "updater.session_timeout_ms must be ≥ 1000"),
            (u.score_block > 0, "updater.score_block must be > 0"),
            (u.history_max_items > 0, "updater.history_max_items must be > 0"),
            (u.recs_size > 0 && u.recs_size <= 1_000, "updater.recs_size must be in 1..=1000"),
            (u.new_item_max_users >= u.new_item_min_users, "updater.new_item_max_users must be ≥ new_item_min_users"),
            (u.new_item_refresh_ms > 0, "updater.new_item_refresh_ms must be > 0"),
            (u.model_poll_interval_s > 0, "updater.model_poll_interval_s must be > 0"),
            (u.drain_deadline_s > 0, "updater.drain_deadline_s must be > 0"),
            (u.retry_backoff_ms > 0, "updater.retry_backoff_ms must be > 0"),
            (u.refold_batch > 0 && u.refold_batch <= 10_000, "updater.refold_batch must be in 1..=10000"),
            (u.catalog_group() != u.group_id, "updater.catalog_group_id must differ from updater.group_id"),
            (u.catalog_batch_max > 0, "updater.catalog_batch_max must be > 0"),
            (u.catalog_refresh_ms > 0, "updater.catalog_refresh_ms must be > 0"),
            (u.list_margin <= 1_000, "updater.list_margin must be ≤ 1000"),
        ])?;
        self.popularity.validate()?;
        self.kafka.validate()?;
        self.redis.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use common::config::load_settings;

    fn repo_config() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
    }

    #[test]
    fn repository_config_parses_to_the_defaults() {
        let s = load_settings::<Settings>(Some(&repo_config()), Some(config::Map::new())).unwrap();
        assert_eq!(s, Settings::default(), "configs/recsys.toml and the defaults disagree");
    }

    #[test]
    fn contract_environment_overrides_and_validation() {
        let env = config::Map::from([
            ("RECSYS__KAFKA__BROKERS".to_owned(), "10.0.0.1:9092".to_owned()),
            ("RECSYS__REDIS__URL".to_owned(), "redis://10.0.0.2:6379".to_owned()),
            ("RECSYS__REDIS__PREFIX".to_owned(), "t1:".to_owned()),
            ("RECSYS__MODEL__ARTIFACTS_DIR".to_owned(), "/srv/models".to_owned()),
            ("RECSYS__UPDATER__METRICS_LISTEN".to_owned(), "0.0.0.0:9999".to_owned()),
            ("RECSYS__UPDATER__SOLVER".to_owned(), "cg".to_owned()),
        ]);
        let s = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(s.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(s.redis.url, "redis://10.0.0.2:6379");
        assert_eq!(s.redis.prefix, "t1:");
        assert_eq!(s.model.artifacts_dir, Path::new("/srv/models"));
        assert_eq!(s.updater.metrics_listen.port(), 9999);
        assert_eq!(s.updater.solver, FoldInSolver::Cg);
        let env = config::Map::from([("RECSYS__UPDATER__BATCH_MAX_EVENTS".to_owned(), "0".to_owned())]);
        let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("updater.batch_max_events"), "{err}");
    }
}
