//! Consumers: at-least-once in, exactly-once effect out (ARCHITECTURE.md §6).
//!
//! A [`Projection`] turns one event into read-model operations. A [`Consumer`]
//! delivers events to it so that duplicates are skipped, a gap is filled from
//! the event store in order, and the checkpoint of (consumer, stream) moves
//! in the same atomic write as the documents.
//!
//! The checkpoint is the last version of the stream the consumer has
//! accounted for (decision 0031): the newest event of a type it handles that
//! it applied, or, on the page path, the end of a run of events it does not
//! handle that the page saw right after it. An event of a type the
//! projection does not handle writes nothing and reads nothing: the stream's
//! versions between the checkpoint and the next handled event are a gap,
//! which that event fills from the page or from the event store, applying
//! the handled ones among them in order and skipping the rest.

use crate::event::{EventCodecError, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{CommitError, EventStore, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use std::sync::Arc;

pub mod capacity;
pub mod dead_letters;
mod decrypting;
mod page;
mod replay;

pub use dead_letters::{open_letter, seal_letter, SealedDeadLetters};
pub use decrypting::{DecryptingHandler, NotDecrypted};
pub use page::{PageDocs, PageOutcome};
pub use replay::{Flushed, ReplayDocs};

/// Why a projection could not use an event. Its kind ([`Classify`]) says
/// what the consumer does: park a poison event, deliver a retryable one again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProjectionError {
    /// The event's data does not decode: poison.
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    /// The event lacks what the projection needs (a reason written as text,
    /// with no error behind it): poison.
    #[error("{0}")]
    Invalid(String),
    /// The read-model store refused the event's commit (too large): poison.
    #[error(transparent)]
    Refused(CommitError),
    /// A store the projection reads failed: retryable, whatever the store
    /// said (the read may succeed when the event is delivered again).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A classified failure of what the projection calls (a document that
    /// does not encode, a service that kept conflicting), with its source:
    /// its own kind.
    #[error(transparent)]
    Failed(#[from] Failure),
}

impl From<serde_json::Error> for ProjectionError {
    /// A document that does not encode or decode: poison, the serde error kept.
    fn from(e: serde_json::Error) -> Self {
        ProjectionError::Failed(Failure::poison("document", e))
    }
}

impl Classify for ProjectionError {
    fn kind(&self) -> FailureKind {
        match self {
            ProjectionError::Codec(_) | ProjectionError::Invalid(_) => FailureKind::Poison,
            ProjectionError::Refused(e) => e.kind(),
            ProjectionError::Store(_) => FailureKind::Retryable,
            ProjectionError::Failed(f) => f.kind(),
        }
    }
}

/// A read model built from events.
#[async_trait]
pub trait Projection: Send + Sync {
    /// The consumer's name: its checkpoint and document namespace.
    fn name(&self) -> &'static str;

    /// Whether events of this type change the read model. Events of other
    /// types are never projected and write nothing (not even the checkpoint).
    fn handles(&self, event_type: &str) -> bool;

    /// The operations one event causes, given the read model as it stands.
    /// A function of the event and of what it reads through `docs` alone
    /// (no other input, no randomness): the page path relies on it, since
    /// operations made without reading anything are written as idempotent
    /// (decision 0031). On the page path an event that makes nothing
    /// records nothing, so it may be projected again later, right before
    /// the stream's next handled event (as if the bus had delivered it
    /// then): documents of other consumers it reads may have moved on.
    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError>;

    /// Whether the projection acts outside the read models at once (it
    /// appends events) from other consumers' documents, so it must read
    /// them committed, never a page's staged writes that the store may yet
    /// refuse. On the page path such a consumer gets each event it handles
    /// through the one-event path ([`Consumer::deliver`]), after the page's
    /// writes staged so far are committed: it sees what one-event delivery
    /// would show it, and its checkpoint moves with each event (decision
    /// 0092, addendum).
    fn reads_committed(&self) -> bool {
        false
    }

    /// Whether the projection decides rather than keeps a read model: it
    /// acts outside the read models (it appends events) and writes no
    /// documents of its own. A rebuild passes over such a consumer: its
    /// checkpoints stay and its decisions are in the store already, while
    /// running it again would decide anew from read models as of each old
    /// event and append what the live run never did (decision 0093).
    fn decides(&self) -> bool {
        false
    }
}

/// What one delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Versions `from..=to` of the stream were applied (more than one when a gap was filled).
    Applied { from: u64, to: u64 },
    /// Nothing to do: already applied before, or of a type the projection
    /// does not handle (skipped without reading or writing anything).
    Duplicate,
}

/// Why a delivery did not happen. Its kind ([`Classify`]) decides: a
/// poison event is parked, anything else is delivered again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConsumeError {
    /// The event cannot be used: dead-letter it.
    #[error("{consumer}: {source}")]
    Poison {
        consumer: &'static str,
        source: ProjectionError,
    },
    /// The stores failed or kept conflicting: retry later. The failure
    /// (retryable or conflict, never poison) keeps the error that caused it.
    #[error("{consumer}: {}", .source.cause())]
    Retry { consumer: &'static str, source: Failure },
}

impl ConsumeError {
    /// A retryable failure of `consumer` caused by `cause`, whatever kind
    /// `cause` would give itself (the event is delivered again).
    pub fn retry(consumer: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConsumeError::Retry {
            consumer,
            source: Failure::retryable(consumer, cause),
        }
    }

    /// `failure` as a consumer's error: poison when its kind is, retry otherwise.
    pub fn failed(consumer: &'static str, failure: Failure) -> Self {
        match failure.kind() {
            FailureKind::Poison => ConsumeError::Poison {
                consumer,
                source: ProjectionError::Failed(failure),
            },
            FailureKind::Retryable | FailureKind::Conflict => ConsumeError::Retry {
                consumer,
                source: failure,
            },
        }
    }

    /// The consumer that failed.
    pub fn consumer(&self) -> &'static str {
        match self {
            ConsumeError::Poison { consumer, .. } | ConsumeError::Retry { consumer, .. } => consumer,
        }
    }

    /// What went wrong, without the consumer's name: a dead letter's reason.
    pub fn reason(&self) -> String {
        match self {
            ConsumeError::Poison { source, .. } => source.to_string(),
            ConsumeError::Retry { source, .. } => source.cause().to_string(),
        }
    }
}

