//! Wire-level vocabulary shared by every recsys process (docs/design.md §2, §3, §5).
//!
//! Everything that crosses a process boundary is parsed here exactly once
//! ("parse, don't validate"): once a value has one of these types it is known to
//! be well formed, so the rest of the code never re-checks it, and every
//! producer and consumer agrees on the format because there is only one.
//!
//! Layout (everything is re-exported flat, so `schemas::Event` is the path to use):
//! - [`id`]: [`UserId`], [`ItemId`], [`TransactionId`], [`RecId`] — strings of
//!   1–64 characters `[A-Za-z0-9._:-]`; JSON integers are accepted for user,
//!   item and transaction ids and normalised to their decimal string.
//! - [`event`]: [`EventKind`] and the [`Event`] record of `recsys.events`,
//!   parsed from untrusted JSON with an [`EventError`] naming the field for every
//!   rejection, within an [`EventLimits`] time window; [`Revenue`].
//! - [`item_update`]: the [`ItemUpdate`] record of `recsys.items` (a patch of
//!   one catalog item: availability, category, [`Price`], bounded
//!   [`Properties`]), parsed like an event with an [`ItemUpdateError`].
//! - [`impression`]: the [`Impression`] record of `recsys.impressions`, with the
//!   A/B [`Variant`] and the list's [`Source`].
//! - [`announcement`]: the [`ModelAnnouncement`] record of `recsys.models`,
//!   [`ModelVersion`] and [`Sha256Hex`].
//! - [`dead_letter`]: the [`DeadLetter`] record of `recsys.events.dlq`.
//! - [`topics`]: Kafka topic names.
//! - [`keys`]: the Redis key builder [`RedisKeys`] (docs/design.md §5).
//! - [`recs`]: the cached list [`RecsList`] stored under `recs:{user}`.
//! - [`popularity`]: the live rankings `trending:{window}` (forward-decayed
//!   counts), their [`Window`]s, `[popularity]` ([`PopularityConfig`]) and the
//!   sentinel model version [`LIVE_POPULAR_VERSION`] of the lists served from them.
//! - [`history`]: one entry [`HistEntry`] of a user's history hash `hist:{user}`.
//! - [`stats`]: the live outcome [`Counters`] of `stats:*` hashes.
//! - [`clock`]: [`now_ms`], the wall clock every process reads.
//! - [`csv`]: CSV event logs and item-property files, the one reader of the
//!   trainer and `replay`: header by name, clocks, row rules, [`csv::Rejections`].
//! - [`json_schema`]: the JSON Schema documents of the five records, published
//!   in `schemas/json/` for producers in other languages.
//!
//! Records that derive their parsing (`Impression`, `ModelAnnouncement`,
//! `DeadLetter`) reject unknown and duplicate fields and fail with a
//! [`RecordError`]; `Event` has its own parser because its rules span fields
//! (absent `ts`, purchase data only on transactions) and its reasons go back
//! to the producer.

pub mod announcement;
pub mod clock;
pub mod csv;
pub mod dead_letter;
pub mod event;
pub mod history;
pub mod id;
pub mod impression;
pub mod item_update;
pub mod json_schema;
pub mod keys;
pub mod popularity;
pub mod recs;
pub mod stats;
pub mod topics;

pub use announcement::{ModelAnnouncement, ModelVersion, ModelVersionError, Sha256Error, Sha256Hex, MAX_VERSION_LEN};
pub use clock::now_ms;
pub use dead_letter::{DeadLetter, DeadLetterSource, ParseDeadLetterSourceError};
pub use event::{
    BatchItem, Event, EventError, EventKind, EventLimits, ParseEventKindError, Revenue, RevenueError, TimestampError,
    DEFAULT_MIN_TS, EVENT_FIELDS, MAX_REVENUE,
};
pub use history::HistEntry;
pub use id::{IdError, ItemId, RecId, TransactionId, UserId, ID_PATTERN, MAX_ID_LEN};
pub use impression::{Impression, ParseNameError, Source, Variant};
pub use item_update::{
    catalog_key_item, ItemUpdate, ItemUpdateError, Price, Properties, PropertyError, ITEM_UPDATE_FIELDS, MAX_PRICE,
    MAX_PROPERTIES, MAX_PROPERTY_NAME_CHARS, MAX_PROPERTY_VALUE_CHARS,
};
pub use json_schema::{json_schemas, write_json_schemas, JSON_SCHEMA_DIR};
pub use keys::RedisKeys;
pub use popularity::{live_popular_version, PopularityConfig, Window, WindowError, LIVE_POPULAR_VERSION};
pub use recs::{RecItem, RecsList};
pub use stats::Counters;

/// A record of `recsys.impressions`, `recsys.models` or `recsys.events.dlq`
/// failed to parse. `Display` names the record and carries serde's message,
/// which names the field and the position.
#[derive(Debug, thiserror::Error)]
#[error("invalid {record}: {source}")]
pub struct RecordError {
    /// Which record: `impression`, `model announcement` or `dead letter`.
    pub record: &'static str,
    #[source]
    source: serde_json::Error,
}

impl RecordError {
    fn new(record: &'static str, source: serde_json::Error) -> RecordError {
        RecordError { record, source }
    }
}
