//! Tests of recsys as a whole, and the harness they share.
//!
//! - `tests/deployment.rs`: `docker-compose.kafka.yml`, the `Dockerfile`,
//!   `configs/recsys.toml` and `configs/prometheus/prometheus.yml` agree —
//!   ports, topics, environment overrides, mounted files, binaries.
//! - `tests/end_to_end.rs`: replay → train → serve → a new user's list turns
//!   personal → a new model is announced and swapped without a failed request
//!   or a lost event → a worse model is rejected, against the real broker and
//!   Redis.
//! - `tests/day_one.rs`: a fresh deployment (empty topics, no model) answers
//!   popular from the live ranking from its first events, the scheduled
//!   trainer trains the first model by itself once there is enough data, and
//!   every shopper turns personal without a restart or a failed request.
//! - `tests/broker_restart.rs`: a private broker stopped and restarted under
//!   ingest load: 503 while it is down, every acknowledged event in the topic
//!   exactly once, the updater resumes by itself.
//! - `tests/tracking.rs`: tracking's scripted scenario counted exactly once
//!   across a kill and a replay, as Redis, the hosting updater's `/metrics`
//!   and serving's `/v1/stats` report it.
//! - `examples/bench_attribution.rs`: the updater's per-event cost with and
//!   without tracking's attribution.
//!
//! This library: one configuration file per test ([`write_config`]) that every
//! process reads, as in a deployment, and the processes' real `run` functions
//! started in-process on port-0 listeners ([`start_ingest`], …).

#![allow(clippy::unwrap_used)] // a test harness: a failure is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The shared broker and Redis of the suites and a random tag per test
/// (`testkit::services`).
pub use testkit::services::{broker, redis_url, tag};

/// Writes `dir/recsys.toml`: the shipped `configs/recsys.toml` isolated by
/// `tag` (topic prefix, Redis prefix, consumer group, artifacts under `dir`),
/// with a small fast model, then `extra` (`"section.key"`, value) on top.
pub fn write_config(dir: &Path, brokers: &str, tag: &str, extra: &[(&str, toml::Value)]) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut t: toml::Table = std::fs::read_to_string(repo.join("configs/recsys.toml")).unwrap().parse().unwrap();
    let mut set = |path: &str, v: toml::Value| {
        let parts: Vec<&str> = path.split('.').collect();
        let (last, tables) = parts.split_last().unwrap();
        let mut cur = &mut t;
        for p in tables {
            cur = cur.get_mut(*p).and_then(|v| v.as_table_mut()).unwrap_or_else(|| panic!("no table {p}"));
        }
        assert!(cur.contains_key(*last), "configs/recsys.toml has no {path}");
        cur.insert((*last).to_owned(), v);
    };
    set("kafka.brokers", brokers.into());
    set("kafka.partitions", 2.into());
    set("kafka.topic_prefix", format!("e2e-{tag}.").into());
    // The single node, or the cluster of RECSYS_TEST_REDIS_CLUSTER.
    let redis = testkit::services::redis_config(&format!("e2e-{tag}:"));
    set("redis.url", redis.url.into());
    set("redis.cluster_nodes", redis.cluster_nodes.into_iter().map(toml::Value::from).collect::<Vec<_>>().into());
    set("redis.prefix", redis.prefix.into());
    set("model.artifacts_dir", dir.join("models").display().to_string().into());
    set("training.factors", 16.into());
    set("training.iterations", 6.into());
    set("training.threads", 2.into());
    set("trainer.publish.similar_size", 10.into());
    set("trainer.kafka_idle_timeout_ms", 15_000.into());
    set("updater.group_id", format!("e2e-{tag}").into());
    set("tracking.group_id", format!("e2e-tracking-{tag}").into());
    // Only an announcement may swap serving's model (not its CURRENT poll).
    set("serving.model_poll_interval_s", 3_600.into());
    for (k, v) in extra {
        set(k, v.clone());
    }
    let f = dir.join("recsys.toml");
    std::fs::write(&f, toml::to_string(&t).unwrap()).unwrap();
    f
}

/// The empty environment: settings come from the file alone.
pub fn no_env() -> Option<config::Map<String, String>> {
    Some(config::Map::new())
}

