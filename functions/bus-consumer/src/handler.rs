//! One bus event (the body of one queue message) in, its envelope delivered
//! to a consumer group: the per-event path. On AWS a function takes a whole
//! SQS batch ([`crate::batch::handle_batch`]) and comes here only through
//! it; the tests drive single events through it too.
//!
//! The event's `detail` is the stored [`EventEnvelope`] (see
//! [`crm_core::bus::BusEntry::to_event_json`]). The answer:
//!
//! - `Ok`: done. That includes a `detail` that is not an envelope (poison:
//!   parked in the dead-letter queue with its reason, so it never blocks)
//!   and envelopes a consumer of the group could not use (the group parks
//!   those itself).
//! - `Err`: a store was unavailable or kept conflicting: the event must be
//!   delivered again (in a batch: its message is reported as a batch item
//!   failure, and SQS delivers it again after the visibility timeout; the
//!   queue's redrive policy parks it after `maxReceiveCount` receives).

use chrono::{DateTime, Utc};
use crm_core::consumer::{ConsumeError, EventHandler, NotDecrypted};
use crm_core::event::EventEnvelope;
use crm_core::failure::{Classify, FailureKind};
use crm_core::ports::{DeadLetter, DeadLetterQueue, StoreError};
use crm_core::privacy::{decrypt_envelope, KeyStore};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What handling one event did (for the log and the tests; a batch answers
/// with its failures only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Handled {
    /// The envelope went to every consumer of the group.
    Delivered {
        stream_id: String,
        version: u64,
        /// Consumers that applied it (with any versions missing before it).
        applied: Vec<&'static str>,
        /// Consumers that had applied it already.
        duplicates: Vec<&'static str>,
        /// Consumers that could not use it and parked it.
        parked: Vec<&'static str>,
    },
    /// The event carried no usable envelope; it was parked with this reason.
    Parked { reason: String },
}

