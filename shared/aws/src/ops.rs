//! Operations on AWS (issue 9): replaying a consumer from the events table
//! with a parallel scan, clearing one consumer's read models, and inspecting
//! and redriving the SQS dead-letter queues. The comparison logic of the
//! consistency check is `crm_core::ops::check`, run over
//! [`crate::dynamodb::DynamoEventStore`] (behind
//! [`crm_core::privacy::EncryptingEventStore`]) and
//! [`crate::dynamodb::DynamoReadModels`].
//!
//! The scan reads the items as stored, personal fields encrypted under each
//! customer's data key (decisions 0016, 0017); the replay decrypts every
//! event with the key store before the consumer sees it, as the deployed
//! consumers do ([`crm_core::privacy::decrypt_envelope`]).

use crate::dynamodb::items::{self, Item, KIND, PK};
use crate::dynamodb::{DynamoReadModels, KIND_CHECKPOINT};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use crm_core::consumer::{Consumer, EventHandler};
use crm_core::event::EventEnvelope;
use crm_core::ops::ReplayReport;
use crm_core::ports::{DeadLetter, DeadLetterQueue, StoreError};
use crm_core::privacy::{decrypt_envelope, KeyStore};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{operation}: {message}")]
    Aws { operation: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] crm_core::ops::OpsError),
    #[error("corrupt event item: {0}")]
    Corrupt(String),
    #[error("decrypting {stream_id} v{version}: {source}")]
    Decrypt {
        stream_id: String,
        version: u64,
        source: StoreError,
    },
}

fn aws<E: std::error::Error + 'static>(operation: &'static str) -> impl Fn(E) -> OpsError {
    move |e| OpsError::Aws {
        operation,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Where a parallel replay reads: the events table, and the key store that
/// decrypts its events' personal fields.
#[derive(Clone, Copy)]
pub struct ReplaySource<'a> {
    pub client: &'a aws_sdk_dynamodb::Client,
    pub table: &'a str,
    pub keys: &'a dyn KeyStore,
}

/// Told the number of events of each page a segment hands on (the segments
/// run concurrently, so the calls interleave); for a progress bar.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// One segment of a parallel scan of the events table: every event item of
/// the segment, page by page, decrypted, handed to `consumer` in the order
/// DynamoDB returns them (a stream's events are in one segment, in version
/// order; the consumer fills any gap from the store anyway).
async fn replay_segment(
    source: ReplaySource<'_>,
    segment: i32,
    total: i32,
    consumer: &Consumer,
    dead_letters: &dyn DeadLetterQueue,
    progress: Progress<'_>,
) -> Result<ReplayReport, OpsError> {
    let mut report = ReplayReport::default();
    let mut start: Option<Item> = None;
    loop {
        let out = source
            .client
            .scan()
            .table_name(source.table)
            .segment(segment)
            .total_segments(total)
            .filter_expression("#kind = :event")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":event", items::s(items::KIND_EVENT))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(aws("Scan"))?;
        let mut events: Vec<EventEnvelope> = out
            .items()
            .iter()
            .map(|item| items::event_from_item(item).map_err(|e| OpsError::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?;
        for event in &mut events {
            // A key that cannot be had, or a field that does not decrypt,
            // stops the replay (as it fails a Lambda delivery): run it again.
            decrypt_envelope(source.keys, event)
                .await
                .map_err(|e| OpsError::Decrypt {
                    stream_id: event.stream_id.clone(),
                    version: event.version,
                    source: e,
                })?;
        }
        report.merge(&crm_core::ops::feed(consumer, &events, dead_letters, chrono::Utc::now()).await?);
        progress(u64::try_from(events.len()).unwrap_or(u64::MAX));
        match out.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return Ok(report),
        }
    }
}

/// Replays the events table of `source` into `consumer` with a parallel scan
/// of `segments` segments (Segment/TotalSegments), the segments
/// concurrently, every event decrypted with `source.keys` first.
pub async fn parallel_replay(
    source: ReplaySource<'_>,
    segments: u32,
    consumer: &Consumer,
    dead_letters: &dyn DeadLetterQueue,
    progress: Progress<'_>,
) -> Result<ReplayReport, OpsError> {
    let total = i32::try_from(segments.clamp(1, 1_000_000)).unwrap_or(1);
    let runs = (0..total).map(|s| replay_segment(source, s, total, consumer, dead_letters, progress));
    let mut report = ReplayReport::default();
    for done in futures::future::join_all(runs).await {
        report.merge(&done?);
    }
    Ok(report)
}

/// Deletes every document and checkpoint of `consumer` in the read-models
/// table (a scan; fine for an operator's rebuild). Returns how many items.
pub async fn clear_consumer(read_models: &DynamoReadModels, consumer: &str) -> Result<usize, OpsError> {
    let client = read_models.client();
    let doc_prefix = format!("{consumer}#");
    let checkpoints = format!("{KIND_CHECKPOINT}#{consumer}");
    let mut start: Option<Item> = None;
    let mut deleted = 0;
    loop {
        let out = client
            .scan()
            .table_name(read_models.table())
            .filter_expression("begins_with(#pk, :docs) OR #pk = :checkpoints")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":docs", AttributeValue::S(doc_prefix.clone()))
            .expression_attribute_values(":checkpoints", AttributeValue::S(checkpoints.clone()))
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(aws("Scan"))?;
        for item in out.items() {
            client
                .delete_item()
                .table_name(read_models.table())
                .set_key(Some(item.clone()))
                .send()
                .await
                .map_err(aws("DeleteItem"))?;
            deleted += 1;
        }
        match out.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return Ok(deleted),
        }
    }
}

