//! The live outcome counters `stats:{variant}:{model}` and
//! `stats_hourly:{variant}:{model}:{hour}` (docs/design.md §5): written by the
//! tracking task's attribution script, read by serving's `GET /v1/stats` and
//! by tracking's tests and tools.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// The integer fields of a stats hash, in the order the attribution script
/// lists them (`tracking/src/attribute.lua` spells the same names; a test there
/// holds them equal).
pub const COUNTER_FIELDS: [&str; 4] = ["impressions", "clicks", "carts", "purchases"];
/// The float field: revenue of the attributed transactions.
pub const REVENUE_FIELD: &str = "revenue";

/// The counters of one arm and model version as Redis holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub impressions: u64,
    pub clicks: u64,
    pub carts: u64,
    pub purchases: u64,
    pub revenue: f64,
}

impl Counters {
    /// Reads an `HGETALL` reply; a missing or unreadable field counts 0 (a
    /// hash is created field by field, as outcomes arrive).
    pub fn from_hash<S: BuildHasher>(h: &HashMap<String, String, S>) -> Counters {
        let int = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let [impressions, clicks, carts, purchases] = COUNTER_FIELDS.map(int);
        let revenue = h.get(REVENUE_FIELD).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Counters { impressions, clicks, carts, purchases, revenue }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_hash_with_missing_and_bad_fields_as_zero() {
        let h: HashMap<String, String> = [("impressions", "10"), ("clicks", "3"), ("carts", "x"), ("revenue", "12.5")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            Counters::from_hash(&h),
            Counters { impressions: 10, clicks: 3, carts: 0, purchases: 0, revenue: 12.5 }
        );
        assert_eq!(Counters::from_hash(&HashMap::<String, String>::new()), Counters::default());
    }
}
