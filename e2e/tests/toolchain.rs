//! One toolchain everywhere: `rust-toolchain.toml` names the Rust release;
//! the Dockerfile's builder image, the workspace `rust-version`, the compiler
//! the suite runs with and every locked dependency must agree with it.
//!
//! Why a test: rustup follows the toolchain file here, so a lock that pins a
//! crate needing a newer Rust than the image's builds fine on a developer's
//! machine and fails only in `docker build --locked` (it did: a `rust:1.85`
//! image against crates that need 1.88). Reads `rust-toolchain.toml`,
//! `Dockerfile`, `Cargo.toml` and `cargo metadata` (offline, for the host
//! platform, whose packages the test build itself has fetched).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A Rust release; `1.88` (a `rust-version`) reads as `1.88.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RustVersion([u64; 3]);

impl RustVersion {
    fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(format!("{s:?} is not a Rust version (major.minor[.patch])"));
        }
        let mut v = [0u64; 3];
        for (slot, p) in v.iter_mut().zip(&parts) {
            *slot = p.parse().map_err(|_| format!("{s:?} is not a Rust version (major.minor[.patch])"))?;
        }
        Ok(Self(v))
    }

    /// Only `major.minor.patch`: a channel or image tag of `1.95` floats to
    /// whatever 1.95.x is newest when it is pulled.
    fn parse_exact(s: &str) -> Result<Self, String> {
        if s.split('.').count() != 3 {
            return Err(format!("{s:?} does not pin a release (write major.minor.patch)"));
        }
        Self::parse(s)
    }
}

impl fmt::Display for RustVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a}.{b}.{c}")
    }
}

/// The release `rust-toolchain.toml` pins (its `[toolchain] channel`), after
/// checking that it installs the components the suite runs.
fn toolchain_version(text: &str) -> Result<RustVersion, String> {
    let t: toml::Table = text.parse().map_err(|e| format!("rust-toolchain.toml: {e}"))?;
    let tc = t.get("toolchain").and_then(toml::Value::as_table).ok_or("rust-toolchain.toml: no [toolchain] table")?;
    let channel = tc.get("channel").and_then(toml::Value::as_str).ok_or("rust-toolchain.toml: no channel")?;
    let v = RustVersion::parse_exact(channel).map_err(|e| format!("rust-toolchain.toml channel: {e}"))?;
    let components: Vec<&str> = tc
        .get("components")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default();
    for needed in ["rustfmt", "clippy"] {
        if !components.contains(&needed) {
            return Err(format!(
                "rust-toolchain.toml: components {components:?} lack {needed} (scripts/test.sh runs it)"
            ));
        }
    }
    Ok(v)
}

