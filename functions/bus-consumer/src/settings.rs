//! The settings the queue-fed functions share, each read from a lookup (the
//! environment on Lambda, a map in the tests) by a pure `from_lookup`, with
//! the names of the variables it reads in a `NAMES` list. Each function's
//! own `Settings` (crm-projector, crm-consent, crm-campaign, crm-channel)
//! is made of these and its own; its test compares its `NAMES` with the
//! variables `template.yaml` gives the function ([`template_variables`]).

use crate::{Config, ConfigError};
use crm_aws::lambda::required;
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::secrets::SecretSetting;

/// Variables a function reads that the template may leave unset: the
/// optional warm-up call at cold start (issue 9, `--env WARM_UP=1`).
pub const WARM_UP: &str = "WARM_UP";
/// The EMF metrics' namespace ([`crm_aws::emf::EmfWriter::namespace_from`]).
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
/// Read by the logger, not by any `Settings`: the template sets it for every function.
pub const RUST_LOG: &str = "RUST_LOG";

impl Config {
    /// The variables [`Config::from_lookup`] reads, all required but the
    /// retention's (defaults; the template sets them).
    pub const NAMES: &'static [&'static str] = &[
        "EVENTS_TABLE",
        "READ_MODELS_TABLE",
        "DEAD_LETTER_QUEUE_URL",
        "KEYS_TABLE",
        "DATA_KEYS_KMS_KEY_ID",
        "RETENTION_ACTIVITY_DAYS",
        "RETENTION_LEGAL_YEARS",
    ];
}

/// Where the functions that set timers (campaign, channel) put them: an
/// EventBridge Scheduler schedule group whose schedules put the timer on the
/// bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// `SCHEDULE_GROUP`.
    pub schedule_group: String,
    /// `EVENT_BUS_ARN`: the schedules' target.
    pub event_bus_arn: String,
    /// `SCHEDULER_ROLE_ARN`: the role the schedules put events with.
    pub role_arn: String,
    /// `SCHEDULER_DEAD_LETTER_ARN` (optional, blank is none): where the
    /// scheduler sends what it could not deliver.
    pub dead_letter_arn: Option<String>,
}

impl SchedulerSettings {
    /// The variables [`SchedulerSettings::from_lookup`] reads; all but
    /// `SCHEDULER_DEAD_LETTER_ARN` are required.
    pub const NAMES: &'static [&'static str] = &[
        "SCHEDULE_GROUP",
        "EVENT_BUS_ARN",
        "SCHEDULER_ROLE_ARN",
        "SCHEDULER_DEAD_LETTER_ARN",
    ];

    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(SchedulerSettings {
            schedule_group: required(lookup, "SCHEDULE_GROUP")?,
            event_bus_arn: required(lookup, "EVENT_BUS_ARN")?,
            role_arn: required(lookup, "SCHEDULER_ROLE_ARN")?,
            dead_letter_arn: optional(lookup, "SCHEDULER_DEAD_LETTER_ARN"),
        })
    }

    /// The scheduler over `aws`'s Scheduler client.
    pub fn scheduler(&self, aws: &aws_config::SdkConfig) -> EventBridgeScheduler {
        EventBridgeScheduler::new(
            aws_sdk_scheduler::Client::new(aws),
            self.schedule_group.clone(),
            self.event_bus_arn.clone(),
            self.role_arn.clone(),
            self.dead_letter_arn.clone(),
        )
    }
}

/// What every consumer function that hosts a consumer group (projector,
/// consent) reads: its [`Config`], [`METRICS_NAMESPACE`] for the lag metrics
/// and [`WARM_UP`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub ports: Config,
    /// The EMF namespace (default `Crm`).
    pub metrics_namespace: String,
    /// One warm-up call at cold start ([`crm_aws::lambda::warm_up`]).
    pub warm_up: bool,
}

impl ConsumerSettings {
    /// The variables [`ConsumerSettings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [Config::NAMES, &[METRICS_NAMESPACE, WARM_UP]].concat()
    }

    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(ConsumerSettings {
            ports: Config::from_lookup(lookup)?,
            metrics_namespace: crm_aws::emf::EmfWriter::namespace_from(lookup),
            warm_up: crm_aws::lambda::warm_up_wanted(lookup),
        })
    }
}

/// What a consumer function that hashes identifiers reads (projector,
/// consent): the [`ConsumerSettings`], and `IDENTIFIER_HASH_SECRET_ARN`, the
/// secret of the keyed hashes that name emails, names and user ids in its
/// views (decisions 0019, 0046), the same as the api's and the channel's,
/// read from Secrets Manager at cold start (decision 0047).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingConsumerSettings {
    pub consumer: ConsumerSettings,
    pub identifier_hash_secret: SecretSetting,
}

impl HashingConsumerSettings {
    /// The variables [`HashingConsumerSettings::from_lookup`] reads.
    pub fn names() -> Vec<&'static str> {
        [ConsumerSettings::names(), vec![IDENTIFIER_HASH_SECRET_ARN]].concat()
    }

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(HashingConsumerSettings {
            consumer: ConsumerSettings::from_lookup(lookup)?,
            identifier_hash_secret: SecretSetting::required(lookup, IDENTIFIER_HASH_SECRET_ARN)?,
        })
    }
}

