//! `evaluate --report DIR`: the evaluation as one self-contained `index.html`
//! (inline CSS and SVG drawn here; no script, nothing fetched), so the page can
//! be mailed, archived with a model or opened from a CI artifact as it is.
//! `train --report` adds the gate's decision ([`gate_section`]) to the same page;
//! `models compare --report` has only manifests at hand ([`render_comparison`]).
//!
//! Every text that comes from outside (paths, the command line, configuration
//! values) goes through [`esc`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use model::artifact::{GateDecision, GateRecord, Manifest, SearchRecord};

use crate::config::TrainingConfig;
use crate::metrics::{Curve, Cutoffs, Metrics};
use crate::pipeline::{EvalReport, Spread};

/// What the page shows besides the evaluation itself.
#[derive(Debug, Clone, Copy)]
pub struct PageInput<'a> {
    pub report: &'a EvalReport,
    /// The settings the run used (after flags and environment).
    pub training: &'a TrainingConfig,
    /// The command line, as typed.
    pub command: &'a str,
    /// Where the events came from (`DIR`, `kafka:TOPIC`, …).
    pub source: &'a str,
    /// The load summary `evaluate` prints (files, rejections, category tree).
    pub load_summary: &'a str,
    /// When the page was made (RFC 3339).
    pub generated_at: &'a str,
    /// The model search behind the evaluated parameters, when one ran.
    pub search: Option<SearchView<'a>>,
}

/// The search-trace section's input.
#[derive(Debug, Clone, Copy)]
pub struct SearchView<'a> {
    pub record: &'a SearchRecord,
    /// The configured parameters' evaluation on the same test split
    /// (`evaluate --search`), to set the searched one against.
    pub default: Option<&'a EvalReport>,
}

/// Writes `dir/index.html` (creating `dir`); returns its path.
pub fn write(dir: &Path, input: &PageInput<'_>) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, render(input)).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Text as HTML (element content and quoted attribute values alike).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One evaluated variant: its name in the JSON report, a legend label, a colour
/// and a dash pattern (the lines stay apart in greyscale and for colour-blind
/// readers; the Okabe–Ito palette).
struct Variant<'a> {
    key: &'static str,
    label: &'static str,
    colour: &'static str,
    dash: &'static str,
    metrics: &'a Metrics,
    curve: Option<&'a Curve>,
    spread: Option<&'a Spread>,
    seeded: bool,
}

fn variants(r: &EvalReport) -> [Variant<'_>; 4] {
    let c = r.curves.as_ref();
    [
        Variant {
            key: "popular",
            label: "popular",
            colour: "#E69F00",
            dash: "6 4",
            metrics: &r.popular,
            curve: c.map(|c| &c.popular),
            spread: None,
            seeded: false,
        },
        Variant {
            key: "popular_conversions",
            label: "popular (conversions)",
            colour: "#009E73",
            dash: "2 3",
            metrics: &r.popular_conversions,
            curve: c.map(|c| &c.popular_conversions),
            spread: None,
            seeded: false,
        },
        Variant {
            key: "als",
            label: "ALS",
            colour: "#0072B2",
            dash: "",
            metrics: &r.als,
            curve: c.map(|c| &c.als),
            spread: r.spread_als.as_ref(),
            seeded: true,
        },
        Variant {
            key: "als_rerank",
            label: "ALS + re-rank",
            colour: "#D55E00",
            dash: "10 3 2 3",
            metrics: &r.als_rerank,
            curve: c.map(|c| &c.als_rerank),
            spread: r.spread_als_rerank.as_ref(),
            seeded: true,
        },
    ]
}

