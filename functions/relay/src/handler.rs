//! One batch of stream records in, `batchItemFailures` out.
//!
//! Events are immutable, so only `INSERT`s carry something to publish: a
//! `MODIFY` (a snapshot replaced, an event's legal TTL raised) or `REMOVE`
//! (a reservation released, a receipt or an event expired through the TTL,
//! whose records name `dynamodb.amazonaws.com`) never does. Of the inserted items only `kind = event` is
//! published; reservations, receipts and snapshots are skipped.
//!
//! Nothing is skipped that should go out (decision 0030,
//! [`crm_core::relay`]): failed `PutEvents` calls and refused entries are
//! retried with backoff inside the invocation; an event still not published
//! is parked on the dead-letter queue whole (its key, and the bus entry with
//! the envelope as stored, personal fields encrypted), an entry over the
//! bus's 256 KB at once; an inserted event item that cannot be read is poison,
//! parked with its reason and the stream record. The batch then succeeds.
//!
//! Only a record that could not even be parked (the dead-letter queue is
//! unreachable) is answered as a batch item failure: the event source mapping
//! must have `FunctionResponseTypes: [ReportBatchItemFailures]`, and Lambda
//! delivers that record and everything after it again. With the mapping's
//! `MaximumRetryAttempts: -1` it never gives a record up.

use crate::image::to_item;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use crm_aws::dynamodb::items::{event_from_item, kind_of, CodecError, KIND_EVENT};
use crm_core::bus::BusEntry;
use crm_core::event::EventEnvelope;
use crm_core::failure::{Classify, FailureKind};
use crm_core::relay::{Relay, RelayRecord};
use lambda_runtime::{Error, LambdaEvent};

/// What one stream record asks of the relay.
#[derive(Debug)]
enum Disposition {
    /// Nothing to publish (with why, for the debug log).
    Skip(&'static str),
    Publish(Box<EventEnvelope>),
    /// Not readable as an event: park it with the reason.
    Unreadable(Unreadable),
}

/// Why an inserted record is not readable as an event: poison
/// ([`Classify`]), parked with this reason and the record as received.
#[derive(Debug)]
enum Unreadable {
    NoNewImage,
    Item(CodecError),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::NoNewImage => {
                f.write_str("INSERT without a NewImage: the stream's view type must be NEW_IMAGE")
            }
            Unreadable::Item(e) => write!(f, "event item cannot be read: {e}"),
        }
    }
}

impl std::error::Error for Unreadable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unreadable::NoNewImage => None,
            Unreadable::Item(e) => Some(e),
        }
    }
}

impl Classify for Unreadable {
    fn kind(&self) -> FailureKind {
        FailureKind::Poison
    }
}

fn disposition(record: &EventRecord) -> Disposition {
    match record.event_name.as_str() {
        "INSERT" => {}
        "MODIFY" => {
            // An event item is modified only to raise its legal TTL
            // (`expires_at`, decision 0078): the event itself is unchanged.
            if kind_of(&to_item(&record.change.new_image)) == Some(KIND_EVENT) {
                tracing::debug!(
                    record = %record_id(record),
                    "an event item's expiry was raised; not publishing it again"
                );
            }
            return Disposition::Skip("modify");
        }
        "REMOVE" => return Disposition::Skip("remove"),
        _ => return Disposition::Skip("unknown event name"),
    }
    if record.change.new_image.inner().is_empty() {
        return Disposition::Unreadable(Unreadable::NoNewImage);
    }
    let item = to_item(&record.change.new_image);
    match kind_of(&item) {
        Some(KIND_EVENT) => match event_from_item(&item) {
            Ok(envelope) => Disposition::Publish(Box::new(envelope)),
            Err(e) => Disposition::Unreadable(Unreadable::Item(e)),
        },
        Some(_) => Disposition::Skip("not an event item"),
        None => {
            tracing::warn!(record = %record_id(record), "inserted item has no kind; skipping it");
            Disposition::Skip("no kind")
        }
    }
}

/// The id Lambda expects back for a record: its sequence number (the event
/// id if a record ever came without one; Lambda then retries the whole batch).
fn record_id(record: &EventRecord) -> String {
    record
        .change
        .sequence_number
        .clone()
        .unwrap_or_else(|| record.event_id.clone())
}

/// The stream record as it was received, for a dead letter.
fn as_received(record: &EventRecord) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or_else(|e| {
        serde_json::json!({
            "eventID": record.event_id,
            "sequenceNumber": record.change.sequence_number,
            "unserialisable": e.to_string(),
        })
    })
}

/// Relays one batch of the events table's stream.
pub async fn handle(event: LambdaEvent<Event>, relay: &Relay) -> Result<DynamoDbEventResponse, Error> {
    let records = event.payload.records;
    let total = records.len();
    let mut skipped = 0usize;
    let mut outbound = Vec::with_capacity(total);
    for record in &records {
        match disposition(record) {
            Disposition::Skip(why) => {
                skipped += 1;
                tracing::debug!(record = %record_id(record), why, "skipped");
            }
            Disposition::Publish(envelope) => {
                outbound.push(RelayRecord::publish(record_id(record), BusEntry::for_event(*envelope)));
            }
            Disposition::Unreadable(why) => {
                let letter = relay.dead_letter(why.to_string(), as_received(record));
                outbound.push(RelayRecord::park(record_id(record), letter));
            }
        }
    }

    let report = relay.run(outbound).await;
    // How far behind the stream the relay is: the oldest record's write time
    // (a record without one deserialises as the epoch, and is left out).
    let oldest = records
        .iter()
        .map(|r| r.change.approximate_creation_date_time)
        .filter(|written| written.timestamp() > 0)
        .min();
    relay.record_batch(oldest, &report).await;
    tracing::info!(
        request_id = %event.context.request_id,
        records = total,
        skipped,
        published = report.published,
        parked = report.parked,
        first_failure = report.first_failure.as_deref().unwrap_or(""),
        "relayed a batch"
    );

    let mut response = DynamoDbEventResponse::default();
    if let Some(id) = report.first_failure {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(id);
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}
