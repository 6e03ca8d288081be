//! The api function's settings ([`Settings::from_lookup`], from its
//! environment on Lambda) and its assembly ([`build`]: the handlers' state
//! from its ports and [`ApiSettings`]), which the Lambda `main` and the local
//! runtime (crm-local, with its SQLite ports, its bearer token and its
//! database's secrets) share.

use crate::{AppState, Auth, IngestSources};
use crm_aws::health::WatchedQueue;
use crm_aws::lambda::{identifier_hasher, required, warm_up_wanted, ConfigError};
use crm_aws::stores::EventStoreTables;
use crm_core::clock::Clock;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::ports::{ConsumerHealth, EventStore, ReadModelStore};
use crm_core::privacy::{IdentifierHasher, KeyStore};
use crm_core::retention::RetentionPolicy;
use crm_core::scheduler::Scheduler;
use std::sync::Arc;

/// Why the api's settings cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Missing(#[from] ConfigError),
    /// A setting that does not parse (the message names it).
    #[error("{0}")]
    Invalid(String),
}

/// The api function's settings.
#[derive(Clone)]
pub struct Settings {
    /// `EVENTS_TABLE`, `KEYS_TABLE`, `DATA_KEYS_KMS_KEY_ID`: the encrypted
    /// event store (decisions 0016, 0017).
    pub event_store: EventStoreTables,
    /// `READ_MODELS_TABLE`.
    pub read_models_table: String,
    /// `SCHEDULE_GROUP`, `EVENT_BUS_ARN`, `SCHEDULER_ROLE_ARN`: where cart
    /// and order timers go.
    pub schedule_group: String,
    pub event_bus_arn: String,
    pub scheduler_role_arn: String,
    /// `SCHEDULER_DEAD_LETTER_ARN` (optional, blank is none).
    pub scheduler_dead_letter_arn: Option<String>,
    /// `UNSUBSCRIBE_SECRET`, `PUBLIC_BASE_URL`, `IDENTIFIER_HASH_SECRET`,
    /// `INGEST_WRITE_KEYS` (`source:kind:key,...`, kind `client` or `server`;
    /// the older `source:key` is a server source; none when blank): what the
    /// handlers are given ([`ApiSettings`], with API Gateway's auth).
    pub api: ApiSettings,
    /// `RETENTION_ACTIVITY_DAYS`, `RETENTION_LEGAL_YEARS`: activity items'
    /// TTL (defaults 90 days, 7 years).
    pub retention: RetentionPolicy,
    /// `HEALTH_QUEUES` (`name=queue-url|dead-letter-url,...`; none when
    /// unset): the queues `GET /health` watches.
    pub health_queues: Vec<WatchedQueue>,
    /// `WARM_UP`: one warm-up call at cold start.
    pub warm_up: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("event_store", &self.event_store)
            .field("read_models_table", &self.read_models_table)
            .field("schedule_group", &self.schedule_group)
            .field("public_base_url", &self.api.public_base_url)
            .field("health_queues", &self.health_queues)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub const NAMES: &'static [&'static str] = &[
        "EVENTS_TABLE",
        "KEYS_TABLE",
        "DATA_KEYS_KMS_KEY_ID",
        "READ_MODELS_TABLE",
        "SCHEDULE_GROUP",
        "EVENT_BUS_ARN",
        "SCHEDULER_ROLE_ARN",
        "SCHEDULER_DEAD_LETTER_ARN",
        "UNSUBSCRIBE_SECRET",
        "PUBLIC_BASE_URL",
        "IDENTIFIER_HASH_SECRET",
        "INGEST_WRITE_KEYS",
        crm_core::retention::ACTIVITY_DAYS_ENV,
        crm_core::retention::LEGAL_YEARS_ENV,
        "HEALTH_QUEUES",
        "WARM_UP",
    ];

    /// The settings from `lookup` (the environment on Lambda): a missing
    /// required one is an error naming it; one that does not parse, an
    /// error saying why.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let optional = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let event_store = EventStoreTables {
            events_table: required(lookup, "EVENTS_TABLE")?,
            keys_table: required(lookup, "KEYS_TABLE")?,
            data_keys_kms_key_id: required(lookup, "DATA_KEYS_KMS_KEY_ID")?,
        };
        let read_models_table = required(lookup, "READ_MODELS_TABLE")?;
        let schedule_group = required(lookup, "SCHEDULE_GROUP")?;
        let event_bus_arn = required(lookup, "EVENT_BUS_ARN")?;
        let scheduler_role_arn = required(lookup, "SCHEDULER_ROLE_ARN")?;
        let scheduler_dead_letter_arn = optional("SCHEDULER_DEAD_LETTER_ARN");
        // The unsubscribe-link secret (Secrets Manager, resolved into the environment by CloudFormation).
        let unsubscribe = TokenSigner::new(required(lookup, "UNSUBSCRIBE_SECRET")?.as_bytes());
        let public_base_url = required(lookup, "PUBLIC_BASE_URL")?;
        // The proof ledger's identifier hashes (decision 0019): erasure records them.
        let identifiers = identifier_hasher(lookup)?;
        let ingest_sources = IngestSources::parse(&optional("INGEST_WRITE_KEYS").unwrap_or_default())
            .map_err(|e| SettingsError::Invalid(format!("INGEST_WRITE_KEYS: {e}")))?;
        let retention = RetentionPolicy::from_lookup(lookup).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        let health_queues = WatchedQueue::parse_all(&optional("HEALTH_QUEUES").unwrap_or_default())
            .map_err(|e| SettingsError::Invalid(format!("HEALTH_QUEUES: {e}")))?;
        Ok(Settings {
            event_store,
            read_models_table,
            schedule_group,
            event_bus_arn,
            scheduler_role_arn,
            scheduler_dead_letter_arn,
            api: ApiSettings {
                auth: Auth::Gateway,
                unsubscribe,
                public_base_url,
                identifiers,
                ingest_sources,
            },
            retention,
            health_queues,
            warm_up: warm_up_wanted(lookup),
        })
    }
}

