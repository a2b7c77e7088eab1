//! Dead letters (topic `recsys.events.dlq`): rejected input with its reason.
//!
//! Nothing a producer sends is silently dropped (docs/design.md §3): whatever fails to
//! parse is kept byte for byte next to the reason, so it can be inspected,
//! fixed and replayed. The bytes are usually JSON text and are then stored as a
//! readable string (`original`); input that is not valid UTF-8 cannot be a JSON
//! string, so it is stored base64-encoded in `original_base64` instead. Exactly
//! one of the two is present; in Rust both are just [`DeadLetter::original`].

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::RecordError;

/// Which process rejected the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterSource {
    /// `POST /v1/events` on the ingest service.
    Http,
    /// `recsys-ingest replay` reading a CSV log.
    Replay,
    /// The updater, for messages a producer wrote to `recsys.events` directly.
    Updater,
}

impl DeadLetterSource {
    /// Every source, in a fixed order.
    pub const ALL: [DeadLetterSource; 3] =
        [DeadLetterSource::Http, DeadLetterSource::Replay, DeadLetterSource::Updater];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterSource::Http => "http",
            DeadLetterSource::Replay => "replay",
            DeadLetterSource::Updater => "updater",
        }
    }
}

impl fmt::Display for DeadLetterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not `http`, `replay` or `updater`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter source {0:?}; expected http, replay or updater")]
pub struct ParseDeadLetterSourceError(pub String);

impl FromStr for DeadLetterSource {
    type Err = ParseDeadLetterSourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterSource::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ParseDeadLetterSourceError(s.chars().take(64).collect()))
    }
}

/// A rejected input and why, on topic `recsys.events.dlq`. On the wire the
/// input is `original` (a string) when it is valid UTF-8 and `original_base64`
/// (standard alphabet, padded) otherwise; exactly one of the two is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "DeadLetterWire", into = "DeadLetterWire")]
pub struct DeadLetter {
    /// Why it was rejected (for events: the [`crate::EventError`] text, which
    /// names the field).
    pub reason: String,
    /// Which process rejected it.
    pub source: DeadLetterSource,
    /// When it was rejected, epoch milliseconds.
    pub received_ms: i64,
    /// The input exactly as received (for a batch: the one element).
    pub original: Vec<u8>,
}

/// The wire shape of a [`DeadLetter`] (its schema is published under that name).
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename = "DeadLetter")]
#[schemars(transform = exactly_one_original)]
struct DeadLetterWire {
    /// Why the input was rejected; for events it names the field.
    reason: String,
    /// Which process rejected it.
    source: DeadLetterSource,
    /// When it was rejected, epoch milliseconds.
    received_ms: i64,
    /// The input as received, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    original: Option<String>,
    /// The input as received, base64-encoded, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("contentEncoding" = "base64"), regex(pattern = BASE64_PATTERN))]
    original_base64: Option<String>,
}

/// Canonical padded base64 of the standard alphabet (what [`BASE64`] writes and accepts).
const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

fn exactly_one_original(schema: &mut Schema) {
    schema
        .insert("oneOf".into(), serde_json::json!([{ "required": ["original"] }, { "required": ["original_base64"] }]));
}

/// Why a dead-letter record does not parse (beyond its JSON shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum OriginalError {
    #[error("exactly one of `original` and `original_base64` must be present")]
    NotExactlyOne,
    #[error("field `original_base64`: {0}")]
    Base64(String),
}

impl TryFrom<DeadLetterWire> for DeadLetter {
    type Error = OriginalError;
    fn try_from(w: DeadLetterWire) -> Result<Self, Self::Error> {
        let original = match (w.original, w.original_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => BASE64.decode(b64).map_err(|e| OriginalError::Base64(e.to_string()))?,
            _ => return Err(OriginalError::NotExactlyOne),
        };
        Ok(DeadLetter { reason: w.reason, source: w.source, received_ms: w.received_ms, original })
    }
}

