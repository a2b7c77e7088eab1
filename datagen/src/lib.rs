//! `datagen`: synthetic RetailRocket-shaped data at any scale, for the
//! trainer's `generate` command, tests and benches (one module, no submodules).
//!
//! [`generate`] writes a data directory that the trainer's loader
//! (`batch_trainer::load::load_dir`) reads like the real one: `events.csv`,
//! `item_properties_part1.csv`, `item_properties_part2.csv` and
//! `category_tree.csv`, in the real files' formats (the headers of
//! `schemas::csv`); and [`CATALOG_STREAM_FILE`], the live catalog's changes
//! in the item-properties format, for `recsys-ingest replay-items` (the
//! trainer reads only the `_part` files). The defaults reproduce the shape of the public RetailRocket log
//! (2,756,101 events, 1,407,580 visitors, 235,061 items with events, 137 days
//! from 2015-05-03 03:00 UTC, a 1,669-node category tree with 25 roots and
//! depth ≤ 6): ~96.7 % views, ~2.5 % add-to-carts, ~0.8 % transactions, a
//! power-law item popularity, one event for the median visitor and a heavy
//! tail of visitors with dozens to thousands of events. Visitors and catalog
//! items scale linearly with the requested event count, with the real ratios.
//!
//! # The generative model
//!
//! - **Category tree.** `roots` roots, then each further node picks a uniformly
//!   random parent among the earlier nodes whose depth is below `max_depth`
//!   (roots have depth 1, as in the original's category depth). Category ids
//!   are a shuffle of `0..categories`, so a parent's id is not always smaller.
//! - **Items.** Each catalog item has a global popularity weight
//!   `(rank + item_zipf_offset)^-item_zipf` (ranks shuffled; the offset
//!   flattens the head so the top item keeps ~0.15–0.4 % of the events at
//!   any scale instead of the several per cent of a plain Zipf law), a category (leaves, weighted by a Zipf law
//!   over shuffled leaf ranks; a few internal nodes) and one of
//!   `styles` latent styles. Item ids are spread over a range ~1.12 × the
//!   catalog (the real ids have gaps too); visitor ids are a permutation of
//!   `0..users` (dense, like the real ones).
//! - **Latent tastes.** Each visitor has a home category (the category of a
//!   popularity-weighted item), up to two more preferred categories (often a
//!   tree neighbour of the home — a sibling or a child, picked by popularity
//!   mass) and a preferred style. A newly viewed item comes with probability
//!   `taste_share` from the visitor's preferred categories (mostly the home
//!   one; within the category, items of the visitor's style are 10× as
//!   likely), otherwise from global popularity; within any pool the item
//!   popularity weights apply, so no item's share is inflated by more than
//!   that factor. The affinity of an
//!   item for a visitor is 2 (preferred category and style), 1 (preferred
//!   category) or 0; add-to-carts and purchases are several times more likely
//!   at higher affinity. This is the structure ALS is expected to recover.
//! - **Visitors' activity.** A share `single_event_share` of the visitors are
//!   one-off visitors; the others get a Pareto(`activity_tail`) weight, and the
//!   `events − users` events beyond one per visitor are dealt to them by
//!   weighted draws (a weight is capped at 0.4 % of the total, which bounds
//!   the busiest visitor to a few thousand events at the real scale). Every
//!   visitor has ≥ 1 event and the total is exactly `events`.
//! - **A visitor's events** form sessions: each event after the first opens a
//!   new session with a fixed probability (gap ~ exponential, mean 3 days),
//!   otherwise it follows the previous one by a log-normal gap (median 40 s).
//!   After a view the visitor may add that item to the cart or, rarely, buy it
//!   directly; with items in the cart they may check out: a transaction row
//!   for each bought cart item (1 ms apart), all sharing one `transactionid`.
//!   Other views re-view an earlier item (recent ones favoured) with
//!   probability `repeat_share`, else view a new item. A visitor's timeline is
//!   placed uniformly inside the `days`-long window (one longer than the
//!   window is compressed to a random 50–100 % of it).
//! - **Item properties** are weekly snapshots (Sundays 03:00 UTC from
//!   `start + 7 days`, as in the real files): a `categoryid` and an
//!   `available` row per item (2 % of the catalog has none, as some real items
//!   have no known category), later category changes (to a tree neighbour) for
//!   ~6 % of the items and availability flips for ~40 %, so "the value as of a
//!   cutoff" differs from "the latest value", plus one to three rows of other
//!   properties with hashed free-text values such as `n552.000 639502`. Rows are
//!   grouped by item and split at the row-count midpoint across the two files
//!   (one item's rows may span both).
//! - **The catalog stream** ([`CATALOG_STREAM_FILE`]) is what a live shop
//!   would send while the events happen: at `start` one `categoryid` row (the
//!   item's category) and one `available` row per catalog item, ~95 % of them
//!   available; then availability flips at uniformly random times inside the
//!   window: ~4 % of the available items sell out, half of those come back
//!   later, and ~30 % of the unavailable ones are restocked. Sorted by
//!   `(timestamp, itemid)`, `categoryid` before `available`.
//!
//! # Output order and determinism
//!
//! `events.csv` is written **sorted by timestamp** (ties broken by the
//! internal visitor and item indices, event type, transaction) — the real file is only roughly time-ordered, and a
//! sorted file is what `ingest replay` wants. Transaction ids are dense from
//! 0 but not in time order (they are numbered per block of visitors), like the
//! real ones. All randomness comes from ChaCha8 streams derived from the seed,
//! one per purpose and per fixed-size block of visitors or items, so the files
//! are byte-identical for the same `(config, seed)` whatever the thread count.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;

/// Events in the real RetailRocket log.
pub const REAL_EVENTS: u64 = 2_756_101;
/// Distinct visitors in the real log.
pub const REAL_VISITORS: u64 = 1_407_580;
/// Distinct items with at least one event in the real log.
pub const REAL_ITEMS: u64 = 235_061;
/// First second of the real log: 2015-05-03T03:00:00Z in epoch milliseconds.
pub const REAL_START_MS: i64 = 1_430_622_000_000;

/// Catalog items (items with properties) per event. The real ratio is
/// 417,053 / 2,756,101 = 0.151; with the default popularity law that catalog
/// leaves ~235 k items with events at the real scale, as in the real log.
const CATALOG_PER_EVENT: f64 = 0.151;
/// Item id space / catalog size (the real ids reach 466,866 for 417,053 items).
const ITEM_ID_SPREAD: f64 = 1.12;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// Largest Pareto activity weight, as a share of all visitors' weights.
const MAX_USER_WEIGHT_SHARE: f64 = 0.004;
/// Largest number of preferred categories of a visitor.
const MAX_TASTES: usize = 3;
/// Probability that an extra preferred category is a tree neighbour of the home one.
const NEIGHBOUR_TASTE: f64 = 0.6;
/// Probability that a taste-driven view uses the home category.
const HOME_SHARE: f64 = 0.6;
/// How much more likely a taste-driven view picks an item of the visitor's style.
const STYLE_BOOST: f64 = 10.0;
/// Relative weight of internal (non-root) categories when placing items.
const INTERNAL_CATEGORY_WEIGHT: f64 = 0.05;

/// Probability that an event after the first starts a new session.
const NEW_SESSION: f64 = 0.15;
/// Mean gap between sessions.
const SESSION_GAP_MEAN_MS: f64 = 3.0 * DAY_MS as f64;
/// Median gap between events of a session, and the log-normal sigma.
const EVENT_GAP_MEDIAN_MS: f64 = 40_000.0;
const EVENT_GAP_SIGMA: f64 = 1.0;

/// After a view: probability of adding the item to the cart, times the affinity factor.
const P_CART: f64 = 0.125;
/// After a view: probability of buying the item directly (no cart), times the affinity factor.
const P_DIRECT_BUY: f64 = 0.007;
/// Add-to-cart / direct-buy factor by affinity (0, 1, 2).
const AFFINITY_FACTOR: [f64; 3] = [0.12, 0.45, 1.0];
/// With items in the cart: probability that the next event is a checkout.
const P_CHECKOUT: f64 = 0.09;
/// Probability that a cart item other than the latest is in the checkout basket, by affinity.
const BASKET_KEEP: [f64; 3] = [0.4, 0.7, 0.9];

/// Visitors per generation block (one random stream each).
const USER_BLOCK: usize = 4096;
/// Catalog items per property block (one random stream each).
const ITEM_BLOCK: usize = 4096;

/// Random stream purposes.
const S_TREE: u64 = 1;
const S_ITEMS: u64 = 2;
const S_IDS: u64 = 3;
const S_ACTIVITY: u64 = 4;
const S_USERS: u64 = 5;
const S_PROPERTIES: u64 = 6;
const S_CATALOG: u64 = 7;

