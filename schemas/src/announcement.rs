//! Model announcements (topic `recsys.models`) and the names they carry.
//!
//! The batch trainer announces a published model; the updater and the API load
//! it. A version name becomes a directory name under the artifacts root, a Redis
//! value (`model:current`) and a segment of a stats key, so it is a validated
//! [`ModelVersion`], never a bare string: `../../etc` cannot reach a file system
//! call and `a:b` cannot make a stats key ambiguous.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::RecordError;

/// Longest model version name.
pub const MAX_VERSION_LEN: usize = 100;

/// A model version name: 1–100 characters `[A-Za-z0-9._-]`, not starting with
/// `.` (no hidden or temporary directories, no `..`) and not `CURRENT` (the
/// artifacts root's pointer file). The same rule as the trainer's
/// `model::artifact::validate_version`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelVersion(String);

/// Why a string is not a model version name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model version {0:?}: use 1-100 characters [A-Za-z0-9._-], not starting with '.' and not CURRENT")]
pub struct ModelVersionError(pub String);

impl ModelVersion {
    /// Parses and validates a version name.
    pub fn parse(s: &str) -> Result<ModelVersion, ModelVersionError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_VERSION_LEN
            && !s.starts_with('.')
            && s != "CURRENT"
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ModelVersion(s.to_owned()))
        } else {
            Err(ModelVersionError(s.chars().take(MAX_VERSION_LEN + 1).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelVersion({:?})", self.0)
    }
}

impl std::str::FromStr for ModelVersion {
    type Err = ModelVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelVersion::parse(s)
    }
}

impl AsRef<str> for ModelVersion {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ModelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        ModelVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ModelVersion {
    fn schema_name() -> Cow<'static, str> {
        "ModelVersion".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "schemas::ModelVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A model version name: 1-100 characters [A-Za-z0-9._-], not starting with '.', not CURRENT.",
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_VERSION_LEN,
            "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$",
            "not": { "const": "CURRENT" },
        })
    }
}

/// A SHA-256 digest as 64 lowercase hexadecimal digits (the form `sha256sum`
/// prints and the model manifest records), so equal digests compare equal as
/// strings.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Sha256Hex(String);

/// Why a string is not a lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 {0:?}: expected 64 lowercase hex digits")]
pub struct Sha256Error(pub String);

impl Sha256Hex {
    /// Parses a digest.
    pub fn parse(s: &str) -> Result<Sha256Hex, Sha256Error> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Sha256Hex(s.to_owned()))
        } else {
            Err(Sha256Error(s.chars().take(65).collect()))
        }
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hex({})", self.0)
    }
}

impl std::str::FromStr for Sha256Hex {
    type Err = Sha256Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Hex::parse(s)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Sha256Hex::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Sha256Hex {
    fn schema_name() -> Cow<'static, str> {
        "Sha256Hex".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A SHA-256 digest: 64 lowercase hexadecimal digits.",
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
        })
    }
}

/// A published model on topic `recsys.models` (Kafka key `model`): the trainer
/// wrote and verified `path`, and `manifest_sha256` pins exactly which
/// manifest.json a reader must find there, so a half-copied or replaced
/// directory is refused instead of served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelAnnouncement {
    /// The version name (also the directory name under the artifacts root).
    pub version: ModelVersion,
    /// The version directory as the trainer wrote it. Readers on other machines
    /// may resolve `version` under their own artifacts root instead.
    #[serde(deserialize_with = "non_empty")]
    #[schemars(length(min = 1))]
    pub path: String,
    /// SHA-256 of the version's manifest.json.
    pub manifest_sha256: Sha256Hex,
    /// When the model was created (RFC 3339).
    #[serde(with = "rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
}

fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(serde::de::Error::custom("path must not be empty"));
    }
    Ok(s)
}

/// RFC 3339 text for an `OffsetDateTime` field (the `time` crate's own serde
/// support needs a feature the rest of the workspace does not use).
mod rfc3339 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| serde::de::Error::custom(format!("created_at {text:?} is not RFC 3339: {e}")))
    }
}

impl ModelAnnouncement {
    /// The Kafka key of every announcement: one key, so announcements stay in
    /// one partition, in publication order.
    pub const KEY: &'static [u8] = b"model";

