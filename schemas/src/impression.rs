//! Impressions (topic `recsys.impressions`): what the API showed, to whom, from
//! which A/B arm and model, so the updater can attribute the clicks and
//! conversions that follow (docs/design.md §7).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::announcement::ModelVersion;
use crate::id::{ItemId, RecId, UserId};
use crate::RecordError;

/// The A/B arm a user is in. Sticky per user:
/// `hash(salt, user_id) % 100 < treatment_percent` → [`Variant::Als`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Treatment: the personal ALS list (with its fallbacks).
    Als,
    /// Control: the global popular list for everyone.
    Popular,
}

/// Where a served list came from, so CTR can be split by how personal it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The user's own ALS top-N.
    Personal,
    /// The user has events but no factors yet: popular in their categories.
    CategoryPopular,
    /// Unknown user, the control arm, or `GET /v1/popular`: a popular list.
    Popular,
    /// `GET /v1/items/{id}/similar`: an item's nearest items.
    Similar,
}

/// The text is not a known [`Variant`] or [`Source`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; expected {expected}")]
pub struct ParseNameError {
    what: &'static str,
    got: String,
    expected: &'static str,
}

impl Variant {
    /// Every variant, in a fixed order (for metrics and stats tables).
    pub const ALL: [Variant; 2] = [Variant::Als, Variant::Popular];

    /// The wire name (also used in Redis stats keys and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Als => "als",
            Variant::Popular => "popular",
        }
    }
}

impl Source {
    /// Every source, in a fixed order.
    pub const ALL: [Source; 4] = [Source::Personal, Source::CategoryPopular, Source::Popular, Source::Similar];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Personal => "personal",
            Source::CategoryPopular => "category_popular",
            Source::Popular => "popular",
            Source::Similar => "similar",
        }
    }
}

impl FromStr for Variant {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| ParseNameError {
            what: "variant",
            got: s.chars().take(64).collect(),
            expected: "als or popular",
        })
    }
}

impl FromStr for Source {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| ParseNameError {
            what: "source",
            got: s.chars().take(64).collect(),
            expected: "personal, category_popular, popular or similar",
        })
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recommendation response as the user saw it, on topic
/// `recsys.impressions` (Kafka key = `user_id`, so it lands in the same
/// partition number as that user's events when both topics have the same
/// partition count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Impression {
    /// The response's id; events that echo it are attributed to it directly.
    pub rec_id: RecId,
    /// When the response was served, epoch milliseconds.
    pub ts: i64,
    /// Who it was served to.
    pub user_id: UserId,
    /// The items shown, best first.
    pub items: Vec<ItemId>,
    /// The user's A/B arm.
    pub variant: Variant,
    /// The model version that was being served.
    pub model_version: ModelVersion,
    /// Where the list came from.
    pub source: Source,
}

impl Impression {
    /// Parses an impression (unknown or duplicate fields and invalid ids are
    /// rejected; integer ids are normalised to strings).
    pub fn parse_json(bytes: &[u8]) -> Result<Impression, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::new("impression", e))
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Impression has string keys only")
    }

    /// The Kafka key: the user id.
    pub fn key(&self) -> &[u8] {
        self.user_id.as_str().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn impression() -> Impression {
        Impression {
            rec_id: RecId::parse("r1").unwrap(),
            ts: 1_700_000_000_000,
            user_id: UserId::parse("u").unwrap(),
            items: vec![ItemId::parse("1").unwrap(), ItemId::parse("b-2").unwrap()],
            variant: Variant::Als,
            model_version: ModelVersion::parse("v1").unwrap(),
            source: Source::CategoryPopular,
        }
    }

    #[test]
    fn round_trips() {
        let i = impression();
        let json = String::from_utf8(i.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"rec_id":"r1","ts":1700000000000,"user_id":"u","items":["1","b-2"],"variant":"als","model_version":"v1","source":"category_popular"}"#
        );
        assert_eq!(Impression::parse_json(json.as_bytes()).unwrap(), i);
        assert_eq!(i.key(), b"u");
        let numeric = json.replace(r#""items":["1","b-2"]"#, r#""items":[1,"b-2"]"#);
        assert_eq!(Impression::parse_json(numeric.as_bytes()).unwrap(), i, "integer ids normalise");
    }

    #[test]
    fn reject_table() {
        let good = String::from_utf8(impression().to_json()).unwrap();
        let cases = [
            (good.replace("\"als\"", "\"ALS\""), "unknown variant `ALS`"),
            (good.replace("\"category_popular\"", "\"random\""), "unknown variant `random`"),
            (good.replace("\"v1\"", "\"../v1\""), "invalid model version"),
            (good.replace("\"b-2\"", "\"b 2\""), "id contains ' '"),
            (good.replace("\"r1\"", "1"), "id must be a string"),
            (good.replace("1700000000000", "\"now\""), "invalid type: string \"now\", expected i64"),
            (good.replace("\"rec_id\"", "\"recid\""), "unknown field `recid`"),
            (good.replace(",\"source\":\"category_popular\"", ""), "missing field `source`"),
            (good.replace("{", "{\"ts\":1,"), "duplicate field `ts`"),
        ];
        for (input, want) in &cases {
            let err = Impression::parse_json(input.as_bytes()).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
            assert!(err.starts_with("invalid impression: "), "{err}");
        }
    }

    #[test]
    fn names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(v.as_str().parse::<Variant>().unwrap(), v);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{v}\""));
            assert_eq!(serde_json::from_str::<Variant>(&format!("\"{v}\"")).unwrap(), v);
        }
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Source>(&format!("\"{s}\"")).unwrap(), s);
        }
        assert_eq!(
            "Als".parse::<Variant>().unwrap_err().to_string(),
            "unknown variant \"Als\"; expected als or popular"
        );
        assert!("personal ".parse::<Source>().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Impression::parse_json(&bytes);
        }

        #[test]
        fn valid_impressions_round_trip(
            rec in "[A-Za-z0-9._:-]{1,64}",
            ts in any::<i64>(),
            user in "[A-Za-z0-9._:-]{1,64}",
            items in proptest::collection::vec(any::<u64>(), 0..30),
            variant in 0usize..2,
            source in 0usize..Source::ALL.len(),
        ) {
            let i = Impression {
                rec_id: RecId::parse(&rec).unwrap(),
                ts,
                user_id: UserId::parse(&user).unwrap(),
                items: items.into_iter().map(ItemId::from_u64).collect(),
                variant: Variant::ALL[variant],
                model_version: ModelVersion::parse("m-1").unwrap(),
                source: Source::ALL[source],
            };
            prop_assert_eq!(Impression::parse_json(&i.to_json()).unwrap(), i);
        }
    }
}
