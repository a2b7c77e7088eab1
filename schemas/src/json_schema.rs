//! JSON Schema (2020-12) documents of the wire records, generated from the Rust
//! types with `schemars`.
//!
//! A storefront in any language can validate what it produces straight to
//! Kafka against `schemas/json/event.schema.json` instead of reading Rust. The
//! documents are generated, never hand-edited, so they cannot drift from the
//! types; a test fails when the committed files differ from what the code
//! generates. Regenerate them with
//!
//! ```sh
//! cargo run -p schemas --example write_json_schemas
//! ```
//!
//! What JSON Schema cannot say, and the parsers still enforce: a `ts` at most a
//! day ahead of the receiver's clock (the schema states the lower bound only),
//! no duplicate keys in an object (a JSON Schema validator never sees them), and
//! integers written as integer literals: JSON Schema calls `5.0` and `1.4e12`
//! integers, the parsers do not (an id or a timestamp sent as a float is a
//! producer bug worth reporting, and a float id would round above 2^53).

use std::path::Path;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::{DeadLetter, Event, Impression, ItemUpdate, ModelAnnouncement};

/// Where the documents live, relative to the `schemas` crate.
pub const JSON_SCHEMA_DIR: &str = "json";

fn document<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(unwrap_description))
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Descriptions come from `///` comments, hard-wrapped for the source file;
/// the documents carry one line per paragraph instead.
fn unwrap_description(schema: &mut Schema) {
    if let Some(Value::String(d)) = schema.get_mut("description") {
        *d = d
            .split("\n\n")
            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

/// Every published document as `(file name, schema)`.
pub fn json_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("event.schema.json", document::<Event>()),
        ("impression.schema.json", document::<Impression>()),
        ("model_announcement.schema.json", document::<ModelAnnouncement>()),
        ("dead_letter.schema.json", document::<DeadLetter>()),
        ("item_update.schema.json", document::<ItemUpdate>()),
    ]
}

/// The text written for a document: pretty-printed (keywords in schemars'
/// reading order) with a final newline.
pub fn render(schema: &Value) -> String {
    let schema = schemars::Schema::try_from(schema.clone()).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON value always serialises");
    text.push('\n');
    text
}

