//! The journey engine over the in-memory stores (domain tests): one instance
//! per trigger however often it is delivered, waits on timers, exits mid-wait,
//! instances keep their campaign version.
//!
//! The fixtures (the `World`, its stores with failure and read-count
//! handles) are here; the tests are grouped by what they prove:
//! - `starts`: entry, dedupe, campaign versions, exits by deactivation, and
//!   what an event no campaign acts on reads,
//! - `pause`: pausing exits running instances, a page at a time,
//! - `healing`: a start or step that stopped half-way, made good by its retry,
//! - `sweep`: lost timers re-armed, overdue waits fired, orphaned lines removed,
//! - `causation`: correlation and causation from trigger to message,
//! - `consent`: a revoked consent ends the journeys that need it for every send,
//! - `lookback`: events delivered out of order still act on the instance,
//! - `experiments`: splits, holdouts, their explanation and stats (decision 0081).
//! - `segments`: segment membership in branch and trigger conditions (decision 0086).

mod causation;
mod consent;
mod experiments;
mod healing;
mod lookback;
mod pause;
mod segments;
mod starts;
mod sweep;

use super::definition::Campaign;
use super::engine::*;
use super::instance::{InstanceStatus, JourneyEvent};
use crate::assembly::AssembledGroups;
use crate::clock::{Clock, VirtualClock};
use crate::consumer::ConsumerGroup;
use crate::customer::*;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::ports::{AppendRequest, CommitError, EventStore, ExpectedVersion, ReadModelStore, ReadOp, StoreError};
use crate::scheduler::Scheduler;
use crate::testing::{InMemoryEventStore, InMemoryReadModels, InMemoryScheduler};
use async_trait::async_trait;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn shipped(name: &str) -> Campaign {
    let path = format!("{}/../../campaigns/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    Campaign::from_yaml(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_else(|e| panic!("{e:?}"))
}

const CUSTOMER: &str = "00000000-0000-7000-8000-00000000c0de";

/// The in-memory read models with test handles: journey-index commits can
/// be made to fail (a crash before the index write), journey-index reads
/// are counted, and so is every read.
#[derive(Default)]
struct Docs {
    inner: InMemoryReadModels,
    fail_index_commits: AtomicBool,
    index_lists: AtomicUsize,
    most_index_lines_read: AtomicUsize,
    /// Every checkpoint, get and list.
    reads: AtomicUsize,
}

/// An in-memory event store that records each read it serves (each a
/// Query or GetItem on DynamoDB): the stream or key read, in order.
pub(crate) struct CountingEvents {
    pub(crate) inner: Arc<InMemoryEventStore>,
    reads: Mutex<Vec<String>>,
}

impl CountingEvents {
    pub(crate) fn over(inner: Arc<InMemoryEventStore>) -> Self {
        CountingEvents {
            inner,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// The reads since the last call.
    pub(crate) fn take_reads(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, what: &str) {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what.to_string());
    }
}

#[async_trait]
impl EventStore for CountingEvents {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.record(stream_id);
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.record(stream_id);
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<crate::ports::Appended, crate::ports::AppendError> {
        self.inner.append(request).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<crate::ports::CommandReceipt>, StoreError> {
        self.record(key);
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.record(key);
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: crate::ports::Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<crate::ports::EventPage, StoreError> {
        self.record("all");
        self.inner.read_all(after, limit).await
    }
}

impl Docs {
    fn fail_index_commits(&self, fail: bool) {
        self.fail_index_commits.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl ReadModelStore for Docs {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.checkpoint(consumer, stream_id).await
    }
    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        if consumer == JOURNEY_INDEX && self.fail_index_commits.load(Ordering::SeqCst) {
            return Err(CommitError::Store(StoreError::Unavailable("injected".into())));
        }
        self.inner.commit(consumer, stream_id, expected, new, ops).await
    }
    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(consumer, partition, sort).await
    }
    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let lines = self.inner.list(consumer, partition, prefix, after, limit).await?;
        if consumer == JOURNEY_INDEX {
            self.index_lists.fetch_add(1, Ordering::SeqCst);
            self.most_index_lines_read.fetch_max(lines.len(), Ordering::SeqCst);
        }
        Ok(lines)
    }
}

struct World {
    events: Arc<InMemoryEventStore>,
    docs: Arc<Docs>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    engine: JourneyEngine,
}

impl World {
    async fn new(catalog: Arc<dyn CampaignCatalog>) -> World {
        Self::build(|_| catalog).await
    }

    /// Over the stored campaigns (the shipped ones until written), so they can be paused.
    async fn stored() -> World {
        Self::build(|events| Arc::new(super::catalog::StoredCatalog::new(events))).await
    }

    async fn build(catalog: impl FnOnce(Arc<dyn EventStore>) -> Arc<dyn CampaignCatalog>) -> World {
        let events = Arc::new(InMemoryEventStore::default());
        let docs = Arc::new(Docs::default());
        let scheduler = Arc::new(InMemoryScheduler::default());
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").map(|t| t.with_timezone(&chrono::Utc));
        let clock = Arc::new(VirtualClock::starting_at(start.unwrap_or_default()));
        let catalog = catalog(events.clone());
        let engine = JourneyEngine::new(events.clone(), docs.clone(), scheduler.clone(), catalog, clock.clone());
        let world = World {
            events,
            docs,
            scheduler,
            clock,
            engine,
        };
        world.register().await;
        world
    }

    fn campaigns(&self) -> super::catalog::CampaignService {
        super::catalog::CampaignService::new(self.events.clone(), self.clock.clone())
    }

    /// A world over the shipped campaigns `names`, never paused.
    async fn with_shipped(names: &[&str]) -> World {
        Self::new(Arc::new(FixedCatalog::new(names.iter().map(|n| shipped(n)).collect()))).await
    }

    /// Stores the abandonment of cart `cart` (worth 70.00, enough for the
    /// abandoned-cart campaign) without handing it to the engine.
    async fn abandoned_cart(&self, cart: &str) -> EventEnvelope {
        self.commerce_event(
            &format!("cart-{cart}"),
            "CartAbandoned",
            json!({ "cart_id": cart, "total_value_minor": 7000 }),
        )
        .await
    }

    /// Abandons cart `cart` and hands the event to the engine.
    async fn abandon(&self, cart: &str) -> Result<EngineOutcome, EngineError> {
        let e = self.abandoned_cart(cart).await;
        self.engine.on_event(&e).await
    }

    /// Hands `trigger` to the engine while the scheduler fails: the start
    /// stores its events and stops (as a crash after the append would), and
    /// the delivery fails to be retried.
    async fn start_stopping_after_append(&self, trigger: &EventEnvelope) {
        self.scheduler.fail_with(Some(unavailable()));
        assert_eq!(
            self.engine.on_event(trigger).await.map_err(|e| e.kind()),
            Err(FailureKind::Retryable)
        );
        self.scheduler.fail_with(None);
    }

    /// An engine over this world whose journey appends fail (a crash
    /// between a start's index lines and its append), with the switch.
    fn engine_whose_journey_appends_fail(&self, campaigns: Vec<Campaign>) -> (Arc<JourneyAppendsFail>, JourneyEngine) {
        let appends = Arc::new(JourneyAppendsFail {
            inner: self.events.clone(),
            failing: AtomicBool::new(true),
        });
        let engine = JourneyEngine::new(
            appends.clone(),
            self.docs.clone(),
            self.scheduler.clone(),
            Arc::new(FixedCatalog::new(campaigns)),
            self.clock.clone(),
        );
        (appends, engine)
    }

    /// The customer's journey index lines.
    async fn index(&self) -> Vec<IndexedInstance> {
        self.engine.instances_of(CUSTOMER).await.expect("index")
    }

    /// An instance folded from its stream, which must exist.
    async fn instance(&self, id: &str) -> super::instance::JourneyInstance {
        self.engine.load(id).await.expect("load").expect("instance")
    }

    /// The journey index's lines in a campaign's partition.
    async fn campaign_lines(&self, campaign: &str) -> usize {
        self.docs
            .inner
            .list(JOURNEY_INDEX, &campaign_partition(campaign), "", None, usize::MAX)
            .await
            .expect("list")
            .len()
    }

    /// A customer with marketing email consent, projected into the 360 and the ledger.
    async fn register(&self) {
        let service = CustomerService::new(self.events.clone(), self.clock.clone())
            .with_identifiers(crate::testing::identifiers());
        let cmd = CustomerCommand::Register(crate::testing::registration(
            "journey@example.com",
            "Jo",
            "Urney",
            "Europe/Berlin",
        ));
        let respond = |c: &Customer, _: &[EventEnvelope]| (201, json!({ "id": c.id }));
        service
            .execute(CUSTOMER, &cmd, &CommandMeta::new(Actor::api("t")), None, &respond)
            .await
            .expect("register");
        let dlq = Arc::new(crate::testing::InMemoryDeadLetters::default());
        for group in [
            ConsumerGroup::projector(
                self.events.clone(),
                self.docs.clone(),
                dlq.clone(),
                crate::testing::identifiers(),
            ),
            ConsumerGroup::consent(
                self.events.clone(),
                self.docs.clone(),
                dlq.clone(),
                crate::privacy::IdentifierHasher::new(b"test"),
            ),
        ] {
            for e in self
                .events
                .read_stream(&crate::customer::stream_id(CUSTOMER), 0, 100)
                .await
                .expect("read")
            {
                group.handle(&e, self.clock.now()).await.expect("project");
            }
        }
    }

    /// Appends one commerce event for the customer (carts and orders have their own aggregates).
    async fn commerce_event(&self, stream: &str, event_type: &str, data: serde_json::Value) -> EventEnvelope {
        let mut e = crate::testing::raw_event(stream, event_type, data);
        e.customer_id = Some(CUSTOMER.into());
        e.occurred_at = self.clock.now();
        e.recorded_at = self.clock.now();
        let appended = self
            .events
            .append(AppendRequest {
                stream_id: stream.into(),
                expected: ExpectedVersion::Any,
                events: vec![e],
                reservations: vec![],
                receipt: None,
            })
            .await
            .expect("append");
        appended.events[0].clone()
    }

    /// Moves the clock and fires every timer that came due, in due order.
    async fn advance(&self, by: chrono::Duration) -> Vec<String> {
        let now = self.clock.advance(by);
        let mut due: Vec<_> = self
            .scheduler
            .pending()
            .into_iter()
            .filter(|t| t.due_at <= now)
            .collect();
        due.sort_by_key(|t| t.due_at);
        let mut messages = Vec::new();
        for t in due {
            messages.extend(self.engine.on_timer(&t).await.expect("timer").messages);
            self.scheduler.cancel(&t.name).await.expect("fired timers are deleted");
        }
        messages
    }

    async fn journey_events(&self, instance_id: &str) -> Vec<JourneyEvent> {
        let stream = super::instance::stream_id(instance_id);
        self.events
            .read_stream(&stream, 0, 1000)
            .await
            .expect("read")
            .iter()
            .map(|e| JourneyEvent::from_envelope(e).expect("journey event"))
            .collect()
    }
}

/// A sweep budget that walks every line of these tests in one call, at once again.
fn whole_sweep() -> SweepBudget {
    SweepBudget {
        page_size: 10,
        pages: 10,
        rest: chrono::Duration::zero(),
    }
}

fn unavailable() -> crate::scheduler::SchedulerError {
    crate::scheduler::SchedulerError::Unavailable("injected".into())
}

/// The in-memory event store whose appends to journey streams can be made to
/// fail: a start that stops after its index line, before its append.
struct JourneyAppendsFail {
    inner: Arc<InMemoryEventStore>,
    failing: AtomicBool,
}

#[async_trait]
impl EventStore for JourneyAppendsFail {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<crate::ports::Appended, crate::ports::AppendError> {
        if request.stream_id.starts_with("journey-") && self.failing.load(Ordering::SeqCst) {
            return Err(crate::ports::AppendError::Store(StoreError::Unavailable(
                "injected".into(),
            )));
        }
        self.inner.append(request).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<crate::ports::CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: crate::ports::Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<crate::ports::EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

fn reminders(events: &[JourneyEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
        .count()
}

/// A world whose abandoned-cart start for `cart` stopped after its append
/// (the timer write failed), and the instance's id; its trigger never comes back.
async fn half_started(world: &World, cart: &str) -> String {
    let abandoned = world.abandoned_cart(cart).await;
    world.start_stopping_after_append(&abandoned).await;
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    assert!(world.scheduler.pending().is_empty());
    index[0].instance_id.clone()
}
