//! Catalog changes: the [`ItemUpdate`] record of topic `recsys.items`.
//!
//! An update says what changed about one item at one time: whether it can be
//! bought (`available`), its category, its price, and free-text properties.
//! Every field but the item and the time is optional and an absent one is
//! left as it was, so the topic is a stream of patches. Ingest writes each
//! update as one record per field, keyed `{item_id}/{field}`
//! ([`ItemUpdate::records`]), so the compacted topic keeps the newest value
//! of every field of every item, and a reader that folds the records of an
//! item, newest `ts` winning per field, gets its current state.
//!
//! Updates come from untrusted producers (`PUT`/`POST /v1/items`, a replay
//! of RetailRocket's item-property files), so, like [`crate::Event`], they
//! are parsed exactly once, here, into a type whose invariants hold from
//! then on. Every rejection is an [`ItemUpdateError`] whose `Display` names
//! the field and echoes at most 64 characters of the input; that text is
//! what the producer is told and what the dead-letter topic records.
//!
//! Bounds, so one producer cannot make a record (and each consumer's copy
//! of the catalog) arbitrarily large: at most [`MAX_PROPERTIES`] properties,
//! names of 1–[`MAX_PROPERTY_NAME_CHARS`] characters, values of at most
//! [`MAX_PROPERTY_VALUE_CHARS`], no control characters in either (the values
//! end up in logs and CSV exports); a record is thus at most ~280 KB of
//! UTF-8. The names of the typed fields (`available`, `category`,
//! `categoryid`, `price`) are not property names: one fact, one place.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::event::{echo, json_type, split_batch, BatchItem, TopLevel};
use crate::{EventLimits, IdError, ItemId, Revenue, RevenueError, TimestampError, MAX_REVENUE};

/// Most properties one update may carry.
pub const MAX_PROPERTIES: usize = 64;
/// Longest property name, in characters.
pub const MAX_PROPERTY_NAME_CHARS: usize = 64;
/// Longest property value, in characters (RetailRocket's longest hashed
/// values are a few hundred).
pub const MAX_PROPERTY_VALUE_CHARS: usize = 1024;
/// Largest accepted `price`: the bound of an event's `revenue`, for the same
/// reason (a larger value is a unit mix-up, not a price).
pub const MAX_PRICE: f64 = MAX_REVENUE;

/// The fields an update may carry, in canonical order.
pub const ITEM_UPDATE_FIELDS: [&str; 6] = ["item_id", "ts", "available", "category", "price", "properties"];

/// Field names that cannot be property names: they have fields of their own.
const RESERVED_PROPERTIES: [&str; 4] = ["available", "category", "categoryid", "price"];

