//! The test harness the crates share, so a check is written once and every
//! binary runs the same one. Dev-only: it appears only under
//! `[dev-dependencies]`.
//!
//! - [`config_cli`]: `config check` / `config print` through a binary — the
//!   shipped file passes, a misspelt key in the file or in a `RECSYS__`
//!   variable stops the binary naming it, secrets never print, strings stay
//!   strings.

pub mod config_cli;
