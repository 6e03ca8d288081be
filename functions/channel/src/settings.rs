//! The channel function's settings, from its environment on Lambda (the
//! `lambda` feature: the local runtime builds the delivery without them,
//! reading [`DeliverySettings::from_lookup`] alone).

use crm_aws::secrets::SecretSetting;
use crm_bus_consumer::settings::{optional, METRICS_NAMESPACE, WARM_UP};
use crm_bus_consumer::{Config, ConfigError, SchedulerSettings};
use crm_core::messaging::delivery::{DeliverySettings, SETTLE_WINDOW_SETTING};

/// Why the channel function's settings cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Missing(#[from] ConfigError),
    /// A delivery setting that does not parse (the message names it).
    #[error("{0}")]
    Invalid(String),
}

/// The channel function's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tables, the key, the dead-letter queue ([`Config`]).
    pub ports: Config,
    /// Where its deferral and settle timers go.
    pub scheduler: SchedulerSettings,
    /// `SES_CONFIGURATION_SET`: the configuration set every email is sent
    /// with (its event destination brings the feedback back).
    pub ses_configuration_set: String,
    /// `SMS_SENDER_ID` (optional): the SMS sender id.
    pub sms_sender_id: Option<String>,
    /// `APNS_PLATFORM_APPLICATION_ARN` (optional, blank is none).
    pub apns_platform_application_arn: Option<String>,
    /// `FCM_PLATFORM_APPLICATION_ARN` (optional, blank is none).
    pub fcm_platform_application_arn: Option<String>,
    /// `UNSUBSCRIBE_SECRET_ARN`: the secret that signs the unsubscribe
    /// links (the api checks them), read from Secrets Manager at cold start
    /// (decision 0047).
    pub unsubscribe_secret: SecretSetting,
    /// `IDENTIFIER_HASH_SECRET_ARN`: the secret of the suppression list's
    /// and proof ledger's identifier hashes, shared with the api and consent
    /// functions, read at cold start.
    pub identifier_hash_secret: SecretSetting,
    /// `FROM_ADDRESS`, `PUBLIC_BASE_URL` (both required on AWS),
    /// `SHOP_URL`, `DELIVERY_CAPS` and `MESSAGE_SETTLE_SECONDS`, read by [`DeliverySettings::from_lookup`]
    /// as the local runtime reads them.
    pub delivery: DeliverySettings,
    /// `METRICS_NAMESPACE`: the EMF namespace of the delivery counts (default `Crm`).
    pub metrics_namespace: String,
    /// `WARM_UP`: one warm-up call at cold start.
    pub warm_up: bool,
}

