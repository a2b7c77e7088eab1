//! Storefront events: the [`EventKind`] vocabulary and the [`Event`] record of
//! topic `recsys.events`.
//!
//! An [`Event`] comes from untrusted producers (the HTTP API, a CSV replay, or a
//! storefront writing to Kafka directly), so it is parsed exactly once, here, into
//! a type whose invariants cannot be broken afterwards: its fields are private,
//! ids are validated newtypes, `revenue` is a [`Revenue`], and purchase data can
//! only sit on a transaction. Every rejection is an [`EventError`] whose `Display`
//! names the field; that text is what the HTTP client is told and what the
//! dead-letter topic records, so it is written for the person who sent the event.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::id::{IdError, ItemId, RecId, TransactionId, UserId};

/// What a visitor did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
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

/// 2010-01-01T00:00:00Z in epoch milliseconds: the default earliest event time.
/// Older timestamps are almost always seconds sent where milliseconds belong
/// (`1433221332` is January 1970 in ms), so they are refused rather than stored.
pub const DEFAULT_MIN_TS: i64 = 1_262_304_000_000;

/// Largest accepted `revenue`. No single order is worth a billion in any
/// currency; a larger value is a unit mix-up (cents, or a serialised id) and
/// would swamp the revenue counters of a whole A/B arm.
pub const MAX_REVENUE: f64 = 1e9;

/// The accepted event-time window, relative to the receiver's clock.
///
/// Events outside it are rejected, not clamped: a client with a wrong clock
/// must be visible in the dead-letter topic, not silently rewritten. The
/// window is configurable because replaying an old log needs a lower
/// `min_ts`; the published JSON Schema states the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLimits {
    /// Earliest accepted `ts` (epoch ms). Default [`DEFAULT_MIN_TS`] (2010-01-01).
    pub min_ts: i64,
    /// How far past the receiver's clock `ts` may be, in ms. Default one day:
    /// storefront clocks drift, but not by more than that.
    pub max_future_ms: i64,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits { min_ts: DEFAULT_MIN_TS, max_future_ms: 86_400_000 }
    }
}

/// Why a `ts` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("must be an integer number of epoch milliseconds")]
    NotAnInteger,
    #[error("{0} is out of range for epoch milliseconds")]
    OutOfRange(String),
    #[error("{ts} is before {min_ts}, the earliest accepted time (epoch ms; seconds sent instead of milliseconds?)")]
    TooEarly { ts: i64, min_ts: i64 },
    #[error("{ts} is more than {max_future_ms} ms ahead of the receiver's clock ({now_ms})")]
    InFuture { ts: i64, now_ms: i64, max_future_ms: i64 },
}

/// Why a `revenue` was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RevenueError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("{0} is negative")]
    Negative(f64),
    #[error("{0:e} is larger than the maximum {MAX_REVENUE:e}")]
    TooLarge(f64),
}

