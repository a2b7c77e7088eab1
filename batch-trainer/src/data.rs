//! In-memory representation of a RetailRocket-format data set, shared by the
//! loader, the generator, preprocessing and evaluation.
//!
//! Ids are `u64`: a canonical decimal id is its own number (RetailRocket's
//! are, and numbers avoid a string per row); any other id (SKU, UUID) is
//! interned once into [`IdNames`]. They become strings again only when written
//! into a model artifact.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use schemas::EventKind;
use serde::Serialize;

use rustc_hash::FxHashMap;

/// One cleaned event of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawEvent {
    /// Epoch milliseconds.
    pub ts: i64,
    pub user: u64,
    pub item: u64,
    pub kind: EventKind,
    /// RetailRocket sets it on transactions only.
    pub txn: Option<u64>,
}

/// What one loading step read, kept and rejected, and why.
///
/// `rows` is the sum of `null_field`, `unknown_event`, `bad_timestamp`,
/// `bad_id`, `wrong_columns`, `bad_value`, `skipped`, `duplicate` and `kept`;
/// [`LoadReport::rejected`] has the same rejections by finer reason, with
/// example lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    pub file: PathBuf,
    /// Data rows read (header excluded).
    pub rows: u64,
    /// Rows with an empty required field.
    pub null_field: u64,
    /// Rows whose event type is not view / addtocart / transaction.
    pub unknown_event: u64,
    /// Rows whose timestamp is not one in the file's clock, or lies outside an
    /// explicit time window (the only timestamp check of Kafka events).
    pub bad_timestamp: u64,
    /// Rows with an id that breaks the id rules, or a transaction id on a view
    /// or add-to-cart.
    pub bad_id: u64,
    /// Rows with more or fewer fields than the header.
    pub wrong_columns: u64,
    /// Item-property rows whose value is not what the property holds.
    pub bad_value: u64,
    /// Item-property rows of free-text properties (not used, not rejected).
    pub skipped: u64,
    /// Exact duplicates of an earlier row (removed, not rejected).
    pub duplicate: u64,
    /// Rows kept.
    pub kept: u64,
    /// How the file's timestamps were read (`None` for Kafka).
    pub clock: Option<schemas::csv::TimeUnit>,
    /// Every rejection by reason, with example lines.
    pub rejected: schemas::csv::Rejections,
}

impl LoadReport {
    /// Rows rejected for any reason (duplicates and skipped rows excluded).
    pub fn rejected_rows(&self) -> u64 {
        self.null_field + self.unknown_event + self.bad_timestamp + self.bad_id + self.wrong_columns + self.bad_value
    }

    /// The summary of one file, as `inspect` and the loading commands print
    /// it: `FILE: N rows, N kept, N rejected, N duplicate[, N other properties
    /// skipped][; clock: C]`, then the rejections by reason with examples.
    pub fn render(&self) -> String {
        let skipped =
            if self.skipped > 0 { format!(", {} other properties skipped", self.skipped) } else { String::new() };
        let clock = self.clock.map_or(String::new(), |c| format!("; clock: {c}"));
        let mut s = format!(
            "{}: {} rows, {} kept, {} rejected, {} duplicate{skipped}{clock}\n",
            self.file.display(),
            self.rows,
            self.kept,
            self.rejected_rows(),
            self.duplicate,
        );
        s.push_str(&self.rejected.render("  "));
        s
    }

    /// Sets the summary counters from [`LoadReport::rejected`].
    pub fn sync_counters(&mut self) {
        use schemas::csv::Reason as R;
        let c = |rs: &[R]| rs.iter().map(|&r| self.rejected.count(r)).sum::<u64>();
        self.null_field = c(&[R::EmptyField]);
        self.unknown_event = c(&[R::UnknownEvent]);
        self.bad_timestamp = c(&[R::BadTimestamp, R::OutsideWindow]);
        self.bad_id = c(&[R::BadUserId, R::BadItemId, R::BadTransactionId, R::TransactionIdNotOnTransaction]);
        self.wrong_columns = c(&[R::WrongColumns]);
        self.bad_value = c(&[R::BadValue]);
    }
}

/// The cleaned event log, in file row order (the order breaks timestamp ties).
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    pub events: Vec<RawEvent>,
    pub report: LoadReport,
}

/// A timestamped value of an item property that the recommender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyValue {
    Category(u64),
    Available(bool),
}

/// One row of `item_properties_part*.csv` that matters to us (`categoryid` or
/// `available`); the other properties are hashed free text and are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemProperty {
    pub ts: i64,
    pub item: u64,
    pub value: PropertyValue,
}

/// All `categoryid` / `available` rows of the item-properties files.
#[derive(Debug, Clone, Default)]
pub struct ItemPropertyLog {
    pub rows: Vec<ItemProperty>,
    /// One report per file read.
    pub reports: Vec<LoadReport>,
}

/// The category tree (`category_tree.csv`): parent of every category, roots have none.
#[derive(Debug, Clone, Default)]
pub struct CategoryTree {
    pub parent: HashMap<u64, Option<u64>>,
    pub children: HashMap<u64, Vec<u64>>,
}

impl CategoryTree {
    /// Builds the tree from (category, parent) rows.
    pub fn from_edges(edges: impl IntoIterator<Item = (u64, Option<u64>)>) -> Self {
        let mut tree = CategoryTree::default();
        for (cat, parent) in edges {
            tree.parent.insert(cat, parent);
            if let Some(p) = parent {
                tree.children.entry(p).or_default().push(cat);
            }
        }
        for c in tree.children.values_mut() {
            c.sort_unstable();
            c.dedup();
        }
        tree
    }

