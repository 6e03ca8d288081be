//! The channel function's queue carries fired deferral timers (`source`
//! crm.scheduler), SES feedback (`source` aws.ses, from the default bus's
//! rule) and stored `MessageRequested` events. A batch goes through
//! [`crm_bus_consumer::handle_batch`] ([`handle_batch`]): timers and
//! feedback one by one ([`ChannelMessages`]), requests as a page.
//! [`handle`] takes a single bus event the same way (the tests, `cargo
//! lambda invoke`). Unusable events are parked; what failed is delivered
//! again.

use chrono::Utc;
use crm_core::messaging::delivery::{DeliveryError, FeedbackOutcome, MessageDelivery};
use crm_core::messaging::feedback::parse_eventbridge;
use crm_core::ports::{DeadLetter, DeadLetterQueue};
use crm_core::privacy::KeyStore;

/// The `source` of SES's events on the default bus.
pub const SES_SOURCE: &str = "aws.ses";
use crm_bus_consumer::timer::{deliver_timer, is_timer, TimerError, Timers};
use crm_bus_consumer::{BatchReport, OtherMessages, SqsEvent, Taken};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Timer(#[from] TimerError),
    #[error(transparent)]
    Event(#[from] crm_bus_consumer::handler::HandlerError),
    #[error("feedback not recorded, deliver again: {0}")]
    Feedback(String),
}

impl From<ChannelError> for Diagnostic {
    fn from(e: ChannelError) -> Self {
        Diagnostic {
            error_type: "ChannelError".into(),
            error_message: e.to_string(),
        }
    }
}

pub async fn handle(
    event: LambdaEvent<Value>,
    delivery: &MessageDelivery,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Value, ChannelError> {
    if is_timer(&event.payload) {
        return Ok(deliver_timer(&event.payload, delivery).await?);
    }
    match event.payload.get("source").and_then(Value::as_str) {
        Some(SES_SOURCE) => feedback(&event.payload, delivery, dead_letters).await,
        _ => {
            // The bus carries events as stored: personal fields encrypted.
            let handled = crm_bus_consumer::handler::handle_stored(event, delivery, keys, dead_letters).await?;
            Ok(serde_json::to_value(handled).unwrap_or_default())
        }
    }
}

/// Records one SES event on its message's stream (`Send` and any later
/// feedback also settle a message whose outcome was unknown, decision 0032).
/// Event types we do not track are ignored; unreadable ones are parked with
/// the reason.
async fn feedback(
    payload: &Value,
    delivery: &MessageDelivery,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Value, ChannelError> {
    let park = |reason: String| DeadLetter {
        consumer: "channel".into(),
        reason,
        payload: payload.clone(),
        failed_at: Utc::now(),
        attempts: 1,
    };
    let parsed = match parse_eventbridge(payload) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(json!({ "outcome": "ignored" })),
        Err(e) => {
            tracing::error!(error = %e, "SES event parked");
            dead_letters
                .park(park(e.to_string()))
                .await
                .map_err(|e| ChannelError::Feedback(e.to_string()))?;
            return Ok(json!({ "outcome": "parked", "reason": e.to_string() }));
        }
    };
    match delivery
        .record_feedback(
            parsed.to_event(delivery.identifiers()),
            &parsed.recipient,
            &parsed.feedback_id,
        )
        .await
    {
        Ok(outcome) => {
            let outcome = match outcome {
                FeedbackOutcome::Recorded => "recorded",
                FeedbackOutcome::Duplicate => "duplicate",
            };
            tracing::info!(message_id = %parsed.message_id, kind = parsed.event_type(), outcome, "SES feedback");
            Ok(json!({ "outcome": outcome, "type": parsed.event_type(), "message_id": parsed.message_id }))
        }
        Err(DeliveryError::Retry(m)) => Err(ChannelError::Feedback(m)),
        Err(DeliveryError::Poison(reason)) => {
            dead_letters
                .park(park(reason.clone()))
                .await
                .map_err(|e| ChannelError::Feedback(e.to_string()))?;
            Ok(json!({ "outcome": "parked", "reason": reason }))
        }
    }
}

/// The channel queue's messages that are not stored events: fired timers
/// and SES feedback.
pub struct ChannelMessages<'a> {
    pub delivery: &'a MessageDelivery,
    pub dead_letters: &'a dyn DeadLetterQueue,
}

#[async_trait::async_trait]
impl OtherMessages for ChannelMessages<'_> {
    async fn take(&self, event: &Value) -> Option<Taken> {
        if let Some(taken) = Timers(self.delivery).take(event).await {
            return Some(taken);
        }
        if event.get("source").and_then(Value::as_str) != Some(SES_SOURCE) {
            return None;
        }
        Some(match feedback(event, self.delivery, self.dead_letters).await {
            Ok(done) => Taken::Done(done),
            Err(e) => Taken::Retry(e.to_string()),
        })
    }
}

/// One SQS batch of the channel queue: see the module documentation.
pub async fn handle_batch(
    batch: SqsEvent,
    delivery: &MessageDelivery,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> BatchReport {
    let others = ChannelMessages { delivery, dead_letters };
    crm_bus_consumer::handle_batch(batch, delivery, &others, keys, dead_letters).await
}