const CSS: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;background:#fff;margin:0}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 4px}code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
tr.chosen td{background:#eef6ee;font-weight:600}
pre{background:#f6f6f6;border:1px solid #e2e2e2;padding:10px;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;margin:6px 0}th,td{padding:4px 10px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sd{color:#666;font-size:12px}.served{font-size:11px;background:#e8f1fb;color:#0b4f8a;border-radius:3px;padding:1px 5px;margin-left:6px}
.note{color:#555;font-size:13px}.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(500px,1fr));gap:16px}
svg{width:100%;height:auto;background:#fff}svg text{font:12px system-ui,sans-serif;fill:#333}
svg .title{font-size:14px;font-weight:600}svg .grid{stroke:#e5e5e5}svg .axis{stroke:#444}
.kv td:first-child{color:#444;white-space:nowrap}code.flag{white-space:nowrap}
.verdict{padding:10px 14px;border-left:6px solid;border-radius:3px;margin:8px 0}.verdict.pass{background:#e9f6ec;border-color:#1a7f37}
.verdict.fail{background:#fdecea;border-color:#b42318}.verdict.forced{background:#fff4e0;border-color:#b26b00}
table.gate tr.bad td{background:#fdecea}table.gate tr.bad td.check{color:#b42318;font-weight:600}h2 code,th code{font-size:.95em}
";

/// The whole page.
pub fn render(input: &PageInput<'_>) -> String {
    render_page(input, None)
}

/// The page, with the gate's decision before the metrics when a version was trained.
fn render_page(input: &PageInput<'_>, gate: Option<&GateView<'_>>) -> String {
    let r = input.report;
    let vs = variants(r);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>recsys-trainer evaluation: {} protocol</title><style>{CSS}</style></head><body><main>\n",
        esc(r.protocol)
    );
    let _ = writeln!(h, "<h1>Offline evaluation — {} protocol</h1>", esc(r.protocol));
    let _ = writeln!(
        h,
        "<p class=\"sub\">Generated {} by <code>{}</code></p>",
        esc(input.generated_at),
        esc(input.command)
    );
    let _ = writeln!(h, "<p class=\"sub\">Data: <code>{}</code></p>", esc(input.source));

    if let Some(g) = gate {
        gate_section(&mut h, g);
    }
    h.push_str("<h2>Metrics</h2>\n");
    metric_table(&mut h, r, &vs, input.training);
    if let Some(sv) = &input.search {
        search_section(&mut h, sv, r);
    }

    h.push_str("<h2>Recall@k and NDCG@k, k = 1…50</h2>\n");
    match &r.curves {
        Some(c) => {
            let cut = Cutoffs::default();
            h.push_str("<div class=\"charts\">\n");
            // After a search the page's ALS is the searched parameters' fit;
            // the configured parameters' ALS is drawn beside it.
            let configured = input.search.and_then(|sv| sv.default).and_then(|d| {
                d.curves.as_ref().map(|dc| Variant {
                    key: "als_configured",
                    label: "ALS, configured parameters",
                    colour: "#CC79A7",
                    dash: "1 3",
                    metrics: &d.als,
                    curve: Some(&dc.als),
                    spread: None,
                    seeded: true,
                })
            });
            let series = |f: fn(&Curve) -> &Vec<f64>| -> Vec<(&Variant<'_>, &[f64])> {
                vs.iter().chain(&configured).filter_map(|v| v.curve.map(|c| (v, f(c).as_slice()))).collect()
            };
            line_chart(&mut h, "recall", "Recall@k", &series(|c| &c.recall), c.depth, cut.recall);
            line_chart(&mut h, "ndcg", "NDCG@k", &series(|c| &c.ndcg), c.depth, cut.ndcg);
            h.push_str("</div>\n");
            let _ = writeln!(
                h,
                "<p class=\"note\">Lists of {} items per test user, scored once; the value at k uses the first k. \
                 ALS curves are from the seed-{} fit (the one the table shows). The re-rank reorders the first \
                 max(k, candidates) = {} ALS candidates, as in the table; deeper ranks follow in ALS order. \
                 Dashed vertical lines: the table's cut-offs.</p>",
                c.depth.max(input.training.k),
                c.seed,
                input.training.k.max(input.training.rerank.candidates)
            );
        }
        None => h.push_str("<p class=\"note\">No curves were computed for this run.</p>\n"),
    }

    let b = Cutoffs::default().beyond_accuracy;
    let _ = writeln!(h, "<h2>Beyond accuracy (top {b})</h2>");
    h.push_str("<div class=\"charts\">\n");
    bar_chart(&mut h, "coverage", &format!("Coverage@{b}: share of training items recommended"), &vs, b);
    bar_chart(&mut h, "novelty", &format!("Novelty@{b}: mean −log2(popularity share), bits"), &vs, b);
    bar_chart(&mut h, "diversity", &format!("Diversity@{b}: distinct categories per list"), &vs, b);
    h.push_str("</div>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">Coverage@{b} = distinct items in all top-{b} lists / distinct training items. \
         Novelty@{b} = mean over every recommended item of −log2(training pairs of the item / all training pairs). \
         Diversity@{b} = mean distinct categories in a top-{b} list, over lists with a categorised item{}.</p>",
        if r.rerank_applied { "" } else { " (no item categories in this data: 0)" }
    );

    h.push_str("<h2>Data</h2>\n<table class=\"kv\">\n");
    for (k, v) in [
        ("source", input.source.to_string()),
        ("protocol", r.protocol.to_string()),
        ("training users", r.users.to_string()),
        ("training items", r.items.to_string()),
        ("training pairs", r.train_nnz.to_string()),
        ("test users", r.test_users.to_string()),
        ("test users with targets", r.target_users.to_string()),
        ("cold test users (popular list)", r.cold_test_users.to_string()),
        ("target pairs", r.target_pairs.to_string()),
    ] {
        let _ = writeln!(h, "<tr><td>{}</td><td class=\"num\">{}</td></tr>", esc(k), esc(&v));
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<pre>{}</pre>", esc(input.load_summary.trim_end()));

    h.push_str("<h2>Parameters</h2>\n<table class=\"kv\">\n");
    let mut rows = Vec::new();
    flatten("", &serde_json::to_value(input.training).unwrap_or_default(), &mut rows);
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>", esc(&k), esc(&v));
    }
    h.push_str("</table>\n");

    let t = &r.timings;
    h.push_str("<h2>Timings</h2>\n<table class=\"kv\">\n");
    for (k, v) in [
        ("load", t.load_s),
        ("split and index", t.split_s),
        ("fit (first seed)", t.fit_s),
        ("recommend (first seed)", t.recommend_s),
        ("metrics (first seed)", t.metrics_s),
        ("total", t.total_s),
    ] {
        let _ = writeln!(h, "<tr><td>{k}</td><td class=\"num\">{v:.2} s</td></tr>");
    }
    let _ = writeln!(h, "<tr><td>ALS scoring</td><td class=\"num\">{:.0} users/s</td></tr>", t.recommend_users_per_s);
    h.push_str("</table>\n</main></body></html>\n");
    h
}

/// The model search: the chosen configuration against the configured one
/// (test split, when known), then every trial of every round.
pub fn search_section(h: &mut String, sv: &SearchView<'_>, searched: &EvalReport) {
    let r = sv.record;
    let _ = writeln!(
        h,
        "<h2 id=\"search\">Model search: {} candidates, {} rounds</h2>",
        r.candidates.len(),
        r.rounds.len()
    );
    let v = &r.validation;
    let _ = writeln!(
        h,
        "<p class=\"note\">Successive halving on a validation split carved from the training side ({} protocol: {} \
         users, {} items, {} training pairs, {} users with targets; the test split is not read), scored by \
         <code>{}</code>, seed {}. Cost {:.2} of a budget of {} fits (estimated from the arithmetic), {:.1} s.</p>",
        esc(&v.protocol),
        v.users,
        v.items,
        v.train_pairs,
        v.target_users,
        esc(&r.metric),
        r.seed,
        r.spent_fits,
        r.budget_fits,
        r.seconds
    );
    if let Some(d) = sv.default {
        h.push_str("<table class=\"search-compare\"><tr><th>test split</th>");
        for k in KEYS.iter().take(4) {
            let _ = write!(h, "<th>{}</th>", esc(k));
        }
        h.push_str("</tr>\n");
        for (label, rep) in [("configured parameters (als)", d), ("searched parameters (als)", searched)] {
            let _ = write!(h, "<tr><td>{}</td>", esc(label));
            for k in KEYS.iter().take(4) {
                let _ = write!(h, "<td class=\"num\">{}</td>", num(rep.als.get(k)));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    h.push_str(
        "<table class=\"search-trace\"><tr><th>round</th><th>candidate</th><th>factors</th><th>iterations</th>\
         <th>α</th><th>λ</th><th>view / cart / buy</th><th>half-life (d)</th><th>start</th><th>score</th>\
         <th>cost (fits)</th></tr>\n",
    );
    for t in &r.trials {
        let p = &t.point;
        let chosen = t.candidate == r.chosen_candidate;
        let _ = writeln!(
            h,
            "<tr{}><td class=\"num\">{}</td><td class=\"num\">{}{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{} / {} / {}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.3}</td></tr>",
            if chosen { " class=\"chosen\"" } else { "" },
            t.round,
            t.candidate,
            if t.candidate == r.default_candidate { " (configured)" } else { "" },
            p.factors,
            p.iterations,
            p.alpha,
            p.regularization,
            p.weights.view,
            p.weights.addtocart,
            p.weights.transaction,
            p.recency_half_life_days,
            esc(&t.start),
            num(t.score),
            t.cost_fits
        );
    }
    h.push_str("</table>\n");
    let c = &r.chosen;
    let _ = writeln!(
        h,
        "<p class=\"note\">Chosen: candidate {} — {} factors, {} iterations, α {}, λ {}, weights {} / {} / {}, \
         half-life {} d; validation {} {}. Highlighted rows are its trials.</p>",
        r.chosen_candidate,
        c.factors,
        c.iterations,
        c.alpha,
        c.regularization,
        c.weights.view,
        c.weights.addtocart,
        c.weights.transaction,
        c.recency_half_life_days,
        esc(&r.metric),
        num(r.chosen_score)
    );
}

/// The metric keys of the table, in the order `evaluate` prints them.
const KEYS: [&str; 7] = ["recall@20", "precision@5", "ndcg@10", "hit_rate@5", "coverage@5", "novelty@5", "diversity@5"];

fn metric_table(h: &mut String, r: &EvalReport, vs: &[Variant<'_>], t: &TrainingConfig) {
    let served = if t.rerank.enabled && r.rerank_applied { "als_rerank" } else { "als" };
    h.push_str("<table><tr><th>model</th>");
    for k in KEYS {
        let _ = write!(h, "<th>{}</th>", esc(k));
    }
    h.push_str("<th>seed-to-seed spread</th></tr>\n");
    for v in vs {
        let mark = if v.key == served { "<span class=\"served\">served</span>" } else { "" };
        let _ = write!(h, "<tr data-model=\"{}\"><td>{}{mark}</td>", v.key, esc(v.label));
        for k in KEYS {
            let sd =
                v.spread.and_then(|s| s.std.get(k)).map(|sd| format!("<br><span class=\"sd\">± {}</span>", num(*sd)));
            let _ = write!(h, "<td class=\"num\">{}{}</td>", num(v.metrics.get(k)), sd.unwrap_or_default());
        }
        let spread = match (v.seeded, v.spread) {
            (false, _) => "none: deterministic, no seed".to_string(),
            (true, Some(s)) => format!(
                "± sample sd over {} seeds ({}); the values are the seed-{} run",
                s.seeds.len(),
                s.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                s.seeds.first().copied().unwrap_or(t.seed)
            ),
            (true, None) => format!("one run (seed {}): no spread measured; {REPEATS_HINT}", t.seed),
        };
        // The flag stays on one line (and copyable).
        let spread = esc(&spread).replace(REPEATS_HINT, "<code class=\"flag\">--repeats N</code> fits N seeds");
        let _ = writeln!(h, "<td class=\"note\">{spread}</td></tr>");
    }
    h.push_str("</table>\n");
    if !r.rerank_applied {
        h.push_str(
            "<p class=\"note\">No item categories are known: the re-rank is a no-op (ALS + re-rank = ALS).</p>\n",
        );
    }
}

const REPEATS_HINT: &str = "--repeats N fits N seeds";

/// A metric for people: four decimals, `n/a` when missing or not finite.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".into()
    }
}

/// `a.b = value` rows of a JSON object, nested objects flattened.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), value_text(other))),
    }
}

/// A configuration value as it would be written in the TOML file.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match (n.as_f64(), n.is_f64()) {
            // f32 settings arrive widened (0.1 → 0.10000000149011612): an f64
            // that is exactly an f32 prints as that f32's shortest form.
            (Some(f), true) if f64::from(f as f32) == f => (f as f32).to_string(),
            _ => n.to_string(),
        },
        serde_json::Value::Array(a) => {
            let items: Vec<String> =
                a.iter().map(|e| if e.is_string() { e.to_string() } else { value_text(e) }).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// An axis from 0 to a round maximum ≥ `max`: (maximum, tick step). The step
/// is 1, 2, 2.5 or 5 × 10^n, about five ticks.
pub fn nice_axis(max: f64) -> (f64, f64) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let exp = raw.log10().floor() as i32;
    // Scaled by a power of ten last, by division for negative powers: 3 × 1 / 10
    // is 0.3 exactly where 3 × 0.1 is not, and the axis label shows it.
    let scale = |m: f64| if exp < 0 { m / 10f64.powi(-exp) } else { m * 10f64.powi(exp) };
    let mult = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|m| scale(*m) >= raw * (1.0 - 1e-9)).unwrap_or(10.0);
    let n = (max / scale(mult) - 1e-9).ceil().max(1.0);
    (scale(n * mult), scale(mult))
}

/// Geometry of the line charts (SVG user units).
pub(crate) mod line {
    pub const WIDTH: f64 = 540.0;
    pub const HEIGHT: f64 = 390.0;
    pub const LEFT: f64 = 60.0;
    pub const TOP: f64 = 34.0;
    pub const PLOT_W: f64 = 455.0;
    pub const PLOT_H: f64 = 250.0;
}

/// Pixel x of cut-off `k` (1-based) on a chart of `depth` cut-offs.
fn line_x(k: usize, depth: usize) -> f64 {
    if depth <= 1 {
        return line::LEFT + line::PLOT_W / 2.0;
    }
    line::LEFT + line::PLOT_W * (k - 1) as f64 / (depth - 1) as f64
}

fn line_y(v: f64, top: f64) -> f64 {
    let v = if v.is_finite() { v.clamp(0.0, top) } else { 0.0 };
    line::TOP + line::PLOT_H * (1.0 - v / top)
}

fn line_chart(
    h: &mut String,
    metric: &str,
    title: &str,
    series: &[(&Variant<'_>, &[f64])],
    depth: usize,
    marker: usize,
) {
    use line::*;
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let (top, step) = nice_axis(max);
    let bottom = TOP + PLOT_H;
    // HEIGHT holds two legend rows; each further row adds its line.
    let height = HEIGHT + series.len().div_ceil(2).saturating_sub(2) as f64 * 22.0;
    let _ = writeln!(
        h,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{t}\" data-chart=\"{metric}\" data-y-max=\"{top}\">\
         <text class=\"title\" x=\"{LEFT}\" y=\"20\">{t}</text>",
        t = esc(title)
    );
    // Horizontal grid and y ticks.
    let ticks = (top / step).round() as usize;
    for i in 0..=ticks {
        let v = step * i as f64;
        let y = line_y(v, top);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.2}\" y1=\"{y:.2}\" y2=\"{y:.2}\"/>\
             <text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\">{}</text>",
            LEFT + PLOT_W,
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
    }
    // x ticks: 1 and every multiple of a round step.
    let xstep = if depth > 20 {
        5
    } else if depth > 10 {
        2
    } else {
        1
    };
    for k in (1..=depth).filter(|k| *k == 1 || k % xstep == 0) {
        let x = line_x(k, depth);
        let _ = write!(
            h,
            "<line class=\"axis\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{bottom}\" y2=\"{:.2}\"/>\
             <text x=\"{x:.2}\" y=\"{:.2}\" text-anchor=\"middle\">{k}</text>",
            bottom + 5.0,
            bottom + 19.0
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.2}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
         <text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\">k (recommendations considered)</text>\
         <text transform=\"translate(16 {:.2}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + PLOT_W,
        LEFT + PLOT_W / 2.0,
        bottom + 38.0,
        TOP + PLOT_H / 2.0,
        esc(title)
    );
    if (1..=depth).contains(&marker) {
        let x = line_x(marker, depth);
        let _ = write!(
            h,
            "<line x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{TOP}\" y2=\"{bottom}\" stroke=\"#888\" stroke-dasharray=\"3 3\"/>\
             <text x=\"{:.2}\" y=\"{:.2}\" fill=\"#666\">table: k = {marker}</text>",
            x + 4.0,
            TOP + 12.0
        );
    }
    for (v, values) in series {
        let points: Vec<String> = values
            .iter()
            .take(depth)
            .enumerate()
            .map(|(i, val)| format!("{:.2},{:.2}", line_x(i + 1, depth), line_y(*val, top)))
            .collect();
        let _ = write!(
            h,
            "<polyline data-model=\"{}\" data-metric=\"{metric}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.2\" \
             stroke-linejoin=\"round\" stroke-dasharray=\"{}\" points=\"{}\"/>",
            v.key,
            v.colour,
            v.dash,
            points.join(" ")
        );
    }
    // Legend: two columns under the axis title.
    for (i, (v, _)) in series.iter().enumerate() {
        let x = LEFT + (i % 2) as f64 * 230.0;
        let y = bottom + 62.0 + (i / 2) as f64 * 22.0;
        let _ = write!(
            h,
            "<line x1=\"{x:.2}\" x2=\"{:.2}\" y1=\"{y:.2}\" y2=\"{y:.2}\" stroke=\"{}\" stroke-width=\"3\" stroke-dasharray=\"{}\"/>\
             <text x=\"{:.2}\" y=\"{:.2}\">{}</text>",
            x + 34.0,
            v.colour,
            v.dash,
            x + 42.0,
            y + 4.0,
            esc(v.label)
        );
    }
    h.push_str("</svg>\n");
}

/// A tick value with the decimals its step needs (0.25 → two).
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..=6usize)
        .find(|d| {
            let s = step * 10f64.powi(*d as i32);
            (s - s.round()).abs() < 1e-6
        })
        .unwrap_or(6);
    format!("{v:.decimals$}")
}

/// Geometry of the bar charts.
pub(crate) mod bar {
    pub const WIDTH: f64 = 540.0;
    pub const LEFT: f64 = 160.0;
    pub const TOP: f64 = 34.0;
    pub const PLOT_W: f64 = 320.0;
    pub const ROW: f64 = 30.0;
}

fn bar_chart(h: &mut String, metric: &str, title: &str, vs: &[Variant<'_>], cutoff: usize) {
    use bar::*;
    let key = format!("{metric}@{cutoff}");
    let values: Vec<f64> = vs.iter().map(|v| v.metrics.get(&key)).collect();
    let (top, step) = nice_axis(values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max));
    let bottom = TOP + ROW * vs.len() as f64;
    let height = bottom + 44.0;
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{t}\" data-chart=\"{metric}\" data-x-max=\"{top}\">\
         <text class=\"title\" x=\"10\" y=\"20\">{t}</text>",
        t = esc(title)
    );
    let ticks = (top / step).round() as usize;
    for i in 0..=ticks {
        let v = step * i as f64;
        let x = LEFT + PLOT_W * v / top;
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
             <text x=\"{x:.2}\" y=\"{:.2}\" text-anchor=\"middle\">{}</text>",
            bottom + 16.0,
            tick_label(v, step)
        );
    }
    for (i, (v, val)) in vs.iter().zip(&values).enumerate() {
        let y = TOP + ROW * i as f64 + 5.0;
        let w = if val.is_finite() { PLOT_W * val.clamp(0.0, top) / top } else { 0.0 };
        let _ = write!(
            h,
            "<text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\">{}</text>\
             <rect data-model=\"{}\" data-metric=\"{metric}\" x=\"{LEFT}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{:.2}\" fill=\"{}\"/>\
             <text x=\"{:.2}\" y=\"{:.2}\">{}</text>",
            LEFT - 8.0,
            y + ROW / 2.0,
            esc(v.label),
            v.key,
            ROW - 10.0,
            v.colour,
            LEFT + w + 5.0,
            y + ROW / 2.0,
            num(*val)
        );
    }
    let _ = writeln!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.2}\" y1=\"{bottom}\" y2=\"{bottom}\"/></svg>",
        LEFT + PLOT_W
    );
}

/// Now in RFC 3339 to the second, for "Generated …".
pub fn generated_now() -> anyhow::Result<String> {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .context("dropping sub-seconds")?
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the time")
}

/// The gate section's input: the version judged and the decision about it.
#[derive(Debug, Clone, Copy)]
pub struct GateView<'a> {
    pub candidate: &'a str,
    pub record: &'a GateRecord,
}

