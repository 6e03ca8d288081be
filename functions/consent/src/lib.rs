//! The consent function (ARCHITECTURE.md §2, §6): its rule sends it
//! `ConsentGranted` and `ConsentRevoked` (and the customer events the proof
//! ledger needs), and it keeps the consent ledger the channel function asks
//! before it sends and the proof ledger (decision 0019). Other events of a
//! customer's stream never reach it, so nearly every delivery fills a gap from the
//! event store first. The handler and the Lambda wiring are the ones every
//! bus consumer shares ([`crm_bus_consumer`]); this crate names the group
//! ([`group`], [`build`]) and its settings ([`Settings`]). The local runtime
//! hosts the same group ([`ConsumerGroup::consent`]).

pub use crm_bus_consumer::handler;

use crm_bus_consumer::Ports;
use crm_core::assembly::AssembledGroups;
use crm_core::consumer::ConsumerGroup;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::privacy::IdentifierHasher;
use std::sync::Arc;

/// The function's settings: those of every consumer function that hashes
/// identifiers.
pub type Settings = crm_bus_consumer::HashingConsumerSettings;

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

/// The consent function's group over its ports, hashing identifiers with
/// `identifiers` (made from the secret [`Settings::identifier_hash_secret`]
/// names, read at cold start).
pub fn build(ports: &Ports, identifiers: IdentifierHasher) -> ConsumerGroup {
    group(
        ports.events.clone(),
        ports.docs.clone(),
        ports.dead_letters.clone(),
        identifiers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_bus_consumer::settings::{compare_with_template, WARM_UP};

    #[test]
    fn the_template_sets_what_the_settings_read() {
        let problems = compare_with_template(
            include_str!("../../../template.yaml"),
            "ConsentFunction",
            &Settings::names(),
            &[WARM_UP],
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
