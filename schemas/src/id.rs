//! Validated identifiers: users, items, transactions and recommendation responses.
//!
//! Every id that crosses a process boundary is a string of 1–64 characters from
//! `[A-Za-z0-9._:-]`. The alphabet is deliberately small: ids end up inside Redis
//! keys (`recs:{user}`), Kafka keys, metric-free log lines and file names, and none
//! of those need escaping when the id cannot contain spaces, slashes, quotes or
//! control characters. The length bound keeps a hostile producer from making a
//! key or a history entry arbitrarily large.
//!
//! Storefronts (and the RetailRocket log) use numeric ids, so the user, item and
//! transaction ids also accept a non-negative JSON integer and normalise it to its
//! decimal string: `257597` and `"257597"` are the same user everywhere downstream.
//! A [`RecId`] is minted by the API as a string and echoed back by the storefront,
//! so it accepts strings only.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Longest accepted id, in bytes (ids are ASCII, so also in characters).
pub const MAX_ID_LEN: usize = 64;

/// The id alphabet and length as a JSON Schema / ECMA-262 pattern.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,64}$";

/// Why a string (or JSON value) is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} characters long, at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("id contains {0:?} at byte {1}; allowed are A-Z a-z 0-9 . _ : -")]
    BadChar(char, usize),
    #[error("id must be a string or a non-negative integer")]
    WrongType,
    #[error("id must be a string")]
    NotAString,
}

fn check(s: &str) -> Result<(), IdError> {
    check_bytes(s.as_bytes()).map(|_| ())
}

/// Checks raw bytes against the id rules (the one definition, shared by the
/// JSON parsers and the CSV reader) and returns them as text. Valid ids are
/// ASCII, so a byte outside the alphabet is reported as the character it
/// starts (U+FFFD when the bytes are not UTF-8).
pub fn check_bytes(b: &[u8]) -> Result<&str, IdError> {
    if b.is_empty() {
        return Err(IdError::Empty);
    }
    if b.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(String::from_utf8_lossy(b).chars().count()));
    }
    if let Some(i) = b.iter().position(|&c| !is_id_byte(c)) {
        let c = std::str::from_utf8(&b[i..])
            .ok()
            .and_then(|s| s.chars().next())
            .or_else(|| String::from_utf8_lossy(&b[i..]).chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        return Err(IdError::BadChar(c, i));
    }
    // Every byte is ASCII here.
    std::str::from_utf8(b).map_err(|_| IdError::Empty)
}

/// The id alphabet as a table: checked for every id of every CSV row.
static ID_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        c += 1;
    }
    t
};

fn is_id_byte(c: u8) -> bool {
    ID_BYTES[usize::from(c)]
}

/// The JSON Schema of a string id.
fn string_id_schema() -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LEN,
        "pattern": ID_PATTERN,
    })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, integers: $integers:literal, schema: $schema_doc:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the id, returning its string.
            pub fn into_string(self) -> String {
                self.0
            }

            /// Parses an id from a JSON value: a string, or (when this id type
            /// takes numeric ids) a non-negative integer normalised to decimal.
            pub fn from_json(v: &serde_json::Value) -> Result<Self, IdError> {
                match v {
                    serde_json::Value::String(s) => Self::parse(s),
                    serde_json::Value::Number(n) if $integers => match n.as_u64() {
                        Some(u) => Ok(Self(u.to_string())),
                        None => Err(IdError::WrongType),
                    },
                    _ if $integers => Err(IdError::WrongType),
                    _ => Err(IdError::NotAString),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(if $integers { "a string id or a non-negative integer" } else { "a string id" })
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        if $integers {
                            Ok($name(v.to_string()))
                        } else {
                            Err(E::custom(IdError::NotAString))
                        }
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        match u64::try_from(v) {
                            Ok(u) => self.visit_u64(u),
                            Err(_) if $integers => Err(E::custom(IdError::WrongType)),
                            Err(_) => Err(E::custom(IdError::NotAString)),
                        }
                    }
                    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<$name, E> {
                        Err(E::custom(if $integers { IdError::WrongType } else { IdError::NotAString }))
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn schema_id() -> Cow<'static, str> {
                concat!("schemas::", stringify!($name)).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let mut s = if $integers {
                    json_schema!({
                        "oneOf": [
                            string_id_schema(),
                            { "type": "integer", "minimum": 0, "maximum": u64::MAX },
                        ],
                    })
                } else {
                    string_id_schema()
                };
                s.insert("description".into(), $schema_doc.into());
                s
            }
        }
    };
}