    /// Parses and checks an announcement (unknown or duplicate fields, a bad
    /// version name, digest or date are all rejected).
    pub fn parse_json(bytes: &[u8]) -> Result<ModelAnnouncement, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError::new("model announcement", e))
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ModelAnnouncement has string keys only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn announcement() -> ModelAnnouncement {
        ModelAnnouncement {
            version: ModelVersion::parse("20261128T191617Z").unwrap(),
            path: "artifacts/models/20261128T191617Z".into(),
            manifest_sha256: Sha256Hex::parse(&"0123456789abcdef".repeat(4)).unwrap(),
            created_at: OffsetDateTime::parse("2026-11-28T19:16:17Z", &Rfc3339).unwrap(),
        }
    }

    #[test]
    fn round_trips() {
        let a = announcement();
        let json = String::from_utf8(a.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"version":"20261128T191617Z","path":"artifacts/models/20261128T191617Z","manifest_sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","created_at":"2026-11-28T19:16:17Z"}"#
        );
        assert_eq!(ModelAnnouncement::parse_json(json.as_bytes()).unwrap(), a);
        let offset = json.replace("19:16:17Z", "20:16:17.25+01:00");
        let b = ModelAnnouncement::parse_json(offset.as_bytes()).unwrap();
        assert_eq!(b.created_at, a.created_at + time::Duration::milliseconds(250));
        assert_eq!(ModelAnnouncement::parse_json(&b.to_json()).unwrap(), b);
    }

    #[test]
    fn reject_table() {
        let good = String::from_utf8(announcement().to_json()).unwrap();
        let sha = "0123456789abcdef".repeat(4);
        let cases = [
            (good.replace("20261128T191617Z\",\"path", "../x\",\"path"), "invalid model version \"../x\""),
            (good.replace("20261128T191617Z\",\"path", ".hidden\",\"path"), "invalid model version"),
            (good.replace("20261128T191617Z\",\"path", "CURRENT\",\"path"), "invalid model version"),
            (good.replace("20261128T191617Z\",\"path", "a:b\",\"path"), "invalid model version"),
            (
                good.replace("20261128T191617Z\",\"path", &format!("{}\",\"path", "v".repeat(101))),
                "invalid model version",
            ),
            (good.replace(&sha, &sha.to_uppercase()), "invalid sha256"),
            (good.replace(&sha, &sha[1..]), "invalid sha256"),
            (good.replace("2026-11-28T19:16:17Z", "yesterday"), "created_at \"yesterday\" is not RFC 3339"),
            (good.replace("2026-11-28T19:16:17Z", "2026-11-28 19:16:17"), "not RFC 3339"),
            (good.replace("\"path\"", "\"dir\""), "unknown field `dir`"),
            (good.replace(",\"created_at\":\"2026-11-28T19:16:17Z\"", ""), "missing field `created_at`"),
            (good.replace("{", "{\"version\":\"v\","), "duplicate field `version`"),
            (good.replace("\"artifacts/models/20261128T191617Z\"", "\"\""), "path must not be empty"),
            ("[]".to_owned(), "invalid model announcement"),
        ];
        for (input, want) in &cases {
            let err = ModelAnnouncement::parse_json(input.as_bytes()).expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err:?} lacks {want:?}");
            assert!(err.starts_with("invalid model announcement: "), "{err}");
        }
    }

    #[test]
    fn version_names() {
        for ok in ["v1", "20261128T191617Z", "a.b-c_d", "-x", &"v".repeat(100), "current"] {
            assert_eq!(ModelVersion::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".", "..", ".v1", "a/b", "a b", "a:b", "CURRENT", &"v".repeat(101), "é"] {
            assert!(ModelVersion::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ModelAnnouncement::parse_json(&bytes);
        }

        #[test]
        fn valid_announcements_round_trip(
            version in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}",
            path in ".{1,40}",
            digest in "[0-9a-f]{64}",
            secs in 1_262_304_000i64..4_102_444_800,
            nanos in 0u32..1_000_000_000,
        ) {
            prop_assume!(version != "CURRENT");
            let a = ModelAnnouncement {
                version: ModelVersion::parse(&version).unwrap(),
                path,
                manifest_sha256: Sha256Hex::parse(&digest).unwrap(),
                created_at: OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::nanoseconds(nanos.into()),
            };
            prop_assert_eq!(ModelAnnouncement::parse_json(&a.to_json()).unwrap(), a);
        }
    }
}
