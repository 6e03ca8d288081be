//! The rule-segments function (decision 0083): its queue carries the
//! events that can change a rule segment's membership and the
//! `SegmentWindow` timers; both go to crm-core's
//! [`RuleSegmentEvaluator`](crm_core::segments::rule_evaluator::RuleSegmentEvaluator),
//! which the local runtime hosts the same way (its `rule-segments` target).

use crm_bus_consumer::settings::WARM_UP;
use crm_bus_consumer::{Config, ConfigError, SchedulerSettings};

/// The rule-segments function's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSegmentsSettings {
    /// The tables, the key, the dead-letter queue ([`Config`]).
    pub ports: Config,
    /// Where its window timers go.
    pub scheduler: SchedulerSettings,
    /// `WARM_UP`: one warm-up call at cold start.
    pub warm_up: bool,
}

impl RuleSegmentsSettings {
    /// The variables [`RuleSegmentsSettings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [Config::NAMES, SchedulerSettings::NAMES, &[WARM_UP]].concat()
    }

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(RuleSegmentsSettings {
            ports: Config::from_lookup(lookup)?,
            scheduler: SchedulerSettings::from_lookup(lookup)?,
            warm_up: crm_bus_consumer::warm_up_wanted(lookup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_bus_consumer::settings::compare_with_template;

    #[test]
    fn the_template_sets_what_the_settings_read() {
        let problems = compare_with_template(
            include_str!("../../../template.yaml"),
            "RuleSegmentsFunction",
            &RuleSegmentsSettings::names(),
            &[WARM_UP],
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