/// Every `FROM rust:<tag>` of a Dockerfile must be the toolchain's release,
/// and there must be one (the builder). Returns each disagreement.
fn check_dockerfile(dockerfile: &str, toolchain: RustVersion) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut rust_images = 0;
    for (i, line) in dockerfile.lines().enumerate() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let Some(image) = words.find(|w| !w.starts_with("--")) else { continue };
        let (name, tag) = image.split_once(':').unwrap_or((image, "latest"));
        if name != "rust" && !name.ends_with("/rust") {
            continue;
        }
        rust_images += 1;
        let at = format!("Dockerfile:{}: FROM {image}", i + 1);
        let release = tag.split('-').next().unwrap_or(tag);
        let exact = release.split('.').count() == 3;
        match RustVersion::parse(release) {
            Ok(v) if v == toolchain && exact => {}
            Ok(v) if v.0[..2] != toolchain.0[..2] || exact => {
                problems.push(format!("{at} builds with Rust {release}, rust-toolchain.toml pins {toolchain}"))
            }
            Ok(_) => problems.push(format!(
                "{at}: tag {release} floats to the newest {release}.x when pulled; pin rust:{toolchain}-…"
            )),
            Err(_) => problems.push(format!("{at}: tag {tag:?} names no Rust release; pin rust:{toolchain}-…")),
        }
    }
    if rust_images == 0 {
        problems.push(format!("the Dockerfile has no `FROM rust:{toolchain}-…` builder stage"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The workspace's `rust-version` (the oldest Rust it promises to build with)
/// is the toolchain's release: `1.95` or `1.95.0` for a toolchain of 1.95.0.
fn check_workspace_rust_version(cargo_toml: &str, toolchain: RustVersion) -> Result<(), String> {
    let t: toml::Table = cargo_toml.parse().map_err(|e| format!("Cargo.toml: {e}"))?;
    let declared = t
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("rust-version"))
        .and_then(toml::Value::as_str)
        .ok_or("Cargo.toml: no [workspace.package] rust-version")?;
    let v = RustVersion::parse(declared).map_err(|e| format!("Cargo.toml rust-version: {e}"))?;
    if v == toolchain {
        Ok(())
    } else {
        Err(format!("Cargo.toml [workspace.package] rust-version = {declared:?}, rust-toolchain.toml pins {toolchain}"))
    }
}

/// Each package of a `cargo metadata` document whose `rust_version` is newer
/// than the toolchain, as "name version needs Rust X".
fn packages_needing_newer_rust(metadata: &serde_json::Value, toolchain: RustVersion) -> Vec<String> {
    let mut out = Vec::new();
    for p in metadata["packages"].as_array().expect("cargo metadata: no packages") {
        let Some(rv) = p["rust_version"].as_str() else { continue };
        let needed = RustVersion::parse(rv).unwrap_or_else(|e| panic!("{}: rust_version {e}", p["name"]));
        if needed > toolchain {
            out.push(format!("{} {} needs Rust {rv}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()));
        }
    }
    out.sort();
    out
}

/// `rustc -vV` as run in the repository (so through rustup's reading of the
/// toolchain file, or whatever `RUSTUP_TOOLCHAIN` / `cargo +x` chose).
fn rustc_vv() -> String {
    let out = Command::new("rustc").arg("-vV").current_dir(repo()).output().expect("run rustc -vV");
    assert!(out.status.success(), "rustc -vV: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rustc_field(vv: &str, key: &str) -> String {
    vv.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("rustc -vV has no {key}: {vv}"))
        .trim()
        .to_owned()
}

/// The lock's packages for the host platform: offline first (a workspace
/// that has been built has them all), from the registry when a package's
/// manifest has not been downloaded yet.
fn locked_metadata() -> serde_json::Value {
    let host = rustc_field(&rustc_vv(), "host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let run = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version", "1", "--locked", "--filter-platform", &host]);
        if offline {
            cmd.arg("--offline");
        }
        cmd.current_dir(repo()).output().expect("run cargo metadata")
    };
    let offline = run(true);
    let out = if offline.status.success() {
        offline
    } else {
        let online = run(false);
        assert!(
            online.status.success(),
            "cargo metadata --locked (offline: {}): {}",
            String::from_utf8_lossy(&offline.stderr).trim(),
            String::from_utf8_lossy(&online.stderr).trim()
        );
        online
    };
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

fn pinned() -> RustVersion {
    toolchain_version(&read("rust-toolchain.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn no_locked_package_needs_a_newer_rust_than_the_toolchain() {
    let toolchain = pinned();
    let meta = locked_metadata();
    assert!(meta["packages"].as_array().unwrap().len() > 100, "cargo metadata listed too few packages");
    let too_new = packages_needing_newer_rust(&meta, toolchain);
    assert!(
        too_new.is_empty(),
        "Cargo.lock pins packages that need a newer Rust than rust-toolchain.toml's {toolchain}, so \
         `docker build` (rust:{toolchain}) fails: {}. Pin older compatible versions (`cargo update -p NAME \
         --precise VERSION`) or move every toolchain pin together.",
        too_new.join("; ")
    );
}

#[test]
fn the_builder_image_and_workspace_rust_version_are_the_toolchain_files() {
    let toolchain = pinned();
    if let Err(problems) = check_dockerfile(&read("Dockerfile"), toolchain) {
        panic!("{}", problems.join("\n"));
    }
    check_workspace_rust_version(&read("Cargo.toml"), toolchain).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_suite_runs_with_the_pinned_compiler() {
    // scripts/test.sh (CI) runs cargo in the repository, so rustup picks the
    // toolchain file; a `cargo +other test` or a stale RUSTUP_TOOLCHAIN
    // tests with a compiler the image does not have.
    let toolchain = pinned();
    let vv = rustc_vv();
    let release = RustVersion::parse_exact(&rustc_field(&vv, "release")).unwrap();
    assert_eq!(release, toolchain, "rustc in the repository is {release}, rust-toolchain.toml pins {toolchain}");
}

// The checks themselves fail on what they are meant to catch.

/// The builder line of the Dockerfile before the toolchain was pinned.
const DOCKERFILE_WITH_RUST_1_85: &str = "\
# ---- build ----
FROM rust:1.85-bookworm AS build
RUN cargo build --release --locked --bin recsys-serving
FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
";

#[test]
fn the_dockerfile_check_fails_on_the_rust_1_85_builder_and_on_floating_tags() {
    let toolchain = RustVersion::parse_exact("1.95.0").unwrap();
    let problems = check_dockerfile(DOCKERFILE_WITH_RUST_1_85, toolchain).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0],
        "Dockerfile:2: FROM rust:1.85-bookworm builds with Rust 1.85, rust-toolchain.toml pins 1.95.0"
    );

    let ok = "FROM rust:1.95.0-bookworm AS chef\nFROM chef AS build\nFROM debian:bookworm-slim\n";
    check_dockerfile(ok, toolchain).unwrap();
    // A second stage on another release, a floating tag, a registry path.
    let mixed = "FROM rust:1.95.0-bookworm AS chef\nFROM --platform=linux/amd64 docker.io/library/rust:1.96.0 AS x\n\
                 from rust:1.95-slim\nFROM rust AS y\n";
    let problems = check_dockerfile(mixed, toolchain).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("builds with Rust 1.96.0"), "{problems:?}");
    assert!(problems[1].contains("floats to the newest 1.95.x"), "{problems:?}");
    assert!(problems[2].contains("\"latest\" names no Rust release"), "{problems:?}");
    // No rust image at all: nothing pins the builder.
    let problems = check_dockerfile("FROM debian:bookworm-slim\n", toolchain).unwrap_err();
    assert!(problems[0].contains("no `FROM rust:1.95.0-…` builder stage"), "{problems:?}");
}

#[test]
fn the_workspace_check_fails_on_another_rust_version() {
    let toolchain = RustVersion::parse_exact("1.95.0").unwrap();
    let ws = |rv: &str| format!("[workspace]\nmembers = []\n[workspace.package]\nrust-version = \"{rv}\"\n");
    check_workspace_rust_version(&ws("1.95"), toolchain).unwrap();
    check_workspace_rust_version(&ws("1.95.0"), toolchain).unwrap();
    let e = check_workspace_rust_version(&ws("1.85"), toolchain).unwrap_err();
    assert!(e.contains("\"1.85\"") && e.contains("1.95.0"), "{e}");
    assert!(check_workspace_rust_version("[workspace]\nmembers = []\n", toolchain).is_err());
}

#[test]
fn the_toolchain_file_must_pin_a_release_with_rustfmt_and_clippy() {
    let file = |channel: &str, components: &str| {
        format!("[toolchain]\nchannel = \"{channel}\"\ncomponents = [{components}]\n")
    };
    assert_eq!(toolchain_version(&file("1.95.0", "\"rustfmt\", \"clippy\"")).unwrap().to_string(), "1.95.0");
    assert!(toolchain_version(&file("stable", "\"rustfmt\", \"clippy\"")).unwrap_err().contains("\"stable\""));
    assert!(toolchain_version(&file("1.95", "\"rustfmt\", \"clippy\"")).unwrap_err().contains("does not pin"));
    assert!(toolchain_version(&file("1.95.0", "\"rustfmt\"")).unwrap_err().contains("lack clippy"));
}

#[test]
fn the_lock_check_names_each_package_newer_than_the_toolchain() {
    let meta = serde_json::json!({"packages": [
        {"name": "old", "version": "1.0.0", "rust_version": "1.70"},
        {"name": "none", "version": "0.1.0", "rust_version": null},
        {"name": "exact", "version": "2.0.0", "rust_version": "1.95.0"},
        {"name": "newer", "version": "3.1.4", "rust_version": "1.96"},
        {"name": "patch", "version": "0.2.0", "rust_version": "1.95.1"},
    ]});
    let toolchain = RustVersion::parse_exact("1.95.0").unwrap();
    assert_eq!(
        packages_needing_newer_rust(&meta, toolchain),
        ["newer 3.1.4 needs Rust 1.96", "patch 0.2.0 needs Rust 1.95.1"]
    );
}

#[test]
fn the_lock_check_would_have_failed_the_rust_1_85_image() {
    // Today's lock against the image's old compiler: the packages that broke
    // `docker build` are found by the same check that guards the pinned one.
    let too_new = packages_needing_newer_rust(&locked_metadata(), RustVersion::parse_exact("1.85.0").unwrap());
    for name in ["redis", "time"] {
        assert!(too_new.iter().any(|p| p.starts_with(&format!("{name} "))), "{name} not in {too_new:?}");
    }
}