/// The class that colours the decision: passed, stopped, or overridden.
fn decision_class(d: GateDecision) -> &'static str {
    match d {
        GateDecision::FirstModel | GateDecision::Promoted => "pass",
        GateDecision::Rejected | GateDecision::Incomparable => "fail",
        GateDecision::Forced => "forced",
    }
}

/// A value of one side of the gate table: `—` where that side has none.
fn side(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "—".into())
}

/// The gate's decision: the verdict highlighted with its reason, then candidate
/// against served per key metric with the change, the allowed drop and the check.
pub fn gate_section(h: &mut String, g: &GateView<'_>) {
    let r = g.record;
    let served = r.served_version.as_deref();
    let _ = writeln!(
        h,
        "<h2 id=\"gate\">Gate: <code>{}</code> against {}</h2>",
        esc(g.candidate),
        served.map(|s| format!("served <code>{}</code>", esc(s))).unwrap_or_else(|| "nothing served".into())
    );
    let decision =
        serde_json::to_value(r.decision).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let _ = writeln!(
        h,
        "<p class=\"verdict {}\" data-decision=\"{}\"><strong>{}</strong> — {}</p>",
        decision_class(r.decision),
        esc(&decision),
        esc(&r.decision.as_str().to_uppercase()),
        esc(&r.reason)
    );
    let allowed = format!("≥ {:+.1} %", -100.0 * r.max_relative_drop);
    let _ = writeln!(
        h,
        "<table class=\"gate\"><tr><th>metric</th><th>candidate <code>{}</code></th><th>served <code>{}</code></th>\
         <th>change</th><th>allowed</th><th>check</th></tr>",
        esc(g.candidate),
        esc(served.unwrap_or("—"))
    );
    for m in &r.metrics {
        let (class, check) = match m.ok {
            Some(true) => ("", "ok"),
            Some(false) => (" class=\"bad\"", "too low"),
            None => ("", "not compared"),
        };
        let change = m.relative_change.map(|c| format!("{:+.1} %", 100.0 * c)).unwrap_or_else(|| "—".into());
        let _ = writeln!(
            h,
            "<tr data-metric=\"{}\"{class}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"check\">{check}</td></tr>",
            esc(&m.metric),
            esc(&m.metric),
            side(m.candidate),
            side(m.served),
            esc(&change),
            esc(&allowed)
        );
    }
    h.push_str("</table>\n");
    let protocols = match &r.served_protocol {
        Some(p) if *p == r.protocol => format!("both evaluated with the {} protocol", esc(p)),
        Some(p) => format!("candidate evaluated with the {} protocol, served with {}", esc(&r.protocol), esc(p)),
        None => format!("candidate evaluated with the {} protocol", esc(&r.protocol)),
    };
    let _ = writeln!(
        h,
        "<p class=\"note\">The values are the served variant's recorded in each manifest ({protocols}). \
         A candidate is promoted when every key metric is within the allowed relative drop of the served \
         version's (<code>training.gate.max_relative_drop</code> = {}); evaluations on different protocols, or \
         without a key metric, are incomparable and not promoted without <code class=\"flag\">--force</code>.</p>",
        r.max_relative_drop
    );
}