const IDENTIFIER_HASH_SECRET_ARN: &str = "IDENTIFIER_HASH_SECRET_ARN";

/// The setting `name`, trimmed; `None` when unset or blank.
pub fn optional(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The names of the environment variables `template` (the text of
/// template.yaml) gives the function resource `function` (e.g.
/// `ChannelFunction`) under `Properties.Environment.Variables`, in their
/// order. A line scan of the template's layout (two spaces per level), not
/// a YAML parser: the function crates' tests use it to compare the template
/// with their settings' `NAMES`.
pub fn template_variables(template: &str, function: &str) -> Vec<String> {
    let header = format!("  {function}:");
    let mut lines = template.lines().skip_while(|line| line.trim_end() != header).skip(1);
    let mut names = Vec::new();
    let mut in_variables = false;
    for line in lines.by_ref() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if indent <= 2 {
            break; // the next resource
        }
        if text == "Variables:" && indent == 8 {
            in_variables = true;
        } else if in_variables && indent == 10 {
            if let Some((name, _)) = text.split_once(':') {
                names.push(name.to_string());
            }
        } else if in_variables && indent < 10 {
            break;
        }
    }
    names
}

/// Compares the variables the template gives `function` with `names`, the
/// ones its settings read: every variable the template sets must be read
/// ([`RUST_LOG`] is the logger's), and every one read must be set, except
/// those in `optional_unset` (read with a default, deliberately absent from
/// the template). Returns what disagrees, empty when they agree.
pub fn compare_with_template(template: &str, function: &str, names: &[&str], optional_unset: &[&str]) -> Vec<String> {
    let set = template_variables(template, function);
    let mut problems = Vec::new();
    if set.is_empty() {
        problems.push(format!("{function} has no Environment.Variables in the template"));
    }
    for name in &set {
        if name != RUST_LOG && !names.contains(&name.as_str()) {
            problems.push(format!(
                "{function}: the template sets {name}, which its settings do not read"
            ));
        }
    }
    for name in names {
        let in_template = set.iter().any(|s| s == name);
        match (in_template, optional_unset.contains(name)) {
            (false, false) => problems.push(format!(
                "{function}: its settings read {name}, which the template does not set"
            )),
            (true, true) => problems.push(format!(
                "{function}: the template now sets {name}: take it off the optional list"
            )),
            _ => {}
        }
    }
    problems
}

/// Tests: a lookup over `pairs` (a stand-in for the environment).
#[cfg(any(test, feature = "testing"))]
pub fn lookup_from<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> =
        pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name: &str| map.get(name).cloned()
}

