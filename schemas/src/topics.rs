//! Kafka topic names, in one place.

/// Storefront events, key = user id.
pub const EVENTS: &str = "recsys.events";
/// Rejected input with its reason.
pub const EVENTS_DLQ: &str = "recsys.events.dlq";
/// Served lists, key = user id (same partition count as [`EVENTS`], so one
/// consumer sees a user's impressions and events together).
pub const IMPRESSIONS: &str = "recsys.impressions";
/// Published models, key `model`.
pub const MODELS: &str = "recsys.models";
/// Every topic the system uses.
pub const ALL: [&str; 4] = [EVENTS, EVENTS_DLQ, IMPRESSIONS, MODELS];