/// Writes every document into `dir` (created if missing), replacing old files.
pub fn write_json_schemas(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, schema) in json_schemas() {
        std::fs::write(dir.join(name), render(&schema))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, DEFAULT_MIN_TS, EVENT_FIELDS, MAX_REVENUE};
    use serde_json::json;

    const REGENERATE: &str = "cargo run -p schemas --example write_json_schemas";

    fn committed_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(JSON_SCHEMA_DIR)
    }

    fn generated(name: &str) -> Value {
        json_schemas().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).unwrap()
    }

    fn validator(name: &str) -> jsonschema::Validator {
        jsonschema::options().should_validate_formats(true).build(&generated(name)).unwrap()
    }

    #[test]
    fn committed_documents_match_the_code() {
        let dir = committed_dir();
        let mut stale = Vec::new();
        for (name, schema) in json_schemas() {
            let path = dir.join(name);
            let committed: Option<Value> =
                std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if committed.as_ref() != Some(&schema) {
                stale.push(name);
            }
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !json_schemas().iter().any(|(name, _)| name == n))
            .collect();
        on_disk.sort();
        assert!(
            stale.is_empty() && on_disk.is_empty(),
            "schemas/json is out of date (stale: {stale:?}, not generated: {on_disk:?}); \
             regenerate with `{REGENERATE}` and commit the result"
        );
    }

    #[test]
    fn written_documents_are_what_the_test_compares() {
        let dir = std::env::temp_dir().join(format!("schemas-json-{}", std::process::id()));
        write_json_schemas(&dir).unwrap();
        for (name, schema) in json_schemas() {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.ends_with("}\n") && text.contains("\n  \"$schema\""), "{name} is pretty-printed");
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), schema, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn event_schema_states_the_constraints() {
        let s = generated("event.schema.json");
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(s["additionalProperties"], false);
        let mut props: Vec<&str> = s["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = EVENT_FIELDS.to_vec();
        props.sort_unstable();
        fields.sort_unstable();
        assert_eq!(props, fields);
        let mut required: Vec<&str> = s["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        required.sort_unstable();
        assert_eq!(required, ["event", "item_id", "user_id"]);
        let kinds: Vec<&str> =
            s["$defs"]["EventKind"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(kinds, EventKind::ALL.map(EventKind::as_str));
        assert_eq!(s["properties"]["ts"]["minimum"], DEFAULT_MIN_TS);
        assert_eq!(s["properties"]["revenue"]["minimum"], 0);
        assert_eq!(s["properties"]["revenue"]["maximum"], MAX_REVENUE);
        assert_eq!(s["$defs"]["UserId"]["oneOf"][0]["pattern"], crate::ID_PATTERN);
        assert_eq!(s["$defs"]["RecId"]["pattern"], crate::ID_PATTERN);
    }

    /// Values to try for each event field; `None` means "leave the field out".
    fn candidates(field: &str) -> Vec<Option<Value>> {
        let long = "x".repeat(65);
        let ids = || {
            vec![
                json!("u-1"),
                json!("a.b_c:d-E"),
                json!(0),
                json!(u64::MAX),
                json!(-1),
                json!(1.5),
                json!(""),
                json!("a b"),
                json!("é"),
                json!(long),
                json!(null),
                json!([]),
            ]
        };
        let mut c: Vec<Option<Value>> = match field {
            "ts" => vec![
                json!(DEFAULT_MIN_TS),
                json!(DEFAULT_MIN_TS - 1),
                json!(1_433_221_332_117i64),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(1_433_221_332_117.5),
                json!("1433221332117"),
                json!(null),
            ],
            "user_id" | "item_id" | "transaction_id" => ids(),
            "rec_id" => ids().into_iter().chain([json!("7")]).collect(),
            "event" => {
                vec![json!("view"), json!("addtocart"), json!("transaction"), json!("click"), json!(1), json!(null)]
            }
            "revenue" => vec![
                json!(0),
                json!(12.5),
                json!(MAX_REVENUE),
                json!(MAX_REVENUE + 1.0),
                json!(-0.01),
                json!("1"),
                json!(null),
            ],
            _ => unreachable!(),
        }
        .into_iter()
        .map(Some)
        .collect();
        c.push(None);
        c
    }

    fn with(base: &Value, field: &str, v: &Option<Value>) -> Value {
        let mut e = base.clone();
        match v {
            Some(v) => e[field] = v.clone(),
            None => {
                e.as_object_mut().unwrap().remove(field);
            }
        }
        e
    }

    /// The schema and `Event::from_value` accept exactly the same events
    /// (with the receiver's clock far in the future, since the schema cannot
    /// know the clock).
    #[test]
    fn event_schema_and_parser_agree() {
        let v = validator("event.schema.json");
        let now = i64::MAX;
        let check = |e: &Value| {
            let parsed = Event::from_value(e, now);
            assert_eq!(v.is_valid(e), parsed.is_ok(), "schema and parser disagree on {e}: parser says {parsed:?}");
        };
        let view = json!({"ts": 1_433_221_332_117i64, "user_id": "1", "item_id": "2", "event": "view", "rec_id": "r"});
        let buy = json!({"ts": 1_433_221_332_117i64, "user_id": "1", "item_id": "2", "event": "transaction",
                         "transaction_id": "t", "revenue": 3.5});
        let mut checked = 0;
        for base in [&view, &buy] {
            for field in EVENT_FIELDS {
                for c in candidates(field) {
                    check(&with(base, field, &c));
                    checked += 1;
                }
            }
            let mut extra = base.clone();
            extra["price"] = json!(1);
            check(&extra);
        }
        for kind in candidates("event") {
            for tid in candidates("transaction_id") {
                for revenue in candidates("revenue") {
                    check(&with(&with(&with(&view, "event", &kind), "transaction_id", &tid), "revenue", &revenue));
                    checked += 1;
                }
            }
        }
        for not_an_object in [json!([]), json!("view"), json!(null), json!(1)] {
            check(&not_an_object);
        }
        assert!(checked > 800, "{checked}");
    }

    #[test]
    fn record_schemas_accept_what_the_types_write_and_reject_what_they_refuse() {
        let imp = validator("impression.schema.json");
        let good = json!({"rec_id": "r1", "ts": 5, "user_id": "u", "items": ["1", 2], "variant": "als",
                          "model_version": "v1", "source": "category_popular"});
        assert!(imp.is_valid(&good));
        assert!(Impression::parse_json(good.to_string().as_bytes()).is_ok());
        for (field, bad) in [
            ("variant", json!("ALS")),
            ("source", json!("random")),
            ("model_version", json!("CURRENT")),
            ("model_version", json!(".v")),
            ("items", json!(["a b"])),
            ("rec_id", json!(1)),
            ("ts", json!(1.5)),
            ("extra", json!(1)),
        ] {
            let mut e = good.clone();
            e[field] = bad;
            assert!(!imp.is_valid(&e), "schema accepts {e}");
            assert!(Impression::parse_json(e.to_string().as_bytes()).is_err(), "parser accepts {e}");
        }

        let ann = validator("model_announcement.schema.json");
        let good = json!({"version": "20261128T191617Z", "path": "artifacts/models/20261128T191617Z",
                          "manifest_sha256": "ab".repeat(32), "created_at": "2026-11-28T19:16:17Z"});
        assert!(ann.is_valid(&good));
        assert!(ModelAnnouncement::parse_json(good.to_string().as_bytes()).is_ok());
        for (field, bad) in [
            ("version", json!("../x")),
            ("version", json!("CURRENT")),
            ("version", json!("v".repeat(101))),
            ("manifest_sha256", json!("AB".repeat(32))),
            ("manifest_sha256", json!("ab".repeat(31))),
            ("created_at", json!("yesterday")),
            ("path", json!("")),
            ("extra", json!(1)),
        ] {
            let mut e = good.clone();
            e[field] = bad;
            assert!(!ann.is_valid(&e), "schema accepts {e}");
            assert!(ModelAnnouncement::parse_json(e.to_string().as_bytes()).is_err(), "parser accepts {e}");
        }

        let dlq = validator("dead_letter.schema.json");
        for d in [
            DeadLetter::new("r", crate::DeadLetterSource::Http, 1, &b"{}"[..]),
            DeadLetter::new("r", crate::DeadLetterSource::Updater, 1, vec![0xff]),
            DeadLetter::new("r", crate::DeadLetterSource::Replay, 1, vec![0xff, 0xfe]),
            DeadLetter::new("r", crate::DeadLetterSource::Replay, 1, vec![0xff, 0xfe, 0]),
        ] {
            let v: Value = serde_json::from_slice(&d.to_json()).unwrap();
            assert!(dlq.is_valid(&v), "schema rejects {v}");
        }
        for bad in [
            json!({"reason": "r", "source": "http", "received_ms": 1}),
            json!({"reason": "r", "source": "http", "received_ms": 1, "original": "x", "original_base64": "eA=="}),
            json!({"reason": "r", "source": "http", "received_ms": 1, "original_base64": "eA="}),
            json!({"reason": "r", "source": "kafka", "received_ms": 1, "original": "x"}),
            json!({"reason": "r", "source": "http", "received_ms": 1, "original": "x", "extra": 1}),
        ] {
            assert!(!dlq.is_valid(&bad), "schema accepts {bad}");
            assert!(DeadLetter::parse_json(bad.to_string().as_bytes()).is_err(), "parser accepts {bad}");
        }
    }
}
