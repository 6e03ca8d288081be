//! The projector function (ARCHITECTURE.md §2, §6): its rule sends it every
//! `crm.customer`, `crm.consent`, `crm.commerce`, `crm.messaging` and
//! `crm.journey` event, and it keeps the customer 360, the timeline, the
//! email index, profile metrics and segments, funnels, attribution and
//! campaign stats. The handler and the Lambda wiring are the
//! ones every bus consumer shares ([`crm_bus_consumer`]); this crate names
//! the group ([`group`], [`build`]) and its settings ([`Settings`]). The
//! local runtime hosts the same group ([`ConsumerGroup::projector_at`], on
//! its own clock).

pub use crm_bus_consumer::handler;

use crm_aws::secrets::SecretSetting;
use crm_bus_consumer::{ConfigError, ConsumerSettings, Ports};
use crm_core::consumer::ConsumerGroup;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::privacy::IdentifierHasher;
use std::sync::Arc;

/// The projector's settings: those of every consumer function
/// (`EVENTS_TABLE`, `READ_MODELS_TABLE`, `DEAD_LETTER_QUEUE_URL`,
/// `KEYS_TABLE`, `DATA_KEYS_KMS_KEY_ID`, `METRICS_NAMESPACE`, `WARM_UP`),
/// and the identifier hash secret its email and name indexes are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub consumer: ConsumerSettings,
    /// `IDENTIFIER_HASH_SECRET_ARN`: the secret of the email and name
    /// indexes' keyed hashes (decision 0046), the same as the api's, read
    /// from Secrets Manager at cold start (decision 0047).
    pub identifier_hash_secret: SecretSetting,
}

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [ConsumerSettings::names(), vec!["IDENTIFIER_HASH_SECRET_ARN"]].concat()
    }

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Settings {
            consumer: ConsumerSettings::from_lookup(lookup)?,
            identifier_hash_secret: SecretSetting::required(lookup, "IDENTIFIER_HASH_SECRET_ARN")?,
        })
    }
}

/// The consumers the projector hosts; its email and name indexes are keyed
/// by hashes made with `identifiers` (decision 0046).
pub fn group(
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    dead_letters: Arc<dyn DeadLetterQueue>,
    identifiers: IdentifierHasher,
) -> ConsumerGroup {
    ConsumerGroup::projector(events, docs, dead_letters, identifiers)
}

/// The projector's group over the function's ports, keying its indexes
/// with `identifiers` (made from the secret
/// [`Settings::identifier_hash_secret`] names, read at cold start).
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
            "ProjectorFunction",
            &Settings::names(),
            &[WARM_UP],
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
