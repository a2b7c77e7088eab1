//! The shared broker and Redis of the test suites, and the isolation every
//! test gets on them: its own topic prefix, consumer group and key prefix
//! ([`tag`]), and its keys deleted afterwards ([`KeysCleanup`], [`delete_keys`]).
//!
//! `RECSYS_TEST_KAFKA` (default 127.0.0.1:9092; `scripts/dev-up.sh` starts
//! tansu there) and `RECSYS_TEST_REDIS` (default redis://127.0.0.1:6379) name
//! them. A missing broker fails a broker test unless
//! `RECSYS_SKIP_BROKER_TESTS=1`.

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

/// A random tag (12 hex digits) for topic prefixes, consumer groups, key
/// prefixes and ids.
pub fn tag() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// A local port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Deletes every key under `prefix` (a test's own).
pub async fn delete_keys(conn: &mut redis::aio::ConnectionManager, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(conn).await.unwrap();
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(conn).await.unwrap();
    }
}

/// Deletes a test's keys from the shared Redis when dropped, also after a
/// failed assertion (a pass that SCANs the whole keyspace — the updater's
/// re-fold — slows down with every key left behind).
#[derive(Debug)]
pub struct KeysCleanup {
    url: String,
    prefix: String,
}

impl KeysCleanup {
    /// Deletes the keys under `prefix` of the Redis at `url` when dropped.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> KeysCleanup {
        KeysCleanup { url: url.into(), prefix: prefix.into() }
    }
}

impl Drop for KeysCleanup {
    fn drop(&mut self) {
        let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query(&mut c).unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut c);
        }
    }
}
