//! Typed configuration: `[tracking]`, `[kafka]` and `[redis]` of
//! `configs/recsys.toml`, then `RECSYS__SECTION__KEY` environment variables.

use std::time::Duration;

use common::config::first_failure;
use common::{KafkaConfig, RedisConfig};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The tracking task's view of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub tracking: TrackingConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
}

/// `[tracking]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackingConfig {
    /// Run the tracking task inside `recsys-updater`.
    pub enabled: bool,
    /// Kafka consumer group of the tracking task (its own: it reads
    /// `recsys.events` beside the updater's group, and `recsys.impressions`).
    pub group_id: String,
    /// A `view` of a recommended item at most this long after the impression is a click, s.
    pub click_window_s: u64,
    /// An `addtocart` / `transaction` at most this long after the impression is a conversion, s.
    pub conversion_window_s: u64,
    /// Most impressions remembered per user (the newest are kept).
    pub max_impressions_per_user: usize,
    /// Most not-yet-attributed events remembered per user, waiting for an
    /// impression consumed after them (the newest are kept).
    pub max_pending_events_per_user: usize,
    /// How long (processing time) an event waits for an impression that is
    /// read after it, s. Covers the skew between reading the two topics (they
    /// are fetched concurrently; after an outage the events topic, with
    /// smaller records, runs ahead), not user behaviour.
    pub pending_grace_s: u64,
    /// A batch closes at this many records ...
    pub batch_max_records: usize,
    /// ... or this long after its first record, ms.
    pub batch_max_wait_ms: u64,
    /// librdkafka `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: u64,
    /// librdkafka `session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// How long hourly counters are kept, hours.
    pub hourly_retention_h: u64,
    /// First delay before retrying a batch whose Redis write failed, ms (doubling, capped at 5 s).
    pub retry_backoff_ms: u64,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            enabled: true,
            group_id: "recsys-tracking".into(),
            click_window_s: 1_800,
            conversion_window_s: 86_400,
            max_impressions_per_user: 20,
            max_pending_events_per_user: 20,
            pending_grace_s: 600,
            batch_max_records: 512,
            batch_max_wait_ms: 20,
            fetch_wait_max_ms: 10,
            session_timeout_ms: 10_000,
            hourly_retention_h: 24 * 14,
            retry_backoff_ms: 100,
        }
    }
}

/// What the attribution script needs to know of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub click_ms: i64,
    pub conversion_ms: i64,
    pub max_impressions: usize,
    pub max_pending: usize,
    pub grace_ms: i64,
    /// TTL of `track:{user}`, s: the longest window plus the grace.
    pub state_ttl_s: u64,
    /// TTL of `stats_hourly:*`, s.
    pub hourly_ttl_s: u64,
}

impl TrackingConfig {
    pub fn batch_max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }

    /// The attribution parameters.
    pub fn windows(&self) -> Windows {
        let longest = self.click_window_s.max(self.conversion_window_s);
        Windows {
            click_ms: (self.click_window_s * 1_000) as i64,
            conversion_ms: (self.conversion_window_s * 1_000) as i64,
            max_impressions: self.max_impressions_per_user,
            max_pending: self.max_pending_events_per_user,
            grace_ms: (self.pending_grace_s * 1_000) as i64,
            state_ttl_s: longest + self.pending_grace_s,
            hourly_ttl_s: self.hourly_retention_h * 3_600,
        }
    }
}

impl Settings {
    /// The consumer of both topics: commits only what it stored after the
    /// Redis write, starts a new group at the beginning of the log.
    pub fn consumer_config(&self) -> ClientConfig {
        let t = &self.tracking;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("group.id", &t.group_id)
            .set("client.id", "recsys-tracking")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", t.fetch_wait_max_ms.to_string())
            .set("fetch.min.bytes", "1")
            .set("session.timeout.ms", t.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (t.session_timeout_ms / 5).max(100).to_string())
            // Range: with equal partition counts a member gets the same
            // partition numbers of both topics, so one user's impressions and
            // events usually meet in one process (not needed for correctness:
            // the join state is in Redis).
            .set("partition.assignment.strategy", "range")
            .set("statistics.interval.ms", "1000");
        c
    }
}

impl common::config::Settings for Settings {
    /// Rejects values that cannot work, naming the key.
    fn validate(&self) -> Result<(), String> {
        let t = &self.tracking;
        // Windows over a year would overflow nothing but make no sense; the
        // bound keeps ms arithmetic far from i64 limits and Lua's 2^53.
        let year = 366 * 86_400;
        first_failure(&[
            (!t.group_id.trim().is_empty(), "tracking.group_id must not be empty"),
            (t.click_window_s > 0 && t.click_window_s <= year, "tracking.click_window_s must be in 1..=31622400"),
            (
                t.conversion_window_s > 0 && t.conversion_window_s <= year,
                "tracking.conversion_window_s must be in 1..=31622400",
            ),
            (
                t.max_impressions_per_user > 0 && t.max_impressions_per_user <= 1_000,
                "tracking.max_impressions_per_user must be in 1..=1000",
            ),
            (t.max_pending_events_per_user <= 1_000, "tracking.max_pending_events_per_user must be ≤ 1000"),
            (t.pending_grace_s <= year, "tracking.pending_grace_s must be ≤ 31622400"),
            (
                t.batch_max_records > 0 && t.batch_max_records <= 10_000,
                "tracking.batch_max_records must be in 1..=10000",
            ),
            (t.batch_max_wait_ms > 0, "tracking.batch_max_wait_ms must be > 0"),
            (t.session_timeout_ms >= 1_000, "tracking.session_timeout_ms must be ≥ 1000"),
            (t.hourly_retention_h > 0, "tracking.hourly_retention_h must be > 0"),
            (t.retry_backoff_ms > 0, "tracking.retry_backoff_ms must be > 0"),
        ])?;
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
        let w = s.tracking.windows();
        assert_eq!((w.click_ms, w.conversion_ms), (1_800_000, 86_400_000));
        assert_eq!(w.state_ttl_s, 86_400 + 600);
    }

    #[test]
    fn environment_overrides_and_validation() {
        let env = config::Map::from([
            ("RECSYS__TRACKING__ENABLED".to_owned(), "false".to_owned()),
            ("RECSYS__TRACKING__CLICK_WINDOW_S".to_owned(), "60".to_owned()),
            ("RECSYS__TRACKING__GROUP_ID".to_owned(), "g2".to_owned()),
        ]);
        let s = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap();
        assert!(!s.tracking.enabled);
        assert_eq!(s.tracking.click_window_s, 60);
        assert_eq!(s.tracking.group_id, "g2");
        for (key, value) in [("CLICK_WINDOW_S", "0"), ("MAX_IMPRESSIONS_PER_USER", "0"), ("BATCH_MAX_RECORDS", "0")] {
            let env = config::Map::from([(format!("RECSYS__TRACKING__{key}"), value.to_owned())]);
            let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
            assert!(err.contains(&format!("tracking.{}", key.to_lowercase())), "{err}");
        }
    }
}
