//! The state of one message stream (`message-<message id>`) and its fold.

use super::DeliveryError;
use crate::consent::Channel;
use crate::event::{DomainEvent, EventEnvelope};
use crate::messaging::events::MessageEvent;
use crate::vocabulary::Category;
use chrono::{DateTime, Utc};

/// The latest claim on a message stream.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) version: u64,
    pub(super) at: DateTime<Utc>,
    pub(super) channel: Channel,
    pub(super) category: Category,
    pub(super) campaign_id: String,
    pub(super) customer_id: String,
}

/// The state of one message stream.
#[derive(Debug, Default)]
pub(super) struct MessageState {
    pub(super) version: u64,
    /// Suppressed, sent, or failed for good.
    pub(super) done: bool,
    /// `MessageSent` is recorded.
    pub(super) sent: bool,
    /// A claim holds (no outcome, or an unknown one).
    pub(super) claimed: bool,
    pub(super) claim: Option<Claim>,
    /// The claim's outcome is unknown (`MessageOutcomeUnknown`).
    pub(super) unknown: bool,
    /// Sends given back after an unknown outcome (`MessageNotAccepted`):
    /// the resends made or under way.
    pub(super) resends: usize,
    /// Given back after an unknown outcome and not claimed again yet.
    pub(super) resend_pending: bool,
    /// The provider reported on the message (it took it).
    pub(super) feedback: bool,
    pub(super) deferred_until: Option<DateTime<Utc>>,
    pub(super) failed_deliveries: usize,
}

pub(super) fn fold(events: &[EventEnvelope]) -> Result<MessageState, DeliveryError> {
    let mut s = MessageState::default();
    for e in events {
        s.version = e.version;
        let typed = MessageEvent::from_envelope(e).map_err(|err| DeliveryError::Poison(err.to_string()))?;
        match typed {
            MessageEvent::MessageSuppressed { .. } => s.done = true,
            MessageEvent::MessageSent { .. } => {
                s.done = true;
                s.sent = true;
            }
            MessageEvent::MessageDeferred { until, .. } => s.deferred_until = Some(until),
            MessageEvent::MessageClaimed {
                channel,
                category,
                campaign_id,
                customer_id,
                ..
            } => {
                s.claimed = true;
                s.unknown = false;
                s.resend_pending = false;
                s.claim = Some(Claim {
                    version: e.version,
                    at: e.occurred_at,
                    channel,
                    category,
                    campaign_id,
                    customer_id,
                });
            }
            MessageEvent::MessageFailed { retryable, .. } => {
                if retryable {
                    // The claim is given back: the next delivery tries again.
                    s.claimed = false;
                    s.failed_deliveries += 1;
                } else {
                    s.done = true;
                }
            }
            MessageEvent::MessageOutcomeUnknown { .. } => s.unknown = true,
            MessageEvent::MessageNotAccepted { .. } => {
                s.claimed = false;
                s.unknown = false;
                s.resends += 1;
                s.resend_pending = true;
            }
            MessageEvent::MessageAccepted { .. }
            | MessageEvent::MessageContentRejected { .. }
            | MessageEvent::EmailDelivered { .. }
            | MessageEvent::EmailBounced { .. }
            | MessageEvent::EmailComplained { .. }
            | MessageEvent::EmailOpened { .. }
            | MessageEvent::EmailClicked { .. } => s.feedback = true,
        }
    }
    Ok(s)
}
