//! Recording provider feedback on the message stream, and acting on it.

use super::message::fold;
use super::projections::{MessageLogProjection, SuppressionListProjection};
use super::{DeliveryError, MessageDelivery};
use crate::consent::{Channel, Purpose};
use crate::consumer::Consumer;
use crate::customer::Customer;
use crate::event::{envelopes, Actor, CommandMeta, EventEnvelope};
use crate::messaging::events::{message_stream, MessageEvent};
use crate::metrics::names as metric;
use crate::ports::{AppendError, AppendRequest, ExpectedVersion};
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
            other => return Err(DeliveryError::Poison(format!("{other:?} is not provider feedback"))),
        };
        let accepted = matches!(feedback, MessageEvent::MessageAccepted { .. });
        let stream = message_stream(&message_id);
        // The provider's feedback id makes the event id: a redelivery is found.
        let event_id = feedback_event_id(&stream, feedback_id, "");
        let mut attempt = 0;
        let (appended, meta, settled) = loop {
            attempt += 1;
            let existing = self.events.read_stream(&stream, 0, 1000).await?;
            if existing.iter().any(|e| e.event_id == event_id) {
                return Ok(FeedbackOutcome::Duplicate);
            }
            let state = fold(&existing)?;
            // A claim whose send was never recorded: this feedback settles it.
            let settles = state.claim.clone().filter(|_| !state.sent);
            if accepted && settles.is_none() {
                return Ok(FeedbackOutcome::Duplicate);
            }
            let meta = CommandMeta {
                command_id: event_id,
                correlation_id: existing.first().map(|e| e.correlation_id).unwrap_or(event_id),
                causation_id: existing.last().map(|e| e.event_id),
                actor: Actor::system("ses"),
            };
            let mut events = vec![feedback.clone()];
            let mut ids = vec![event_id];
            if let Some(claim) = &settles {
                let sent = MessageEvent::MessageSent {
                    message_id: message_id.clone(),
                    customer_id: claim.customer_id.clone(),
                    channel: claim.channel,
                    category: claim.category,
                    campaign_id: claim.campaign_id.clone(),
                    // Only SES's `Send` names its message id here.
                    provider_message_id: match &feedback {
                        MessageEvent::MessageAccepted {
                            provider_message_id, ..
                        } => provider_message_id.clone(),
                        _ => String::new(),
                    },
                };
                let sent_id = feedback_event_id(&stream, feedback_id, "sent");
                // Accepted, then sent; sent, then delivered (bounced, ...).
                if accepted {
                    events.push(sent);
                    ids.push(sent_id);
                } else {
                    events.insert(0, sent);
                    ids.insert(0, sent_id);
                }
            }
            let mut stored = envelopes(&stream, Some(&customer_id), &events, &meta, self.now())
                .map_err(|e| DeliveryError::Poison(e.to_string()))?;
            for (e, id) in stored.iter_mut().zip(ids) {
                e.event_id = id;
            }
            let expected = match &settles {
                Some(_) => ExpectedVersion::Exactly(state.version),
                None => ExpectedVersion::Any,
            };
            match self
                .events
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected,
                    events: stored,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
            {
                Ok(appended) => break (appended, meta, settles),
                Err(AppendError::Conflict { .. }) if attempt < FEEDBACK_APPEND_ATTEMPTS => continue,
                Err(AppendError::Store(s)) => return Err(DeliveryError::from(s)),
                Err(other) => return Err(DeliveryError::Retry(other.to_string())),
            }
        };
        if let Some(claim) = &settled {
            tracing::info!(message_id = %message_id, "message outcome settled as sent by provider feedback");
            let log = Consumer::new(Arc::new(MessageLogProjection), self.events.clone(), self.docs.clone());
            for e in &appended.events {
                log.deliver(e).await.map_err(|e| DeliveryError::Retry(e.to_string()))?;
            }
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
        for e in &appended.events {
            list.deliver(e).await.map_err(|e| DeliveryError::Retry(e.to_string()))?;
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
            let meta = CommandMeta {
                command_id: uuid::Uuid::now_v7(),
                correlation_id: meta.correlation_id,
                causation_id: Some(event_id),
                actor: Actor::system("ses"),
            };
            match self
                .customers
                .execute(&customer_id, &command, &meta, None, &respond)
                .await
            {
                Ok(_) => {}
                // Already revoked, already invalid, or the customer is gone: nothing to do.
                Err(crate::customer::CommandError::Rejected(_)) => {}
                Err(e) if e.is_retryable() => return Err(DeliveryError::Retry(e.to_string())),
                Err(e) => return Err(DeliveryError::Poison(e.to_string())),
            }
        }
        Ok(FeedbackOutcome::Recorded)
    }
}
