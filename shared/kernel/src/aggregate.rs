//! The command path every event-sourced aggregate shares: load the stream,
//! decide, append with [`ExpectedVersion`] (and an idempotency receipt, and
//! reservations), retry a bounded number of times on a concurrency conflict.
//!
//! An aggregate is two pure functions over its own types ([`Aggregate`]);
//! [`AggregateService`] is the loop around them, with optional snapshots
//! for long streams. Customers, carts and orders use it.

use crate::clock::Clock;
use crate::event::{envelopes, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{
    AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, ReservationChange, Snapshot, StoreError,
};
use chrono::{DateTime, Utc};
use std::borrow::Borrow;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// What `decide` gets besides the state and the command.
#[derive(Debug, Clone)]
pub struct DecideContext<'a, I> {
    /// The aggregate's id (the id a new one gets, for a creating command).
    pub id: &'a str,
    /// The service clock's now at this attempt.
    pub now: DateTime<Utc>,
    /// Anything decided outside (generated ids, tokens ...).
    pub input: &'a I,
}

/// An event-sourced aggregate: its types and its two pure functions.
pub trait Aggregate: Send + Sync + 'static {
    type State: Clone + Send + Sync;
    type Command: Send + Sync;
    type Event: DomainEvent + Send + Sync;
    type Error: std::error::Error + Clone + Send + Sync;
    type Input: Send + Sync;

    /// The stream of the aggregate `id`.
    fn stream_id(id: &str) -> String;
    /// The customer every event of the state is about (the envelope's `customer_id`).
    fn customer_id(state: &Self::State) -> Option<&str>;
    /// The state's stream version.
    fn version(state: &Self::State) -> u64;
    /// The refusal for a command on an aggregate that does not exist.
    fn not_found() -> Self::Error;

    fn decide(
        state: Option<&Self::State>,
        command: &Self::Command,
        ctx: &DecideContext<'_, Self::Input>,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    fn evolve(state: Option<Self::State>, event: &Self::Event, at: DateTime<Utc>, version: u64) -> Option<Self::State>;

    /// Uniqueness claims written in the same append as `events` (none by
    /// default); `state` is the aggregate before them.
    fn reservations(_id: &str, _state: Option<&Self::State>, _events: &[Self::Event]) -> Vec<ReservationChange> {
        Vec::new()
    }

    /// The shape of the state kept in snapshots (bump it when the state
    /// changes); `None`, the default: never snapshot, always fold the stream.
    const SNAPSHOT_SCHEMA: Option<u32> = None;

    /// The state as a snapshot (only called when [`Self::SNAPSHOT_SCHEMA`] is set).
    fn to_snapshot(_state: &Self::State) -> Option<serde_json::Value> {
        None
    }

    /// A state back from a snapshot of [`Self::SNAPSHOT_SCHEMA`]; `None` if unreadable.
    fn from_snapshot(_value: serde_json::Value) -> Option<Self::State> {
        None
    }

    /// Folds one stored envelope of the stream into the state. The default
    /// reads it as [`Self::Event`] and [`Self::evolve`]s; an aggregate whose
    /// stream also holds events of other types (retention's summaries on a
    /// customer's activity stream) reads them here.
    fn evolve_stored(
        state: Option<Self::State>,
        envelope: &EventEnvelope,
    ) -> Result<Option<Self::State>, EventCodecError> {
        let event = Self::Event::from_envelope(envelope)?;
        Ok(Self::evolve(state, &event, envelope.occurred_at, envelope.version))
    }

    /// Completes the envelope a decided `event` is stored in, after the
    /// service made it from the command's metadata (nothing by default): an
    /// aggregate whose events have a derived id or a time of their own sets
    /// them here.
    fn stamp(_event: &Self::Event, _envelope: &mut EventEnvelope) {}
}

/// Builds the answer stored in the receipt (status, JSON body) from the new
/// state and the events just written.
pub type ResponseBuilder<'a, S> = &'a (dyn Fn(&S, &[EventEnvelope]) -> (u16, serde_json::Value) + Send + Sync);

/// What executing a command did.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed<S> {
    Applied {
        state: Box<S>,
        events: Vec<EventEnvelope>,
        status: u16,
        body: serde_json::Value,
    },
    /// The same request was applied before; this is its first answer.
    Replayed { status: u16, body: serde_json::Value },
}

/// Why a command was not applied. Nothing was written in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError<E: std::error::Error> {
    #[error(transparent)]
    Rejected(E),
    /// The idempotency key was first used for a different request (422).
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// Other writers kept winning (409, retry later).
    #[error("the stream kept changing; gave up after {attempts} attempts")]
    Contended { attempts: u32 },
    /// A reservation of [`Aggregate::reservations`] is held by another owner.
    #[error("reservation {key} is held by another owner")]
    ReservationTaken { key: String },
    #[error("command too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
}

impl<E: std::error::Error> AggregateError<E> {
    /// Worth retrying the same request later?
    pub fn is_retryable(&self) -> bool {
        match self {
            AggregateError::Store(e) => e.is_retryable(),
            AggregateError::Contended { .. } => true,
            _ => false,
        }
    }
}

