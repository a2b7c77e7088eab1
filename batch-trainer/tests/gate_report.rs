//! The gate's decision end to end: what `train` records in the manifest, the
//! page of `train --report` (the gate table with both versions' numbers and
//! the verdict), and `models compare` reaching the same decision from the two
//! manifests.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generated(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    generate(&GenerateConfig::new(60_000, 11), &data, None).unwrap();
    data
}

/// `train` of `version` with `extra` flags; returns the process output.
fn train(data: &Path, models: &Path, version: &str, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--data-dir", s(data), "--artifacts-dir", s(models), "--no-publish"];
    args.extend(["--version", version, "--factors", "16"]);
    args.extend(extra);
    trainer(&args)
}

fn manifest(models: &Path, version: &str) -> Value {
    serde_json::from_slice(&std::fs::read(models.join(version).join("manifest.json")).unwrap()).unwrap()
}

fn page(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("index.html")).unwrap()
}

/// The gate table's row of `metric`: candidate and served value as the page prints them.
fn gate_row(metric: &str, candidate: f64, served: f64) -> String {
    format!("<tr data-metric=\"{metric}\"><td>{metric}</td><td class=\"num\">{candidate:.4}</td><td class=\"num\">{served:.4}</td>")
}

const KEY_METRICS: [&str; 4] = ["precision@5", "recall@20", "ndcg@10", "hit_rate@5"];

