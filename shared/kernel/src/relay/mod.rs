//! The relay: stored events onto the bus (ARCHITECTURE.md §2, the outbox;
//! decision 0030).
//!
//! The event table's stream hands the relay its new items in order; the relay
//! publishes each event as a [`BusEntry`] and never lets the stream skip one:
//!
//! - entries go out in order, at most [`MAX_ENTRIES_PER_PUT`](crate::bus::MAX_ENTRIES_PER_PUT) a call and at
//!   most [`MAX_ENTRY_BYTES`](crate::bus::MAX_ENTRY_BYTES) a call (PutEvents' limit on a whole request);
//! - a call that fails as a whole (`BusError::Unavailable`: throttled, 5xx,
//!   connection lost) and the entries the bus refused one by one
//!   (`ThrottlingException`, `InternalFailure`, ...) are sent again, a
//!   bounded number of times ([`RetryPolicy`]) with a doubling pause between
//!   attempts; only what is still pending goes again. A refusal that no retry
//!   can change (`BusError::Refused`: no such bus, access denied; or a
//!   per-entry code in [`PERMANENT_ENTRY_CODES`]) is not retried;
//! - an event still not published after its attempts is parked on the
//!   dead-letter queue *whole*, as a [`ParkedEvent`]: its key in the events
//!   table (`pk` = stream id, `sk` = version), its id and type, and the bus
//!   entry itself (the envelope as stored, personal fields still encrypted),
//!   with the last error as the reason. An entry too large for the bus (over
//!   [`MAX_ENTRY_BYTES`]) or for a consumer's queue (the EventBridge event a
//!   rule delivers over [`MAX_QUEUE_MESSAGE_BYTES`]) is parked at once, and
//!   an entry too large for a dead-letter message (over
//!   [`MAX_PARKED_ENTRY_BYTES`]) is parked by its key alone: the event stays
//!   in the table and is re-read from there;
//! - a record that is not a readable event (poison) is parked with its
//!   reason and the stream record as received (its `Keys` name the item);
//! - only a record that could not even be parked stops the run: it is named
//!   in [`RelayReport::first_failure`] and the caller has it and everything
//!   after it delivered again. Entries after it that did go out are published
//!   twice then; consumers are idempotent (§6), so that is harmless, while
//!   skipping one would not be.
//!
//! `crm-ops dlq redrive --to relay` publishes parked events again and
//! `crm-ops republish` a time range straight from the table, both through
//! this relay.
//!
//! Nothing here knows about Lambda or EventBridge: the bus and the dead-letter
//! queue are ports, and the pause between attempts is injected (a no-op by
//! default) so crm-core needs no async runtime.

mod entry;
mod parked;
mod pause;
mod run;

pub use entry::{
    delivered_size, undeliverable, wire_size, NotPublished, MAX_PARKED_ENTRY_BYTES, MAX_QUEUE_MESSAGE_BYTES,
    PERMANENT_ENTRY_CODES, TIME_FIELD_BYTES,
};
pub use parked::{stream_record_key, EventKey, ParkedEvent, RelayLetter};
#[cfg(feature = "tokio-pause")]
pub use pause::TokioPause;
pub use pause::{NoPause, Pause, RetryPolicy};
pub use run::Relay;

use crate::bus::BusEntry;
use crate::ports::DeadLetter;

/// The `consumer` of the relay's dead letters.
pub const RELAY_CONSUMER: &str = "relay";

/// What to do with one record of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Put it on the bus.
    Publish(BusEntry),
    /// Park it on the dead-letter queue (a record that is not a readable event).
    Park(DeadLetter),
}

/// One record of the stream, identified for a retry by `record_id` (the
/// stream record's sequence number).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayRecord {
    pub record_id: String,
    pub outbound: Outbound,
}

impl RelayRecord {
    pub fn publish(record_id: impl Into<String>, entry: BusEntry) -> Self {
        RelayRecord {
            record_id: record_id.into(),
            outbound: Outbound::Publish(entry),
        }
    }

    pub fn park(record_id: impl Into<String>, letter: DeadLetter) -> Self {
        RelayRecord {
            record_id: record_id.into(),
            outbound: Outbound::Park(letter),
        }
    }
}

/// What a relay run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Entries the bus accepted (including any after `first_failure`).
    pub published: usize,
    /// Records parked on the dead-letter queue.
    pub parked: usize,
    /// The ids of the parked records, in order.
    pub parked_records: Vec<String>,
    /// The first record, in input order, that could be neither published nor
    /// parked: it and every record after it must be delivered again.
    pub first_failure: Option<String>,
}

impl RelayReport {
    pub fn is_complete(&self) -> bool {
        self.first_failure.is_none()
    }
}

#[cfg(test)]
mod tests;
