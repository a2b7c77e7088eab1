//! The `config check` / `config print` contract every recsys binary keeps,
//! checked through the built binary (`env!("CARGO_BIN_EXE_…")` is only known
//! inside the binary's own package, so each package's test names a
//! [`Binary`] and calls these).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is the failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What `config print` printed, parsed.
pub use toml::Table;

/// One binary and what its own section looks like.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// `env!("CARGO_BIN_EXE_recsys-…")`.
    pub path: &'static str,
    /// A section this binary reads (`ingest`, `serving`, …).
    pub section: &'static str,
    /// A key that section does not have (a plausible typo).
    pub typo: &'static str,
    /// Variables this binary's test sets for `config print`, as (variable,
    /// value, the part of the value that must never be printed — empty for a
    /// plain setting such as a webhook's format).
    pub env: &'static [(&'static str, &'static str, &'static str)],
}

/// `configs/recsys.toml` of the repository.
pub fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Binary {
    /// The binary with `args`, `env` and none of the caller's RECSYS variables.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(self.path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RECSYS") {
                c.env_remove(k);
            }
        }
        c.args(args).envs(env.iter().copied()).output().expect("running the binary")
    }

    /// The shipped file checks ok and the output names it, given by flag or
    /// by `RECSYS_CONFIG`.
    pub fn shipped_file_checks_ok(&self) {
        let f = shipped();
        let out = self.run(&["config", "check", "--config", f.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("ok") && stdout.contains("configs/recsys.toml"), "{stdout}");
        let out = self.run(&["config", "check"], &[("RECSYS_CONFIG", f.to_str().unwrap())]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// A misspelt key in the file fails with exit 1, its name and the file.
    pub fn unknown_key_in_the_file_fails(&self) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("recsys.toml");
        let header = format!("[{}]\n", self.section);
        let shipped = std::fs::read_to_string(shipped()).unwrap();
        assert!(shipped.contains(&header), "the shipped file has no {header}");
        std::fs::write(&f, shipped.replacen(&header, &format!("{header}{} = 1\n", self.typo), 1)).unwrap();
        let out = self.run(&["config", "check", "--config", f.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let stderr = text(&out.stderr);
        let key = format!("`{}.{}`", self.section, self.typo);
        assert!(stderr.contains(&key) && stderr.contains(f.to_str().unwrap()), "{stderr}");
    }

    /// A misspelt `RECSYS__` variable, and one naming a section no process
    /// reads, fail with exit 1 and the variable's name.
    pub fn unknown_variable_fails(&self) {
        let f = shipped();
        let var = format!("RECSYS__{}__{}", self.section.to_uppercase(), self.typo.to_uppercase());
        for var in [var.as_str(), "RECSYS__NOPE__X"] {
            let out = self.run(&["config", "check", "--config", f.to_str().unwrap()], &[(var, "1")]);
            assert_eq!(out.status.code(), Some(1), "{var}: {}", text(&out.stdout));
            assert!(text(&out.stderr).contains(var), "{}", text(&out.stderr));
        }
    }

    /// `config print` is the effective configuration as TOML: secrets
    /// masked (a Redis URL's password and this binary's own secrets),
    /// number-looking strings kept as written. Returns the printed table.
    pub fn print_masks_secrets(&self) -> toml::Table {
        let f = shipped();
        let mut env =
            vec![("RECSYS__REDIS__URL", "redis://:hunter2-pw@cache:6379/0"), ("RECSYS__KAFKA__TOPIC_PREFIX", "0123.")];
        env.extend(self.env.iter().map(|(k, v, _)| (*k, *v)));
        let out = self.run(&["config", "print", "--config", f.to_str().unwrap()], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(!stdout.contains("hunter2-pw"), "{stdout}");
        for (var, _, secret) in self.env.iter().filter(|(_, _, s)| !s.is_empty()) {
            assert!(!stdout.contains(secret), "{var}'s secret printed: {stdout}");
        }
        let t: toml::Table = stdout.parse().expect("the output is TOML");
        assert!(t.contains_key(self.section), "{stdout}");
        assert_eq!(t["kafka"]["topic_prefix"].as_str(), Some("0123."), "strings stay strings");
        t
    }
}

/// The four tests every binary runs, for the [`Binary`] constant `$bin`:
/// `config_cli_tests!(BIN);`, or with a check of the printed configuration
/// after the shared ones: `config_cli_tests!(BIN, |printed| …);`.
#[macro_export]
macro_rules! config_cli_tests {
    ($bin:expr) => {
        $crate::config_cli_tests!($bin, |_printed: $crate::config_cli::Table| {});
    };
    ($bin:expr, $printed:expr) => {
        #[test]
        fn the_shipped_file_checks_ok_and_names_the_file() {
            $bin.shipped_file_checks_ok();
        }

        #[test]
        fn an_unknown_key_in_the_file_fails_with_its_name_and_the_file() {
            $bin.unknown_key_in_the_file_fails();
        }

        #[test]
        fn an_unknown_variable_fails_with_its_name() {
            $bin.unknown_variable_fails();
        }

        #[test]
        fn print_shows_the_effective_configuration_with_secrets_masked() {
            let check: fn($crate::config_cli::Table) = $printed;
            check($bin.print_masks_secrets());
        }
    };
}
