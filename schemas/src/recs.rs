//! The cached list `recs:{user}` (docs/design.md §5): written by the updater (and
//! the trainer's background refresh), read by serving.

use serde::{Deserialize, Serialize};

use crate::announcement::ModelVersion;
use crate::id::ItemId;

/// One entry of a cached list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecItem {
    pub item_id: ItemId,
    /// ALS score `x_u · y_i` (the list's order may be the re-ranked one).
    pub score: f32,
}

/// The JSON value of `recs:{user}`: `{"model", "updated_ms", "items": [{"item_id","score"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecsList {
    /// Model version the list was computed with.
    pub model: ModelVersion,
    /// When it was computed, epoch ms.
    pub updated_ms: i64,
    /// Best first.
    pub items: Vec<RecItem>,
}

impl RecsList {
    /// Parses a stored list.
    pub fn parse_json(bytes: &[u8]) -> Result<RecsList, crate::RecordError> {
        serde_json::from_slice(bytes).map_err(|e| crate::RecordError::new("cached list", e))
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a RecsList has string keys only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_shapes() {
        let l = RecsList {
            model: ModelVersion::parse("v1").unwrap(),
            updated_ms: 5,
            items: vec![RecItem { item_id: ItemId::parse("7").unwrap(), score: 0.25 }],
        };
        let j = l.to_json();
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            r#"{"model":"v1","updated_ms":5,"items":[{"item_id":"7","score":0.25}]}"#
        );
        assert_eq!(RecsList::parse_json(&j).unwrap(), l);
        assert!(RecsList::parse_json(br#"{"model":"v1","updated_ms":5,"items":[],"x":1}"#).is_err());
        assert!(
            RecsList::parse_json(br#"{"model":"v1","updated_ms":5,"items":[{"item_id":"a b","score":1}]}"#).is_err()
        );
    }
}
