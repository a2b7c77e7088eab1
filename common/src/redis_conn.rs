//! A Redis connection that reconnects by itself (so recovery after a Redis
//! restart needs no process restart) and never waits longer than the
//! configured response timeout.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

/// Connects now (fails fast when Redis is unreachable at start-up).
pub async fn connect(cfg: &RedisConfig) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_with_config(redis::Client::open(cfg.url.as_str())?, manager_config(cfg)).await
}

/// Connects on first use (for processes that must start while Redis is down).
pub fn connect_lazy(cfg: &RedisConfig) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(redis::Client::open(cfg.url.as_str())?, manager_config(cfg))
}

fn manager_config(cfg: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout()))
        .set_response_timeout(Some(cfg.response_timeout()))
        // A handful of quick reconnect attempts per command; the caller's own
        // retry loop (with backoff) covers longer outages.
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_millis(200))
}
