//! Validated user and item identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted id, in bytes (ids are ASCII, so also in characters).
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
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
}

fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.chars().count()));
    }
    for (i, c) in s.char_indices() {
        if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')) {
            return Err(IdError::BadChar(c, i));
        }
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
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

            /// The id of a numeric source id (RetailRocket ids are integers).
            pub fn from_u64(v: u64) -> Self {
                Self(v.to_string())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the id, returning its string.
            pub fn into_string(self) -> String {
                self.0
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

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Integers are accepted because storefronts (and RetailRocket) use
                // numeric ids; they are normalised to their decimal form.
                match serde_json::Value::deserialize(d)? {
                    serde_json::Value::String(s) => Self::parse(&s).map_err(serde::de::Error::custom),
                    serde_json::Value::Number(n) if n.is_u64() => {
                        Ok(Self::from_u64(n.as_u64().unwrap_or_default()))
                    }
                    _ => Err(serde::de::Error::custom(IdError::WrongType)),
                }
            }
        }
    };
}

id_type!(
    /// A storefront visitor id.
    UserId
);
id_type!(
    /// A catalogue item id.
    ItemId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_ids() {
        for s in ["0", "257597", "a.b_c:d-e", &"x".repeat(64)] {
            assert_eq!(UserId::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        assert_eq!(ItemId::parse(""), Err(IdError::Empty));
        assert_eq!(ItemId::parse(&"x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(ItemId::parse("a b"), Err(IdError::BadChar(' ', 1)));
        assert_eq!(ItemId::parse("a\u{0}"), Err(IdError::BadChar('\0', 1)));
        assert!(matches!(ItemId::parse("é"), Err(IdError::BadChar('é', 0))));
    }

    #[test]
    fn json_integers_normalise_to_strings() {
        let id: UserId = serde_json::from_str("0").unwrap();
        assert_eq!(id.as_str(), "0");
        let id: UserId = serde_json::from_str("\"257597\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"257597\"");
        assert!(serde_json::from_str::<UserId>("-1").is_err());
        assert!(serde_json::from_str::<UserId>("1.5").is_err());
        assert!(serde_json::from_str::<UserId>("null").is_err());
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
    }
}
