//! The relay function (ARCHITECTURE.md §2): the events table's DynamoDB
//! stream is the outbox; every stored event goes onto the EventBridge bus.
//!
//! The library holds the handler ([`handler::handle`]) and the wiring helpers
//! the binary and the tests share; the publishing algorithm itself is
//! [`crm_core::relay`]. Every record the function parks on its dead-letter
//! queue is counted ([`RECORDS_PARKED`], [`MeteredDeadLetters`]), and
//! template.yaml alarms on the first.

pub mod handler;
pub mod image;

pub use crm_aws::lambda::ConfigError;
pub use handler::handle;

use async_trait::async_trait;
use crm_aws::emf::EmfWriter;
use crm_aws::lambda::required;
use crm_core::clock::SystemClock;
use crm_core::metrics::{MetricSet, MetricsSink};
use crm_core::ports::{DeadLetter, DeadLetterQueue, EventBus, ProgressLog, ProgressReporter, StoreError};
use crm_core::relay::{Relay, RelayLetter, RetryPolicy, RELAY_CONSUMER};
use std::sync::Arc;

pub use crm_core::relay::TokioPause;

/// The relay as the function runs it: the wall clock, the default retry
/// policy and real pauses between attempts.
pub fn relay(bus: Arc<dyn EventBus>, dead_letters: Arc<dyn DeadLetterQueue>) -> Relay {
    Relay::new(bus, dead_letters, Arc::new(SystemClock)).with_retry(RetryPolicy::default(), Arc::new(TokioPause))
}

/// The metric of a record the relay parked on its dead-letter queue (decision
/// 0030): a count of 1 per letter the queue took, dimension `Consumer` =
/// `relay`, property `Parked`: `event` (an event the bus did not take, parked
/// whole), `event-by-key` (one too large for a queue message, parked by its
/// key) or `poison` (a stream record that is not a readable event). The
/// `RelayRecordsParkedAlarm` of template.yaml fires on the first.
pub const RECORDS_PARKED: &str = "RecordsParked";

/// The relay's dead-letter queue, counting each letter it took
/// ([`RECORDS_PARKED`], timestamped with the letter's `failed_at`). A letter
/// the queue refused is not counted: the relay reports that record as a batch
/// item failure, and Lambda delivers it again.
pub struct MeteredDeadLetters {
    inner: Arc<dyn DeadLetterQueue>,
    metrics: Arc<dyn MetricsSink>,
}

impl MeteredDeadLetters {
    pub fn new(inner: Arc<dyn DeadLetterQueue>, metrics: Arc<dyn MetricsSink>) -> Self {
        MeteredDeadLetters { inner, metrics }
    }
}

/// What a relay letter holds, for the `Parked` property of [`RECORDS_PARKED`].
fn parked_kind(letter: &DeadLetter) -> &'static str {
    match RelayLetter::from_letter(letter) {
        Some(RelayLetter::Event(parked)) if parked.stored.is_some() => "event",
        Some(RelayLetter::Event(_)) => "event-by-key",
        _ => "poison",
    }
}

#[async_trait]
impl DeadLetterQueue for MeteredDeadLetters {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let kind = parked_kind(&letter);
        let at = letter.failed_at;
        self.inner.park(letter).await?;
        self.metrics.emit(
            MetricSet::new(at)
                .dimension("Consumer", RELAY_CONSUMER)
                .count(RECORDS_PARKED, 1)
                .property("Parked", kind),
        );
        Ok(())
    }
}

/// The relay function's settings, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `EVENT_BUS_NAME`: the bus to publish to (name or ARN).
    pub event_bus_name: String,
    /// `DEAD_LETTER_QUEUE_URL`: where records that cannot be relayed go.
    pub dead_letter_queue_url: String,
    /// `METRICS_NAMESPACE`: the EMF namespace of the lag and throughput
    /// metrics (default `Crm`, decision 0026).
    pub metrics_namespace: String,
    /// `PROGRESS_TABLE` (optional): the table where the relay leaves its
    /// iterator age for `/health` (the read-models table).
    pub progress_table: Option<String>,
}

impl Settings {
    /// The variables [`Settings::from_lookup`] reads.
    pub const NAMES: &'static [&'static str] = &[
        "EVENT_BUS_NAME",
        "DEAD_LETTER_QUEUE_URL",
        "METRICS_NAMESPACE",
        "PROGRESS_TABLE",
    ];

    /// The settings from `lookup` (the environment on Lambda); a missing
    /// required one is an error naming it.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Settings {
            event_bus_name: required(lookup, "EVENT_BUS_NAME")?,
            dead_letter_queue_url: required(lookup, "DEAD_LETTER_QUEUE_URL")?,
            metrics_namespace: EmfWriter::namespace_from(lookup),
            progress_table: lookup("PROGRESS_TABLE").filter(|v| !v.trim().is_empty()),
        })
    }
}

/// The relay over its ports: [`relay`] with its metrics (each batch's lag
/// and throughput, each record parked: [`MeteredDeadLetters`]) and, when
/// given, the log where it leaves its progress.
pub fn build(
    bus: Arc<dyn EventBus>,
    dead_letters: Arc<dyn DeadLetterQueue>,
    metrics: Arc<dyn MetricsSink>,
    progress: Option<Arc<dyn ProgressLog>>,
) -> Relay {
    let dead_letters = Arc::new(MeteredDeadLetters::new(dead_letters, metrics.clone()));
    let relay = relay(bus, dead_letters).with_metrics(metrics);
    match progress {
        Some(log) => relay.with_progress(Arc::new(ProgressReporter::new(log, crm_core::relay::RELAY_CONSUMER))),
        None => relay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn settings_need_the_bus_and_the_dead_letter_queue() {
        assert_eq!(
            Settings::from_lookup(&env(&[
                ("EVENT_BUS_NAME", "crm"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q")
            ])),
            Ok(Settings {
                event_bus_name: "crm".into(),
                dead_letter_queue_url: "https://sqs/q".into(),
                metrics_namespace: "Crm".into(),
                progress_table: None,
            })
        );
        assert_eq!(
            Settings::from_lookup(&env(&[
                ("EVENT_BUS_NAME", "crm"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
                ("PROGRESS_TABLE", "crm-read-models")
            ]))
            .map(|s| s.progress_table),
            Ok(Some("crm-read-models".into()))
        );
        assert_eq!(
            Settings::from_lookup(&env(&[
                ("EVENT_BUS_NAME", "crm"),
                ("DEAD_LETTER_QUEUE_URL", "https://sqs/q"),
                ("METRICS_NAMESPACE", "Shop")
            ]))
            .map(|s| s.metrics_namespace),
            Ok("Shop".into())
        );
        assert_eq!(
            Settings::from_lookup(&env(&[("EVENT_BUS_NAME", "crm")])),
            Err(ConfigError("DEAD_LETTER_QUEUE_URL"))
        );
        assert_eq!(
            Settings::from_lookup(&env(&[("EVENT_BUS_NAME", " "), ("DEAD_LETTER_QUEUE_URL", "u")])),
            Err(ConfigError("EVENT_BUS_NAME"))
        );
    }

    #[test]
    fn the_names_are_the_ones_read() {
        let asked = std::cell::RefCell::new(Vec::new());
        let _ = Settings::from_lookup(&|name: &str| {
            asked.borrow_mut().push(name.to_string());
            Some("x".to_string())
        });
        assert_eq!(asked.into_inner(), Settings::NAMES);
    }
}
