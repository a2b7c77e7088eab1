//! Typed configuration: `configs/recsys.toml` (`[ingest]`, `[kafka]`), then
//! `RECSYS__SECTION__KEY` environment variables, then command-line flags
//! (applied by `main`). Sections of the other processes are ignored.

use std::net::SocketAddr;
use std::time::Duration;

pub use common::KafkaConfig;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The ingest process's view of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub ingest: IngestConfig,
    pub kafka: KafkaConfig,
}

/// Producer compression. Snappy is deliberately absent: the local broker's
/// sqlite engine cannot fetch snappy batches (`../shared/KAFKA.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }
}

/// `[ingest]`: the HTTP server, the producer's delivery bounds and the event limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Most events in one JSON array (more → 413).
    pub max_batch: usize,
    /// Whole-request deadline, ms (exceeded → 503 `request_timeout`). Must exceed
    /// `message_timeout_ms` so a broker timeout is reported as such.
    pub request_timeout_ms: u64,
    /// Requests processed at once; further requests are shed with 503 `overloaded`.
    pub concurrency_limit: usize,
    /// librdkafka `message.timeout.ms`: how long a message may wait for the
    /// broker's acknowledgement before the request fails with 503.
    pub message_timeout_ms: u64,
    /// librdkafka `linger.ms`: batching delay before a send.
    pub linger_ms: u64,
    /// Producer compression: "none", "gzip" or "lz4".
    pub compression: Compression,
    /// On shutdown, how long to wait for the producer to flush, ms.
    pub flush_timeout_ms: u64,
    /// On shutdown, how long the process waits for its tasks (requests in
    /// flight, background loops) before aborting the rest, s
    /// (docs/design.md §8).
    pub drain_deadline_s: u64,
    /// When every produce has failed with an error answered by the broker
    /// (not a timeout) for this long, the producer is considered stuck:
    /// `/health` turns 503 and the process exits to be replaced, ms.
    pub stuck_after_ms: u64,
    /// `replay`: most deliveries awaiting the broker's acknowledgement at once.
    pub replay_max_in_flight: usize,
    /// `replay`: librdkafka `message.timeout.ms` of a bulk load, ms. Longer
    /// than the API's: with many messages in flight, a broker slower than the
    /// file keeps them queued for seconds, and a timeout there fails the replay.
    pub replay_message_timeout_ms: u64,
    /// `replay`: the file's clock, `auto` (detected from its values), `s`,
    /// `ms`, `us`, `ns` or `iso` (docs/data-format.md).
    pub replay_time_unit: String,
    /// `replay`: header names of fields under other names, `user_id=customer,item_id=sku`.
    pub replay_columns: String,
    /// Web origins (`https://shop.example`, exact: scheme, host and port)
    /// whose pages may post events from the browser: they get CORS headers,
    /// preflights included. Empty: no CORS headers at all. From the
    /// environment: comma-separated.
    #[serde(deserialize_with = "common::config::list_or_commas")]
    pub cors_origins: Vec<String>,
    /// Earliest accepted event `ts`, epoch ms.
    pub min_ts: i64,
    /// How far past the receiver's clock an event `ts` may be, ms.
    pub max_future_ms: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let limits = schemas::EventLimits::default();
        IngestConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_bytes: 1 << 20,
            max_batch: 10_000,
            request_timeout_ms: 10_000,
            concurrency_limit: 256,
            message_timeout_ms: 5_000,
            linger_ms: 5,
            compression: Compression::Lz4,
            flush_timeout_ms: 10_000,
            drain_deadline_s: 30,
            stuck_after_ms: 30_000,
            replay_max_in_flight: 50_000,
            replay_message_timeout_ms: 120_000,
            replay_time_unit: "auto".into(),
            replay_columns: String::new(),
            cors_origins: Vec::new(),
            min_ts: limits.min_ts,
            max_future_ms: limits.max_future_ms,
        }
    }
}

impl IngestConfig {
    /// The event checks applied to every input.
    pub fn limits(&self) -> schemas::EventLimits {
        schemas::EventLimits { min_ts: self.min_ts, max_future_ms: self.max_future_ms }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.flush_timeout_ms)
    }
}

impl Settings {
    /// The producer's librdkafka settings: acknowledged by all in-sync
    /// replicas, idempotent (no duplicates or reordering from internal retries),
    /// a bounded delivery time, and the Java client's key hash (`murmur2`) so a
    /// storefront producing directly with any client puts a user in the same
    /// partition as ingest does.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", self.ingest.message_timeout_ms.to_string())
            .set("linger.ms", self.ingest.linger_ms.to_string())
            .set("compression.type", self.ingest.compression.as_str())
            .set("partitioner", "murmur2_random")
            .set("client.id", "recsys-ingest");
        c
    }
}

