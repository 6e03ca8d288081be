//! Test support: an in-memory event store (for domain tests only; adapters are
//! tested against real SQLite and DynamoDB) and the given/when/then test of
//! any aggregate ([`AggregateScenario`]).

use crate::aggregate::{Aggregate, DecideContext};
use crate::event::EventEnvelope;
use crate::ports::*;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A small deterministic generator (xorshift64*), so failures of
/// randomised tests reproduce from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A fixed instant for domain tests.
pub fn test_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Given these events, when this command, then these events or this error:
/// the given/when/then test of any [`Aggregate`]'s pure functions, in the
/// style of cqrs-es's `TestFramework`. Nothing is stored: the given events
/// are folded with [`Aggregate::evolve`] (the `n`th at [`test_time`] plus
/// `n - 1` minutes, version `n`), and the command is decided with
/// [`Aggregate::decide`] at one minute after the last of them.
///
/// ```ignore
/// AggregateScenario::<CustomerAggregate>::new("c1", input)
///     .given(&registered)
///     .when(CustomerCommand::VerifyEmail { token })
///     .then_expect_events(&[CustomerEvent::EmailVerified { email }]);
/// ```
pub struct AggregateScenario<A: Aggregate> {
    id: String,
    input: A::Input,
    state: Option<A::State>,
    now: DateTime<Utc>,
}

impl<A: Aggregate> AggregateScenario<A> {
    /// An aggregate `id` that does not exist yet, decided with `input` (what
    /// the service decides outside: generated ids, tokens).
    pub fn new(id: &str, input: A::Input) -> Self {
        AggregateScenario {
            id: id.to_string(),
            input,
            state: None,
            now: test_time(),
        }
    }

    /// The same aggregate after `events` (on top of any given before).
    pub fn given(mut self, events: &[A::Event]) -> Self {
        let first = self.state.as_ref().map_or(0, A::version);
        for (i, event) in events.iter().enumerate() {
            let version = first + i as u64 + 1;
            let at = test_time() + chrono::Duration::minutes(version as i64 - 1);
            self.state = A::evolve(self.state.take(), event, at, version);
        }
        self.now = test_time() + chrono::Duration::minutes(self.state.as_ref().map_or(0, A::version) as i64);
        self
    }

    /// Time passes: the command is decided `by` later than it would be.
    pub fn later_by(mut self, by: chrono::Duration) -> Self {
        self.now += by;
        self
    }

    /// The state the given events fold to (`None`: the aggregate does not exist).
    pub fn state(&self) -> Option<&A::State> {
        self.state.as_ref()
    }

    /// Decides `command` against the given state.
    pub fn when(&self, command: A::Command) -> Then<A> {
        let ctx = DecideContext {
            id: &self.id,
            now: self.now,
            input: &self.input,
        };
        Then {
            result: A::decide(self.state.as_ref(), &command, &ctx),
        }
    }
}

