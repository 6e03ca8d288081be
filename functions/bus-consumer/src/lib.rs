//! What the queue-fed consumer functions share (ARCHITECTURE.md §2, §6,
//! decision 0029): each reads its own SQS queue, which its bus rule fills,
//! a batch at a time ([`batch::handle_batch`]). The projector and the
//! consent function each host one [`crm_core::consumer::ConsumerGroup`] and
//! differ in nothing else: this crate holds their configuration
//! ([`Config`], [`ConsumerSettings`], [`settings`]), their ports
//! ([`Ports`]) and the Lambda wiring ([`run`]); each has its `Settings` and
//! its `build(ports, settings)` and calls [`run`]. The campaign and channel
//! functions take the same ports and batch handler, with their timers (and
//! the channel's SES feedback) as [`batch::OtherMessages`].

pub mod batch;
pub mod handler;
pub mod settings;
pub mod timer;

pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
pub use batch::{handle_batch, BatchReport, OtherMessages, StoredEventsOnly, Taken, REDRIVE_CONSUMER_ATTRIBUTE};
pub use crm_aws::lambda::{init_tracing, load_aws_config, warm_up, warm_up_wanted, ConfigError};
pub use handler::{handle, handle_stored, Handled, HandlerError};
pub use settings::{ConsumerSettings, HashingConsumerSettings, SchedulerSettings};

use crm_aws::dynamodb::DynamoReadModels;
use crm_aws::emf::EmfWriter;
use crm_aws::health::DynamoProgressLog;
use crm_aws::lambda::required;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::stores::{EncryptedEventStore, EventStoreTables};
use crm_core::consumer::{ConsumerGroup, EventHandler, SealedDeadLetters};
use crm_core::metrics::MeteredHandler;
use crm_core::ports::{DeadLetterQueue, EventStore, ProgressLog, ProgressReporter, ReadModelStore};
use crm_core::privacy::read_models::SealedReadModels;
use crm_core::privacy::KeyStore;
use crm_core::retention::{RetentionPolicy, LEGAL_YEARS_ENV};
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

/// Builds a function's consumer group from its ports, e.g.
/// [`ConsumerGroup::projector`].
pub type GroupBuilder = fn(Arc<dyn EventStore>, Arc<dyn ReadModelStore>, Arc<dyn DeadLetterQueue>) -> ConsumerGroup;

/// A consumer function's configuration, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `EVENTS_TABLE`: the event store, read to fill gaps.
    pub events_table: String,
    /// `READ_MODELS_TABLE`: the documents and checkpoints.
    pub read_models_table: String,
    /// `DEAD_LETTER_QUEUE_URL`: where poison events are parked.
    pub dead_letter_queue_url: String,
    /// `KEYS_TABLE`: the customers' data keys (decision 0016).
    pub keys_table: String,
    /// `DATA_KEYS_KMS_KEY_ID`: the KMS key that wraps them.
    pub data_keys_kms_key_id: String,
    /// `RETENTION_ACTIVITY_DAYS` and `RETENTION_LEGAL_YEARS` (unset: the
    /// defaults): the TTLs of what the function appends, activity and the
    /// streams kept for the legal period (decisions 0021, 0078).
    pub retention: RetentionPolicy,
}

impl Config {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name| required(&lookup, name);
        Ok(Config {
            events_table: get("EVENTS_TABLE")?,
            read_models_table: get("READ_MODELS_TABLE")?,
            dead_letter_queue_url: get("DEAD_LETTER_QUEUE_URL")?,
            keys_table: get("KEYS_TABLE")?,
            data_keys_kms_key_id: get("DATA_KEYS_KMS_KEY_ID")?,
            retention: RetentionPolicy::from_lookup(&lookup).map_err(|_| ConfigError(LEGAL_YEARS_ENV))?,
        })
    }
}

/// The AWS ports every queue-fed function uses, built once at cold start.
/// `events` encrypts personal data on append and decrypts it on read
/// (decision 0017); events from the queue are decrypted with `keys`
/// ([`handle_batch`]); `dead_letters` seals what it parks (envelopes, the
/// channel's message requests) into their stored form, ciphertext, so the
/// queue never holds personal data in clear ([`SealedDeadLetters`],
/// decision 0040); `docs` keeps the personal values of the read models
/// encrypted under the same keys ([`SealedReadModels`], decision 0045; it
/// derefs to the table's adapter for its client).
pub struct Ports {
    pub events: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
    pub docs: Arc<SealedReadModels<DynamoReadModels>>,
    pub dead_letters: Arc<dyn DeadLetterQueue>,
    /// Where the function leaves its progress for `/health` (the
    /// read-models table, item `progress` / the function's name).
    pub progress: Arc<dyn ProgressLog>,
}