/// A process running in this test: its address and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop, as on SIGTERM; fails the test if `run` failed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("graceful stop").unwrap().unwrap();
    }

    /// `run` returned by itself (the process would have exited).
    pub fn exited(&self) -> bool {
        self.task.is_finished()
    }

    /// What `run` returned (after [`Running::exited`]).
    pub async fn exit_result(self) -> anyhow::Result<()> {
        self.task.await.unwrap()
    }
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn spawn<F>(addr: SocketAddr, f: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, rx) = oneshot::channel::<()>();
    Running { addr, stop, task: tokio::spawn(f(rx)) }
}

/// `recsys-ingest serve`.
pub async fn start_ingest(cfg: &Path) -> Running {
    start_ingest_at(cfg, "127.0.0.1:0".parse().unwrap()).await
}

/// `recsys-ingest serve` on `addr` (a replacement on its predecessor's port).
pub async fn start_ingest_at(cfg: &Path, addr: SocketAddr) -> Running {
    let s = common::config::load_settings::<ingest::config::Settings>(Some(cfg), no_env()).unwrap();
    let producer = ingest::kafka::producer(&s).unwrap();
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    spawn(addr, |rx| {
        ingest::run(s, l, producer, async move {
            let _ = rx.await;
        })
    })
}

/// `recsys-updater` (the pipeline; tracking has tests of its own).
pub async fn start_updater(cfg: &Path) -> Running {
    let s = common::config::load_settings::<updater::config::Settings>(Some(cfg), no_env()).unwrap();
    let (l, addr) = listener().await;
    let deps = updater::Deps::connect(&s, l).await.unwrap();
    spawn(addr, |rx| {
        updater::run(s, deps, async move {
            let _ = rx.await;
        })
    })
}

/// `recsys-serving`.
pub async fn start_serving(cfg: &Path) -> Running {
    start_serving_at(cfg, "127.0.0.1:0".parse().unwrap()).await
}

/// `recsys-serving` on `addr` (an origin another process must know beforehand).
pub async fn start_serving_at(cfg: &Path, addr: SocketAddr) -> Running {
    let s = common::config::load_settings::<serving::config::Settings>(Some(cfg), no_env()).unwrap();
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    let deps = serving::Deps::connect(&s, l).unwrap();
    spawn(addr, |rx| {
        serving::run(s, deps, async move {
            let _ = rx.await;
        })
    })
}

/// Messages in `topic` (sum of the partitions' high watermarks).
pub fn topic_size(brokers: &str, topic: &str) -> i64 {
    high_watermarks(brokers, topic).iter().map(|p| p.1).sum()
}

/// `(partition, high watermark)` of every partition of `topic`.
pub fn high_watermarks(brokers: &str, topic: &str) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// Every payload of `topic`, from the beginning to the current end.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let ends = high_watermarks(brokers, topic);
    let want: i64 = ends.iter().map(|e| e.1).sum();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("e2e-read-{}", tag()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, _) in &ends {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while (out.len() as i64) < want {
        assert!(Instant::now() < deadline, "read {} of {want} messages of {topic}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(rdkafka::Message::payload(&m.unwrap()).unwrap_or_default().to_vec());
        }
    }
    out
}

/// Polls `f` every 200 ms until it is true; fails the test after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Views per item of `user`'s history in Redis (`hist:{user}`).
pub async fn history(
    redis: &mut common::redis_conn::RedisConn,
    keys: &schemas::RedisKeys,
    user: &str,
) -> std::collections::BTreeMap<String, u64> {
    let h: std::collections::BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(keys.hist(&schemas::UserId::parse(user).unwrap())).query_async(redis).await.unwrap();
    // `@p{partition}` fields are the history's exactly-once guards, not items.
    h.into_iter()
        .filter(|(item, _)| !item.starts_with('@'))
        .map(|(item, v)| (item, v.split(',').next().unwrap().parse().unwrap()))
        .collect()
}

/// A view event now.
pub fn view(user: &str, item: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    serde_json::json!({"ts": now, "user_id": user, "item_id": item, "event": "view"})
}

/// Deletes every Redis key under `prefix` (a test's own), so test runs do not
/// pile up keys in the shared Redis (and slow every SCAN of the others).
pub async fn cleanup_redis(prefix: &str) {
    let cfg = testkit::services::redis_config(prefix);
    let mut c = common::redis_conn::connect(&cfg).await.unwrap();
    testkit::services::delete_keys(&mut c, prefix).await;
}
