//! What every recsys process shares, so each binary stays a thin `main`.
//!
//! - [`config`]: the layered loader (`configs/recsys.toml`, then
//!   `RECSYS__SECTION__KEY` environment variables) generic over each process's
//!   own `Settings`, and the sections several processes read: [`KafkaConfig`],
//!   [`RedisConfig`], [`ModelConfig`].
//! - [`kafka`]: topic creation at start-up.
//! - [`redis_conn`]: a reconnecting Redis connection with a response timeout.
//! - [`signal`]: SIGINT/SIGTERM as a future, for graceful shutdown.
//! - [`telemetry`]: `tracing` set up the same way in every binary.

pub mod config;
pub mod kafka;
pub mod redis_conn;
pub mod signal;
pub mod telemetry;

pub use config::{load_layered, KafkaConfig, ModelConfig, RedisConfig};
pub use signal::shutdown_signal;
