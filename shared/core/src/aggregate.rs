//! The command path every event-sourced aggregate shares: load the stream,
//! decide, append with [`ExpectedVersion`] (and an idempotency receipt, and
//! reservations), retry a bounded number of times on a concurrency conflict.
//!
//! An aggregate is two pure functions over its own types ([`Aggregate`]);
//! [`AggregateService`] is the loop around them, with optional snapshots
//! for long streams. Customers, carts and orders use it.

use crate::clock::Clock;
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
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

impl CommandMeta {
    /// A command caused by the stored event `cause`: it carries on the
    /// event's correlation id and names the event as its causation, so a
    /// chain can be walked back to its trigger.
    pub fn caused_by(cause: &EventEnvelope, actor: Actor) -> Self {
        CommandMeta {
            command_id: uuid::Uuid::now_v7(),
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.event_id),
            actor,
        }
    }
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
        for _attempt in 0..self.max_attempts {
            let input = read_input().await?;
            let state = self.load(id).await?;
            match self
                .try_once(id, state, command, input.borrow(), meta, idempotency, respond)
                .await?
            {
                Some(executed) => return Ok(executed),
                None => continue,
            }
        }
        Err(AggregateError::Contended {
            attempts: self.max_attempts,
        })
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

#[cfg(test)]
mod tests {
    //! The command loop over the cart aggregate and an in-memory store that
    //! lets another writer win the first appends.

    use super::*;
    use crate::clock::VirtualClock;
    use crate::commerce::{AddItem, Cart, CartAggregate, CartCommand, CartError, CartEvent, CreateCart};
    use crate::event::{envelopes, Actor};
    use crate::ports::{Appended, EventPage, LoadedStream, Snapshot};
    use crate::testing::{test_time, InMemoryEventStore};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Before each of the first `races` appends, another writer adds an item.
    struct Racing {
        inner: InMemoryEventStore,
        races: AtomicU32,
    }