impl From<DeadLetter> for DeadLetterWire {
    fn from(d: DeadLetter) -> Self {
        let (original, original_base64) = match String::from_utf8(d.original) {
            Ok(text) => (Some(text), None),
            Err(e) => (None, Some(BASE64.encode(e.as_bytes()))),
        };
        DeadLetterWire { reason: d.reason, source: d.source, received_ms: d.received_ms, original, original_base64 }
    }
}

impl DeadLetter {
    /// Wraps rejected bytes with their reason.
    pub fn new(
        reason: impl Into<String>,
        source: DeadLetterSource,
        received_ms: i64,
        original: impl Into<Vec<u8>>,
    ) -> DeadLetter {
        DeadLetter { reason: reason.into(), source, received_ms, original: original.into() }
    }

    /// The original input as text, when it is valid UTF-8.
    pub fn original_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.original).ok()
    }

    /// Parses a dead-letter record.
    pub fn parse_json(bytes: &[u8]) -> Result<DeadLetter, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::new("dead letter", e))
    }

    /// The JSON form (`original` or `original_base64`, see the module docs).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a DeadLetter has string keys only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_input_is_kept_as_text() {
        let d = DeadLetter::new("field `ts`: bad", DeadLetterSource::Http, 5, &b"{\"ts\":\"x\"}"[..]);
        assert_eq!(d.original_text(), Some("{\"ts\":\"x\"}"));
        let json = String::from_utf8(d.to_json()).unwrap();
        assert_eq!(json, r#"{"reason":"field `ts`: bad","source":"http","received_ms":5,"original":"{\"ts\":\"x\"}"}"#);
        assert_eq!(DeadLetter::parse_json(json.as_bytes()).unwrap(), d);
    }

    #[test]
    fn other_bytes_are_base64() {
        let d = DeadLetter::new("not valid JSON", DeadLetterSource::Replay, 7, vec![0xff, 0x00, b'a']);
        assert_eq!(d.original_text(), None);
        let json = String::from_utf8(d.to_json()).unwrap();
        assert_eq!(json, r#"{"reason":"not valid JSON","source":"replay","received_ms":7,"original_base64":"/wBh"}"#);
        assert_eq!(DeadLetter::parse_json(json.as_bytes()).unwrap(), d);
        let empty = DeadLetter::new("empty body", DeadLetterSource::Updater, 1, Vec::new());
        assert_eq!(DeadLetter::parse_json(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn reject_table() {
        let cases = [
            (r#"{"reason":"r","source":"http","received_ms":1}"#, "exactly one of `original` and `original_base64`"),
            (
                r#"{"reason":"r","source":"http","received_ms":1,"original":"x","original_base64":"eA=="}"#,
                "exactly one of",
            ),
            (r#"{"reason":"r","source":"http","received_ms":1,"original_base64":"!!"}"#, "field `original_base64`"),
            (r#"{"reason":"r","source":"kafka","received_ms":1,"original":"x"}"#, "unknown variant `kafka`"),
            (r#"{"reason":"r","source":"http","received_ms":1,"original":"x","extra":1}"#, "unknown field `extra`"),
            (r#"{"source":"http","received_ms":1,"original":"x"}"#, "missing field `reason`"),
            (
                r#"{"reason":"r","reason":"s","source":"http","received_ms":1,"original":"x"}"#,
                "duplicate field `reason`",
            ),
        ];
        for (input, want) in cases {
            let err = DeadLetter::parse_json(input.as_bytes()).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
            assert!(err.starts_with("invalid dead letter: "), "{err}");
        }
    }

    #[test]
    fn source_names() {
        for s in DeadLetterSource::ALL {
            assert_eq!(s.as_str().parse::<DeadLetterSource>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<DeadLetterSource>(&format!("\"{s}\"")).unwrap(), s);
        }
        assert!("HTTP".parse::<DeadLetterSource>().is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_survive_a_round_trip(
            original in proptest::collection::vec(any::<u8>(), 0..200),
            reason in ".{0,80}",
            received_ms in any::<i64>(),
            source in 0usize..3,
        ) {
            let d = DeadLetter::new(reason, DeadLetterSource::ALL[source], received_ms, original);
            prop_assert_eq!(DeadLetter::parse_json(&d.to_json()).unwrap(), d);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = DeadLetter::parse_json(&bytes);
        }
    }
}