/// The catalog stream's file name.
pub const CATALOG_STREAM_FILE: &str = "item_properties.csv";
/// Share of catalog items available at the start of the catalog stream.
const STREAM_AVAILABLE: f64 = 0.95;
/// Share of the available items that sell out during the window.
const STREAM_SELL_OUT: f64 = 0.04;
/// Share of the sold-out items that come back later.
const STREAM_COME_BACK: f64 = 0.5;
/// Share of the items unavailable at the start that are restocked.
const STREAM_RESTOCK: f64 = 0.3;

const NO_TXN: u32 = u32::MAX;
const KIND_NAMES: [&[u8]; 3] = [b"view", b"addtocart", b"transaction"];
const VIEW: u8 = 0;
const CART: u8 = 1;
const TXN: u8 = 2;

/// Properties other than `categoryid` / `available` (ids seen in the real files).
const OTHER_PROPERTIES: [&str; 12] = ["888", "790", "6", "283", "364", "776", "839", "917", "112", "159", "764", "202"];

/// What to generate. [`GenerateConfig::new`] derives every knob from the event
/// count with the real data's ratios; change fields afterwards to deviate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Rows of `events.csv` (exact).
    pub events: u64,
    /// Seed of every random stream.
    pub seed: u64,
    /// Distinct visitors (each has ≥ 1 event); ≤ `events`.
    pub users: u64,
    /// Catalog items (items with properties); not all of them get events.
    pub catalog_items: u64,
    /// Nodes of the category tree.
    pub categories: u32,
    /// Roots of the category tree.
    pub roots: u32,
    /// Maximum depth of the tree (roots have depth 1).
    pub max_depth: u32,
    /// Latent item styles (the within-category dimension of taste), 1..=255.
    pub styles: u32,
    /// Exponent `s` of the item popularity law `(rank + r0)^-s` (Zipf–Mandelbrot).
    pub item_zipf: f64,
    /// `r0` of that law, in ranks: flattens the head (with the defaults the
    /// top item has ~0.15 % of the events at the real scale, not the ~7 % of a
    /// plain Zipf law). Absolute, so the head does not sharpen as the catalog
    /// shrinks.
    pub item_zipf_offset: f64,
    /// Exponent of the category size power law.
    pub category_zipf: f64,
    /// Share of visitors that are one-off (exactly one event).
    pub single_event_share: f64,
    /// Pareto shape of the other visitors' activity (smaller = heavier tail).
    pub activity_tail: f64,
    /// Probability that a new view follows the visitor's taste, not global popularity.
    pub taste_share: f64,
    /// Probability that a view (with history) re-views an earlier item.
    pub repeat_share: f64,
    /// Start of the time window, epoch milliseconds.
    pub start_ms: i64,
    /// Length of the time window in days.
    pub days: u32,
}

impl GenerateConfig {
    /// `events` events with the real data's shape; visitors and catalog scale
    /// with `events` (≥ 1 of each when `events` > 0).
    pub fn new(events: u64, seed: u64) -> Self {
        let scaled = |ratio: f64| {
            if events == 0 {
                0
            } else {
                ((events as f64 * ratio).round() as u64).max(1)
            }
        };
        Self {
            events,
            seed,
            users: scaled(REAL_VISITORS as f64 / REAL_EVENTS as f64).min(events),
            catalog_items: scaled(CATALOG_PER_EVENT),
            categories: 1669,
            roots: 25,
            max_depth: 6,
            styles: 8,
            item_zipf: 1.2,
            item_zipf_offset: 200.0,
            category_zipf: 0.8,
            single_event_share: 0.62,
            activity_tail: 1.5,
            taste_share: 0.63,
            repeat_share: 0.3,
            start_ms: REAL_START_MS,
            days: 137,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1], got {v}"))
            }
        };
        share("single_event_share", self.single_event_share)?;
        share("taste_share", self.taste_share)?;
        share("repeat_share", self.repeat_share)?;
        if self.events > 0 && self.users == 0 {
            return Err("users must be > 0 when events > 0".into());
        }
        if self.users > self.events {
            return Err(format!("users ({}) must not exceed events ({})", self.users, self.events));
        }
        if self.users > u64::from(u32::MAX) || self.catalog_items >= u64::from(u32::MAX) {
            return Err("users and catalog_items must fit in 32 bits".into());
        }
        if self.events > 0 && self.catalog_items == 0 {
            return Err("catalog_items must be > 0 when events > 0".into());
        }
        if self.roots == 0 || self.categories < self.roots {
            return Err(format!(
                "need 1 <= roots <= categories, got {} roots, {} categories",
                self.roots, self.categories
            ));
        }
        if self.max_depth == 0 || (self.max_depth == 1 && self.categories != self.roots) || self.max_depth > 255 {
            return Err(format!(
                "max_depth {} cannot hold {} categories under {} roots",
                self.max_depth, self.categories, self.roots
            ));
        }
        if self.styles == 0 || self.styles > 255 {
            return Err(format!("styles must be in 1..=255, got {}", self.styles));
        }
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !non_negative(self.item_zipf) || !non_negative(self.item_zipf_offset) || !non_negative(self.category_zipf) {
            return Err("zipf exponents and offset must be finite and >= 0".into());
        }
        if !(self.activity_tail.is_finite() && self.activity_tail > 0.0) {
            return Err(format!("activity_tail must be finite and > 0, got {}", self.activity_tail));
        }
        if self.days == 0 || self.start_ms < 0 {
            return Err("days must be > 0 and start_ms >= 0".into());
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    /// Rows of `events.csv`.
    pub events: u64,
    /// Distinct visitors in `events.csv`.
    pub users: u64,
    /// Distinct items in `events.csv`.
    pub items: u64,
    /// `view` rows.
    pub views: u64,
    /// `addtocart` rows.
    pub addtocart: u64,
    /// `transaction` rows.
    pub transactions: u64,
    /// Rows of `category_tree.csv`.
    pub categories: u64,
    /// Rows of the two `item_properties_part*.csv` files together.
    pub property_rows: u64,
    /// Rows of the catalog stream [`CATALOG_STREAM_FILE`].
    pub catalog_rows: u64,
    /// Availability changes in the catalog stream after the start.
    pub availability_flips: u64,
}

/// Writes the five files into `out_dir` (created if missing). `progress`, if
/// given, is advanced by the number of events generated (its length is set to
/// `cfg.events`); the files are written after it reaches the end.
pub fn generate(cfg: &GenerateConfig, out_dir: &Path, progress: Option<&ProgressBar>) -> io::Result<GenerateReport> {
    cfg.validate().map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    fs::create_dir_all(out_dir)?;
    if let Some(pb) = progress {
        pb.set_length(cfg.events);
    }
    let tree = Tree::build(cfg, &mut stream(cfg.seed, S_TREE, 0));
    let catalog = Catalog::build(cfg, &tree, &mut stream(cfg.seed, S_ITEMS, 0));
    let mut id_rng = stream(cfg.seed, S_IDS, 0);
    let user_ids = Affine::new(cfg.users, cfg.users, &mut id_rng);
    let item_space = ((cfg.catalog_items as f64 * ITEM_ID_SPREAD).ceil() as u64).max(cfg.catalog_items);
    let item_ids = Affine::new(cfg.catalog_items, item_space, &mut id_rng);

    let counts = activity(cfg, &mut stream(cfg.seed, S_ACTIVITY, 0));
    let ctx = Ctx { cfg, tree: &tree, catalog: &catalog };
    let mut events = ctx.events(&counts, progress);
    events.par_sort_unstable();

    write_tree(&out_dir.join("category_tree.csv"), &tree)?;
    let property_rows = write_properties(out_dir, &ctx, &item_ids)?;
    let (catalog_rows, availability_flips) = write_catalog_stream(&out_dir.join(CATALOG_STREAM_FILE), &ctx, &item_ids)?;
    let (views, addtocart, transactions) = write_events(&out_dir.join("events.csv"), &events, &user_ids, &item_ids)?;

    let mut seen = vec![false; cfg.catalog_items as usize];
    for e in &events {
        seen[e.item as usize] = true;
    }
    Ok(GenerateReport {
        events: events.len() as u64,
        users: cfg.users,
        items: seen.iter().filter(|&&s| s).count() as u64,
        views,
        addtocart,
        transactions,
        categories: u64::from(cfg.categories),
        property_rows,
        catalog_rows,
        availability_flips,
    })
}

/// The random stream for `purpose` and block `index`.
fn stream(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((purpose << 48) | index);
    rng
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    rng.random::<f64>()
}