/// Writes `dir/index.html` for a trained version: the evaluation page with the
/// gate's decision first.
pub fn write_trained(dir: &Path, input: &PageInput<'_>, gate: &GateView<'_>) -> anyhow::Result<PathBuf> {
    write_html(dir, &render_page(input, Some(gate)))
}

/// The page of `models compare`: built from two manifests, with no evaluation
/// run at hand, so the gate and the recorded numbers of both versions.
#[derive(Debug, Clone, Copy)]
pub struct ComparisonPage<'a> {
    pub candidate: &'a Manifest,
    pub served: &'a Manifest,
    pub record: &'a GateRecord,
    pub command: &'a str,
    pub generated_at: &'a str,
}

/// Writes `dir/index.html` of a comparison.
pub fn write_comparison(dir: &Path, page: &ComparisonPage<'_>) -> anyhow::Result<PathBuf> {
    write_html(dir, &render_comparison(page))
}

fn write_html(dir: &Path, html: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("index.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One row of a version's facts on the comparison page.
type Field = fn(&Manifest) -> String;

/// The comparison page: the gate section, every recorded metric of both
/// versions, what each was trained on, their parameters.
pub fn render_comparison(p: &ComparisonPage<'_>) -> String {
    let (a, b) = (p.candidate, p.served);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>recsys-trainer: {} against {}</title><style>{CSS}</style></head><body><main>\n",
        esc(&a.version),
        esc(&b.version)
    );
    let _ = writeln!(h, "<h1>Model {} against {}</h1>", esc(&a.version), esc(&b.version));
    let _ = writeln!(
        h,
        "<p class=\"sub\">Generated {} by <code>{}</code> from the two versions' manifests (nothing retrained)</p>",
        esc(p.generated_at),
        esc(p.command)
    );
    gate_section(&mut h, &GateView { candidate: &a.version, record: p.record });

    h.push_str("<h2>Recorded evaluations</h2>\n");
    let _ = writeln!(
        h,
        "<table><tr><th>metric</th><th>candidate <code>{}</code></th><th>served <code>{}</code></th></tr>",
        esc(&a.version),
        esc(&b.version)
    );
    let metrics = |m: &Manifest| m.evaluation.as_ref().map(|e| e.metrics.clone()).unwrap_or_default();
    let (ma, mb) = (metrics(a), metrics(b));
    let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    for k in keys {
        let _ = writeln!(
            h,
            "<tr data-metric=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(k),
            esc(k),
            side(ma.get(k).copied()),
            side(mb.get(k).copied())
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Versions</h2>\n<table class=\"kv\">\n");
    let _ = writeln!(h, "<tr><th></th><th>candidate</th><th>served</th></tr>");
    let gate_said = |m: &Manifest| {
        m.gate
            .as_ref()
            .map(|g| format!("{} ({})", g.decision.as_str(), g.served_version.as_deref().unwrap_or("nothing served")))
            .unwrap_or_else(|| "not recorded".into())
    };
    let rows: [(&str, Field); 11] = [
        ("version", |m| m.version.clone()),
        ("created", |m| m.created_at.clone()),
        ("parent version", |m| m.parent_version.clone().unwrap_or_else(|| "none".into())),
        ("data source", |m| m.data.source.clone()),
        ("events", |m| m.data.events.to_string()),
        ("first / last event (epoch ms)", |m| format!("{} / {}", m.data.first_ts, m.data.last_ts)),
        ("users × items", |m| format!("{} × {}", m.counts.users, m.counts.items)),
        ("training pairs", |m| m.counts.train_nnz.to_string()),
        ("factors", |m| m.counts.factors.to_string()),
        ("protocol", |m| m.evaluation.as_ref().map(|e| e.protocol.clone()).unwrap_or_else(|| "none".into())),
        ("test users with targets", |m| {
            m.evaluation.as_ref().map(|e| e.target_users.to_string()).unwrap_or_else(|| "none".into())
        }),
    ];
    for (k, f) in rows {
        let _ = writeln!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(k), esc(&f(a)), esc(&f(b)));
    }
    let _ = writeln!(
        h,
        "<tr><td>gate when trained</td><td>{}</td><td>{}</td></tr>",
        esc(&gate_said(a)),
        esc(&gate_said(b))
    );
    h.push_str("</table>\n");

    h.push_str("<h2>Parameters</h2>\n<table class=\"kv\">\n<tr><th></th><th>candidate</th><th>served</th></tr>\n");
    let params = |m: &Manifest| {
        let mut rows = Vec::new();
        flatten("", &serde_json::to_value(&m.params).unwrap_or_default(), &mut rows);
        rows.into_iter().collect::<std::collections::BTreeMap<_, _>>()
    };
    let (pa, pb) = (params(a), params(b));
    let keys: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    for k in keys {
        let v = |p: &std::collections::BTreeMap<String, String>| p.get(k).cloned().unwrap_or_else(|| "—".into());
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(k),
            esc(&v(&pa)),
            esc(&v(&pb))
        );
    }
    h.push_str("</table>\n</main></body></html>\n");
    h
}