/// Why a property was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("{count} properties, at most {MAX_PROPERTIES} are allowed")]
    TooMany { count: usize },
    #[error("a property name is empty")]
    EmptyName,
    #[error("name `{name}` is {chars} characters long, at most {MAX_PROPERTY_NAME_CHARS} are allowed")]
    NameTooLong { name: String, chars: usize },
    #[error("`{name}` has a field of its own; send it as `{field}`")]
    Reserved { name: String, field: &'static str },
    #[error("`{name}` must be a string, not {found}")]
    NotAString { name: String, found: &'static str },
    #[error("`{name}` is {chars} characters long, at most {MAX_PROPERTY_VALUE_CHARS} are allowed")]
    ValueTooLong { name: String, chars: usize },
    #[error("`{name}` contains the control character {found:?}")]
    ControlChar { name: String, found: char },
}

/// Why an update was rejected. The `Display` text names the field and is
/// what the producer sees (HTTP response, dead-letter record).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemUpdateError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("an item update must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    #[error("unknown field `{0}`; expected item_id, ts, available, category, price, properties")]
    UnknownField(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` must not be null")]
    Null(&'static str),
    #[error("field `item_id`: {0}")]
    Id(IdError),
    #[error("field `{field}` must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("field `ts`: {0}")]
    Timestamp(TimestampError),
    #[error("field `price`: {0}")]
    Price(RevenueError),
    #[error("field `properties`: {0}")]
    Property(PropertyError),
    #[error("nothing to update: give at least one of available, category, price, properties (non-empty)")]
    NothingToUpdate,
    #[error("field `item_id` is {body:?} but the URL names item {path:?}")]
    ItemIdMismatch { path: String, body: String },
}

impl ItemUpdateError {
    /// The stable machine code of the failure ([`crate::EventError::code`]'s
    /// vocabulary: the failures the two records share have the same words).
    pub fn code(&self) -> &'static str {
        match self {
            ItemUpdateError::Json(_) => "invalid_json",
            ItemUpdateError::NotAnObject(_) => "not_an_object",
            ItemUpdateError::DuplicateField(_) => "duplicate_field",
            ItemUpdateError::UnknownField(_) => "unknown_field",
            ItemUpdateError::Missing(_) => "missing_field",
            ItemUpdateError::Null(_) => "null_field",
            ItemUpdateError::Id(_) => "invalid_id",
            ItemUpdateError::WrongType { .. } => "wrong_type",
            ItemUpdateError::Timestamp(_) => "invalid_ts",
            ItemUpdateError::Price(_) => "invalid_price",
            ItemUpdateError::Property(_) => "invalid_property",
            ItemUpdateError::NothingToUpdate => "nothing_to_update",
            ItemUpdateError::ItemIdMismatch { .. } => "item_id_mismatch",
        }
    }
}

/// A price in the storefront's currency: finite, `0 ..= MAX_PRICE` (the
/// rules of [`Revenue`], whose checks it borrows).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Price(Revenue);

impl Price {
    /// Checks an amount.
    pub fn new(v: f64) -> Result<Price, RevenueError> {
        Revenue::new(v).map(Price)
    }

    /// The amount.
    pub fn get(self) -> f64 {
        self.0.get()
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl JsonSchema for Price {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Price".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number", "minimum": 0, "maximum": MAX_PRICE })
    }
}

/// Named free-text properties, sorted by name (so equal maps serialise
/// identically), within the bounds of the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// Checks every name and value and the count.
    pub fn new(map: BTreeMap<String, String>) -> Result<Properties, PropertyError> {
        if map.len() > MAX_PROPERTIES {
            return Err(PropertyError::TooMany { count: map.len() });
        }
        for (name, value) in &map {
            check_name(name)?;
            check_value(name, value)?;
        }
        Ok(Properties(map))
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// One property's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every `(name, value)`, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

/// The rules of a property name (also what a replay checks a CSV `property` against).
pub fn check_name(name: &str) -> Result<(), PropertyError> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err(PropertyError::EmptyName);
    }
    if chars > MAX_PROPERTY_NAME_CHARS {
        return Err(PropertyError::NameTooLong { name: echo(name), chars });
    }
    if let Some(found) = control_char(name) {
        return Err(PropertyError::ControlChar { name: echo(name), found });
    }
    if let Some(&reserved) = RESERVED_PROPERTIES.iter().find(|&&r| r == name) {
        let field = if reserved == "categoryid" { "category" } else { reserved };
        return Err(PropertyError::Reserved { name: reserved.to_owned(), field });
    }
    Ok(())
}

/// The rules of a property value.
pub fn check_value(name: &str, value: &str) -> Result<(), PropertyError> {
    let chars = value.chars().count();
    if chars > MAX_PROPERTY_VALUE_CHARS {
        return Err(PropertyError::ValueTooLong { name: echo(name), chars });
    }
    if let Some(found) = control_char(value) {
        return Err(PropertyError::ControlChar { name: echo(name), found });
    }
    Ok(())
}

impl JsonSchema for Properties {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Properties".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // `\P{Cc}`: no control characters (ECMA-262 with the `u` flag).
        json_schema!({
            "type": "object",
            "maxProperties": MAX_PROPERTIES,
            "propertyNames": {
                "minLength": 1,
                "maxLength": MAX_PROPERTY_NAME_CHARS,
                "pattern": "^\\P{Cc}+$",
                "not": { "enum": RESERVED_PROPERTIES },
            },
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_PROPERTY_VALUE_CHARS,
                "pattern": "^\\P{Cc}*$",
            },
        })
    }
}

/// A change to one catalog item on topic `recsys.items` (Kafka key =
/// `item_id`, so the topic compacts to each item's latest update). Fields
/// left out (or null) are unchanged; at least one of `available`,
/// `category`, `price` and a non-empty `properties` must be given, and
/// `properties` replaces only the properties it names. The item id may be
/// sent as a non-negative integer and is normalised to a string; unknown and
/// duplicate fields are rejected. `ts` follows the rules of an event's `ts`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, transform = something_to_update)]
pub struct ItemUpdate {
    /// The item.
    item_id: ItemId,
    /// When the change happened, epoch milliseconds; absent or null means
    /// the time it was received.
    #[schemars(with = "Option<i64>", range(min = crate::DEFAULT_MIN_TS, max = i64::MAX))]
    ts: i64,
    /// Whether the item can be bought now.
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<bool>,
    /// Its category id (the ids of `category_tree.csv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<u64>,
    /// Its price, at least 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Price>,
    /// Free-text properties to set (name → value); others are unchanged.
    #[serde(skip_serializing_if = "Properties::is_empty")]
    #[schemars(with = "Option<Properties>")]
    properties: Properties,
}

/// The item a `recsys.items` key names: the part before the first `/`
/// (item ids never contain one), or the whole key when it has none.
pub fn catalog_key_item(key: &[u8]) -> &[u8] {
    key.iter().position(|&b| b == b'/').map_or(key, |i| &key[..i])
}

/// "At least one change", which per-field schemas cannot say.
fn something_to_update(schema: &mut Schema) {
    let given = |field: &str| serde_json::json!({ "required": [field], "properties": { field: { "not": { "type": "null" } } } });
    schema.insert(
        "anyOf".into(),
        serde_json::json!([
            given("available"),
            given("category"),
            given("price"),
            { "required": ["properties"], "properties": { "properties": { "type": "object", "minProperties": 1 } } },
        ]),
    );
}

impl ItemUpdate {
    /// An update built from parts already checked (a CSV row, a generator).
    /// No time window is applied: that is a policy for untrusted input.
    pub fn new(
        ts: i64,
        item_id: ItemId,
        available: Option<bool>,
        category: Option<u64>,
        price: Option<Price>,
        properties: Properties,
    ) -> Result<ItemUpdate, ItemUpdateError> {
        if available.is_none() && category.is_none() && price.is_none() && properties.is_empty() {
            return Err(ItemUpdateError::NothingToUpdate);
        }
        Ok(ItemUpdate { item_id, ts, available, category, price, properties })
    }

    /// Parses one update from JSON bytes. `now_ms` is the receiver's clock:
    /// it stands in for an absent `ts` and anchors the window of `limits`.
    pub fn parse_json(bytes: &[u8], now_ms: i64, limits: &EventLimits) -> Result<ItemUpdate, ItemUpdateError> {
        Self::parse_json_for(bytes, None, now_ms, limits)
    }

    /// [`ItemUpdate::parse_json`] of a body sent for item `path_item` (the
    /// `{id}` of `PUT /v1/items/{id}`): the body may leave `item_id` out, and
    /// one it gives must be the same ([`ItemUpdateError::ItemIdMismatch`]).
    pub fn parse_json_for(
        bytes: &[u8],
        path_item: Option<&ItemId>,
        now_ms: i64,
        limits: &EventLimits,
    ) -> Result<ItemUpdate, ItemUpdateError> {
        match serde_json::from_slice::<TopLevel>(bytes) {
            Err(e) => Err(ItemUpdateError::Json(e.to_string())),
            Ok(TopLevel::Other(kind)) => Err(ItemUpdateError::NotAnObject(kind)),
            Ok(TopLevel::Object { duplicate: Some(key), .. }) => Err(ItemUpdateError::DuplicateField(echo(&key))),
            Ok(TopLevel::Object { fields, duplicate: None }) => Self::from_object(&fields, path_item, now_ms, limits),
        }
    }

    /// Parses a request body holding one update object or a JSON array of
    /// them: `Err` only when the body is not JSON at all, otherwise one
    /// [`BatchItem`] per element with its own result (see
    /// [`crate::Event::parse_json_batch`]).
    pub fn parse_json_batch<'a>(
        body: &'a [u8],
        now_ms: i64,
        limits: &EventLimits,
    ) -> Result<Vec<BatchItem<'a, ItemUpdate, ItemUpdateError>>, ItemUpdateError> {
        split_batch(body, |raw| Self::parse_json(raw.as_bytes(), now_ms, limits)).map_err(ItemUpdateError::Json)
    }

    /// Parses one update from an already-parsed JSON value (which cannot
    /// tell whether its source repeated a key; prefer the byte parsers).
    pub fn from_value(value: &Value, now_ms: i64, limits: &EventLimits) -> Result<ItemUpdate, ItemUpdateError> {
        match value {
            Value::Object(fields) => Self::from_object(fields, None, now_ms, limits),
            other => Err(ItemUpdateError::NotAnObject(json_type(other))),
        }
    }

    fn from_object(
        obj: &Map<String, Value>,
        path_item: Option<&ItemId>,
        now_ms: i64,
        limits: &EventLimits,
    ) -> Result<ItemUpdate, ItemUpdateError> {
        if let Some(k) = obj.keys().find(|k| !ITEM_UPDATE_FIELDS.contains(&k.as_str())) {
            return Err(ItemUpdateError::UnknownField(echo(k)));
        }
        let item_id = match (obj.get("item_id"), path_item) {
            (None, None) => return Err(ItemUpdateError::Missing("item_id")),
            (Some(Value::Null), None) => return Err(ItemUpdateError::Null("item_id")),
            (None | Some(Value::Null), Some(path)) => path.clone(),
            (Some(v), path) => {
                let id = ItemId::from_json(v).map_err(ItemUpdateError::Id)?;
                if let Some(path) = path.filter(|p| **p != id) {
                    return Err(ItemUpdateError::ItemIdMismatch { path: path.to_string(), body: id.into_string() });
                }
                id
            }
        };
        let ts = crate::event::read_ts(obj.get("ts"), now_ms, limits).map_err(ItemUpdateError::Timestamp)?;
        let available = match obj.get("available") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(ItemUpdateError::WrongType { field: "available", expected: "true or false" }),
        };
        let category = match obj.get("category") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.is_u64() => n.as_u64(),
            Some(_) => {
                return Err(ItemUpdateError::WrongType { field: "category", expected: "a non-negative integer" })
            }
        };
        let price = match obj.get("price") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                let v = n.as_f64().ok_or(ItemUpdateError::Price(RevenueError::NotFinite))?;
                Some(Price::new(v).map_err(ItemUpdateError::Price)?)
            }
            Some(_) => return Err(ItemUpdateError::WrongType { field: "price", expected: "a number" }),
        };
        let properties = match obj.get("properties") {
            None | Some(Value::Null) => Properties::default(),
            Some(Value::Object(map)) => {
                if map.len() > MAX_PROPERTIES {
                    return Err(ItemUpdateError::Property(PropertyError::TooMany { count: map.len() }));
                }
                let mut out = BTreeMap::new();
                for (name, value) in map {
                    let Value::String(s) = value else {
                        let name = echo(name);
                        return Err(ItemUpdateError::Property(PropertyError::NotAString {
                            name,
                            found: json_type(value),
                        }));
                    };
                    out.insert(name.clone(), s.clone());
                }
                Properties::new(out).map_err(ItemUpdateError::Property)?
            }
            Some(_) => return Err(ItemUpdateError::WrongType { field: "properties", expected: "a JSON object" }),
        };
        ItemUpdate::new(ts, item_id, available, category, price, properties)
    }

    /// The item.
    pub fn item_id(&self) -> &ItemId {
        &self.item_id
    }

    /// When the change happened, epoch ms.
    pub fn ts(&self) -> i64 {
        self.ts
    }

    /// The new availability, if it changed.
    pub fn available(&self) -> Option<bool> {
        self.available
    }

    /// The new category, if it changed.
    pub fn category(&self) -> Option<u64> {
        self.category
    }

    /// The new price, if it changed.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// The properties set (empty when none).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// The records this update is written to `recsys.items` as: one per
    /// field it sets, each under its own key `{item_id}/{field}`
    /// (`available`, `category`, `price`, `properties/{name}`) and holding
    /// only that field, with the same `ts`. A compacted topic keeps the
    /// newest record per key; keyed by item alone it would keep only an
    /// item's latest patch and lose every field that patch did not set.
    pub fn records(&self) -> Vec<(String, ItemUpdate)> {
        let id = self.item_id.as_str();
        let one = |available, category, price, properties| ItemUpdate {
            item_id: self.item_id.clone(),
            ts: self.ts,
            available,
            category,
            price,
            properties,
        };
        let mut out = Vec::with_capacity(3 + self.properties.len());
        if let Some(a) = self.available {
            out.push((format!("{id}/available"), one(Some(a), None, None, Properties::default())));
        }
        if let Some(c) = self.category {
            out.push((format!("{id}/category"), one(None, Some(c), None, Properties::default())));
        }
        if let Some(p) = self.price {
            out.push((format!("{id}/price"), one(None, None, Some(p), Properties::default())));
        }
        for (name, value) in self.properties.iter() {
            let single = Properties(BTreeMap::from([(name.to_owned(), value.to_owned())]));
            out.push((format!("{id}/properties/{name}"), one(None, None, None, single)));
        }
        out
    }

    /// Whether `key` is a key this update may be stored under: its
    /// [`ItemUpdate::records`] key when it sets exactly one field, or the
    /// bare item id (a whole patch, as a producer writing to the topic
    /// directly may send; compaction then keeps only its latest patch).
    pub fn fits_key(&self, key: &[u8]) -> bool {
        let id = self.item_id.as_str().as_bytes();
        if key == id {
            return true;
        }
        if catalog_key_item(key) != id {
            return false;
        }
        let records = self.records();
        records.len() == 1 && records[0].0.as_bytes() == key
    }

    /// The canonical JSON form: the id as a string, `ts` always present,
    /// absent fields omitted. It parses back to an equal update.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ItemUpdate has string keys and finite numbers only")
    }
}

