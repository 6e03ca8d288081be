//! The projector function (ARCHITECTURE.md §2, §6): its rule sends it every
//! `crm.customer`, `crm.consent`, `crm.commerce`, `crm.messaging` and
//! `crm.journey` event, and it keeps the customer 360, the timeline, the
//! email index, profile metrics and segments, funnels, attribution and
//! campaign stats. The handler and the Lambda wiring are the
//! ones every bus consumer shares ([`crm_bus_consumer`]); this crate names
//! the group.

pub use crm_bus_consumer::handler;

use crm_core::consumer::ConsumerGroup;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use std::sync::Arc;

/// The consumers the projector hosts.
pub fn group(
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    dead_letters: Arc<dyn DeadLetterQueue>,
) -> ConsumerGroup {
    ConsumerGroup::projector(events, docs, dead_letters)
}
