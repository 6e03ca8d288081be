//! The message stream (`message-<message id>`) as an aggregate: its state,
//! its fold, and what it records. Every write to it goes through
//! [`AggregateService`](crate::aggregate::AggregateService): appended with
//! the version it was read at, so of two writers only one appends.

use crate::aggregate::{Aggregate, DecideContext};
use crate::consent::Channel;
use crate::event::{DomainEvent, EventEnvelope, Upcaster};
use crate::messaging::events::{message_stream, MarketingKind, MessageEvent};
use crate::vocabulary::Category;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The latest claim on a message stream.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) version: u64,
    pub(super) at: DateTime<Utc>,
    pub(super) channel: Channel,
    pub(super) category: Category,
    pub(super) campaign_id: String,
    pub(super) customer_id: String,
    pub(super) kind: Option<MarketingKind>,
}

/// The state of one message stream (the default: no stream yet).
#[derive(Debug, Clone, Default)]
pub(super) struct MessageState {
    pub(super) version: u64,
    /// The customer the stream is about (its first event's): the customer
    /// every event appended to it is stored for.
    pub(super) customer_id: Option<String>,
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

impl MessageState {
    /// The state as the command path takes it: `None` for a stream not written yet.
    pub(super) fn loaded(&self) -> Option<MessageState> {
        (self.version > 0).then(|| self.clone())
    }

    /// The state after `event`, stored at `version` at `at`.
    fn apply(mut self, event: &MessageEvent, at: DateTime<Utc>, version: u64) -> MessageState {
        self.version = version;
        if self.customer_id.is_none() {
            self.customer_id = Some(customer_of(event).to_string());
        }
        match event {
            MessageEvent::MessageSuppressed { .. } => self.done = true,
            MessageEvent::MessageSent { .. } => {
                self.done = true;
                self.sent = true;
            }
            MessageEvent::MessageDeferred { until, .. } => self.deferred_until = Some(*until),
            MessageEvent::MessageClaimed {
                channel,
                category,
                campaign_id,
                customer_id,
                kind,
                ..
            } => {
                self.claimed = true;
                self.unknown = false;
                self.resend_pending = false;
                self.claim = Some(Claim {
                    version,
                    at,
                    channel: *channel,
                    category: *category,
                    campaign_id: campaign_id.clone(),
                    customer_id: customer_id.clone(),
                    kind: *kind,
                });
            }
            MessageEvent::MessageFailed { retryable, .. } => {
                if *retryable {
                    // The claim is given back: the next delivery tries again.
                    self.claimed = false;
                    self.failed_deliveries += 1;
                } else {
                    self.done = true;
                }
            }
            MessageEvent::MessageOutcomeUnknown { .. } => self.unknown = true,
            MessageEvent::MessageNotAccepted { .. } => {
                self.claimed = false;
                self.unknown = false;
                self.resends += 1;
                self.resend_pending = true;
            }
            MessageEvent::MessageAccepted { .. }
            | MessageEvent::MessageContentRejected { .. }
            | MessageEvent::EmailDelivered { .. }
            | MessageEvent::EmailBounced { .. }
            | MessageEvent::EmailComplained { .. }
            | MessageEvent::EmailOpened { .. }
            | MessageEvent::EmailClicked { .. } => self.feedback = true,
        }
        self
    }
}

/// The customer a message event is about.
fn customer_of(event: &MessageEvent) -> &str {
    match event {
        MessageEvent::MessageSuppressed { customer_id, .. }
        | MessageEvent::MessageSent { customer_id, .. }
        | MessageEvent::MessageDeferred { customer_id, .. }
        | MessageEvent::MessageClaimed { customer_id, .. }
        | MessageEvent::MessageFailed { customer_id, .. }
        | MessageEvent::MessageOutcomeUnknown { customer_id, .. }
        | MessageEvent::MessageNotAccepted { customer_id, .. }
        | MessageEvent::MessageAccepted { customer_id, .. }
        | MessageEvent::MessageContentRejected { customer_id, .. }
        | MessageEvent::EmailDelivered { customer_id, .. }
        | MessageEvent::EmailBounced { customer_id, .. }
        | MessageEvent::EmailComplained { customer_id, .. }
        | MessageEvent::EmailOpened { customer_id, .. }
        | MessageEvent::EmailClicked { customer_id, .. } => customer_id,
    }
}

/// A message event as the stream stores it, with the id it is stored
/// under when it has one of its own (provider feedback: the same feedback
/// always gets the same id, so a redelivery is found). Stored exactly as
/// the [`MessageEvent`] it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Recorded {
    pub(super) event: MessageEvent,
    #[serde(skip)]
    pub(super) id: Option<uuid::Uuid>,
}

