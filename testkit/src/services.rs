//! The shared broker and Redis of the test suites, and the isolation every
//! test gets on them: its own topic prefix, consumer group and key prefix
//! ([`tag`]), and its keys deleted afterwards ([`KeysCleanup`], [`delete_keys`]).
//!
//! `RECSYS_TEST_KAFKA` (default 127.0.0.1:9092; `scripts/dev-up.sh` starts
//! tansu there) and `RECSYS_TEST_REDIS` (default redis://127.0.0.1:6379) name
//! them. A missing broker fails a broker test unless
//! `RECSYS_SKIP_BROKER_TESTS=1`.
//!
//! `RECSYS_TEST_REDIS_CLUSTER` (comma-separated seed nodes, e.g.
//! `redis://127.0.0.1:7000,redis://127.0.0.1:7001`; `scripts/dev-up.sh
//! --cluster` starts one there) runs the tests that take their Redis from
//! [`redis_config`] against that Redis Cluster instead of the single node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is the failure

use std::time::Duration;

/// The broker of the tests, or `None` when `RECSYS_SKIP_BROKER_TESTS=1`;
/// panics when none answers.
pub fn broker() -> Option<String> {
    if std::env::var("RECSYS_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("RECSYS_SKIP_BROKER_TESTS=1: skipping a real-broker test");
        return None;
    }
    let addr = std::env::var("RECSYS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
        panic!("no Kafka broker at {addr} ({e}): run scripts/dev-up.sh or set RECSYS_SKIP_BROKER_TESTS=1");
    }
    Some(addr)
}

/// The Redis URL of the tests (`RECSYS_TEST_REDIS`, default the local one).
pub fn redis_url() -> String {
    std::env::var("RECSYS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The seed nodes of `RECSYS_TEST_REDIS_CLUSTER`, when set.
pub fn redis_cluster_nodes() -> Option<Vec<String>> {
    let v = std::env::var("RECSYS_TEST_REDIS_CLUSTER").ok()?;
    let nodes: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// The Redis of the tests under key prefix `prefix`: the cluster of
/// `RECSYS_TEST_REDIS_CLUSTER` when set, else the single node of [`redis_url`].
pub fn redis_config(prefix: &str) -> common::RedisConfig {
    let base = common::RedisConfig { prefix: prefix.to_owned(), ..Default::default() };
    match redis_cluster_nodes() {
        Some(nodes) => common::RedisConfig { url: String::new(), cluster_nodes: nodes, ..base },
        None => common::RedisConfig { url: redis_url(), ..base },
    }
}

/// The `RECSYS__REDIS__…` variables that point a child process at `cfg`'s Redis.
pub fn redis_env(cfg: &common::RedisConfig) -> Vec<(String, String)> {
    vec![
        ("RECSYS__REDIS__URL".to_owned(), cfg.url.clone()),
        ("RECSYS__REDIS__CLUSTER_NODES".to_owned(), cfg.cluster_nodes.join(",")),
        ("RECSYS__REDIS__PREFIX".to_owned(), cfg.prefix.clone()),
    ]
}

/// A random tag (12 hex digits) for topic prefixes, consumer groups, key
/// prefixes and ids.
pub fn tag() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A local port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Deletes every key under `prefix` (a test's own), on every master of a cluster.
pub async fn delete_keys(conn: &mut common::redis_conn::RedisConn, prefix: &str) {
    let keys = conn.scan_all(&format!("{prefix}*")).await.unwrap();
    for chunk in keys.chunks(500) {
        // DEL of keys in several slots: the cluster client splits it per slot.
        let _: () = redis::cmd("DEL").arg(chunk).query_async(conn).await.unwrap();
    }
}

/// Deletes a test's keys from the shared Redis when dropped, also after a
/// failed assertion (a pass that SCANs the whole keyspace — the updater's
/// re-fold — slows down with every key left behind).
#[derive(Debug)]
pub struct KeysCleanup {
    url: String,
    cluster_nodes: Vec<String>,
    prefix: String,
}

impl KeysCleanup {
    /// Deletes the keys under `prefix` of the Redis at `url` when dropped.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> KeysCleanup {
        KeysCleanup { url: url.into(), cluster_nodes: Vec::new(), prefix: prefix.into() }
    }

    /// Deletes the keys under `cfg.prefix` of `cfg`'s Redis (a node or a cluster) when dropped.
    pub fn for_config(cfg: &common::RedisConfig) -> KeysCleanup {
        KeysCleanup { url: cfg.url.clone(), cluster_nodes: cfg.cluster_nodes.clone(), prefix: cfg.prefix.clone() }
    }
}

impl Drop for KeysCleanup {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        if !self.cluster_nodes.is_empty() {
            // KEYS goes to every master; DEL one key at a time (keys of several slots).
            let Ok(mut c) =
                redis::cluster::ClusterClient::new(self.cluster_nodes.clone()).and_then(|c| c.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c).unwrap_or_default();
            for k in keys {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&k).query(&mut c);
            }
            return;
        }
        let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
    }
}
