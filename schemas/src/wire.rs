//! The JSON records on the Kafka topics (DESIGN.md §3).
//!
//! Producers may be any storefront, so an [`Event`] is parsed from untrusted JSON
//! exactly once, here, with a reason naming the field for every rejection; that
//! reason is what the HTTP client sees and what the dead-letter topic records.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::EventKind;
use crate::id::{IdError, ItemId, UserId};

/// Accepted event-time window. Events outside it are rejected, not clamped:
/// a wrong clock on a client must be visible, not silently rewritten.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventLimits {
    /// Earliest accepted `ts` (epoch ms). Default 2010-01-01.
    pub min_ts: i64,
    /// How far past the receiver's clock `ts` may be. Default one day.
    pub max_future_ms: i64,
    /// Largest accepted `revenue`.
    pub max_revenue: f64,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits { min_ts: 1_262_304_000_000, max_future_ms: 86_400_000, max_revenue: 1e9 }
    }
}

/// Why an event was rejected. The `Display` text names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("field `{field}`: {error}")]
    Id { field: &'static str, error: IdError },
    #[error("field `event`: {0}")]
    Kind(String),
    #[error("field `ts`: {0}")]
    Timestamp(String),
    #[error("field `revenue`: {0}")]
    Revenue(String),
    #[error("field `{0}` is only allowed on transactions")]
    OnlyOnTransactions(&'static str),
}

/// A validated storefront event (topic `recsys.events`, key = user id).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Event time, epoch ms (the ingest time when the producer sent none).
    pub ts: i64,
    pub user_id: UserId,
    pub item_id: ItemId,
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<ItemId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
    /// Set when the event follows a recommendation the API returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rec_id: Option<ItemId>,
}

const FIELDS: [&str; 7] = ["ts", "user_id", "item_id", "event", "transaction_id", "revenue", "rec_id"];

fn id_field<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    parse: fn(&str) -> Result<T, IdError>,
) -> Result<Option<T>, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(s).map(Some).map_err(|error| EventError::Id { field, error }),
        Some(Value::Number(n)) if n.is_u64() => {
            parse(&n.to_string()).map(Some).map_err(|error| EventError::Id { field, error })
        }
        Some(_) => Err(EventError::Id { field, error: IdError::WrongType }),
    }
}

impl Event {
    /// Parses one event from JSON bytes. `now_ms` is the receiver's clock.
    pub fn parse_json(bytes: &[u8], now_ms: i64, limits: &EventLimits) -> Result<Event, EventError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| EventError::Json(e.to_string()))?;
        Self::from_value(&v, now_ms, limits)
    }

    /// Parses one event from an already-parsed JSON value (one element of a
    /// batch, so each element gets its own reason).
    pub fn from_value(v: &Value, now_ms: i64, limits: &EventLimits) -> Result<Event, EventError> {
        let obj = v.as_object().ok_or(EventError::NotAnObject)?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(EventError::UnknownField(k.chars().take(64).collect()));
        }
        let user_id = id_field(obj, "user_id", UserId::parse)?.ok_or(EventError::Missing("user_id"))?;
        let item_id = id_field(obj, "item_id", ItemId::parse)?.ok_or(EventError::Missing("item_id"))?;
        let event = match obj.get("event") {
            None | Some(Value::Null) => return Err(EventError::Missing("event")),
            Some(Value::String(s)) => s.parse::<EventKind>().map_err(|e| EventError::Kind(e.to_string()))?,
            Some(_) => return Err(EventError::Kind("must be a string".into())),
        };
        let ts = match obj.get("ts") {
            None | Some(Value::Null) => now_ms,
            Some(Value::Number(n)) => {
                n.as_i64().ok_or_else(|| EventError::Timestamp("must be an integer (epoch milliseconds)".into()))?
            }
            Some(_) => return Err(EventError::Timestamp("must be an integer (epoch milliseconds)".into())),
        };
        if ts < limits.min_ts {
            return Err(EventError::Timestamp(format!("{ts} is before the accepted minimum {}", limits.min_ts)));
        }
        if ts > now_ms.saturating_add(limits.max_future_ms) {
            return Err(EventError::Timestamp(format!("{ts} is more than {} ms in the future", limits.max_future_ms)));
        }
        let revenue = match obj.get("revenue") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                let r = n.as_f64().ok_or_else(|| EventError::Revenue("not a number".into()))?;
                if !r.is_finite() || r < 0.0 || r > limits.max_revenue {
                    return Err(EventError::Revenue(format!("{r} is outside 0..={}", limits.max_revenue)));
                }
                Some(r)
            }
            Some(_) => return Err(EventError::Revenue("must be a number".into())),
        };
        let transaction_id = id_field(obj, "transaction_id", ItemId::parse)?;
        let rec_id = id_field(obj, "rec_id", ItemId::parse)?;
        if event != EventKind::Transaction {
            if revenue.is_some() {
                return Err(EventError::OnlyOnTransactions("revenue"));
            }
            if transaction_id.is_some() {
                return Err(EventError::OnlyOnTransactions("transaction_id"));
            }
        }
        Ok(Event { ts, user_id, item_id, event, transaction_id, revenue, rec_id })
    }

    /// The Kafka key: the user id, so one user's events stay in one partition, in order.
    pub fn key(&self) -> &[u8] {
        self.user_id.as_str().as_bytes()
    }
}

