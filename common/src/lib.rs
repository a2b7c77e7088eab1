//! What every recsys process shares, so each binary stays a thin `main`.
//!
//! - [`config`]: the layered loader (`configs/recsys.toml`, then
//!   `RECSYS__SECTION__KEY` environment variables) generic over each process's
//!   own `Settings`, and the sections several processes read: [`KafkaConfig`],
//!   [`RedisConfig`], [`ModelConfig`].
//!   [`config::load_settings`] loads and checks any [`config::Settings`].
//! - [`cli`]: `--log-format` and the `config check` / `config print`
//!   subcommands of every binary.
//! - [`process`]: every binary's `main` (heap counter, logging, `config`
//!   subcommand, runtime, exit codes).
//! - [`admin`]: the bearer token of the admin endpoints (constant-time check,
//!   never printed).
//! - [`http`]: request ids, a span per request and panics answered 500 for
//!   every HTTP server; bounds for the internal ones.
//! - [`kafka`]: topic creation at start-up.
//! - [`memory`]: a counting global allocator, the live-heap gauge and the
//!   process collector (CPU, RSS, open files).
//! - [`redis_conn`]: a reconnecting Redis connection with a response timeout.
//! - [`redis_value`]: readers of raw replies (the Lua scripts' nested arrays).
//! - [`shutdown`]: the one way to stop: a cancellation token (signals, a
//!   task's panic or end) and the tasks it joins within a drain deadline.
//! - [`signal`]: SIGINT/SIGTERM as a future.
//! - [`tasks`]: a task's panic or abort as an error instead of vanishing.
//! - [`follow`]: the model follower of the updater and serving
//!   (announcements and `CURRENT` → the process's swap).
//! - [`telemetry`]: `tracing` set up the same way in every binary (text or JSON).

pub mod admin;
pub mod cli;
pub mod config;
pub mod follow;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod process;
pub mod redis_conn;
pub mod redis_value;
pub mod shutdown;
pub mod signal;
pub mod tasks;
pub mod telemetry;

pub use admin::{AdminAuth, AdminConfig, AuthError, Secret};
pub use config::{load_layered, KafkaConfig, ModelConfig, RedisConfig};
pub use shutdown::Shutdown;
pub use signal::shutdown_signal;
