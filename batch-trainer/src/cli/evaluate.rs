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
use crate::{export, inspect};

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
    let report = match &a.report {
        Some(_) => pipeline::evaluate_with_curves(ds, &s.training, a.repeats, loaded.load_s, show, REPORT_DEPTH),
        None => pipeline::evaluate(ds, &s.training, a.repeats, loaded.load_s, show),
    };
    say!("{}", render_report(&report));
    if let Some(p) = &a.json {
        write_json(p, &report)?;
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