impl common::config::Settings for Settings {
    /// Rejects values that cannot work, naming the key.
    fn validate(&self) -> Result<(), String> {
        let i = &self.ingest;
        let checks: [(bool, &str); 9] = [
            (i.drain_deadline_s > 0, "ingest.drain_deadline_s must be > 0"),
            (i.max_body_bytes > 0, "ingest.max_body_bytes must be > 0"),
            (i.max_batch > 0, "ingest.max_batch must be > 0"),
            (i.concurrency_limit > 0, "ingest.concurrency_limit must be > 0"),
            (i.message_timeout_ms > 0, "ingest.message_timeout_ms must be > 0"),
            (i.linger_ms < i.message_timeout_ms, "ingest.linger_ms must be below ingest.message_timeout_ms"),
            (
                i.request_timeout_ms > i.message_timeout_ms,
                "ingest.request_timeout_ms must exceed ingest.message_timeout_ms",
            ),
            (i.replay_max_in_flight > 0, "ingest.replay_max_in_flight must be > 0"),
            (i.max_future_ms >= 0, "ingest.max_future_ms must be ≥ 0"),
        ];
        common::config::first_failure(&checks)?;
        i.replay_time_unit.parse::<schemas::csv::ClockOption>().map_err(|e| format!("ingest.replay_time_unit: {e}"))?;
        schemas::csv::ColumnMap::parse(&i.replay_columns).map_err(|e| format!("ingest.replay_columns: {e}"))?;
        for o in &i.cors_origins {
            check_origin(o).map_err(|e| format!("ingest.cors_origins: {o:?} {e}"))?;
        }
        self.kafka.validate()
    }
}

/// An origin as browsers send it in `Origin`: `http` or `https`, a host,
/// an optional port, nothing after (no path, not even `/`); CORS compares it
/// byte for byte, so anything else would never match.
fn check_origin(o: &str) -> Result<(), String> {
    let Some(rest) = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")) else {
        return Err("must start with http:// or https://".into());
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [")?;
            match after {
                "" => (h, None),
                _ => (h, Some(after.strip_prefix(':').ok_or("has something after the host")?)),
            }
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err("has an invalid port".into());
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')) {
        return Err("must be scheme://host[:port], with no path, query or trailing slash".into());
    }
    if o.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lowercase, as browsers send it".into());
    }
    axum::http::HeaderValue::from_str(o).map_err(|e| format!("is not a header value: {e}"))?;
    Ok(())
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
    fn environment_overrides_and_validation_names_the_key() {
        let env = config::Map::from([
            ("RECSYS__KAFKA__BROKERS".to_owned(), "10.0.0.1:9092".to_owned()),
            ("RECSYS__INGEST__LISTEN".to_owned(), "0.0.0.0:9999".to_owned()),
            ("RECSYS__INGEST__COMPRESSION".to_owned(), "none".to_owned()),
        ]);
        let s = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(s.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(s.ingest.listen.port(), 9999);
        assert_eq!(s.ingest.compression, Compression::None);

        let env = config::Map::from([("RECSYS__INGEST__REQUEST_TIMEOUT_MS".to_owned(), "1000".to_owned())]);
        let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("ingest.request_timeout_ms"), "{err}");
        let env = config::Map::from([("RECSYS__INGEST__COMPRESSION".to_owned(), "snappy".to_owned())]);
        assert!(load_settings::<Settings>(Some(&repo_config()), Some(env)).is_err(), "snappy must be refused");
    }

    #[test]
    fn cors_origins_must_be_exact_origins() {
        for good in ["https://shop.example", "http://127.0.0.1:8080", "http://localhost:3000", "http://[::1]:80"] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://shop.example/x",
            "https://",
            "*",
            "https://Shop.example",
            "https://a:port",
            "https://a b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad} accepted");
        }
        let mut s = Settings::default();
        s.ingest.cors_origins = vec!["https://shop.example".into(), "https://shop.example/".into()];
        let err = common::config::Settings::validate(&s).unwrap_err();
        assert!(err.contains("ingest.cors_origins") && err.contains("https://shop.example/"), "{err}");
    }
    #[test]
    fn cors_origins_come_from_the_file_or_one_comma_separated_variable() {
        let env = config::Map::from([(
            "RECSYS__INGEST__CORS_ORIGINS".to_owned(),
            "https://shop.example, http://localhost:3000,".to_owned(),
        )]);
        let s = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap();
        assert_eq!(s.ingest.cors_origins, ["https://shop.example", "http://localhost:3000"]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("recsys.toml");
        std::fs::write(&f, "[ingest]\ncors_origins = [\"https://a.example\"]\n").unwrap();
        let s = load_settings::<Settings>(Some(&f), Some(config::Map::new())).unwrap();
        assert_eq!(s.ingest.cors_origins, ["https://a.example"]);
        let env = config::Map::from([("RECSYS__INGEST__CORS_ORIGINS".to_owned(), "https://a.example/".to_owned())]);
        let err = load_settings::<Settings>(Some(&repo_config()), Some(env)).unwrap_err().to_string();
        assert!(err.contains("ingest.cors_origins"), "{err}");
    }
}
