//! Operations on AWS (issues 9 and 15): replaying a consumer from the events
//! table with a parallel scan, clearing one consumer's read models,
//! inspecting and redriving the SQS dead-letter queues (into a consumer in
//! process, back onto the bus through the relay, back into a consumer's
//! source queue, or, for the timers EventBridge Scheduler parked, onto the
//! bus as their schedules would have put them), and publishing a time range
//! of the events table again (decision 0030). The comparison logic of the
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
use crate::dynamodb::DynamoReadModels;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::bus::BusEntry;
use crm_core::consumer::{Consumer, EventHandler};
use crm_core::event::EventEnvelope;
use crm_core::ops::ReplayReport;
use crm_core::ports::{DeadLetter, DeadLetterQueue, EventStore, StoreError};
use crm_core::privacy::{decrypt_envelope, KeyStore};
use crm_core::relay::{undeliverable, EventKey, Relay, RelayLetter};
use crm_core::scheduler::{TimerPayload, TIMER_FIRED, TIMER_SOURCE};

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

/// Deletes every document of `consumer` and its version in every stream's
/// checkpoint item ([`DynamoReadModels::clear_consumer`], decision 0036).
/// Returns how many documents and checkpoints went.
pub async fn clear_consumer(read_models: &DynamoReadModels, consumer: &str) -> Result<usize, OpsError> {
    Ok(read_models.clear_consumer(consumer).await?)
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
    /// The event to deliver again, when the message holds one (for the
    /// relay's letters: the parked bus entry's envelope, as stored).
    pub event: Option<EventEnvelope>,
    /// The relay's letters: the event's key in the events table.
    pub key: Option<EventKey>,
    /// EventBridge Scheduler's letters: the timer its schedule could not
    /// put on the bus (the body is the schedule target's `Input`).
    pub timer: Option<TimerPayload>,
    /// The body as received.
    pub body: serde_json::Value,
    /// The consumer a redrive into the function's queue is for: the one
    /// that parked the letter (its `consumer` attribute, or the letter's),
    /// or the one a redriven message that failed again was for
    /// ([`REDRIVE_CONSUMER_ATTRIBUTE`]). `None` for what no consumer
    /// parked: an event the queue's redrive policy moved (the whole group
    /// takes it again), the relay's and the scheduler's letters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redrive_for: Option<String>,
}

/// The message attribute that names the one consumer a redriven message is
/// for (decision 0085): the function hands its event to that consumer of
/// its group alone (`EventHandler::handle_for`), so the others, which took
/// or refused it already, neither see it again nor park it anew.
pub const REDRIVE_CONSUMER_ATTRIBUTE: &str = "crm-redrive-consumer";

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

/// The attribute EventBridge Scheduler puts on a dead-letter event: the ARN
/// of the schedule that could not invoke its target
/// (`arn:aws:scheduler:<region>:<account>:schedule/<group>/<name>`). It
/// also sets `ERROR_CODE`, `ERROR_MESSAGE`, `EXECUTION_ID`, `TARGET_ARN`
/// and others; the body is the target's `Input`.
pub const SCHEDULE_ARN_ATTRIBUTE: &str = "SCHEDULE_ARN";

/// Who parked the timers of the scheduler's dead-letter queue.
pub const SCHEDULER_CONSUMER: &str = "scheduler";

