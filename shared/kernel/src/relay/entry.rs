//! What the bus, a consumer's queue and the dead-letter queue take: the
//! size limits of an entry, and the refusals no retry changes.

use crate::bus::{BusEntry, MAX_ENTRY_BYTES};
use crate::failure::{Classify, FailureKind};
use crate::ports::BusError;

/// PutEvents counts an entry's `Time` as 14 bytes; the EventBridge adapter
/// always sets it (to `occurred_at`).
pub const TIME_FIELD_BYTES: usize = 14;

/// The largest entry a [`ParkedEvent`] carries whole. A queue message holds
/// 256 KB (body and attributes); the letter's other fields, its reason and
/// the attributes stay well inside the 16 KB left. A larger entry is parked
/// by its key and re-read from the events table on redrive.
pub const MAX_PARKED_ENTRY_BYTES: usize = 240 * 1024;

/// Per-entry PutEvents error codes no retry can change: the entry is parked
/// at once. Every other code (`ThrottlingException`, `InternalFailure`, ...)
/// is retried.
pub const PERMANENT_ENTRY_CODES: &[&str] = &[
    "MalformedDetail",
    "InvalidArgument",
    "ValidationException",
    "AccessDeniedException",
    "NotAuthorizedForSourceException",
    "NotAuthorizedForDetailTypeException",
];

/// Why the bus did not take an entry. Its kind ([`Classify`]) decides
/// whether the relay sends it again (retryable) or parks it now (poison).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPublished {
    /// The call failed as a whole: the [`BusError`]'s kind.
    #[error("PutEvents {}: {}", if matches!(.0, BusError::Refused(_)) { "refused the call" } else { "failed" }, bus_message(.0))]
    Call(#[source] BusError),
    /// The bus refused this entry with `code`: poison when the code is one
    /// of [`PERMANENT_ENTRY_CODES`], retryable otherwise.
    #[error("PutEvents refused the entry: {code}: {message}")]
    Entry { code: String, message: String },
    /// Still not taken after the relay's attempts: parked.
    #[error("not published after {attempts} attempt(s): {last}")]
    GaveUp { attempts: u32, last: Box<NotPublished> },
}

fn bus_message(e: &BusError) -> &str {
    match e {
        BusError::Unavailable(m) | BusError::Refused(m) => m,
    }
}

impl Classify for NotPublished {
    fn kind(&self) -> FailureKind {
        match self {
            NotPublished::Call(e) => e.kind(),
            NotPublished::Entry { code, .. } if PERMANENT_ENTRY_CODES.contains(&code.as_str()) => FailureKind::Poison,
            NotPublished::Entry { .. } => FailureKind::Retryable,
            NotPublished::GaveUp { .. } => FailureKind::Poison,
        }
    }
}

/// The size PutEvents counts for `entry` as the relay sends it.
pub fn wire_size(entry: &BusEntry) -> usize {
    entry.size_bytes().saturating_add(TIME_FIELD_BYTES)
}

/// SQS's classic message size limit. A consumer's queue receives each event
/// as the EventBridge event JSON (decision 0029), which is larger than the
/// entry: an entry the bus takes may still not fit the queue.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = 256 * 1024;

/// What EventBridge adds around an entry stays well under this.
const EVENT_FRAME_BYTES: usize = 1024;

/// The size of `entry` as a consumer's queue receives it: the EventBridge
/// event JSON, with the longest account id and region names.
pub fn delivered_size(entry: &BusEntry) -> usize {
    serde_json::to_vec(&entry.to_event_json("123456789012", "ap-southeast-5"))
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

/// Why `entry` can never be delivered (too large for the bus or for a
/// consumer's queue), if it cannot.
pub fn undeliverable(entry: &BusEntry) -> Option<String> {
    let e = &entry.detail;
    let size = wire_size(entry);
    let what = format!(
        "{} {} v{} stays in the event store",
        e.event_type, e.stream_id, e.version
    );
    if size > MAX_ENTRY_BYTES {
        return Some(format!(
            "entry of {size} bytes is over the bus limit of {MAX_ENTRY_BYTES} bytes; {what}"
        ));
    }
    if size + EVENT_FRAME_BYTES > MAX_QUEUE_MESSAGE_BYTES {
        let delivered = delivered_size(entry);
        if delivered > MAX_QUEUE_MESSAGE_BYTES {
            return Some(format!(
                "as the event a rule delivers it is {delivered} bytes, over the queue limit of \
                 {MAX_QUEUE_MESSAGE_BYTES} bytes; {what}"
            ));
        }
    }
    None
}