/// Why the event should be delivered again (never poison: poison is parked).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A store was unavailable or the checkpoint kept moving.
    #[error(transparent)]
    Retry(#[from] ConsumeError),
    /// The event is poison, but the dead-letter queue could not take it.
    #[error("could not park an unusable bus event: {0}")]
    Park(#[source] StoreError),
}

impl Classify for HandlerError {
    fn kind(&self) -> FailureKind {
        match self {
            HandlerError::Retry(e) => e.kind(),
            // Parked next time, when the queue takes it.
            HandlerError::Park(_) => FailureKind::Retryable,
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Diagnostic {
        Diagnostic {
            error_type: match &error {
                HandlerError::Retry(_) => "Retry",
                HandlerError::Park(_) => "DeadLetterQueueUnavailable",
            }
            .into(),
            error_message: error.to_string(),
        }
    }
}

/// Why a bus event carries no usable envelope: poison ([`Classify`]), parked.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("not an EventBridge event with a detail")]
    NoDetail,
    #[error("detail is not an event envelope: {0}")]
    NotAnEnvelope(#[source] serde_json::Error),
    #[error("detail-type {detail_type:?} does not match the envelope's type {event_type:?}")]
    TypeMismatch { detail_type: String, event_type: String },
    #[error("envelope {0} has version 0; stream versions start at 1")]
    VersionZero(String),
}

impl Classify for Unusable {
    fn kind(&self) -> FailureKind {
        FailureKind::Poison
    }
}

/// The envelope an EventBridge event carries.
pub fn decode(event: &Value) -> Result<EventEnvelope, Unusable> {
    let detail = event.get("detail").ok_or(Unusable::NoDetail)?;
    let envelope = EventEnvelope::deserialize(detail).map_err(Unusable::NotAnEnvelope)?;
    if let Some(detail_type) = event.get("detail-type").and_then(Value::as_str) {
        if detail_type != envelope.event_type {
            return Err(Unusable::TypeMismatch {
                detail_type: detail_type.to_string(),
                event_type: envelope.event_type,
            });
        }
    }
    if envelope.version == 0 {
        return Err(Unusable::VersionZero(envelope.event_id.to_string()));
    }
    Ok(envelope)
}

/// Handles one EventBridge event: see the module documentation.
/// `dead_letters` takes events without a usable envelope.
pub async fn handle(
    event: LambdaEvent<Value>,
    group: &dyn EventHandler,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Handled, HandlerError> {
    handle_at(event.payload, group, None, dead_letters, Utc::now()).await
}

/// [`handle`] for a bus that carries events as stored: the envelope's
/// personal fields are decrypted with `keys` before `group` sees them
/// (decision 0017). A key that cannot be had, or a field that does not
/// decrypt, fails the delivery (it is delivered again, then its queue's
/// redrive policy parks it, still encrypted).
pub async fn handle_stored(
    event: LambdaEvent<Value>,
    group: &dyn EventHandler,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Handled, HandlerError> {
    handle_at(event.payload, group, Some(keys), dead_letters, Utc::now()).await
}

async fn handle_at(
    payload: Value,
    group: &dyn EventHandler,
    keys: Option<&dyn KeyStore>,
    dead_letters: &dyn DeadLetterQueue,
    now: DateTime<Utc>,
) -> Result<Handled, HandlerError> {
    let decoded = match (decode(&payload), keys) {
        (Ok(mut envelope), Some(keys)) => match decrypt_envelope(keys, &mut envelope).await {
            Ok(()) => Ok(envelope),
            Err(e) => {
                tracing::warn!(
                    function = group.name(),
                    event_id = %envelope.event_id,
                    stream_id = %envelope.stream_id,
                    version = envelope.version,
                    error = %crm_core::privacy::scrub::scrub(&e.to_string()),
                    "event not decrypted; it will be delivered again"
                );
                let not_decrypted = NotDecrypted {
                    stream_id: envelope.stream_id,
                    version: envelope.version,
                    source: e,
                };
                return Err(HandlerError::Retry(ConsumeError::retry(group.name(), not_decrypted)));
            }
        },
        (decoded, _) => decoded,
    };
    let envelope = match decoded {
        Ok(envelope) => envelope,
        Err(unusable) => {
            let reason = unusable.to_string();
            let bus_event_id = payload.get("id").and_then(Value::as_str).unwrap_or("-");
            tracing::error!(
                function = group.name(),
                bus_event_id,
                reason = %crm_core::privacy::scrub::scrub(&reason),
                "unusable bus event parked"
            );
            dead_letters
                .park(DeadLetter {
                    consumer: group.name().to_string(),
                    reason: reason.clone(),
                    payload,
                    failed_at: now,
                    attempts: 1,
                })
                .await
                .map_err(HandlerError::Park)?;
            return Ok(Handled::Parked { reason });
        }
    };
    match group.handle(&envelope, now).await {
        Ok(outcome) => {
            tracing::info!(
                function = group.name(),
                event_id = %envelope.event_id,
                stream_id = %envelope.stream_id,
                version = envelope.version,
                event_type = %envelope.event_type,
                applied = ?outcome.applied,
                duplicates = ?outcome.duplicates,
                parked = ?outcome.parked,
                "event handled"
            );
            Ok(Handled::Delivered {
                stream_id: envelope.stream_id,
                version: envelope.version,
                applied: outcome.applied,
                duplicates: outcome.duplicates,
                parked: outcome.parked,
            })
        }
        Err(error) => {
            tracing::warn!(
                function = group.name(),
                event_id = %envelope.event_id,
                stream_id = %envelope.stream_id,
                version = envelope.version,
                error = %crm_core::privacy::scrub::scrub(&error.to_string()),
                "event not handled; it will be delivered again"
            );
            Err(HandlerError::Retry(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope() -> Value {
        json!({
            "event_id": "0190a000-0000-7000-8000-000000000001",
            "stream_id": "customer-c1",
            "version": 1,
            "type": "CustomerRegistered",
            "schema_version": 1,
            "customer_id": "c1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "recorded_at": "2026-01-01T00:00:00Z",
            "causation_id": null,
            "correlation_id": "0190a000-0000-7000-8000-000000000002",
            "actor": "api:test",
            "data": {}
        })
    }

    fn bus_event(detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "e1",
            "detail-type": "CustomerRegistered",
            "source": "crm.customer",
            "account": "123456789012",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail
        })
    }

    #[test]
    fn the_detail_is_the_envelope() {
        let decoded = decode(&bus_event(envelope())).expect("decoded");
        assert_eq!(decoded.stream_id, "customer-c1");
        assert_eq!(decoded.version, 1);
        assert_eq!(decoded.event_type, "CustomerRegistered");
    }

    #[test]
    fn the_detail_type_is_optional_but_must_match() {
        let mut event = bus_event(envelope());
        event["detail-type"] = json!("EmailVerified");
        assert!(matches!(decode(&event), Err(Unusable::TypeMismatch { .. })));
        if let Some(map) = event.as_object_mut() {
            map.remove("detail-type");
        }
        assert!(decode(&event).is_ok());
    }

    #[test]
    fn what_is_not_an_envelope_is_unusable() {
        assert!(matches!(decode(&json!({})), Err(Unusable::NoDetail)));
        assert!(matches!(decode(&json!("text")), Err(Unusable::NoDetail)));
        assert!(matches!(
            decode(&bus_event(json!({"hello": "world"}))),
            Err(Unusable::NotAnEnvelope(_))
        ));
        assert!(matches!(
            decode(&bus_event(json!("{\"event_id\": 1}"))),
            Err(Unusable::NotAnEnvelope(_))
        ));
        let mut zero = envelope();
        zero["version"] = json!(0);
        assert!(matches!(decode(&bus_event(zero)), Err(Unusable::VersionZero(_))));
        let mut negative = envelope();
        negative["version"] = json!(-1);
        assert!(matches!(decode(&bus_event(negative)), Err(Unusable::NotAnEnvelope(_))));
    }

    #[test]
    fn unusable_events_are_poison_and_handler_errors_are_retried() {
        assert_eq!(Unusable::NoDetail.kind(), FailureKind::Poison);
        assert_eq!(
            HandlerError::Park(StoreError::Failed("queue gone".into())).kind(),
            FailureKind::Retryable
        );
        let conflict = ConsumeError::failed(
            "customer-360",
            crm_core::failure::Failure::reason(FailureKind::Conflict, "customer-360", "checkpoint moved"),
        );
        assert_eq!(HandlerError::Retry(conflict).kind(), FailureKind::Conflict);
    }

    #[test]
    fn errors_become_lambda_diagnostics() {
        let diagnostic = Diagnostic::from(HandlerError::Park(StoreError::Unavailable("throttled".into())));
        assert_eq!(diagnostic.error_type, "DeadLetterQueueUnavailable");
        assert!(diagnostic.error_message.contains("throttled"));
        let diagnostic = Diagnostic::from(HandlerError::Retry(ConsumeError::retry(
            "customer-360",
            StoreError::Unavailable("busy".into()),
        )));
        assert_eq!(diagnostic.error_type, "Retry");
        assert_eq!(diagnostic.error_message, "customer-360: event store unavailable: busy");
    }
}
