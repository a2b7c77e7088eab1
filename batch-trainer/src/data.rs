//! In-memory representation of a RetailRocket-format data set, shared by the
//! loader, the generator, preprocessing and evaluation.
//!
//! Ids are kept as the numeric source ids (`u64`): RetailRocket ids are integers,
//! and parsing them as numbers avoids a string allocation per row. They become
//! strings only when written into a model artifact.

use std::collections::HashMap;
use std::path::PathBuf;

use schemas::EventKind;
use serde::Serialize;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    pub file: PathBuf,
    /// Data rows read (header excluded).
    pub rows: u64,
    /// Rows with an empty required field.
    pub null_field: u64,
    /// Rows whose event type is not view / addtocart / transaction.
    pub unknown_event: u64,
    /// Rows whose timestamp lies outside the accepted range (2010–2030 by default).
    pub bad_timestamp: u64,
    /// Exact duplicates of an earlier row.
    pub duplicate: u64,
    /// Rows kept.
    pub kept: u64,
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

/// Everything read from a data directory.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub events: EventLog,
    /// `None` when no item-properties file exists (no categories then).
    pub properties: Option<ItemPropertyLog>,
    /// `None` when `category_tree.csv` is missing.
    pub tree: Option<CategoryTree>,
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
}
