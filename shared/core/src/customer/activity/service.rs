//! Recording one activity event: appended with an idempotency receipt when
//! a key is given, the answer known before the append.

use super::{activity_stream_id, RecordActivity};
use crate::customer::CustomerError;
use crate::event::{envelopes, CommandMeta, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Why an activity event was not recorded. Nothing was written in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActivityError {
    #[error(transparent)]
    Rejected(#[from] CustomerError),
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    #[error("write too large: {0}")]
    TooLarge(String),
}

/// What recording did: the stored event, or the first answer to a repeated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Applied { event: Box<EventEnvelope>, body: Value },
    Replayed { status: u16, body: Value },
}

/// The answer to a recorded activity event. Without the stream version: the
/// receipt is written with the event, before the store assigns it, and a
/// replay must answer the same.
pub fn activity_view(e: &EventEnvelope) -> Value {
    serde_json::json!({
        "event_id": e.event_id,
        "stream_id": e.stream_id,
        "type": e.event_type,
        "customer_id": e.customer_id,
        "occurred_at": e.occurred_at,
        "recorded_at": e.recorded_at,
        "data": e.data,
    })
}

/// Appends one activity event of an existing customer (the caller checks the
/// customer exists) at `now`, with an idempotency receipt when a key is given.
pub async fn record_activity(
    store: &dyn EventStore,
    customer_id: &str,
    request: &RecordActivity,
    meta: &CommandMeta,
    idempotency: Option<&IdempotencyKey>,
    now: DateTime<Utc>,
) -> Result<Recorded, ActivityError> {
    let check = |receipt: CommandReceipt, key: &IdempotencyKey| {
        if receipt.request_hash != key.request_hash {
            Err(ActivityError::IdempotencyKeyReused)
        } else {
            Ok(Recorded::Replayed {
                status: receipt.status,
                body: receipt.body,
            })
        }
    };
    if let Some(key) = idempotency {
        if let Some(receipt) = store.receipt(&key.receipt_key).await? {
            return check(receipt, key);
        }
    }
    let occurred_at = request.occurred_at(now)?;
    let stream = activity_stream_id(customer_id);
    let mut events = envelopes(
        &stream,
        Some(customer_id),
        std::slice::from_ref(&request.event),
        meta,
        now,
    )?;
    for e in &mut events {
        e.occurred_at = occurred_at;
    }
    // The answer is known before the append (it has no version).
    let mut preview = events
        .first()
        .cloned()
        .ok_or_else(|| EventCodecError("the activity event did not encode".into()))?;
    let receipt = idempotency.map(|key| CommandReceipt {
        key: key.receipt_key.clone(),
        request_hash: key.request_hash.clone(),
        status: 201,
        body: activity_view(&preview),
        recorded_at: now,
    });
    let appended = store
        .append(AppendRequest {
            stream_id: stream,
            expected: ExpectedVersion::Any,
            events,
            reservations: Vec::new(),
            receipt,
        })
        .await;
    match appended {
        Ok(a) => {
            if let Some(stored) = a.events.into_iter().next() {
                preview = stored;
            }
            let body = activity_view(&preview);
            Ok(Recorded::Applied {
                event: Box::new(preview),
                body,
            })
        }
        Err(AppendError::DuplicateCommand(receipt)) => match idempotency {
            Some(key) => check(*receipt, key),
            None => Err(ActivityError::IdempotencyKeyReused),
        },
        Err(AppendError::Store(e)) => Err(e.into()),
        Err(AppendError::TooLarge(m)) => Err(ActivityError::TooLarge(m)),
        Err(e @ (AppendError::Conflict { .. } | AppendError::ReservationTaken { .. })) => {
            Err(StoreError::Unavailable(e.to_string()).into())
        }
    }
}