/// An event before the ids are mapped; the derived order is the output order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    ts: i64,
    user: u32,
    item: u32,
    kind: u8,
    txn: u32,
}

/// `x ↦ (a·x + b) mod space`, a bijection of `0..space` (gcd(a, space) = 1),
/// used on `0..n` (n ≤ space) to map indices to scattered, distinct ids.
#[derive(Debug, Clone, Copy)]
struct Affine {
    a: u64,
    b: u64,
    space: u64,
}

impl Affine {
    fn new(n: u64, space: u64, rng: &mut ChaCha8Rng) -> Self {
        debug_assert!(n <= space);
        if space <= 1 {
            return Self { a: 1, b: 0, space: space.max(1) };
        }
        let mut a = rng.random_range(1..space);
        while gcd(a, space) != 1 {
            a = if a + 1 >= space { 1 } else { a + 1 };
        }
        Self { a, b: rng.random_range(0..space), space }
    }

    fn apply(&self, x: u32) -> u64 {
        ((u128::from(self.a) * u128::from(x) + u128::from(self.b)) % u128::from(self.space)) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

struct Tree {
    parent: Vec<Option<u32>>,
    children: Vec<Vec<u32>>,
    /// Written id of each node.
    ids: Vec<u64>,
}

impl Tree {
    fn build(cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Self {
        let n = cfg.categories as usize;
        let mut parent = Vec::with_capacity(n);
        let mut depth: Vec<u32> = Vec::with_capacity(n);
        let mut children = vec![Vec::new(); n];
        let mut eligible: Vec<u32> = Vec::new();
        for node in 0..n as u32 {
            let (p, d) = if node < cfg.roots {
                (None, 1)
            } else {
                let p = eligible[rng.random_range(0..eligible.len())];
                children[p as usize].push(node);
                (Some(p), depth[p as usize] + 1)
            };
            parent.push(p);
            depth.push(d);
            if d < cfg.max_depth {
                eligible.push(node);
            }
        }
        let mut ids: Vec<u64> = (0..n as u64).collect();
        ids.shuffle(rng);
        Self { parent, children, ids }
    }

    /// A random sibling or child of `c`, if it has any.
    fn neighbour(&self, c: u32, rng: &mut ChaCha8Rng) -> Option<u32> {
        let siblings: &[u32] = match self.parent[c as usize] {
            Some(p) => &self.children[p as usize],
            None => &[],
        };
        let kids = &self.children[c as usize];
        let total = siblings.len() + kids.len();
        if total == 0 {
            return None;
        }
        let k = rng.random_range(0..total);
        let pick = if k < siblings.len() { siblings[k] } else { kids[k - siblings.len()] };
        (pick != c).then_some(pick)
    }
}

/// Items sorted by (category, style) into "slots", with popularity prefix
/// sums, so the global pool, a category and a (category, style) pair are all
/// contiguous slot ranges sampled by one guided search.
struct Catalog {
    styles: usize,
    item_cat: Vec<u32>,
    item_style: Vec<u8>,
    slot_item: Vec<u32>,
    /// Popularity weights in slot order.
    cum: Cumulative,
    /// First slot of `(category, style)` at `category * styles + style`; one extra end entry.
    starts: Vec<usize>,
}

impl Catalog {
    fn build(cfg: &GenerateConfig, tree: &Tree, rng: &mut ChaCha8Rng) -> Self {
        let n = cfg.catalog_items as usize;
        let styles = cfg.styles as usize;
        let n_cat = tree.parent.len();

        // Category weights: Zipf over shuffled leaves, a little for internal non-roots.
        let mut leaves: Vec<u32> = (0..n_cat as u32).filter(|&c| tree.children[c as usize].is_empty()).collect();
        leaves.shuffle(rng);
        let mut cat_w = vec![0.0f64; n_cat];
        for (rank, &c) in leaves.iter().enumerate() {
            cat_w[c as usize] = ((rank + 1) as f64).powf(-cfg.category_zipf);
        }
        let mean_leaf = cat_w.iter().sum::<f64>() / leaves.len().max(1) as f64;
        for (w, (kids, parent)) in cat_w.iter_mut().zip(tree.children.iter().zip(&tree.parent)) {
            if !kids.is_empty() && parent.is_some() {
                *w = INTERNAL_CATEGORY_WEIGHT * mean_leaf;
            }
        }
        let cat_cum = Cumulative::new(&cat_w);

        let mut ranks: Vec<u32> = (0..n as u32).collect();
        ranks.shuffle(rng);
        let mut item_cat = Vec::with_capacity(n);
        let mut item_style = Vec::with_capacity(n);
        for _ in 0..n {
            item_cat.push(cat_cum.draw(0, n_cat, rng) as u32);
            item_style.push(rng.random_range(0..styles) as u8);
        }

        // Counting sort of the items by (category, style).
        let key = |i: usize| item_cat[i] as usize * styles + item_style[i] as usize;
        let mut starts = vec![0usize; n_cat * styles + 1];
        for i in 0..n {
            starts[key(i) + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut next = starts.clone();
        let mut slot_item = vec![0u32; n];
        for i in 0..n {
            let k = key(i);
            slot_item[next[k]] = i as u32;
            next[k] += 1;
        }
        let r0 = cfg.item_zipf_offset.max(1.0);
        let weights: Vec<f64> =
            slot_item.iter().map(|&i| (f64::from(ranks[i as usize]) + r0).powf(-cfg.item_zipf)).collect();
        Self { styles, item_cat, item_style, slot_item, cum: Cumulative::new(&weights), starts }
    }

    fn len(&self) -> usize {
        self.slot_item.len()
    }

    fn pick(&self, lo: usize, hi: usize, rng: &mut ChaCha8Rng) -> Option<u32> {
        (lo < hi).then(|| self.slot_item[self.cum.draw(lo, hi, rng)])
    }

    fn global(&self, rng: &mut ChaCha8Rng) -> u32 {
        self.slot_item[self.cum.draw(0, self.len(), rng)]
    }

    /// Total popularity weight of slots `lo..hi`.
    fn mass(&self, lo: usize, hi: usize) -> f64 {
        self.cum.mass(lo, hi)
    }

    /// Slot range of category `c`.
    fn category(&self, c: u32) -> (usize, usize) {
        let k = c as usize * self.styles;
        (self.starts[k], self.starts[k + self.styles])
    }

    /// An item of category `c` drawn ∝ popularity × (`boost` if its style is
    /// `style`, else 1); `None` if the category has no items. Every item's
    /// chance stays within `boost` × its popularity share in the category.
    fn in_category(&self, c: u32, style: u8, boost: f64, rng: &mut ChaCha8Rng) -> Option<u32> {
        let (lo, hi) = self.category(c);
        if lo == hi {
            return None;
        }
        let k = c as usize * self.styles + style as usize;
        let (a, b) = (self.starts[k], self.starts[k + 1]);
        let (styled, other) = (self.mass(a, b), self.mass(lo, a) + self.mass(b, hi));
        if uniform(rng) * (boost * styled + other) < boost * styled || other <= 0.0 {
            return self.pick(a, b, rng).or_else(|| self.pick(lo, hi, rng));
        }
        // Outside the style: slots lo..a and b..hi, sampled as one range.
        let u = uniform(rng) * other;
        let left = self.mass(lo, a);
        let cum = &self.cum;
        let slot = if u < left && a > lo {
            cum.at(lo, a, cum.cum[lo] + u)
        } else if b < hi {
            cum.at(b, hi, cum.cum[b] + (u - left).max(0.0))
        } else {
            cum.at(lo, a, cum.cum[lo] + u.min(left))
        };
        Some(self.slot_item[slot])
    }
}

/// Prefix sums of non-negative weights with a guide table (one bucket per
/// weight, by equal shares of the total), so drawing an index ∝ its weight
/// within any index range is a short search inside a few buckets instead of
/// a binary search over the whole range (a cache miss per step).
struct Cumulative {
    /// `cum[i]` = total weight of the indices `< i`; length = weights + 1.
    cum: Vec<f64>,
    /// `guide[b]` = the index whose interval holds the point `b · total / buckets`.
    guide: Vec<u32>,
    /// buckets / total (0 when the total is 0).
    scale: f64,
}

impl Cumulative {
    fn new(w: &[f64]) -> Self {
        let mut cum = Vec::with_capacity(w.len() + 1);
        let mut acc = 0.0;
        cum.push(acc);
        for &x in w {
            acc += x;
            cum.push(acc);
        }
        let buckets = w.len().max(1);
        let scale = if acc > 0.0 { buckets as f64 / acc } else { 0.0 };
        let mut guide = Vec::with_capacity(buckets + 1);
        let mut i = 0;
        for b in 0..=buckets {
            let point = if scale > 0.0 { b as f64 / scale } else { 0.0 };
            while i + 1 < w.len() && cum[i + 1] <= point {
                i += 1;
            }
            guide.push(i as u32);
        }
        Self { cum, guide, scale }
    }

    fn mass(&self, lo: usize, hi: usize) -> f64 {
        self.cum[hi] - self.cum[lo]
    }

    /// An index in `lo..hi` (non-empty) drawn with probability ∝ its weight.
    fn draw(&self, lo: usize, hi: usize, rng: &mut ChaCha8Rng) -> usize {
        self.at(lo, hi, self.cum[lo] + uniform(rng) * self.mass(lo, hi))
    }

    /// The index `i` in `lo..hi` (non-empty) with `cum[i] <= u < cum[i+1]`,
    /// clamped into the range. The neighbouring buckets are searched too, so
    /// a rounding error in the bucket of `u` cannot change the answer.
    fn at(&self, lo: usize, hi: usize, u: f64) -> usize {
        let buckets = self.guide.len() - 1;
        let b = ((u * self.scale) as usize).min(buckets - 1);
        let a = (self.guide[b.saturating_sub(1)] as usize).clamp(lo, hi - 1);
        let z = (self.guide[(b + 2).min(buckets)] as usize + 1).clamp(a + 1, hi);
        let k = self.cum[a + 1..=z].partition_point(|&c| c <= u);
        (a + k).min(z - 1)
    }
}

/// Events per visitor: 1 each, the rest dealt by Pareto weights to the
/// non-one-off visitors (to everyone if there are none). Sums to `cfg.events`.
fn activity(cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let users = cfg.users as usize;
    let mut counts = vec![1u32; users];
    let extra = cfg.events - cfg.users;
    if extra == 0 {
        return counts;
    }
    let mut w: Vec<f64> = (0..users)
        .map(|_| {
            if uniform(rng) < cfg.single_event_share {
                0.0
            } else {
                (1.0 - uniform(rng)).powf(-1.0 / cfg.activity_tail)
            }
        })
        .collect();
    if w.iter().all(|&x| x == 0.0) {
        w.fill(1.0);
    }
    // Cap the heaviest visitors (a few thousand events at the real scale).
    let cap = MAX_USER_WEIGHT_SHARE * w.iter().sum::<f64>();
    for x in &mut w {
        *x = x.min(cap);
    }
    let cum = Cumulative::new(&w);
    for _ in 0..extra {
        counts[cum.draw(0, users, rng)] += 1;
    }
    counts
}

/// A visitor's latent taste.
struct Taste {
    cats: [u32; MAX_TASTES],
    n: usize,
    style: u8,
}

impl Taste {
    fn affinity(&self, catalog: &Catalog, item: u32) -> usize {
        let c = catalog.item_cat[item as usize];
        if !self.cats[..self.n].contains(&c) {
            0
        } else if catalog.item_style[item as usize] == self.style {
            2
        } else {
            1
        }
    }
}

struct Ctx<'a> {
    cfg: &'a GenerateConfig,
    tree: &'a Tree,
    catalog: &'a Catalog,
}

/// Per-visitor working state, reused across the visitors of a block.
#[derive(Default)]
struct Scratch {
    history: Vec<u32>,
    /// (item, affinity) in cart order.
    cart: Vec<(u32, usize)>,
    basket: Vec<bool>,
}

impl Ctx<'_> {
    /// All events, grouped by block of visitors, transaction ids global.
    fn events(&self, counts: &[u32], progress: Option<&ProgressBar>) -> Vec<Ev> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut events = vec![Ev::default(); total];
        let block_lens: Vec<usize> = counts.chunks(USER_BLOCK).map(|b| b.iter().map(|&c| c as usize).sum()).collect();
        let txns: Vec<u32> = split_mut(&mut events, &block_lens)
            .into_par_iter()
            .enumerate()
            .map(|(b, out)| {
                let mut rng = stream(self.cfg.seed, S_USERS, b as u64);
                let mut scratch = Scratch::default();
                let mut next_txn = 0u32;
                let first = b * USER_BLOCK;
                let mut at = 0;
                for (k, &c) in counts[first..(first + USER_BLOCK).min(counts.len())].iter().enumerate() {
                    let n = c as usize;
                    self.user((first + k) as u32, &mut out[at..at + n], &mut rng, &mut scratch, &mut next_txn);
                    at += n;
                }
                if let Some(pb) = progress {
                    pb.inc(out.len() as u64);
                }
                next_txn
            })
            .collect();
        let mut offsets = Vec::with_capacity(txns.len());
        let mut acc = 0u32;
        for t in txns {
            offsets.push(acc);
            acc += t;
        }
        split_mut(&mut events, &block_lens).into_par_iter().zip(offsets).for_each(|(out, off)| {
            for e in out.iter_mut().filter(|e| e.txn != NO_TXN) {
                e.txn += off;
            }
        });
        events
    }

    fn taste(&self, rng: &mut ChaCha8Rng) -> Taste {
        let catalog = self.catalog;
        let home = catalog.item_cat[catalog.global(rng) as usize];
        let mut taste = Taste { cats: [home; MAX_TASTES], n: 1, style: rng.random_range(0..catalog.styles) as u8 };
        let wanted = match uniform(rng) {
            u if u < 0.4 => 1,
            u if u < 0.75 => 2,
            _ => 3,
        };
        for _ in 1..wanted {
            let c = if uniform(rng) < NEIGHBOUR_TASTE { self.neighbour_by_mass(home, rng) } else { None };
            let c = c.unwrap_or_else(|| catalog.item_cat[catalog.global(rng) as usize]);
            if !taste.cats[..taste.n].contains(&c) {
                taste.cats[taste.n] = c;
                taste.n += 1;
            }
        }
        taste
    }

    /// A sibling or child of `c` drawn ∝ its popularity mass (a uniform pick
    /// would pour a big category's traffic into a tiny neighbour's few items).
    fn neighbour_by_mass(&self, c: u32, rng: &mut ChaCha8Rng) -> Option<u32> {
        let siblings: &[u32] = match self.tree.parent[c as usize] {
            Some(p) => &self.tree.children[p as usize],
            None => &[],
        };
        let candidates = || siblings.iter().chain(&self.tree.children[c as usize]).copied().filter(|&x| x != c);
        let mass = |x: u32| {
            let (lo, hi) = self.catalog.category(x);
            self.catalog.mass(lo, hi)
        };
        let total: f64 = candidates().map(mass).sum();
        if total <= 0.0 {
            return None;
        }
        let mut u = uniform(rng) * total;
        let mut last = None;
        for x in candidates() {
            let m = mass(x);
            if m > 0.0 {
                last = Some(x);
                if u < m {
                    break;
                }
                u -= m;
            }
        }
        last
    }

    fn new_item(&self, taste: &Taste, rng: &mut ChaCha8Rng) -> u32 {
        let catalog = self.catalog;
        if uniform(rng) >= self.cfg.taste_share {
            return catalog.global(rng);
        }
        let c = if taste.n == 1 || uniform(rng) < HOME_SHARE {
            taste.cats[0]
        } else {
            taste.cats[rng.random_range(1..taste.n)]
        };
        catalog.in_category(c, taste.style, STYLE_BOOST, rng).unwrap_or_else(|| catalog.global(rng))
    }

    /// Fills `out` with one visitor's events (relative times, then placed in the window).
    fn user(&self, user: u32, out: &mut [Ev], rng: &mut ChaCha8Rng, s: &mut Scratch, next_txn: &mut u32) {
        let taste = self.taste(rng);
        s.history.clear();
        s.cart.clear();
        let n = out.len();
        let mut t = 0i64;
        let mut i = 0;
        let mut last_view: Option<(u32, usize)> = None;
        let mut emit = |i: &mut usize, t: i64, item: u32, kind: u8, txn: u32| {
            out[*i] = Ev { ts: t, user, item, kind, txn };
            *i += 1;
        };
        while i < n {
            if i > 0 {
                if uniform(rng) < NEW_SESSION {
                    t += (-SESSION_GAP_MEAN_MS * (1.0 - uniform(rng)).ln()) as i64 + 1;
                    last_view = None;
                } else {
                    let z: f64 = rng.sample(StandardNormal);
                    t += (EVENT_GAP_MEDIAN_MS * (EVENT_GAP_SIGMA * z).exp()) as i64 + 1;
                }
            }
            if !s.cart.is_empty() && uniform(rng) < P_CHECKOUT {
                // Checkout: the latest cart item and some of the others, in cart order.
                let left = n - i;
                s.basket.clear();
                s.basket.resize(s.cart.len(), false);
                let mut size = 0;
                for k in (0..s.cart.len()).rev() {
                    if size < left && (size == 0 || uniform(rng) < BASKET_KEEP[s.cart[k].1]) {
                        s.basket[k] = true;
                        size += 1;
                    }
                }
                let txn = *next_txn;
                *next_txn += 1;
                for k in 0..s.cart.len() {
                    if s.basket[k] {
                        emit(&mut i, t, s.cart[k].0, TXN, txn);
                        t += 1;
                    }
                }
                let mut k = 0;
                s.cart.retain(|_| {
                    k += 1;
                    !s.basket[k - 1]
                });
                last_view = None;
                continue;
            }
            if let Some((item, aff)) = last_view.take() {
                let u = uniform(rng);
                let f = AFFINITY_FACTOR[aff];
                if u < P_CART * f {
                    if !s.cart.iter().any(|&(c, _)| c == item) {
                        s.cart.push((item, aff));
                    }
                    emit(&mut i, t, item, CART, NO_TXN);
                    continue;
                }
                if u < (P_CART + P_DIRECT_BUY) * f {
                    emit(&mut i, t, item, TXN, *next_txn);
                    *next_txn += 1;
                    continue;
                }
            }
            let item = if !s.history.is_empty() && uniform(rng) < self.cfg.repeat_share {
                // Recent items are re-viewed more often.
                let back = (s.history.len() as f64 * uniform(rng).powi(3)) as usize;
                s.history[s.history.len() - 1 - back.min(s.history.len() - 1)]
            } else {
                self.new_item(&taste, rng)
            };
            emit(&mut i, t, item, VIEW, NO_TXN);
            s.history.push(item);
            last_view = Some((item, taste.affinity(self.catalog, item)));
        }
        // Place the timeline in the window; one longer than the window is
        // compressed to a random 50–100 % of it (not all to the full window).
        let window = i64::from(self.cfg.days) * DAY_MS;
        let span = out.last().map_or(0, |e| e.ts);
        if span >= window {
            let f = ((window - 1) as f64 * (0.5 + 0.5 * uniform(rng))) / span as f64;
            for e in out.iter_mut() {
                e.ts = (e.ts as f64 * f) as i64;
            }
        }
        let span = out.last().map_or(0, |e| e.ts);
        let start = self.cfg.start_ms + rng.random_range(0..window - span);
        for e in out.iter_mut() {
            e.ts += start;
        }
    }

    /// Property rows of the catalog items of block `block`, and their count.
    fn properties(&self, block: usize, item_ids: &Affine) -> (Vec<u8>, u64) {
        let mut rng = stream(self.cfg.seed, S_PROPERTIES, block as u64);
        let catalog = self.catalog;
        let snapshots = (i64::from(self.cfg.days) / 7).max(1);
        // Weekly snapshots inside the window (a window under a week gets one, at its end).
        let window = i64::from(self.cfg.days) * DAY_MS;
        let snap = |k: i64| self.cfg.start_ms + ((k + 1) * WEEK_MS).min(window - 1);
        let first = block * ITEM_BLOCK;
        let last = (first + ITEM_BLOCK).min(catalog.item_cat.len());
        let mut buf = Vec::with_capacity((last - first) * 5 * 40);
        let mut rows = 0u64;
        let mut row = |buf: &mut Vec<u8>, ts: i64, id: u64, property: &str, value: &dyn Fn(&mut Vec<u8>)| {
            push_int(buf, ts as u64);
            buf.push(b',');
            push_int(buf, id);
            buf.push(b',');
            buf.extend_from_slice(property.as_bytes());
            buf.push(b',');
            value(buf);
            buf.push(b'\n');
            rows += 1;
        };
        for item in first..last {
            if uniform(&mut rng) < 0.02 {
                continue;
            }
            let id = item_ids.apply(item as u32);
            let s0 = if uniform(&mut rng) < 0.75 { 0 } else { rng.random_range(0..snapshots) };
            let cat = catalog.item_cat[item];
            let cat_id = self.tree.ids[cat as usize];
            row(&mut buf, snap(s0), id, "categoryid", &|b| push_int(b, cat_id));
            if s0 + 1 < snapshots && uniform(&mut rng) < 0.06 {
                let to = self
                    .tree
                    .neighbour(cat, &mut rng)
                    .unwrap_or_else(|| rng.random_range(0..self.tree.ids.len() as u32));
                let to_id = self.tree.ids[to as usize];
                if to_id != cat_id {
                    row(&mut buf, snap(rng.random_range(s0 + 1..snapshots)), id, "categoryid", &|b| push_int(b, to_id));
                }
            }
            let mut available = uniform(&mut rng) < 0.55;
            let mut at = s0;
            row(&mut buf, snap(at), id, "available", &|b| b.push(if available { b'1' } else { b'0' }));
            if uniform(&mut rng) < 0.4 {
                for _ in 0..rng.random_range(1..=3) {
                    if at + 1 >= snapshots {
                        break;
                    }
                    at = rng.random_range(at + 1..snapshots);
                    available = !available;
                    row(&mut buf, snap(at), id, "available", &|b| b.push(if available { b'1' } else { b'0' }));
                }
            }
            for _ in 0..rng.random_range(1..=3) {
                let property = OTHER_PROPERTIES[rng.random_range(0..OTHER_PROPERTIES.len())];
                let tokens: Vec<(bool, u64)> = if property == "790" {
                    vec![(true, (1000.0 * (2.0 * rng.sample::<f64, _>(StandardNormal)).exp()) as u64 * 12)]
                } else {
                    (0..rng.random_range(1..=4))
                        .map(|_| (uniform(&mut rng) < 0.3, rng.random_range(1..1_400_000)))
                        .collect()
                };
                row(&mut buf, snap(rng.random_range(s0..snapshots)), id, property, &|b| {
                    for (k, &(numeric, v)) in tokens.iter().enumerate() {
                        if k > 0 {
                            b.push(b' ');
                        }
                        if numeric {
                            b.push(b'n');
                            push_int(b, v);
                            b.extend_from_slice(b".000");
                        } else {
                            push_int(b, v);
                        }
                    }
                });
            }
        }
        (buf, rows)
    }
}

/// Splits `v` into consecutive mutable pieces of the given lengths.
fn split_mut<'a, T>(mut v: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
        let (head, tail) = std::mem::take(&mut v).split_at_mut(len);
        out.push(head);
        v = tail;
    }
    out
}

