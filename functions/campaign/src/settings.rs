//! The campaign function's settings, from its environment on Lambda (the
//! `lambda` feature: the local runtime builds the handler without them).

use crm_bus_consumer::settings::WARM_UP;
use crm_bus_consumer::{Config, ConfigError, SchedulerSettings};

/// The campaign function's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The tables, the key, the dead-letter queue ([`Config`]).
    pub ports: Config,
    /// Where its timers go.
    pub scheduler: SchedulerSettings,
    /// `WARM_UP`: one warm-up call at cold start.
    pub warm_up: bool,
}

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [Config::NAMES, SchedulerSettings::NAMES, &[WARM_UP]].concat()
    }

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Settings {
            ports: Config::from_lookup(lookup)?,
            scheduler: SchedulerSettings::from_lookup(lookup)?,
            warm_up: crm_bus_consumer::warm_up_wanted(lookup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_bus_consumer::settings::{assert_reads_exactly, compare_with_template, lookup_from};

    const ALL: [(&str, &str); 9] = [
        ("EVENTS_TABLE", "events"),
        ("READ_MODELS_TABLE", "read-models"),
        ("DEAD_LETTER_QUEUE_URL", "https://sqs/campaign-dlq"),
        ("KEYS_TABLE", "keys"),
        ("DATA_KEYS_KMS_KEY_ID", "alias/data-keys"),
        ("SCHEDULE_GROUP", "crm"),
        ("EVENT_BUS_ARN", "arn:aws:events:us-east-1:1:event-bus/crm"),
        ("SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/scheduler"),
        ("SCHEDULER_DEAD_LETTER_ARN", "arn:aws:sqs:us-east-1:1:scheduler-dlq"),
    ];

    #[test]
    fn every_setting_is_read() {
        let settings = Settings::from_lookup(&lookup_from(ALL)).unwrap();
        assert_eq!(settings.ports.dead_letter_queue_url, "https://sqs/campaign-dlq");
        assert_eq!(settings.ports.events_table, "events");
        assert_eq!(settings.scheduler.schedule_group, "crm");
        assert_eq!(
            settings.scheduler.dead_letter_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:1:scheduler-dlq")
        );
        assert!(!settings.warm_up);
        let warm = Settings::from_lookup(&lookup_from(ALL.into_iter().chain([(WARM_UP, "yes")]))).unwrap();
        assert!(warm.warm_up);
        assert_reads_exactly(&Settings::names(), lookup_from(ALL), |l| Settings::from_lookup(&l));
    }

    #[test]
    fn a_missing_setting_is_named() {
        for (missing, _) in ALL.iter().filter(|(name, _)| *name != "SCHEDULER_DEAD_LETTER_ARN") {
            let lookup = lookup_from(ALL.into_iter().filter(|(name, _)| name != missing));
            assert_eq!(Settings::from_lookup(&lookup), Err(ConfigError(missing)), "{missing}");
        }
        let without_dead_letters = ALL.into_iter().filter(|(name, _)| *name != "SCHEDULER_DEAD_LETTER_ARN");
        let settings = Settings::from_lookup(&lookup_from(without_dead_letters)).unwrap();
        assert_eq!(settings.scheduler.dead_letter_arn, None);
    }

    #[test]
    fn the_template_sets_what_the_settings_read() {
        let problems = compare_with_template(
            include_str!("../../../template.yaml"),
            "CampaignFunction",
            &Settings::names(),
            &[WARM_UP],
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
