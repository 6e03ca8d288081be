//! The consent function (ARCHITECTURE.md §2, §6): its rule sends it
//! `ConsentGranted` and `ConsentRevoked` (and the customer events the proof
//! ledger needs), and it keeps the consent ledger the channel function asks
//! before it sends and the proof ledger (decision 0019). Other events of a
//! customer's stream never reach it, so nearly every delivery fills a gap from the
//! event store first. The handler and the Lambda wiring are the ones every
//! bus consumer shares ([`crm_bus_consumer`]); this crate names the group.

pub use crm_bus_consumer::handler;

use crm_core::consumer::ConsumerGroup;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::privacy::IdentifierHasher;
use std::sync::Arc;

/// The consumers the consent function hosts: the consent ledger, and the
/// proof ledger by identifier hashes made with `identifiers` (decision 0019).
pub fn group(
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    dead_letters: Arc<dyn DeadLetterQueue>,
    identifiers: IdentifierHasher,
) -> ConsumerGroup {
    ConsumerGroup::consent(events, docs, dead_letters, identifiers)
}
