//! Recording provider feedback on the message stream, and acting on it.

use super::message::MessageCommand;
use super::projections::SuppressionListProjection;
use super::{DeliveryError, MessageDelivery};
use crate::aggregate::AggregateError;
use crate::consent::{Channel, Purpose};
use crate::consumer::Consumer;
use crate::customer::Customer;
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::failure::Failure;
use crate::messaging::events::{message_stream, MessageEvent};
use crate::metrics::names as metric;
use serde_json::Value;
use std::sync::Arc;

/// What recording one piece of provider feedback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackOutcome {
    Recorded,
    /// The same feedback was recorded before (providers deliver it at least once).
    Duplicate,
}

/// The event id of a piece of provider feedback (or of what it settles,
/// `part`): the same feedback always gets the same id, so a redelivery is found.
fn feedback_event_id(stream: &str, feedback_id: &str, part: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let name = if part.is_empty() {
        format!("{stream}/{feedback_id}")
    } else {
        format!("{stream}/{feedback_id}/{part}")
    };
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// How often recording feedback reads the stream again after another
/// writer moved it.
const FEEDBACK_APPEND_ATTEMPTS: usize = 5;

impl MessageDelivery {
    /// Records feedback from the provider (SES send, reject, delivery,
    /// bounce, complaint, open, click) on the message stream, and acts on it.
    ///
    /// Any of it proves SES took the message: when the stream has a claim
    /// but no `MessageSent` (the provider's answer was lost, decision 0032),
    /// `MessageSent` is recorded with it, in the same conditional append, and
    /// the settle check then finds nothing to do. `MessageAccepted` (SES's
    /// `Send`, one per message) is recorded only then: for a message already
    /// recorded sent it adds nothing, and is answered `Duplicate` without a
    /// write. A permanent bounce suppresses the address and invalidates the
    /// customer's email; a complaint suppresses marketing to it and revokes
    /// marketing email consent. `recipient` is the address the feedback is
    /// about.
    pub async fn record_feedback(
        &self,
        feedback: MessageEvent,
        recipient: &str,
        feedback_id: &str,
    ) -> Result<FeedbackOutcome, DeliveryError> {
        let (message_id, customer_id) = match &feedback {
            MessageEvent::MessageAccepted {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::MessageContentRejected {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailDelivered {
                message_id,
                customer_id,
            }
            | MessageEvent::EmailBounced {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailComplained {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailOpened {
                message_id,
                customer_id,
            }
            | MessageEvent::EmailClicked {
                message_id,
                customer_id,
                ..
            } => (message_id.clone(), customer_id.clone()),
            other => return Err(DeliveryError::unusable(format!("{other:?} is not provider feedback"))),
        };
        let stream = message_stream(&message_id);
        // The provider's feedback id makes the event id: a redelivery is found.
        let event_id = feedback_event_id(&stream, feedback_id, "");
        let command = MessageCommand::Feedback {
            feedback: feedback.clone(),
            id: event_id,
            sent_id: feedback_event_id(&stream, feedback_id, "sent"),
        };
        let mut attempt = 0;
        let (before, appended) = loop {
            attempt += 1;
            let (state, existing) = self.load_message(&message_id).await?;
            if existing.iter().any(|e| e.event_id == event_id) {
                return Ok(FeedbackOutcome::Duplicate);
            }
            let meta = match existing.last() {
                Some(last) => CommandMeta::caused_by(last, Actor::system("ses")),
                // The first event of its stream starts a chain named after it.
                None => CommandMeta {
                    command_id: event_id,
                    correlation_id: event_id,
                    causation_id: None,
                    actor: Actor::system("ses"),
                },
            };
            match self.execute_once(&message_id, &meta, &state, &command).await? {
                // A `Send` for a message already recorded sent: nothing to add.
                Some((_, appended)) if appended.is_empty() => return Ok(FeedbackOutcome::Duplicate),
                Some((_, appended)) => break (state, appended),
                None if attempt < FEEDBACK_APPEND_ATTEMPTS => continue,
                None => {
                    return Err(AggregateError::Contended {
                        attempts: attempt as u32,
                    }
                    .into())
                }
            }
        };
        // A claim whose send was never recorded: this feedback settled it.
        if let Some(claim) = before.claim.as_ref().filter(|_| !before.sent) {
            tracing::info!(message_id = %message_id, "message outcome settled as sent by provider feedback");
            self.log_sends(&appended).await?;
            self.count_for(
                metric::MESSAGES_SENT,
                claim.channel,
                claim.category,
                &claim.campaign_id,
                &[("Reason", "settled-by-feedback".into())],
            );
        }
        let list = Consumer::new(
            Arc::new(SuppressionListProjection::new(self.identifiers.clone())),
            self.events.clone(),
            self.docs.clone(),
        );
        for e in &appended {
            list.deliver(e)
                .await
                .map_err(|e| DeliveryError::Step(Failure::retryable("recording the suppression", e)))?;
        }
        let command = match &feedback {
            MessageEvent::EmailBounced {
                bounce_type: crate::messaging::events::BounceType::Permanent,
                diagnostic,
                ..
            } => Some(crate::customer::CustomerCommand::InvalidateEmail(
                crate::customer::InvalidateEmail {
                    email: recipient.to_string(),
                    reason: match diagnostic {
                        Some(d) => format!("permanent bounce: {}", d.chars().take(150).collect::<String>()),
                        None => "permanent bounce".to_string(),
                    },
                },
            )),
            MessageEvent::EmailComplained { .. } => Some(crate::customer::CustomerCommand::RevokeConsent(
                crate::customer::RevokeConsent {
                    purpose: Purpose::Marketing,
                    channel: Channel::Email,
                    reason: "complaint".into(),
                    method: None,
                },
            )),
            _ => None,
        };
        if let Some(command) = command {
            let respond = |_: &Customer, _: &[EventEnvelope]| (200, Value::Null);
            // Caused by the feedback as stored.
            let meta = match appended.iter().find(|e| e.event_id == event_id) {
                Some(recorded) => CommandMeta::caused_by(recorded, Actor::system("ses")),
                None => CommandMeta::new(Actor::system("ses")),
            };
            match self
                .customers
                .execute(&customer_id, &command, &meta, None, &respond)
                .await
            {
                Ok(_) => {}
                // Already revoked, already invalid, or the customer is gone: nothing to do.
                Err(crate::customer::CommandError::Rejected(_)) => {}
                Err(e) => return Err(DeliveryError::Step(Failure::from_error("acting on the feedback", e))),
            }
        }
        Ok(FeedbackOutcome::Recorded)
    }
}