id_type!(
    /// A storefront visitor id.
    UserId,
    integers: true,
    schema: "A storefront visitor id: 1-64 characters [A-Za-z0-9._:-], or a non-negative integer (normalised to its decimal string)."
);
id_type!(
    /// A catalogue item id.
    ItemId,
    integers: true,
    schema: "A catalogue item id: 1-64 characters [A-Za-z0-9._:-], or a non-negative integer (normalised to its decimal string)."
);
id_type!(
    /// The storefront's order id of a purchase (RetailRocket's `transactionid`).
    TransactionId,
    integers: true,
    schema: "The storefront's order id of a purchase: 1-64 characters [A-Za-z0-9._:-], or a non-negative integer (normalised to its decimal string)."
);
id_type!(
    /// The id of one recommendation response; the API mints it and the storefront
    /// echoes it on the events that follow, which attributes them directly.
    RecId,
    integers: false,
    schema: "The rec_id of a recommendation response (1-64 characters [A-Za-z0-9._:-])."
);

impl UserId {
    /// The id of a numeric source id (RetailRocket ids are integers).
    pub fn from_u64(v: u64) -> Self {
        Self(v.to_string())
    }
}

impl ItemId {
    /// The id of a numeric source id (RetailRocket ids are integers).
    pub fn from_u64(v: u64) -> Self {
        Self(v.to_string())
    }
}

impl TransactionId {
    /// The id of a numeric source id (RetailRocket ids are integers).
    pub fn from_u64(v: u64) -> Self {
        Self(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn accepts_valid_ids() {
        for s in ["0", "257597", "a.b_c:d-e", &"x".repeat(64)] {
            assert_eq!(UserId::parse(s).unwrap().as_str(), s);
            assert_eq!(RecId::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        assert_eq!(ItemId::parse(""), Err(IdError::Empty));
        assert_eq!(ItemId::parse(&"x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(ItemId::parse("a b"), Err(IdError::BadChar(' ', 1)));
        assert_eq!(ItemId::parse("a\u{0}"), Err(IdError::BadChar('\0', 1)));
        assert_eq!(ItemId::parse("a/b"), Err(IdError::BadChar('/', 1)));
        assert!(matches!(ItemId::parse("é"), Err(IdError::BadChar('é', 0))));
        assert_eq!(TransactionId::try_from("x y".to_owned()), Err(IdError::BadChar(' ', 1)));
    }

    #[test]
    fn json_integers_normalise_to_strings() {
        let id: UserId = serde_json::from_str("0").unwrap();
        assert_eq!(id.as_str(), "0");
        let id: TransactionId = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(id.as_str(), "18446744073709551615");
        let id: UserId = serde_json::from_str("\"257597\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"257597\"");
        assert_eq!(UserId::from_json(&json!(257597)).unwrap(), UserId::from_u64(257597));
        for bad in ["-1", "1.5", "1e3", "null", "true", "[]", "{}", "18446744073709551616"] {
            assert!(serde_json::from_str::<UserId>(bad).is_err(), "{bad}");
            let v: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert_eq!(UserId::from_json(&v), Err(IdError::WrongType), "{bad}");
        }
    }

    #[test]
    fn rec_ids_are_strings_only() {
        assert!(serde_json::from_str::<RecId>("5").unwrap_err().to_string().contains("must be a string"));
        assert_eq!(RecId::from_json(&json!(5)), Err(IdError::NotAString));
        assert_eq!(RecId::from_json(&json!("r-5")).unwrap().as_str(), "r-5");
        assert!(serde_json::from_str::<RecId>("\"a b\"").unwrap_err().to_string().contains("' '"));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_the_alphabet(s in ".{0,80}") {
            match UserId::parse(&s) {
                Ok(id) => {
                    prop_assert!(!s.is_empty() && s.len() <= MAX_ID_LEN);
                    prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)));
                }
                Err(_) => prop_assert!(s.is_empty() || s.len() > MAX_ID_LEN
                    || s.chars().any(|c| !(c.is_ascii_alphanumeric() || ".:_-".contains(c)))),
            }
        }

        #[test]
        fn integers_and_their_strings_are_the_same_id(n in any::<u64>()) {
            let from_int: ItemId = serde_json::from_str(&n.to_string()).unwrap();
            let from_str: ItemId = serde_json::from_str(&format!("\"{n}\"")).unwrap();
            prop_assert_eq!(&from_int, &from_str);
            prop_assert_eq!(from_int, ItemId::from_u64(n));
        }
    }
}
