//! Wire-level vocabulary shared by every recsys process.
//!
//! Everything that crosses a process boundary is parsed here exactly once
//! ("parse, don't validate"): once a value has one of these types it is known to
//! be well formed, so the rest of the code never re-checks it.
//!
//! Layout:
//! - [`id`]: [`UserId`] / [`ItemId`], strings of 1–64 characters `[A-Za-z0-9._:-]`;
//!   JSON integers are accepted and normalised to their decimal string.
//! - [`event`]: [`EventKind`] (view / addtocart / transaction) with its default
//!   implicit-feedback weight.

pub mod event;
pub mod id;

pub use event::{EventKind, ParseEventKindError};
pub use id::{IdError, ItemId, UserId, MAX_ID_LEN};
