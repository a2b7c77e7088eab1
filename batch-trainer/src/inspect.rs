//! `recsys-trainer inspect`: a profile of a data directory before training —
//! rows, users, items, events by kind, time span and clock, rejections with
//! examples, per-user and per-item count distributions, and what the
//! configured split would keep — and whether `train` would accept it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::TrainingConfig;
use crate::data::{Dataset, LoadReport};
use crate::load::{self, LoadOptions};
use crate::preprocess::FilterReport;
use crate::split;

/// Quantiles of a count per user or per item.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// Users (items) counted.
    pub n: usize,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
    /// How many have exactly one event.
    pub ones: usize,
}

impl Distribution {
    fn of(mut counts: Vec<u64>) -> Distribution {
        if counts.is_empty() {
            return Distribution::default();
        }
        counts.sort_unstable();
        let q = |p: f64| counts[((counts.len() - 1) as f64 * p).round() as usize];
        Distribution {
            n: counts.len(),
            min: counts[0],
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: counts[counts.len() - 1],
            mean: counts.iter().sum::<u64>() as f64 / counts.len() as f64,
            ones: counts.iter().filter(|&&c| c == 1).count(),
        }
    }
}

/// The time span of the kept events.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Span {
    pub first_ms: i64,
    pub last_ms: i64,
    pub first: String,
    pub last: String,
    pub days: f64,
}

/// What the configured protocol would train and test on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SplitProfile {
    pub protocol: &'static str,
    pub filter: FilterReport,
    pub train_pairs: usize,
    pub test_users: usize,
    pub target_users: usize,
    pub target_pairs: usize,
}

/// The whole profile; serialises to `inspect --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub files: Vec<LoadReport>,
    pub events: usize,
    pub users: usize,
    pub items: usize,
    /// Users and items whose ids are not plain numbers (SKUs, UUIDs).
    pub named_users: usize,
    pub named_items: usize,
    pub events_by_kind: BTreeMap<&'static str, usize>,
    pub span: Option<Span>,
    pub events_per_user: Distribution,
    pub events_per_item: Distribution,
    /// Items with a known category.
    pub items_with_category: usize,
    pub categories: usize,
    pub split: SplitProfile,
    /// Why `train` / `evaluate` would fail on this data (empty when they would run).
    pub problems: Vec<String>,
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Profiles a data set read without the quality check ([`load::read_dir`]).
pub fn profile(ds: &Dataset, cfg: &TrainingConfig, opts: &LoadOptions) -> Profile {
    let ev = &ds.events.events;
    let mut files = vec![ds.events.report.clone()];
    if let Some(p) = &ds.properties {
        files.extend(p.reports.iter().cloned());
    }
    let mut problems = Vec::new();
    for (i, r) in files.iter().enumerate() {
        if let Err(e) = load::check_report(r, opts, i == 0) {
            problems.push(e.to_string());
        }
    }

    let mut per_user: HashMap<u64, u64> = HashMap::new();
    let mut per_item: HashMap<u64, u64> = HashMap::new();
    let mut by_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    for e in ev {
        *per_user.entry(e.user).or_default() += 1;
        *per_item.entry(e.item).or_default() += 1;
        *by_kind.entry(e.kind.as_str()).or_default() += 1;
    }
    let span = match (ev.iter().map(|e| e.ts).min(), ev.iter().map(|e| e.ts).max()) {
        (Some(a), Some(b)) => {
            Some(Span { first_ms: a, last_ms: b, first: iso(a), last: iso(b), days: (b - a) as f64 / 86_400_000.0 })
        }
        _ => None,
    };
    let (named_users, named_items) = ds.names.interned();

    let (items_with_category, categories) = match &ds.properties {
        Some(p) => {
            let meta = crate::preprocess::item_metadata(p, i64::MAX);
            let with: Vec<u64> = meta.values().filter_map(|m| m.category).collect();
            let distinct: std::collections::HashSet<u64> = with.iter().copied().collect();
            (with.len(), distinct.len())
        }
        None => (0, 0),
    };

    let split_profile = if ev.is_empty() {
        SplitProfile { protocol: cfg.protocol.as_str(), ..SplitProfile::default() }
    } else {
        let s = split::split(cfg.protocol, ev, &cfg.weights, cfg.recency_half_life_days, &cfg.filter, &cfg.split);
        SplitProfile {
            protocol: s.protocol.as_str(),
            filter: s.filter.clone(),
            train_pairs: s.train.len(),
            test_users: s.test_users.len(),
            target_users: s.target_users(),
            target_pairs: s.target_pairs(),
        }
    };
    if !ev.is_empty() && split_profile.test_users == 0 {
        problems.push(no_test_users(&split_profile.filter, cfg));
    }

    Profile {
        files,
        events: ev.len(),
        users: per_user.len(),
        items: per_item.len(),
        named_users,
        named_items,
        events_by_kind: by_kind,
        span,
        events_per_user: Distribution::of(per_user.into_values().collect()),
        events_per_item: Distribution::of(per_item.into_values().collect()),
        items_with_category,
        categories,
        split: split_profile,
        problems,
    }
}