/// The A/B arm a user is in (sticky per user, DESIGN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Als,
    Popular,
}

/// Where a served list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Personal,
    CategoryPopular,
    Popular,
}

/// One served list (topic `recsys.impressions`, key = user id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impression {
    pub rec_id: ItemId,
    pub ts: i64,
    pub user_id: UserId,
    pub items: Vec<ItemId>,
    pub variant: Variant,
    pub model_version: String,
    pub source: Source,
}

/// A published model (topic `recsys.models`, key `model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelAnnouncement {
    pub version: String,
    pub path: String,
    pub manifest_sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

impl ModelAnnouncement {
    /// Parses and checks an announcement: version `[A-Za-z0-9._-]{1,100}` not
    /// starting with `.`, sha256 as 64 lowercase hex digits.
    pub fn parse_json(bytes: &[u8]) -> Result<ModelAnnouncement, String> {
        let a: ModelAnnouncement = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let v = &a.version;
        if v.is_empty()
            || v.len() > 100
            || v.starts_with('.')
            || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!("field `version`: {v:?} is not a valid version name"));
        }
        if a.manifest_sha256.len() != 64 || !a.manifest_sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("field `manifest_sha256`: expected 64 lowercase hex digits".into());
        }
        Ok(a)
    }
}

/// A rejected input (topic `recsys.events.dlq`): the reason and the original
/// bytes, so nothing a producer sent is ever silently lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    /// `http`, `replay` or `updater`.
    pub source: String,
    pub received_ms: i64,
    /// The original input when it is valid UTF-8 …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// … otherwise its bytes, hex-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_hex: Option<String>,
}