/// Appends the decimal digits of `v`.
fn push_int(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[k..]);
}

fn write_tree(path: &Path, tree: &Tree) -> io::Result<()> {
    let mut buf = Vec::with_capacity(16 * tree.ids.len() + 32);
    buf.extend_from_slice(b"categoryid,parentid\n");
    for (c, p) in tree.parent.iter().enumerate() {
        push_int(&mut buf, tree.ids[c]);
        buf.push(b',');
        if let Some(p) = p {
            push_int(&mut buf, tree.ids[*p as usize]);
        }
        buf.push(b'\n');
    }
    fs::write(path, buf)
}

/// Writes the two property files; returns the total row count.
fn write_properties(dir: &Path, ctx: &Ctx<'_>, item_ids: &Affine) -> io::Result<u64> {
    let blocks = ctx.catalog.len().div_ceil(ITEM_BLOCK);
    let parts: Vec<(Vec<u8>, u64)> = (0..blocks).into_par_iter().map(|b| ctx.properties(b, item_ids)).collect();
    let total: u64 = parts.iter().map(|p| p.1).sum();
    let half = total.div_ceil(2);
    let header = format!("{}\n", schemas::csv::RETAILROCKET_PROPERTIES_HEADER);
    let mut files = [
        BufWriter::with_capacity(1 << 20, File::create(dir.join("item_properties_part1.csv"))?),
        BufWriter::with_capacity(1 << 20, File::create(dir.join("item_properties_part2.csv"))?),
    ];
    for f in &mut files {
        f.write_all(header.as_bytes())?;
    }
    let mut written = 0u64;
    for (buf, rows) in &parts {
        if written >= half {
            files[1].write_all(buf)?;
        } else if written + rows <= half {
            files[0].write_all(buf)?;
        } else {
            // The split falls inside this block: cut after the right line.
            let need = (half - written) as usize;
            let cut =
                buf.iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(need - 1).map_or(buf.len(), |(k, _)| k + 1);
            files[0].write_all(&buf[..cut])?;
            files[1].write_all(&buf[cut..])?;
        }
        written += rows;
    }
    for f in &mut files {
        f.flush()?;
    }
    Ok(total)
}