impl Classify for ConsumeError {
    fn kind(&self) -> FailureKind {
        match self {
            ConsumeError::Poison { .. } => FailureKind::Poison,
            ConsumeError::Retry { source, .. } => source.kind(),
        }
    }
}

/// The dead-letter queue could not take a poison event.
#[derive(Debug, thiserror::Error)]
#[error("could not park poison event: {0}")]
struct NotParked(#[source] StoreError);

/// Delivers events to one projection with exactly-once effect.
#[derive(Clone)]
pub struct Consumer {
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    max_attempts: u32,
}

impl Consumer {
    pub fn new(projection: Arc<dyn Projection>, events: Arc<dyn EventStore>, docs: Arc<dyn ReadModelStore>) -> Self {
        Consumer {
            projection,
            events,
            docs,
            max_attempts: 16,
        }
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// A retryable failure of this consumer caused by `cause`.
    fn retryable(&self, cause: impl std::error::Error + Send + Sync + 'static) -> ConsumeError {
        ConsumeError::retry(self.name(), cause)
    }

    /// A retryable failure of this consumer with only a reason as text.
    fn retryable_reason(&self, reason: String) -> ConsumeError {
        ConsumeError::failed(
            self.name(),
            Failure::reason(FailureKind::Retryable, self.name(), reason),
        )
    }

    pub async fn project_for_test(&self, e: &EventEnvelope, d: &dyn ReadModelStore) -> Vec<ReadOp> {
        self.projection.project(e, d).await.unwrap_or_default()
    }
    /// Whether the projection decides (appends events) rather than keeps a
    /// read model: rebuilds pass over it ([`Projection::decides`]).
    pub fn decides(&self) -> bool {
        self.projection.decides()
    }

    /// Whether the projection handles events of this type.
    pub fn handles(&self, event_type: &str) -> bool {
        self.projection.handles(event_type)
    }

    /// Delivers one event (in any order, any number of times). An event of a
    /// type the projection does not handle is skipped at once: nothing is
    /// read or written.
    pub async fn deliver(&self, event: &EventEnvelope) -> Result<Delivery, ConsumeError> {
        if !self.handles(&event.event_type) {
            return Ok(Delivery::Duplicate);
        }
        let stream = event.stream_id.as_str();
        for _ in 0..self.max_attempts {
            let checkpoint = self
                .docs
                .checkpoint(self.name(), stream)
                .await
                .map_err(|e| self.retryable(e))?;
            if event.version <= checkpoint {
                return Ok(Delivery::Duplicate);
            }
            let pending = self.pending(checkpoint, event).await?;
            match self.apply_in_order(stream, checkpoint, &pending).await {
                Ok(()) => {
                    return Ok(Delivery::Applied {
                        from: checkpoint + 1,
                        to: event.version,
                    })
                }
                // Another delivery moved the checkpoint: look again.
                Err(e) if e.kind() == FailureKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(self.retryable_reason(format!("{stream}: checkpoint kept moving")))
    }

    /// The events from the checkpoint up to `event`: `event` alone, or the
    /// gap before it read from the store (one read of the range), so order
    /// per stream holds however the bus delivered. The gap holds the events
    /// the consumer does not handle as well (they moved nothing); the caller
    /// skips them. Versions that retention expired (decision 0021) are
    /// missing for good: the read must still end at this event.
    async fn pending(&self, checkpoint: u64, event: &EventEnvelope) -> Result<Vec<EventEnvelope>, ConsumeError> {
        if event.version == checkpoint + 1 {
            return Ok(vec![event.clone()]);
        }
        let stream = event.stream_id.as_str();
        let missing = (event.version - checkpoint) as usize;
        let mut read = self
            .events
            .read_stream(stream, checkpoint, missing)
            .await
            .map_err(|e| self.retryable(e))?;
        read.retain(|e| e.version <= event.version);
        if read.last().map(|e| e.version) != Some(event.version) {
            return Err(self.retryable_reason(format!(
                "gap on {stream}: needed versions {}..={}, the store returned {}",
                checkpoint + 1,
                event.version,
                read.len()
            )));
        }
        Ok(read)
    }

    /// Projects and commits `events` in order. A commit that finds the
    /// checkpoint moved fails with a [`FailureKind::Conflict`] (the caller
    /// looks again); a store failure is retryable; an event the projection
    /// or the store refuses is poison.
    async fn apply_in_order(
        &self,
        stream: &str,
        mut checkpoint: u64,
        events: &[EventEnvelope],
    ) -> Result<(), ConsumeError> {
        // Events of types the projection does not handle are skipped: the
        // next commit's checkpoint passes over them.
        for event in events.iter().filter(|e| self.handles(&e.event_type)) {
            let ops = self
                .projection
                .project(event, self.docs.as_ref())
                .await
                .map_err(|source| self.projection_failed(source))?;
            self.docs
                .commit(self.name(), stream, checkpoint, event.version, ops)
                .await
                .map_err(|e| self.commit_failed(e))?;
            checkpoint = event.version;
        }
        Ok(())
    }

    /// A projection's error as this consumer's, by its kind: poison keeps
    /// the projection's error, anything else is delivered again.
    fn projection_failed(&self, source: ProjectionError) -> ConsumeError {
        match source.kind() {
            FailureKind::Poison => ConsumeError::Poison {
                consumer: self.name(),
                source,
            },
            kind => ConsumeError::Retry {
                consumer: self.name(),
                source: Failure::new(kind, self.name(), source),
            },
        }
    }

    /// A refused commit as this consumer's error: a moved checkpoint is a
    /// conflict, a store failure retryable (whatever the store said), a
    /// commit too large poison.
    fn commit_failed(&self, e: CommitError) -> ConsumeError {
        match e {
            // Whatever the store said, it may take the commit when the event
            // is delivered again.
            CommitError::Store(e) => self.retryable(e),
            e => match e.kind() {
                FailureKind::Poison => ConsumeError::Poison {
                    consumer: self.name(),
                    source: ProjectionError::Refused(e),
                },
                kind => ConsumeError::Retry {
                    consumer: self.name(),
                    source: Failure::new(kind, self.name(), e),
                },
            },
        }
    }
}

/// The consumers one deployed function (or local bus target) hosts, with the
/// dead-letter queue for events they cannot use.
#[derive(Clone)]
pub struct ConsumerGroup {
    /// The function's name: `projector`, `consent`.
    pub name: &'static str,
    consumers: Vec<Consumer>,
    docs: Arc<dyn ReadModelStore>,
    dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
}

/// What handling one event did for each consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOutcome {
    pub applied: Vec<&'static str>,
    pub duplicates: Vec<&'static str>,
    pub parked: Vec<&'static str>,
}

impl ConsumerGroup {
    pub fn new(
        name: &'static str,
        projections: Vec<Arc<dyn Projection>>,
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
    ) -> Self {
        ConsumerGroup {
            name,
            consumers: projections
                .into_iter()
                .map(|p| Consumer::new(p, events.clone(), docs.clone()))
                .collect(),
            docs,
            dead_letters,
        }
    }

    pub fn consumer_names(&self) -> Vec<&'static str> {
        self.consumers.iter().map(Consumer::name).collect()
    }

    /// The consumers a rebuild clears and replays: those that keep a read
    /// model, not those that decide ([`Projection::decides`]).
    pub fn rebuildable_names(&self) -> Vec<&'static str> {
        self.consumers
            .iter()
            .filter(|c| !c.decides())
            .map(Consumer::name)
            .collect()
    }

    /// The group's consumer named `name` (`customer-360`, `consent-ledger`, ...).
    pub fn consumer(&self, name: &str) -> Option<&Consumer> {
        self.consumers.iter().find(|c| c.name() == name)
    }

    /// A group of this group's consumer `name` alone (rebuilding one
    /// projection without touching the others).
    pub fn only(&self, name: &str) -> Option<ConsumerGroup> {
        let consumer = self.consumer(name)?.clone();
        Some(ConsumerGroup {
            name: self.name,
            consumers: vec![consumer],
            docs: self.docs.clone(),
            dead_letters: self.dead_letters.clone(),
        })
    }

    /// Delivers one event to every consumer. A poison event is parked in the
    /// dead-letter queue with its reason (and handling goes on); a retryable
    /// failure is returned so the caller (Lambda, the local bus) retries the
    /// whole event, which the checkpoints make safe.
    pub async fn handle(
        &self,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        let mut outcome = GroupOutcome {
            applied: Vec::new(),
            duplicates: Vec::new(),
            parked: Vec::new(),
        };
        for consumer in &self.consumers {
            match consumer.deliver(event).await {
                Ok(Delivery::Applied { .. }) => outcome.applied.push(consumer.name()),
                Ok(Delivery::Duplicate) => outcome.duplicates.push(consumer.name()),
                Err(e) if e.kind() == FailureKind::Poison => {
                    park_poison(self.dead_letters.as_ref(), e.consumer(), event, e.reason(), now).await?;
                    outcome.parked.push(e.consumer());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// Delivers one event to the consumer `consumer` of this group alone (a
    /// dead letter's redrive): a refusal parks it for that consumer only.
    /// A name that is not one of the group's consumers (a letter the bus
    /// parked under the function's name after its retries) goes to the
    /// whole group, as [`ConsumerGroup::handle`].
    pub async fn handle_for(
        &self,
        consumer: &str,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        match self.only(consumer) {
            Some(one) => one.handle(event, now).await,
            None => self.handle(event, now).await,
        }
    }
}

/// Parks an event that `consumer` can never use in the dead-letter queue,
/// with the reason; if even that fails, a retryable error (deliver again).
/// The envelope is parked as the consumer saw it (decrypted): every
/// runtime's queue is a [`SealedDeadLetters`], which puts its personal
/// fields back into their stored form (ciphertext) before it is kept. The
/// reason is free text that may quote what the consumer could not read: it
/// is logged and parked scrubbed of addresses and phone numbers
/// ([`crate::privacy::scrub`], decision 0048).
pub async fn park_poison(
    dead_letters: &dyn crate::ports::DeadLetterQueue,
    consumer: &'static str,
    event: &EventEnvelope,
    reason: impl std::fmt::Display + Send,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ConsumeError> {
    let reason = crate::privacy::scrub::scrub(&reason.to_string()).into_owned();
    tracing::error!(consumer, event_id = %event.event_id, %reason, "poison event parked");
    let letter = crate::ports::DeadLetter {
        consumer: consumer.to_string(),
        reason,
        payload: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        failed_at: now,
        attempts: 1,
    };
    dead_letters
        .park(letter)
        .await
        .map_err(|e| ConsumeError::retry(consumer, NotParked(e)))
}

/// Whatever a bus target hands stored events to: a group of projections, or
/// the journey engine.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// The function's name: `projector`, `consent`, `campaign`.
    fn name(&self) -> &'static str;

    /// The names dead letters of this handler carry.
    fn consumer_names(&self) -> Vec<&'static str>;

    /// Handles one event; a poison event is parked (and reported in the
    /// outcome), a retryable failure is returned.
    async fn handle(
        &self,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError>;

    /// Handles one event for the consumer `consumer` alone: a dead letter's
    /// redrive, which names the consumer that parked it. A group hands it to
    /// that consumer only ([`ConsumerGroup::handle_for`]), so the others,
    /// which took or refused it already, neither see it again nor park it
    /// anew. Handlers hosting one consumer take the default: [`EventHandler::handle`].
    async fn handle_for(
        &self,
        consumer: &str,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        let _ = consumer;
        self.handle(event, now).await
    }

    /// Handles a page of events in store order, with the effect of
    /// [`EventHandler::handle`] on each in turn. Groups of projections
    /// commit the page together ([`ConsumerGroup::handle_page`]); a wrapper
    /// passes the page on, so it does not drop its inner handler to one
    /// event at a time; other handlers take [`handle_each`]. Required, so
    /// no handler falls back to one event at a time unnoticed.
    async fn handle_page(
        &self,
        events: &[EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PageOutcome, ConsumeError>;
}

/// [`EventHandler::handle_page`] for handlers without a page path: `handle`
/// on each event in turn.
pub async fn handle_each(
    handler: &(impl EventHandler + ?Sized),
    events: &[EventEnvelope],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PageOutcome, ConsumeError> {
    handle_in_order(handler, events.iter().collect(), now).await
}

/// How many customers [`handle_by_customer`] works on at once.
pub const PAGE_CONCURRENCY: usize = 8;

/// [`EventHandler::handle_page`] for handlers whose effects are per customer
/// (the journey engine, message delivery): the page's events grouped by
/// customer (by stream when an event names none), each group's events in
/// page order, up to [`PAGE_CONCURRENCY`] groups at once. Every call to a
/// store waits out its own latency and, under throttling, its own backoff,
/// so a page of ten customers takes about as long as its slowest customer,
/// not the sum of all ten. A failed group does not stop the others; the page
/// then fails with the first error, and the caller handles its events one by
/// one (they are idempotent: what a group already did is found done).
pub async fn handle_by_customer(
    handler: &(impl EventHandler + ?Sized),
    events: &[EventEnvelope],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PageOutcome, ConsumeError> {
    use futures::StreamExt;
    let mut groups: Vec<Vec<&EventEnvelope>> = Vec::new();
    let mut group_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for event in events {
        let key = event.customer_id.as_deref().unwrap_or(event.stream_id.as_str());
        let at = *group_of.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(event);
    }
    type GroupRun<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<PageOutcome, ConsumeError>> + Send + 'a>>;
    let runs: Vec<GroupRun<'_>> = groups
        .into_iter()
        .map(|group| Box::pin(handle_in_order(handler, group, now)) as GroupRun<'_>)
        .collect();
    let results: Vec<Result<PageOutcome, ConsumeError>> = futures::stream::iter(runs)
        .buffer_unordered(PAGE_CONCURRENCY)
        .collect()
        .await;
    let mut outcome = PageOutcome::default();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(one) => outcome.merge(one),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

/// `handle` on each of `events` in turn, stopping at the first error: a
/// whole page ([`handle_each`]) or one customer's part of it
/// ([`handle_by_customer`]).
async fn handle_in_order(
    handler: &(impl EventHandler + ?Sized),
    events: Vec<&EventEnvelope>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PageOutcome, ConsumeError> {
    let mut outcome = PageOutcome::default();
    for event in events {
        let one = handler.handle(event, now).await?;
        outcome.merge(PageOutcome {
            applied: one.applied.len() as u64,
            duplicates: one.duplicates.len() as u64,
            parked: one.parked.len() as u64,
        });
    }
    Ok(outcome)
}

#[async_trait]
impl EventHandler for ConsumerGroup {
    fn name(&self) -> &'static str {
        self.name
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        ConsumerGroup::consumer_names(self)
    }

    async fn handle(
        &self,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        ConsumerGroup::handle(self, event, now).await
    }

    async fn handle_for(
        &self,
        consumer: &str,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        ConsumerGroup::handle_for(self, consumer, event, now).await
    }

    async fn handle_page(
        &self,
        events: &[EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PageOutcome, ConsumeError> {
        ConsumerGroup::handle_page(self, events, now).await
    }
}

#[cfg(test)]
mod handle_for_tests {
    use super::*;
    use crate::memory::InMemoryReadModels;
    use crate::testing::{raw_event, InMemoryDeadLetters, InMemoryEventStore, RefusingProjection as Refusing};

    #[tokio::test]
    async fn a_redrive_for_one_consumer_parks_for_that_consumer_alone() {
        let letters = Arc::new(InMemoryDeadLetters::default());
        let group = ConsumerGroup::new(
            "projector",
            vec![Arc::new(Refusing("first")), Arc::new(Refusing("second"))],
            Arc::new(InMemoryEventStore::default()),
            Arc::new(InMemoryReadModels::default()),
            letters.clone(),
        );
        let mut event = raw_event("customer-1", "CustomerRegistered", serde_json::json!({}));
        event.version = 1;
        let now = chrono::Utc::now();
        let parked = |letters: &InMemoryDeadLetters| -> Vec<String> {
            letters
                .letters
                .lock()
                .expect("lock")
                .iter()
                .map(|l| l.consumer.clone())
                .collect()
        };

        let one = EventHandler::handle_for(&group, "second", &event, now)
            .await
            .expect("handled");
        assert_eq!(one.parked, vec!["second"]);
        assert_eq!(parked(&letters), vec!["second"]);
        // A letter under the function's name goes to the whole group.
        let all = group.handle_for("projector", &event, now).await.expect("handled");
        assert_eq!(all.parked, vec!["first", "second"]);
    }
}