impl Recorded {
    /// `event`, stored under a fresh id.
    pub(super) fn new(event: MessageEvent) -> Recorded {
        Recorded { event, id: None }
    }

    /// `event`, stored under `id`.
    pub(super) fn with_id(event: MessageEvent, id: uuid::Uuid) -> Recorded {
        Recorded { event, id: Some(id) }
    }
}

impl DomainEvent for Recorded {
    fn schema_version(event_type: &str) -> u32 {
        MessageEvent::schema_version(event_type)
    }

    fn upcasters() -> &'static [Upcaster] {
        MessageEvent::upcasters()
    }
}

/// What is recorded on a message stream. The delivery decides its
/// outcomes from outside facts (the customer, consent, caps, the
/// provider's answer): the stream records them at the version they were
/// decided on.
#[derive(Debug, Clone)]
pub(super) enum MessageCommand {
    /// Record these events, decided by the delivery or a settle check.
    Record(Vec<MessageEvent>),
    /// Record provider feedback (`feedback`, stored under `id`). It proves
    /// the provider took the message: a claim whose send was never
    /// recorded gets `MessageSent` (stored under `sent_id`) in the same
    /// append. SES's `Send` (`MessageAccepted`) is recorded only then: for
    /// a message already recorded sent it adds nothing.
    Feedback {
        feedback: MessageEvent,
        id: uuid::Uuid,
        sent_id: uuid::Uuid,
    },
}

/// The only refusal of a message stream: a command that records nothing
/// on a stream that does not exist (SES's `Send` for a message never
/// claimed here). It records whatever else it is told: its decisions are
/// the delivery's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nothing to record: the message stream does not exist")]
pub struct MessageStreamMissing;

/// The message stream as an [`Aggregate`] (id: the message id).
pub(super) struct MessageStream;

impl Aggregate for MessageStream {
    type State = MessageState;
    type Command = MessageCommand;
    type Event = Recorded;
    type Error = MessageStreamMissing;
    type Input = ();

    fn stream_id(id: &str) -> String {
        message_stream(id)
    }

    fn customer_id(state: &MessageState) -> Option<&str> {
        state.customer_id.as_deref()
    }

    fn version(state: &MessageState) -> u64 {
        state.version
    }

    fn not_found() -> MessageStreamMissing {
        MessageStreamMissing
    }

    fn decide(
        state: Option<&MessageState>,
        command: &MessageCommand,
        ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<Recorded>, MessageStreamMissing> {
        match command {
            MessageCommand::Record(events) => Ok(events.iter().cloned().map(Recorded::new).collect()),
            MessageCommand::Feedback { feedback, id, sent_id } => {
                // A claim whose send was never recorded: this feedback settles it.
                let settles = state.and_then(|s| s.claim.as_ref().filter(|_| !s.sent));
                let accepted = matches!(feedback, MessageEvent::MessageAccepted { .. });
                if accepted && settles.is_none() {
                    return Ok(Vec::new());
                }
                let mut events = vec![Recorded::with_id(feedback.clone(), *id)];
                if let Some(claim) = settles {
                    let sent = MessageEvent::MessageSent {
                        message_id: ctx.id.to_string(),
                        customer_id: claim.customer_id.clone(),
                        channel: claim.channel,
                        category: claim.category,
                        campaign_id: claim.campaign_id.clone(),
                        // Only SES's `Send` names its message id here.
                        provider_message_id: match feedback {
                            MessageEvent::MessageAccepted {
                                provider_message_id, ..
                            } => provider_message_id.clone(),
                            _ => String::new(),
                        },
                        kind: claim.kind,
                    };
                    let sent = Recorded::with_id(sent, *sent_id);
                    // Accepted, then sent; sent, then delivered (bounced, ...).
                    if accepted {
                        events.push(sent);
                    } else {
                        events.insert(0, sent);
                    }
                }
                Ok(events)
            }
        }
    }

    fn evolve(state: Option<MessageState>, event: &Recorded, at: DateTime<Utc>, version: u64) -> Option<MessageState> {
        Some(state.unwrap_or_default().apply(&event.event, at, version))
    }

    fn stamp(event: &Recorded, envelope: &mut EventEnvelope) {
        if let Some(id) = event.id {
            envelope.event_id = id;
        }
    }
}
