//! `evaluate --report DIR` end to end: the page holds the run's numbers, the
//! report flag changes no metric, the page renders in a real browser; and
//! `models list --json`.
//!
//! `report_renders_in_headless_chromium` NEEDS CHROMIUM: it fails (never skips)
//! when neither `RECSYS_CHROMIUM` nor a `chromium` / `chromium-browser` /
//! `google-chrome` on PATH names a browser, saying how to install one (as
//! e2e/tests/demo_browser.rs does).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use datagen::{generate, GenerateConfig};
use serde_json::Value;

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
        .args(args)
        .arg("--quiet")
        .env_remove("RECSYS_CONFIG")
        .env("RECSYS__TRAINING__THREADS", "2")
        .env("RECSYS__TRAINER__PUBLISH__ENABLED", "false")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run recsys-trainer")
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generated(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    generate(&GenerateConfig::new(60_000, 11), &data, None).unwrap();
    data
}

const FAST: [&str; 4] = ["--factors", "16", "--iterations", "5"];

/// `evaluate --report` on generated data: the page and its JSON twin.
fn evaluate_with_report(tmp: &Path, data: &Path, extra: &[&str]) -> (String, Value, PathBuf) {
    let dir = tmp.join("report");
    let json = tmp.join("eval.json");
    let mut args = vec!["evaluate", "--data-dir", s(data), "--json", s(&json), "--report", s(&dir)];
    args.extend(FAST);
    args.extend(extra);
    let out = ok(&trainer(&args));
    let index = dir.join("index.html");
    assert!(out.contains(&format!("report written to {}", index.display())), "{out}");
    let html = std::fs::read_to_string(&index).unwrap();
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (html, v, index)
}

/// A search small enough for a test: two factor counts, a few candidates.
const SMALL_SEARCH: &str =
    "[training.search]\nbudget_fits = 6\ncandidates = 6\nmax_iterations = 8\nfactors = [8, 16]\n";

const MODELS: [&str; 4] = ["popular", "popular_conversions", "als", "als_rerank"];

#[test]
fn evaluate_report_writes_one_page_with_the_run_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    let (html, v, _) = evaluate_with_report(tmp.path(), &data, &["--repeats", "2"]);
    for model in MODELS {
        // The table shows every metric the JSON report has, to four decimals.
        for (key, value) in v[model].as_object().unwrap() {
            let cell = format!("<td class=\"num\">{:.4}", value.as_f64().unwrap());
            assert!(html.contains(&cell), "{model} {key}: no {cell}");
        }
        // The curves: 50 cut-offs, drawn as 50 points, and the same numbers as
        // the table at the table's cut-offs (one pass, same lists).
        let c = &v["curves"][model];
        for (metric, at) in [("recall", "recall@20"), ("ndcg", "ndcg@10")] {
            let values: Vec<f64> = c[metric].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(values.len(), 50, "{model} {metric}");
            assert!(values.windows(2).all(|w| metric != "recall" || w[1] >= w[0]), "recall never falls");
            let cut: usize = at.split('@').nth(1).unwrap().parse().unwrap();
            let table = v[model][at].as_f64().unwrap();
            assert!((values[cut - 1] - table).abs() < 1e-12, "{model}: curve {} vs table {table}", values[cut - 1]);
            let tag = format!("<polyline data-model=\"{model}\" data-metric=\"{metric}\"");
            let at = html.find(&tag).unwrap_or_else(|| panic!("no {tag}"));
            let points = &html[at..];
            let points = &points[points.find("points=\"").unwrap() + 8..];
            assert_eq!(points[..points.find('"').unwrap()].split(' ').count(), 50);
        }
    }
    // Generated users have tastes: ALS finds more of them at depth 50 than popular.
    let r50 = |m: &str| v["curves"][m]["recall"][49].as_f64().unwrap();
    assert!(r50("als") > r50("popular"), "{} vs {}", r50("als"), r50("popular"));
    // Two seeds: the spread is shown; the parameters and the data summary too.
    assert!(html.contains("over 2 seeds (42, 43)"), "spread column");
    for needle in ["<code>factors</code></td><td><code>16</code>", "<code>rerank.candidates</code>", "loaded "] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(html.contains(&format!("<td class=\"num\">{}</td>", v["test_users"])), "test users");
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
}

