//! End-to-end tests of the `recsys-trainer` binary on generated and real data.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datagen::{generate, GenerateConfig};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
        .args(args)
        .arg("--quiet")
        // Tests must not depend on the developer's environment.
        .env_remove("RECSYS_CONFIG")
        .env("RECSYS__TRAINING__THREADS", "2")
        // These runs are offline: publication is tested in tests/services.rs.
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

fn generated(dir: &Path, events: u64) -> PathBuf {
    let data = dir.join("data");
    generate(&GenerateConfig::new(events, 7), &data, None).unwrap();
    data
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn evaluate_prints_three_models_and_writes_the_json_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 150_000);
    let json = tmp.path().join("out/eval.json");
    let o = trainer(&[
        "evaluate",
        "--data-dir",
        s(&data),
        "--json",
        s(&json),
        "--factors",
        "32",
        "--iterations",
        "8",
        "--repeats",
        "2",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for name in ["popular", "als ", "als_rerank"] {
        assert!(out.contains(name), "table lacks {name}:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for model in ["popular", "als", "als_rerank"] {
        for key in ["recall@20", "precision@5", "ndcg@10", "hit_rate@5", "coverage@5", "novelty@5", "diversity@5"] {
            assert!(v[model][key].is_number(), "{model}.{key} missing in {v}");
        }
    }
    for key in ["load_s", "fit_s", "recommend_s", "total_s"] {
        assert!(v["timings"][key].as_f64().unwrap() >= 0.0);
    }
    for key in ["users", "items", "train_nnz", "test_users"] {
        assert!(v[key].as_u64().unwrap() > 0, "{key}");
    }
    assert_eq!(v["protocol"], "seed");
    assert_eq!(v["spread_als"]["seeds"], serde_json::json!([42, 43]));
    // Generated users have tastes: ALS must beat the popular baseline clearly.
    let als = v["als"]["recall@20"].as_f64().unwrap();
    let pop = v["popular"]["recall@20"].as_f64().unwrap();
    assert!(als > 1.5 * pop, "ALS recall {als} vs popular {pop}");
    assert!(v["rerank_applied"].as_bool().unwrap());
}

#[test]
fn time_protocol_includes_cold_users() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 80_000);
    let json = tmp.path().join("t.json");
    let o = trainer(&[
        "evaluate",
        "--data-dir",
        s(&data),
        "--protocol",
        "time",
        "--json",
        s(&json),
        "--factors",
        "16",
        "--iterations",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["protocol"], "time");
    assert!(v["cold_test_users"].as_u64().unwrap() > 0);
}

#[test]
fn train_promotes_then_the_gate_rejects_a_worse_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 120_000);
    let models = tmp.path().join("models");
    let base = ["train", "--data-dir", s(&data), "--artifacts-dir", s(&models), "--factors", "32"];

    let o = trainer(&[&base[..], &["--iterations", "8", "--version", "good"]].concat());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("no model served yet"));
    assert_eq!(std::fs::read_to_string(models.join("CURRENT")).unwrap().trim(), "good");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("good/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["evaluation"]["protocol"], "seed");
    assert!(manifest["files"]["factors.safetensors"]["sha256"].as_str().unwrap().len() == 64);

    // Zero iterations leave the random initial factors: far worse, rejected.
    let json = tmp.path().join("bad.json");
    let o = trainer(&[&base[..], &["--iterations", "0", "--version", "bad", "--json", s(&json)]].concat());
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("REJECTED"), "{}", stdout(&o));
    assert_eq!(std::fs::read_to_string(models.join("CURRENT")).unwrap().trim(), "good");
    assert!(models.join("bad/manifest.json").is_file(), "a rejected model is kept for inspection");
    let outcome: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(outcome["verdict"]["outcome"], "rejected");
    assert_eq!(outcome["promoted"], false);

    // Listing marks the served version; a manual promotion (rollback) works.
    let o = trainer(&["models", "list", "--artifacts-dir", s(&models)]);
    assert!(stdout(&o).contains("* good"), "{}", stdout(&o));
    let o = trainer(&["models", "promote", "bad", "--artifacts-dir", s(&models)]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(models.join("CURRENT")).unwrap().trim(), "bad");

    // A damaged version is refused and CURRENT stays.
    let f = models.join("good/factors.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 100);
    std::fs::write(&f, bytes).unwrap();
    let o = trainer(&["models", "promote", "good", "--artifacts-dir", s(&models)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(models.join("CURRENT")).unwrap().trim(), "bad");
}

#[test]
fn bad_input_gets_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = trainer(&["evaluate", "--data-dir", s(&tmp.path().join("nowhere"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("events.csv"), "{}", stderr(&o));

    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("events.csv"), "timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n1433221332118,a b,view,1,\n")
        .unwrap();
    let o = trainer(&["evaluate", "--data-dir", s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("line 3") && err.contains("visitorid"), "{err}");

    let o = trainer(&["evaluate", "--data-dir", s(&dir), "--factors", "0"]);
    assert!(stderr(&o).contains("factors"), "{}", stderr(&o));
}

#[test]
fn evaluate_never_succeeds_without_test_users() {
    let tmp = tempfile::tempdir().unwrap();
    // Valid events, but every user has one: nothing passes the user filter.
    let mut csv = String::from("timestamp,visitorid,event,itemid,transactionid\n");
    for u in 0..40 {
        csv.push_str(&format!("{},{u},view,{},\n", 1_433_221_332_117_i64 + u, u % 5));
    }
    std::fs::write(tmp.path().join("events.csv"), csv).unwrap();
    let o = trainer(&["evaluate", "--data-dir", s(tmp.path()), "--factors", "4", "--iterations", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no test users") && err.contains("min_user_items"), "{err}");
}

#[test]
fn train_never_writes_a_model_without_test_users() {
    let tmp = tempfile::tempdir().unwrap();
    // Views only: every user and item passes the filter, but the time split
    // tests the users who add to cart or buy after its cutoff, and none does.
    let mut csv = String::from("timestamp,visitorid,event,itemid,transactionid\n");
    let mut ts = 1_433_221_332_117_i64;
    for u in 0..40u64 {
        for k in 0..10u64 {
            ts += 1_000;
            csv.push_str(&format!("{ts},{u},view,{},\n", (u + k) % 12));
        }
    }
    std::fs::write(tmp.path().join("events.csv"), csv).unwrap();
    let models = tmp.path().join("models");
    let args = ["--data-dir", s(tmp.path()), "--protocol", "time", "--factors", "4", "--iterations", "1"];
    let o = trainer(&[&["train", "--artifacts-dir", s(&models)][..], &args].concat());
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no test users") && err.contains("time split"), "{err}");
    assert!(!models.join("CURRENT").exists(), "nothing promoted");
    let versions = std::fs::read_dir(&models).map_or(0, |d| d.flatten().filter(|e| e.path().is_dir()).count());
    assert_eq!(versions, 0, "no version written");
    // `evaluate` refuses the same data for the same reason.
    let o = trainer(&[&["evaluate"][..], &args].concat());
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("no test users"), "{}", stderr(&o));
}

#[test]
fn a_1990s_log_in_seconds_with_other_column_names_trains_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // MovieLens-like: 1997-1998 in epoch seconds, a shop's own header.
    let mut csv = String::from("customer,sku,when,action\r\n");
    for u in 0..60u64 {
        for k in 0..12u64 {
            let ts = 852_076_800 + (u * 12 + k) * 30_000;
            csv.push_str(&format!("c{u},\"SKU-{}\",{ts},view\r\n", (u * 7 + k * k) % 40));
        }
    }
    std::fs::write(tmp.path().join("events.csv"), csv).unwrap();
    let cols = "user_id=customer,ts=when,event=action";
    let o = trainer(&["inspect", "--data-dir", s(tmp.path()), "--columns", cols]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for want in [
        "720 rows, 720 kept, 0 rejected",
        "clock: epoch seconds",
        "time span: 1997-01-01T00:00:00Z",
        "verdict: ready to train",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let o = trainer(&["inspect", "--data-dir", s(tmp.path()), "--columns", cols, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["events"].as_u64(), v["users"].as_u64()), (Some(720), Some(60)));
    assert_eq!(v["files"][0]["clock"], "seconds");
    assert!(v["split"]["test_users"].as_u64().unwrap() > 0);

    let json = tmp.path().join("e.json");
    let o = trainer(&[
        "evaluate",
        "--data-dir",
        s(tmp.path()),
        "--columns",
        cols,
        "--json",
        s(&json),
        "--factors",
        "8",
        "--iterations",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("720 kept"), "{}", stdout(&o));
    // The model speaks the file's ids: SKUs and customer names, not numbers.
    let models = tmp.path().join("models");
    let o = trainer(&[
        "train",
        "--data-dir",
        s(tmp.path()),
        "--columns",
        cols,
        "--artifacts-dir",
        s(&models),
        "--no-publish",
        "--factors",
        "8",
        "--iterations",
        "3",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let version = std::fs::read_to_string(models.join("CURRENT")).unwrap();
    let dir = models.join(version.trim());
    let items = std::fs::read_to_string(dir.join("items.csv")).unwrap();
    let users = std::fs::read_to_string(dir.join("users.txt")).unwrap();
    assert!(items.lines().skip(1).all(|l| l.starts_with("SKU-")), "{items}");
    assert!(users.lines().next().is_some_and(|l| l.starts_with('c')), "{users}");
    // An explicit window that excludes the history fails, naming the option.
    let o = trainer(&["evaluate", "--data-dir", s(tmp.path()), "--columns", cols, "--min-ts", "2010-01-01"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("outside_window") && err.contains("--min-ts"), "{err}");
    // Without the mapping the header is refused, naming the fix.
    let o = trainer(&["inspect", "--data-dir", s(tmp.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--columns"), "{}", stderr(&o));
}

#[test]
fn the_real_sample_runs_end_to_end() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/retailrocket-sample");
    if !sample.join("events.csv").is_file() {
        eprintln!("skipping: {} not present", sample.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("e.json");
    // The sample is mostly one-event visitors: a light filter leaves something to fit.
    let o = Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
        .args([
            "evaluate",
            "--quiet",
            "--data-dir",
            s(&sample),
            "--json",
            s(&json),
            "--factors",
            "8",
            "--iterations",
            "3",
        ])
        .env("RECSYS__TRAINING__FILTER__MIN_USER_ITEMS", "2")
        .env("RECSYS__TRAINING__FILTER__MIN_ITEM_USERS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(v["train_nnz"].as_u64().unwrap() > 0);
    assert_eq!(v["rerank_applied"], false, "the sample has no item properties");
}

#[test]
fn evaluation_is_identical_for_any_thread_count_and_solver_flag_works() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 60_000);
    let run = |threads: &str, extra: &[&str]| {
        let json = tmp.path().join(format!("t{threads}{}.json", extra.len()));
        let mut args =
            vec!["evaluate", "--data-dir", s(&data), "--json", s(&json), "--factors", "16", "--iterations", "5"];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_recsys-trainer"))
            .args(&args)
            .args(["--quiet", "--threads", threads])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        (v["als"].clone(), v["als_rerank"].clone())
    };
    let one = run("1", &[]);
    assert_eq!(one, run("2", &[]), "metrics differ between 1 and 2 threads");
    assert_eq!(one, run("3", &[]), "metrics differ between 1 and 3 threads");
    // The exact solver runs through the same pipeline and finds signal.
    let exact = run("2", &["--solver", "cholesky"]);
    assert!(exact.0["recall@20"].as_f64().unwrap() > 0.0);
    // The iterative k-core never keeps more than the single pass; on data this
    // sparse it may keep nothing: the pipeline copes, writes its report, and
    // the command fails saying there is nothing to test on.
    let nnz = |extra: &[&str]| {
        let json = tmp.path().join(format!("k{}.json", extra.len()));
        let mut args = vec!["evaluate", "--quiet", "--data-dir", s(&data), "--json", s(&json), "--factors", "8"];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_recsys-trainer")).args(&args).output().unwrap();
        assert!(
            o.status.success() || (o.status.code() == Some(1) && stderr(&o).contains("no test users")),
            "{}",
            stderr(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        v["train_nnz"].as_u64().unwrap()
    };
    assert!(nnz(&["--kcore"]) <= nnz(&[]));
}

#[test]
fn the_live_ranking_version_name_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = generated(tmp.path(), 20_000);
    let models = tmp.path().join("models");
    let o = trainer(&["train", "--data-dir", s(&data), "--artifacts-dir", s(&models), "--version", "live-popular"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("reserved"), "{}", stderr(&o));
    assert!(!models.join("live-popular").exists());
    assert!(!models.join("CURRENT").exists());
}