impl fmt::Display for ItemUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(s: &str) -> Result<ItemUpdate, ItemUpdateError> {
        ItemUpdate::parse_json(s.as_bytes(), NOW, &EventLimits::default())
    }

    #[test]
    fn records_are_one_field_each_under_their_own_key() {
        let u = parse(r#"{"item_id":"sku-1","ts":1433221332117,"available":false,"category":7,"price":9.5,"properties":{"color":"red","a/b":"x"}}"#)
            .unwrap();
        let recs = u.records();
        let keys: Vec<&str> = recs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["sku-1/available", "sku-1/category", "sku-1/price", "sku-1/properties/a/b", "sku-1/properties/color"]
        );
        for (k, r) in &recs {
            assert_eq!(r.item_id(), u.item_id());
            assert_eq!(r.ts(), 1433221332117);
            assert!(r.fits_key(k.as_bytes()), "{k}");
            assert_eq!(catalog_key_item(k.as_bytes()), b"sku-1");
            // Each record is a valid update on its own, and round-trips.
            assert_eq!(&parse(std::str::from_utf8(&r.to_json()).unwrap()).unwrap(), r);
        }
        assert_eq!(recs[0].1.available(), Some(false));
        assert_eq!((recs[0].1.category(), recs[0].1.price()), (None, None));
        assert_eq!(recs[1].1.category(), Some(7));
        assert_eq!(recs[2].1.price().map(Price::get), Some(9.5));
        assert_eq!(recs[4].1.properties().iter().collect::<Vec<_>>(), [("color", "red")]);
        // Folding the records gives back the update.
        let mut props = BTreeMap::new();
        for (_, r) in &recs {
            props.extend(r.properties().iter().map(|(n, v)| (n.to_owned(), v.to_owned())));
        }
        assert_eq!(Properties::new(props).unwrap(), *u.properties());
    }

    #[test]
    fn keys_that_do_not_fit_are_refused() {
        let u = parse(r#"{"item_id":"sku-1","available":true,"price":3}"#).unwrap();
        // The bare id is the whole-patch form; a field key must be the one field.
        assert!(u.fits_key(b"sku-1"));
        assert!(!u.fits_key(b"sku-1/available"), "two fields under one field's key");
        assert!(!u.fits_key(b"sku-2"));
        assert!(!u.fits_key(b"sku-12/available"));
        let a = &u.records()[0].1;
        assert!(a.fits_key(b"sku-1/available"));
        assert!(!a.fits_key(b"sku-1/price"));
        assert!(!a.fits_key(b"sku-1/"));
        assert_eq!(catalog_key_item(b"plain"), b"plain");
    }

    #[test]
    fn accepts_each_change_alone_and_together() {
        let cases: &[(&str, String)] = &[
            (
                r#"{"item_id":355908,"available":false}"#,
                format!(r#"{{"item_id":"355908","ts":{NOW},"available":false}}"#),
            ),
            (
                r#"{"item_id":"i","ts":1433221332117,"category":1338}"#,
                r#"{"item_id":"i","ts":1433221332117,"category":1338}"#.into(),
            ),
            (
                r#"{"item_id":"i","ts":1433221332117,"price":-0.0}"#,
                r#"{"item_id":"i","ts":1433221332117,"price":0.0}"#.into(),
            ),
            (
                r#"{"item_id":"i","ts":1433221332117,"properties":{"888":"1116713 960601 n277.200","6":""}}"#,
                r#"{"item_id":"i","ts":1433221332117,"properties":{"6":"","888":"1116713 960601 n277.200"}}"#.into(),
            ),
            (
                r#"{"properties":{"b":"2"},"price":12.5,"category":0,"available":true,"ts":null,"item_id":"a.b_c:d-E"}"#,
                format!(
                    r#"{{"item_id":"a.b_c:d-E","ts":{NOW},"available":true,"category":0,"price":12.5,"properties":{{"b":"2"}}}}"#
                ),
            ),
            (
                r#"{"item_id":"i","available":true,"price":null,"properties":null}"#,
                format!(r#"{{"item_id":"i","ts":{NOW},"available":true}}"#),
            ),
        ];
        for (input, canonical) in cases {
            let u = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(String::from_utf8(u.to_json()).unwrap(), *canonical, "{input}");
            assert_eq!(parse(canonical).unwrap(), u, "canonical form of {input} parses back");
        }
        let u = parse(
            r#"{"item_id":7,"ts":1433221332117,"available":true,"category":3,"price":9.5,"properties":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!((u.item_id().as_str(), u.ts()), ("7", 1433221332117));
        assert_eq!(u.records()[0].0, "7/available");
        assert_eq!((u.available(), u.category(), u.price().map(Price::get)), (Some(true), Some(3), Some(9.5)));
        assert_eq!(u.properties().iter().collect::<Vec<_>>(), [("k", "v")]);
    }

    #[test]
    fn reject_table_names_the_field() {
        let long = "x".repeat(500);
        let many: Map<String, Value> = (0..=MAX_PROPERTIES).map(|i| (format!("p{i}"), json!("v"))).collect();
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "not valid JSON"),
            ("[1]".into(), "must be a JSON object, not an array"),
            ("null".into(), "must be a JSON object, not null"),
            (r#"{"item_id":"i","available":true,"available":false}"#.into(), "duplicate field `available`"),
            (r#"{"item_id":"i","stock":3}"#.into(), "unknown field `stock`"),
            (r#"{"available":true}"#.into(), "missing field `item_id`"),
            (r#"{"item_id":null,"available":true}"#.into(), "field `item_id` must not be null"),
            (r#"{"item_id":"a b","available":true}"#.into(), "field `item_id`: id contains ' '"),
            (r#"{"item_id":-1,"available":true}"#.into(), "field `item_id`: id must be a string or a non-negative"),
            (r#"{"item_id":"i"}"#.into(), "nothing to update"),
            (r#"{"item_id":"i","ts":1433221332117}"#.into(), "nothing to update"),
            (r#"{"item_id":"i","available":null,"properties":{}}"#.into(), "nothing to update"),
            (r#"{"item_id":"i","available":1}"#.into(), "field `available` must be true or false"),
            (r#"{"item_id":"i","available":"true"}"#.into(), "field `available` must be true or false"),
            (r#"{"item_id":"i","category":-3}"#.into(), "field `category` must be a non-negative integer"),
            (r#"{"item_id":"i","category":1.5}"#.into(), "field `category` must be a non-negative integer"),
            (r#"{"item_id":"i","category":"12"}"#.into(), "field `category` must be a non-negative integer"),
            (r#"{"item_id":"i","price":-1}"#.into(), "field `price`: -1 is negative"),
            (r#"{"item_id":"i","price":1e300}"#.into(), "field `price`: 1e300 is larger than the maximum 1e9"),
            (r#"{"item_id":"i","price":"9.99"}"#.into(), "field `price` must be a number"),
            (r#"{"item_id":"i","price":1e400}"#.into(), "not valid JSON"),
            (r#"{"item_id":"i","ts":"now","available":true}"#.into(), "field `ts`: must be an integer"),
            (r#"{"item_id":"i","ts":1433221332,"available":true}"#.into(), "field `ts`: 1433221332 is before"),
            (
                format!(r#"{{"item_id":"i","ts":{},"available":true}}"#, NOW + 86_400_001),
                "ms ahead of the receiver's clock",
            ),
            (r#"{"item_id":"i","properties":[]}"#.into(), "field `properties` must be a JSON object"),
            (
                r#"{"item_id":"i","properties":{"a":1}}"#.into(),
                "field `properties`: `a` must be a string, not a number",
            ),
            (r#"{"item_id":"i","properties":{"":"v"}}"#.into(), "field `properties`: a property name is empty"),
            (
                r#"{"item_id":"i","properties":{"available":"1"}}"#.into(),
                "`available` has a field of its own; send it as `available`",
            ),
            (r#"{"item_id":"i","properties":{"categoryid":"1"}}"#.into(), "send it as `category`"),
            (format!(r#"{{"item_id":"i","properties":{{"{long}":"v"}}}}"#), "is 500 characters long, at most 64"),
            (
                format!(r#"{{"item_id":"i","properties":{{"k":"{}"}}}}"#, "y".repeat(MAX_PROPERTY_VALUE_CHARS + 1)),
                "`k` is 1025 characters long, at most 1024",
            ),
            (r#"{"item_id":"i","properties":{"k":"a\nb"}}"#.into(), "`k` contains the control character '\\n'"),
            (json!({"item_id": "i", "properties": many}).to_string(), "65 properties, at most 64"),
        ];
        for (input, want) in &cases {
            let err = parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
            assert!(err.len() < 400, "reason echoes too much input: {err}");
        }
    }

    #[test]
    fn a_body_for_a_url_item_may_leave_the_id_out_but_not_contradict_it() {
        let path = ItemId::parse("42").unwrap();
        let parse_for = |s: &str| ItemUpdate::parse_json_for(s.as_bytes(), Some(&path), NOW, &EventLimits::default());
        assert_eq!(parse_for(r#"{"available":false}"#).unwrap().item_id(), &path);
        assert_eq!(parse_for(r#"{"item_id":null,"available":false}"#).unwrap().item_id(), &path);
        assert_eq!(parse_for(r#"{"item_id":42,"available":false}"#).unwrap().item_id(), &path);
        assert_eq!(
            parse_for(r#"{"item_id":"43","available":false}"#).unwrap_err(),
            ItemUpdateError::ItemIdMismatch { path: "42".into(), body: "43".into() }
        );
        assert!(matches!(parse_for(r#"{"item_id":"4 3","available":false}"#), Err(ItemUpdateError::Id(_))));
    }

    #[test]
    fn batches_report_each_element() {
        let body = br#"[{"item_id":1,"available":true},{"item_id":2},3]"#;
        let items = ItemUpdate::parse_json_batch(body, NOW, &EventLimits::default()).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].result.is_ok());
        assert_eq!(items[1].raw, r#"{"item_id":2}"#);
        assert_eq!(items[1].result, Err(ItemUpdateError::NothingToUpdate));
        assert_eq!(items[2].result, Err(ItemUpdateError::NotAnObject("a number")));
        let one = ItemUpdate::parse_json_batch(br#" {"item_id":1,"price":2} "#, NOW, &EventLimits::default()).unwrap();
        assert_eq!((one.len(), one[0].index, one[0].result.is_ok()), (1, 0, true));
        assert!(matches!(
            ItemUpdate::parse_json_batch(b"[1,", NOW, &EventLimits::default()),
            Err(ItemUpdateError::Json(_))
        ));
        let v = json!({"item_id": 1, "available": false});
        assert_eq!(ItemUpdate::from_value(&v, NOW, &EventLimits::default()).unwrap(), parse(&v.to_string()).unwrap());
    }

    #[test]
    fn constructors_keep_the_invariants() {
        let item = ItemId::from_u64(5);
        assert_eq!(
            ItemUpdate::new(1, item.clone(), None, None, None, Properties::default()).unwrap_err(),
            ItemUpdateError::NothingToUpdate
        );
        assert!(ItemUpdate::new(1, item, None, Some(3), None, Properties::default()).is_ok());
        let reserved = BTreeMap::from([("price".to_owned(), "3".to_owned())]);
        assert!(matches!(Properties::new(reserved), Err(PropertyError::Reserved { field: "price", .. })));
        assert!(Price::new(f64::NAN).is_err() && Price::new(-0.5).is_err() && Price::new(MAX_PRICE * 2.0).is_err());
        assert_eq!(Price::new(-0.0).unwrap().get().to_bits(), 0.0f64.to_bits());
    }

    /// The published schema accepts exactly what the parser accepts, over
    /// every combination of a few values per field (its `ts` upper bound
    /// and duplicate keys aside, as for events: json_schema's module doc).
    #[test]
    fn schema_and_parser_agree() {
        let schema = crate::json_schemas().into_iter().find(|(n, _)| *n == "item_update.schema.json").unwrap().1;
        let v = jsonschema::options().build(&schema).unwrap();
        let limits = EventLimits { max_future_ms: i64::MAX / 2, ..EventLimits::default() };
        let opts = |vals: Vec<Value>| -> Vec<Option<Value>> {
            std::iter::once(None).chain(vals.into_iter().map(Some)).collect()
        };
        let ids = opts(vec![json!("i-1"), json!(3), json!(-1), json!("a b"), json!(null)]);
        let ts = opts(vec![json!(crate::DEFAULT_MIN_TS), json!(crate::DEFAULT_MIN_TS - 1), json!("x"), json!(null)]);
        let available = opts(vec![json!(true), json!(0), json!(null)]);
        let category = opts(vec![json!(12), json!(-1), json!("12"), json!(null)]);
        let price = opts(vec![json!(9.5), json!(-1), json!(MAX_PRICE + 1.0), json!(null)]);
        let properties = opts(vec![
            json!({"888": "n552.000 639502"}),
            json!({}),
            json!({"price": "1"}),
            json!({"k": 1}),
            json!({"": "v"}),
            json!({"k": "a\u{1}"}),
            json!(null),
        ]);
        let mut checked = 0;
        for i in &ids {
            for t in &ts {
                for a in &available {
                    for c in &category {
                        for p in &price {
                            for q in &properties {
                                let mut obj = Map::new();
                                for (k, val) in [
                                    ("item_id", i),
                                    ("ts", t),
                                    ("available", a),
                                    ("category", c),
                                    ("price", p),
                                    ("properties", q),
                                ] {
                                    if let Some(val) = val {
                                        obj.insert(k.into(), val.clone());
                                    }
                                }
                                let value = Value::Object(obj);
                                let parsed = ItemUpdate::from_value(&value, NOW, &limits);
                                assert_eq!(v.is_valid(&value), parsed.is_ok(), "{value}: {parsed:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    fn arb_update() -> impl Strategy<Value = ItemUpdate> {
        let name = "[a-z0-9]{1,8}";
        let value = "[ -~]{0,20}";
        (
            crate::DEFAULT_MIN_TS..=NOW,
            prop_oneof![
                "[A-Za-z0-9._:-]{1,64}".prop_map(|s| ItemId::parse(&s).unwrap()),
                any::<u64>().prop_map(ItemId::from_u64)
            ],
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of((0u64..1_000_000_000).prop_map(|c| Price::new(c as f64 / 100.0).unwrap())),
            proptest::collection::btree_map(name, value, 0..5),
        )
            .prop_filter_map("something to update", |(ts, item, available, category, price, props)| {
                let props = Properties::new(props).ok()?;
                ItemUpdate::new(ts, item, available, category, price, props).ok()
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ItemUpdate::parse_json(&bytes, NOW, &EventLimits::default());
            let _ = ItemUpdate::parse_json_batch(&bytes, NOW, &EventLimits::default());
        }

        #[test]
        fn valid_updates_round_trip(u in arb_update()) {
            let json = u.to_json();
            let back = ItemUpdate::parse_json(&json, NOW, &EventLimits::default()).unwrap();
            prop_assert_eq!(&back, &u);
            prop_assert_eq!(back.to_json(), json, "canonical form is a fixed point");
        }
    }
}