#[test]
fn the_report_flag_changes_no_metric_and_no_line_of_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    let plain_json = tmp.path().join("plain.json");
    let mut args = vec!["evaluate", "--data-dir", s(&data), "--json", s(&plain_json)];
    args.extend(FAST);
    let plain_out = ok(&trainer(&args));
    let plain: Value = serde_json::from_slice(&std::fs::read(&plain_json).unwrap()).unwrap();
    assert!(plain.get("curves").is_none(), "no curves without --report");
    let (_, with, _) = evaluate_with_report(tmp.path(), &data, &[]);
    for model in MODELS {
        assert_eq!(plain[model], with[model], "{model}");
    }
    // stdout without --report: the same lines bar the clock.
    let r2 = tmp.path().join("r2");
    let mut args = vec!["evaluate", "--data-dir", s(&data), "--report", s(&r2)];
    args.extend(FAST);
    let with_out = ok(&trainer(&args));
    let table = |o: &str| -> Vec<String> {
        o.lines().filter(|l| !l.starts_with("timings:") && !l.starts_with("report written")).map(String::from).collect()
    };
    assert_eq!(table(&plain_out), table(&with_out));
    assert!(!plain_out.contains("report written"));
}

/// NEEDS CHROMIUM (see the file's doc): renders the page headless and keeps the
/// screenshot under target/test-output/report/ for a look.
#[test]
fn report_renders_in_headless_chromium() {
    let chromium = std::env::var_os("RECSYS_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| ["chromium", "chromium-browser", "google-chrome"].into_iter().find_map(on_path));
    let Some(chromium) = chromium else {
        panic!(
            "chromium is not installed, and this test renders the evaluate report in it: \
             install Debian's chromium (`sudo apt-get install -y chromium`; scripts/test.sh does it) \
             or set RECSYS_CHROMIUM to a Chromium/Chrome binary, then run the test again"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    // With a (small) model search, so the page has every section.
    let config = tmp.path().join("search.toml");
    std::fs::write(&config, SMALL_SEARCH).unwrap();
    let (html, _, index) = evaluate_with_report(tmp.path(), &data, &["--search", "--config", s(&config)]);
    assert!(html.contains("<h2 id=\"search\">Model search: "), "no search section");
    for metric in ["recall", "ndcg"] {
        let line = format!("<polyline data-model=\"als_configured\" data-metric=\"{metric}\"");
        assert!(html.contains(&line), "no {metric} curve of the configured parameters beside the searched");
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-output/report");
    std::fs::create_dir_all(&out_dir).unwrap();
    // The page next to its screenshot, so both can be opened after the run.
    std::fs::copy(&index, out_dir.join("index.html")).unwrap();
    let png = out_dir.join("screenshot.png");
    let _ = std::fs::remove_file(&png);
    let profile = tmp.path().join("chromium-profile");
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", index.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish the screenshot in 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stderr = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {} ({e}): {stderr}", png.display()));
    // PNG signature, then the IHDR chunk: width and height big-endian.
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1200, 1600), "screenshot size");
    // A blank 1200 × 1600 page compresses to a few kB; text, tables and charts
    // do not.
    assert!(bytes.len() > 40_000, "screenshot is {} bytes: is the page blank?", bytes.len());
    eprintln!("screenshot: {}", png.display());
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

#[test]
fn models_list_json_names_the_served_version_and_its_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    let root = tmp.path().join("models");
    let mut args = vec!["train", "--data-dir", s(&data), "--artifacts-dir", s(&root), "--no-publish"];
    args.extend(["--version", "v1"]);
    args.extend(FAST);
    ok(&trainer(&args));
    let v: Value =
        serde_json::from_str(&ok(&trainer(&["models", "list", "--json", "--artifacts-dir", s(&root)]))).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let row = &rows[0];
    assert_eq!(row["version"], "v1");
    assert_eq!(row["current"], true);
    assert_eq!(row["params"]["factors"], 16);
    assert!(row["counts"]["users"].as_u64().unwrap() > 0);
    assert_eq!(row["evaluation"]["protocol"], "seed");
    assert!(row["evaluation"]["metrics"]["recall@20"].as_f64().unwrap() > 0.0);
    assert!(row["evaluation"].get("report").is_none(), "the full report stays in the manifest");
    // The text listing is unchanged by the flag's existence.
    let text = ok(&trainer(&["models", "list", "--artifacts-dir", s(&root)]));
    assert!(text.starts_with("* v1  created "), "{text}");
}
