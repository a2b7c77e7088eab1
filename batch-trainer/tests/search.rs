//! The model search end to end: `evaluate --search` prints the trace and
//! both parameter sets' test results; `train` with `[training.search]
//! enabled` records the search in the manifest (absent when it is off) and
//! fits what it chose.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::path::Path;
use std::process::{Command, Output};

use datagen::{generate, GenerateConfig};
use serde_json::Value;

fn trainer(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
        .args(args)
        .arg("--quiet")
        .arg("--config")
        .arg(config)
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

const CONFIG: &str = "[training]\nfactors = 16\niterations = 5\n\n[training.search]\nbudget_fits = 6\n\
                      candidates = 6\nmax_iterations = 8\nfactors = [8, 16]\n";

#[test]
fn evaluate_search_prints_the_trace_and_both_test_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&GenerateConfig::new(60_000, 11), &data, None).unwrap();
    let config = tmp.path().join("c.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let json = tmp.path().join("e.json");
    let out = ok(&trainer(&["evaluate", "--data-dir", s(&data), "--search", "--json", s(&json)], &config));
    for needle in
        ["configured parameters:", "search: ", "chosen: candidate ", "searched parameters:", "recall@20    configured "]
    {
        assert!(out.contains(needle), "no {needle:?} in\n{out}");
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let search = &v["search"];
    assert!(search["spent_fits"].as_f64().unwrap() <= 6.0);
    assert_eq!(search["candidates"][0]["factors"], 16, "candidate 0 is the configured parameters");
    let chosen = &search["chosen"];
    assert_eq!(v["searched"]["params"]["factors"], chosen["factors"]);
    assert_eq!(v["searched"]["params"]["iterations"], chosen["iterations"]);
    assert_eq!(v["default"]["params"]["factors"], 16);
    // The same test split for both.
    assert_eq!(v["default"]["test_users"], v["searched"]["test_users"]);
    assert_eq!(v["default"]["target_pairs"], v["searched"]["target_pairs"]);

    // A config the search cannot use is refused with its key.
    std::fs::write(&config, "[training.search]\nmetric = \"mrr@10\"\n").unwrap();
    let o = trainer(&["evaluate", "--data-dir", s(&data), "--search"], &config);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("training.search.metric"), "{o:?}");
}

#[test]
fn train_records_the_search_in_the_manifest_only_when_it_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&GenerateConfig::new(60_000, 12), &data, None).unwrap();
    let root = tmp.path().join("models");
    let config = tmp.path().join("c.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let train = |version: &str, config: &Path| {
        let args = ["train", "--data-dir", s(&data), "--artifacts-dir", s(&root), "--version", version, "--force"];
        ok(&trainer(&args, config));
        let m: Value =
            serde_json::from_slice(&std::fs::read(root.join(version).join("manifest.json")).unwrap()).unwrap();
        m
    };
    let plain = train("v1", &config);
    assert!(plain.get("search").is_none(), "search off: no record");
    std::fs::write(&config, CONFIG.replace("[training.search]\n", "[training.search]\nenabled = true\n")).unwrap();
    let searched = train("v2", &config);
    let rec = &searched["search"];
    assert!(rec["trials"].as_array().unwrap().len() >= 2, "{rec}");
    assert!(rec["spent_fits"].as_f64().unwrap() <= rec["budget_fits"].as_f64().unwrap());
    let chosen = &rec["chosen"];
    // The chosen configuration is what was fitted and recorded.
    for key in ["factors", "iterations", "alpha", "regularization"] {
        assert_eq!(searched["params"][key], chosen[key], "{key}");
    }
    assert_eq!(searched["weights"], chosen["weights"]);
    assert_eq!(searched["counts"]["factors"], chosen["factors"]);
    // And it went through the gate as usual.
    assert!(searched["gate"]["decision"].is_string());
}