    #[async_trait]
    impl EventStore for Racing {
        async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
            self.inner.load(stream_id).await
        }
        async fn read_stream(
            &self,
            stream_id: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<EventEnvelope>, StoreError> {
            self.inner.read_stream(stream_id, after, limit).await
        }
        async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
            if self.races.load(Ordering::SeqCst) > 0 {
                self.races.fetch_sub(1, Ordering::SeqCst);
                let other = CartEvent::ItemAddedToCart {
                    product_id: "other".into(),
                    name: "Other".into(),
                    quantity: 1,
                    unit_price_minor: 1,
                };
                let meta = CommandMeta::new(Actor::api("other"));
                let events = envelopes(&request.stream_id, Some("c1"), &[other], &meta, test_time())
                    .map_err(|e| StoreError::Failed(e.to_string()))?;
                self.inner
                    .append(AppendRequest {
                        stream_id: request.stream_id.clone(),
                        expected: ExpectedVersion::Any,
                        events,
                        reservations: Vec::new(),
                        receipt: None,
                    })
                    .await?;
            }
            self.inner.append(request).await
        }
        async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
            self.inner.receipt(key).await
        }
        async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
            self.inner.reservation_owner(key).await
        }
        async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
            self.inner.save_snapshot(snapshot).await
        }
        async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
            self.inner.read_all(after, limit).await
        }
    }

    fn service(races: u32, attempts: u32) -> (Arc<Racing>, AggregateService<CartAggregate>) {
        let store = Arc::new(Racing {
            inner: InMemoryEventStore::default(),
            races: AtomicU32::new(0),
        });
        let clock = Arc::new(VirtualClock::starting_at(test_time()));
        let service = AggregateService::new(store.clone(), clock).with_max_attempts(attempts);
        store.races.store(races, Ordering::SeqCst);
        (store, service)
    }

    fn respond(c: &Cart, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
        (200, serde_json::json!({ "lines": c.items.len() }))
    }

    async fn create(service: &AggregateService<CartAggregate>) {
        let create = CartCommand::Create(CreateCart {
            customer_id: "c1".into(),
            currency: "EUR".into(),
        });
        let meta = CommandMeta::new(Actor::api("t"));
        service
            .execute("k1", &create, &(), &meta, None, &respond)
            .await
            .expect("created");
    }

    fn add() -> CartCommand {
        CartCommand::AddItem(AddItem {
            product_id: "mine".into(),
            name: "Mine".into(),
            quantity: 1,
            unit_price_minor: 100,
        })
    }

    #[tokio::test]
    async fn a_lost_race_is_decided_again_on_the_new_state() {
        let (store, service) = service(0, 3);
        create(&service).await;
        store.races.store(2, Ordering::SeqCst);
        let meta = CommandMeta::new(Actor::api("t"));
        let done = service
            .execute("k1", &add(), &(), &meta, None, &respond)
            .await
            .expect("applied on the third attempt");
        let Executed::Applied {
            state, events, body, ..
        } = done
        else {
            panic!("applied")
        };
        assert_eq!(state.version, 4, "created, two other writes, then ours");
        assert_eq!(events[0].version, 4);
        assert_eq!(body["lines"], 2, "decided on the state with the other item");
    }

    #[tokio::test]
    async fn an_input_read_per_attempt_is_read_again_after_a_lost_race() {
        let (store, service) = service(0, 3);
        create(&service).await;
        store.races.store(2, Ordering::SeqCst);
        let reads = AtomicU32::new(0);
        let read_input = || {
            reads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<(), StoreError>(()))
        };
        let meta = CommandMeta::new(Actor::api("t"));
        let done = service
            .execute_reading("k1", &add(), read_input, &meta, &respond)
            .await
            .expect("applied on the third attempt");
        assert!(matches!(done, Executed::Applied { ref events, .. } if events[0].version == 4));
        assert_eq!(reads.load(Ordering::SeqCst), 3, "one read per attempt");
        // A failed read is the command's failure; nothing is written.
        let failed = service
            .execute_reading(
                "k1",
                &add(),
                || std::future::ready(Err::<(), _>(StoreError::Unavailable("metrics".into()))),
                &meta,
                &respond,
            )
            .await;
        assert_eq!(
            failed,
            Err(AggregateError::Store(StoreError::Unavailable("metrics".into())))
        );
        // The same path over a borrowed store.
        let clock = Arc::new(VirtualClock::starting_at(test_time()));
        let borrowed = AggregateService::<CartAggregate, _>::borrowing(store.as_ref(), clock);
        assert_eq!(borrowed.load("k1").await.expect("load").map(|c| c.version), Some(4));
    }

    #[tokio::test]
    async fn it_gives_up_after_the_bounded_attempts_and_writes_nothing() {
        let (store, service) = service(0, 3);
        create(&service).await;
        store.races.store(10, Ordering::SeqCst);
        let meta = CommandMeta::new(Actor::api("t"));
        let err = service.execute("k1", &add(), &(), &meta, None, &respond).await;
        assert_eq!(err, Err(AggregateError::Contended { attempts: 3 }));
        let state = service.load("k1").await.expect("load").expect("cart");
        assert!(state.item("mine").is_none(), "ours was never written");
    }

    #[tokio::test]
    async fn a_receipt_answers_a_repeat_and_refuses_a_reused_key() {
        let (_store, service) = service(0, 3);
        create(&service).await;
        let meta = CommandMeta::new(Actor::api("t"));
        let key = IdempotencyKey::new("p", "k", "POST", "/carts/k1/items", b"a");
        let first = service.execute("k1", &add(), &(), &meta, Some(&key), &respond).await;
        assert!(matches!(first, Ok(Executed::Applied { .. })));
        let again = service.execute("k1", &add(), &(), &meta, Some(&key), &respond).await;
        assert_eq!(
            again,
            Ok(Executed::Replayed {
                status: 200,
                body: serde_json::json!({ "lines": 1 })
            })
        );
        let other = IdempotencyKey::new("p", "k", "POST", "/carts/k1/items", b"b");
        let reused = service.execute("k1", &add(), &(), &meta, Some(&other), &respond).await;
        assert_eq!(reused, Err(AggregateError::IdempotencyKeyReused));
        assert_eq!(service.load("k1").await.expect("load").expect("cart").version, 2);
        // Refusals pass through as they are.
        let missing = service.execute("nope", &add(), &(), &meta, None, &respond).await;
        assert_eq!(missing, Err(AggregateError::Rejected(CartError::NotFound)));
    }

    /// A counter that snapshots: `Add(n)` appends `Added { n }`.
    struct Counter;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Count {
        total: u64,
        version: u64,
        from_snapshot: bool,
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum CounterEvent {
        Added { n: u64 },
    }

    impl crate::event::DomainEvent for CounterEvent {
        fn schema_version(_: &str) -> u32 {
            1
        }
    }

    impl Aggregate for Counter {
        type State = Count;
        type Command = u64;
        type Event = CounterEvent;
        type Error = CartError;
        type Input = ();
        const SNAPSHOT_SCHEMA: Option<u32> = Some(7);
        fn stream_id(id: &str) -> String {
            format!("counter-{id}")
        }
        fn customer_id(_: &Count) -> Option<&str> {
            None
        }
        fn version(state: &Count) -> u64 {
            state.version
        }
        fn not_found() -> CartError {
            CartError::NotFound
        }
        fn decide(_: Option<&Count>, n: &u64, _: &DecideContext<'_, ()>) -> Result<Vec<CounterEvent>, CartError> {
            Ok(if *n == 0 {
                vec![]
            } else {
                vec![CounterEvent::Added { n: *n }]
            })
        }
        fn evolve(state: Option<Count>, event: &CounterEvent, _: DateTime<Utc>, version: u64) -> Option<Count> {
            let CounterEvent::Added { n } = event;
            let mut c = state.unwrap_or(Count {
                total: 0,
                version: 0,
                from_snapshot: false,
            });
            c.total += n;
            c.version = version;
            Some(c)
        }
        fn to_snapshot(state: &Count) -> Option<serde_json::Value> {
            let mut marked = state.clone();
            marked.from_snapshot = true;
            serde_json::to_value(marked).ok()
        }
        fn from_snapshot(value: serde_json::Value) -> Option<Count> {
            serde_json::from_value(value).ok()
        }
    }

    #[tokio::test]
    async fn snapshots_of_the_schema_bound_loading_and_others_are_ignored() {
        let store = Arc::new(InMemoryEventStore::default());
        let clock = Arc::new(VirtualClock::starting_at(test_time()));
        let service = AggregateService::<Counter>::new(store.clone(), clock).with_snapshot_every(2);
        let meta = CommandMeta::new(Actor::api("t"));
        let respond = |_: &Count, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        for n in 1..=3 {
            service
                .execute("a", &n, &(), &meta, None, &respond)
                .await
                .expect("added");
        }
        // A no-op writes nothing.
        let noop = service
            .execute("a", &0, &(), &meta, None, &respond)
            .await
            .expect("no-op");
        assert!(matches!(noop, Executed::Applied { events, .. } if events.is_empty()));
        let loaded = service.load("a").await.expect("load").expect("count");
        assert_eq!((loaded.total, loaded.version, loaded.from_snapshot), (6, 3, true));
        assert_eq!(
            store
                .load("counter-a")
                .await
                .expect("stream")
                .snapshot
                .map(|s| s.version),
            Some(2)
        );
        // A snapshot of another schema (or unreadable) is ignored: the stream is folded.
        for (schema, state) in [
            (
                8,
                serde_json::json!({ "total": 99, "version": 3, "from_snapshot": true }),
            ),
            (7, serde_json::json!("junk")),
        ] {
            store
                .save_snapshot(Snapshot {
                    stream_id: "counter-a".into(),
                    version: 3,
                    state_schema: schema,
                    state,
                })
                .await
                .expect("saved");
            let loaded = service.load("a").await.expect("load").expect("count");
            assert_eq!((loaded.total, loaded.from_snapshot), (6, false), "schema {schema}");
        }
    }
}
