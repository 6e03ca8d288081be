//! The api function's settings on Lambda ([`Settings::from_lookup`], from
//! its environment) and its secrets ([`ApiSecrets`]: read from Secrets
//! Manager at cold start, decision 0047), which give the [`ApiSettings`]
//! its Lambda `main` hands to [`crate::build`]. Only with the `lambda`
//! feature: the local runtime configures the api without them.

use crate::{AllowedOrigins, ApiSettings, Auth, IngestSources};
use crm_aws::health::WatchedQueue;
use crm_aws::lambda::{required, warm_up_wanted, ConfigError};
use crm_aws::secrets::{SecretError, SecretReader, SecretSetting, SecretValue};
use crm_aws::stores::EventStoreTables;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::privacy::IdentifierHasher;
use crm_core::retention::RetentionPolicy;

/// Why the api's settings cannot be read.
/// The shop's `tracking.require_analytics_consent` (decision 0079).
pub const REQUIRE_ANALYTICS_CONSENT: &str = "TRACKING_REQUIRE_ANALYTICS_CONSENT";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Missing(#[from] ConfigError),
    /// A setting that does not parse (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// A secret that cannot be read from Secrets Manager (the error names it).
    #[error(transparent)]
    Secret(#[from] SecretError),
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
    /// `UNSUBSCRIBE_SECRET_ARN`, `IDENTIFIER_HASH_SECRET_ARN`,
    /// `INGEST_WRITE_KEYS_SECRET_ARN`: the secrets read at cold start
    /// ([`ApiSecrets::read`]), never their values from the environment.
    pub secrets: ApiSecrets,
    /// `PUBLIC_BASE_URL`: where customers reach the API (the signed links).
    pub public_base_url: String,
    /// `RETENTION_ACTIVITY_DAYS`, `RETENTION_LEGAL_YEARS`: activity items'
    /// TTL (defaults 90 days, 7 years).
    pub retention: RetentionPolicy,
    /// `TRACKING_REQUIRE_ANALYTICS_CONSENT` (`true`/`false`, unset: false):
    /// activity is recorded only with analytics consent (decision 0079).
    pub require_analytics_consent: bool,
    /// `HEALTH_QUEUES` (`name=queue-url|dead-letter-url,...`; none when
    /// unset): the queues `GET /health` watches.
    pub health_queues: Vec<WatchedQueue>,
    /// `METRICS_NAMESPACE` (default `Crm`): the EMF namespace of the api's
    /// metrics (`MessagesRefused`, decision 0053).
    pub metrics_namespace: String,
    /// `WARM_UP`: one warm-up call at cold start.
    pub warm_up: bool,
    /// `CONSOLE_ISSUER` and `CONSOLE_CLIENT_ID` (both set, else none): the
    /// console's OIDC sign-in (decision 0089).
    pub console: crate::console::ConsoleSignIn,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("event_store", &self.event_store)
            .field("read_models_table", &self.read_models_table)
            .field("schedule_group", &self.schedule_group)
            .field("secrets", &self.secrets)
            .field("public_base_url", &self.public_base_url)
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
        "UNSUBSCRIBE_SECRET_ARN",
        "PUBLIC_BASE_URL",
        "IDENTIFIER_HASH_SECRET_ARN",
        "INGEST_WRITE_KEYS_SECRET_ARN",
        "INGEST_ALLOWED_ORIGINS",
        crm_core::retention::ACTIVITY_DAYS_ENV,
        crm_core::retention::LEGAL_YEARS_ENV,
        REQUIRE_ANALYTICS_CONSENT,
        "HEALTH_QUEUES",
        "METRICS_NAMESPACE",
        "WARM_UP",
        "CONSOLE_ISSUER",
        "CONSOLE_CLIENT_ID",
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
        let unsubscribe = SecretSetting::required(lookup, "UNSUBSCRIBE_SECRET_ARN")?;
        let public_base_url = required(lookup, "PUBLIC_BASE_URL")?;
        let identifier_hash = SecretSetting::required(lookup, "IDENTIFIER_HASH_SECRET_ARN")?;
        let ingest_write_keys = SecretSetting::required(lookup, "INGEST_WRITE_KEYS_SECRET_ARN")?;
        let ingest_allowed_origins = AllowedOrigins::parse(&optional("INGEST_ALLOWED_ORIGINS").unwrap_or_default())
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        let retention = RetentionPolicy::from_lookup(lookup).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        let require_analytics_consent = match optional(REQUIRE_ANALYTICS_CONSENT).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(SettingsError::Invalid(format!(
                    "{REQUIRE_ANALYTICS_CONSENT} must be true or false, not {other:?}"
                )))
            }
        };
        let health_queues = WatchedQueue::parse_all(&optional("HEALTH_QUEUES").unwrap_or_default())
            .map_err(|e| SettingsError::Invalid(format!("HEALTH_QUEUES: {e}")))?;
        Ok(Settings {
            event_store,
            read_models_table,
            schedule_group,
            event_bus_arn,
            scheduler_role_arn,
            scheduler_dead_letter_arn,
            secrets: ApiSecrets {
                unsubscribe,
                identifier_hash,
                ingest_write_keys,
                ingest_allowed_origins,
            },
            public_base_url,
            retention,
            require_analytics_consent,
            health_queues,
            metrics_namespace: crm_aws::emf::EmfWriter::namespace_from(lookup),
            warm_up: warm_up_wanted(lookup),
            console: crate::console::ConsoleSignIn {
                oidc: match (optional("CONSOLE_ISSUER"), optional("CONSOLE_CLIENT_ID")) {
                    (Some(issuer), Some(client)) => Some(crate::console::OidcClient::new(&issuer, &client)),
                    _ => None,
                },
                local_link: false,
            },
        })
    }
}

