//! What every recsys process shares, so each binary stays a thin `main`.
//!
//! - [`config`]: the layered loader (`configs/recsys.toml`, then
//!   `RECSYS__SECTION__KEY` environment variables) generic over each process's
//!   own `Settings`, and the sections several processes read: [`KafkaConfig`],
//!   [`RedisConfig`], [`ModelConfig`].
//! - [`admin`]: the bearer token of the admin endpoints (constant-time check,
//!   never printed).
//! - [`http`]: concurrency, time and body bounds for the internal HTTP servers.
//! - [`kafka`]: topic creation at start-up.
//! - [`memory`]: a counting global allocator and the RSS / live-heap gauges.
//! - [`redis_conn`]: a reconnecting Redis connection with a response timeout.
//! - [`signal`]: SIGINT/SIGTERM as a future, for graceful shutdown.
//! - [`telemetry`]: `tracing` set up the same way in every binary.

pub mod admin;
pub mod config;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod redis_conn;
pub mod signal;
pub mod telemetry;

pub use admin::{AdminAuth, AdminConfig, AuthError, Secret};
pub use config::{load_layered, KafkaConfig, ModelConfig, RedisConfig};
pub use signal::shutdown_signal;
