//! Typed configuration: `[serving]`, `[kafka]`, `[redis]`, `[model]` from
//! `configs/recsys.toml`, then `RECSYS__SECTION__KEY` environment variables,
//! then command-line flags (applied by `main`).

use std::net::SocketAddr;
use std::time::Duration;

use common::config::first_failure;
use common::{KafkaConfig, ModelConfig, RedisConfig};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The serving process's view of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub serving: ServingConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub model: ModelConfig,
    /// `[admin]`: the bearer token of `POST /admin/v1/reload`.
    pub admin: common::AdminConfig,
    /// `[popularity]`: the live rankings the updater keeps, served by
    /// `GET /v1/popular?window=` and while no model list exists.
    pub popularity: schemas::PopularityConfig,
}

/// `[serving]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServingConfig {
    /// Address the HTTP API binds.
    pub listen: SocketAddr,
    /// Budget of the Redis read of one request, ms. Past it (or on any Redis
    /// error) the request is answered from memory with `"degraded": true`.
    pub redis_timeout_ms: u64,
    /// Budget of `GET /v1/stats` (a SCAN over the stats keys), ms.
    pub stats_timeout_ms: u64,
    /// Whole-request deadline of the `/v1/*` routes, ms (→ 503 `request_timeout`).
    pub request_timeout_ms: u64,
    /// `/v1/*` requests processed at once; excess ones are shed with 503 `overloaded`.
    pub concurrency_limit: usize,
    /// `Retry-After` of a shed request, seconds.
    pub retry_after_s: u64,
    /// `k` when the query does not give one.
    pub default_k: usize,
    /// A/B: share of users (0–100) in the treatment arm `als`; the others get
    /// the control arm `popular`.
    pub treatment_percent: u8,
    /// A/B: salt of the sticky user hash (change it to reshuffle the arms).
    pub ab_salt: String,
    /// Categories of a user's history used for `category_popular` (most-weighted first).
    pub history_categories: usize,
    /// How often the Redis `popular` and `popular:cat:{c}` lists and the live
    /// rankings `trending:{window}` are re-read, ms.
    pub popular_refresh_ms: u64,
    /// How often `CURRENT` is checked for a version an announcement missed, s.
    pub model_poll_interval_s: u64,
    /// Impressions waiting for the producer; more are dropped (and counted).
    pub impression_queue: usize,
    /// Producer: librdkafka `linger.ms` of impressions.
    pub impression_linger_ms: u64,
    /// Producer: librdkafka `message.timeout.ms`; an impression not acknowledged
    /// by then is dropped (and counted).
    pub impression_timeout_ms: u64,
    /// On shutdown, how long the process waits for its tasks (requests in
    /// flight, background loops) before aborting the rest, s
    /// (docs/design.md §8).
    pub drain_deadline_s: u64,
    /// Producer: librdkafka `queue.buffering.max.kbytes`, the memory impressions
    /// waiting for a slow or absent broker may take (then `producer_queue_full`).
    pub impression_buffer_kbytes: u64,
    /// Serve the demo shop page at `/demo/` (off in production: it lets anyone
    /// post events as any shopper through the page).
    pub demo: bool,
    /// Base URL of recsys-ingest as the demo page's browser reaches it; that
    /// ingest must list serving's origin in `[ingest] cors_origins`.
    pub demo_ingest_url: String,
    /// Follow the live catalog (`recsys.items`): items it marks unavailable
    /// are never answered, its categories apply to `category=`, and `/ready`
    /// waits until the topic is read up to where it stood at start.
    pub live_catalog: bool,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_timeout_ms: 50,
            stats_timeout_ms: 1_000,
            request_timeout_ms: 2_000,
            concurrency_limit: 1_024,
            retry_after_s: 1,
            default_k: 10,
            treatment_percent: 50,
            ab_salt: "recsys-ab-1".into(),
            history_categories: 3,
            popular_refresh_ms: 5_000,
            model_poll_interval_s: 30,
            impression_queue: 10_000,
            impression_linger_ms: 5,
            impression_timeout_ms: 5_000,
            drain_deadline_s: 30,
            impression_buffer_kbytes: 16_384,
            demo: false,
            demo_ingest_url: "http://127.0.0.1:8081".into(),
            live_catalog: true,
        }
    }
}

/// Largest `k` of any endpoint.
pub const MAX_K: usize = 100;

impl ServingConfig {
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn stats_timeout(&self) -> Duration {
        Duration::from_millis(self.stats_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Settings {
    /// The impression producer: fire-and-forget from the request's point of
    /// view; bounded by librdkafka's own queue and `impression_timeout_ms`.
    /// Not idempotent: an impression duplicated by a retry counts once more in
    /// CTR's denominator, which is cheaper than blocking the API on the broker.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("acks", "1")
            .set("linger.ms", self.serving.impression_linger_ms.to_string())
            .set("message.timeout.ms", self.serving.impression_timeout_ms.to_string())
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", self.serving.impression_buffer_kbytes.to_string())
            .set("compression.type", "lz4")
            .set("partitioner", "murmur2_random")
            .set("client.id", "recsys-serving");
        c
    }

    /// The consumer of `recsys.models`: every instance sees every
    /// announcement (own throw-away group, starting at the end; the version at
    /// start comes from `CURRENT`).
    pub fn announcement_consumer_config(&self, instance: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", format!("recsys-serving-models-{instance}"))
            .set("client.id", "recsys-serving-models")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "100")
            .set("session.timeout.ms", "10000");
        c
    }
}

/// Whether `url` is what `[serving] demo_ingest_url` must be: an http(s)
/// origin, which the demo page prefixes to `/v1/events` and which goes into
/// the page's Content-Security-Policy as it is.
pub fn valid_ingest_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return false;
    };
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