/// Tests: asserts that `read` (a `Settings::from_lookup`), given `values`
/// (which should make it succeed), asks for exactly `names`, no more and no
/// fewer: what a function reads is what its settings list.
#[cfg(any(test, feature = "testing"))]
pub fn assert_reads_exactly<T>(
    names: &[&str],
    values: impl Fn(&str) -> Option<String>,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) {
    let asked = std::cell::RefCell::new(std::collections::BTreeSet::<String>::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_string());
        values(name)
    };
    read(&lookup);
    let asked = asked.into_inner();
    let listed: std::collections::BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(listed.len(), names.len(), "a name is listed twice: {names:?}");
    let unlisted: Vec<_> = asked.difference(&listed).collect();
    let unread: Vec<_> = listed.difference(&asked).collect();
    assert!(
        unlisted.is_empty() && unread.is_empty(),
        "read but not listed: {unlisted:?}; listed but not read: {unread:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    mod hashing {
        use super::super::*;
        use crm_aws::secrets::SecretSetting;

        const ALL: [(&str, &str); 7] = [
            ("EVENTS_TABLE", "events"),
            ("READ_MODELS_TABLE", "read-models"),
            ("DEAD_LETTER_QUEUE_URL", "https://sqs/dlq"),
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
            let settings = HashingConsumerSettings::from_lookup(&lookup_from(ALL)).unwrap();
            assert_eq!(settings.consumer.ports.dead_letter_queue_url, "https://sqs/dlq");
            assert_eq!(settings.consumer.metrics_namespace, "Shop");
            assert!(!settings.consumer.warm_up);
            assert_eq!(
                settings.identifier_hash_secret,
                SecretSetting {
                    setting: "IDENTIFIER_HASH_SECRET_ARN",
                    secret_id: "arn:aws:secretsmanager:us-east-1:1:secret:identifier-AbCdEf".into(),
                }
            );
            assert_reads_exactly(&HashingConsumerSettings::names(), lookup_from(ALL), |l| {
                HashingConsumerSettings::from_lookup(&l)
            });
        }

        #[test]
        fn a_missing_setting_is_named() {
            for (missing, _) in ALL.iter().filter(|(name, _)| *name != "METRICS_NAMESPACE") {
                let lookup = lookup_from(ALL.into_iter().filter(|(name, _)| name != missing));
                assert_eq!(
                    HashingConsumerSettings::from_lookup(&lookup),
                    Err(ConfigError(missing)),
                    "{missing}"
                );
            }
        }
    }

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        lookup_from(pairs.iter().copied())
    }

    #[test]
    fn scheduler_settings_need_all_but_the_dead_letter_arn() {
        let full = lookup(&[
            ("SCHEDULE_GROUP", "crm"),
            ("EVENT_BUS_ARN", "arn:bus"),
            ("SCHEDULER_ROLE_ARN", "arn:role"),
            ("SCHEDULER_DEAD_LETTER_ARN", "arn:dlq"),
        ]);
        assert_eq!(
            SchedulerSettings::from_lookup(&full),
            Ok(SchedulerSettings {
                schedule_group: "crm".into(),
                event_bus_arn: "arn:bus".into(),
                role_arn: "arn:role".into(),
                dead_letter_arn: Some("arn:dlq".into()),
            })
        );
        let blank_dead_letters = lookup(&[
            ("SCHEDULE_GROUP", "crm"),
            ("EVENT_BUS_ARN", "arn:bus"),
            ("SCHEDULER_ROLE_ARN", "arn:role"),
            ("SCHEDULER_DEAD_LETTER_ARN", " "),
        ]);
        assert_eq!(
            SchedulerSettings::from_lookup(&blank_dead_letters).map(|s| s.dead_letter_arn),
            Ok(None)
        );
        assert_eq!(
            SchedulerSettings::from_lookup(&lookup(&[("SCHEDULE_GROUP", "crm"), ("EVENT_BUS_ARN", "arn:bus")])),
            Err(ConfigError("SCHEDULER_ROLE_ARN"))
        );
    }

    #[test]
    #[should_panic(expected = "listed but not read: [\"UNREAD\"]")]
    fn a_listed_name_that_is_not_read_fails_the_check() {
        assert_reads_exactly(
            &[WARM_UP, "UNREAD"],
            |_: &str| None,
            |l| crm_aws::lambda::warm_up_wanted(&l),
        );
    }

    #[test]
    fn consumer_settings_read_their_names_with_defaults() {
        let mut pairs = vec![
            ("EVENTS_TABLE", "events"),
            ("READ_MODELS_TABLE", "read-models"),
            ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
            ("KEYS_TABLE", "keys"),
            ("DATA_KEYS_KMS_KEY_ID", "alias/k"),
        ];
        let settings = ConsumerSettings::from_lookup(&lookup_from(pairs.clone())).unwrap();
        assert_eq!(settings.metrics_namespace, "Crm");
        assert!(!settings.warm_up);
        assert_eq!(settings.ports.dead_letter_queue_url, "https://sqs/q");
        pairs.extend([(METRICS_NAMESPACE, "Shop"), (WARM_UP, "1")]);
        let settings = ConsumerSettings::from_lookup(&lookup_from(pairs.clone())).unwrap();
        assert_eq!((settings.metrics_namespace.as_str(), settings.warm_up), ("Shop", true));
        assert_reads_exactly(&ConsumerSettings::names(), lookup_from(pairs.clone()), |l| {
            ConsumerSettings::from_lookup(&l)
        });
        pairs.retain(|(k, _)| *k != "KEYS_TABLE");
        assert_eq!(
            ConsumerSettings::from_lookup(&lookup_from(pairs)),
            Err(ConfigError("KEYS_TABLE"))
        );
    }

    const TEMPLATE: &str = "\
Resources:
  OneFunction:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          # a comment
          EVENTS_TABLE: !Ref EventsTable
          RUST_LOG: !Ref LogLevel
      LoggingConfig:
        LogFormat: JSON
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          OTHER: x
";

    #[test]
    fn the_template_variables_of_one_function() {
        assert_eq!(
            template_variables(TEMPLATE, "OneFunction"),
            vec!["EVENTS_TABLE", "RUST_LOG"]
        );
        assert_eq!(template_variables(TEMPLATE, "OtherFunction"), vec!["OTHER"]);
        assert!(template_variables(TEMPLATE, "MissingFunction").is_empty());
    }

    #[test]
    fn comparing_names_each_way() {
        assert!(compare_with_template(TEMPLATE, "OneFunction", &["EVENTS_TABLE", WARM_UP], &[WARM_UP]).is_empty());
        let problems = compare_with_template(TEMPLATE, "OneFunction", &["KEYS_TABLE"], &[]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("sets EVENTS_TABLE"), "{problems:?}");
        assert!(problems[1].contains("read KEYS_TABLE"), "{problems:?}");
        let stale = compare_with_template(TEMPLATE, "OneFunction", &["EVENTS_TABLE"], &["EVENTS_TABLE"]);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(compare_with_template(TEMPLATE, "NoFunction", &[], &[]).len(), 1);
    }

    #[test]
    fn the_real_template_lists_the_consumers_tables() {
        let template = include_str!("../../../template.yaml");
        for function in [
            "ProjectorFunction",
            "ConsentFunction",
            "CampaignFunction",
            "ChannelFunction",
        ] {
            let set = template_variables(template, function);
            for name in Config::NAMES {
                assert!(set.iter().any(|s| s == name), "{function} lacks {name}: {set:?}");
            }
        }
    }
}