/// What a command decided: assert on it, or take it.
#[must_use = "a decision is only tested once asserted on"]
pub struct Then<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Exactly these events, in this order.
    pub fn then_expect_events(self, expected: &[A::Event])
    where
        A::Event: PartialEq + std::fmt::Debug,
    {
        match self.result {
            Ok(events) => assert_eq!(events, expected),
            Err(e) => panic!("expected events {expected:?}, the command was refused: {e}"),
        }
    }

    /// Refused with exactly this error.
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq + std::fmt::Debug,
        A::Event: std::fmt::Debug,
    {
        match self.result {
            Ok(events) => panic!("expected the refusal {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// The events (panics with the refusal if there was one).
    pub fn events(self) -> Vec<A::Event> {
        self.result
            .unwrap_or_else(|e| panic!("expected events, the command was refused: {e}"))
    }

    /// The refusal (panics with the events if there was none).
    pub fn error(self) -> A::Error
    where
        A::Event: std::fmt::Debug,
    {
        match self.result {
            Ok(events) => panic!("expected a refusal, got events {events:?}"),
            Err(e) => e,
        }
    }

    /// The decision as it is, for assertions of its own.
    pub fn inspect_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<String, Vec<EventEnvelope>>,
    order: Vec<(String, u64)>,
    reservations: HashMap<String, String>,
    receipts: HashMap<String, CommandReceipt>,
    snapshots: HashMap<String, Snapshot>,
}

/// An event store in a `Mutex`: for domain and service unit tests.
#[derive(Default)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
}

impl InMemoryEventStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Failed("poisoned".into()))
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let inner = self.lock()?;
        let events = inner.streams.get(stream_id).cloned().unwrap_or_default();
        let version = events.last().map_or(0, |e| e.version);
        let snapshot = inner.snapshots.get(stream_id).cloned();
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        Ok(LoadedStream {
            snapshot,
            events: events.into_iter().filter(|e| e.version > after).collect(),
            version,
        })
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .streams
            .get(stream_id)
            .map(|s| s.iter().filter(|e| e.version > after).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.append_with_receipts(request, Vec::new()).await
    }

    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        crate::ports::check_receipts(&request, &receipts)?;
        let mut inner = self.lock()?;
        // The newest event's version (retention may have deleted older ones).
        let current = inner
            .streams
            .get(&request.stream_id)
            .and_then(|s| s.last())
            .map_or(0, |e| e.version);
        let base = match request.expected {
            ExpectedVersion::Any => current,
            ExpectedVersion::NoStream if current == 0 => 0,
            ExpectedVersion::Exactly(n) if n == current => n,
            expected if !request.events.is_empty() => {
                return Err(AppendError::Conflict {
                    stream_id: request.stream_id,
                    expected,
                    actual: Some(current),
                })
            }
            _ => current,
        };
        for r in request.receipt.iter().chain(&receipts) {
            if let Some(existing) = inner.receipts.get(&r.key) {
                return Err(AppendError::DuplicateCommand(Box::new(existing.clone())));
            }
        }
        for change in &request.reservations {
            let holder = inner.reservations.get(change.key());
            let ok = match change {
                ReservationChange::Claim { owner, .. } => holder.is_none_or(|h| h == owner),
                ReservationChange::Release { owner, .. } => holder == Some(owner),
            };
            if !ok {
                return Err(AppendError::ReservationTaken {
                    key: change.key().to_string(),
                });
            }
        }
        let mut stored = request.events;
        for (i, e) in stored.iter_mut().enumerate() {
            e.version = base + 1 + i as u64;
            e.stream_id = request.stream_id.clone();
        }
        for change in request.reservations {
            match change {
                ReservationChange::Claim { key, owner } => {
                    inner.reservations.insert(key, owner);
                }
                ReservationChange::Release { key, .. } => {
                    inner.reservations.remove(&key);
                }
            }
        }
        for r in request.receipt.into_iter().chain(receipts) {
            inner.receipts.insert(r.key.clone(), r);
        }
        for e in &stored {
            inner.order.push((e.stream_id.clone(), e.version));
        }
        inner
            .streams
            .entry(request.stream_id)
            .or_default()
            .extend(stored.iter().cloned());
        let version = base + stored.len() as u64;
        Ok(Appended {
            events: stored,
            version,
        })
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(self.lock()?.receipts.get(key).cloned())
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.reservations.get(key).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.lock()?.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        Ok(())
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let inner = self.lock()?;
        let start = match after {
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| StoreError::Failed(format!("bad cursor {c}")))?,
            None => 0,
        };
        let slice: Vec<_> = inner.order.iter().skip(start).take(limit).collect();
        let events = slice
            .iter()
            .filter_map(|(s, v)| {
                inner
                    .streams
                    .get(s)
                    .and_then(|es| es.iter().find(|e| e.version == *v))
                    .cloned()
            })
            .collect::<Vec<_>>();
        let end = start + slice.len();
        Ok(EventPage {
            next: (end < inner.order.len()).then(|| end.to_string()),
            events,
        })
    }
}

#[async_trait]
impl EventExpiry for InMemoryEventStore {
    async fn streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .streams
            .iter()
            .filter(|(id, events)| {
                !events.is_empty() && id.starts_with(prefix) && after.is_none_or(|a| id.as_str() > a)
            })
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect())
    }

    async fn delete_events(&self, stream_id: &str, versions: &[u64]) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        let Some(events) = inner.streams.get_mut(stream_id) else {
            return Ok(0);
        };
        let newest = events.last().map_or(0, |e| e.version);
        if versions.contains(&newest) {
            return Err(StoreError::Failed(format!(
                "{stream_id}: the newest event (version {newest}) is never deleted"
            )));
        }
        let before = events.len();
        events.retain(|e| !versions.contains(&e.version));
        Ok((before - events.len()) as u64)
    }

    async fn delete_stream(&self, stream_id: &str) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        inner.snapshots.remove(stream_id);
        Ok(inner.streams.remove(stream_id).map_or(0, |e| e.len() as u64))
    }
}