/// Why the configured split of `ds` has no test users, and what to change:
/// the message of `evaluate` and `train` when it has none.
pub fn why_no_test_users(ds: &Dataset, cfg: &TrainingConfig) -> String {
    let s = split::split(
        cfg.protocol,
        &ds.events.events,
        &cfg.weights,
        cfg.recency_half_life_days,
        &cfg.filter,
        &cfg.split,
    );
    no_test_users(&s.filter, cfg)
}

/// Why an evaluation has no test users, and what to change.
pub fn no_test_users(f: &FilterReport, cfg: &TrainingConfig) -> String {
    let mut m = format!(
        "the {} split has no test users: {} of {} users and {} of {} items pass the filter \
         (training.filter: min_user_items {}, min_item_users {}); give more history per user \
         or lower those minimums",
        cfg.protocol.as_str(),
        f.users_out,
        f.users_in,
        f.items_out,
        f.items_in,
        cfg.filter.min_user_items,
        cfg.filter.min_item_users,
    );
    if matches!(cfg.protocol, split::Protocol::Time) {
        m.push_str(
            "; the time split tests only the users who add to cart or buy, at or after its cutoff, \
             an item they had no training pair with",
        );
    }
    m
}

/// The profile as text.
pub fn render(p: &Profile) -> String {
    let mut s = String::new();
    for r in &p.files {
        s.push_str(&r.render());
    }
    let kinds: Vec<String> = p.events_by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(s, "events: {} ({})", p.events, kinds.join(", "));
    let _ = writeln!(
        s,
        "users: {} ({} with non-numeric ids); items: {} ({} with non-numeric ids)",
        p.users, p.named_users, p.items, p.named_items
    );
    if let Some(sp) = &p.span {
        let _ = writeln!(s, "time span: {} .. {} ({:.1} days)", sp.first, sp.last, sp.days);
    }
    for (name, d) in [("events per user", &p.events_per_user), ("events per item", &p.events_per_item)] {
        let _ = writeln!(
            s,
            "{name}: min {} p50 {} p90 {} p99 {} max {} mean {:.2}; {} with one event",
            d.min, d.p50, d.p90, d.p99, d.max, d.mean, d.ones
        );
    }
    let _ = writeln!(s, "item categories: {} items in {} categories", p.items_with_category, p.categories);
    let sp = &p.split;
    let _ = writeln!(
        s,
        "{} split: filter keeps {} of {} users, {} of {} items, {} of {} pairs; \
         {} train pairs, {} test users ({} with targets, {} target pairs)",
        sp.protocol,
        sp.filter.users_out,
        sp.filter.users_in,
        sp.filter.items_out,
        sp.filter.items_in,
        sp.filter.pairs_out,
        sp.filter.pairs_in,
        sp.train_pairs,
        sp.test_users,
        sp.target_users,
        sp.target_pairs
    );
    if p.problems.is_empty() {
        s.push_str("verdict: ready to train\n");
    } else {
        for problem in &p.problems {
            let _ = writeln!(s, "problem: {problem}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_quantiles() {
        let d = Distribution::of(vec![1, 1, 2, 3, 10]);
        assert_eq!((d.n, d.min, d.p50, d.max, d.ones), (5, 1, 2, 10, 2));
        assert!((d.mean - 3.4).abs() < 1e-9);
        assert_eq!(Distribution::of(vec![]), Distribution::default());
    }

    #[test]
    fn profile_of_a_small_log_names_the_split_and_problems() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("user_id,item_id,event,ts,note\n");
        for u in 0..30 {
            for k in 0..8 {
                csv.push_str(&format!("u{u},SKU-{},view,2015-06-{:02}T10:00:00Z,x\n", (u + k) % 12, k + 1));
            }
        }
        csv.push_str("u1,SKU-1,click,2015-06-01T10:00:00Z,x\n");
        std::fs::write(dir.path().join("events.csv"), csv).unwrap();
        let opts = LoadOptions::default();
        let ds = load::read_dir(dir.path(), &opts).unwrap();
        let cfg = TrainingConfig::default();
        let p = profile(&ds, &cfg, &opts);
        assert_eq!((p.events, p.users, p.items, p.named_users, p.named_items), (240, 30, 12, 30, 12));
        assert_eq!(p.files[0].clock, Some(schemas::csv::TimeUnit::Iso8601));
        assert_eq!(p.events_per_user.p50, 8);
        assert!(p.split.test_users > 0, "{:?}", p.split);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let text = render(&p);
        assert!(text.contains("1 unknown_event") && text.contains("line 242"), "{text}");
        assert!(text.contains("time span: 2015-06-01T10:00:00Z .. 2015-06-08T10:00:00Z (7.0 days)"), "{text}");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["files"][0]["rejected"][0]["reason"], "unknown_event");
        assert_eq!(json["split"]["protocol"], "seed");

        // Nothing passes a strict filter: no test users is a problem, named.
        let strict = TrainingConfig {
            filter: crate::preprocess::FilterConfig { min_user_items: 100, ..Default::default() },
            ..TrainingConfig::default()
        };
        let p = profile(&ds, &strict, &opts);
        assert_eq!(p.split.test_users, 0);
        assert!(
            p.problems.iter().any(|m| m.contains("no test users") && m.contains("min_user_items 100")),
            "{:?}",
            p.problems
        );
    }
}