/// One row of the catalog stream: `(ts, item id, 0 = categoryid | 1 = available, value)`;
/// the tuple order is the file's order.
type StreamRow = (i64, u64, u8, u64);

impl Ctx<'_> {
    /// The catalog stream's rows of the items of block `block`, and its flips.
    fn catalog_stream(&self, block: usize, item_ids: &Affine) -> (Vec<StreamRow>, u64) {
        let mut rng = stream(self.cfg.seed, S_CATALOG, block as u64);
        let start = self.cfg.start_ms;
        let end = start + i64::from(self.cfg.days) * DAY_MS;
        let first = block * ITEM_BLOCK;
        let last = (first + ITEM_BLOCK).min(self.catalog.item_cat.len());
        let mut rows = Vec::with_capacity((last - first) * 2 + 16);
        let mut flips = 0;
        for item in first..last {
            let id = item_ids.apply(item as u32);
            rows.push((start, id, 0, self.tree.ids[self.catalog.item_cat[item] as usize]));
            let available = uniform(&mut rng) < STREAM_AVAILABLE;
            rows.push((start, id, 1, u64::from(available)));
            let (change, back) = if available { (STREAM_SELL_OUT, STREAM_COME_BACK) } else { (STREAM_RESTOCK, 0.0) };
            if uniform(&mut rng) < change {
                let at = rng.random_range(start + 1..end);
                rows.push((at, id, 1, u64::from(!available)));
                flips += 1;
                if at + 1 < end && uniform(&mut rng) < back {
                    rows.push((rng.random_range(at + 1..end), id, 1, u64::from(available)));
                    flips += 1;
                }
            }
        }
        (rows, flips)
    }
}