pub use crate::memory::InMemoryReadModels;

/// A scheduler in a `Mutex`: pending timers by name, for domain and service
/// unit tests. `fail_with` makes every call fail until cleared.
#[derive(Default)]
pub struct InMemoryScheduler {
    timers: Mutex<HashMap<String, crate::scheduler::TimerPayload>>,
    failure: Mutex<Option<crate::scheduler::SchedulerError>>,
}

impl InMemoryScheduler {
    /// Every call fails with `error` (or, with `None`, works again).
    pub fn fail_with(&self, error: Option<crate::scheduler::SchedulerError>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Every pending timer.
    pub fn pending(&self) -> Vec<crate::scheduler::TimerPayload> {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn check(&self) -> Result<(), crate::scheduler::SchedulerError> {
        match self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl crate::scheduler::Scheduler for InMemoryScheduler {
    async fn schedule(&self, timer: crate::scheduler::TimerPayload) -> Result<(), crate::scheduler::SchedulerError> {
        self.check()?;
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(timer.name.clone(), timer);
        Ok(())
    }

    async fn cancel(&self, name: &str) -> Result<(), crate::scheduler::SchedulerError> {
        self.check()?;
        self.timers.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(())
    }

    async fn get(
        &self,
        name: &str,
    ) -> Result<Option<crate::scheduler::TimerPayload>, crate::scheduler::SchedulerError> {
        self.check()?;
        Ok(self.timers.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned())
    }
}

/// Dead letters collected in memory (domain tests).
#[derive(Default)]
pub struct InMemoryDeadLetters {
    pub letters: Mutex<Vec<DeadLetter>>,
}

#[async_trait]
impl DeadLetterQueue for InMemoryDeadLetters {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.letters
            .lock()
            .map_err(|_| StoreError::Failed("poisoned".into()))?
            .push(letter);
        Ok(())
    }
}

/// A dead letter of `consumer` for `payload`, failed now after one attempt.
pub fn dead_letter(consumer: &str, reason: &str, payload: serde_json::Value) -> crate::ports::DeadLetter {
    crate::ports::DeadLetter {
        consumer: consumer.to_string(),
        reason: reason.to_string(),
        payload,
        failed_at: chrono::Utc::now(),
        attempts: 1,
    }
}

/// An event of any type, ready to append (the store assigns the version).
pub fn raw_event(stream_id: &str, event_type: &str, data: serde_json::Value) -> EventEnvelope {
    let id = uuid::Uuid::now_v7();
    EventEnvelope {
        event_id: id,
        stream_id: stream_id.to_string(),
        version: 0,
        event_type: event_type.to_string(),
        schema_version: 1,
        customer_id: None,
        occurred_at: test_time(),
        recorded_at: test_time(),
        causation_id: None,
        correlation_id: id,
        actor: "system:test".into(),
        data,
    }
}

/// A `CustomerRegistered` event of customer `customer` (stream
/// `customer-{customer}`) carrying `data`, ready to append.
pub fn registered_event(customer: &str, data: serde_json::Value) -> EventEnvelope {
    EventEnvelope {
        customer_id: Some(customer.to_string()),
        ..raw_event(&format!("customer-{customer}"), "CustomerRegistered", data)
    }
}

/// Test customer `n`'s id: a fixed UUID, the same on every run.
pub fn customer_id(n: usize) -> String {
    format!("00000000-0000-7000-8000-{n:012}")
}

/// The identifier secret of tests: keyed hashes (email reservations, the
/// email and name indexes, user ids; decision 0046) under a fixed secret.
pub fn identifiers() -> crate::privacy::IdentifierHasher {
    crate::privacy::IdentifierHasher::new(b"crm tests: identifier secret")
}

/// A projection that refuses every event it is given (a poison event to the
/// consumer, parked by its group), named `0`.
pub struct RefusingProjection(pub &'static str);

#[async_trait]
impl crate::consumer::Projection for RefusingProjection {
    fn name(&self) -> &'static str {
        self.0
    }

    fn handles(&self, _: &str) -> bool {
        true
    }

    async fn project(
        &self,
        _: &EventEnvelope,
        _: &dyn ReadModelStore,
    ) -> Result<Vec<ReadOp>, crate::consumer::ProjectionError> {
        Err(crate::consumer::ProjectionError::Invalid("refused".into()))
    }
}
