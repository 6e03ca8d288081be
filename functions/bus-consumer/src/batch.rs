//! One SQS batch in, `batchItemFailures` out: how every consumer function
//! (projector, consent, campaign, channel) takes its events on AWS
//! (ARCHITECTURE.md §6, decision 0029).
//!
//! What really happens on AWS: the bus's rule puts each event into the
//! consumer's SQS queue (the message body is the EventBridge event, its
//! `detail` the stored envelope with personal fields encrypted). The
//! function's event source mapping hands the function a batch of messages;
//! the batch is one page. The answer decides what SQS does with each
//! message:
//!
//! - not named in `batchItemFailures`: done, Lambda deletes it. That
//!   includes a message that is not a usable event (poison): it is parked
//!   in the dead-letter queue with its reason, still encrypted, and never
//!   blocks the queue;
//! - named: it becomes visible again after the queue's visibility timeout
//!   and is delivered again, which the consumers' checkpoints make safe;
//!   after the queue's `maxReceiveCount` receives, the redrive policy moves
//!   it, as it is, to the dead-letter queue, where `crm-ops dlq redrive`
//!   finds it.
//!
//! Nothing is answered by an error of the whole invocation: an error would
//! make every message of the batch visible again, the handled ones too.
//!
//! Stored events go to the handler as one page, in stream order
//! ([`EventHandler::handle_page`]). When the page fails (a store throttled,
//! a checkpoint kept moving), each event is handled on its own, so that only
//! the messages that really failed are reported. Messages that are not
//! stored events (fired timers, SES feedback) go to [`OtherMessages`] one by
//! one.
//!
//! A redriven dead letter (decision 0085) carries the message attribute
//! [`REDRIVE_CONSUMER_ATTRIBUTE`] naming the consumer that parked it: its
//! event goes to that consumer of the group alone
//! ([`EventHandler::handle_for`]), on its own beside the page, so the
//! group's others, which took or refused it already, neither see it again
//! nor park it anew. A name that is the function's goes to the whole group
//! (in the page); a name the function does not host is parked, as received,
//! with the reason.

use crate::handler::decode;
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
pub use crm_aws::ops::REDRIVE_CONSUMER_ATTRIBUTE;
use crm_core::consumer::{EventHandler, NotDecrypted, PageOutcome};
use crm_core::event::EventEnvelope;
use crm_core::failure::{Classify, Failure, FailureKind};
use crm_core::ports::{DeadLetter, DeadLetterQueue};
use crm_core::privacy::scrub::scrub;
use crm_core::privacy::{decrypt_envelope, KeyStore};
use serde_json::Value;

/// What a function did with a message that is not a stored event.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// Handled; the value says how (for the log).
    Done(Value),
    /// Not handled, and its kind says what happens: poison is parked (the
    /// cause's text the reason), anything else is delivered again.
    Failed(Failure),
}

/// The messages of a queue that are not stored events: fired timers (campaign,
/// channel) and SES feedback (channel).
#[async_trait]
pub trait OtherMessages: Send + Sync {
    /// `None` when `event` is a stored event for the page; otherwise what
    /// was done with it.
    async fn take(&self, event: &Value) -> Option<Taken>;
}

/// A queue that carries stored events only (projector, consent).
pub struct StoredEventsOnly;

#[async_trait]
impl OtherMessages for StoredEventsOnly {
    async fn take(&self, _: &Value) -> Option<Taken> {
        None
    }
}

/// A message that will be delivered again, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub message_id: String,
    pub reason: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// Messages in the batch.
    pub messages: usize,
    /// Stored events handed to the handler.
    pub events: usize,
    /// Of them, redriven for one consumer ([`REDRIVE_CONSUMER_ATTRIBUTE`])
    /// and handed to it alone.
    pub redriven: usize,
    /// What the handler did with them, per (consumer, event).
    pub outcome: PageOutcome,
    /// Whether the page failed and its events were handled one by one.
    pub one_by_one: bool,
    /// Messages that were not stored events, handled by [`OtherMessages`].
    pub others: Vec<Value>,
    /// Messages parked as unusable, with the reason.
    pub parked: Vec<String>,
    /// Messages to deliver again.
    pub failed: Vec<Failed>,
    /// When the oldest message of the batch was sent to the queue (SQS's
    /// `SentTimestamp`): how far behind the consumer is
    /// ([`crm_core::ports::ProgressReporter`]).
    pub oldest_sent_at: Option<DateTime<Utc>>,
}

