//! One log written every way a shop might export it — epoch ms, s or ISO-8601,
//! numeric or SKU-style ids, quoted or not, columns reordered with an extra
//! one — loads as the same data set and evaluates to the same numbers.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::fmt::Write as _;
use std::path::Path;

use batch_trainer::config::TrainingConfig;
use batch_trainer::data::Dataset;
use batch_trainer::load::{self, LoadOptions};
use batch_trainer::pipeline;
use schemas::csv::{ColumnMap, TimeUnit};

/// One event: (ts in ms, user, item, kind, transaction).
type Row = (i64, u64, u64, &'static str, Option<u64>);

/// A small log whose ids first appear in increasing order, so that interned
/// ids keep the order of the numeric ones.
fn base_log() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut x: u64 = 99;
    let mut next = |m: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    let t0 = 1_433_221_332_000_i64;
    let mut txn = 0;
    for step in 0..40u64 {
        for user in 0..120u64 {
            if step > 0 && next(3) == 0 {
                continue;
            }
            // Popular items are the low ones; item ids grow with the steps.
            let item = (next(8 + step * 2) * next(4 + step) / (4 + step)).min(8 + step * 2);
            let kind = match next(20) {
                0 => "transaction",
                1 | 2 => "addtocart",
                _ => "view",
            };
            let t = (kind == "transaction").then(|| {
                txn += 1;
                txn
            });
            rows.push((t0 + (step * 3_600 + user) as i64 * 1000, user, item, kind, t));
        }
    }
    // Renumber items by first appearance.
    let mut seen = std::collections::HashMap::new();
    for r in &mut rows {
        let n = seen.len() as u64;
        r.2 = *seen.entry(r.2).or_insert(n);
    }
    rows
}

