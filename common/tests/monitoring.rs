//! Checks of the monitoring configuration (`configs/prometheus/`, `configs/grafana/`):
//!
//! - `promtool check config`, `promtool check rules` and `promtool test rules`
//!   (the alert unit tests) pass; promtool comes from the Debian package
//!   `prometheus`, which `scripts/test.sh` installs (`PROMTOOL` overrides the
//!   binary). A missing promtool fails these tests, it does not skip them.
//! - every alert has a firing and an absent assertion in the unit tests, a
//!   severity, a summary and a description;
//! - every `recsys_*` metric name used by the alerts, their tests and the
//!   dashboard is one the workspace's code exports (a string literal in
//!   `*/src/**/*.rs`; `_bucket` / `_sum` / `_count` of a histogram count as it);
//! - the dashboard is valid JSON, every panel and query uses the provisioned
//!   datasource, and every query parses as PromQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PREFIX: &str = "recsys_";
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("common/ is inside the workspace").to_path_buf()
}

fn prom_dir() -> PathBuf {
    root().join("configs/prometheus")
}

fn grafana_dir() -> PathBuf {
    root().join("configs/grafana")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The alert unit-test files, in the order promtool runs them.
const ALERT_TESTS: [&str; 2] = ["alerts_test.yml", "alerts_daily_test.yml"];

// ---------------------------------------------------------------- metric names

/// Every `recsys_…` metric name in a config text (PromQL, YAML, JSON): a
/// maximal run of `[A-Za-z0-9_]` starting with `recsys_` and not preceded by
/// an identifier character. Families written with a wildcard in prose
/// (`recsys_updater_*`) end in `_` and are skipped; recording-rule names
/// (`recsys:…`) do not match.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded = start > 0 && is_ident(bytes[start - 1]);
        let name = &text[start..end];
        if !preceded && !name.ends_with('_') {
            names.insert(name.to_owned());
        }
        from = end;
    }
    names
}

/// Metric names the code exports: string literals `"recsys_…"` in Rust
/// source, and which of them are histograms (the literal is the first
/// argument of `HistogramOpts::new(`, `histogram_opts!(` or a
/// `register_histogram…!(` macro).
#[derive(Debug, Default)]
struct Exported {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

impl Exported {
    fn scan(&mut self, source: &str) {
        let mut from = 0;
        let needle = format!("\"{PREFIX}");
        while let Some(pos) = source[from..].find(&needle) {
            let start = from + pos + 1;
            let Some(len) = source[start..].find('"') else { break };
            let name = &source[start..start + len];
            from = start + len + 1;
            if !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
                continue;
            }
            let before = source[..start - 1].trim_end();
            let histogram = ["HistogramOpts::new(", "histogram_opts!("].iter().any(|p| before.ends_with(p))
                || before.rsplit_once("register_histogram").is_some_and(|(_, rest)| {
                    rest.trim_start_matches(|c: char| c.is_ascii_lowercase() || c == '_') == "!("
                });
            if histogram {
                self.histograms.insert(name.to_owned());
            }
            self.names.insert(name.to_owned());
        }
    }