/// The secrets the api reads from Secrets Manager at cold start (decision
/// 0047), by the ARNs its environment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSecrets {
    /// `UNSUBSCRIBE_SECRET_ARN`: the HMAC key of the signed unsubscribe and
    /// preference-centre links (the channel function signs with it).
    pub unsubscribe: SecretSetting,
    /// `IDENTIFIER_HASH_SECRET_ARN`: the proof ledger's and suppression
    /// list's identifier hashes (decision 0019), shared with the consent and
    /// channel functions.
    pub identifier_hash: SecretSetting,
    /// `INGEST_WRITE_KEYS_SECRET_ARN`: the ingestion sources and their write
    /// keys ([`ingest_sources_from_secret`]).
    pub ingest_write_keys: SecretSetting,
    /// `INGEST_ALLOWED_ORIGINS` (not a secret; blank: none): the origins
    /// whose pages may send with each of those sources' keys (decision
    /// 0050), checked against the sources once the secret is read.
    pub ingest_allowed_origins: AllowedOrigins,
}

impl ApiSecrets {
    /// The handlers' settings on Lambda (API Gateway's auth): each secret
    /// read once with `reader`, the write keys parsed. A secret that cannot
    /// be read, or write keys that do not parse, is an error naming the
    /// setting and the secret: the function does not start.
    pub async fn read(&self, reader: &SecretReader, public_base_url: String) -> Result<ApiSettings, SettingsError> {
        let unsubscribe = reader.read(&self.unsubscribe).await?;
        let identifier_hash = reader.read(&self.identifier_hash).await?;
        let ingest_write_keys = reader.read(&self.ingest_write_keys).await?;
        Ok(ApiSettings {
            auth: Auth::Gateway,
            unsubscribe: TokenSigner::new(unsubscribe.expose().as_bytes()),
            public_base_url,
            identifiers: IdentifierHasher::new(identifier_hash.expose().as_bytes()),
            ingest_sources: ingest_sources_from_secret(&self.ingest_write_keys, &ingest_write_keys)?
                .with_allowed_origins(self.ingest_allowed_origins.clone())
                .map_err(|e| SettingsError::Invalid(e.to_string()))?,
        })
    }
}