impl Ports {
    pub fn new(aws: &aws_config::SdkConfig, config: Config) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let EncryptedEventStore { events, keys, .. } = EncryptedEventStore::new(
            dynamodb.clone(),
            aws_sdk_kms::Client::new(aws),
            EventStoreTables {
                events_table: config.events_table,
                keys_table: config.keys_table,
                data_keys_kms_key_id: config.data_keys_kms_key_id,
            },
            Some(config.retention),
        );
        Ports {
            events,
            keys: keys.clone(),
            progress: Arc::new(DynamoProgressLog::new(
                dynamodb.clone(),
                config.read_models_table.clone(),
            )),
            docs: Arc::new(SealedReadModels::new(
                Arc::new(DynamoReadModels::new(dynamodb, config.read_models_table)),
                keys.clone(),
            )),
            dead_letters: Arc::new(SealedDeadLetters::new(
                Arc::new(SqsDeadLetterQueue::new(
                    aws_sdk_sqs::Client::new(aws),
                    config.dead_letter_queue_url,
                )),
                keys,
            )),
        }
    }

    /// The reporter of `function`'s progress (after each batch).
    pub fn progress_of(&self, function: &str) -> ProgressReporter {
        ProgressReporter::new(self.progress.clone(), function)
    }
}

/// The life of a consumer function after its settings are read: the AWS
/// clients (built once, at cold start), with `WARM_UP=1` one warm-up call
/// ([`crm_aws::lambda::warm_up`]), the group `build` makes from the
/// [`Ports`], then one [`handle_batch`] per SQS batch until Lambda stops
/// the runtime.
pub async fn run(
    settings: &ConsumerSettings,
    build: impl FnOnce(&Ports) -> ConsumerGroup,
) -> Result<(), lambda_runtime::Error> {
    let aws = load_aws_config().await;
    let ports = Ports::new(&aws, settings.ports.clone());
    if settings.warm_up {
        warm_up(ports.docs.client(), &settings.ports.read_models_table).await;
    }
    let group = build(&ports);
    tracing::info!(function = group.name, consumers = ?group.consumer_names(), "consumer function ready");
    // How late each event is handled (ConsumerLag), as EMF lines on stdout (decision 0026).
    let group = MeteredHandler::new(group, Arc::new(EmfWriter::stdout(settings.metrics_namespace.clone())));
    let progress = ports.progress_of(group.name());
    let (group, keys, dead_letters, progress) = (&group, ports.keys.as_ref(), ports.dead_letters.as_ref(), &progress);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report = handle_batch(event.payload, group, &StoredEventsOnly, keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(finish_batch(group.name(), &report, progress).await)
    }))
    .await
}

/// Logs what a batch did, leaves the function's progress for `/health`
/// (how old the batch's oldest message was, [`ProgressReporter`]) and gives
/// the answer for the event source mapping.
pub async fn finish_batch(function: &str, report: &BatchReport, progress: &ProgressReporter) -> SqsBatchResponse {
    progress.batch_handled(report.oldest_sent_at, chrono::Utc::now()).await;
    log_batch(function, report)
}

/// Logs what a batch did and gives the answer for the event source mapping.
pub fn log_batch(function: &str, report: &BatchReport) -> SqsBatchResponse {
    tracing::info!(
        function,
        messages = report.messages,
        events = report.events,
        redriven = report.redriven,
        applied = report.outcome.applied,
        duplicates = report.outcome.duplicates,
        parked = report.outcome.parked + report.parked.len() as u64,
        others = report.others.len(),
        one_by_one = report.one_by_one,
        failed = report.failed.len(),
        "batch handled"
    );
    report.response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn config_needs_every_setting() {
        assert_eq!(
            Config::from_lookup(env(&[
                ("EVENTS_TABLE", "events"),
                ("READ_MODELS_TABLE", "read-models"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
                ("KEYS_TABLE", "keys"),
                ("DATA_KEYS_KMS_KEY_ID", "alias/crm-data-keys"),
            ])),
            Ok(Config {
                events_table: "events".into(),
                read_models_table: "read-models".into(),
                dead_letter_queue_url: "https://sqs/q".into(),
                keys_table: "keys".into(),
                data_keys_kms_key_id: "alias/crm-data-keys".into(),
                retention: RetentionPolicy::default(),
            })
        );
        assert_eq!(
            Config::from_lookup(env(&[
                ("EVENTS_TABLE", "events"),
                ("READ_MODELS_TABLE", "read-models"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
                ("KEYS_TABLE", "keys"),
            ])),
            Err(ConfigError("DATA_KEYS_KMS_KEY_ID"))
        );
        assert_eq!(
            Config::from_lookup(env(&[
                ("EVENTS_TABLE", "events"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
            ])),
            Err(ConfigError("READ_MODELS_TABLE"))
        );
        assert_eq!(
            Config::from_lookup(env(&[
                ("EVENTS_TABLE", " "),
                ("READ_MODELS_TABLE", "read-models"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
            ])),
            Err(ConfigError("EVENTS_TABLE"))
        );
        assert_eq!(
            Config::from_lookup(env(
                &[("EVENTS_TABLE", "events"), ("READ_MODELS_TABLE", "read-models"),]
            )),
            Err(ConfigError("DEAD_LETTER_QUEUE_URL"))
        );
    }
}