    /// Whether `name` is exported, directly or as a histogram's series.
    fn exports(&self, name: &str) -> bool {
        self.names.contains(name)
            || HISTOGRAM_SUFFIXES
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|base| self.histograms.contains(base)))
    }

    /// The names of `text` the code does not export.
    fn missing(&self, text: &str) -> BTreeSet<String> {
        metric_names(text).into_iter().filter(|n| !self.exports(n)).collect()
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Scans `*/src/**/*.rs` of the workspace.
fn exported_by_workspace() -> Exported {
    let mut files = Vec::new();
    for entry in fs::read_dir(root()).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(!files.is_empty(), "no */src/**/*.rs under {}", root().display());
    let mut exported = Exported::default();
    for f in &files {
        exported.scan(&read(f));
    }
    exported
}

/// The config files whose metric names must exist, relative to the workspace.
fn files_using_metrics() -> Vec<PathBuf> {
    let mut files = vec![prom_dir().join("alerts.yml"), grafana_dir().join("dashboards/recsys.json")];
    files.extend(ALERT_TESTS.iter().map(|f| prom_dir().join(f)));
    // Recording rules or further dashboards, should any be added.
    for dir in [prom_dir(), grafana_dir().join("dashboards")] {
        for entry in fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("yml" | "yaml" | "json")) && !files.contains(&p) && !p.ends_with("prometheus.yml") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn metric_names_extracts_names_and_skips_other_tokens() {
    let text = r#"
        sum by (job) (rate(recsys_serving_http_requests_total{route=~"/v1/.+"}[5m]))
        / histogram_quantile(0.99, rate(recsys_updater_freshness_seconds_bucket[5m]))
        recsys:ctr:ratio1h  job="recsys-serving"  myrecsys_thing  "recsys_a_total"
        the recsys_updater_* family, recsys_*_model_info
    "#;
    let names: Vec<_> = metric_names(text).into_iter().collect();
    assert_eq!(
        names,
        ["recsys_a_total", "recsys_serving_http_requests_total", "recsys_updater_freshness_seconds_bucket"]
    );
}

#[test]
fn exported_names_come_from_literals_and_know_histograms() {
    let mut e = Exported::default();
    e.scan(
        r#"
        let h = HistogramVec::new(
            HistogramOpts::new(
                "recsys_x_duration_seconds", "latency")
                .buckets(vec![0.1]), &["route"])?;
        let c = IntCounterVec::new(Opts::new("recsys_x_requests_total", "requests"), &["status"])?;
        let g = register_histogram_vec!("recsys_x_batch_size", "sizes", &["stage"]);
        let not_a_name = "recsys_x has spaces";
        "#,
    );
    assert_eq!(
        e.names.iter().collect::<Vec<_>>(),
        ["recsys_x_batch_size", "recsys_x_duration_seconds", "recsys_x_requests_total"]
    );
    assert_eq!(e.histograms.iter().collect::<Vec<_>>(), ["recsys_x_batch_size", "recsys_x_duration_seconds"]);
    for ok in ["recsys_x_duration_seconds_bucket", "recsys_x_duration_seconds_count", "recsys_x_requests_total"] {
        assert!(e.exports(ok), "{ok}");
    }
    // A counter has no _count series; a histogram has no _total; bogus is bogus.
    for bad in ["recsys_x_requests_total_count", "recsys_x_duration_seconds_total", "recsys_x_bogus_total"] {
        assert!(!e.exports(bad), "{bad}");
    }
}

#[test]
fn name_check_catches_a_bogus_name_in_a_rule() {
    let exported = exported_by_workspace();
    let rule = "sum(rate(recsys_serving_http_requests_total[5m])) / sum(rate(recsys_serving_bogus_requests_total[5m]))
                + histogram_quantile(0.99, rate(recsys_updater_freshness_seconds_bucket[5m]))
                + recsys_serving_recommendations_total_count";
    let missing: Vec<_> = exported.missing(rule).into_iter().collect();
    assert_eq!(missing, ["recsys_serving_bogus_requests_total", "recsys_serving_recommendations_total_count"]);
}

/// Reports every missing name of every file at once. (Until the tracking and
/// trainer `schedule` branches are merged, their `recsys_tracking_*` and
/// `recsys_trainer_*` names are the expected failures.)
#[test]
fn every_metric_in_alerts_and_dashboard_is_exported() {
    let exported = exported_by_workspace();
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut used = 0;
    for f in files_using_metrics() {
        let text = read(&f);
        used += metric_names(&text).len();
        for name in exported.missing(&text) {
            missing.entry(name).or_default().insert(f.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(used > 0, "no recsys_ metric names found in the monitoring configs");
    let report: Vec<String> = missing
        .iter()
        .map(|(name, files)| format!("  {name}  (used in {})", files.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} metric name(s) used by the monitoring configs are not exported by any */src/**/*.rs \
         (no string literal \"name\", nor a histogram whose _bucket/_sum/_count it is):\n{}",
        missing.len(),
        report.join("\n")
    );
}

// ---------------------------------------------------------------- promtool

fn promtool(args: &[&str], dir: &Path) -> Output {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    Command::new(&bin).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{bin}` ({e}): promtool is required by the monitoring tests. Install it with \
             `apt-get install -y prometheus` (Debian's package ships promtool; scripts/test.sh installs it), \
             or point PROMTOOL at the binary."
        )
    })
}

fn assert_promtool(args: &[&str], dir: &Path) -> String {
    let out = promtool(args, dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    text
}

#[test]
fn promtool_check_config_and_rules() {
    let out = assert_promtool(&["check", "config", "prometheus.yml"], &prom_dir());
    assert!(out.contains("1 rule files found"), "prometheus.yml must load alerts.yml:\n{out}");
    assert_promtool(&["check", "rules", "alerts.yml"], &prom_dir());
}

#[test]
fn promtool_alert_unit_tests_pass() {
    let mut args = vec!["test", "rules"];
    args.extend(ALERT_TESTS);
    let out = assert_promtool(&args, &prom_dir());
    assert_eq!(out.matches("SUCCESS").count(), ALERT_TESTS.len(), "{out}");
}

/// The local-run recipe at the top of prometheus.yml gives a valid config.
#[test]
fn local_run_rewrite_of_prometheus_yml_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let src = read(&prom_dir().join("prometheus.yml"));
    let sed = Command::new("sed")
        .args(["-E", "s/'(serving|ingest|updater|trainer):/'127.0.0.1:/"])
        .arg(prom_dir().join("prometheus.yml"))
        .output()
        .expect("sed");
    assert!(sed.status.success());
    let local = String::from_utf8(sed.stdout).unwrap();
    assert!(
        src.contains("'serving:8080'"),
        "prometheus.yml no longer targets serving:8080; update this test and the docs"
    );
    for port in ["8080", "8081", "9102", "9103"] {
        assert!(local.contains(&format!("'127.0.0.1:{port}'")), "local rewrite lacks 127.0.0.1:{port}:\n{local}");
    }
    fs::write(dir.path().join("prometheus.yml"), local).unwrap();
    fs::copy(prom_dir().join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    assert_promtool(&["check", "config", "prometheus.yml"], dir.path());
}

// ---------------------------------------------------------------- alert structure

/// `(name, block of text)` of every `- alert:` of alerts.yml.
fn alerts() -> Vec<(String, String)> {
    let text = read(&prom_dir().join("alerts.yml"));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push((name.trim().to_owned(), String::new()));
        } else if t.starts_with("- name:") || t.starts_with("- record:") {
            out.push((String::new(), String::new())); // ends the previous alert's block
        } else if let Some((_, block)) = out.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    out.retain(|(n, _)| !n.is_empty());
    out
}

#[test]
fn every_alert_has_severity_summary_and_description() {
    let alerts = alerts();
    assert!(alerts.len() >= 9, "expected the issue's alerts, found {}", alerts.len());
    let mut seen = BTreeSet::new();
    for (name, block) in &alerts {
        assert!(seen.insert(name.clone()), "alert {name} defined twice");
        let field = |key: &str| block.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()));
        let severity = field("severity:").unwrap_or_else(|| panic!("{name}: no severity label"));
        assert!(matches!(severity.as_str(), "critical" | "warning"), "{name}: severity {severity:?}");
        for key in ["summary:", "description:", "expr:", "for:"] {
            assert!(field(key).is_some_and(|v| !v.is_empty()), "{name}: no {key}");
        }
    }
}

/// Per alert name: whether the unit tests assert it firing and absent.
fn assertions(test_text: &str) -> BTreeMap<String, (bool, bool)> {
    let mut out: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = test_text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("alertname:") {
            let e = out.entry(name.trim().to_owned()).or_default();
            match lines.get(i + 1).copied() {
                Some("exp_alerts: []") => e.1 = true,
                Some("exp_alerts:") => e.0 = true,
                other => panic!("alertname {name}: expected exp_alerts on the next line, found {other:?}"),
            }
        }
    }
    out
}

#[test]
fn assertions_parser_tells_firing_from_absent() {
    let text = "
      - eval_time: 1m
        alertname: A
        # pending
        exp_alerts: []
      - eval_time: 5m
        alertname: A
        exp_alerts:
          - exp_labels: {}
      - eval_time: 5m
        alertname: B
        exp_alerts: []
    ";
    let a = assertions(text);
    assert_eq!(a["A"], (true, true));
    assert_eq!(a["B"], (false, true));
}

#[test]
fn every_alert_is_tested_firing_and_absent() {
    let defined: BTreeSet<String> = alerts().into_iter().map(|(n, _)| n).collect();
    let mut tested: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for f in ALERT_TESTS {
        for (name, (fires, absent)) in assertions(&read(&prom_dir().join(f))) {
            let e = tested.entry(name).or_default();
            e.0 |= fires;
            e.1 |= absent;
        }
    }
    // A misspelt alertname would pass every `exp_alerts: []` vacuously.
    let unknown: Vec<_> = tested.keys().filter(|n| !defined.contains(*n)).collect();
    assert!(unknown.is_empty(), "unit tests name alerts that alerts.yml does not define: {unknown:?}");
    let mut gaps = Vec::new();
    for name in &defined {
        match tested.get(name) {
            Some((true, true)) => {}
            Some((fires, absent)) => gaps.push(format!("{name}: fires tested {fires}, absent tested {absent}")),
            None => gaps.push(format!("{name}: no test")),
        }
    }
    assert!(gaps.is_empty(), "alerts without a firing and an absent unit test:\n{}", gaps.join("\n"));
}

// ---------------------------------------------------------------- Grafana

/// The uid of the provisioned Prometheus datasource.
fn provisioned_uid() -> String {
    let text = read(&grafana_dir().join("provisioning/datasources/prometheus.yml"));
    let uids: Vec<_> =
        text.lines().filter_map(|l| l.trim().strip_prefix("uid:")).map(|v| v.trim().to_owned()).collect();
    assert_eq!(uids.len(), 1, "one datasource with a uid expected: {uids:?}");
    assert!(text.contains("type: prometheus"), "the provisioned datasource is not of type prometheus");
    uids[0].clone()
}

fn dashboard() -> Value {
    let path = grafana_dir().join("dashboards/recsys.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel, including those nested in collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn dashboard_is_valid_and_every_panel_uses_the_provisioned_datasource() {
    let uid = provisioned_uid();
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "dashboard uid");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "dashboard title");
    let provider = read(&grafana_dir().join("provisioning/dashboards/recsys.yml"));
    assert!(provider.contains("type: file") && provider.contains("path:"), "dashboard provider");

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("panel {title:?} has no id"));
        assert!(ids.insert(id), "panel id {id} ({title:?}) used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("gridPos.x"), g["w"].as_u64().expect("gridPos.w"));
        assert!(x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(), "{title:?}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(p["type"].is_string(), "{title:?}: no type");
        assert_eq!(p["datasource"]["uid"].as_str(), Some(uid.as_str()), "panel {title:?}: datasource");
        assert_eq!(p["datasource"]["type"].as_str(), Some("prometheus"), "panel {title:?}: datasource type");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or_else(|| panic!("{title:?}: a query without refId"));
            assert!(refs.insert(r), "{title:?}: refId {r} twice");
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title:?}/{r}: empty expr");
            assert_eq!(t["datasource"]["uid"].as_str(), Some(uid.as_str()), "{title:?}/{r}: datasource");
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries in the dashboard");
}

/// Every dashboard query parses as PromQL: written as recording rules (with
/// the dashboard variables replaced) and checked by `promtool check rules`.
#[test]
fn dashboard_queries_parse_as_promql() {
    let dash = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$window", "1h");
            assert!(!expr.contains('$'), "unknown dashboard variable in {expr}");
            n += 1;
            rules.push_str(&format!("      - record: dashboard:query_{n}\n        expr: |\n"));
            for line in expr.lines() {
                rules.push_str(&format!("          {line}\n"));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("dashboard_rules.yml"), &rules).unwrap();
    let out = assert_promtool(&["check", "rules", "dashboard_rules.yml"], dir.path());
    assert!(out.contains(&format!("{n} rules found")), "{out}\n{rules}");
}