/// What the handlers are configured with: on Lambda from [`Settings`]
/// (API Gateway's auth, the secrets of Secrets Manager), locally from the
/// bearer token and the database's own secrets (or the same variables).
#[derive(Clone)]
pub struct ApiSettings {
    pub auth: Auth,
    /// Signs and checks the unsubscribe and preference-centre tokens.
    pub unsubscribe: TokenSigner,
    /// Where customers reach the API (links are `<base>/u/<token>`).
    pub public_base_url: String,
    /// The proof ledger's identifier hashes (the consent and channel functions' secret).
    pub identifiers: IdentifierHasher,
    /// The sources allowed to send to `/v1/*`, with their write keys.
    pub ingest_sources: IngestSources,
}

/// What the api runs on.
pub struct ApiPorts {
    /// The event store, encrypting on append and decrypting on read.
    pub events: Arc<dyn EventStore>,
    pub read_models: Arc<dyn ReadModelStore>,
    pub clock: Arc<dyn Clock>,
    /// Where cart and order timers are set.
    pub scheduler: Arc<dyn Scheduler>,
    /// The customers' data keys (erasure deletes one).
    pub keys: Arc<dyn KeyStore>,
    /// Where `GET /health` learns the consumers' lag (none: it cannot).
    pub health: Option<Arc<dyn ConsumerHealth>>,
}

