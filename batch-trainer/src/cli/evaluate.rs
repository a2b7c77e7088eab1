//! `recsys-trainer evaluate`: an offline protocol, printed as popular / ALS /
//! ALS + re-rank, optionally as JSON, as an HTML page (`--report`, drawn by
//! [`super::report`]) and with the split exported.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::args::{load_data, settings, HyperArgs, SourceArgs};
use super::output::{render_kafka, render_load, write_json};
use super::report;
use crate::pipeline::{self, EvalReport};
use crate::{export, inspect, search};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Fit this many times with consecutive seeds and report the spread.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Write the split (train.csv, test.csv, params.json) for external comparisons.
    #[arg(long)]
    pub export_split: Option<PathBuf>,
    /// Also write DIR/index.html: one self-contained page (inline CSS and SVG, no
    /// script, nothing fetched) with Recall@k and NDCG@k curves for k = 1…50 of
    /// every model, the metric table with the seed spread of --repeats, coverage,
    /// novelty and diversity bars, the parameters and the data summary. The JSON
    /// report then also holds the curves.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Also run the model search of `[training.search]` (whether or not it is
    /// enabled for `train`) on the training side, print its trace, and evaluate
    /// the configured and the searched parameters on the same test split. The
    /// table, --json and --report then describe the searched parameters (the
    /// JSON as {"default", "searched", "search"}; the page with a search section).
    #[arg(long)]
    pub search: bool,
    #[command(flatten)]
    pub hyper: HyperArgs,
}

pub(super) fn run(a: &EvaluateArgs, config: Option<&Path>, show: bool) -> anyhow::Result<i32> {
    let s = settings(config, Some(&a.hyper))?;
    let loaded = load_data(&a.source.source()?, &s, show)?;
    let ds = &loaded.ds;
    if let Some(dir) = &a.export_split {
        export::export_split(ds, &s.training, dir).with_context(|| format!("exporting split to {}", dir.display()))?;
    }
    let evaluate = |cfg: &crate::config::TrainingConfig| match &a.report {
        Some(_) => pipeline::evaluate_with_curves(ds, cfg, a.repeats, loaded.load_s, show, REPORT_DEPTH),
        None => pipeline::evaluate(ds, cfg, a.repeats, loaded.load_s, show),
    };
    let mut default_report = None;
    let mut searched = None;
    let report = if a.search {
        let default = evaluate(&s.training);
        say!("configured parameters:\n{}", render_report(&default));
        let outcome = search::run(ds, &s.training, show)?;
        say!("{}", search::render_trace(&outcome.record));
        let report = evaluate(&outcome.config);
        say!("searched parameters:\n{}", render_report(&report));
        say!("{}", render_comparison(&default, &report, &outcome.record));
        default_report = Some(default);
        searched = Some(outcome.record);
        report
    } else {
        let report = evaluate(&s.training);
        say!("{}", render_report(&report));
        report
    };
    if let Some(p) = &a.json {
        match (&default_report, &searched) {
            (Some(default), Some(search)) => {
                write_json(p, &serde_json::json!({"default": default, "searched": &report, "search": search}))?
            }
            _ => write_json(p, &report)?,
        }
    }
    if report.test_users == 0 {
        // A table of zeros is not an evaluation.
        bail!("{}", inspect::why_no_test_users(ds, &s.training));
    }
    if let Some(dir) = &a.report {
        let mut load_summary = render_load(ds);
        if let Some(k) = &loaded.kafka {
            load_summary.push_str(&render_kafka(k));
        }
        let generated_at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .context("dropping sub-seconds")?
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting the time")?;
        let page = report::PageInput {
            report: &report,
            training: &s.training,
            command: &command_line(),
            source: &loaded.description,
            load_summary: &load_summary,
            generated_at: &generated_at,
            search: searched.as_ref().map(|record| report::SearchView { record, default: default_report.as_ref() }),
        };
        let path = report::write(dir, &page)?;
        sayln!("report written to {}", path.display());
    }
    Ok(0)
}

/// Deepest cut-off of the report's curves.
pub const REPORT_DEPTH: usize = 50;

/// This process's command line, quoted where a shell would need it.
pub(super) fn command_line() -> String {
    let plain = |a: &str| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:@,+%".contains(c));
    std::env::args()
        .map(|a| if plain(&a) { a } else { format!("'{}'", a.replace('\'', "'\\''")) })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Configured against searched parameters on the test split (plain ALS, the
/// variant the search optimises), and what the search cost.
pub fn render_comparison(default: &EvalReport, searched: &EvalReport, r: &model::artifact::SearchRecord) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "test split ({} protocol), als:", searched.protocol);
    for k in ["recall@20", "precision@5", "ndcg@10", "hit_rate@5"] {
        let (d, v) = (default.als.get(k), searched.als.get(k));
        let ratio = if d > 0.0 { format!("{:.3} x", v / d) } else { "n/a".into() };
        let _ = writeln!(s, "  {k:<12} configured {d:.4}  searched {v:.4}  ({ratio})");
    }
    let _ = writeln!(
        s,
        "search cost: {:.2} fits estimated (budget {}), {:.1} s; one fit of the configured parameters on the test \
         split's training side took {:.2} s ({:.1} x)",
        r.spent_fits,
        r.budget_fits,
        r.seconds,
        default.timings.fit_s,
        r.seconds / default.timings.fit_s.max(1e-9)
    );
    s
}

/// The one-screen table of an evaluation.
pub fn render_report(r: &EvalReport) -> String {
    let keys = ["recall@20", "precision@5", "ndcg@10", "hit_rate@5", "coverage@5", "novelty@5", "diversity@5"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "protocol {}: {} users x {} items, {} train pairs; {} test users ({} with targets, {} cold), {} target pairs",
        r.protocol, r.users, r.items, r.train_nnz, r.test_users, r.target_users, r.cold_test_users, r.target_pairs
    );
    let _ = write!(s, "{:<16}", "model");
    for k in keys {
        let _ = write!(s, "{k:>12}");
    }
    s.push('\n');
    let rerank_name = if r.rerank_applied { "als_rerank" } else { "als_rerank*" };
    for (name, m) in [
        ("popular", &r.popular),
        ("popular_conv", &r.popular_conversions),
        ("als", &r.als),
        (rerank_name, &r.als_rerank),
    ] {
        let _ = write!(s, "{name:<16}");
        for k in keys {
            let _ = write!(s, "{:>12.4}", m.get(k));
        }
        s.push('\n');
    }
    for (name, sp) in [("als", &r.spread_als), ("als_rerank", &r.spread_als_rerank)] {
        if let Some(sp) = sp {
            let _ = write!(s, "{:<16}", format!("{name} ±sd"));
            for k in keys {
                let _ = write!(s, "{:>12.4}", sp.std.get(k).copied().unwrap_or(f64::NAN));
            }
            let _ = writeln!(s, "   (seeds {:?})", sp.seeds);
        }
    }
    if !r.rerank_applied {
        s.push_str("* no item categories known: the re-rank is a no-op\n");
    }
    let t = &r.timings;
    let _ = writeln!(
        s,
        "timings: load {:.2}s, split {:.2}s, fit {:.2}s, recommend {:.2}s ({:.0} users/s), metrics {:.2}s, total {:.2}s",
        t.load_s, t.split_s, t.fit_s, t.recommend_s, t.recommend_users_per_s, t.metrics_s, t.total_s
    );
    s
}