#[cfg(test)]
mod gate_tests {
    use model::artifact::GateMetric;

    use super::*;

    /// Known numbers: recall@20 fell 12 % (0.25 → 0.22) with 10 % allowed,
    /// precision@5 rose, ndcg@10 is absent on the served side.
    fn record(decision: GateDecision) -> GateRecord {
        let row = |metric: &str, candidate, served: Option<f64>, change: Option<f64>, ok| GateMetric {
            metric: metric.into(),
            candidate: Some(candidate),
            served,
            relative_change: change,
            ok,
        };
        GateRecord {
            decision,
            reason: "recall@20 fell 12.0 % (0.2500 → 0.2200) against served version v1 <old>".into(),
            served_version: Some("v1".into()),
            protocol: "seed".into(),
            served_protocol: Some("seed".into()),
            max_relative_drop: 0.1,
            metrics: vec![
                row("precision@5", 0.04, Some(0.033), Some(0.04 / 0.033 - 1.0), Some(true)),
                row("recall@20", 0.22, Some(0.25), Some(-0.12), Some(false)),
                row("ndcg@10", 0.1, None, None, None),
            ],
        }
    }

    fn section(r: &GateRecord) -> String {
        let mut h = String::new();
        gate_section(&mut h, &GateView { candidate: "v2", record: r });
        h
    }

