//! The channel function's service: takes a `MessageRequested`, runs the
//! decision pipeline against the customer as the event store knows them now,
//! and records the outcome on the message stream `message-<message id>`.
//!
//! Effectively once: the stream's version is the claim. Every outcome is
//! appended with `ExpectedVersion::Exactly(v)` of the stream as it was read,
//! so of two deliveries of the same request only one appends; before calling
//! a provider, `MessageClaimed` is appended that way, and a delivery that
//! finds a claim never calls the provider (decision 0011).
//!
//! Unknown outcomes settle (decision 0032): a provider error that does not
//! prove the message stayed unsent (a timeout, a lost connection, a 5xx)
//! records `MessageOutcomeUnknown` and keeps the claim. For email a settle
//! check (the message's timer) looks, when the settle window has passed,
//! whether SES reported the message: its `Send` (or any later feedback)
//! settles it as sent through [`MessageDelivery::record_feedback`]; none
//! means SES never took it, and it is sent again, each time with a longer
//! window, until [`DeliverySettings::max_email_sends`] sends were made; after
//! the last one an unknown outcome is given up (counted, alarmed). SMS and
//! push have no such feedback: their unknown outcome stays unknown, at most
//! once. A claim still without an outcome when its window ends (a crash
//! between the claim and the answer) is treated the same way.

mod discount;
mod feedback;
mod message;
mod pipeline;
mod projections;
mod settings;
mod settle;
mod timer;

pub use feedback::FeedbackOutcome;
pub use message::MessageStreamMissing;
pub use projections::{
    recent_sends, suppression_reason, MessageLogProjection, SuppressionEntry, SuppressionListProjection,
};
pub use settings::{
    outcome_metrics, DeliverySettings, Providers, DEFAULT_MAX_EMAIL_SENDS, DEFAULT_SETTLE_WINDOW_GROWTH,
    SETTLE_WINDOW_SETTING,
};
pub use timer::MessageTimer;

use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::Clock;
use crate::consent::Channel;
use crate::consumer::Consumer;
use crate::customer::CustomerService;
use crate::event::{CommandMeta, EventCodecError, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind, Reason};
use crate::messaging::events::{MessageEvent, MessageRequest};
use crate::messaging::provider::ProviderError;
use crate::messaging::templates::{StoredTemplates, TemplateSource};
use crate::messaging::unsubscribe::TokenSigner;
use crate::metrics::{MetricSet, MetricsSink, NoMetrics};
use crate::ports::{DeadLetterQueue, EventStore, ReadModelStore, StoreError};
use crate::privacy::IdentifierHasher;
use crate::relay::{NoPause, Pause};
use crate::scheduler::Scheduler;
use crate::vocabulary::Category;
use chrono::{DateTime, Utc};
use message::{Claim, MessageCommand, MessageState, MessageStream};
use std::sync::Arc;

/// The read model of sends per customer (frequency caps).
pub use crate::vocabulary::streams::MESSAGE_LOG;
/// The read model of suppressed addresses.
pub const SUPPRESSION_LIST: &str = "suppression-list";

const ACTOR: &str = "channel";

/// What one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent {
        provider_message_id: String,
    },
    Suppressed,
    Deferred {
        until: DateTime<Utc>,
    },
    /// Failed for good (recorded, and parked in the dead-letter queue).
    Failed,
    /// The message was already handled (or is being handled) by another delivery.
    Duplicate,
    /// Deferred, and its time has not come: the timer hands it back.
    Waiting {
        until: DateTime<Utc>,
    },
    /// The provider may or may not have taken it: recorded, the claim kept
    /// (email: a settle check decides; SMS, push: never sent again).
    OutcomeUnknown,
}

/// What a settle check did.
#[derive(Debug, Clone, PartialEq)]
pub enum SettleOutcome {
    /// Nothing left to settle: sent, settled by feedback, finished, released
    /// for a redelivery, or the timer belongs to an earlier claim.
    Settled,
    /// The window has not ended yet: the check is set again for its end.
    Waiting { until: DateTime<Utc> },
    /// The outcome stays unknown for good (SMS, push, or an email already
    /// sent the most times allowed): no further send.
    Unknown,
    /// SES never took the email: it went through delivery again.
    Resent(DeliveryOutcome),
}