/// The load → decide → append → retry loop of one aggregate type, over a
/// shared store (`S`, the default) or a borrowed one
/// ([`AggregateService::borrowing`], for jobs handed a `&dyn EventStore`).
pub struct AggregateService<A: Aggregate, S = Arc<dyn EventStore>> {
    store: S,
    clock: Arc<dyn Clock>,
    max_attempts: u32,
    snapshot_every: u64,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> AggregateService<A> {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        AggregateService {
            store,
            clock,
            max_attempts: 8,
            snapshot_every: 100,
            _aggregate: PhantomData,
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }
}

impl<'s, A: Aggregate> AggregateService<A, &'s (dyn EventStore + 's)> {
    /// The same command path over a borrowed store.
    pub fn borrowing(store: &'s (dyn EventStore + 's), clock: Arc<dyn Clock>) -> Self {
        AggregateService {
            store,
            clock,
            max_attempts: 8,
            snapshot_every: 100,
            _aggregate: PhantomData,
        }
    }
}

impl<'s, A: Aggregate, S: Deref<Target = dyn EventStore + 's> + Send + Sync> AggregateService<A, S> {
    /// Snapshot a stream each time it passes a multiple of `every` events
    /// (for aggregates with a [`Aggregate::SNAPSHOT_SCHEMA`]).
    pub fn with_snapshot_every(mut self, every: u64) -> Self {
        self.snapshot_every = every.max(1);
        self
    }

    /// At most this many load-decide-append rounds (at least one).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current state of `id`, or `None` if it does not exist: the newest
    /// snapshot of this aggregate's schema and the events after it, or else
    /// the whole stream folded.
    pub async fn load(&self, id: &str) -> Result<Option<A::State>, AggregateError<A::Error>> {
        let stream = A::stream_id(id);
        let loaded = self.store.load(&stream).await?;
        let (mut state, events) = match loaded.snapshot {
            Some(s) if Some(s.state_schema) == A::SNAPSHOT_SCHEMA => match A::from_snapshot(s.state) {
                Some(state) => (Some(state), loaded.events),
                None => {
                    tracing::warn!(stream = %stream, "unreadable snapshot, folding the whole stream");
                    (None, self.store.read_stream(&stream, 0, usize::MAX).await?)
                }
            },
            Some(_) => (None, self.store.read_stream(&stream, 0, usize::MAX).await?),
            None => (None, loaded.events),
        };
        for envelope in &events {
            state = A::evolve_stored(state, envelope)?;
        }
        Ok(state)
    }

    /// The state of `id` folded from its whole stream (snapshots unused),
    /// and the stream's envelopes as stored: for a decision that needs them
    /// too (their ids, or the latest one to chain correlation and causation
    /// to). `None` and no envelopes when the stream does not exist.
    pub async fn load_stream(
        &self,
        id: &str,
    ) -> Result<(Option<A::State>, Vec<EventEnvelope>), AggregateError<A::Error>> {
        let events = self.store.read_stream(&A::stream_id(id), 0, usize::MAX).await?;
        let mut state = None;
        for envelope in &events {
            state = A::evolve_stored(state, envelope)?;
        }
        Ok((state, events))
    }

