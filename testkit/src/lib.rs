//! The test harness the crates share, so a check is written once and every
//! binary runs the same one. Dev-only: it appears only under
//! `[dev-dependencies]`, and in `e2e`, the crate of the whole-system tests.
//!
//! - [`config_cli`]: `config check` / `config print` through a binary — the
//!   shipped file passes, a misspelt key in the file or in a `RECSYS__`
//!   variable stops the binary naming it, secrets never print, strings stay
//!   strings.
//! - [`services`]: the shared broker and Redis of the suites (`broker()`,
//!   `redis_url()`), a random [`services::tag`] per test, and its keys deleted
//!   afterwards ([`services::KeysCleanup`]).
//! - [`golden`]: committed documents compared with what the code produces
//!   (`RECSYS_BLESS=1` rewrites them).
//! - [`bench_model`]: a synthetic model artifact of any size for the benches.

pub mod bench_model;
pub mod config_cli;
pub mod golden;
pub mod services;
