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

use crm_aws::secrets::SecretSetting;
use crm_bus_consumer::{ConfigError, ConsumerSettings, Ports};
use crm_core::consumer::ConsumerGroup;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::privacy::IdentifierHasher;
use std::sync::Arc;

/// The consent function's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// What every consumer function reads (tables, dead-letter queue,
    /// `METRICS_NAMESPACE`, `WARM_UP`).
    pub consumer: ConsumerSettings,
    /// `IDENTIFIER_HASH_SECRET_ARN`: the secret of the proof ledger's
    /// identifier hashes (decision 0019), the same as the api's and the
    /// channel's, read from Secrets Manager at cold start (decision 0047).
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
    use crm_bus_consumer::settings::{assert_reads_exactly, compare_with_template, lookup_from, WARM_UP};

    const ALL: [(&str, &str); 7] = [
        ("EVENTS_TABLE", "events"),
        ("READ_MODELS_TABLE", "read-models"),
        ("DEAD_LETTER_QUEUE_URL", "https://sqs/consent-dlq"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("METRICS_NAMESPACE", "Shop"),
        (
            "IDENTIFIER_HASH_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:1:secret:identifier-AbCdEf",
        ),
    ];

    #[test]
    fn every_setting_is_read() {
        let settings = Settings::from_lookup(&lookup_from(ALL)).unwrap();
        assert_eq!(settings.consumer.ports.dead_letter_queue_url, "https://sqs/consent-dlq");
        assert_eq!(settings.consumer.metrics_namespace, "Shop");
        assert!(!settings.consumer.warm_up);
        assert_eq!(
            settings.identifier_hash_secret,
            SecretSetting {
                setting: "IDENTIFIER_HASH_SECRET_ARN",
                secret_id: "arn:aws:secretsmanager:us-east-1:1:secret:identifier-AbCdEf".into(),
            }
        );
        assert_reads_exactly(&Settings::names(), lookup_from(ALL), |l| Settings::from_lookup(&l));
    }

    #[test]
    fn a_missing_setting_is_named() {
        for (missing, _) in ALL.iter().filter(|(name, _)| *name != "METRICS_NAMESPACE") {
            let lookup = lookup_from(ALL.into_iter().filter(|(name, _)| name != missing));
            assert_eq!(Settings::from_lookup(&lookup), Err(ConfigError(missing)), "{missing}");
        }
    }

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