/// The delivery settings [`DeliverySettings::from_lookup`] reads.
const DELIVERY_NAMES: [&str; 5] = [
    "FROM_ADDRESS",
    "PUBLIC_BASE_URL",
    "SHOP_URL",
    "DELIVERY_CAPS",
    SETTLE_WINDOW_SETTING,
];

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [
            Config::NAMES,
            SchedulerSettings::NAMES,
            &[
                "SES_CONFIGURATION_SET",
                "SMS_SENDER_ID",
                "APNS_PLATFORM_APPLICATION_ARN",
                "FCM_PLATFORM_APPLICATION_ARN",
                "UNSUBSCRIBE_SECRET_ARN",
                "IDENTIFIER_HASH_SECRET_ARN",
            ],
            &DELIVERY_NAMES,
            &[METRICS_NAMESPACE, WARM_UP],
        ]
        .concat()
    }

    /// The settings from `lookup` (the environment on Lambda): a missing
    /// required one is an error naming it, a delivery setting that does not
    /// parse an error saying why. `FROM_ADDRESS` and `PUBLIC_BASE_URL` are
    /// required here; the local runtime reads the delivery settings with
    /// their local defaults ([`DeliverySettings::from_lookup`] alone).
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let ports = Config::from_lookup(lookup)?;
        let scheduler = SchedulerSettings::from_lookup(lookup)?;
        let ses_configuration_set = crm_aws::lambda::required(lookup, "SES_CONFIGURATION_SET")?;
        let sms_sender_id = optional(lookup, "SMS_SENDER_ID");
        let apns_platform_application_arn = optional(lookup, "APNS_PLATFORM_APPLICATION_ARN");
        let fcm_platform_application_arn = optional(lookup, "FCM_PLATFORM_APPLICATION_ARN");
        let unsubscribe_secret = SecretSetting::required(lookup, "UNSUBSCRIBE_SECRET_ARN")?;
        let identifier_hash_secret = SecretSetting::required(lookup, "IDENTIFIER_HASH_SECRET_ARN")?;
        crm_aws::lambda::required(lookup, "FROM_ADDRESS")?;
        crm_aws::lambda::required(lookup, "PUBLIC_BASE_URL")?;
        let delivery = DeliverySettings::from_lookup(lookup).map_err(SettingsError::Invalid)?;
        Ok(Settings {
            ports,
            scheduler,
            ses_configuration_set,
            sms_sender_id,
            apns_platform_application_arn,
            fcm_platform_application_arn,
            unsubscribe_secret,
            identifier_hash_secret,
            delivery,
            metrics_namespace: crm_aws::emf::EmfWriter::namespace_from(lookup),
            warm_up: crm_bus_consumer::warm_up_wanted(lookup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_bus_consumer::settings::{assert_reads_exactly, compare_with_template, lookup_from};
    use crm_core::messaging::decision::DeliveryPolicy;

    const UNSUBSCRIBE_ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:unsubscribe-AbCdEf";
    const IDENTIFIER_ARN: &str = "arn:aws:secretsmanager:us-east-1:1:secret:identifier-AbCdEf";

    const REQUIRED: [(&str, &str); 14] = [
        ("EVENTS_TABLE", "events"),
        ("READ_MODELS_TABLE", "read-models"),
        ("DEAD_LETTER_QUEUE_URL", "https://sqs/channel-dlq"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("SCHEDULE_GROUP", "crm"),
        ("EVENT_BUS_ARN", "arn:aws:events:us-east-1:1:event-bus/crm"),
        ("SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/scheduler"),
        ("SES_CONFIGURATION_SET", "crm-mail"),
        ("UNSUBSCRIBE_SECRET_ARN", UNSUBSCRIBE_ARN),
        ("IDENTIFIER_HASH_SECRET_ARN", IDENTIFIER_ARN),
        ("FROM_ADDRESS", "Shop <news@shop.example>"),
        ("PUBLIC_BASE_URL", "https://crm.shop.example"),
        ("SHOP_URL", ""),
    ];

    const OPTIONAL: [(&str, &str); 8] = [
        ("SCHEDULER_DEAD_LETTER_ARN", "arn:aws:sqs:us-east-1:1:scheduler-dlq"),
        ("SMS_SENDER_ID", "SHOP"),
        ("APNS_PLATFORM_APPLICATION_ARN", "arn:apns"),
        ("FCM_PLATFORM_APPLICATION_ARN", " "),
        ("DELIVERY_CAPS", "email:2/24h"),
        ("MESSAGE_SETTLE_SECONDS", "60"),
        ("METRICS_NAMESPACE", "Shop"),
        ("WARM_UP", "1"),
    ];

    #[test]
    fn the_required_settings_and_the_defaults() {
        let settings = Settings::from_lookup(&lookup_from(REQUIRED)).unwrap();
        assert_eq!(settings.ports.dead_letter_queue_url, "https://sqs/channel-dlq");
        assert_eq!(settings.scheduler.dead_letter_arn, None);
        assert_eq!(settings.ses_configuration_set, "crm-mail");
        assert_eq!(settings.sms_sender_id, None);
        assert_eq!(settings.apns_platform_application_arn, None);
        assert_eq!(settings.fcm_platform_application_arn, None);
        assert_eq!(
            (
                settings.unsubscribe_secret.setting,
                settings.unsubscribe_secret.secret_id.as_str()
            ),
            ("UNSUBSCRIBE_SECRET_ARN", UNSUBSCRIBE_ARN)
        );
        assert_eq!(
            (
                settings.identifier_hash_secret.setting,
                settings.identifier_hash_secret.secret_id.as_str()
            ),
            ("IDENTIFIER_HASH_SECRET_ARN", IDENTIFIER_ARN)
        );
        assert_eq!(settings.delivery.from_address, "Shop <news@shop.example>");
        assert_eq!(settings.delivery.public_base_url, "https://crm.shop.example");
        // The defaults: the template's (DeliveryCaps, MessageSettleSeconds 900) and crm-core's.
        let defaults = DeliverySettings::default();
        assert_eq!(settings.delivery.shop_url, defaults.shop_url);
        assert_eq!(settings.delivery.policy, DeliveryPolicy::default());
        assert_eq!(
            settings.delivery.policy.caps,
            DeliveryPolicy::parse_caps("email:3/24h,sms:1/24h,push:1/1h").unwrap()
        );
        assert_eq!(settings.delivery.settle_window, chrono::Duration::seconds(900));
        assert_eq!(settings.metrics_namespace, "Crm");
        assert!(!settings.warm_up);
    }

    #[test]
    fn every_optional_setting_is_read() {
        let all = lookup_from(
            REQUIRED
                .into_iter()
                .chain(OPTIONAL)
                .chain([("SHOP_URL", "https://shop.example/de")]),
        );
        let settings = Settings::from_lookup(&all).unwrap();
        assert_eq!(
            settings.scheduler.dead_letter_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:1:scheduler-dlq")
        );
        assert_eq!(settings.sms_sender_id.as_deref(), Some("SHOP"));
        assert_eq!(settings.apns_platform_application_arn.as_deref(), Some("arn:apns"));
        assert_eq!(settings.fcm_platform_application_arn, None, "blank is none");
        assert_eq!(settings.delivery.shop_url, "https://shop.example/de");
        assert_eq!(
            settings.delivery.policy.caps,
            DeliveryPolicy::parse_caps("email:2/24h").unwrap()
        );
        assert_eq!(settings.delivery.settle_window, chrono::Duration::seconds(60));
        assert_eq!(settings.metrics_namespace, "Shop");
        assert!(settings.warm_up);
        assert_reads_exactly(&Settings::names(), all, |l| Settings::from_lookup(&l));
    }

    #[test]
    fn a_missing_setting_is_named() {
        for (missing, _) in REQUIRED.iter().filter(|(name, _)| *name != "SHOP_URL") {
            let lookup = lookup_from(REQUIRED.into_iter().filter(|(name, _)| name != missing));
            assert_eq!(
                Settings::from_lookup(&lookup).map(|_| ()),
                Err(SettingsError::Missing(ConfigError(missing))),
                "{missing}"
            );
        }
    }

    #[test]
    fn a_setting_that_does_not_parse_is_named() {
        for (name, bad) in [("DELIVERY_CAPS", "email:often"), ("MESSAGE_SETTLE_SECONDS", "0")] {
            let lookup = lookup_from(REQUIRED.into_iter().chain([(name, bad)]));
            match Settings::from_lookup(&lookup) {
                Err(SettingsError::Invalid(message)) => {
                    assert!(message.contains(name), "{name}: {message}");
                    assert!(message.contains(bad), "{name}: {message}");
                }
                other => panic!("{name}={bad}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn the_template_sets_what_the_settings_read() {
        let problems = compare_with_template(
            include_str!("../../../template.yaml"),
            "ChannelFunction",
            &Settings::names(),
            // Read with a default, not set by the template.
            &[WARM_UP],
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The template's parameters behind SHOP_URL and SMS_SENDER_ID: the
    /// shop's URL must be given, the sender id defaults to none. The
    /// customer's email frequency is a rule, not a parameter (decision 0064).
    #[test]
    fn the_templates_delivery_parameters_default_as_the_code_does() {
        let template = include_str!("../../../template.yaml");
        // The `Default:` of a parameter, None when it has none.
        let default_of = |parameter: &str| -> Option<String> {
            let at = template.find(&format!("\n  {parameter}:\n"))?;
            template[at + 1..]
                .lines()
                .skip(1)
                .take_while(|line| line.starts_with("   "))
                .find_map(|line| line.trim().strip_prefix("Default: "))
                .map(|v| v.trim_matches('"').to_string())
        };
        assert!(template.contains("\n  ShopUrl:\n"), "a ShopUrl parameter");
        assert_eq!(default_of("ShopUrl"), None, "the shop's URL must be given");
        assert!(
            !template.contains("WeeklyEmailLimit"),
            "no weekly limit: the frequency is a rule (decision 0064)"
        );
        assert_eq!(default_of("SmsSenderId"), Some(String::new()));
        assert_eq!(default_of("DeliveryCaps").map(|c| c.is_empty()), Some(false));
        let from_template = lookup_from(REQUIRED.into_iter().chain([("SMS_SENDER_ID", "")]));
        let settings = Settings::from_lookup(&from_template).expect("the template's defaults are valid");
        assert_eq!(settings.sms_sender_id, None, "a blank sender id is none");
    }
}