    /// Depth with roots at level 1 (as the original system counted). A category
    /// missing from the tree has depth 1; cycles are cut at the tree size.
    pub fn depth(&self, cat: u64) -> usize {
        let mut depth = 1;
        let mut cur = cat;
        while let Some(Some(p)) = self.parent.get(&cur) {
            depth += 1;
            cur = *p;
            if depth > self.parent.len() + 1 {
                break;
            }
        }
        depth
    }

    /// The parent and the children of a category: its tree neighbours.
    pub fn neighbours(&self, cat: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self.children.get(&cat).cloned().unwrap_or_default();
        if let Some(Some(p)) = self.parent.get(&cat) {
            out.push(*p);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Everything read from a data directory (and/or the event topic).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub events: EventLog,
    /// `None` when no item-properties file exists (no categories then).
    pub properties: Option<ItemPropertyLog>,
    /// `None` when `category_tree.csv` is missing.
    pub tree: Option<CategoryTree>,
    /// Names of ids that are not plain integers (events read from Kafka).
    pub names: IdNames,
}

/// First numeric id that stands for an interned name (see [`IdNames`]).
pub const NAMED_ID_BASE: u64 = 1 << 63;

/// Ids of `recsys.events` are strings (`[A-Za-z0-9._:-]{1,64}`); the pipeline
/// works on `u64` (RetailRocket's ids are integers, and numbers avoid a string
/// per row). A canonical decimal id below [`NAMED_ID_BASE`] is its own number,
/// so Kafka and CSV ids of the same user agree; any other id is interned as
/// `NAMED_ID_BASE + n` and named again when the model is written. The CSV
/// loader interns the same way, so a SKU means one item in both sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdNames {
    // One allocation per name, shared by the list and the index.
    users: Vec<Arc<str>>,
    items: Vec<Arc<str>>,
    user_index: FxHashMap<Arc<str>, u64>,
    item_index: FxHashMap<Arc<str>, u64>,
}

/// The number of a canonical decimal id (`"0"`, `"42"`; not `"042"`) below
/// [`NAMED_ID_BASE`].
pub(crate) fn plain_number(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    // A leading zero makes another id than the number ("042" is not 42).
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    schemas::csv::parse_u64(b).filter(|&v| v < NAMED_ID_BASE)
}

fn intern(names: &mut Vec<Arc<str>>, index: &mut FxHashMap<Arc<str>, u64>, id: &str) -> u64 {
    if let Some(n) = plain_number(id) {
        return n;
    }
    if let Some(&n) = index.get(id) {
        return n;
    }
    let n = NAMED_ID_BASE + names.len() as u64;
    let name: Arc<str> = Arc::from(id);
    names.push(Arc::clone(&name));
    index.insert(name, n);
    n
}

fn name_of(names: &[Arc<str>], id: u64) -> String {
    match id.checked_sub(NAMED_ID_BASE) {
        Some(i) => names.get(i as usize).map_or_else(|| id.to_string(), |n| n.to_string()),
        None => id.to_string(),
    }
}

impl IdNames {
    /// The number of a user id (interned when not a plain number).
    pub fn user(&mut self, id: &str) -> u64 {
        intern(&mut self.users, &mut self.user_index, id)
    }

    /// The number of an item id (interned when not a plain number).
    pub fn item(&mut self, id: &str) -> u64 {
        intern(&mut self.items, &mut self.item_index, id)
    }

    /// The original text of a user number.
    pub fn user_name(&self, id: u64) -> String {
        name_of(&self.users, id)
    }

    /// The original text of an item number.
    pub fn item_name(&self, id: u64) -> String {
        name_of(&self.items, id)
    }

    /// Interned (non-numeric) user and item ids.
    pub fn interned(&self) -> (usize, usize) {
        (self.users.len(), self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_depth_and_neighbours() {
        let t = CategoryTree::from_edges([(1, None), (2, Some(1)), (3, Some(2)), (4, Some(2))]);
        assert_eq!(t.depth(1), 1);
        assert_eq!(t.depth(3), 3);
        assert_eq!(t.depth(99), 1);
        assert_eq!(t.neighbours(2), vec![1, 3, 4]);
        assert_eq!(t.neighbours(1), vec![2]);
    }

    #[test]
    fn plain_numbers_stay_numbers_and_names_round_trip() {
        let mut n = IdNames::default();
        assert_eq!(n.user("257597"), 257_597);
        assert_eq!(n.user("0"), 0);
        let a = n.user("u-17");
        let b = n.user("042");
        assert_eq!(a, NAMED_ID_BASE);
        assert_eq!(b, NAMED_ID_BASE + 1);
        assert_eq!(n.user("u-17"), a, "interned once");
        assert_eq!(n.user_name(a), "u-17");
        assert_eq!(n.user_name(b), "042", "a non-canonical number keeps its text");
        assert_eq!(n.user_name(257_597), "257597");
        // Users and items are separate namespaces.
        assert_eq!(n.item("x"), NAMED_ID_BASE);
        assert_eq!(n.item_name(NAMED_ID_BASE), "x");
        let big = (NAMED_ID_BASE + 5).to_string();
        let b = n.item(&big);
        assert!(b >= NAMED_ID_BASE, "numbers in the named range are interned too");
        assert_eq!(n.item_name(b), big);
        assert_eq!(n.interned(), (2, 2));
    }
}