    /// Runs `command` on `id`: a repeated idempotent request is answered from
    /// its receipt; a conflicting write is retried by loading and deciding again.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        input: &A::Input,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyKey>,
        respond: ResponseBuilder<'_, A::State>,
    ) -> Result<Executed<A::State>, AggregateError<A::Error>> {
        if let Some(key) = idempotency {
            if let Some(receipt) = self.store.receipt(&key.receipt_key).await? {
                return replay(&receipt, key);
            }
        }
        self.attempts(
            id,
            command,
            || std::future::ready(Ok(input)),
            meta,
            idempotency,
            respond,
        )
        .await
    }

    /// Runs `command` on `id` with its input read again before every attempt
    /// (`read_input`): for outside facts that may have moved while another
    /// writer won the stream (a customer's metrics, say). No idempotency
    /// receipt.
    pub async fn execute_reading<I, F, Fut>(
        &self,
        id: &str,
        command: &A::Command,
        read_input: F,
        meta: &CommandMeta,
        respond: ResponseBuilder<'_, A::State>,
    ) -> Result<Executed<A::State>, AggregateError<A::Error>>
    where
        I: Borrow<A::Input>,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<I, StoreError>>,
    {
        self.attempts(id, command, read_input, meta, None, respond).await
    }

    /// The retry loop: read the input, load, one round; again on a conflict.
    async fn attempts<I, F, Fut>(
        &self,
        id: &str,
        command: &A::Command,
        read_input: F,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyKey>,
        respond: ResponseBuilder<'_, A::State>,
    ) -> Result<Executed<A::State>, AggregateError<A::Error>>
    where
        I: Borrow<A::Input>,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<I, StoreError>>,
    {
        let executed = self
            .retrying(|| async {
                let input = read_input().await?;
                let state = self.load(id).await?;
                self.try_once(id, state, command, input.borrow(), meta, idempotency, respond)
                    .await
            })
            .await?;
        executed.ok_or(AggregateError::Contended {
            attempts: self.max_attempts,
        })
    }

    /// The one retry loop of the command path, for [`Self::execute`] and
    /// for a caller whose round reads more than the stream before it
    /// decides (the journey engine: the campaign, a lookback, a heal):
    /// `round` loads, decides and appends (with [`Self::try_once`]);
    /// `Ok(None)` from it means another writer changed the stream first and
    /// nothing was written, so it runs again, at most the service's
    /// attempts. `Ok(None)` overall: every attempt lost.
    pub async fn retrying<T, E, F, Fut>(&self, mut round: F) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        for _attempt in 0..self.max_attempts {
            if let Some(done) = round().await? {
                return Ok(Some(done));
            }
        }
        Ok(None)
    }

    /// One round on an already loaded `state`: `None` when another writer
    /// changed the stream in between (nothing written).
    #[allow(clippy::too_many_arguments)]
    pub async fn try_once(
        &self,
        id: &str,
        state: Option<A::State>,
        command: &A::Command,
        input: &A::Input,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyKey>,
        respond: ResponseBuilder<'_, A::State>,
    ) -> Result<Option<Executed<A::State>>, AggregateError<A::Error>> {
        let now = self.clock.now();
        let ctx = DecideContext { id, now, input };
        let decided = A::decide(state.as_ref(), command, &ctx).map_err(AggregateError::Rejected)?;
        let current_version = state.as_ref().map_or(0, A::version);
        let expected = match state {
            None => ExpectedVersion::NoStream,
            Some(_) => ExpectedVersion::Exactly(current_version),
        };
        let reservations = A::reservations(id, state.as_ref(), &decided);
        let mut new_state = state;
        for (i, event) in decided.iter().enumerate() {
            new_state = A::evolve(new_state, event, now, current_version + 1 + i as u64);
        }
        let Some(new_state) = new_state else {
            return Err(AggregateError::Rejected(A::not_found()));
        };
        let stream = A::stream_id(id);
        let mut stored = envelopes(&stream, A::customer_id(&new_state), &decided, meta, now)?;
        for (i, envelope) in stored.iter_mut().enumerate() {
            envelope.version = current_version + 1 + i as u64;
        }
        for (event, envelope) in decided.iter().zip(stored.iter_mut()) {
            A::stamp(event, envelope);
        }
        let (status, body) = respond(&new_state, &stored);
        let receipt = idempotency.map(|key| CommandReceipt {
            key: key.receipt_key.clone(),
            request_hash: key.request_hash.clone(),
            status,
            body: body.clone(),
            recorded_at: now,
        });
        // Nothing changes and nothing to remember: nothing to write.
        if stored.is_empty() && receipt.is_none() {
            return Ok(Some(Executed::Applied {
                state: Box::new(new_state),
                events: stored,
                status,
                body,
            }));
        }
        let request = AppendRequest {
            stream_id: stream.clone(),
            expected,
            events: stored,
            reservations,
            receipt,
        };
        match self.store.append(request).await {
            Ok(appended) => {
                self.maybe_snapshot(&stream, current_version, &new_state).await;
                Ok(Some(Executed::Applied {
                    state: Box::new(new_state),
                    events: appended.events,
                    status,
                    body,
                }))
            }
            Err(AppendError::Conflict { .. }) => Ok(None),
            Err(AppendError::DuplicateCommand(receipt)) => match idempotency {
                Some(key) => replay(&receipt, key).map(Some),
                None => Err(StoreError::Failed("unexpected duplicate command".into()).into()),
            },
            Err(AppendError::ReservationTaken { key }) => Err(AggregateError::ReservationTaken { key }),
            Err(AppendError::TooLarge(reason)) => Err(AggregateError::TooLarge(reason)),
            Err(AppendError::Store(e)) => Err(e.into()),
        }
    }
}

impl<'s, A: Aggregate, S: Deref<Target = dyn EventStore + 's> + Send + Sync> AggregateService<A, S> {
    /// Saves a snapshot when the stream passed a multiple of `snapshot_every`
    /// (from `before` to the state's version). A failure only makes loading
    /// slower: it is logged, not returned.
    async fn maybe_snapshot(&self, stream: &str, before: u64, state: &A::State) {
        let Some(schema) = A::SNAPSHOT_SCHEMA else {
            return;
        };
        let version = A::version(state);
        if before / self.snapshot_every == version / self.snapshot_every {
            return;
        }
        let Some(value) = A::to_snapshot(state) else {
            tracing::warn!(stream, "could not serialise snapshot");
            return;
        };
        let snapshot = Snapshot {
            stream_id: stream.to_string(),
            version,
            state_schema: schema,
            state: value,
        };
        if let Err(e) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(stream, error = %e, "could not save snapshot");
        }
    }
}

fn replay<S, E: std::error::Error>(
    receipt: &CommandReceipt,
    key: &IdempotencyKey,
) -> Result<Executed<S>, AggregateError<E>> {
    if receipt.request_hash != key.request_hash {
        return Err(AggregateError::IdempotencyKeyReused);
    }
    Ok(Executed::Replayed {
        status: receipt.status,
        body: receipt.body.clone(),
    })
}