/// Decodes a dead-letter message: a parked [`DeadLetter`] (consumers'
/// poison), an event EventBridge could not deliver (the rule target's
/// DLQ: the body is the EventBridge event, the envelope its `detail`), or
/// a timer EventBridge Scheduler could not put on the bus (the scheduler's
/// DLQ: the body is the schedule's `Input`, a [`TimerPayload`]; the
/// consumer is `scheduler` with the schedule's name, the reason
/// `ERROR_CODE: ERROR_MESSAGE`).
pub fn decode_message(message: &aws_sdk_sqs::types::Message) -> QueuedLetter {
    let text = message.body().unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()));
    let letter: Option<DeadLetter> = serde_json::from_value(body.clone()).ok();
    let relay_letter = letter.as_ref().and_then(RelayLetter::from_letter);
    let event = match (&letter, &relay_letter) {
        (_, Some(RelayLetter::Event(parked))) => parked.stored.as_ref().map(|e| e.detail.clone()),
        (Some(l), _) => serde_json::from_value(l.payload.clone()).ok().or_else(|| {
            l.payload
                .get("detail")
                .and_then(|d| serde_json::from_value(d.clone()).ok())
        }),
        (None, _) => body.get("detail").and_then(|d| serde_json::from_value(d.clone()).ok()),
    };
    let timer: Option<TimerPayload> = match &letter {
        Some(_) => None,
        None => serde_json::from_value(body.clone()).ok(),
    };
    // The scheduler's letters: `scheduler (<schedule name>)`.
    let schedule = attribute(message, SCHEDULE_ARN_ATTRIBUTE).map(|arn| {
        let name = arn.rsplit('/').next().unwrap_or_default().to_string();
        format!("{SCHEDULER_CONSUMER} ({name})")
    });
    let scheduler_error = match (attribute(message, "ERROR_CODE"), attribute(message, "ERROR_MESSAGE")) {
        (Some(code), Some(why)) if schedule.is_some() => Some(format!("{code}: {why}")),
        _ => None,
    };
    // Who parked it (a handler's letter), or who the redriven message that
    // failed again, and that the redrive policy moved back, was for.
    let parked_by = attribute(message, "consumer").or_else(|| letter.as_ref().map(|l| l.consumer.clone()));
    let redriven_for = attribute(message, REDRIVE_CONSUMER_ATTRIBUTE);
    let redrive_for = match &relay_letter {
        Some(_) => None,
        None => parked_by.clone().or_else(|| redriven_for.clone()),
    }
    .filter(|c| !c.is_empty() && c != "-");
    QueuedLetter {
        message_id: message.message_id().unwrap_or_default().to_string(),
        receipt_handle: message.receipt_handle().unwrap_or_default().to_string(),
        consumer: parked_by.or(redriven_for).or(schedule).unwrap_or_else(|| "-".into()),
        reason: attribute(message, "reason")
            .or(scheduler_error)
            .or_else(|| attribute(message, "ERROR_MESSAGE"))
            .or_else(|| letter.as_ref().map(|l| l.reason.clone()))
            .unwrap_or_else(|| "-".into()),
        event,
        key: relay_letter.as_ref().and_then(RelayLetter::key).cloned(),
        timer,
        body,
        redrive_for,
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
/// consumer group that parked it; for the consumer that parked it alone,
/// [`QueuedLetter::redrive_for`], `EventHandler::handle_for`, so the
/// group's others do not park it anew) and its message is deleted once handled
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
            // For the consumer that parked it alone; a group hands a name
            // that is not one of its consumers (the function's) to all.
            Some(event) => match match &letter.redrive_for {
                Some(consumer) => handler.handle_for(consumer, event, chrono::Utc::now()).await,
                None => handler.handle(event, chrono::Utc::now()).await,
            } {
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

/// Hides `letter` no longer: visible again at once, for the next look.
pub(crate) async fn release(client: &aws_sdk_sqs::Client, queue_url: &str, letter: &QueuedLetter) {
    if let Err(e) = client
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(&letter.receipt_handle)
        .visibility_timeout(0)
        .send()
        .await
    {
        tracing::warn!(message = %letter.message_id, error = %DisplayErrorContext(&e), "could not release a message");
    }
}

pub(crate) async fn delete(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    letter: &QueuedLetter,
) -> Result<(), OpsError> {
    client
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(&letter.receipt_handle)
        .send()
        .await
        .map_err(aws("DeleteMessage"))?;
    Ok(())
}

/// How long a redrive hides the messages it works on.
const REDRIVE_VISIBILITY_SECONDS: i32 = 300;

/// The stored event of `key`, as stored (personal fields encrypted), read
/// from `stored` (the events table itself, not a decrypting store).
async fn read_event(stored: &dyn EventStore, key: &EventKey) -> Result<EventEnvelope, String> {
    let events = stored
        .read_stream(&key.pk, key.sk.saturating_sub(1), 1)
        .await
        .map_err(|e| format!("reading {} v{}: {e}", key.pk, key.sk))?;
    events
        .into_iter()
        .find(|e| e.version == key.sk)
        .ok_or_else(|| format!("{} v{} is not in the events table", key.pk, key.sk))
}

/// The window a Lambda on-failure record of the stream mapping names
/// (`DDBStreamBatchInfo`: it carries the shard and sequence numbers, never
/// the records), widened by a minute each side for `recorded_at`.
fn stream_batch_window(body: &serde_json::Value) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let info = body.get("DDBStreamBatchInfo")?;
    let at = |name: &str| {
        info.get(name)
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    };
    let minute = chrono::Duration::minutes(1);
    Some((
        at("approximateArrivalOfFirstRecord")? - minute,
        at("approximateArrivalOfLastRecord")? + minute,
    ))
}

/// What a relay dead letter asks to publish again: the parked entry, or the
/// event re-read from the table by its key.
async fn bus_entry_of(letter: &QueuedLetter, stored: &dyn EventStore) -> Result<BusEntry, String> {
    if let Some((from, to)) = stream_batch_window(&letter.body) {
        return Err(format!(
            "an on-failure record of the stream mapping carries no events; publish its window again: \
             crm-ops republish --from {} --to {}",
            from.to_rfc3339_opts(SecondsFormat::Secs, true),
            to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    let entry = match (&letter.event, &letter.key) {
        (Some(event), _) => BusEntry::for_event(event.clone()),
        (None, Some(key)) => BusEntry::for_event(read_event(stored, key).await?),
        (None, None) => return Err("the message holds no event and no key".into()),
    };
    match undeliverable(&entry) {
        Some(why) => Err(why),
        None => Ok(entry),
    }
}

/// Publishes the events of up to `max` messages of the relay's dead-letter
/// queue again through `relay` (retries, chunks of ten within 256 KB): the
/// parked bus entry as it is, or, for a letter that carries only the event's
/// key (too large for a message, or a record the relay could not read), the
/// event re-read from `stored` (the events table, as stored) and built the
/// way the relay builds it ([`BusEntry::for_event`]). A message is deleted
/// once its event is on the bus. An event the bus still refuses is parked by
/// `relay` again (its dead-letter queue: a new letter with the new reason),
/// so the old message is deleted too and reported as failed; a message with
/// nothing to publish (an event no longer in the table, one over the bus's
/// limit or a consumer queue's, the stream mapping's on-failure record)
/// stays in the queue.
pub async fn redrive_to_bus(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    stored: &dyn EventStore,
    relay: &Relay,
    max: usize,
) -> Result<RedriveReport, OpsError> {
    let mut report = RedriveReport::default();
    let mut ready: Vec<QueuedLetter> = Vec::new();
    let mut entries: Vec<(String, BusEntry)> = Vec::new();
    for letter in receive(client, queue_url, max, REDRIVE_VISIBILITY_SECONDS).await? {
        match bus_entry_of(&letter, stored).await {
            Ok(entry) => {
                entries.push((letter.message_id.clone(), entry));
                ready.push(letter);
            }
            Err(why) => {
                release(client, queue_url, &letter).await;
                report.failed.push((letter.message_id, why));
            }
        }
    }
    let published = relay.publish(entries).await;
    let stopped_at = published
        .first_failure
        .as_ref()
        .and_then(|id| ready.iter().position(|l| &l.message_id == id))
        .unwrap_or(ready.len());
    for (i, letter) in ready.into_iter().enumerate() {
        if i >= stopped_at {
            // Neither published nor parked again: left for the next redrive
            // (it may have gone out after all; consumers drop duplicates).
            release(client, queue_url, &letter).await;
            report.failed.push((
                letter.message_id,
                "not published, and its dead-letter queue refused it".into(),
            ));
            continue;
        }
        delete(client, queue_url, &letter).await?;
        if published.parked_records.contains(&letter.message_id) {
            report.failed.push((
                letter.message_id,
                "not published; parked again with the new reason".into(),
            ));
        } else {
            report.redriven.push(letter.message_id);
        }
    }
    Ok(report)
}

/// The account and region a consumer queue's URL names
/// (`https://sqs.<region>.amazonaws.com/<account>/<name>`; moto's
/// `http://host:port/<account>/<name>` names no region).
pub(crate) fn account_and_region(queue_url: &str) -> (Option<String>, Option<String>) {
    let without_scheme = queue_url.split_once("://").map_or(queue_url, |(_, rest)| rest);
    let mut parts = without_scheme.split('/');
    let host = parts.next().unwrap_or_default();
    let account = parts.next().filter(|a| !a.is_empty()).map(str::to_string);
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .map(str::to_string);
    (account, region)
}

/// The message a consumer's queue receives for a dead letter: the
/// EventBridge event JSON, as the rule delivers it. A message the queue's
/// redrive policy moved (the raw event) goes back as it is; a parked
/// [`DeadLetter`] gives its payload when that is the EventBridge event, and
/// an envelope (as stored) or a parked bus entry wrapped as the bus would
/// carry it ([`BusEntry::to_event_json`]).
pub fn consumer_message(letter: &QueuedLetter, account: &str, region: &str) -> Result<String, String> {
    let is_bus_event = |v: &serde_json::Value| v.get("detail").is_some() && v.get("detail-type").is_some();
    if is_bus_event(&letter.body) {
        return serde_json::to_string(&letter.body).map_err(|e| e.to_string());
    }
    if let Some(payload) = letter.body.get("payload").filter(|p| is_bus_event(p)) {
        return serde_json::to_string(payload).map_err(|e| e.to_string());
    }
    match &letter.event {
        Some(event) => serde_json::to_string(&BusEntry::for_event(event.clone()).to_event_json(account, region))
            .map_err(|e| e.to_string()),
        None => Err("the message holds no event".into()),
    }
}

/// Sends `body` (a [`consumer_message`]) to the consumer queue
/// `target_url`; for the consumer `consumer` of the function's group alone
/// when given ([`REDRIVE_CONSUMER_ATTRIBUTE`]), to the whole group without.
pub(crate) async fn send_to_consumer_queue(
    client: &aws_sdk_sqs::Client,
    target_url: &str,
    body: String,
    consumer: Option<&str>,
) -> Result<(), String> {
    let mut send = client.send_message().queue_url(target_url).message_body(body);
    if let Some(consumer) = consumer {
        let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(consumer)
            .build()
            .map_err(|e| format!("building the {REDRIVE_CONSUMER_ATTRIBUTE} attribute: {e}"))?;
        send = send.message_attributes(REDRIVE_CONSUMER_ATTRIBUTE, value);
    }
    send.send()
        .await
        .map(|_| ())
        .map_err(|e| format!("SendMessage to {target_url}: {}", DisplayErrorContext(&e)))
}

/// Sends the events of up to `max` messages of a consumer's dead-letter
/// queue back to the consumer's source queue `target_url`, each as the
/// EventBridge event JSON ([`consumer_message`]), so the consumer's own
/// function takes them again: a letter a consumer parked for that consumer
/// alone ([`QueuedLetter::redrive_for`] as [`REDRIVE_CONSUMER_ATTRIBUTE`]),
/// an event the queue's redrive policy moved for the whole group. A
/// message is deleted from the dead-letter
/// queue only after its send succeeded; one without an event, or whose send
/// failed, stays.
pub async fn redrive_to_queue(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    target_url: &str,
    max: usize,
) -> Result<RedriveReport, OpsError> {
    let (account, url_region) = account_and_region(target_url);
    let account = account.unwrap_or_else(|| "000000000000".into());
    let region = url_region
        .or_else(|| client.config().region().map(|r| r.to_string()))
        .unwrap_or_else(|| "us-east-1".into());
    let mut report = RedriveReport::default();
    for letter in receive(client, queue_url, max, REDRIVE_VISIBILITY_SECONDS).await? {
        let body = match consumer_message(&letter, &account, &region) {
            Ok(body) => body,
            Err(why) => {
                release(client, queue_url, &letter).await;
                report.failed.push((letter.message_id, why));
                continue;
            }
        };
        match send_to_consumer_queue(client, target_url, body, letter.redrive_for.as_deref()).await {
            Ok(()) => {
                delete(client, queue_url, &letter).await?;
                report.redriven.push(letter.message_id);
            }
            Err(why) => {
                release(client, queue_url, &letter).await;
                report.failed.push((letter.message_id, why));
            }
        }
    }
    Ok(report)
}

/// Seals the letters of up to `max` messages of a dead-letter queue that
/// were parked with personal fields in clear (before decision 0040): each
/// such letter is parked again in the same queue through
/// [`crm_core::consumer::SealedDeadLetters`] (its fields encrypted under the
/// customer's key, `[erased]` without one), and the old message deleted
/// once the new one is in. Letters already sealed, and messages that hold
/// no parked letter (a rule's undelivered events are stored events), are
/// left as they are, visible again at once. `redriven` lists the messages
/// sealed.
pub async fn reseal(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    keys: std::sync::Arc<dyn KeyStore>,
    max: usize,
) -> Result<RedriveReport, OpsError> {
    let sealed = crm_core::consumer::SealedDeadLetters::new(
        std::sync::Arc::new(crate::sqs::SqsDeadLetterQueue::new(client.clone(), queue_url)),
        keys.clone(),
    );
    let mut report = RedriveReport::default();
    for letter in receive(client, queue_url, max, REDRIVE_VISIBILITY_SECONDS).await? {
        let Ok(parked) = serde_json::from_value::<DeadLetter>(letter.body.clone()) else {
            release(client, queue_url, &letter).await;
            continue;
        };
        let mut payload = parked.payload.clone();
        if let Err(e) = crm_core::consumer::seal_letter(keys.as_ref(), &mut payload).await {
            release(client, queue_url, &letter).await;
            report.failed.push((letter.message_id, e.to_string()));
            continue;
        }
        if payload == parked.payload {
            release(client, queue_url, &letter).await;
            continue;
        }
        match sealed.park(parked).await {
            Ok(()) => {
                delete(client, queue_url, &letter).await?;
                report.redriven.push(letter.message_id);
            }
            Err(e) => {
                release(client, queue_url, &letter).await;
                report.failed.push((letter.message_id, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// Puts the timers of up to `max` messages of EventBridge Scheduler's
/// dead-letter queue on the bus `bus` as their schedules would have:
/// PutEvents with source `crm.scheduler`, detail-type `TimerFired` and the
/// parked `Input` (the [`TimerPayload`]) as the detail, in calls of up to
/// ten entries. A message is deleted once the bus took its entry. A message
/// whose body is not a timer, or whose entry the bus refused (or whose call
/// failed), stays in the queue, visible again at once. The receivers drop a
/// timer a newer state replaced (`set_at_version`), and a timer fired twice
/// acts once, so a redrive is safe however late.
pub async fn redrive_timers(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    bus: &crate::eventbridge::EventBridgeBus,
    max: usize,
) -> Result<RedriveReport, OpsError> {
    let mut report = RedriveReport::default();
    let mut ready: Vec<(QueuedLetter, PutEventsRequestEntry)> = Vec::new();
    for letter in receive(client, queue_url, max, REDRIVE_VISIBILITY_SECONDS).await? {
        match timer_entry(&letter, bus.bus_name()) {
            Ok(entry) => ready.push((letter, entry)),
            Err(why) => {
                release(client, queue_url, &letter).await;
                report.failed.push((letter.message_id, why));
            }
        }
    }
    for chunk in ready.chunks(crm_core::bus::MAX_ENTRIES_PER_PUT) {
        let outcomes = put_entries(bus, chunk.iter().map(|(_, entry)| entry.clone()).collect()).await;
        for ((letter, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    delete(client, queue_url, letter).await?;
                    report.redriven.push(letter.message_id.clone());
                }
                Err(why) => {
                    release(client, queue_url, letter).await;
                    report.failed.push((letter.message_id.clone(), why));
                }
            }
        }
    }
    Ok(report)
}

/// The PutEvents entry that puts the timer of a message of EventBridge
/// Scheduler's dead-letter queue on the bus `bus_name` as its schedule would
/// have: source `crm.scheduler`, detail-type `TimerFired`, the parked
/// `Input` (the [`TimerPayload`]) as the detail. An error for a message
/// that holds no timer.
fn timer_entry(letter: &QueuedLetter, bus_name: &str) -> Result<PutEventsRequestEntry, String> {
    if letter.timer.is_none() {
        return Err("the message holds no timer (a schedule's Input)".to_string());
    }
    let detail = serde_json::to_string(&letter.body).map_err(|e| e.to_string())?;
    Ok(PutEventsRequestEntry::builder()
        .event_bus_name(bus_name)
        .source(TIMER_SOURCE)
        .detail_type(TIMER_FIRED)
        .detail(detail)
        .build())
}

/// Puts `entries` (at most ten) on `bus` in one PutEvents call: each
/// entry's outcome, in order (the call's failure for each when it failed).
async fn put_entries(
    bus: &crate::eventbridge::EventBridgeBus,
    entries: Vec<PutEventsRequestEntry>,
) -> Vec<Result<(), String>> {
    let n = entries.len();
    match bus.client().put_events().set_entries(Some(entries)).send().await {
        Ok(out) => (0..n)
            .map(|i| match out.entries().get(i) {
                Some(r) if r.error_code().is_none() && r.event_id().is_some() => Ok(()),
                Some(r) => Err(format!(
                    "PutEvents refused it: {} {}",
                    r.error_code().unwrap_or("NoEventId"),
                    r.error_message().unwrap_or_default()
                )),
                None => Err("PutEvents returned fewer results than entries".into()),
            })
            .collect(),
        Err(e) => {
            let why = format!("PutEvents to {}: {}", bus.bus_name(), DisplayErrorContext(&e));
            vec![Err(why); n]
        }
    }
}

/// Puts the timer of one message of EventBridge Scheduler's dead-letter
/// queue on `bus`, as [`redrive_timers`] does for each (the API's redrive,
/// decision 0085). `Ok` once the bus took it; why not otherwise. The
/// message is the caller's to delete or release.
pub async fn put_timer_letter(letter: &QueuedLetter, bus: &crate::eventbridge::EventBridgeBus) -> Result<(), String> {
    let entry = timer_entry(letter, bus.bus_name())?;
    put_entries(bus, vec![entry])
        .await
        .pop()
        .unwrap_or_else(|| Err("PutEvents returned no result".into()))
}

/// Puts the event of one message of the relay's dead-letter queue on `bus`:
/// the entry [`redrive_to_bus`] hands the relay for it ([`bus_entry_of`]:
/// the parked entry, or the event re-read by its key from `stored`, the
/// events table as stored), in one PutEvents, as the relay puts it (the
/// API's redrive, decision 0085). `Ok` once the bus took it; why not
/// otherwise (nothing is parked again). The message is the caller's to
/// delete or release.
pub async fn put_relay_letter(
    letter: &QueuedLetter,
    stored: &dyn EventStore,
    bus: &crate::eventbridge::EventBridgeBus,
) -> Result<(), String> {
    use crm_core::ports::{EventBus, PublishOutcome};
    let entry = bus_entry_of(letter, stored).await?;
    match bus.put(std::slice::from_ref(&entry)).await {
        Ok(outcomes) => match outcomes.into_iter().next() {
            Some(PublishOutcome::Published) => Ok(()),
            Some(PublishOutcome::Failed { code, message }) => Err(format!("PutEvents refused it: {code} {message}")),
            None => Err("PutEvents returned no result".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// What a republish did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepublishReport {
    /// Items DynamoDB read (ScannedCount: the whole table, every kind).
    pub scanned: u64,
    /// Events recorded within the range.
    pub matched: u64,
    /// Events the bus accepted.
    pub published: u64,
    /// Events parked on the relay's dead-letter queue (still refused after
    /// the retries, or too large to deliver).
    pub parked: u64,
    /// Events neither published nor parked (the dead-letter queue refused
    /// them too), and event items that could not be read: run it again.
    pub failed: u64,
}

impl RepublishReport {
    fn merge(&mut self, other: &RepublishReport) {
        self.scanned += other.scanned;
        self.matched += other.matched;
        self.published += other.published;
        self.parked += other.parked;
        self.failed += other.failed;
    }
}

/// The stored form of the first and the last instant of `from`'s and `to`'s
/// seconds. Stored times have a varying number of fraction digits
/// ([`items::format_time`]), so they do not sort as instants within one
/// second; every time of second S sorts between `S` and `S` + `Z`. The scan
/// filter takes these bounds and [`republish`] checks each event exactly.
fn stored_time_bounds(from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    let second = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    (second(from), format!("{}Z", second(to)))
}

/// One segment of [`republish`].
async fn republish_segment(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    range: (DateTime<Utc>, DateTime<Utc>),
    segment: i32,
    total: i32,
    relay: &Relay,
    progress: Progress<'_>,
) -> Result<RepublishReport, OpsError> {
    let (from, to) = range;
    let (lo, hi) = stored_time_bounds(from, to);
    let mut report = RepublishReport::default();
    let mut start: Option<Item> = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .segment(segment)
            .total_segments(total)
            .filter_expression("#kind = :event AND #recorded BETWEEN :lo AND :hi")
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_names("#recorded", items::RECORDED_AT)
            .expression_attribute_values(":event", items::s(items::KIND_EVENT))
            .expression_attribute_values(":lo", items::s(lo.clone()))
            .expression_attribute_values(":hi", items::s(hi.clone()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(aws("Scan"))?;
        report.scanned += u64::try_from(out.scanned_count()).unwrap_or(0);
        let mut records = Vec::new();
        for item in out.items() {
            match items::event_from_item(item) {
                Ok(event) if event.recorded_at >= from && event.recorded_at <= to => {
                    let id = format!("{}/{}", event.stream_id, event.version);
                    records.push((id, BusEntry::for_event(event)));
                }
                Ok(_) => {}
                Err(e) => {
                    let key = item.get(PK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                    tracing::warn!(pk = %key, error = %e, "an event item cannot be read; not republished");
                    report.matched += 1;
                    report.failed += 1;
                }
            }
        }
        let n = records.len();
        report.matched += n as u64;
        let published = relay.publish(records.clone()).await;
        report.published += published.published as u64;
        report.parked += published.parked as u64;
        if let Some(first) = &published.first_failure {
            // It and everything after it in this page: not parked, maybe not published.
            let at = records.iter().position(|(id, _)| id == first).unwrap_or(0);
            report.failed += (n - at) as u64;
            tracing::error!(record = %first, "the relay's dead-letter queue refused a record; run the republish again");
        }
        progress(n as u64);
        match out.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return Ok(report),
        }
    }
}

/// Publishes again every event whose `recorded_at` lies in `[from, to]`
/// (both ends included), straight from the events table: a parallel scan of
/// `segments` segments, run concurrently, filtered on `kind = event` and
/// `recorded_at`, each page through `relay` (chunks of up to ten entries
/// within 256 KB, retries, what the bus will not take parked on the relay's
/// dead-letter queue). The entries are built as the relay builds them
/// ([`BusEntry::for_event`]), envelopes as stored. For when the stream's
/// 24 hours ran out during an outage; consumers drop the duplicates.
pub async fn republish(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    segments: u32,
    relay: &Relay,
    progress: Progress<'_>,
) -> Result<RepublishReport, OpsError> {
    let total = i32::try_from(segments.clamp(1, 1_000_000)).unwrap_or(1);
    let runs = (0..total).map(|s| republish_segment(client, table, (from, to), s, total, relay, progress));
    let mut report = RepublishReport::default();
    for done in futures::future::join_all(runs).await {
        report.merge(&done?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_time_bounds_hold_every_stored_time_of_the_range() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.to_utc()).expect("time");
        let (lo, hi) = stored_time_bounds(t("2026-12-01T10:00:05.250Z"), t("2026-12-01T10:00:07.5Z"));
        assert_eq!(lo, "2026-12-01T10:00:05");
        assert_eq!(hi, "2026-12-01T10:00:07Z");
        for inside in [
            "2026-12-01T10:00:05Z",
            "2026-12-01T10:00:05.100Z",
            "2026-12-01T10:00:07.999999Z",
            "2026-12-01T10:00:07Z",
        ] {
            assert!(lo.as_str() <= inside && inside <= hi.as_str(), "{inside}");
            assert_eq!(items::format_time(&t(inside)), inside, "the stored form");
        }
        for outside in ["2026-12-01T10:00:04.999Z", "2026-12-01T10:00:08Z"] {
            assert!(!(lo.as_str() <= outside && outside <= hi.as_str()), "{outside}");
        }
    }

    #[test]
    fn a_queue_url_names_its_account_and_region() {
        assert_eq!(
            account_and_region("https://sqs.eu-west-1.amazonaws.com/123456789012/crm-projector"),
            (Some("123456789012".into()), Some("eu-west-1".into()))
        );
        assert_eq!(
            account_and_region("http://127.0.0.1:5055/123456789012/q"),
            (Some("123456789012".into()), None)
        );
    }

    #[test]
    fn the_stream_mappings_on_failure_record_names_a_window() {
        let body = serde_json::json!({
            "version": "1.0",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-1",
                "approximateArrivalOfFirstRecord": "2026-12-01T10:00:04Z",
                "approximateArrivalOfLastRecord": "2026-12-01T10:00:09Z",
                "batchSize": 3
            }
        });
        let (from, to) = stream_batch_window(&body).expect("a window");
        assert_eq!(from.to_rfc3339(), "2026-12-01T09:59:04+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-01T10:01:09+00:00");
        assert_eq!(stream_batch_window(&serde_json::json!({"detail": {}})), None);
    }
}