impl BatchReport {
    /// The answer to the event source mapping: the messages that failed.
    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for failed in &self.failed {
            response.add_failure(failed.message_id.clone());
        }
        response
    }

    fn fail(&mut self, message_id: &str, reason: impl Into<String>) {
        self.failed.push(Failed {
            message_id: message_id.to_string(),
            reason: reason.into(),
        });
    }
}

/// Handles one SQS batch: see the module documentation. Events arrive as
/// stored and are decrypted with `keys` before `handler` sees them;
/// `dead_letters` takes what is unusable (as received, never decrypted).
pub async fn handle_batch(
    batch: SqsEvent,
    handler: &dyn EventHandler,
    others: &dyn OtherMessages,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> BatchReport {
    handle_batch_at(batch, handler, others, keys, dead_letters, Utc::now()).await
}

/// [`handle_batch`] at `now`.
pub async fn handle_batch_at(
    batch: SqsEvent,
    handler: &dyn EventHandler,
    others: &dyn OtherMessages,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
    now: DateTime<Utc>,
) -> BatchReport {
    let mut report = BatchReport {
        messages: batch.records.len(),
        oldest_sent_at: batch.records.iter().filter_map(sent_at).min(),
        ..BatchReport::default()
    };
    let mut page: Vec<(String, EventEnvelope)> = Vec::with_capacity(batch.records.len());
    // Redriven for one consumer: (message id, consumer, event).
    let mut alone: Vec<(String, &'static str, EventEnvelope)> = Vec::new();
    let hosted = handler.consumer_names();
    for message in batch.records {
        let redriven_for = redriven_for(&message);
        let message_id = message.message_id.unwrap_or_default();
        let body = message.body.unwrap_or_default();
        let event: Value = match serde_json::from_str(&body) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("message body is not JSON: {e}");
                park(
                    &mut report,
                    handler,
                    dead_letters,
                    &message_id,
                    reason,
                    Value::String(body),
                    now,
                )
                .await;
                continue;
            }
        };
        match others.take(&event).await {
            None => {}
            Some(Taken::Done(done)) => {
                report.others.push(done);
                continue;
            }
            Some(Taken::Failed(failure)) if failure.kind() == FailureKind::Poison => {
                let reason = failure.cause().to_string();
                park(&mut report, handler, dead_letters, &message_id, reason, event, now).await;
                continue;
            }
            Some(Taken::Failed(failure)) => {
                let reason = failure.cause().to_string();
                tracing::warn!(function = handler.name(), message_id, kind = %failure.kind(), reason = %scrub(&reason), "message not handled; SQS will deliver it again");
                report.fail(&message_id, reason);
                continue;
            }
        }
        let mut envelope = match decode(&event) {
            Ok(envelope) => envelope,
            Err(unusable) => {
                park(
                    &mut report,
                    handler,
                    dead_letters,
                    &message_id,
                    unusable.to_string(),
                    event,
                    now,
                )
                .await;
                continue;
            }
        };
        // Redriven for one consumer: that one alone (`None`: the group's page).
        let consumer = match redriven_for.as_deref() {
            None => None,
            Some(name) if name == handler.name() => None,
            Some(name) => match hosted.iter().find(|c| **c == name) {
                Some(consumer) => Some(*consumer),
                None => {
                    let reason = format!(
                        "redriven for consumer {name:?}, which {} does not host (its consumers: {})",
                        handler.name(),
                        hosted.join(", ")
                    );
                    park(&mut report, handler, dead_letters, &message_id, reason, event, now).await;
                    continue;
                }
            },
        };
        if let Err(e) = decrypt_envelope(keys, &mut envelope).await {
            tracing::warn!(
                function = handler.name(),
                message_id,
                event_id = %envelope.event_id,
                stream_id = %envelope.stream_id,
                version = envelope.version,
                error = %e,
                "event not decrypted; SQS will deliver it again"
            );
            let not_decrypted = NotDecrypted {
                stream_id: envelope.stream_id,
                version: envelope.version,
                source: e,
            };
            report.fail(&message_id, not_decrypted.to_string());
            continue;
        }
        match consumer {
            Some(consumer) => alone.push((message_id, consumer, envelope)),
            None => page.push((message_id, envelope)),
        }
    }
    // Stream order: the page path fills gaps either way, but in order it reads none.
    page.sort_by(|(_, a), (_, b)| (a.stream_id.as_str(), a.version).cmp(&(b.stream_id.as_str(), b.version)));
    alone.sort_by(|(_, _, a), (_, _, b)| (a.stream_id.as_str(), a.version).cmp(&(b.stream_id.as_str(), b.version)));
    report.events = page.len() + alone.len();
    report.redriven = alone.len();
    if !page.is_empty() {
        let events: Vec<EventEnvelope> = page.iter().map(|(_, e)| e.clone()).collect();
        match handler.handle_page(&events, now).await {
            Ok(outcome) => report.outcome = outcome,
            Err(error) => {
                tracing::warn!(function = handler.name(), events = events.len(), %error, "page not handled; handling its events one by one");
                report.one_by_one = true;
                for (message_id, event) in &page {
                    handle_one(&mut report, handler, message_id, None, event, now).await;
                }
            }
        }
    }
    for (message_id, consumer, event) in &alone {
        handle_one(&mut report, handler, message_id, Some(consumer), event, now).await;
    }
    report
}