/// One message of a dead-letter queue, decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueuedLetter {
    pub message_id: String,
    #[serde(skip)]
    pub receipt_handle: String,
    /// Who gave up on it (the `consumer` attribute, or the letter's).
    pub consumer: String,
    /// Why (the `reason` attribute, EventBridge's `ERROR_MESSAGE`, or the letter's).
    pub reason: String,
    /// The event to deliver again, when the message holds one.
    pub event: Option<EventEnvelope>,
    /// The body as received.
    pub body: serde_json::Value,
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

/// Decodes a dead-letter message: a parked [`DeadLetter`] (consumers'
/// poison), or an event EventBridge could not deliver (the rule target's
/// DLQ: the body is the EventBridge event, the envelope its `detail`).
pub fn decode_message(message: &aws_sdk_sqs::types::Message) -> QueuedLetter {
    let text = message.body().unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()));
    let letter: Option<DeadLetter> = serde_json::from_value(body.clone()).ok();
    let event = match &letter {
        Some(l) => serde_json::from_value(l.payload.clone()).ok(),
        None => body.get("detail").and_then(|d| serde_json::from_value(d.clone()).ok()),
    };
    QueuedLetter {
        message_id: message.message_id().unwrap_or_default().to_string(),
        receipt_handle: message.receipt_handle().unwrap_or_default().to_string(),
        consumer: attribute(message, "consumer")
            .or_else(|| letter.as_ref().map(|l| l.consumer.clone()))
            .unwrap_or_else(|| "-".into()),
        reason: attribute(message, "reason")
            .or_else(|| attribute(message, "ERROR_MESSAGE"))
            .or_else(|| letter.as_ref().map(|l| l.reason.clone()))
            .unwrap_or_else(|| "-".into()),
        event,
        body,
    }
}

/// Receives up to `max` messages of the queue (each hidden for
/// `visibility_seconds`: 0 to only look).
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: usize,
    visibility_seconds: i32,
) -> Result<Vec<QueuedLetter>, OpsError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while out.len() < max {
        let batch = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(i32::try_from((max - out.len()).min(10)).unwrap_or(10))
            .visibility_timeout(visibility_seconds)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(aws("ReceiveMessage"))?;
        let messages = batch.messages();
        let before = out.len();
        for m in messages {
            let letter = decode_message(m);
            if seen.insert(letter.message_id.clone()) {
                out.push(letter);
            }
        }
        if messages.is_empty() || out.len() == before {
            break;
        }
    }
    Ok(out)
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    /// Delivered and deleted from the queue.
    pub redriven: Vec<String>,
    /// Still failing (left in the queue): message id and why.
    pub failed: Vec<(String, String)>,
}

/// Redrives up to `max` messages: each event goes through `handler` (the
/// consumer group that parked it) and its message is deleted once handled
/// with nothing parked again. A consumer that parks it again has put a new
/// dead letter (with the new reason) in its group's queue, so the old
/// message is deleted too (no copy per redrive) and reported as failed; any
/// other failure leaves it in the queue.
pub async fn redrive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    handler: &dyn EventHandler,
    max: usize,
) -> Result<RedriveReport, OpsError> {
    enum Outcome {
        Delivered,
        /// A consumer parked it again: a new dead letter holds it.
        ParkedAgain(String),
        /// Still failing: left in the queue.
        Failed(String),
    }
    let mut report = RedriveReport::default();
    for letter in receive(client, queue_url, max, 60).await? {
        let outcome = match &letter.event {
            None => Outcome::Failed("the message holds no event".into()),
            Some(event) => match handler.handle(event, chrono::Utc::now()).await {
                Ok(o) if o.parked.is_empty() => Outcome::Delivered,
                Ok(o) => Outcome::ParkedAgain(format!("parked again by {}", o.parked.join(", "))),
                Err(e) => Outcome::Failed(e.to_string()),
            },
        };
        if let Outcome::Failed(why) = outcome {
            // Visible again at once, for the next look.
            let _ = client
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(&letter.receipt_handle)
                .visibility_timeout(0)
                .send()
                .await;
            report.failed.push((letter.message_id, why));
            continue;
        }
        client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(&letter.receipt_handle)
            .send()
            .await
            .map_err(aws("DeleteMessage"))?;
        match outcome {
            Outcome::ParkedAgain(why) => report.failed.push((letter.message_id, why)),
            _ => report.redriven.push(letter.message_id),
        }
    }
    Ok(report)
}