/// Why an event was rejected. The `Display` text names the field and is what the
/// producer sees (HTTP response, dead-letter record), so it never includes more
/// than 64 characters of anything the producer sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("an event must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    #[error("unknown field `{0}`; expected ts, user_id, item_id, event, transaction_id, revenue, rec_id")]
    UnknownField(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` must not be null")]
    Null(&'static str),
    #[error("field `{field}`: {error}")]
    Id { field: &'static str, error: IdError },
    #[error("field `{field}` must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("field `event`: {0}")]
    Kind(ParseEventKindError),
    #[error("field `ts`: {0}")]
    Timestamp(TimestampError),
    #[error("field `revenue`: {0}")]
    Revenue(RevenueError),
    #[error("field `{field}` is only allowed on transactions, not on {kind}")]
    OnlyOnTransactions { field: &'static str, kind: EventKind },
}

impl EventError {
    /// The stable machine code of the failure: the `code` of a rejected item
    /// in ingest's answers, the dead letters' reason class, the metrics'
    /// `reason` label, the trainer's count of invalid topic messages
    /// (docs/design.md §3 lists them).
    pub fn code(&self) -> &'static str {
        match self {
            EventError::Json(_) => "invalid_json",
            EventError::NotAnObject(_) => "not_an_object",
            EventError::DuplicateField(_) => "duplicate_field",
            EventError::UnknownField(_) => "unknown_field",
            EventError::Missing(_) => "missing_field",
            EventError::Null(_) => "null_field",
            EventError::Id { .. } => "invalid_id",
            EventError::WrongType { .. } => "wrong_type",
            EventError::Kind(_) => "invalid_event_kind",
            EventError::Timestamp(_) => "invalid_ts",
            EventError::Revenue(_) => "invalid_revenue",
            EventError::OnlyOnTransactions { .. } => "transaction_field_on_non_transaction",
        }
    }
}

/// A purchase amount, in the storefront's currency: finite, `0 ..= MAX_REVENUE`.
/// `-0.0` is stored as `0.0`, so equal amounts serialise identically.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Revenue(f64);

impl Revenue {
    /// Checks an amount.
    pub fn new(v: f64) -> Result<Revenue, RevenueError> {
        if !v.is_finite() {
            Err(RevenueError::NotFinite)
        } else if v < 0.0 {
            Err(RevenueError::Negative(v))
        } else if v > MAX_REVENUE {
            Err(RevenueError::TooLarge(v))
        } else {
            Ok(Revenue(v + 0.0)) // -0.0 + 0.0 == +0.0
        }
    }

    /// The amount.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Revenue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Revenue::new(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl JsonSchema for Revenue {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Revenue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number", "minimum": 0, "maximum": MAX_REVENUE })
    }
}

/// A storefront event on topic `recsys.events` (Kafka key = `user_id`, so one
/// user's events stay in one partition, in order). Ids may be sent as
/// non-negative integers and are normalised to strings; a null optional field
/// is the same as an absent one; unknown and duplicate fields are rejected;
/// `transaction_id` and `revenue` are only allowed on transactions. `ts` must
/// be at or after 2010-01-01 and at most one day ahead of the receiver's clock
/// (the receiver may configure another window).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = purchase_fields_only_on_transactions)]
pub struct Event {
    /// Event time in epoch milliseconds; absent or null means the time the event
    /// was received.
    #[schemars(with = "Option<i64>", range(min = DEFAULT_MIN_TS, max = i64::MAX))]
    ts: i64,
    /// The visitor.
    user_id: UserId,
    /// The item viewed, added to the cart or bought.
    item_id: ItemId,
    /// What the visitor did.
    event: EventKind,
    /// The order id (transactions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<TransactionId>,
    /// The amount paid for this item, at least 0 (transactions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    revenue: Option<Revenue>,
    /// The `rec_id` of the recommendation response this event follows, if any;
    /// it attributes the event to that response directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    rec_id: Option<RecId>,
}

/// Adds what a per-field schema cannot say: on any event other than a
/// transaction, `transaction_id` and `revenue` must be absent or null.
fn purchase_fields_only_on_transactions(schema: &mut Schema) {
    schema.insert(
        "if".into(),
        serde_json::json!({ "properties": { "event": { "const": EventKind::Transaction.as_str() } } }),
    );
    schema.insert(
        "else".into(),
        serde_json::json!({
            "properties": { "transaction_id": { "type": "null" }, "revenue": { "type": "null" } }
        }),
    );
}

/// The fields an event may carry, in canonical order.
pub const EVENT_FIELDS: [&str; 7] = ["ts", "user_id", "item_id", "event", "transaction_id", "revenue", "rec_id"];

/// At most this many characters of producer input are echoed in a reason.
const ECHO_CHARS: usize = 64;

/// A bounded, escaped copy of producer text for an error message.
pub(crate) fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(ECHO_CHARS).flat_map(char::escape_debug).collect();
    if s.chars().nth(ECHO_CHARS).is_some() {
        out.push('…');
    }
    out
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON document's top level, read without losing what a `Value` would hide:
/// whether an object repeated a key (serde_json keeps the last silently, so
/// `{"event":"view","event":"transaction"}` would be ambiguous).
pub(crate) enum TopLevel {
    Object { fields: Map<String, Value>, duplicate: Option<String> },
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut fields = Map::new();
                let mut duplicate = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    if fields.contains_key(&key) {
                        duplicate.get_or_insert(key);
                    } else {
                        fields.insert(key, value);
                    }
                }
                Ok(TopLevel::Object { fields, duplicate })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("an array"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other("null"))
            }
        }
        d.deserialize_any(V)
    }
}

/// One element of a JSON array of records (see [`Event::parse_json_batch`];
/// item updates use it too, with their own types).
#[derive(Debug)]
pub struct BatchItem<'a, T = Event, E = EventError> {
    /// Position in the array: what ingest reports back with a rejection.
    pub index: usize,
    /// The element's JSON text exactly as received: what a dead letter keeps.
    pub raw: &'a str,
    /// The parsed record, or why it was rejected.
    pub result: Result<T, E>,
}

/// Splits a request body holding one JSON value or an array of them into
/// its elements' text, with their indices and each parsed by `parse`; `Err`
/// (serde's message) only when the body is not JSON at all.
pub(crate) fn split_batch<'a, T, E>(
    body: &'a [u8],
    parse: impl Fn(&'a str) -> Result<T, E>,
) -> Result<Vec<BatchItem<'a, T, E>>, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let elements: Vec<&'a RawValue> = if first == Some(&b'[') {
        serde_json::from_slice(body).map_err(|e| e.to_string())?
    } else {
        vec![serde_json::from_slice(body).map_err(|e| e.to_string())?]
    };
    Ok(elements
        .into_iter()
        .enumerate()
        .map(|(index, raw)| BatchItem { index, raw: raw.get(), result: parse(raw.get()) })
        .collect())
}

/// Reads a `ts` field (an event's or an item update's): absent or null is
/// `now_ms`; the value must be an integer inside the window of `limits`.
pub(crate) fn read_ts(v: Option<&Value>, now_ms: i64, limits: &EventLimits) -> Result<i64, TimestampError> {
    let ts = match v {
        None | Some(Value::Null) => now_ms,
        Some(Value::Number(n)) => match (n.as_i64(), n.is_u64()) {
            (Some(ts), _) => ts,
            (None, true) => return Err(TimestampError::OutOfRange(n.to_string())),
            (None, false) => return Err(TimestampError::NotAnInteger),
        },
        Some(_) => return Err(TimestampError::NotAnInteger),
    };
    if ts < limits.min_ts {
        return Err(TimestampError::TooEarly { ts, min_ts: limits.min_ts });
    }
    if ts > now_ms.saturating_add(limits.max_future_ms) {
        return Err(TimestampError::InFuture { ts, now_ms, max_future_ms: limits.max_future_ms });
    }
    Ok(ts)
}

/// Reads an optional id field: absent and null are both "not given".
fn opt_id<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    parse: fn(&Value) -> Result<T, IdError>,
) -> Result<Option<T>, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some).map_err(|error| EventError::Id { field, error }),
    }
}

/// Reads a required id field.
fn req_id<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    parse: fn(&Value) -> Result<T, IdError>,
) -> Result<T, EventError> {
    match obj.get(field) {
        None => Err(EventError::Missing(field)),
        Some(Value::Null) => Err(EventError::Null(field)),
        Some(v) => parse(v).map_err(|error| EventError::Id { field, error }),
    }
}

impl Event {
    /// An event built from trusted parts (e.g. a CSV row already parsed into
    /// ids). No time window is applied: that is a policy for untrusted input.
    pub fn new(ts: i64, user_id: UserId, item_id: ItemId, kind: EventKind) -> Event {
        Event { ts, user_id, item_id, event: kind, transaction_id: None, revenue: None, rec_id: None }
    }

    /// Adds the purchase details; only a transaction may carry them.
    pub fn with_purchase(
        mut self,
        transaction_id: Option<TransactionId>,
        revenue: Option<Revenue>,
    ) -> Result<Event, EventError> {
        if self.event != EventKind::Transaction {
            let field = if transaction_id.is_some() { "transaction_id" } else { "revenue" };
            if transaction_id.is_some() || revenue.is_some() {
                return Err(EventError::OnlyOnTransactions { field, kind: self.event });
            }
        }
        self.transaction_id = transaction_id;
        self.revenue = revenue;
        Ok(self)
    }

    /// Marks the event as following the recommendation response `rec_id`.
    pub fn with_rec_id(mut self, rec_id: RecId) -> Event {
        self.rec_id = Some(rec_id);
        self
    }

    /// Parses one event from JSON bytes with the default [`EventLimits`].
    ///
    /// `now_ms` is the receiver's clock (ingest: arrival time; a Kafka consumer:
    /// the message timestamp). It stands in for an absent `ts` and anchors the
    /// "not in the future" check.
    pub fn parse_json(bytes: &[u8], now_ms: i64) -> Result<Event, EventError> {
        Self::parse_json_with(bytes, now_ms, &EventLimits::default())
    }

    /// [`Event::parse_json`] with an explicit time window.
    pub fn parse_json_with(bytes: &[u8], now_ms: i64, limits: &EventLimits) -> Result<Event, EventError> {
        match serde_json::from_slice::<TopLevel>(bytes) {
            Err(e) => Err(EventError::Json(e.to_string())),
            Ok(TopLevel::Other(kind)) => Err(EventError::NotAnObject(kind)),
            Ok(TopLevel::Object { duplicate: Some(key), .. }) => Err(EventError::DuplicateField(echo(&key))),
            Ok(TopLevel::Object { fields, duplicate: None }) => Self::from_object(&fields, now_ms, limits),
        }
    }

    /// Parses one event from an already-parsed JSON value with the default
    /// [`EventLimits`]. A `Value` cannot tell whether its source repeated a key
    /// (the last one won); prefer [`Event::parse_json`] or
    /// [`Event::parse_json_batch`] on raw input, which reject duplicates.
    pub fn from_value(value: &Value, now_ms: i64) -> Result<Event, EventError> {
        Self::from_value_with(value, now_ms, &EventLimits::default())
    }

    /// [`Event::from_value`] with an explicit time window.
    pub fn from_value_with(value: &Value, now_ms: i64, limits: &EventLimits) -> Result<Event, EventError> {
        match value {
            Value::Object(fields) => Self::from_object(fields, now_ms, limits),
            other => Err(EventError::NotAnObject(json_type(other))),
        }
    }

    /// Parses a request body holding one event object or a JSON array of them.
    ///
    /// Returns `Err` only when the body is not JSON at all (nothing can be
    /// attributed to an element); otherwise one [`BatchItem`] per element (one
    /// for a non-array body), each with its index, its original text and its
    /// own result, so a batch is never rejected for one bad element.
    pub fn parse_json_batch<'a>(
        body: &'a [u8],
        now_ms: i64,
        limits: &EventLimits,
    ) -> Result<Vec<BatchItem<'a>>, EventError> {
        split_batch(body, |raw| Self::parse_json_with(raw.as_bytes(), now_ms, limits)).map_err(EventError::Json)
    }

    fn from_object(obj: &Map<String, Value>, now_ms: i64, limits: &EventLimits) -> Result<Event, EventError> {
        if let Some(k) = obj.keys().find(|k| !EVENT_FIELDS.contains(&k.as_str())) {
            return Err(EventError::UnknownField(echo(k)));
        }
        let user_id = req_id(obj, "user_id", UserId::from_json)?;
        let item_id = req_id(obj, "item_id", ItemId::from_json)?;
        let event = match obj.get("event") {
            None => return Err(EventError::Missing("event")),
            Some(Value::Null) => return Err(EventError::Null("event")),
            Some(Value::String(s)) => {
                EventKind::from_str(s).map_err(|_| EventError::Kind(ParseEventKindError(echo(s))))?
            }
            Some(_) => return Err(EventError::WrongType { field: "event", expected: "a string" }),
        };
        let ts = read_ts(obj.get("ts"), now_ms, limits).map_err(EventError::Timestamp)?;
        let revenue = match obj.get("revenue") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                // Without arbitrary precision every JSON number has an f64 view.
                let r = n.as_f64().ok_or(EventError::Revenue(RevenueError::NotFinite))?;
                Some(Revenue::new(r).map_err(EventError::Revenue)?)
            }
            Some(_) => return Err(EventError::WrongType { field: "revenue", expected: "a number" }),
        };
        let transaction_id = opt_id(obj, "transaction_id", TransactionId::from_json)?;
        let rec_id = opt_id(obj, "rec_id", RecId::from_json)?;
        Event::new(ts, user_id, item_id, event).with_purchase(transaction_id, revenue).map(|e| match rec_id {
            Some(r) => e.with_rec_id(r),
            None => e,
        })
    }

    /// Event time, epoch ms (the receiver's time when the producer sent none).
    pub fn ts(&self) -> i64 {
        self.ts
    }

    /// The visitor.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The item.
    pub fn item_id(&self) -> &ItemId {
        &self.item_id
    }

    /// What the visitor did (the wire field `event`).
    pub fn kind(&self) -> EventKind {
        self.event
    }

    /// The order id, on transactions that carried one.
    pub fn transaction_id(&self) -> Option<&TransactionId> {
        self.transaction_id.as_ref()
    }

    /// The amount paid, on transactions that carried one.
    pub fn revenue(&self) -> Option<Revenue> {
        self.revenue
    }

    /// The recommendation response this event follows, if the storefront said so.
    pub fn rec_id(&self) -> Option<&RecId> {
        self.rec_id.as_ref()
    }

    /// The Kafka key: the user id, so one user's events stay in one partition, in order.
    pub fn key(&self) -> &[u8] {
        self.user_id.as_str().as_bytes()
    }

    /// The canonical JSON form: ids as strings, `ts` always present, absent
    /// optional fields omitted. It parses back to an equal event.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Event has string keys and finite numbers only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(s: &str) -> Result<Event, EventError> {
        Event::parse_json(s.as_bytes(), NOW)
    }

    #[test]
    fn kind_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            assert_eq!(EventKind::from_bytes(k.as_str().as_bytes()), Some(k));
            assert_eq!(EventKind::ALL[k.index()], k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
        assert!("click".parse::<EventKind>().is_err());
        assert!("View".parse::<EventKind>().is_err());
        assert!(!EventKind::View.is_conversion());
        assert!(EventKind::AddToCart.is_conversion() && EventKind::Transaction.is_conversion());
    }

    #[test]
    fn accepts_the_documented_shape_and_normalises_ids() {
        let e = parse(r#"{"ts": 1433221332117, "user_id": 257597, "item_id": "355908", "event": "view"}"#).unwrap();
        assert_eq!(e.ts(), 1433221332117);
        assert_eq!(e.user_id().as_str(), "257597");
        assert_eq!(e.item_id().as_str(), "355908");
        assert_eq!(e.kind(), EventKind::View);
        assert_eq!(e.key(), b"257597");
        assert_eq!(e.to_json(), br#"{"ts":1433221332117,"user_id":"257597","item_id":"355908","event":"view"}"#);

        let t = parse(
            r#"{"user_id": "0", "item_id": 1, "event": "transaction", "transaction_id": 4000,
                "revenue": 12.5, "rec_id": "r-1"}"#,
        )
        .unwrap();
        assert_eq!(t.ts(), NOW, "absent ts is the receiver's time");
        assert_eq!(t.transaction_id().map(TransactionId::as_str), Some("4000"));
        assert_eq!(t.revenue().map(Revenue::get), Some(12.5));
        assert_eq!(t.rec_id().map(RecId::as_str), Some("r-1"));
        assert_eq!(
            t.to_json(),
            format!(
                r#"{{"ts":{NOW},"user_id":"0","item_id":"1","event":"transaction","transaction_id":"4000","revenue":12.5,"rec_id":"r-1"}}"#
            )
            .as_bytes()
        );
    }

    #[test]
    fn accept_table() {
        let day = EventLimits::default().max_future_ms;
        let cases: &[(&str, &str)] = &[
            // (input, canonical output)
            (
                r#"{"user_id":"u","item_id":"i","event":"addtocart","ts":null,"rec_id":null}"#,
                &format!(r#"{{"ts":{NOW},"user_id":"u","item_id":"i","event":"addtocart"}}"#),
            ),
            (
                r#"{"user_id":"u","item_id":"i","event":"view","revenue":null,"transaction_id":null}"#,
                &format!(r#"{{"ts":{NOW},"user_id":"u","item_id":"i","event":"view"}}"#),
            ),
            (
                &format!(r#"{{"ts":{},"user_id":"u","item_id":"i","event":"view"}}"#, NOW + day),
                &format!(r#"{{"ts":{},"user_id":"u","item_id":"i","event":"view"}}"#, NOW + day),
            ),
            (
                &format!(r#"{{"ts":{DEFAULT_MIN_TS},"user_id":"u","item_id":"i","event":"view"}}"#),
                &format!(r#"{{"ts":{DEFAULT_MIN_TS},"user_id":"u","item_id":"i","event":"view"}}"#),
            ),
            (
                r#"{"ts":1433221332117,"user_id":"u","item_id":"i","event":"transaction","revenue":-0.0}"#,
                r#"{"ts":1433221332117,"user_id":"u","item_id":"i","event":"transaction","revenue":0.0}"#,
            ),
            (
                r#"{"ts":1433221332117,"user_id":"u","item_id":"i","event":"transaction","revenue":1000000000}"#,
                r#"{"ts":1433221332117,"user_id":"u","item_id":"i","event":"transaction","revenue":1000000000.0}"#,
            ),
            (
                " \n{\"ts\":1433221332117,\"user_id\":\"a.b_c:d-E\",\"item_id\":0,\"event\":\"transaction\",\"transaction_id\":\"T-1\"}\t",
                r#"{"ts":1433221332117,"user_id":"a.b_c:d-E","item_id":"0","event":"transaction","transaction_id":"T-1"}"#,
            ),
        ];
        for (input, canonical) in cases {
            let e = parse(input).unwrap_or_else(|err| panic!("{input}: {err}"));
            assert_eq!(String::from_utf8(e.to_json()).unwrap(), *canonical, "{input}");
            assert_eq!(parse(canonical).unwrap(), e, "canonical form of {input} parses back");
        }
    }

    #[test]
    fn reject_table_names_the_field() {
        let long = "x".repeat(500);
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "not valid JSON"),
            ("".into(), "not valid JSON"),
            (r#"{"user_id":"u","item_id":"i","event":"view"} x"#.into(), "not valid JSON"),
            ("\u{feff}{}".into(), "not valid JSON"),
            ("[1]".into(), "must be a JSON object, not an array"),
            ("\"view\"".into(), "must be a JSON object, not a string"),
            ("null".into(), "must be a JSON object, not null"),
            (r#"{"user_id":"u","user_id":"v","item_id":"i","event":"view"}"#.into(), "duplicate field `user_id`"),
            (r#"{"item_id":"1","event":"view"}"#.into(), "missing field `user_id`"),
            (r#"{"user_id":"u","event":"view"}"#.into(), "missing field `item_id`"),
            (r#"{"user_id":"u","item_id":"1"}"#.into(), "missing field `event`"),
            (r#"{"user_id":null,"item_id":"1","event":"view"}"#.into(), "field `user_id` must not be null"),
            (r#"{"user_id":"u","item_id":"1","event":null}"#.into(), "field `event` must not be null"),
            (r#"{"user_id":"u","item_id":"1","event":"click"}"#.into(), "field `event`: unknown event type \"click\""),
            (r#"{"user_id":"u","item_id":"1","event":"View"}"#.into(), "field `event`: unknown event type"),
            (r#"{"user_id":"u","item_id":"1","event":1}"#.into(), "field `event` must be a string"),
            (r#"{"user_id":"u v","item_id":"1","event":"view"}"#.into(), "field `user_id`: id contains ' '"),
            (r#"{"user_id":"","item_id":"1","event":"view"}"#.into(), "field `user_id`: id is empty"),
            (
                format!(r#"{{"user_id":"u","item_id":"{long}","event":"view"}}"#),
                "field `item_id`: id is 500 characters",
            ),
            (
                r#"{"user_id":-1,"item_id":"1","event":"view"}"#.into(),
                "field `user_id`: id must be a string or a non-negative",
            ),
            (r#"{"user_id":1.5,"item_id":"1","event":"view"}"#.into(), "field `user_id`"),
            (r#"{"user_id":"u","item_id":["1"],"event":"view"}"#.into(), "field `item_id`"),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","ts":"yesterday"}"#.into(),
                "field `ts`: must be an integer",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","ts":1433221332117.5}"#.into(),
                "field `ts`: must be an integer",
            ),
            (r#"{"user_id":"u","item_id":"1","event":"view","ts":1.4e12}"#.into(), "field `ts`: must be an integer"),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","ts":1433221332}"#.into(),
                "field `ts`: 1433221332 is before",
            ),
            (r#"{"user_id":"u","item_id":"1","event":"view","ts":-5}"#.into(), "field `ts`: -5 is before"),
            (
                format!(r#"{{"user_id":"u","item_id":"1","event":"view","ts":{}}}"#, NOW + 86_400_001),
                "field `ts`: 1700086400001 is more than 86400000 ms ahead",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","ts":18446744073709551615}"#.into(),
                "field `ts`: 18446744073709551615 is out of range",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":-1}"#.into(),
                "field `revenue`: -1 is negative",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":1e300}"#.into(),
                "field `revenue`: 1e300 is larger than the maximum 1e9",
            ),
            (r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":1e400}"#.into(), "not valid JSON"),
            (
                r#"{"user_id":"u","item_id":"1","event":"transaction","revenue":"12.5"}"#.into(),
                "field `revenue` must be a number",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","revenue":3}"#.into(),
                "field `revenue` is only allowed on transactions, not on view",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"addtocart","transaction_id":"t"}"#.into(),
                "field `transaction_id` is only allowed on transactions, not on addtocart",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"transaction","transaction_id":"t t"}"#.into(),
                "field `transaction_id`: id contains",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","rec_id":7}"#.into(),
                "field `rec_id`: id must be a string",
            ),
            (
                r#"{"user_id":"u","item_id":"1","event":"view","rec_id":"a/b"}"#.into(),
                "field `rec_id`: id contains '/'",
            ),
            (r#"{"user_id":"u","item_id":"1","event":"view","price":3}"#.into(), "unknown field `price`"),
            (r#"{"user_id":"u","item_id":"1","event":"view","Ts":3}"#.into(), "unknown field `Ts`"),
            (format!(r#"{{"user_id":"u","item_id":"1","event":"view","{long}":3}}"#), "unknown field `xxxxxxxx"),
        ];
        for (input, want) in &cases {
            let err = parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
            assert!(err.len() < 400, "reason echoes too much input: {err}");
        }
    }

    #[test]
    fn reasons_escape_and_bound_what_they_echo() {
        let err = parse(&format!(r#"{{"user_id":"u","item_id":"1","event":"{}\n"}}"#, "y".repeat(300))).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n') && text.contains('…') && text.len() < 200, "{text}");
        let err = parse("{\"a\\nb\":1}").unwrap_err().to_string();
        assert!(err.contains(r"unknown field `a\nb`"), "{err}");
    }

    #[test]
    fn limits_are_configurable() {
        let old = r#"{"ts": 946684800000, "user_id": "u", "item_id": "i", "event": "view"}"#; // 2000-01-01
        assert!(parse(old).is_err());
        let limits = EventLimits { min_ts: 0, max_future_ms: 0 };
        assert_eq!(Event::parse_json_with(old.as_bytes(), NOW, &limits).unwrap().ts(), 946684800000);
        let ahead = format!(r#"{{"ts": {}, "user_id": "u", "item_id": "i", "event": "view"}}"#, NOW + 1);
        assert!(parse(&ahead).is_ok());
        let err = Event::parse_json_with(ahead.as_bytes(), NOW, &limits).unwrap_err();
        assert!(matches!(err, EventError::Timestamp(TimestampError::InFuture { .. })), "{err}");
        let limits: EventLimits = serde_json::from_str(r#"{"min_ts": 5}"#).unwrap();
        assert_eq!(limits, EventLimits { min_ts: 5, ..EventLimits::default() });
        assert!(serde_json::from_str::<EventLimits>(r#"{"min": 5}"#).is_err());
    }

    #[test]
    fn values_parse_like_bytes() {
        let v = json!({"user_id": 3, "item_id": "i", "event": "transaction", "revenue": 2});
        let e = Event::from_value(&v, NOW).unwrap();
        assert_eq!(e, parse(&v.to_string()).unwrap());
        assert_eq!(e.revenue(), Some(Revenue::new(2.0).unwrap()));
        assert_eq!(Event::from_value(&json!([1]), NOW).unwrap_err(), EventError::NotAnObject("an array"));
        let limits = EventLimits { min_ts: 0, max_future_ms: 0 };
        assert!(Event::from_value_with(&json!({"user_id": 3, "item_id": "i", "event": "view", "ts": 1}), NOW, &limits)
            .is_ok());
    }

    #[test]
    fn batches_report_each_element_with_its_index_and_text() {
        let body = br#" [ {"user_id":1,"item_id":2,"event":"view"},
                        {"user_id":1,"item_id":2,"event":"click"}, 7,
                        {"user_id":1,"item_id":2,"event":"view","event":"transaction"} ] "#;
        let items = Event::parse_json_batch(body, NOW, &EventLimits::default()).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(items[0].result.as_ref().unwrap().user_id().as_str(), "1");
        assert_eq!(items[1].raw, r#"{"user_id":1,"item_id":2,"event":"click"}"#);
        assert!(items[1].result.as_ref().unwrap_err().to_string().contains("unknown event type"));
        assert_eq!(items[2].raw, "7");
        assert_eq!(items[2].result, Err(EventError::NotAnObject("a number")));
        assert_eq!(items[3].result, Err(EventError::DuplicateField("event".into())));

        let one = Event::parse_json_batch(
            b" {\"user_id\":1,\"item_id\":2,\"event\":\"view\"}\n",
            NOW,
            &EventLimits::default(),
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].index, one[0].raw), (0, r#"{"user_id":1,"item_id":2,"event":"view"}"#));
        assert!(one[0].result.is_ok());

        assert!(Event::parse_json_batch(b"[]", NOW, &EventLimits::default()).unwrap().is_empty());
        assert_eq!(
            Event::parse_json_batch(b"5", NOW, &EventLimits::default()).unwrap()[0].result,
            Err(EventError::NotAnObject("a number"))
        );
        for bad in [&b"[{}"[..], b"", b"{\"a\":", b"[1,]", b"\xff"] {
            assert!(matches!(Event::parse_json_batch(bad, NOW, &EventLimits::default()), Err(EventError::Json(_))));
        }
    }

    #[test]
    fn constructors_keep_the_invariants() {
        let u = UserId::from_u64(1);
        let i = ItemId::from_u64(2);
        let view = Event::new(5, u.clone(), i.clone(), EventKind::View);
        let err = view.clone().with_purchase(None, Some(Revenue::new(1.0).unwrap())).unwrap_err();
        assert_eq!(err.to_string(), "field `revenue` is only allowed on transactions, not on view");
        let err = view.clone().with_purchase(Some(TransactionId::from_u64(9)), None).unwrap_err();
        assert!(err.to_string().starts_with("field `transaction_id`"));
        assert_eq!(view.clone().with_purchase(None, None).unwrap(), view);
        let t = Event::new(5, u, i, EventKind::Transaction)
            .with_purchase(Some(TransactionId::from_u64(9)), Some(Revenue::new(3.25).unwrap()))
            .unwrap()
            .with_rec_id(RecId::parse("r").unwrap());
        assert_eq!(t.revenue().map(Revenue::get), Some(3.25));
        assert_eq!(t.rec_id().map(RecId::as_str), Some("r"));
    }

    #[test]
    fn revenue_bounds() {
        assert_eq!(Revenue::new(f64::NAN), Err(RevenueError::NotFinite));
        assert_eq!(Revenue::new(f64::INFINITY), Err(RevenueError::NotFinite));
        assert_eq!(Revenue::new(-0.01), Err(RevenueError::Negative(-0.01)));
        assert_eq!(Revenue::new(MAX_REVENUE * 1.0000001), Err(RevenueError::TooLarge(MAX_REVENUE * 1.0000001)));
        assert_eq!(Revenue::new(-0.0).unwrap().get().to_bits(), 0.0f64.to_bits());
        assert_eq!(serde_json::from_str::<Revenue>("12.5").unwrap().get(), 12.5);
        assert!(serde_json::from_str::<Revenue>("-1").unwrap_err().to_string().contains("negative"));
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        let id = "[A-Za-z0-9._:-]{1,64}";
        (
            DEFAULT_MIN_TS..=NOW + 86_400_000,
            prop_oneof![id.prop_map(|s| UserId::parse(&s).unwrap()), any::<u64>().prop_map(UserId::from_u64)],
            prop_oneof![id.prop_map(|s| ItemId::parse(&s).unwrap()), any::<u64>().prop_map(ItemId::from_u64)],
            0usize..3,
            proptest::option::of(id.prop_map(|s| TransactionId::parse(&s).unwrap())),
            proptest::option::of(prop_oneof![
                0.0..=MAX_REVENUE,
                (0u64..1_000_000_000).prop_map(|c| c as f64 / 100.0),
                Just(0.0)
            ]),
            proptest::option::of(id.prop_map(|s| RecId::parse(&s).unwrap())),
        )
            .prop_map(|(ts, user, item, kind, tid, revenue, rec)| {
                let kind = EventKind::ALL[kind];
                let mut e = Event::new(ts, user, item, kind);
                if kind == EventKind::Transaction {
                    e = e.with_purchase(tid, revenue.map(|r| Revenue::new(r).unwrap())).unwrap();
                }
                match rec {
                    Some(r) => e.with_rec_id(r),
                    None => e,
                }
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Event::parse_json(&bytes, NOW);
            let _ = Event::parse_json_batch(&bytes, NOW, &EventLimits::default());
        }

        #[test]
        fn json_shaped_noise_never_panics(s in r#"[\[\]{}",:0-9a-z_ .eE+-]{0,200}"#) {
            let _ = Event::parse_json(s.as_bytes(), NOW);
            let _ = Event::parse_json_batch(s.as_bytes(), NOW, &EventLimits::default());
        }

        #[test]
        fn valid_events_round_trip(e in arb_event()) {
            let json = e.to_json();
            let back = Event::parse_json(&json, NOW).unwrap();
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(back.to_json(), json, "canonical form is a fixed point");
            let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
            prop_assert_eq!(Event::from_value(&v, NOW).unwrap(), e);
        }

        #[test]
        fn integer_ids_are_normalised(user in any::<u64>(), item in any::<u64>(), tid in any::<u64>()) {
            let v = json!({"user_id": user, "item_id": item, "event": "transaction", "transaction_id": tid, "ts": NOW});
            let e = Event::from_value(&v, NOW).unwrap();
            let as_strings = json!({"user_id": user.to_string(), "item_id": item.to_string(),
                "event": "transaction", "transaction_id": tid.to_string(), "ts": NOW});
            prop_assert_eq!(&e, &Event::from_value(&as_strings, NOW).unwrap());
            let canonical: Value = serde_json::from_slice(&e.to_json()).unwrap();
            prop_assert_eq!(canonical, as_strings);
        }

        #[test]
        fn out_of_window_times_are_rejected(ts in any::<i64>()) {
            let v = json!({"user_id": "u", "item_id": "i", "event": "view", "ts": ts});
            let ok = (DEFAULT_MIN_TS..=NOW + 86_400_000).contains(&ts);
            prop_assert_eq!(Event::from_value(&v, NOW).is_ok(), ok);
        }
    }
}
