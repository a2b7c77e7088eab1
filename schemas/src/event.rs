//! Event kinds of the storefront log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a visitor did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    View,
    #[serde(rename = "addtocart")]
    AddToCart,
    Transaction,
}

/// The event kind is not one of `view`, `addtocart`, `transaction`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}; expected view, addtocart or transaction")]
pub struct ParseEventKindError(pub String);

impl EventKind {
    /// All kinds, in index order.
    pub const ALL: [EventKind; 3] = [EventKind::View, EventKind::AddToCart, EventKind::Transaction];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::AddToCart => "addtocart",
            EventKind::Transaction => "transaction",
        }
    }

    /// Dense index 0..3, for weight tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses the wire name from bytes without allocating (the CSV hot path).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"view" => Some(EventKind::View),
            b"addtocart" => Some(EventKind::AddToCart),
            b"transaction" => Some(EventKind::Transaction),
            _ => None,
        }
    }

    /// True for the kinds that count as a conversion (cart or purchase).
    pub fn is_conversion(self) -> bool {
        !matches!(self, EventKind::View)
    }
}

impl FromStr for EventKind {
    type Err = ParseEventKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes()).ok_or_else(|| ParseEventKindError(s.to_owned()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_names() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
        assert!("click".parse::<EventKind>().is_err());
        assert!("View".parse::<EventKind>().is_err());
    }
}
