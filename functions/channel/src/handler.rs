//! The channel function's queue carries fired deferral timers (`source`
//! crm.scheduler), SES feedback (`source` aws.ses, from the default bus's
//! rule) and stored `MessageRequested` events. A batch goes through
//! [`crm_bus_consumer::handle_batch`] ([`handle_batch`]): timers and
//! feedback one by one ([`ChannelMessages`]), requests as a page.
//! [`handle`] takes a single bus event the same way (the tests, `cargo
//! lambda invoke`). Unusable events are parked; what failed is delivered
//! again.
//!
//! SES feedback is the raw SES notification: the recipient's address (in
//! `destination`, the headers, the bounce and its diagnostic) and the
//! subject. What cannot be recorded is parked through the function's
//! sealing queue (`crm_core::consumer::SealedDeadLetters`), which seals the
//! event's `detail` under the customer's key, or scrubs it when there is no
//! key to seal it under (decision 0048). A sealed letter sent back (a
//! redrive) is opened here before it is read. Reasons and errors, which
//! may quote the address, are logged and answered scrubbed
//! ([`crm_core::privacy::scrub`]).

use chrono::Utc;
use crm_aws::ses_feedback::parse_eventbridge;
use crm_core::consumer::dead_letters::{is_sealed_feedback, open_letter};
use crm_core::failure::{Classify, Failure, FailureKind};
use crm_core::messaging::delivery::{FeedbackOutcome, MessageDelivery};
use crm_core::ports::{DeadLetter, DeadLetterQueue};
use crm_core::privacy::scrub::scrub;
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
    /// The feedback was not recorded and comes again: the delivery failed
    /// in a way worth retrying, or a sealed letter could not be opened, or
    /// an unusable one could not be parked. The cause is kept (its text may
    /// quote the address: scrubbed wherever it is shown).
    #[error("feedback not recorded, deliver again: {0}")]
    Feedback(Failure),
}

impl ChannelError {
    /// Feedback that comes again, because of `source` in `step`.
    fn feedback(step: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ChannelError::Feedback(Failure::retryable(step, source))
    }
}

impl From<ChannelError> for Diagnostic {
    fn from(e: ChannelError) -> Self {
        Diagnostic {
            error_type: "ChannelError".into(),
            error_message: scrub(&e.to_string()).into_owned(),
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
        Some(SES_SOURCE) => feedback(&event.payload, delivery, keys, dead_letters).await,
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
/// the reason (scrubbed), the event as it came (sealed by the queue). A
/// letter parked sealed and sent back is opened with the customer's key
/// first; once the key is gone it reads as erased, and is parked again.
async fn feedback(
    payload: &Value,
    delivery: &MessageDelivery,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Value, ChannelError> {
    let park = |reason: &str| DeadLetter {
        consumer: "channel".into(),
        reason: reason.to_string(),
        payload: payload.clone(),
        failed_at: Utc::now(),
        attempts: 1,
    };
    let opened;
    let readable = if is_sealed_feedback(payload) {
        opened = open_letter(keys, payload)
            .await
            .map_err(|e| ChannelError::feedback("opening the sealed letter", e))?;
        &opened
    } else {
        payload
    };
    let parsed = match parse_eventbridge(readable) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(json!({ "outcome": "ignored" })),
        Err(e) => {
            let reason = scrub(&e.to_string()).into_owned();
            tracing::error!(error = %reason, "SES event parked");
            dead_letters
                .park(park(&reason))
                .await
                .map_err(|e| ChannelError::feedback("parking the SES event", e))?;
            return Ok(json!({ "outcome": "parked", "reason": reason }));
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
        // Worth another try (a store, a conflict): the queue delivers it again.
        Err(e) if e.retryable() => Err(ChannelError::feedback("recording SES feedback", e)),
        Err(e) => {
            let reason = scrub(&e.to_string()).into_owned();
            tracing::error!(message_id = %parsed.message_id, kind = %e.kind(), error = %reason, "SES feedback parked");
            dead_letters
                .park(park(&reason))
                .await
                .map_err(|e| ChannelError::feedback("parking the SES feedback", e))?;
            Ok(json!({ "outcome": "parked", "reason": reason }))
        }
    }
}

/// The channel queue's messages that are not stored events: fired timers
/// and SES feedback.
pub struct ChannelMessages<'a> {
    pub delivery: &'a MessageDelivery,
    /// Opens SES feedback parked sealed and sent back.
    pub keys: &'a dyn KeyStore,
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
        Some(
            match feedback(event, self.delivery, self.keys, self.dead_letters).await {
                Ok(done) => Taken::Done(done),
                // Delivered again, as any failure of feedback is; its
                // text may quote the address, so only the scrubbed text goes on.
                Err(e) => Taken::Failed(Failure::reason(
                    FailureKind::Retryable,
                    "feedback",
                    scrub(&e.to_string()),
                )),
            },
        )
    }
}

/// One SQS batch of the channel queue: see the module documentation.
pub async fn handle_batch(
    batch: SqsEvent,
    delivery: &MessageDelivery,
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> BatchReport {
    let others = ChannelMessages {
        delivery,
        keys,
        dead_letters,
    };
    crm_bus_consumer::handle_batch(batch, delivery, &others, keys, dead_letters).await
}