#[test]
fn train_report_shows_the_gate_and_compare_reaches_the_recorded_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    let models = tmp.path().join("models");

    let r1 = tmp.path().join("r1");
    let o = train(&data, &models, "v1", &["--iterations", "5", "--report", s(&r1)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&format!("report written to {}", r1.join("index.html").display())), "{}", stdout(&o));
    let m1 = manifest(&models, "v1");
    assert_eq!(m1["gate"]["decision"], "first_model");
    assert_eq!(m1["gate"]["served_version"], Value::Null);
    let html = page(&r1);
    assert!(html.contains("<strong>FIRST MODEL</strong>"), "first page");
    assert!(html.contains("against nothing served</h2>"));

    // The same data and settings again: the same metrics, so within any allowed drop.
    let r2 = tmp.path().join("r2");
    let o = train(&data, &models, "v2", &["--iterations", "5", "--report", s(&r2)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("gate decision: promoted: every key metric is within"), "{}", stdout(&o));
    let m2 = manifest(&models, "v2");
    let gate = &m2["gate"];
    assert_eq!(gate["decision"], "promoted");
    assert_eq!(gate["served_version"], "v1");
    assert_eq!(gate["max_relative_drop"], 0.1);
    let html = page(&r2);
    assert!(html.contains("<h2 id=\"gate\">Gate: <code>v2</code> against served <code>v1</code></h2>"));
    assert!(html.contains("<p class=\"verdict pass\" data-decision=\"promoted\"><strong>PROMOTED</strong>"));
    for (i, metric) in KEY_METRICS.iter().enumerate() {
        let cand = m2["evaluation"]["metrics"][metric].as_f64().unwrap();
        let served = m1["evaluation"]["metrics"][metric].as_f64().unwrap();
        assert_eq!(gate["metrics"][i]["metric"], *metric);
        assert_eq!(gate["metrics"][i]["candidate"].as_f64(), Some(cand));
        assert_eq!(gate["metrics"][i]["served"].as_f64(), Some(served));
        assert!(html.contains(&gate_row(metric, cand, served)), "{metric}: no {}", gate_row(metric, cand, served));
    }
    // The evaluation page's own sections follow the gate.
    let (g, m) = (html.find("id=\"gate\"").unwrap(), html.find("<h2>Metrics</h2>").unwrap());
    assert!(g < m, "the gate comes first");
    for needle in ["<h2>Parameters</h2>", "<h2>Timings</h2>", "<code>factors</code></td><td><code>16</code>"] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));

    // From the two manifests alone: the decision train recorded, to the last digit.
    let r3 = tmp.path().join("r3");
    let o = trainer(&["models", "compare", "v2", "v1", "--artifacts-dir", s(&models), "--json", "--report", s(&r3)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let compared: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(&compared, gate);
    let html = page(&r3);
    assert!(html.contains("<strong>PROMOTED</strong>") && html.contains("<h2>Recorded evaluations</h2>"));
    let cand = m2["evaluation"]["metrics"]["recall@20"].as_f64().unwrap();
    let served = m1["evaluation"]["metrics"]["recall@20"].as_f64().unwrap();
    assert!(html.contains(&gate_row("recall@20", cand, served)));
}

#[test]
fn rejected_forced_and_incomparable_versions_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path());
    let models = tmp.path().join("models");
    let o = train(&data, &models, "good", &["--iterations", "5"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // Zero iterations leave the random initial factors: far worse, rejected.
    let rb = tmp.path().join("rb");
    let o = train(&data, &models, "bad", &["--iterations", "0", "--report", s(&rb)]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let bad = manifest(&models, "bad");
    assert_eq!(bad["gate"]["decision"], "rejected");
    let reason = bad["gate"]["reason"].as_str().unwrap();
    assert!(reason.contains(" fell ") && reason.contains("more than the allowed drop of 10.0 %"), "{reason}");
    let html = page(&rb);
    assert!(html.contains("<p class=\"verdict fail\" data-decision=\"rejected\"><strong>REJECTED</strong>"));
    assert!(html.contains("class=\"bad\""), "the failing rows are marked");
    assert!(html.contains(&reason.replace('>', "&gt;")), "the reason is on the page");

    // compare (served: CURRENT, still good) reaches the recorded rejection and exits 3.
    let o = trainer(&["models", "compare", "bad", "--artifacts-dir", s(&models), "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&o)).unwrap(), bad["gate"]);
    let o = trainer(&["models", "compare", "bad", "--artifacts-dir", s(&models)]);
    let text = stdout(&o);
    assert!(text.contains("TOO LOW") && text.contains("verdict: rejected: "), "{text}");
    assert!(text.contains("recorded when bad was trained: rejected against good"), "{text}");

    // Forced: served, and the page says the gate rejected it.
    let rf = tmp.path().join("rf");
    let o = train(&data, &models, "forced", &["--iterations", "0", "--force", "--report", s(&rf)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let forced = manifest(&models, "forced");
    assert_eq!(forced["gate"]["decision"], "forced");
    assert!(forced["gate"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("promoted with --force although the gate said rejected: "));
    let html = page(&rf);
    assert!(html.contains("<p class=\"verdict forced\" data-decision=\"forced\"><strong>FORCED</strong>"));

    // Another protocol: incomparable, and compare says so naming the versions.
    let o = train(&data, &models, "timed", &["--iterations", "5", "--protocol", "time"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(manifest(&models, "timed")["gate"]["decision"], "incomparable");
    let o = trainer(&["models", "compare", "timed", "good", "--artifacts-dir", s(&models)]);
    assert_eq!(o.status.code(), Some(3));
    let text = stdout(&o);
    assert!(text.contains("verdict: incomparable: cannot be compared with served version good"), "{text}");
    assert!(text.contains("protocol \"seed\", candidate with \"time\""), "{text}");

    // What is missing is named: a version, an evaluation.
    let o = trainer(&["models", "compare", "nope", "good", "--artifacts-dir", s(&models)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no model version nope under"), "{}", stderr(&o));
    let path = models.join("good/manifest.json");
    let mut old = manifest(&models, "good");
    old.as_object_mut().unwrap().remove("evaluation");
    old.as_object_mut().unwrap().remove("gate");
    std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    let o = trainer(&["models", "compare", "good", "bad", "--artifacts-dir", s(&models)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("model version good has no recorded evaluation"), "{}", stderr(&o));
    // As the served side it is incomparable, not an error; an old manifest
    // (no gate record) still lists.
    let o = trainer(&["models", "compare", "bad", "good", "--artifacts-dir", s(&models), "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["decision"], "incomparable");
    assert!(v["reason"].as_str().unwrap().contains("served version good has no recorded evaluation"), "{v}");
    let o = trainer(&["models", "list", "--artifacts-dir", s(&models)]);
    assert!(o.status.success() && stdout(&o).contains("good"), "{}", stderr(&o));
}
