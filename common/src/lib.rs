//! What every recsys process shares, so each binary stays a thin `main`.
//!
//! - [`config`]: the layered loader (`configs/recsys.toml`, then
//!   `RECSYS__SECTION__KEY` environment variables) generic over each process's
//!   own `Settings`, and the sections several processes read: [`KafkaConfig`],
//!   [`RedisConfig`], [`ModelConfig`].
//! - [`cli`]: `--log-format` and the `config check` / `config print`
//!   subcommands of every binary.
//! - [`admin`]: the bearer token of the admin endpoints (constant-time check,
//!   never printed).
//! - [`http`]: request ids, a span per request and panics answered 500 for
//!   every HTTP server; bounds for the internal ones.
//! - [`kafka`]: topic creation at start-up.
//! - [`memory`]: a counting global allocator, the live-heap gauge and the
//!   process collector (CPU, RSS, open files).
//! - [`redis_conn`]: a reconnecting Redis connection with a response timeout.
//! - [`signal`]: SIGINT/SIGTERM as a future, for graceful shutdown.
//! - [`tasks`]: background tasks whose panics stop the process instead of
//!   vanishing.
//! - [`telemetry`]: `tracing` set up the same way in every binary (text or JSON).

pub mod admin;
pub mod cli;
pub mod config;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod redis_conn;
pub mod signal;
pub mod tasks;
pub mod telemetry;

pub use admin::{AdminAuth, AdminConfig, AuthError, Secret};
pub use config::{load_layered, KafkaConfig, ModelConfig, RedisConfig};
pub use signal::shutdown_signal;
