//! Kafka topic names, in one place, so a typo cannot create a second topic.

/// [`crate::Event`] records, key = user id (one user's events stay ordered in one partition).
pub const EVENTS: &str = "recsys.events";
/// [`crate::DeadLetter`] records: rejected input with its reason.
pub const EVENTS_DLQ: &str = "recsys.events.dlq";
/// [`crate::Impression`] records, key = user id. With the same partition count
/// as [`EVENTS`] and the default partitioner, a user's impressions land in the
/// same partition number as their events.
pub const IMPRESSIONS: &str = "recsys.impressions";
/// [`crate::ModelAnnouncement`] records, key [`crate::ModelAnnouncement::KEY`].
pub const MODELS: &str = "recsys.models";
/// [`crate::ItemUpdate`] records, key = item id; compacted, so it keeps at
/// least each item's latest update.
pub const ITEMS: &str = "recsys.items";
/// Every topic the system uses (what ingest creates when missing).
pub const ALL: [&str; 5] = [EVENTS, EVENTS_DLQ, IMPRESSIONS, MODELS, ITEMS];
/// The topics created with `cleanup.policy=compact` (the others keep by time).
pub const COMPACTED: [&str; 1] = [ITEMS];
