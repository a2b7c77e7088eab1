//! `recsys-serving config check` / `config print` through the binary: the
//! shipped file passes, a misspelt key in the file or in a `RECSYS__`
//! variable stops it with the name, and secrets never print.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/recsys.toml")
}

/// The binary with `args`, `env` and none of the caller's RECSYS variables.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recsys-serving"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RECSYS") {
            c.env_remove(k);
        }
    }
    c.args(args).envs(env.iter().copied()).output().expect("running the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_shipped_file_checks_ok_and_names_the_file() {
    let f = shipped();
    let out = run(&["config", "check", "--config", f.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok") && stdout.contains("configs/recsys.toml"), "{stdout}");
    // RECSYS_CONFIG names the file when no flag does.
    let out = run(&["config", "check"], &[("RECSYS_CONFIG", f.to_str().unwrap())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn an_unknown_key_in_the_file_fails_with_its_name_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("recsys.toml");
    let shipped = std::fs::read_to_string(shipped()).unwrap();
    std::fs::write(&f, shipped.replacen("[serving]\n", "[serving]\nlisten_typo = 1\n", 1)).unwrap();
    let out = run(&["config", "check", "--config", f.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`serving.listen_typo`") && stderr.contains(f.to_str().unwrap()), "{stderr}");
}

#[test]
fn an_unknown_variable_fails_with_its_name() {
    let f = shipped();
    let var = "RECSYS__SERVING__LISTEN_TYPO";
    let out = run(&["config", "check", "--config", f.to_str().unwrap()], &[(var, "1")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(var), "{}", text(&out.stderr));
    // A section no process reads fails every process.
    let out = run(&["config", "check", "--config", f.to_str().unwrap()], &[("RECSYS__NOPE__X", "1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("RECSYS__NOPE__X"), "{}", text(&out.stderr));
}

#[test]
fn print_shows_the_effective_configuration_with_secrets_masked() {
    let f = shipped();
    let env = [
        ("RECSYS__REDIS__URL", "redis://:hunter2-pw@cache:6379/0"),
        ("RECSYS__KAFKA__TOPIC_PREFIX", "0123."),
        ("RECSYS__ADMIN__TOKEN", "s3cret-admin-token-0123"),
    ];
    let out = run(&["config", "print", "--config", f.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter2-pw") && !stdout.contains("s3cret-admin-token-0123"), "{stdout}");
    let t: toml::Table = stdout.parse().expect("the output is TOML");
    assert!(t.contains_key("serving"), "{stdout}");
    assert_eq!(t["kafka"]["topic_prefix"].as_str(), Some("0123."), "strings stay strings");
}