/// Writes the catalog stream, sorted by time; returns its row count and flips.
fn write_catalog_stream(path: &Path, ctx: &Ctx<'_>, item_ids: &Affine) -> io::Result<(u64, u64)> {
    let blocks = ctx.catalog.len().div_ceil(ITEM_BLOCK);
    let parts: Vec<(Vec<StreamRow>, u64)> =
        (0..blocks).into_par_iter().map(|b| ctx.catalog_stream(b, item_ids)).collect();
    let flips = parts.iter().map(|p| p.1).sum();
    let mut rows: Vec<StreamRow> = parts.into_iter().flat_map(|p| p.0).collect();
    rows.par_sort_unstable();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(schemas::csv::RETAILROCKET_PROPERTIES_HEADER.as_bytes());
    buf.push(b'\n');
    for &(ts, id, property, value) in &rows {
        push_int(&mut buf, ts as u64);
        buf.push(b',');
        push_int(&mut buf, id);
        buf.extend_from_slice(if property == 0 { b",categoryid," } else { b",available," });
        push_int(&mut buf, value);
        buf.push(b'\n');
        out.write_all(&buf)?;
        buf.clear();
    }
    out.flush()?;
    Ok((rows.len() as u64, flips))
}

/// Writes `events.csv`; returns the (view, addtocart, transaction) row counts.
fn write_events(path: &Path, events: &[Ev], users: &Affine, items: &Affine) -> io::Result<(u64, u64, u64)> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(schemas::csv::RETAILROCKET_EVENTS_HEADER.as_bytes())?;
    w.write_all(b"\n")?;
    let mut kinds = [0u64; 3];
    for group in events.chunks(1 << 20) {
        let bufs: Vec<(Vec<u8>, [u64; 3])> = group
            .par_chunks(1 << 14)
            .map(|chunk| {
                let mut buf = Vec::with_capacity(chunk.len() * 44);
                let mut kinds = [0u64; 3];
                for e in chunk {
                    push_int(&mut buf, e.ts as u64);
                    buf.push(b',');
                    push_int(&mut buf, users.apply(e.user));
                    buf.push(b',');
                    buf.extend_from_slice(KIND_NAMES[e.kind as usize]);
                    buf.push(b',');
                    push_int(&mut buf, items.apply(e.item));
                    buf.push(b',');
                    if e.txn != NO_TXN {
                        push_int(&mut buf, u64::from(e.txn));
                    }
                    buf.push(b'\n');
                    kinds[e.kind as usize] += 1;
                }
                (buf, kinds)
            })
            .collect();
        for (buf, k) in bufs {
            w.write_all(&buf)?;
            for (total, add) in kinds.iter_mut().zip(k) {
                *total += add;
            }
        }
    }
    w.flush()?;
    Ok((kinds[0], kinds[1], kinds[2]))
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;

    use super::*;

    /// One parsed row of `events.csv`.
    #[derive(Debug, Clone)]
    struct Row {
        ts: i64,
        user: u64,
        kind: String,
        item: u64,
        txn: Option<u64>,
    }

    fn read_events(dir: &Path) -> Vec<Row> {
        let text = fs::read_to_string(dir.join("events.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,visitorid,event,itemid,transactionid"));
        lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), 5, "{l}");
                Row {
                    ts: f[0].parse().unwrap(),
                    user: f[1].parse().unwrap(),
                    kind: f[2].to_owned(),
                    item: f[3].parse().unwrap(),
                    txn: (!f[4].is_empty()).then(|| f[4].parse().unwrap()),
                }
            })
            .collect()
    }

    /// `(timestamp, itemid, property, value)` rows of both property files, in order.
    fn read_properties(dir: &Path) -> Vec<(i64, u64, String, String)> {
        let mut rows = Vec::new();
        for part in ["item_properties_part1.csv", "item_properties_part2.csv"] {
            let text = fs::read_to_string(dir.join(part)).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("timestamp,itemid,property,value"), "{part}");
            let before = rows.len();
            for l in lines {
                let f: Vec<&str> = l.splitn(4, ',').collect();
                assert_eq!(f.len(), 4, "{l}");
                rows.push((f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_owned(), f[3].to_owned()));
            }
            assert!(rows.len() > before, "{part} has no rows");
        }
        rows
    }

    /// category id → parent id, as written.
    fn read_tree(dir: &Path) -> Vec<(u64, Option<u64>)> {
        let text = fs::read_to_string(dir.join("category_tree.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("categoryid,parentid"));
        lines
            .map(|l| {
                let (c, p) = l.split_once(',').unwrap();
                (c.parse().unwrap(), (!p.is_empty()).then(|| p.parse().unwrap()))
            })
            .collect()
    }

    /// Shape statistics of an events file.
    #[derive(Debug)]
    struct Shape {
        view: f64,
        cart: f64,
        txn: f64,
        users: usize,
        items: usize,
        median_per_user: usize,
        single_user_share: f64,
        max_per_user: usize,
        users_20_plus: usize,
        top1pct_item_share: f64,
        top_item_share: f64,
        pairs_per_event: f64,
        txn_after_cart: f64,
        items_per_txn: f64,
    }

    fn shape(rows: &[Row]) -> Shape {
        let n = rows.len() as f64;
        let share = |k: &str| rows.iter().filter(|r| r.kind == k).count() as f64 / n;
        let mut per_user: HashMap<u64, usize> = HashMap::new();
        let mut per_item: HashMap<u64, usize> = HashMap::new();
        let mut pairs = HashSet::new();
        let mut carted = HashSet::new();
        let (mut txn_rows, mut after_cart) = (0usize, 0usize);
        let mut txn_ids = HashSet::new();
        for r in rows {
            *per_user.entry(r.user).or_default() += 1;
            *per_item.entry(r.item).or_default() += 1;
            pairs.insert((r.user, r.item));
            match r.kind.as_str() {
                "addtocart" => {
                    carted.insert((r.user, r.item));
                }
                "transaction" => {
                    txn_rows += 1;
                    txn_ids.insert(r.txn);
                    after_cart += usize::from(carted.contains(&(r.user, r.item)));
                }
                _ => {}
            }
        }
        let mut counts: Vec<usize> = per_user.values().copied().collect();
        counts.sort_unstable();
        let mut pop: Vec<usize> = per_item.values().copied().collect();
        pop.sort_unstable_by(|a, b| b.cmp(a));
        let top = pop.len().div_ceil(100);
        Shape {
            view: share("view"),
            cart: share("addtocart"),
            txn: share("transaction"),
            users: counts.len(),
            items: pop.len(),
            median_per_user: counts[counts.len() / 2],
            single_user_share: counts.iter().filter(|&&c| c == 1).count() as f64 / counts.len() as f64,
            max_per_user: counts[counts.len() - 1],
            users_20_plus: counts.iter().filter(|&&c| c >= 20).count(),
            top1pct_item_share: pop[..top].iter().sum::<usize>() as f64 / n,
            top_item_share: pop[0] as f64 / n,
            pairs_per_event: pairs.len() as f64 / n,
            txn_after_cart: after_cart as f64 / txn_rows.max(1) as f64,
            items_per_txn: txn_rows as f64 / txn_ids.len().max(1) as f64,
        }
    }

    fn gen(events: u64, seed: u64) -> (tempfile::TempDir, GenerateReport) {
        let dir = tempfile::tempdir().unwrap();
        let report = generate(&GenerateConfig::new(events, seed), dir.path(), None).unwrap();
        (dir, report)
    }

    #[test]
    fn events_have_the_retailrocket_shape() {
        let (dir, report) = gen(200_000, 11);
        let rows = read_events(dir.path());
        assert_eq!(rows.len(), 200_000);
        let s = shape(&rows);
        println!("{s:#?}");
        assert!((s.view - 0.967).abs() <= 0.005, "views {}", s.view);
        assert!((s.cart - 0.025).abs() <= 0.003, "carts {}", s.cart);
        assert!((s.txn - 0.008).abs() <= 0.002, "transactions {}", s.txn);
        // Visitors: median 1 event, a heavy tail.
        assert_eq!(s.users as u64, GenerateConfig::new(200_000, 11).users);
        assert_eq!(s.median_per_user, 1);
        assert!((0.6..0.8).contains(&s.single_user_share), "{}", s.single_user_share);
        assert!(s.max_per_user >= 100, "max events of a visitor {}", s.max_per_user);
        assert!(s.users_20_plus * 1000 >= s.users * 2, "{} visitors with >= 20 events", s.users_20_plus);
        // Items: power law, repeat views.
        assert!(s.top1pct_item_share > 0.1, "top 1 % of items has {}", s.top1pct_item_share);
        assert!(s.top_item_share < 0.01, "top item has {}", s.top_item_share);
        assert!((0.6..0.9).contains(&s.pairs_per_event), "{}", s.pairs_per_event);
        assert!(s.txn_after_cart > 0.7, "{}", s.txn_after_cart);
        assert!(s.items_per_txn > 1.0, "{}", s.items_per_txn);
        // The report agrees with the file.
        let count = |k: &str| rows.iter().filter(|r| r.kind == k).count() as u64;
        assert_eq!((report.events, report.users, report.items), (200_000, s.users as u64, s.items as u64));
        assert_eq!(
            (report.views, report.addtocart, report.transactions),
            (count("view"), count("addtocart"), count("transaction"))
        );
        // Time: sorted, inside the 137-day window.
        let end = REAL_START_MS + 137 * DAY_MS;
        assert!(rows.windows(2).all(|w| w[0].ts <= w[1].ts), "not sorted by timestamp");
        assert!(rows.iter().all(|r| (REAL_START_MS..end).contains(&r.ts)));
        assert!(rows[0].ts < REAL_START_MS + DAY_MS && rows[rows.len() - 1].ts > end - DAY_MS);
    }

    #[test]
    fn transactions_carry_shared_ids() {
        let (dir, _) = gen(100_000, 3);
        let rows = read_events(dir.path());
        let mut baskets: HashMap<u64, Vec<&Row>> = HashMap::new();
        for r in &rows {
            match (r.kind.as_str(), r.txn) {
                ("transaction", Some(t)) => baskets.entry(t).or_default().push(r),
                ("transaction", None) => panic!("transaction without id: {r:?}"),
                (_, Some(_)) => panic!("{} with a transaction id: {r:?}", r.kind),
                _ => {}
            }
        }
        assert!(baskets.len() > 300);
        let mut multi = 0;
        for (t, rows) in &baskets {
            assert!(rows.iter().all(|r| r.user == rows[0].user), "transaction {t} spans visitors");
            let span = rows.iter().map(|r| r.ts).max().unwrap() - rows.iter().map(|r| r.ts).min().unwrap();
            assert!(span < 1000, "transaction {t} spans {span} ms");
            let items: HashSet<u64> = rows.iter().map(|r| r.item).collect();
            assert_eq!(items.len(), rows.len(), "transaction {t} repeats an item");
            multi += usize::from(rows.len() > 1);
        }
        assert!(multi * 20 > baskets.len(), "only {multi} of {} baskets have several items", baskets.len());
        // Ids are dense from 0.
        let max = baskets.keys().max().copied().unwrap();
        assert_eq!(max + 1, baskets.len() as u64);
    }

    /// The latent tastes are visible in the log: a visitor's distinct items
    /// share a category far more often than random items do, and carts go
    /// to the visitor's main category more often than views.
    #[test]
    fn visitors_have_latent_tastes() {
        let (dir, _) = gen(200_000, 5);
        let rows = read_events(dir.path());
        let mut category: HashMap<u64, String> = HashMap::new();
        let mut props = read_properties(dir.path());
        props.sort_by_key(|r| r.0);
        for (_, item, property, value) in props {
            if property == "categoryid" {
                category.entry(item).or_insert(value);
            }
        }
        let mut by_user: HashMap<u64, Vec<&Row>> = HashMap::new();
        for r in &rows {
            by_user.entry(r.user).or_default().push(r);
        }
        let mut cat_events: HashMap<&str, f64> = HashMap::new();
        let mut known = 0.0;
        for r in &rows {
            if let Some(c) = category.get(&r.item) {
                *cat_events.entry(c).or_default() += 1.0;
                known += 1.0;
            }
        }
        let baseline: f64 = cat_events.values().map(|n| (n / known).powi(2)).sum();
        let (mut same, mut pairs) = (0.0, 0.0);
        let (mut view_main, mut views, mut cart_main, mut carts) = (0.0, 0.0, 0.0, 0.0);
        for events in by_user.values().filter(|e| e.len() >= 5) {
            let mut seen = HashSet::new();
            let cats: Vec<&str> = events
                .iter()
                .filter(|r| seen.insert(r.item))
                .filter_map(|r| category.get(&r.item).map(String::as_str))
                .collect();
            for w in cats.windows(2) {
                pairs += 1.0;
                same += f64::from(u8::from(w[0] == w[1]));
            }
            let mut freq: HashMap<&str, usize> = HashMap::new();
            for r in events.iter().filter(|r| r.kind == "view") {
                if let Some(c) = category.get(&r.item) {
                    *freq.entry(c).or_default() += 1;
                }
            }
            let Some(main) = freq.iter().max_by_key(|(c, n)| (**n, **c)).map(|(c, _)| *c) else { continue };
            for r in events.iter() {
                let hit = f64::from(u8::from(category.get(&r.item).map(String::as_str) == Some(main)));
                match r.kind.as_str() {
                    "view" => (view_main, views) = (view_main + hit, views + 1.0),
                    "addtocart" => (cart_main, carts) = (cart_main + hit, carts + 1.0),
                    _ => {}
                }
            }
        }
        let same_rate = same / pairs;
        println!("same-category rate {same_rate:.3} vs random {baseline:.4}");
        assert!(pairs > 10_000.0);
        assert!(same_rate > 10.0 * baseline, "{same_rate} vs {baseline}");
        let (view_rate, cart_rate) = (view_main / views, cart_main / carts);
        println!("in the main category: views {view_rate:.3}, carts {cart_rate:.3}");
        assert!(carts > 500.0 && cart_rate > view_rate + 0.05, "carts {cart_rate} views {view_rate}");
    }

    /// The guided search answers exactly like a binary search over the
    /// range, including zero weights and extreme weight ratios.
    #[test]
    fn guided_search_matches_binary_search() {
        let mut rng = stream(1, 99, 0);
        for n in [1usize, 2, 3, 10, 1_000, 20_000] {
            let w: Vec<f64> = (0..n)
                .map(|i| match i % 5 {
                    0 | 1 => 0.0,
                    2 => 1e-9,
                    _ => (1.0 - uniform(&mut rng)).powf(-2.0),
                })
                .collect();
            let cum = Cumulative::new(&w);
            for _ in 0..20_000 {
                let lo = rng.random_range(0..n);
                let hi = rng.random_range(lo + 1..=n);
                let u = cum.cum[lo] + uniform(&mut rng) * cum.mass(lo, hi);
                let plain = (lo + cum.cum[lo + 1..=hi].partition_point(|&c| c <= u)).min(hi - 1);
                assert_eq!(cum.at(lo, hi, u), plain, "n {n} range {lo}..{hi} u {u}");
                if cum.mass(lo, hi) > 0.0 {
                    assert!(w[cum.draw(lo, hi, &mut rng)] > 0.0);
                }
            }
        }
    }

    #[test]
    fn category_tree_has_the_real_shape() {
        let (dir, report) = gen(1_000, 1);
        let tree = read_tree(dir.path());
        assert_eq!((tree.len(), report.categories), (1669, 1669));
        let parent: HashMap<u64, Option<u64>> = tree.iter().copied().collect();
        assert_eq!(parent.len(), tree.len(), "duplicate category ids");
        assert_eq!(tree.iter().filter(|(_, p)| p.is_none()).count(), 25);
        let mut depths = vec![0usize; 8];
        for &(c, _) in &tree {
            let (mut node, mut depth) = (c, 1);
            while let Some(p) = parent[&node] {
                assert!(parent.contains_key(&p), "parent {p} of {node} is missing");
                node = p;
                depth += 1;
                assert!(depth <= 6, "category {c} is deeper than 6");
            }
            depths[depth] += 1;
        }
        assert!(depths[5] + depths[6] > 0 && depths[2] > 0, "depths {depths:?}");
        // Ids are not in topological order.
        assert!(tree.iter().any(|&(c, p)| p.is_some_and(|p| p > c)));
    }

    #[test]
    fn item_properties_change_over_time() {
        let (dir, report) = gen(50_000, 9);
        let props = read_properties(dir.path());
        assert_eq!(props.len() as u64, report.property_rows);
        let tree: HashSet<u64> = read_tree(dir.path()).into_iter().map(|(c, _)| c).collect();
        let end = REAL_START_MS + 137 * DAY_MS;
        let mut cats: HashMap<u64, HashSet<&str>> = HashMap::new();
        let mut avail: HashMap<u64, HashSet<&str>> = HashMap::new();
        let mut free_text = 0;
        for (ts, item, property, value) in &props {
            assert!((REAL_START_MS..end).contains(ts) && (ts - REAL_START_MS) % WEEK_MS == 0, "{ts}");
            match property.as_str() {
                "categoryid" => {
                    assert!(tree.contains(&value.parse().unwrap()), "unknown category {value}");
                    cats.entry(*item).or_default().insert(value);
                }
                "available" => {
                    assert!(value == "0" || value == "1", "{value}");
                    avail.entry(*item).or_default().insert(value);
                }
                other => {
                    assert!(other.parse::<u32>().is_ok(), "property {other}");
                    assert!(
                        !value.is_empty()
                            && value
                                .split(' ')
                                .all(|t| { t.parse::<u64>().is_ok() || (t.starts_with('n') && t.ends_with(".000")) }),
                        "{value}"
                    );
                    free_text += usize::from(value.contains(' ') && value.contains('n'));
                }
            }
        }
        assert!(free_text > 100);
        let changed = cats.values().filter(|c| c.len() > 1).count();
        let flipped = avail.values().filter(|a| a.len() > 1).count();
        assert!(changed * 50 > cats.len() && changed * 10 < cats.len(), "{changed} of {}", cats.len());
        assert!(flipped * 5 > avail.len(), "{flipped} of {}", avail.len());
        // Most items with events have a category; a few (like in the real data) do not.
        let event_items: HashSet<u64> = read_events(dir.path()).iter().map(|r| r.item).collect();
        let with = event_items.iter().filter(|i| cats.contains_key(i)).count();
        assert!(with * 100 >= event_items.len() * 95 && with < event_items.len(), "{with} of {}", event_items.len());
    }

    /// The catalog stream: every catalog item's category (the one of the
    /// weekly files) and availability at the start, then a few % flips
    /// inside the window, in time order.
    #[test]
    fn catalog_stream_starts_with_every_item_and_flips_a_few() {
        let (dir, report) = gen(50_000, 9);
        let text = fs::read_to_string(dir.path().join(CATALOG_STREAM_FILE)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(schemas::csv::RETAILROCKET_PROPERTIES_HEADER));
        let rows: Vec<(i64, u64, String, String)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                assert_eq!(f.len(), 4, "{l}");
                (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_owned(), f[3].to_owned())
            })
            .collect();
        assert_eq!(rows.len() as u64, report.catalog_rows);
        assert!(rows.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)), "sorted by (ts, item)");
        let end = REAL_START_MS + 137 * DAY_MS;
        let mut category: HashMap<u64, String> = HashMap::new();
        let mut state: HashMap<u64, bool> = HashMap::new();
        let (mut sold_out, mut back, mut flips) = (0u64, 0u64, 0u64);
        for (ts, item, property, value) in &rows {
            match (property.as_str(), *ts == REAL_START_MS) {
                ("categoryid", true) => assert!(category.insert(*item, value.clone()).is_none()),
                ("available", true) => assert!(state.insert(*item, value == "1").is_none()),
                ("available", false) => {
                    assert!(*ts < end, "{ts}");
                    let now = value == "1";
                    let before = state.insert(*item, now).unwrap();
                    assert_ne!(before, now, "a flip changes the state of {item}");
                    flips += 1;
                    if now {
                        back += 1;
                    } else {
                        sold_out += 1;
                    }
                }
                other => panic!("unexpected row {other:?}"),
            }
        }
        assert_eq!(flips, report.availability_flips);
        let items = category.len() as u64;
        assert_eq!(state.len() as u64, items);
        assert!(sold_out * 100 > items * 2 && sold_out * 100 < items * 7, "{sold_out} of {items} sold out");
        assert!(back > 0 && back < sold_out + items / 50, "{back} came back");
        // The same categories as the weekly files' first rows.
        let mut first: HashMap<u64, String> = HashMap::new();
        for (_, item, property, value) in read_properties(dir.path()) {
            if property == "categoryid" {
                first.entry(item).or_insert(value);
            }
        }
        assert!(first.len() as u64 * 100 > items * 95);
        assert!(first.iter().all(|(item, c)| category.get(item) == Some(c)), "categories agree");
    }

    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = fs::read(&p).unwrap();
                (PathBuf::from(p.file_name().unwrap()), bytes)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_threads() {
        let run = |threads: usize, seed: u64| {
            let dir = tempfile::tempdir().unwrap();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| generate(&GenerateConfig::new(30_000, seed), dir.path(), None)).unwrap();
            files(dir.path())
        };
        let one = run(1, 8);
        assert_eq!(one.len(), 5);
        assert!(one == run(3, 8), "thread count changed the output");
        let other = run(2, 9);
        for (a, b) in one.iter().zip(&other) {
            assert_eq!(a.0, b.0);
            assert_ne!(a.1, b.1, "{} did not change with the seed", a.0.display());
        }
    }

    #[test]
    fn exact_event_counts_at_tiny_scales() {
        for events in [0u64, 1, 2, 7, 1_000] {
            let dir = tempfile::tempdir().unwrap();
            let pb = ProgressBar::hidden();
            let report = generate(&GenerateConfig::new(events, 4), &dir.path().join("out"), Some(&pb)).unwrap();
            let rows = read_events(&dir.path().join("out"));
            assert_eq!((rows.len() as u64, report.events, pb.position()), (events, events, events));
            assert_eq!(report.views + report.addtocart + report.transactions, events);
            let users: HashSet<u64> = rows.iter().map(|r| r.user).collect();
            assert_eq!(users.len() as u64, report.users);
            assert!(report.users <= events && (events == 0) == (report.users == 0));
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never");
        let base = GenerateConfig::new(1_000, 1);
        let bad: Vec<GenerateConfig> = vec![
            GenerateConfig { users: 1_001, ..base.clone() },
            GenerateConfig { users: 0, ..base.clone() },
            GenerateConfig { catalog_items: 0, ..base.clone() },
            GenerateConfig { roots: 0, ..base.clone() },
            GenerateConfig { roots: 2_000, ..base.clone() },
            GenerateConfig { max_depth: 1, ..base.clone() },
            GenerateConfig { styles: 0, ..base.clone() },
            GenerateConfig { taste_share: 1.5, ..base.clone() },
            GenerateConfig { item_zipf: f64::NAN, ..base.clone() },
            GenerateConfig { activity_tail: 0.0, ..base.clone() },
            GenerateConfig { days: 0, ..base.clone() },
        ];
        for cfg in bad {
            let err = generate(&cfg, &out, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
        }
        assert!(!out.exists());
        // A tree of roots only is valid with max_depth 1.
        let flat = GenerateConfig { categories: 10, roots: 10, max_depth: 1, ..base };
        generate(&flat, &out, None).unwrap();
        assert!(read_tree(&out).iter().all(|(_, p)| p.is_none()));
    }

    /// Generation speed and realized shape at the real scale.
    /// `cargo test --release -p datagen --lib -- --ignored --nocapture generate_speed`
    /// (`RECSYS_GEN_EVENTS` sets the event count, default 2,756,101).
    #[test]
    #[ignore = "timing, release only"]
    fn generate_speed() {
        let events = std::env::var("RECSYS_GEN_EVENTS").map_or(REAL_EVENTS, |v| v.parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        let report = generate(&GenerateConfig::new(events, 42), dir.path(), None).unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        println!("generate: {events} events in {elapsed:.3} s on {} threads", rayon::current_num_threads());
        println!("{}", serde_json::to_string(&report).unwrap());
        println!("{:#?}", shape(&read_events(dir.path())));
        assert_eq!(report.events, events);
    }
}