impl Settings {
    /// The consumer of `recsys.items`: every instance reads the whole topic
    /// (own throw-away group, partitions assigned from the beginning by
    /// [`crate::live_catalog`]; nothing committed).
    pub fn live_catalog_consumer_config(&self, instance: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", format!("recsys-serving-items-{instance}"))
            .set("client.id", "recsys-serving-items")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .set("session.timeout.ms", "10000");
        c
    }
}

impl common::config::Settings for Settings {
    /// Rejects values that cannot work, naming the key.
    fn validate(&self) -> Result<(), String> {
        let s = &self.serving;
        first_failure(&[
            (s.redis_timeout_ms > 0, "serving.redis_timeout_ms must be > 0"),
            (s.stats_timeout_ms > 0, "serving.stats_timeout_ms must be > 0"),
            (
                s.request_timeout_ms > s.redis_timeout_ms,
                "serving.request_timeout_ms must exceed serving.redis_timeout_ms",
            ),
            (s.concurrency_limit > 0, "serving.concurrency_limit must be > 0"),
            ((1..=MAX_K).contains(&s.default_k), "serving.default_k must be in 1..=100"),
            (s.treatment_percent <= 100, "serving.treatment_percent must be in 0..=100"),
            (s.history_categories > 0, "serving.history_categories must be > 0"),
            (s.popular_refresh_ms > 0, "serving.popular_refresh_ms must be > 0"),
            (s.drain_deadline_s > 0, "serving.drain_deadline_s must be > 0"),
            (s.model_poll_interval_s > 0, "serving.model_poll_interval_s must be > 0"),
            (s.impression_queue > 0, "serving.impression_queue must be > 0"),
            (s.impression_buffer_kbytes >= 1, "serving.impression_buffer_kbytes must be ≥ 1"),
            (
                s.impression_timeout_ms > s.impression_linger_ms,
                "serving.impression_timeout_ms must exceed impression_linger_ms",
            ),
            (
                !s.demo || valid_ingest_url(&s.demo_ingest_url),
                "serving.demo_ingest_url must be an http:// or https:// URL without path, query or fragment (e.g. http://127.0.0.1:8081)",
            ),
        ])?;
        self.popularity.validate()?;
        self.kafka.validate()?;
        self.admin.resolve()?;
        self.redis.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_url_is_an_origin() {
        for ok in ["http://127.0.0.1:8081", "https://ingest.shop.example", "http://[::1]:8081"] {
            assert!(valid_ingest_url(ok), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:8081",
            "http://",
            "ftp://x",
            "http://x/v1",
            "http://x?a=b",
            "http://x; script-src *",
            "http://x 'unsafe-inline'",
        ] {
            assert!(!valid_ingest_url(bad), "{bad}");
        }
    }
    use std::path::Path;

    use common::config::{load_settings, Settings as _};

    fn repo_config() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
    }

    #[test]
    fn the_shipped_file_parses_and_the_defaults_are_valid() {
        let s = load_settings::<Settings>(Some(&repo_config()), Some(config::Map::new())).unwrap();
        // The shipped file holds the documented defaults.
        assert_eq!(s.serving, ServingConfig::default());
        assert_eq!(s.redis, RedisConfig::default());
        Settings::default().validate().unwrap();
    }

    #[test]
    fn the_documented_block_is_the_defaults() {
        let notes = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let start = notes.find("```toml\n[serving]").expect("serving/README.md has the [serving] block");
        let block = &notes[start + 8..];
        let block = &block[..block.find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("recsys.toml");
        std::fs::write(&f, block).unwrap();
        let s = load_settings::<Settings>(Some(&f), Some(config::Map::new())).unwrap();
        assert_eq!(s.serving, ServingConfig::default(), "serving/README.md and the defaults disagree");
    }

    #[test]
    fn environment_overrides_and_validation_names_the_key() {
        let env = config::Map::from([
            ("RECSYS__SERVING__LISTEN".to_owned(), "0.0.0.0:9999".to_owned()),
            ("RECSYS__SERVING__TREATMENT_PERCENT".to_owned(), "10".to_owned()),
            ("RECSYS__REDIS__PREFIX".to_owned(), "t1:".to_owned()),
        ]);
        let s = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(s.serving.listen.port(), 9999);
        assert_eq!(s.serving.treatment_percent, 10);
        assert_eq!(s.redis.prefix, "t1:");
        let env = config::Map::from([("RECSYS__SERVING__TREATMENT_PERCENT".to_owned(), "101".to_owned())]);
        let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("serving.treatment_percent"), "{err}");
        let env = config::Map::from([("RECSYS__SERVING__REDIS_TIMEOUT_MS".to_owned(), "0".to_owned())]);
        let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("serving.redis_timeout_ms"), "{err}");
    }
}