impl DeadLetter {
    /// Wraps rejected bytes with their reason.
    pub fn new(reason: impl Into<String>, source: &str, received_ms: i64, original: &[u8]) -> DeadLetter {
        let (original, original_hex) = match std::str::from_utf8(original) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (None, Some(original.iter().map(|b| format!("{b:02x}")).collect())),
        };
        DeadLetter { reason: reason.into(), source: source.to_owned(), received_ms, original, original_hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(s: &str) -> Result<Event, EventError> {
        Event::parse_json(s.as_bytes(), NOW, &EventLimits::default())
    }

    #[test]
    fn accepts_the_documented_shape_and_normalises_ids() {
        let e = parse(r#"{"ts": 1433221332117, "user_id": 257597, "item_id": "355908", "event": "view"}"#).unwrap();
        assert_eq!(e.user_id.as_str(), "257597");
        assert_eq!(e.key(), b"257597");
        let t = parse(r#"{"user_id": "0", "item_id": "1", "event": "transaction", "transaction_id": 4000, "revenue": 12.5, "rec_id": "r-1"}"#)
            .unwrap();
        assert_eq!(t.ts, NOW, "absent ts is the receiver's time");
        assert_eq!(t.transaction_id.as_ref().map(ItemId::as_str), Some("4000"));
        let back = serde_json::to_string(&t).unwrap();
        assert_eq!(parse(&back).unwrap(), t, "canonical JSON parses back to the same event");
    }

    #[test]
    fn rejects_with_a_reason_naming_the_field() {
        let cases = [
            ("[1]", "JSON object"),
            ("{", "not valid JSON"),
            (r#"{"item_id":"1","event":"view"}"#, "user_id"),
            (r#"{"user_id":"u","event":"view"}"#, "item_id"),
            (r#"{"user_id":"u","item_id":"1"}"#, "event"),
            (r#"{"user_id":"u","item_id":"1","event":"click"}"#, "unknown event type"),
            (r#"{"user_id":"u v","item_id":"1","event":"view"}"#, "user_id"),
            (r#"{"user_id":-1,"item_id":"1","event":"view"}"#, "user_id"),
            (r#"{"user_id":"u","item_id":"1","event":"view","ts":"yesterday"}"#, "ts"),
            (r#"{"user_id":"u","item_id":"1","event":"view","ts":5}"#, "ts"),
            (r#"{"user_id":"u","item_id":"1","event":"view","ts":99999999999999}"#, "future"),
            (r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":-1}"#, "revenue"),
            (r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":1e300}"#, "revenue"),
            (r#"{"user_id":"u","item_id":"1","event":"view","revenue":3}"#, "only allowed on transactions"),
            (r#"{"user_id":"u","item_id":"1","event":"view","transaction_id":"t"}"#, "transaction_id"),
            (r#"{"user_id":"u","item_id":"1","event":"view","price":3}"#, "unknown field `price`"),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn other_records_round_trip() {
        let i = Impression {
            rec_id: ItemId::parse("r1").unwrap(),
            ts: NOW,
            user_id: UserId::parse("u").unwrap(),
            items: vec![ItemId::parse("1").unwrap(), ItemId::parse("2").unwrap()],
            variant: Variant::Als,
            model_version: "v1".into(),
            source: Source::CategoryPopular,
        };
        let json = serde_json::to_string(&i).unwrap();
        assert!(json.contains("\"category_popular\""));
        assert_eq!(serde_json::from_str::<Impression>(&json).unwrap(), i);

        let a = ModelAnnouncement {
            version: "20261128T191617Z".into(),
            path: "artifacts/models/20261128T191617Z".into(),
            manifest_sha256: "a".repeat(64),
            created_at: "2026-11-28T19:16:17Z".into(),
        };
        let bytes = serde_json::to_vec(&a).unwrap();
        assert_eq!(ModelAnnouncement::parse_json(&bytes).unwrap(), a);
        let bad = serde_json::to_vec(&ModelAnnouncement { version: "../x".into(), ..a.clone() }).unwrap();
        assert!(ModelAnnouncement::parse_json(&bad).unwrap_err().contains("version"));
        let bad = serde_json::to_vec(&ModelAnnouncement { manifest_sha256: "XYZ".into(), ..a }).unwrap();
        assert!(ModelAnnouncement::parse_json(&bad).unwrap_err().contains("sha256"));

        let d = DeadLetter::new("field `ts`: bad", "http", NOW, &[0xff, 0x00]);
        assert_eq!(d.original_hex.as_deref(), Some("ff00"));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<DeadLetter>(&json).unwrap(), d);
        assert_eq!(DeadLetter::new("r", "replay", NOW, b"{}").original.as_deref(), Some("{}"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Event::parse_json(&bytes, NOW, &EventLimits::default());
            let _ = ModelAnnouncement::parse_json(&bytes);
        }

        #[test]
        fn valid_events_round_trip(
            user in "[A-Za-z0-9._:-]{1,64}",
            item in 0u64..u64::MAX,
            kind in 0usize..3,
            ts in 1_262_304_000_000i64..NOW,
            revenue in proptest::option::of(0.0f64..1e6),
        ) {
            let kind = EventKind::ALL[kind];
            let mut v = serde_json::json!({"user_id": user, "item_id": item, "event": kind.as_str(), "ts": ts});
            if kind == EventKind::Transaction {
                if let Some(r) = revenue {
                    v["revenue"] = serde_json::json!(r);
                }
            }
            let e = Event::from_value(&v, NOW, &EventLimits::default()).unwrap();
            prop_assert_eq!(e.item_id.as_str(), item.to_string());
            let again = Event::parse_json(&serde_json::to_vec(&e).unwrap(), NOW, &EventLimits::default()).unwrap();
            prop_assert_eq!(again, e);
        }
    }
}

#[cfg(test)]
mod json_schema_tests {
    //! The published JSON Schema documents (`schemas/json/`) are written by hand;
    //! these tests keep them in step with the Rust types.

    use serde_json::Value;

    fn schema(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json").join(name);
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn properties(s: &Value) -> Vec<String> {
        let mut v: Vec<String> = s["properties"].as_object().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    fn serialized_fields(v: &impl serde::Serialize) -> Vec<String> {
        let mut f: Vec<String> = serde_json::to_value(v).unwrap().as_object().unwrap().keys().cloned().collect();
        f.sort();
        f
    }

    #[test]
    fn event_schema_lists_exactly_the_accepted_fields() {
        let s = schema("event.schema.json");
        let mut want: Vec<String> = super::FIELDS.iter().map(|f| f.to_string()).collect();
        want.sort();
        assert_eq!(properties(&s), want);
        assert_eq!(s["additionalProperties"], false);
        let kinds: Vec<&str> =
            s["properties"]["event"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(kinds, crate::EventKind::ALL.map(|k| k.as_str()).to_vec());
        assert_eq!(s["properties"]["ts"]["minimum"], super::EventLimits::default().min_ts);
    }

    #[test]
    fn record_schemas_match_what_the_types_serialise() {
        let imp = super::Impression {
            rec_id: crate::ItemId::parse("r").unwrap(),
            ts: 1,
            user_id: crate::UserId::parse("u").unwrap(),
            items: vec![],
            variant: super::Variant::Popular,
            model_version: "v".into(),
            source: super::Source::Popular,
        };
        assert_eq!(properties(&schema("impression.schema.json")), serialized_fields(&imp));
        let ann = super::ModelAnnouncement {
            version: "v".into(),
            path: "p".into(),
            manifest_sha256: "0".repeat(64),
            created_at: "t".into(),
        };
        assert_eq!(properties(&schema("model_announcement.schema.json")), serialized_fields(&ann));
        let mut dl = serialized_fields(&super::DeadLetter::new("r", "http", 1, b"x"));
        dl.push("original_hex".into());
        dl.sort();
        assert_eq!(properties(&schema("dead_letter.schema.json")), dl);
    }
}