/// The ingestion sources the write-keys secret holds: `source:kind:key`
/// entries separated by commas or new lines (kind `client` or `server`; the
/// older `source:key` is a server source); a line starting with `#` is a
/// comment. Only comments (the template's first value) is no source. Entries
/// that do not parse are an error naming the setting and the secret, never
/// showing the value.
pub fn ingest_sources_from_secret(secret: &SecretSetting, value: &SecretValue) -> Result<IngestSources, SettingsError> {
    let entries: Vec<&str> = value
        .expose()
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    IngestSources::parse(&entries.join(","))
        .map_err(|e| SettingsError::Invalid(format!("{} (the secret {}): {e}", secret.setting, secret.secret_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNSUBSCRIBE_ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:unsubscribe-AbCdEf";
    const IDENTIFIER_ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:identifier-AbCdEf";
    const WRITE_KEYS_ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:write-keys-AbCdEf";

    const REQUIRED: [(&str, &str); 11] = [
        ("EVENTS_TABLE", "events"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("READ_MODELS_TABLE", "read-models"),
        ("SCHEDULE_GROUP", "crm"),
        ("EVENT_BUS_ARN", "arn:bus"),
        ("SCHEDULER_ROLE_ARN", "arn:role"),
        ("UNSUBSCRIBE_SECRET_ARN", UNSUBSCRIBE_ARN),
        ("PUBLIC_BASE_URL", "https://crm.shop.example"),
        ("IDENTIFIER_HASH_SECRET_ARN", IDENTIFIER_ARN),
        ("INGEST_WRITE_KEYS_SECRET_ARN", WRITE_KEYS_ARN),
    ];

    fn lookup<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn secret(setting: &'static str, secret_id: &str) -> SecretSetting {
        SecretSetting {
            setting,
            secret_id: secret_id.into(),
        }
    }

    #[test]
    fn the_console_signs_in_with_oidc_only_when_issuer_and_client_are_both_set() {
        let issuer = (
            "CONSOLE_ISSUER",
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc/",
        );
        let client = ("CONSOLE_CLIENT_ID", "console-client");
        let with_both = Settings::from_lookup(&lookup(REQUIRED.into_iter().chain([issuer, client]))).unwrap();
        let oidc = with_both.console.oidc.expect("oidc");
        assert_eq!(oidc.issuer, "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc");
        assert_eq!(oidc.client_id, "console-client");
        assert!(!with_both.console.local_link);
        let blank_client = ("CONSOLE_CLIENT_ID", " ");
        let without = Settings::from_lookup(&lookup(REQUIRED.into_iter().chain([issuer, blank_client]))).unwrap();
        assert_eq!(without.console.oidc, None);
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
        assert_eq!(settings.public_base_url, "https://crm.shop.example");
        assert_eq!(
            settings.secrets,
            ApiSecrets {
                unsubscribe: secret("UNSUBSCRIBE_SECRET_ARN", UNSUBSCRIBE_ARN),
                identifier_hash: secret("IDENTIFIER_HASH_SECRET_ARN", IDENTIFIER_ARN),
                ingest_write_keys: secret("INGEST_WRITE_KEYS_SECRET_ARN", WRITE_KEYS_ARN),
                ingest_allowed_origins: AllowedOrigins::default(),
            }
        );
        assert_eq!(settings.retention, RetentionPolicy::new(90, 7).unwrap());
        assert!(settings.health_queues.is_empty());
        assert!(!settings.warm_up);
    }

    #[test]
    fn secret_values_are_never_read_from_the_environment() {
        // The values' old variables are neither asked for nor used.
        let asked = std::cell::RefCell::new(Vec::new());
        let with_values = lookup(REQUIRED.into_iter().chain([
            ("UNSUBSCRIBE_SECRET", "unsubscribe-key"),
            ("IDENTIFIER_HASH_SECRET", "pepper"),
            ("INGEST_WRITE_KEYS", "shop:server:wk_0123456789abcdef"),
        ]));
        Settings::from_lookup(&|name: &str| {
            asked.borrow_mut().push(name.to_string());
            with_values(name)
        })
        .unwrap();
        let asked = asked.into_inner();
        for value_variable in ["UNSUBSCRIBE_SECRET", "IDENTIFIER_HASH_SECRET", "INGEST_WRITE_KEYS"] {
            assert!(!asked.iter().any(|a| a == value_variable), "{value_variable} was read");
        }
    }

    #[test]
    fn every_optional_setting_is_read() {
        let all = lookup(REQUIRED.into_iter().chain([
            ("SCHEDULER_DEAD_LETTER_ARN", "arn:dlq"),
            ("INGEST_ALLOWED_ORIGINS", "web=https://shop.example"),
            ("RETENTION_ACTIVITY_DAYS", "120"),
            ("RETENTION_LEGAL_YEARS", "10"),
            ("TRACKING_REQUIRE_ANALYTICS_CONSENT", "true"),
            ("HEALTH_QUEUES", "projector=https://sqs/p|https://sqs/p-dlq"),
            ("WARM_UP", "1"),
        ]));
        let settings = Settings::from_lookup(&all).unwrap();
        assert_eq!(settings.scheduler_dead_letter_arn.as_deref(), Some("arn:dlq"));
        assert_eq!(
            settings.secrets.ingest_allowed_origins,
            AllowedOrigins::parse("web=https://shop.example").unwrap()
        );
        assert_eq!(settings.retention, RetentionPolicy::new(120, 10).unwrap());
        assert!(settings.require_analytics_consent);
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
        for (missing, _) in REQUIRED.iter() {
            let without = lookup(REQUIRED.into_iter().filter(|(name, _)| name != missing));
            assert_eq!(
                Settings::from_lookup(&without).map(|_| ()),
                Err(SettingsError::Missing(ConfigError(missing))),
                "{missing}"
            );
        }
        for (name, bad) in [
            ("HEALTH_QUEUES", "nameless"),
            ("RETENTION_ACTIVITY_DAYS", "soon"),
            ("INGEST_ALLOWED_ORIGINS", "web=shop.example/"),
        ] {
            let with_bad = lookup([(name, bad)].into_iter().chain(REQUIRED));
            match Settings::from_lookup(&with_bad) {
                Err(SettingsError::Invalid(message)) => assert!(message.contains(name), "{name}: {message}"),
                other => panic!("{name}={bad}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn the_write_keys_secret_holds_entries_by_comma_or_line_and_comments() {
        let setting = secret("INGEST_WRITE_KEYS_SECRET_ARN", WRITE_KEYS_ARN);
        let sources = |value: &str| ingest_sources_from_secret(&setting, &SecretValue::new(value));
        // The template's first value: only a comment, no source.
        let first = sources("# no source yet: put source:kind:key entries here (see template.yaml)").unwrap();
        assert_eq!(format!("{first:?}"), "IngestSources([])");
        let both = sources(
            "# the shop's backend, then the browser\nshop:server:wk_0123456789abcdef\n web:client:wk_web_0123456789abcdef ,old:wk_old_0123456789abcdef\n",
        )
        .unwrap();
        assert_eq!(
            format!("{both:?}"),
            r#"IngestSources(["shop:server", "web:client", "old:server"])"#
        );
        // A bad entry names the setting and the secret, never the value.
        match sources("shop:server:short-key") {
            Err(SettingsError::Invalid(message)) => {
                assert!(message.contains("INGEST_WRITE_KEYS_SECRET_ARN"), "{message}");
                assert!(message.contains(WRITE_KEYS_ARN), "{message}");
                assert!(!message.contains("short-key"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The api function's settings read every variable template.yaml gives
    /// it (`RUST_LOG` is the logger's) and nothing else but those it reads
    /// with a default and the template leaves unset. (The consumer
    /// functions' crates check theirs the same way.)
    #[test]
    fn the_template_sets_what_the_api_reads() {
        let template: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../../template.yaml")).expect("template.yaml parses");
        let variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .expect("ApiFunction has Environment.Variables");
        let mut set: Vec<&str> = variables
            .keys()
            .filter_map(serde_yaml::Value::as_str)
            .filter(|name| *name != "RUST_LOG")
            .collect();
        let unset_on_purpose = ["WARM_UP"];
        let mut read: Vec<&str> = Settings::NAMES
            .iter()
            .copied()
            .filter(|name| !unset_on_purpose.contains(name))
            .collect();
        set.sort_unstable();
        read.sort_unstable();
        assert_eq!(
            set, read,
            "template.yaml's ApiFunction variables against Settings::NAMES"
        );
    }
}
