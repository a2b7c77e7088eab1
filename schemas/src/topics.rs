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
/// Every topic the system uses (what ingest creates when missing).
pub const ALL: [&str; 4] = [EVENTS, EVENTS_DLQ, IMPRESSIONS, MODELS];