    #[test]
    fn the_gate_table_holds_both_sides_and_the_verdict() {
        let h = section(&record(GateDecision::Rejected));
        assert!(h.contains("<h2 id=\"gate\">Gate: <code>v2</code> against served <code>v1</code></h2>"), "{h}");
        assert!(
            h.contains(
                "<p class=\"verdict fail\" data-decision=\"rejected\"><strong>REJECTED</strong> — recall@20 fell \
                 12.0 % (0.2500 → 0.2200) against served version v1 &lt;old&gt;</p>"
            ),
            "{h}"
        );
        assert!(
            h.contains(
                "<tr data-metric=\"recall@20\" class=\"bad\"><td>recall@20</td><td class=\"num\">0.2200</td>\
                 <td class=\"num\">0.2500</td><td class=\"num\">-12.0 %</td><td class=\"num\">≥ -10.0 %</td>\
                 <td class=\"check\">too low</td></tr>"
            ),
            "{h}"
        );
        assert!(h.contains("<td class=\"num\">+21.2 %</td>"), "precision change: {h}");
        assert!(h.contains("<td class=\"num\">—</td><td class=\"num\">—</td>"), "ndcg has no served side: {h}");
        assert!(h.contains("<td class=\"check\">not compared</td>"));
        assert_eq!(h.matches("class=\"bad\"").count(), 1, "one failing row");
        assert!(h.contains("both evaluated with the seed protocol"));
        assert!(h.contains("max_relative_drop</code> = 0.1"));
    }