/// Why a delivery, a settle check or recording feedback did not finish:
/// each kind of cause keeps its error, and says with [`Classify::kind`]
/// whether to deliver again (retryable, conflict) or to park (poison).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The event store or a read model failed (its kind says which).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The message stream could not be read or written (a stored event
    /// that does not read, an append refused, or too many other writers).
    #[error(transparent)]
    Stream(#[from] AggregateError<MessageStreamMissing>),
    /// A request or a timer's data that does not read: poison.
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    /// The provider refused or could not be asked, proving nothing was sent
    /// (the failure is recorded; its kind says whether to deliver again).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Another writer moved the message stream under a step that must not
    /// decide again in the same run (after the claim, during a settle
    /// check): a conflict, delivered again.
    #[error("the message stream moved {0}")]
    Moved(&'static str),
    /// This request can never be handled (not a `MessageRequested`, no
    /// address, its stored request gone, not provider feedback): poison.
    #[error(transparent)]
    Unusable(Reason),
    /// Another step failed (the scheduler, the customer's stream, the send
    /// log, acting on feedback), classified by the step, its cause kept.
    #[error(transparent)]
    Step(Failure),
}

impl DeliveryError {
    /// A request that can never be handled, and why.
    pub(crate) fn unusable(reason: impl Into<String>) -> Self {
        DeliveryError::Unusable(Reason(reason.into()))
    }
}

impl Classify for DeliveryError {
    fn kind(&self) -> FailureKind {
        match self {
            DeliveryError::Store(e) => e.kind(),
            DeliveryError::Stream(e) => e.kind(),
            DeliveryError::Codec(e) => e.kind(),
            DeliveryError::Provider(e) => e.kind(),
            DeliveryError::Moved(_) => FailureKind::Conflict,
            DeliveryError::Unusable(_) => FailureKind::Poison,
            DeliveryError::Step(e) => e.kind(),
        }
    }
}

/// A unit enum's wire name (`no-consent`, `quiet-hours`, `marketing`), for metric properties.
fn kebab<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

pub struct MessageDelivery {
    events: Arc<dyn EventStore>,
    /// The command path of the message streams.
    messages: AggregateService<MessageStream>,
    docs: Arc<dyn ReadModelStore>,
    customers: CustomerService,
    scheduler: Arc<dyn Scheduler>,
    clock: Arc<dyn Clock>,
    providers: Providers,
    signer: Arc<TokenSigner>,
    identifiers: IdentifierHasher,
    dead_letters: Arc<dyn DeadLetterQueue>,
    settings: DeliverySettings,
    metrics: Arc<dyn MetricsSink>,
    pause: Arc<dyn Pause>,
    /// Where the template to render comes from (decision 0077): the stored
    /// versions, the shipped ones as the fallback.
    templates: Arc<dyn TemplateSource>,
}

impl MessageDelivery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        scheduler: Arc<dyn Scheduler>,
        clock: Arc<dyn Clock>,
        providers: Providers,
        signer: Arc<TokenSigner>,
        identifiers: IdentifierHasher,
        dead_letters: Arc<dyn DeadLetterQueue>,
        settings: DeliverySettings,
    ) -> Self {
        MessageDelivery {
            customers: CustomerService::new(events.clone(), clock.clone()).with_identifiers(identifiers.clone()),
            messages: AggregateService::new(events.clone(), clock.clone()),
            templates: Arc::new(StoredTemplates::new(events.clone())),
            events,
            docs,
            scheduler,
            clock,
            providers,
            signer,
            identifiers,
            dead_letters,
            settings,
            metrics: Arc::new(NoMetrics),
            pause: Arc::new(NoPause),
        }
    }

    /// How the delivery waits between provider attempts when throttled (the
    /// runtime's timer in the channel function and crm-local; by default it
    /// retries at once).
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> Self {
        self.pause = pause;
        self
    }

    /// Where the templates come from (by default the event store the
    /// delivery writes, with the shipped templates as the fallback).
    pub fn with_templates(mut self, templates: Arc<dyn TemplateSource>) -> Self {
        self.templates = templates;
        self
    }

    /// Where the sent, suppressed, deferred and failed counts go (EMF in the
    /// channel function, nowhere by default).
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    /// One count of `name` for the request's channel, with why as a property.
    fn count(&self, name: &'static str, request: &MessageRequest, reason: Option<String>) {
        let properties: Vec<_> = reason.map(|r| ("Reason", r)).into_iter().collect();
        self.count_for(
            name,
            request.channel,
            request.category,
            &request.campaign_id,
            &properties,
        );
    }

    /// One `MessageOutcomesUnknown` for `claim`: `reason` is why it is
    /// unknown, `settlement` what comes of it
    /// ([`outcome_metrics::SETTLEMENT`]).
    fn count_unknown(&self, claim: &Claim, reason: &str, settlement: &str) {
        self.count_for(
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            claim.channel,
            claim.category,
            &claim.campaign_id,
            &[
                ("Reason", reason.to_string()),
                (outcome_metrics::SETTLEMENT, settlement.to_string()),
            ],
        );
    }

    /// One count of `name` for `channel`, with the category, the campaign
    /// and `properties` (why, what comes of it) as properties.
    fn count_for(
        &self,
        name: &'static str,
        channel: Channel,
        category: Category,
        campaign_id: &str,
        properties: &[(&'static str, String)],
    ) {
        let mut set = MetricSet::new(self.now())
            .dimension("Channel", channel.to_string())
            .count(name, 1)
            .property("Category", kebab(&category))
            .property("CampaignId", campaign_id.to_string());
        for (property, value) in properties {
            set = set.property(property, value.clone());
        }
        self.metrics.emit(set);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn customers(&self) -> &CustomerService {
        &self.customers
    }

    /// The message stream of `message_id` (the default state when there is
    /// none yet) and its envelopes as stored.
    async fn load_message(&self, message_id: &str) -> Result<(MessageState, Vec<EventEnvelope>), DeliveryError> {
        let (state, events) = self.messages.load_stream(message_id).await?;
        Ok((state.unwrap_or_default(), events))
    }

    /// Records `events` on the stream of `message_id` as of `state` (the
    /// version they were decided on): the stream after them and their
    /// envelopes as stored, or `None` when another writer moved the stream
    /// first (nothing written).
    async fn record(
        &self,
        message_id: &str,
        meta: &CommandMeta,
        state: &MessageState,
        events: Vec<MessageEvent>,
    ) -> Result<Option<(MessageState, Vec<EventEnvelope>)>, DeliveryError> {
        let command = MessageCommand::Record(events);
        self.execute_once(message_id, meta, state, &command).await
    }

    /// One round of `command` on the stream of `message_id` as of `state`
    /// ([`AggregateService::try_once`]): `None` on a conflict.
    async fn execute_once(
        &self,
        message_id: &str,
        meta: &CommandMeta,
        state: &MessageState,
        command: &MessageCommand,
    ) -> Result<Option<(MessageState, Vec<EventEnvelope>)>, DeliveryError> {
        let respond = |_: &MessageState, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        let executed = match self
            .messages
            .try_once(message_id, state.loaded(), command, &(), meta, None, &respond)
            .await
        {
            Ok(executed) => executed,
            // Nothing decided for a stream that does not exist: nothing written.
            Err(AggregateError::Rejected(MessageStreamMissing)) => return Ok(Some((state.clone(), Vec::new()))),
            Err(e) => return Err(e.into()),
        };
        Ok(match executed {
            Some(Executed::Applied { state, events, .. }) => Some((*state, events)),
            // No receipt is ever kept for a message stream: nothing to replay.
            Some(Executed::Replayed { .. }) | None => None,
        })
    }

    /// Projects `events` (a send just recorded) into the send log now, not
    /// when the projector gets to them: the next request's caps must see
    /// the send.
    async fn log_sends(&self, events: &[EventEnvelope]) -> Result<(), DeliveryError> {
        let log = Consumer::new(Arc::new(MessageLogProjection), self.events.clone(), self.docs.clone());
        for e in events {
            log.deliver(e)
                .await
                .map_err(|e| DeliveryError::Step(Failure::retryable("recording the send", e)))?;
        }
        Ok(())
    }

    /// How addresses are hashed (the suppression list, the proof ledger,
    /// provider feedback).
    pub fn identifiers(&self) -> &IdentifierHasher {
        &self.identifiers
    }
}

#[cfg(test)]
mod tests;