struct Style {
    name: &'static str,
    unit: TimeUnit,
    user: fn(u64) -> String,
    item: fn(u64) -> String,
    quoted: bool,
    crlf: bool,
    /// Header order: indices into [ts, user, event, item, txn, extra].
    order: &'static [usize],
    header: [&'static str; 6],
    columns: &'static str,
}

fn clock(unit: TimeUnit, t: i64) -> String {
    match unit {
        TimeUnit::Seconds => (t / 1000).to_string(),
        TimeUnit::Iso8601 => time::OffsetDateTime::from_unix_timestamp(t / 1000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        _ => t.to_string(),
    }
}
fn num(n: u64) -> String {
    n.to_string()
}
fn customer(n: u64) -> String {
    format!("cust-{n}")
}
fn sku(n: u64) -> String {
    format!("SKU-{n:04}")
}

const RR: [&str; 6] = ["timestamp", "visitorid", "event", "itemid", "transactionid", "extra"];
const PLAIN: &[usize] = &[0, 1, 2, 3, 4];

fn write(dir: &Path, rows: &[Row], s: &Style) {
    let q = |v: String| if s.quoted { format!("\"{}\"", v.replace('"', "\"\"")) } else { v };
    let end = if s.crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    let header: Vec<String> = s.order.iter().map(|&i| q(s.header[i].to_owned())).collect();
    out.push_str(&header.join(","));
    out.push_str(end);
    for &(ts, user, item, kind, txn) in rows {
        let fields = [
            clock(s.unit, ts),
            (s.user)(user),
            kind.to_owned(),
            (s.item)(item),
            txn.map_or(String::new(), |t| t.to_string()),
            "free text, with a comma".to_owned(),
        ];
        let line: Vec<String> = s
            .order
            .iter()
            .map(|&i| if i == 5 && !s.quoted { "no comma here".to_owned() } else { q(fields[i].clone()) })
            .collect();
        let _ = write!(out, "{}{end}", line.join(","));
    }
    std::fs::write(dir.join("events.csv"), out).unwrap();
}

/// Events with their ids named again: the form in which data sets compare.
fn canonical(ds: &Dataset) -> Vec<(i64, String, String, &'static str, bool)> {
    ds.events
        .events
        .iter()
        .map(|e| (e.ts, ds.names.user_name(e.user), ds.names.item_name(e.item), e.kind.as_str(), e.txn.is_some()))
        .collect()
}

#[test]
fn every_export_style_gives_the_same_data_set_and_evaluation() {
    let rows = base_log();
    let styles = [
        Style {
            name: "retailrocket ms",
            unit: TimeUnit::Milliseconds,
            user: num,
            item: num,
            quoted: false,
            crlf: false,
            order: PLAIN,
            header: RR,
            columns: "",
        },
        Style {
            name: "seconds",
            unit: TimeUnit::Seconds,
            user: num,
            item: num,
            quoted: false,
            crlf: true,
            order: PLAIN,
            header: RR,
            columns: "",
        },
        Style {
            name: "iso",
            unit: TimeUnit::Iso8601,
            user: num,
            item: num,
            quoted: false,
            crlf: false,
            order: PLAIN,
            header: RR,
            columns: "",
        },
        Style {
            name: "quoted",
            unit: TimeUnit::Milliseconds,
            user: num,
            item: num,
            quoted: true,
            crlf: true,
            order: PLAIN,
            header: RR,
            columns: "",
        },
        Style {
            name: "reordered + extra",
            unit: TimeUnit::Milliseconds,
            user: num,
            item: num,
            quoted: false,
            crlf: false,
            order: &[5, 2, 3, 0, 1, 4],
            header: ["ts", "user_id", "event", "item_id", "transaction_id", "comment"],
            columns: "",
        },
        Style {
            name: "sku ids",
            unit: TimeUnit::Milliseconds,
            user: customer,
            item: sku,
            quoted: false,
            crlf: false,
            order: PLAIN,
            header: RR,
            columns: "",
        },
        Style {
            name: "shop export: sku, iso, quoted, renamed, reordered, extra",
            unit: TimeUnit::Iso8601,
            user: customer,
            item: sku,
            quoted: true,
            crlf: true,
            order: &[3, 5, 1, 0, 2, 4],
            header: ["when", "customer", "action", "product", "order", "comment"],
            columns: "ts=when,user_id=customer,event=action,item_id=product,transaction_id=order",
        },
    ];
    let cfg = TrainingConfig { factors: 16, iterations: 5, ..TrainingConfig::default() };
    let mut first: Option<(String, Dataset, pipeline::EvalReport)> = None;
    for s in &styles {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &rows, s);
        let opts = LoadOptions { columns: ColumnMap::parse(s.columns).unwrap(), ..LoadOptions::default() };
        let ds = load::load_dir(dir.path(), &opts).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let r = &ds.events.report;
        assert_eq!((r.rows, r.kept, r.rejected_rows()), (rows.len() as u64, rows.len() as u64, 0), "{}", s.name);
        assert_eq!(r.clock, Some(s.unit), "{}", s.name);
        let report = pipeline::evaluate(&ds, &cfg, 1, 0.0, false);
        assert!(report.test_users > 0, "{}", s.name);
        match &first {
            None => first = Some((s.name.to_owned(), ds, report)),
            Some((name0, ds0, report0)) => {
                if ds.names.interned() == (0, 0) {
                    assert_eq!(ds.events.events, ds0.events.events, "{} vs {name0}", s.name);
                } else {
                    let rename = |v: Vec<(i64, String, String, &'static str, bool)>| {
                        v.into_iter()
                            .map(|(t, u, i, k, x)| {
                                let u = u.strip_prefix("cust-").map_or(u.clone(), str::to_owned);
                                let i =
                                    i.strip_prefix("SKU-").map_or(i.clone(), |n| n.trim_start_matches('0').to_owned());
                                (t, u, if i.is_empty() { "0".to_owned() } else { i }, k, x)
                            })
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(rename(canonical(&ds)), canonical(ds0), "{} vs {name0}", s.name);
                }
                let key = |r: &pipeline::EvalReport| {
                    (r.users, r.items, r.train_nnz, r.test_users, r.target_users, r.target_pairs)
                };
                assert_eq!(key(&report), key(report0), "{} vs {name0}", s.name);
                for (a, b, what) in [
                    (&report.popular, &report0.popular, "popular"),
                    (&report.als, &report0.als, "als"),
                    (&report.als_rerank, &report0.als_rerank, "als_rerank"),
                ] {
                    assert_eq!(
                        serde_json::to_string(a).unwrap(),
                        serde_json::to_string(b).unwrap(),
                        "{what}: {} vs {name0}",
                        s.name
                    );
                }
            }
        }
    }
}