/// The handlers' state over `ports`, configured with `settings`: the one
/// assembly of the Lambda function and the local runtime.
pub fn build(ports: ApiPorts, settings: ApiSettings) -> AppState {
    let ApiPorts {
        events,
        read_models,
        clock,
        scheduler,
        keys,
        health,
    } = ports;
    let ApiSettings {
        auth,
        unsubscribe,
        public_base_url,
        identifiers,
        ingest_sources,
    } = settings;
    let state = AppState::new(events, read_models, clock, scheduler, auth)
        .with_unsubscribe(unsubscribe, public_base_url)
        .with_keys(keys)
        .with_identifiers(identifiers)
        .with_ingest_sources(ingest_sources);
    match health {
        Some(health) => state.with_health(health),
        None => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::consent::{Channel, Purpose};
    use crm_core::messaging::unsubscribe::UnsubscribeToken;
    use crm_core::privacy::IdentifierKind;

    const REQUIRED: [(&str, &str); 11] = [
        ("EVENTS_TABLE", "events"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("READ_MODELS_TABLE", "read-models"),
        ("SCHEDULE_GROUP", "crm"),
        ("EVENT_BUS_ARN", "arn:bus"),
        ("SCHEDULER_ROLE_ARN", "arn:role"),
        ("UNSUBSCRIBE_SECRET", "unsubscribe-key"),
        ("PUBLIC_BASE_URL", "https://crm.shop.example"),
        ("IDENTIFIER_HASH_SECRET", "pepper"),
        ("INGEST_WRITE_KEYS", ""),
    ];

    fn lookup<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_required_settings_and_the_defaults() {
        let settings = Settings::from_lookup(&lookup(REQUIRED)).unwrap();
        assert_eq!(settings.event_store.events_table, "events");
        assert_eq!(settings.event_store.keys_table, "keys");
        assert_eq!(settings.event_store.data_keys_kms_key_id, "alias/data-keys");
        assert_eq!(settings.read_models_table, "read-models");
        assert_eq!(
            (settings.schedule_group.as_str(), settings.event_bus_arn.as_str()),
            ("crm", "arn:bus")
        );
        assert_eq!(settings.scheduler_role_arn, "arn:role");
        assert_eq!(settings.scheduler_dead_letter_arn, None);
        assert_eq!(settings.api.public_base_url, "https://crm.shop.example");
        assert!(matches!(settings.api.auth, Auth::Gateway));
        assert_eq!(
            settings.api.identifiers.hash(IdentifierKind::Email, "a@example.com"),
            IdentifierHasher::new(b"pepper").hash(IdentifierKind::Email, "a@example.com")
        );
        let now = chrono::Utc::now();
        let token = TokenSigner::new(b"unsubscribe-key").sign(&UnsubscribeToken {
            customer_id: "c-1".into(),
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            expires_at: now + chrono::Duration::days(1),
        });
        assert!(settings.api.unsubscribe.verify(&token, now).is_ok());
        assert_eq!(format!("{:?}", settings.api.ingest_sources), "IngestSources([])");
        assert_eq!(settings.retention, RetentionPolicy::new(90, 7).unwrap());
        assert!(settings.health_queues.is_empty());
        assert!(!settings.warm_up);
    }

    #[test]
    fn every_optional_setting_is_read() {
        let all = lookup(REQUIRED.into_iter().chain([
            ("SCHEDULER_DEAD_LETTER_ARN", "arn:dlq"),
            ("RETENTION_ACTIVITY_DAYS", "120"),
            ("RETENTION_LEGAL_YEARS", "10"),
            ("HEALTH_QUEUES", "projector=https://sqs/p|https://sqs/p-dlq"),
            ("WARM_UP", "1"),
        ]));
        // REQUIRED's INGEST_WRITE_KEYS is blank: give it a source.
        let all = move |name: &str| match name {
            "INGEST_WRITE_KEYS" => Some("shop:wk_0123456789abcdef,web:client:wk_web_0123456789abcdef".to_string()),
            _ => all(name),
        };
        let settings = Settings::from_lookup(&all).unwrap();
        assert_eq!(settings.scheduler_dead_letter_arn.as_deref(), Some("arn:dlq"));
        assert_eq!(
            format!("{:?}", settings.api.ingest_sources),
            r#"IngestSources(["shop:server", "web:client"])"#
        );
        assert_eq!(settings.retention, RetentionPolicy::new(120, 10).unwrap());
        assert_eq!(
            settings.health_queues,
            vec![WatchedQueue {
                name: "projector".into(),
                queue_url: "https://sqs/p".into(),
                dead_letter_url: "https://sqs/p-dlq".into(),
            }]
        );
        assert!(settings.warm_up);
        let asked = std::cell::RefCell::new(Vec::new());
        Settings::from_lookup(&|name: &str| {
            asked.borrow_mut().push(name.to_string());
            all(name)
        })
        .unwrap();
        let mut asked = asked.into_inner();
        asked.dedup();
        assert_eq!(asked, Settings::NAMES);
    }

    #[test]
    fn errors_name_the_variable() {
        for (missing, _) in REQUIRED.iter().filter(|(name, _)| *name != "INGEST_WRITE_KEYS") {
            let without = lookup(REQUIRED.into_iter().filter(|(name, _)| name != missing));
            assert_eq!(
                Settings::from_lookup(&without).map(|_| ()),
                Err(SettingsError::Missing(ConfigError(missing))),
                "{missing}"
            );
        }
        for (name, bad) in [
            ("INGEST_WRITE_KEYS", "no-key"),
            ("HEALTH_QUEUES", "nameless"),
            ("RETENTION_ACTIVITY_DAYS", "soon"),
        ] {
            let with_bad = lookup([(name, bad)].into_iter().chain(REQUIRED));
            match Settings::from_lookup(&with_bad) {
                Err(SettingsError::Invalid(message)) => assert!(message.contains(name), "{name}: {message}"),
                other => panic!("{name}={bad}: {:?}", other.map(|_| ())),
            }
        }
    }
}
