//! One entry of a user's history hash `hist:{user}` (docs/design.md §5).
//!
//! The updater's apply script writes it (`views,carts,purchases,last_ts`);
//! the updater folds histories in from it and serving reads it to drop bought
//! items and tell warm users from cold ones. Counts rather than a weight, so a
//! model trained with other event weights folds the same history in correctly.

use crate::EventKind;

/// One history entry as stored: `views,carts,purchases,last_ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistEntry {
    /// Events of each kind, in [`EventKind::ALL`] order.
    pub counts: [u32; 3],
    /// Latest event time, epoch ms.
    pub last_ts: i64,
}

impl HistEntry {
    /// Parses the stored text; `None` for anything but four decimal fields.
    pub fn parse(s: &str) -> Option<HistEntry> {
        let mut it = s.split(',');
        let mut counts = [0u32; 3];
        for c in &mut counts {
            *c = it.next()?.parse().ok()?;
        }
        let last_ts: i64 = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(HistEntry { counts, last_ts })
    }

    /// The stored text (what the apply script writes).
    pub fn encode(&self) -> String {
        let [v, c, p] = self.counts;
        format!("{v},{c},{p},{}", self.last_ts)
    }

    /// Events of one kind.
    pub fn count(&self, kind: EventKind) -> u32 {
        self.counts[kind.index()]
    }

    /// Σ count × weight of the kind: the implicit-feedback value `r` of the pair.
    pub fn weighted(&self, weight: impl Fn(EventKind) -> f32) -> f32 {
        EventKind::ALL.iter().map(|&k| self.count(k) as f32 * weight(k)).sum()
    }

    /// The user bought this item.
    pub fn purchased(&self) -> bool {
        self.count(EventKind::Transaction) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_encodes_and_nothing_else() {
        let e = HistEntry::parse("3,1,1,1433221332117").unwrap();
        assert_eq!(e, HistEntry { counts: [3, 1, 1], last_ts: 1433221332117 });
        assert_eq!(HistEntry::parse(&e.encode()), Some(e));
        assert!(e.purchased());
        assert_eq!(e.weighted(|k| [1.0, 3.0, 5.0][k.index()]), 11.0);
        for bad in ["", "1,2,3", "1,2,3,4,5", "a,0,0,1", "-1,0,0,1", "1,0,0,x", "1, 0,0,1"] {
            assert_eq!(HistEntry::parse(bad), None, "{bad}");
        }
    }
}