/// The consumer a redriven message is for ([`REDRIVE_CONSUMER_ATTRIBUTE`]).
fn redriven_for(message: &SqsMessage) -> Option<String> {
    message
        .message_attributes
        .get(REDRIVE_CONSUMER_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
}

/// Hands one event to the whole group (`consumer` `None`) or to one of its
/// consumers; what failed is delivered again.
async fn handle_one(
    report: &mut BatchReport,
    handler: &dyn EventHandler,
    message_id: &str,
    consumer: Option<&str>,
    event: &EventEnvelope,
    now: DateTime<Utc>,
) {
    let handled = match consumer {
        Some(consumer) => handler.handle_for(consumer, event, now).await,
        None => handler.handle(event, now).await,
    };
    match handled {
        Ok(one) => report.outcome.merge(PageOutcome {
            applied: one.applied.len() as u64,
            duplicates: one.duplicates.len() as u64,
            parked: one.parked.len() as u64,
        }),
        // Never poison: a handler parks poison itself.
        Err(error) => {
            tracing::warn!(
                function = handler.name(),
                message_id,
                consumer,
                kind = %error.kind(),
                event_id = %event.event_id,
                stream_id = %event.stream_id,
                version = event.version,
                %error,
                "event not handled; SQS will deliver it again"
            );
            report.fail(message_id, error.to_string());
        }
    }
}

/// SQS's `SentTimestamp` of `message` (milliseconds since the epoch).
fn sent_at(message: &aws_lambda_events::event::sqs::SqsMessage) -> Option<DateTime<Utc>> {
    let millis = message.attributes.get("SentTimestamp")?.parse::<i64>().ok()?;
    DateTime::from_timestamp_millis(millis)
}

/// Parks an unusable message as received; if the dead-letter queue cannot
/// take it, the message is delivered again instead.
async fn park(
    report: &mut BatchReport,
    handler: &dyn EventHandler,
    dead_letters: &dyn DeadLetterQueue,
    message_id: &str,
    reason: String,
    payload: Value,
    now: DateTime<Utc>,
) {
    tracing::error!(function = handler.name(), message_id, reason = %scrub(&reason), "unusable message parked");
    let letter = DeadLetter {
        consumer: handler.name().to_string(),
        reason: reason.clone(),
        payload,
        failed_at: now,
        attempts: 1,
    };
    match dead_letters.park(letter).await {
        Ok(()) => report.parked.push(reason),
        Err(e) => report.fail(
            message_id,
            format!("could not park an unusable message ({reason}): {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::bus::BusEntry;
    use crm_core::consumer::{ConsumeError, GroupOutcome};
    use crm_core::ports::StoreError;
    use crm_core::privacy::memory::InMemoryKeyStore;
    use crm_core::privacy::{encrypt_envelope, DataKey, KeyError};
    use crm_core::testing::RefusingProjection as Refusing;
    use serde_json::json;
    use std::sync::Mutex;

    /// Records what it was handed; fails pages when told to, and single
    /// events of the streams named in `failing`. A group `recorder` of the
    /// consumers `first` and `second`.
    #[derive(Default)]
    struct Recorder {
        pages: Mutex<Vec<Vec<(String, u64)>>>,
        singles: Mutex<Vec<(String, u64)>>,
        /// `handle_for` calls: (consumer, stream, version).
        fors: Mutex<Vec<(String, String, u64)>>,
        fail_pages: bool,
        failing: Vec<String>,
    }

    fn busy() -> ConsumeError {
        ConsumeError::retry("recorder", StoreError::Unavailable("throttled".into()))
    }

    #[async_trait]
    impl EventHandler for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn consumer_names(&self) -> Vec<&'static str> {
            vec!["first", "second"]
        }

        async fn handle_for(
            &self,
            consumer: &str,
            event: &EventEnvelope,
            _: DateTime<Utc>,
        ) -> Result<GroupOutcome, ConsumeError> {
            self.fors
                .lock()
                .expect("lock")
                .push((consumer.to_string(), event.stream_id.clone(), event.version));
            if self.failing.contains(&event.stream_id) {
                return Err(busy());
            }
            Ok(GroupOutcome {
                applied: vec!["second"],
                duplicates: Vec::new(),
                parked: Vec::new(),
            })
        }

        async fn handle(&self, event: &EventEnvelope, _: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
            self.singles
                .lock()
                .expect("lock")
                .push((event.stream_id.clone(), event.version));
            if self.failing.contains(&event.stream_id) {
                return Err(busy());
            }
            Ok(GroupOutcome {
                applied: vec!["recorder"],
                duplicates: Vec::new(),
                parked: Vec::new(),
            })
        }

        async fn handle_page(&self, events: &[EventEnvelope], _: DateTime<Utc>) -> Result<PageOutcome, ConsumeError> {
            self.pages
                .lock()
                .expect("lock")
                .push(events.iter().map(|e| (e.stream_id.clone(), e.version)).collect());
            if self.fail_pages {
                return Err(busy());
            }
            Ok(PageOutcome {
                applied: events.len() as u64,
                ..PageOutcome::default()
            })
        }
    }

    #[derive(Default)]
    struct Letters(Mutex<Vec<DeadLetter>>);

    #[async_trait]
    impl DeadLetterQueue for Letters {
        async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
            self.0.lock().expect("lock").push(letter);
            Ok(())
        }
    }

    struct Full;

    #[async_trait]
    impl DeadLetterQueue for Full {
        async fn park(&self, _: DeadLetter) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("sqs throttled".into()))
        }
    }

    struct NoKeys;

    #[async_trait]
    impl KeyStore for NoKeys {
        async fn data_key(&self, _: &str) -> Result<DataKey, KeyError> {
            Err(KeyError::Unavailable("kms throttled".into()))
        }
        async fn existing_key(&self, _: &str) -> Result<Option<DataKey>, KeyError> {
            Err(KeyError::Unavailable("kms throttled".into()))
        }
        async fn delete(&self, _: &str) -> Result<(), KeyError> {
            Ok(())
        }
    }

    fn envelope(customer: &str, version: u64) -> EventEnvelope {
        let mut event =
            crm_core::testing::registered_event(customer, json!({"email": format!("{customer}@example.com")}));
        event.version = version;
        event
    }

    async fn stored(keys: &dyn KeyStore, event: &EventEnvelope) -> String {
        let mut event = event.clone();
        encrypt_envelope(keys, &mut event).await.expect("encrypted");
        BusEntry::for_event(event)
            .to_event_json("123456789012", "us-east-1")
            .to_string()
    }

    /// Message `mi` of a test batch of n was sent `n - i` seconds after this: the last one first.
    const SENT_MILLIS: i64 = 1_796_500_000_000;

    fn batch(bodies: &[String]) -> SqsEvent {
        let bodies: Vec<(String, Option<&str>)> = bodies.iter().map(|b| (b.clone(), None)).collect();
        redriven_batch(&bodies)
    }

    /// A batch whose messages carry [`REDRIVE_CONSUMER_ATTRIBUTE`] when a
    /// consumer is given, as Lambda hands over message attributes.
    fn redriven_batch(bodies: &[(String, Option<&str>)]) -> SqsEvent {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, (body, consumer))| {
                let mut record = json!({"messageId": format!("m{i}"), "receiptHandle": "r", "body": body, "eventSource": "aws:sqs",
                       "attributes": {"SentTimestamp": (SENT_MILLIS + 1000 * (bodies.len() - i) as i64).to_string()},
                       "messageAttributes": {}});
                if let Some(consumer) = consumer {
                    record["messageAttributes"][REDRIVE_CONSUMER_ATTRIBUTE] = json!({
                        "stringValue": consumer, "stringListValues": [], "binaryListValues": [], "dataType": "String"
                    });
                }
                record
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
    }

    fn failed_ids(report: &BatchReport) -> Vec<&str> {
        report.failed.iter().map(|f| f.message_id.as_str()).collect()
    }

    #[tokio::test]
    async fn the_stored_events_of_a_batch_are_one_page_in_stream_order_decrypted() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder::default();
        let letters = Letters::default();
        let bodies = vec![
            stored(&keys, &envelope("b", 2)).await,
            stored(&keys, &envelope("a", 1)).await,
            stored(&keys, &envelope("b", 1)).await,
        ];
        let report = handle_batch(batch(&bodies), &handler, &StoredEventsOnly, &keys, &letters).await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.events, 3);
        assert_eq!(report.outcome.applied, 3);
        assert!(!report.one_by_one);
        let pages = handler.pages.lock().expect("lock").clone();
        assert_eq!(
            pages,
            vec![vec![
                ("customer-a".to_string(), 1),
                ("customer-b".to_string(), 1),
                ("customer-b".to_string(), 2)
            ]]
        );
        assert!(handler.singles.lock().expect("lock").is_empty());
        assert!(report.response().batch_item_failures.is_empty());
        assert_eq!(
            report.oldest_sent_at,
            DateTime::from_timestamp_millis(SENT_MILLIS + 1000),
            "the oldest SentTimestamp of the batch"
        );
    }

    #[tokio::test]
    async fn a_failed_page_reports_only_the_messages_whose_events_failed_one_by_one() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder {
            fail_pages: true,
            failing: vec!["customer-b".into()],
            ..Recorder::default()
        };
        let bodies = vec![
            stored(&keys, &envelope("a", 1)).await,
            stored(&keys, &envelope("b", 1)).await,
            stored(&keys, &envelope("c", 1)).await,
        ];
        let report = handle_batch(batch(&bodies), &handler, &StoredEventsOnly, &keys, &Letters::default()).await;
        assert!(report.one_by_one);
        assert_eq!(failed_ids(&report), ["m1"]);
        assert_eq!(report.outcome.applied, 2);
        let response = report.response();
        assert_eq!(response.batch_item_failures.len(), 1);
        assert_eq!(response.batch_item_failures[0].item_identifier, "m1");
        let answer = serde_json::to_value(&response).expect("json");
        assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}));
    }

    #[tokio::test]
    async fn unusable_messages_are_parked_as_received_and_not_reported() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder::default();
        let letters = Letters::default();
        let good = stored(&keys, &envelope("a", 1)).await;
        let not_an_envelope = json!({"source": "crm.customer", "detail-type": "X", "detail": {"hello": 1}}).to_string();
        let bodies = vec!["{not json".to_string(), not_an_envelope, good];
        let report = handle_batch(batch(&bodies), &handler, &StoredEventsOnly, &keys, &letters).await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.parked.len(), 2, "{report:?}");
        assert_eq!(report.events, 1);
        let parked = letters.0.lock().expect("lock").clone();
        assert_eq!(parked.len(), 2);
        assert_eq!(parked[0].payload, json!("{not json"));
        assert!(parked[0].reason.contains("not JSON"), "{}", parked[0].reason);
        assert_eq!(parked[1].payload["detail"], json!({"hello": 1}));
        assert!(parked.iter().all(|l| l.consumer == "recorder"));
    }

    #[tokio::test]
    async fn what_cannot_be_decrypted_or_parked_is_delivered_again() {
        let keys = InMemoryKeyStore::new();
        let good = stored(&keys, &envelope("a", 1)).await;
        let handler = Recorder::default();
        let report = handle_batch(
            batch(&[good]),
            &handler,
            &StoredEventsOnly,
            &NoKeys,
            &Letters::default(),
        )
        .await;
        assert_eq!(failed_ids(&report), ["m0"]);
        assert!(
            report.failed[0].reason.contains("decrypting customer-a v1"),
            "{report:?}"
        );
        assert!(handler.pages.lock().expect("lock").is_empty());

        let report = handle_batch(batch(&["{".to_string()]), &handler, &StoredEventsOnly, &keys, &Full).await;
        assert_eq!(failed_ids(&report), ["m0"]);
        assert!(report.parked.is_empty());
    }

    struct Timers;

    #[async_trait]
    impl OtherMessages for Timers {
        async fn take(&self, event: &Value) -> Option<Taken> {
            match event.get("source").and_then(Value::as_str) {
                Some("crm.scheduler") => Some(match event["detail"]["name"].as_str() {
                    Some("ok") => Taken::Done(json!({"timer": "ok"})),
                    Some("busy") => Taken::Failed(Failure::reason(FailureKind::Retryable, "timer", "scheduler busy")),
                    Some("late") => Taken::Failed(Failure::reason(FailureKind::Conflict, "timer", "scheduler late")),
                    _ => Taken::Failed(Failure::reason(FailureKind::Poison, "timer", "no name")),
                }),
                _ => None,
            }
        }
    }

    #[tokio::test]
    async fn other_messages_are_taken_one_by_one_beside_the_page() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder::default();
        let letters = Letters::default();
        let timer = |name: &str| {
            json!({"source": "crm.scheduler", "detail-type": "TimerFired", "detail": {"name": name}}).to_string()
        };
        let bodies = vec![
            timer("ok"),
            timer("busy"),
            timer(""),
            stored(&keys, &envelope("a", 1)).await,
            timer("late"),
        ];
        let report = handle_batch(batch(&bodies), &handler, &Timers, &keys, &letters).await;
        assert_eq!(report.others, vec![json!({"timer": "ok"})]);
        assert_eq!(failed_ids(&report), ["m1", "m4"]);
        assert_eq!(report.failed[0].reason, "scheduler busy");
        assert_eq!(report.parked, vec!["no name".to_string()]);
        assert_eq!(report.events, 1);
        assert_eq!(letters.0.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn a_redriven_message_goes_to_its_consumer_alone_beside_the_page() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder::default();
        let letters = Letters::default();
        let bodies = vec![
            (stored(&keys, &envelope("c", 1)).await, None),
            (stored(&keys, &envelope("b", 1)).await, Some("second")),
            (stored(&keys, &envelope("a", 1)).await, None),
            // The function's own name: the whole group, in the page.
            (stored(&keys, &envelope("d", 1)).await, Some("recorder")),
        ];
        let report = handle_batch(redriven_batch(&bodies), &handler, &StoredEventsOnly, &keys, &letters).await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!((report.events, report.redriven), (4, 1), "{report:?}");
        assert_eq!(report.outcome.applied, 4, "three in the page, one for second");
        assert_eq!(
            handler.pages.lock().expect("lock").clone(),
            vec![vec![
                ("customer-a".to_string(), 1),
                ("customer-c".to_string(), 1),
                ("customer-d".to_string(), 1)
            ]]
        );
        assert_eq!(
            handler.fors.lock().expect("lock").clone(),
            vec![("second".to_string(), "customer-b".to_string(), 1)],
            "handed to handle_for, decrypted"
        );
        assert!(handler.singles.lock().expect("lock").is_empty());
        assert!(letters.0.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_redriven_message_that_fails_is_delivered_again_and_one_for_no_hosted_consumer_is_parked() {
        let keys = InMemoryKeyStore::new();
        let handler = Recorder {
            failing: vec!["customer-b".into()],
            ..Recorder::default()
        };
        let letters = Letters::default();
        let gone = stored(&keys, &envelope("g", 1)).await;
        let bodies = vec![
            (stored(&keys, &envelope("a", 1)).await, None),
            (stored(&keys, &envelope("b", 1)).await, Some("second")),
            (gone.clone(), Some("renamed-long-ago")),
        ];
        let report = handle_batch(redriven_batch(&bodies), &handler, &StoredEventsOnly, &keys, &letters).await;
        assert_eq!(failed_ids(&report), ["m1"], "the retryable failure, reported");
        assert_eq!(
            serde_json::to_value(report.response()).expect("json"),
            json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
        );
        assert!(!report.one_by_one, "the page did not fail");
        assert_eq!(handler.pages.lock().expect("lock").len(), 1);
        assert_eq!(
            handler.fors.lock().expect("lock").len(),
            1,
            "nothing for the unknown name"
        );
        assert_eq!(report.parked.len(), 1, "{report:?}");
        assert!(
            report.parked[0].contains("\"renamed-long-ago\"") && report.parked[0].contains("does not host"),
            "{}",
            report.parked[0]
        );
        let parked = letters.0.lock().expect("lock").clone();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].consumer, "recorder");
        let as_received: Value = serde_json::from_str(&gone).expect("json");
        assert_eq!(parked[0].payload, as_received, "parked as received (encrypted)");
    }

    /// The dead letters' consumers, in order.
    fn consumers(letters: &crm_core::testing::InMemoryDeadLetters) -> Vec<String> {
        letters
            .letters
            .lock()
            .expect("lock")
            .iter()
            .map(|l| l.consumer.clone())
            .collect()
    }

    /// On AWS a redrive deletes the letter and sends its event back to the
    /// function's queue: with the consumer named, a failed redrive of one of
    /// two refusals leaves two letters; for the whole group, three.
    #[tokio::test]
    async fn a_failed_redrive_of_one_of_two_refusals_leaves_two_letters() {
        use crm_core::consumer::ConsumerGroup;
        use crm_core::testing::{InMemoryDeadLetters, InMemoryEventStore};
        use std::sync::Arc;

        let keys = InMemoryKeyStore::new();
        let letters = Arc::new(InMemoryDeadLetters::default());
        let group = ConsumerGroup::new(
            "projector",
            vec![Arc::new(Refusing("first")), Arc::new(Refusing("second"))],
            Arc::new(InMemoryEventStore::default()),
            Arc::new(crm_core::memory::InMemoryReadModels::default()),
            letters.clone(),
        );
        let body = stored(&keys, &envelope("a", 1)).await;
        let report = handle_batch(
            batch(std::slice::from_ref(&body)),
            &group,
            &StoredEventsOnly,
            &keys,
            letters.as_ref(),
        )
        .await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(consumers(&letters), ["first", "second"], "both refused it");

        // The redrive of second's letter: deleted, its event sent back for second.
        let redrive =
            |letters: &InMemoryDeadLetters| letters.letters.lock().expect("lock").retain(|l| l.consumer != "second");
        redrive(&letters);
        let report = handle_batch(
            redriven_batch(&[(body.clone(), Some("second"))]),
            &group,
            &StoredEventsOnly,
            &keys,
            letters.as_ref(),
        )
        .await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!((report.redriven, report.outcome.parked), (1, 1), "{report:?}");
        assert_eq!(consumers(&letters), ["first", "second"], "2 letters, not 3");

        // Without the consumer named, the whole group refuses it again: 3.
        redrive(&letters);
        handle_batch(batch(&[body]), &group, &StoredEventsOnly, &keys, letters.as_ref()).await;
        assert_eq!(consumers(&letters), ["first", "first", "second"]);
    }
}
