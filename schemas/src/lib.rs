//! Wire-level vocabulary shared by every recsys process.
//!
//! Everything that crosses a process boundary is parsed here exactly once
//! ("parse, don't validate"): once a value has one of these types it is known to
//! be well formed, so the rest of the code never re-checks it.
//!
//! Layout (everything is re-exported flat):
//! - [`id`]: [`UserId`] / [`ItemId`], strings of 1–64 characters `[A-Za-z0-9._:-]`;
//!   JSON integers are accepted and normalised to their decimal string.
//! - [`event`]: [`EventKind`] (view / addtocart / transaction).
//! - [`wire`]: the topic records — [`Event`] (validated from untrusted JSON with a
//!   reason per rejection), [`Impression`], [`ModelAnnouncement`], [`DeadLetter`].
//! - [`topics`]: Kafka topic names.
//! - [`keys`]: Redis key builder ([`RedisKeys`]).

pub mod event;
pub mod id;
pub mod keys;
pub mod topics;
pub mod wire;

pub use event::{EventKind, ParseEventKindError};
pub use id::{IdError, ItemId, UserId, MAX_ID_LEN};
pub use keys::RedisKeys;
pub use wire::{DeadLetter, Event, EventError, EventLimits, Impression, ModelAnnouncement, Source, Variant};