    #[test]
    fn each_decision_is_coloured_and_named() {
        for (d, class, word) in [
            (GateDecision::Promoted, "pass", "PROMOTED"),
            (GateDecision::FirstModel, "pass", "FIRST MODEL"),
            (GateDecision::Incomparable, "fail", "INCOMPARABLE"),
            (GateDecision::Forced, "forced", "FORCED"),
        ] {
            let h = section(&record(d));
            let want = format!("<p class=\"verdict {class}\" data-decision=\"");
            assert!(h.contains(&want) && h.contains(&format!("<strong>{word}</strong>")), "{d:?}: {h}");
        }
        let mut first = record(GateDecision::FirstModel);
        first.served_version = None;
        first.served_protocol = None;
        assert!(section(&first).contains("against nothing served</h2>"));
    }

    #[test]
    fn the_comparison_page_is_escaped_and_self_contained() {
        let manifest = |v: &str| {
            let spec = model::synthetic::SyntheticSpec { version: v.into(), users: 4, items: 6, ..Default::default() };
            model::synthetic::synthetic_artifact(&spec).manifest
        };
        let mut a = manifest("v2");
        a.data.source = "/d/<script>x</script>".into();
        let b = manifest("v1");
        let r = record(GateDecision::Rejected);
        let html = render_comparison(&ComparisonPage {
            candidate: &a,
            served: &b,
            record: &r,
            command: "recsys-trainer models compare v2 v1 --report 'o&o'",
            generated_at: "2026-01-01T00:00:00Z",
        });
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
        assert!(html.contains("/d/&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("--report &#39;o&amp;o&#39;"));
        assert!(html.contains("<strong>REJECTED</strong>"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pipeline::{ModelCurves, Timings};

    fn metrics(scale: f64) -> Metrics {
        Metrics(KEYS.iter().enumerate().map(|(i, k)| (k.to_string(), scale * (i + 1) as f64 / 100.0)).collect())
    }

    /// Known curves: ALS recall@k = k / 100 (0.01 … 0.50), popular half of it.
    fn report(spread: bool) -> EvalReport {
        let depth = 50;
        let curve = |f: f64| Curve {
            recall: (1..=depth).map(|k| f * k as f64 / 100.0).collect(),
            ndcg: (1..=depth).map(|k| f * 0.3 * (k as f64).sqrt() / 50f64.sqrt()).collect(),
        };
        let sp = |m: &Metrics| Spread {
            seeds: vec![42, 43, 44],
            mean: m.0.clone(),
            std: m.0.keys().map(|k| (k.clone(), 0.0012)).collect::<BTreeMap<_, _>>(),
        };
        let (als, rr) = (metrics(2.0), metrics(2.5));
        EvalReport {
            protocol: "seed",
            popular: metrics(1.0),
            popular_conversions: metrics(0.5),
            spread_als: spread.then(|| sp(&als)),
            spread_als_rerank: spread.then(|| sp(&rr)),
            als,
            als_rerank: rr,
            rerank_applied: true,
            timings: Timings::default(),
            users: 1000,
            items: 321,
            train_nnz: 4567,
            test_users: 900,
            target_users: 800,
            target_pairs: 1200,
            cold_test_users: 12,
            params: model::AlsParams::default(),
            curves: Some(ModelCurves {
                depth,
                seed: 42,
                popular: curve(0.5),
                popular_conversions: curve(0.25),
                als: curve(1.0),
                als_rerank: curve(0.9),
            }),
        }
    }

    fn page(r: &EvalReport, source: &str) -> String {
        render(&PageInput {
            report: r,
            training: &TrainingConfig::default(),
            command: "recsys-trainer evaluate --report out",
            source,
            load_summary: "loaded events.csv: 10 rows",
            generated_at: "2026-01-01T00:00:00Z",
            search: None,
        })
    }

    /// The `points` of the polyline of `model`'s `metric`, as numbers.
    fn points(html: &str, model: &str, metric: &str) -> Vec<(f64, f64)> {
        let tag = format!("<polyline data-model=\"{model}\" data-metric=\"{metric}\"");
        let start = html.find(&tag).unwrap_or_else(|| panic!("no polyline {model}/{metric}"));
        let rest = &html[start..];
        let p = &rest[rest.find("points=\"").map(|i| i + 8).unwrap_or_else(|| panic!("no points"))..];
        p[..p.find('"').unwrap_or_else(|| panic!("unterminated points"))]
            .split(' ')
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap_or_else(|| panic!("bad point {xy}"));
                (x.parse().unwrap_or_else(|e| panic!("{x}: {e}")), y.parse().unwrap_or_else(|e| panic!("{y}: {e}")))
            })
            .collect()
    }

    #[test]
    fn polylines_follow_the_curves() {
        let r = report(false);
        let html = page(&r, "data");
        // ALS recall tops out at 0.50: the axis ends at 0.5 exactly.
        assert!(html.contains("data-chart=\"recall\" data-y-max=\"0.5\""), "recall axis");
        let bottom = line::TOP + line::PLOT_H;
        for (model, f) in [("als", 1.0), ("popular", 0.5), ("popular_conversions", 0.25), ("als_rerank", 0.9)] {
            let pts = points(&html, model, "recall");
            assert_eq!(pts.len(), 50, "{model}");
            for (i, (x, y)) in pts.iter().enumerate() {
                let k = (i + 1) as f64;
                let want_x = line::LEFT + line::PLOT_W * (k - 1.0) / 49.0;
                let want_y = bottom - line::PLOT_H * (f * k / 100.0) / 0.5;
                assert!((x - want_x).abs() < 0.006, "{model} x at k={k}: {x} vs {want_x}");
                assert!((y - want_y).abs() < 0.006, "{model} y at k={k}: {y} vs {want_y}");
            }
        }
        // The ALS line ends in the top right corner, at recall 0.5.
        let als = points(&html, "als", "recall");
        assert_eq!(als[49], (line::LEFT + line::PLOT_W, line::TOP));
        assert_eq!(als[0].0, line::LEFT);
        // NDCG: max 0.3 → axis 0.3; the value at k is 0.3·√(k/50).
        let ndcg = points(&html, "als", "ndcg");
        let y_max: f64 = {
            let tag = "data-chart=\"ndcg\" data-y-max=\"";
            let i = html.find(tag).unwrap_or_else(|| panic!("ndcg chart")) + tag.len();
            html[i..i + html[i..].find('"').unwrap_or(0)].parse().unwrap_or(f64::NAN)
        };
        assert!((y_max - 0.3).abs() < 1e-9, "{y_max}");
        for (i, (_, y)) in ndcg.iter().enumerate() {
            let v = 0.3 * ((i + 1) as f64 / 50.0).sqrt();
            let back = (bottom - y) / line::PLOT_H * y_max;
            assert!((back - v).abs() < 1e-4, "ndcg@{}: drawn {back}, is {v}", i + 1);
        }
        // Monotone curves are drawn rising (smaller y further right).
        assert!(als.windows(2).all(|w| w[1].1 < w[0].1));
    }

    #[test]
    fn bars_are_proportional_to_the_metrics() {
        let html = page(&report(false), "data");
        // coverage@5 is the 5th key: 0.05 × scale; the largest (ALS + re-rank, 0.125) sets the axis.
        let (top, _) = nice_axis(0.125);
        for (model, scale) in [("popular", 1.0), ("als", 2.0), ("als_rerank", 2.5)] {
            let tag = format!("<rect data-model=\"{model}\" data-metric=\"coverage\"");
            let i = html.find(&tag).unwrap_or_else(|| panic!("bar {model}"));
            let rest = &html[i..];
            let w = &rest[rest.find("width=\"").unwrap_or(0) + 7..];
            let w: f64 = w[..w.find('"').unwrap_or(0)].parse().unwrap_or(f64::NAN);
            let want = bar::PLOT_W * 0.05 * scale / top;
            assert!((w - want).abs() < 0.006, "{model}: {w} vs {want}");
        }
    }

    #[test]
    fn table_holds_the_values_and_says_what_the_spread_is() {
        let one = page(&report(false), "data");
        // recall@20 of ALS: first key × 2 = 0.02; ndcg@10 of popular: 3rd key = 0.03.
        assert!(one.contains("<td class=\"num\">0.0200</td>"));
        assert!(one.contains("<td class=\"num\">0.0300</td>"));
        assert!(one.contains("one run (seed 42): no spread measured"), "single run said so");
        assert!(one.contains("none: deterministic, no seed"));
        assert!(!one.contains("± 0.0012"));
        let three = page(&report(true), "data");
        assert!(three.contains("± 0.0012"));
        assert!(three.contains("over 3 seeds (42, 43, 44)"));
        // The served variant is marked once (re-rank on, categories known).
        assert_eq!(three.matches("class=\"served\"").count(), 1);
        assert!(three.contains("<tr data-model=\"als_rerank\"><td>ALS + re-rank<span class=\"served\">"));
    }

    #[test]
    fn text_is_escaped_and_the_page_is_self_contained() {
        let html = page(&report(false), "/d/<script>alert('x')</script>&\"q\"");
        assert!(html.contains("/d/&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"));
        assert!(!html.contains("<script"), "nothing executable");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched");
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert_eq!(esc("a<b>&'\""), "a&lt;b&gt;&amp;&#39;&quot;");
    }

    #[test]
    fn parameters_read_as_in_the_configuration_file() {
        let html = page(&report(false), "data");
        // regularization is an f32 0.1; the re-rank weights f32 pairs.
        assert!(html.contains("<code>regularization</code></td><td><code>0.1</code>"), "f32 shown widened");
        assert!(html.contains("<code>protocol</code></td><td><code>seed</code>"));
        assert!(html.contains("<code>gate.metrics</code></td><td><code>[&quot;precision@5&quot;"));
        assert_eq!(value_text(&serde_json::json!([0.5f32, 2, "a"])), "[0.5, 2, \"a\"]");
        assert_eq!(value_text(&serde_json::json!(0.1f64)), "0.1");
    }

    #[test]
    fn axes_end_at_round_numbers() {
        assert_eq!(nice_axis(0.5), (0.5, 0.1));
        assert_eq!(nice_axis(0.3), (0.3, 0.1));
        let (top, step) = nice_axis(0.123);
        assert!((top - 0.125).abs() < 1e-12 && (step - 0.025).abs() < 1e-12, "{top} {step}");
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(f64::NAN), (1.0, 0.2));
        assert_eq!(tick_label(0.075, 0.025), "0.075");
        assert_eq!(tick_label(4.0, 2.0), "4");
    }
}
