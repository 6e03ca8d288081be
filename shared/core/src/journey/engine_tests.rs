//! The journey engine over the in-memory stores (domain tests): one instance
//! per trigger however often it is delivered, waits on timers, exits mid-wait,
//! instances keep their campaign version.

use super::definition::Campaign;
use super::engine::*;
use super::instance::{InstanceStatus, JourneyEvent};
use crate::clock::{Clock, VirtualClock};
use crate::consumer::ConsumerGroup;
use crate::customer::*;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
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
        assert!(matches!(
            self.engine.on_event(trigger).await,
            Err(EngineError::Retry(_))
        ));
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

#[tokio::test]
async fn abandoned_cart_reminds_once_and_an_order_mid_wait_ends_it() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    world
        .commerce_event(
            "cart-c1",
            "ItemAddedToCart",
            json!({ "product_id": "p1", "quantity": 3 }),
        )
        .await;
    let abandoned = world
        .commerce_event(
            "cart-c1",
            "CartAbandoned",
            json!({ "cart_id": "c1", "total_value_minor": 7500, "currency": "EUR" }),
        )
        .await;

    // Delivered three times: one instance.
    let mut started = Vec::new();
    for _ in 0..3 {
        started.extend(world.engine.on_event(&abandoned).await.expect("trigger").started);
    }
    assert_eq!(started.len(), 1, "{started:?}");
    let id = started[0].clone();
    assert_eq!(world.scheduler.pending().len(), 1, "the 1 h wait");

    assert!(world.advance(chrono::Duration::minutes(59)).await.is_empty(), "not yet");
    let reminder = world.advance(chrono::Duration::minutes(1)).await;
    assert_eq!(reminder.len(), 1, "exactly one reminder at 60 minutes");
    assert_eq!(world.scheduler.pending().len(), 1, "the 24 h wait");

    let order = world
        .commerce_event("order-o1", "OrderPlaced", json!({ "order_id": "o1" }))
        .await;
    world.clock.advance(chrono::Duration::hours(2));
    world.engine.on_event(&order).await.expect("order");
    assert!(
        world.scheduler.pending().is_empty(),
        "the pending schedule is deleted at once"
    );
    assert!(
        world.advance(chrono::Duration::hours(30)).await.is_empty(),
        "no final offer"
    );

    let history = world.journey_events(&id).await;
    let requested: Vec<&JourneyEvent> = history
        .iter()
        .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
        .collect();
    assert_eq!(requested.len(), 1);
    assert!(matches!(history.last(), Some(JourneyEvent::JourneyExited { rule: Some(r), .. }) if r == "order-placed"));
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].status, InstanceStatus::Exited);

    // The journey's events name what caused them.
    let stored = world
        .events
        .read_stream(&super::instance::stream_id(&id), 0, 100)
        .await
        .expect("read");
    assert_eq!(stored[0].causation_id, Some(abandoned.event_id));
    assert_eq!(stored[0].actor, "journey:abandoned-cart@1");

    // Why was the reminder sent? Message <- steps <- start <- CartAbandoned <- the cart's items.
    let why = super::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder[0])
        .await
        .expect("explain")
        .expect("known message");
    let roles_types: Vec<(&str, &str)> = why.chain.iter().map(|l| (l.role, l.event_type.as_str())).collect();
    assert_eq!(roles_types.first(), Some(&("message", "MessageRequested")));
    assert!(roles_types.contains(&("journey", "TimerFired")));
    assert!(roles_types.contains(&("journey", "JourneyStarted")));
    assert!(roles_types.contains(&("trigger", "CartAbandoned")));
    assert!(roles_types.contains(&("history", "ItemAddedToCart")), "{roles_types:?}");
    assert_eq!(why.campaign, "abandoned-cart@1");
    assert_eq!(why.chain[0].step_id.as_deref(), Some("reminder"));
}

#[tokio::test]
async fn small_carts_and_customers_without_consent_do_not_enter() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let small = world
        .commerce_event(
            "cart-c2",
            "CartAbandoned",
            json!({ "cart_id": "c2", "total_value_minor": 4999 }),
        )
        .await;
    assert!(
        world.engine.on_event(&small).await.expect("event").started.is_empty(),
        "under 50.00"
    );
    let big = world
        .commerce_event(
            "cart-c3",
            "CartAbandoned",
            json!({ "cart_id": "c3", "total_value_minor": 5000 }),
        )
        .await;
    assert_eq!(world.engine.on_event(&big).await.expect("event").started.len(), 1);
}

/// A catalog whose campaign is edited: new instances start on version 2,
/// running ones keep version 1.
struct EditedCatalog {
    v1: Arc<Campaign>,
    v2: Arc<Campaign>,
    edited: Mutex<bool>,
}

#[async_trait]
impl CampaignCatalog for EditedCatalog {
    async fn current(&self) -> Result<Arc<CatalogSnapshot>, crate::ports::StoreError> {
        let edited = *self.edited.lock().unwrap_or_else(|p| p.into_inner());
        let mut versions = std::collections::BTreeMap::from([(1, self.v1.clone())]);
        if edited {
            versions.insert(2, self.v2.clone());
        }
        Ok(Arc::new(CatalogSnapshot::new([CatalogEntry {
            id: self.v1.id.clone(),
            current: if edited { 2 } else { 1 },
            paused: false,
            versions,
        }])))
    }
}

#[tokio::test]
async fn an_edit_mid_flight_leaves_running_instances_on_their_version() {
    let v1 = shipped("abandoned-cart");
    let mut v2 = v1.clone();
    if let Some(super::definition::Step::Send(send)) = v2.steps.iter_mut().find(|s| s.id() == "reminder") {
        send.template = "abandoned-cart-final-offer".into();
    }
    let catalog = Arc::new(EditedCatalog {
        v1: Arc::new(v1),
        v2: Arc::new(v2),
        edited: Mutex::new(false),
    });
    let world = World::new(catalog.clone()).await;
    let first = world
        .commerce_event(
            "cart-a",
            "CartAbandoned",
            json!({ "cart_id": "a", "total_value_minor": 9000 }),
        )
        .await;
    let old = world.engine.on_event(&first).await.expect("start").started;
    *catalog.edited.lock().unwrap_or_else(|p| p.into_inner()) = true;
    let second = world
        .commerce_event(
            "cart-b",
            "CartAbandoned",
            json!({ "cart_id": "b", "total_value_minor": 9000 }),
        )
        .await;
    let new = world.engine.on_event(&second).await.expect("start").started;
    world.advance(chrono::Duration::hours(1)).await;
    let template_of = |events: Vec<JourneyEvent>| {
        events.into_iter().find_map(|e| match e {
            JourneyEvent::MessageRequested {
                template,
                campaign_version,
                ..
            } => Some((template, campaign_version)),
            _ => None,
        })
    };
    assert_eq!(
        template_of(world.journey_events(&old[0]).await),
        Some(("abandoned-cart-reminder".into(), 1))
    );
    assert_eq!(
        template_of(world.journey_events(&new[0]).await),
        Some(("abandoned-cart-final-offer".into(), 2))
    );
}

#[tokio::test]
async fn deactivating_the_customer_exits_every_instance_and_deletes_its_timers() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let mut started = Vec::new();
    for cart in ["d1", "d2"] {
        let e = world
            .commerce_event(
                &format!("cart-{cart}"),
                "CartAbandoned",
                json!({ "cart_id": cart, "total_value_minor": 6000 }),
            )
            .await;
        started.extend(world.engine.on_event(&e).await.expect("start").started);
    }
    assert_eq!(started.len(), 2);
    assert_eq!(world.scheduler.pending().len(), 2);

    let service =
        CustomerService::new(world.events.clone(), world.clock.clone()).with_identifiers(crate::testing::identifiers());
    let respond = |c: &Customer, _: &[EventEnvelope]| (200, json!({ "id": c.id }));
    let deactivate = CustomerCommand::Deactivate(DeactivateCustomer {
        reason: DeactivationReason::CustomerRequest,
        notes: None,
    });
    let Executed::Applied { events, .. } = service
        .execute(
            CUSTOMER,
            &deactivate,
            &CommandMeta::new(Actor::api("t")),
            None,
            &respond,
        )
        .await
        .expect("deactivate")
    else {
        panic!("applied");
    };
    for e in &events {
        world.engine.on_event(e).await.expect("deactivation");
    }
    assert!(world.scheduler.pending().is_empty(), "every pending wait deleted");
    for id in &started {
        assert!(matches!(
            world.journey_events(id).await.last(),
            Some(JourneyEvent::JourneyExited {
                reason: super::instance::ExitReason::CustomerDeactivated,
                ..
            })
        ));
    }
    assert!(
        world.advance(chrono::Duration::days(2)).await.is_empty(),
        "nothing is sent afterwards"
    );
}

#[tokio::test]
async fn pausing_a_campaign_exits_its_running_instances_at_once() {
    let world = World::stored().await;
    let e = world
        .commerce_event(
            "cart-p1",
            "CartAbandoned",
            json!({ "cart_id": "p1", "total_value_minor": 6000 }),
        )
        .await;
    let started = world.engine.on_event(&e).await.expect("start").started;
    assert_eq!(world.scheduler.pending().len(), 1);
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let paused = world.engine.on_campaign_paused("abandoned-cart").await.expect("pause");
    assert_eq!(paused.advanced, started);
    assert!(world.scheduler.pending().is_empty());
    assert!(matches!(
        world.journey_events(&started[0]).await.last(),
        Some(JourneyEvent::JourneyExited {
            reason: super::instance::ExitReason::CampaignPaused,
            ..
        })
    ));
    assert!(world
        .engine
        .on_campaign_paused("abandoned-cart")
        .await
        .expect("again")
        .advanced
        .is_empty());
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty());
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

#[tokio::test]
async fn a_start_that_failed_after_its_append_is_healed_by_the_retry() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("h1").await;

    // The scheduler fails after the journey's events are stored.
    world.start_stopping_after_append(&abandoned).await;
    let index = world.index().await;
    assert_eq!(index.len(), 1, "the index line written before the append");
    assert_eq!(index[0].version, 0, "shows nothing applied");
    assert!(world.scheduler.pending().is_empty(), "and no timer");

    // The redelivery finds the instance started and makes good the rest.
    let retried = world.engine.on_event(&abandoned).await.expect("retry");
    assert!(retried.started.is_empty(), "not started twice");
    assert_eq!(retried.healed.len(), 1);
    let id = retried.healed[0].clone();
    let pending = world.scheduler.pending();
    assert_eq!(pending.len(), 1, "the 1 h wait is armed again");
    let state = world.instance(&id).await;
    let wait = state.waiting.clone().expect("waiting");
    assert_eq!(pending[0].name, wait.timer_name, "under its deterministic name");
    assert_eq!(pending[0].due_at, wait.due_at);
    assert_eq!(pending[0].set_at_version, 3, "the JourneyWaitScheduled's version");
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].version, state.version);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 1);

    // A third delivery changes nothing.
    let again = world.engine.on_event(&abandoned).await.expect("again");
    assert!(again.healed.is_empty() && again.started.is_empty());

    // And the journey goes on: one reminder.
    assert_eq!(world.advance(chrono::Duration::hours(1)).await.len(), 1);
}

#[tokio::test]
async fn a_step_that_failed_before_its_index_write_is_healed_by_the_redelivered_timer() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let started = world.abandon("h2").await.expect("start").started;
    let id = started[0].clone();
    let first = world.scheduler.pending().remove(0);

    // The timer fires; the step is stored and the next timer set, but the index write fails.
    world.clock.advance(chrono::Duration::hours(1));
    world.docs.fail_index_commits(true);
    assert!(matches!(
        world.engine.on_timer(&first).await,
        Err(EngineError::Retry(_))
    ));
    world.docs.fail_index_commits(false);
    let index = world.index().await;
    let state = world.instance(&id).await;
    assert!(index[0].version < state.version, "the index is behind its stream");

    // The timer is delivered again: nothing is decided twice, the index catches up.
    let retried = world.engine.on_timer(&first).await.expect("retry");
    assert!(retried.messages.is_empty(), "the reminder is not requested twice");
    assert_eq!(retried.healed, vec![id.clone()]);
    let index = world.index().await;
    assert_eq!(index[0].version, state.version);
    // The reminder's pointer is there too: explain finds its journey.
    let reminder = world
        .journey_events(&id)
        .await
        .into_iter()
        .find_map(|e| match e {
            JourneyEvent::MessageRequested { message_id, .. } => Some(message_id),
            _ => None,
        })
        .expect("reminder requested");
    assert!(
        super::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder)
            .await
            .expect("explain")
            .is_some()
    );
    let requested = world
        .journey_events(&id)
        .await
        .iter()
        .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
        .count();
    assert_eq!(requested, 1);
}

#[tokio::test]
async fn the_sweep_rearms_a_missing_timer_and_fires_an_overdue_one_exactly_once() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let a = world.abandon("s1").await.expect("start").started[0].clone();
    let b = world.abandon("s2").await.expect("start").started[0].clone();
    let budget = whole_sweep();
    // Nothing to repair.
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.examined, 2);
    assert!(swept.rearmed.is_empty() && swept.fired.is_empty() && swept.healed.is_empty());
    assert!(swept.finished_walk);

    // A's schedule is lost: the sweep creates it again, the same timer.
    let lost = world
        .scheduler
        .pending()
        .into_iter()
        .find(|t| t.stream_id.ends_with(&a))
        .expect("a's timer");
    world.scheduler.cancel(&lost.name).await.expect("lose it");
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.rearmed, vec![a.clone()]);
    assert!(world.scheduler.pending().contains(&lost));

    // B's timer fired but the event never arrived (the schedule is gone),
    // and the due time is long past: the sweep runs the step, once.
    let b_timer = world
        .scheduler
        .pending()
        .into_iter()
        .find(|t| t.stream_id.ends_with(&b))
        .expect("b's timer");
    world.scheduler.cancel(&b_timer.name).await.expect("fired and deleted");
    world.clock.advance(chrono::Duration::minutes(90));
    world
        .scheduler
        .cancel(&lost.name)
        .await
        .expect("a's fired too, and its step runs late as well");
    let swept = world.engine.sweep(budget).await.expect("sweep");
    let mut fired = swept.fired.clone();
    fired.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(fired, both);
    assert_eq!(swept.messages.len(), 2, "one reminder each");
    let again = world.engine.sweep(budget).await.expect("sweep again");
    assert!(again.fired.is_empty() && again.messages.is_empty(), "{again:?}");
    // The lost timer arriving late after all changes nothing.
    assert!(world.engine.on_timer(&b_timer).await.expect("late").messages.is_empty());
    for id in [&a, &b] {
        let reminders = world
            .journey_events(id)
            .await
            .iter()
            .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
            .count();
        assert_eq!(reminders, 1, "{id}");
    }
    // Both wait for their 24 h timers now, which are set.
    assert_eq!(world.scheduler.pending().len(), 2);
}

#[tokio::test]
async fn the_sweep_reads_a_page_at_a_time_and_rests_after_a_walk() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    for n in 0..5 {
        world.abandon(&format!("w{n}")).await.expect("start");
    }
    let budget = SweepBudget {
        page_size: 2,
        pages: 1,
        rest: chrono::Duration::hours(1),
    };
    let mut examined = 0;
    let mut calls = 0;
    loop {
        let reads = world.docs.index_lists.load(Ordering::SeqCst);
        let swept = world.engine.sweep(budget).await.expect("sweep");
        calls += 1;
        assert_eq!(
            world.docs.index_lists.load(Ordering::SeqCst) - reads,
            1,
            "one page per call"
        );
        examined += swept.examined;
        if swept.finished_walk {
            break;
        }
        assert!(calls < 10, "the walk ends");
    }
    assert_eq!(examined, 5);
    assert_eq!(calls, 3);
    assert!(world.engine.sweep(budget).await.expect("rest").resting);
    world.clock.advance(chrono::Duration::hours(2));
    assert_eq!(world.engine.sweep(budget).await.expect("again").examined, 2);
}

#[tokio::test]
async fn a_timer_that_fires_after_the_pause_sends_nothing() {
    let world = World::stored().await;
    let id = world.abandon("p2").await.expect("start").started[0].clone();
    // Paused; the pause's own exits have not reached this instance yet.
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    assert!(
        world.advance(chrono::Duration::hours(1)).await.is_empty(),
        "no reminder after the pause"
    );
    assert!(matches!(
        world.journey_events(&id).await.last(),
        Some(JourneyEvent::JourneyExited {
            reason: super::instance::ExitReason::CampaignPaused,
            ..
        })
    ));
    assert!(world.scheduler.pending().is_empty());
    assert_eq!(
        world.campaign_lines("abandoned-cart").await,
        0,
        "it left the campaign's partition"
    );
}

#[tokio::test]
async fn pausing_exits_the_instances_a_page_at_a_time_over_continuations() {
    let world = World::stored().await;
    let total = PAUSE_PAGE * 2 + 30;
    for n in 0..total {
        world.abandon(&format!("m{n}")).await.expect("start");
    }
    assert_eq!(world.scheduler.pending().len(), total);
    let service = world.campaigns();
    service.pause("abandoned-cart", Actor::api("t")).await.expect("paused");
    let stream = super::catalog::stream_id("abandoned-cart");
    let read_campaign = || async { world.events.read_stream(&stream, 0, 1000).await.expect("read") };

    // The API's call: the first page, and a continuation.
    world.docs.most_index_lines_read.store(0, Ordering::SeqCst);
    let before = world.docs.index_lists.load(Ordering::SeqCst);
    let first = world.engine.on_campaign_paused("abandoned-cart").await.expect("page 1");
    assert_eq!(world.docs.index_lists.load(Ordering::SeqCst) - before, 1);
    assert_eq!(first.advanced.len(), PAUSE_PAGE);
    let paused_event = read_campaign()
        .await
        .into_iter()
        .find(|e| e.event_type == "CampaignPaused")
        .expect("paused event");

    // The campaign function receives each continuation in turn.
    let mut exited = first.advanced.len();
    let mut handled = paused_event.version;
    let mut continuations = 0;
    loop {
        let next = read_campaign()
            .await
            .into_iter()
            .find(|e| e.version > handled && e.event_type == "CampaignPauseContinued");
        let Some(next) = next else { break };
        continuations += 1;
        assert!(next.causation_id.is_some());
        let before = world.docs.index_lists.load(Ordering::SeqCst);
        let page = world.engine.on_event(&next).await.expect("next page");
        assert_eq!(
            world.docs.index_lists.load(Ordering::SeqCst) - before,
            1,
            "one page read per call"
        );
        exited += page.advanced.len();
        handled = next.version;
        assert!(continuations < 10, "the chain ends");
    }
    assert_eq!(continuations, 2);
    assert_eq!(exited, total);
    assert!(world.docs.most_index_lines_read.load(Ordering::SeqCst) <= PAUSE_PAGE);
    assert!(world.scheduler.pending().is_empty(), "every timer deleted");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);

    // The CampaignPaused itself arriving through the bus, and a redelivered
    // continuation, find nothing left and start no second chain.
    let events_before = read_campaign().await.len();
    assert!(world
        .engine
        .on_event(&paused_event)
        .await
        .expect("bus")
        .advanced
        .is_empty());
    let last = read_campaign().await.pop().expect("last");
    assert!(world
        .engine
        .on_event(&last)
        .await
        .expect("redelivered")
        .advanced
        .is_empty());
    assert_eq!(read_campaign().await.len(), events_before);
}

#[tokio::test]
async fn a_duplicated_pause_step_does_not_fork_the_chain() {
    let world = World::stored().await;
    for n in 0..PAUSE_PAGE + 1 {
        world.abandon(&format!("f{n}")).await.expect("start");
    }
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let stream = super::catalog::stream_id("abandoned-cart");
    let paused = world
        .events
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "CampaignPaused")
        .expect("paused");
    // The API and the bus both run the first step.
    world.engine.on_campaign_paused("abandoned-cart").await.expect("api");
    world.engine.on_event(&paused).await.expect("bus");
    let continued: Vec<_> = world
        .events
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.event_type == "CampaignPauseContinued")
        .collect();
    assert_eq!(continued.len(), 1, "one chain");
    world.engine.on_event(&continued[0]).await.expect("page 2");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
}

#[tokio::test]
async fn a_step_carries_the_correlation_of_its_cause_and_names_it() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("c9").await;
    let id = world.engine.on_event(&abandoned).await.expect("start").started[0].clone();
    world.advance(chrono::Duration::hours(1)).await;
    let order = world
        .commerce_event("order-o9", "OrderPlaced", json!({ "order_id": "o9" }))
        .await;
    world.engine.on_event(&order).await.expect("order");
    let stored = world
        .events
        .read_stream(&super::instance::stream_id(&id), 0, 100)
        .await
        .expect("read");
    let of = |t: &str| stored.iter().rev().find(|e| e.event_type == t).expect(t).clone();

    // The exit comes from the order: its correlation, caused by it.
    let exited = of("JourneyExited");
    assert_eq!(exited.correlation_id, order.correlation_id);
    assert_eq!(exited.causation_id, Some(order.event_id));
    // The timer's step comes from the wait that set the timer, in the journey's correlation.
    let fired = of("TimerFired");
    let first_wait = stored
        .iter()
        .find(|e| e.event_type == "JourneyWaitScheduled")
        .expect("wait");
    assert_eq!(fired.causation_id, Some(first_wait.event_id));
    assert_eq!(fired.correlation_id, abandoned.correlation_id);
    assert_eq!(of("JourneyStarted").correlation_id, abandoned.correlation_id);
}

#[tokio::test]
async fn a_message_sent_after_a_wait_descends_by_causation_from_its_trigger() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("c10").await;
    let id = world.engine.on_event(&abandoned).await.expect("start").started[0].clone();
    let reminder = world.advance(chrono::Duration::hours(1)).await;
    assert_eq!(reminder.len(), 1, "the reminder after the 1 h wait");
    let stored = world
        .events
        .read_stream(&super::instance::stream_id(&id), 0, 100)
        .await
        .expect("read");
    let message = stored
        .iter()
        .find(|e| e.event_type == "MessageRequested")
        .expect("message requested");

    // Walk the causation ids back from the message: every journey event on
    // the way is in the trigger's correlation, and the walk ends at the trigger.
    let mut walked = vec![message.event_type.clone()];
    let mut at = message;
    let trigger = loop {
        assert_eq!(
            at.correlation_id, abandoned.correlation_id,
            "{} keeps the correlation",
            at.event_type
        );
        let cause = at
            .causation_id
            .unwrap_or_else(|| panic!("{} names its cause", at.event_type));
        if cause == abandoned.event_id {
            break cause;
        }
        at = stored
            .iter()
            .find(|e| e.event_id == cause)
            .unwrap_or_else(|| panic!("{} is caused by an event of its journey: {walked:?}", at.event_type));
        walked.push(at.event_type.clone());
    };
    assert_eq!(trigger, abandoned.event_id);
    assert!(walked.contains(&"JourneyWaitScheduled".to_string()), "{walked:?}");
    assert!(message.version > stored[0].version);

    // And "why was this message sent?" names the same trigger.
    let why = super::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder[0])
        .await
        .expect("explain")
        .expect("known message");
    let trigger_link = why.chain.iter().find(|l| l.role == "trigger").expect("trigger link");
    assert_eq!(trigger_link.event_id, abandoned.event_id);
    assert!(why
        .chain
        .iter()
        .any(|l| l.event_id == message.event_id && l.role == "message"));
}

/// The input of the recurring schedule that runs the sweep on AWS (decision
/// 0033): a `TimerFired` whose detail is this timer reaches the campaign
/// function like every timer and runs one sweep step.
const SWEEP_SCHEDULE_INPUT: &str = r#"{"name":"crm-journey-sweep","kind":"journey-wait","stream_id":"journey-sweep","due_at":"2026-01-01T00:00:00Z","set_at_version":0,"data":null}"#;

#[tokio::test]
async fn a_fired_sweep_timer_runs_a_sweep_step() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let id = world.abandon("t1").await.expect("start").started[0].clone();
    let timer: crate::scheduler::TimerPayload = serde_json::from_str(SWEEP_SCHEDULE_INPUT).expect("a timer");
    assert_eq!(timer.stream_id, SWEEP_STREAM);
    assert_eq!(timer.name, sweep_timer(world.clock.now()).name);
    let lost = world.scheduler.pending().remove(0);
    world.scheduler.cancel(&lost.name).await.expect("lost");
    world.engine.on_timer(&timer).await.expect("sweep step");
    assert_eq!(world.scheduler.pending(), vec![lost], "{id}'s timer is back");

    // The schedule's input can set the budget.
    assert_eq!(SweepBudget::from_timer_data(&timer.data), SweepBudget::default());
    let tuned = SweepBudget::from_timer_data(&json!({ "pages": 7, "page_size": 50, "rest_minutes": 30 }));
    assert_eq!(
        tuned,
        SweepBudget {
            page_size: 50,
            pages: 7,
            rest: chrono::Duration::minutes(30)
        }
    );
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

#[tokio::test]
async fn an_order_between_a_crashed_start_and_its_redelivery_ends_the_journey() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("h2").await;
    // The start's append is stored, then the invocation dies (here: the scheduler fails).
    world.start_stopping_after_append(&abandoned).await;
    let index = world.index().await;
    assert_eq!(index.len(), 1, "the index line was written before the append");
    assert_eq!(index[0].version, 0, "at version 0: nothing applied yet");
    let id = index[0].instance_id.clone();

    // The customer orders before the start's message comes back: the order reaches the instance.
    let order = world
        .commerce_event("order-o2", "OrderPlaced", json!({ "order_id": "o2" }))
        .await;
    let on_order = world.engine.on_event(&order).await.expect("order");
    assert_eq!(on_order.advanced, vec![id.clone()]);
    let state = world.instance(&id).await;
    assert_eq!(state.status, InstanceStatus::Exited);
    let index = world.index().await;
    assert_eq!(
        index[0].version, state.version,
        "the index caught up with the whole stream"
    );
    assert_eq!(index[0].status, InstanceStatus::Exited);
    assert_eq!(
        world.campaign_lines("abandoned-cart").await,
        0,
        "an exited instance leaves its campaign's partition"
    );

    // The redelivered start starts nothing, and no reminder is ever sent.
    let retried = world.engine.on_event(&abandoned).await.expect("retry");
    assert!(retried.started.is_empty() && retried.messages.is_empty(), "{retried:?}");
    assert!(world.scheduler.pending().is_empty(), "no timer for an exited journey");
    let sent = world.advance(chrono::Duration::hours(2)).await;
    assert!(sent.is_empty(), "a cart reminder to a customer who ordered: {sent:?}");
    assert_eq!(reminders(&world.journey_events(&id).await), 0);
}

#[tokio::test]
async fn an_email_verified_between_a_crashed_start_and_its_redelivery_gets_the_welcome_email() {
    let world = World::with_shipped(&["welcome"]).await;
    let registered = world
        .events
        .read_stream(&crate::customer::stream_id(CUSTOMER), 0, 100)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "CustomerRegistered")
        .expect("registered");
    // The start stops after its append: the timer write fails.
    world.start_stopping_after_append(&registered).await;
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    let id = index[0].instance_id.clone();

    // The address is verified before the start comes back: the welcome email is requested.
    let verified = world
        .commerce_event(
            &crate::customer::stream_id(CUSTOMER),
            "EmailVerified",
            json!({ "email": "journey@example.com" }),
        )
        .await;
    let on_verified = world.engine.on_event(&verified).await.expect("verified");
    assert_eq!(on_verified.advanced, vec![id.clone()]);
    assert_eq!(on_verified.messages.len(), 1, "the welcome email: {on_verified:?}");

    // The redelivered start changes nothing; no verification reminder follows.
    let retried = world.engine.on_event(&registered).await.expect("retry");
    assert!(retried.started.is_empty() && retried.messages.is_empty(), "{retried:?}");
    assert!(
        world.advance(chrono::Duration::days(5)).await.is_empty(),
        "no reminder to a verified customer"
    );
    assert_eq!(reminders(&world.journey_events(&id).await), 1, "the welcome email only");
    let state = world.instance(&id).await;
    let index = world.index().await;
    assert_eq!(index[0].version, state.version);
}

#[tokio::test]
async fn an_index_line_whose_append_never_happened_is_harmless_and_the_redelivery_starts_once() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let (appends, crashing) = world.engine_whose_journey_appends_fail(vec![shipped("abandoned-cart")]);
    let abandoned = world.abandoned_cart("h3").await;
    // The index line is written, then the append fails: a line without a stream.
    assert!(matches!(
        crashing.on_event(&abandoned).await,
        Err(EngineError::Retry(_))
    ));
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].version, 0);
    let id = index[0].instance_id.clone();
    assert!(world.engine.load(&id).await.expect("load").is_none(), "no stream");

    // Events for the customer, a pause page and the sweep meet the line and do nothing, without error.
    let viewed = world
        .commerce_event(
            "cart-h3",
            "ItemAddedToCart",
            json!({ "product_id": "p1", "quantity": 1 }),
        )
        .await;
    let outcome = world.engine.on_event(&viewed).await.expect("an event meets the line");
    assert!(outcome.advanced.is_empty() && outcome.healed.is_empty(), "{outcome:?}");
    let budget = whole_sweep();
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.examined, 1);
    assert!(swept.rearmed.is_empty() && swept.fired.is_empty() && swept.healed.is_empty());
    assert!(
        world.engine.load(&id).await.expect("load").is_none(),
        "still nothing started"
    );

    // The redelivered trigger starts the instance, once.
    appends.failing.store(false, Ordering::SeqCst);
    let mut started = Vec::new();
    for _ in 0..2 {
        started.extend(world.engine.on_event(&abandoned).await.expect("redelivered").started);
    }
    assert_eq!(started, vec![id.clone()]);
    let state = world.instance(&id).await;
    let index = world.index().await;
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].version, state.version);
    assert_eq!(world.scheduler.pending().len(), 1, "the 1 h wait");
    assert_eq!(world.advance(chrono::Duration::hours(1)).await.len(), 1, "one reminder");
}

#[tokio::test]
async fn a_duplicate_trigger_of_an_indexed_instance_leaves_its_index_line_alone() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("h4").await;
    let id = world.engine.on_event(&abandoned).await.expect("start").started[0].clone();
    let order = world
        .commerce_event("order-o4", "OrderPlaced", json!({ "order_id": "o4" }))
        .await;
    world.engine.on_event(&order).await.expect("order");
    let before = world.index().await;
    assert_eq!(before[0].status, InstanceStatus::Exited);

    // The trigger again: the version-0 line must not replace the exited one.
    let again = world.engine.on_event(&abandoned).await.expect("duplicate");
    assert!(again.started.is_empty() && again.healed.is_empty(), "{again:?}");
    assert_eq!(world.index().await, before);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
    let state = world.instance(&id).await;
    assert_eq!(before[0].version, state.version);
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

#[tokio::test]
async fn the_sweep_heals_an_instance_whose_start_stopped_after_its_append() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let id = half_started(&world, "h5").await;
    let budget = whole_sweep();
    // Found through its campaign's line: timer set again, index written.
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.healed, vec![id.clone()]);
    assert_eq!(world.scheduler.pending().len(), 1, "the 1 h wait");
    let state = world.instance(&id).await;
    let index = world.index().await;
    assert_eq!(index[0].version, state.version);
    assert_eq!(world.advance(chrono::Duration::hours(1)).await.len(), 1, "one reminder");
}

#[tokio::test]
async fn pausing_exits_an_instance_whose_start_stopped_after_its_append() {
    let world = World::stored().await;
    let id = half_started(&world, "h6").await;
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let paused = world.engine.on_campaign_paused("abandoned-cart").await.expect("pause");
    assert_eq!(paused.advanced, vec![id.clone()]);
    let state = world.instance(&id).await;
    assert_eq!(state.status, InstanceStatus::Exited);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
    assert!(world.scheduler.pending().is_empty());
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty());
}

/// A campaign that waits twice for an item added to the cart the checkout
/// started on, requesting a message after each.
fn checkout_twice() -> Campaign {
    Campaign::from_yaml(
        r#"
id: checkout-twice
name: Checkout twice
trigger:
  pattern:
    source: [crm.commerce]
    detail-type: [CheckoutStarted]
entry:
  reentry: every_time
steps:
  - id: first
    type: wait_until
    pattern:
      source: [crm.commerce]
      detail-type: [ItemAddedToCart]
    timeout: 1h
    on_timeout: exit
    next: first-reminder
  - id: first-reminder
    type: send
    channel: email
    template: abandoned-cart-reminder
    category: marketing
    purpose: marketing
  - id: second
    type: wait_until
    pattern:
      source: [crm.commerce]
      detail-type: [ItemAddedToCart]
    timeout: 1d
    on_timeout: exit
    next: second-reminder
  - id: second-reminder
    type: send
    channel: email
    template: abandoned-cart-final-offer
    category: marketing
    purpose: marketing
"#,
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

impl World {
    /// Runs the projector on `event`, as its own queue would: the customer's
    /// streams index learns the event's stream.
    async fn project(&self, event: &EventEnvelope) {
        let dlq = Arc::new(crate::testing::InMemoryDeadLetters::default());
        ConsumerGroup::projector(
            self.events.clone(),
            self.docs.clone(),
            dlq,
            crate::testing::identifiers(),
        )
        .handle(event, self.clock.now())
        .await
        .expect("project");
    }

    /// The customer's `CustomerRegistered`, stored when the world was built.
    async fn registered(&self) -> EventEnvelope {
        self.events
            .read_stream(&crate::customer::stream_id(CUSTOMER), 0, 100)
            .await
            .expect("read")
            .into_iter()
            .find(|e| e.event_type == "CustomerRegistered")
            .expect("registered")
    }
}

#[tokio::test]
async fn an_email_verified_handled_before_the_registration_still_gets_the_welcome_email() {
    // Given a registration whose delivery failed and comes back after the
    // visibility timeout, and the verification that reached the engine first.
    let world = World::with_shipped(&["welcome"]).await;
    let registered = world.registered().await;
    world.clock.advance(chrono::Duration::minutes(2));
    let verified = world
        .commerce_event(
            &crate::customer::stream_id(CUSTOMER),
            "EmailVerified",
            json!({ "email": "journey@example.com" }),
        )
        .await;
    let early = world.engine.on_event(&verified).await.expect("verified");
    assert!(
        early.advanced.is_empty() && early.started.is_empty(),
        "no instance yet: {early:?}"
    );

    // When the registration arrives.
    world.clock.advance(chrono::Duration::minutes(5));
    let started = world.engine.on_event(&registered).await.expect("registered");

    // Then the instance starts, takes the verification as if it had come
    // after it, and requests the welcome email at once.
    assert_eq!(started.started.len(), 1, "{started:?}");
    assert_eq!(started.messages.len(), 1, "the welcome email: {started:?}");
    let id = started.started[0].clone();
    let history = world.journey_events(&id).await;
    assert!(
        history.iter().any(|e| matches!(
            e,
            JourneyEvent::JourneyWaitEnded { event_id: Some(v), timed_out: false, .. } if *v == verified.event_id
        )),
        "{history:?}"
    );
    assert!(
        history.iter().any(|e| matches!(
            e,
            JourneyEvent::MessageRequested { template, .. } if template == "welcome"
        )),
        "{history:?}"
    );
    assert!(
        world.scheduler.pending().is_empty(),
        "no timer for a wait that already ended"
    );
    assert!(
        world.advance(chrono::Duration::days(5)).await.is_empty(),
        "no verification reminder"
    );
    assert_eq!(reminders(&world.journey_events(&id).await), 1, "the welcome email only");

    // The verification delivered again changes nothing.
    let again = world.engine.on_event(&verified).await.expect("again");
    assert!(again.advanced.is_empty() && again.messages.is_empty(), "{again:?}");
    let state = world.instance(&id).await;
    let index = world.index().await;
    assert_eq!(index[0].version, state.version);
}

#[tokio::test]
async fn an_order_handled_before_the_abandoned_cart_exits_the_journey_at_start() {
    // Given a cart abandoned at 12:00 whose delivery failed, and an order
    // placed two minutes later that the engine (and the projector) handled first.
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("r1").await;
    world.clock.advance(chrono::Duration::minutes(2));
    let order = world
        .commerce_event("order-r1", "OrderPlaced", json!({ "order_id": "r1" }))
        .await;
    world.project(&order).await;
    assert!(world.engine.on_event(&order).await.expect("order").advanced.is_empty());

    // When the abandoned cart comes back.
    world.clock.advance(chrono::Duration::minutes(5));
    let outcome = world.engine.on_event(&abandoned).await.expect("abandoned");

    // Then the instance starts and exits on the order in the same append: no timer, no reminder.
    assert_eq!(outcome.started.len(), 1, "{outcome:?}");
    assert!(outcome.messages.is_empty(), "{outcome:?}");
    let id = outcome.started[0].clone();
    let state = world.instance(&id).await;
    assert_eq!(state.status, InstanceStatus::Exited);
    assert!(matches!(
        world.journey_events(&id).await.last(),
        Some(JourneyEvent::JourneyExited { rule: Some(r), event_id: Some(e), .. })
            if r == "order-placed" && *e == order.event_id
    ));
    assert!(world.scheduler.pending().is_empty(), "no timer for an exited journey");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty(), "no reminder");

    // The order and the cart delivered again change nothing.
    assert!(world.engine.on_event(&order).await.expect("order").advanced.is_empty());
    let again = world.engine.on_event(&abandoned).await.expect("again");
    assert!(again.started.is_empty() && again.messages.is_empty(), "{again:?}");
}

#[tokio::test]
async fn an_order_the_start_could_not_see_exits_the_journey_before_its_reminder() {
    // Given an order handled before the abandoned cart, in a stream the
    // projector had not indexed yet when the instance started.
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let abandoned = world.abandoned_cart("r2").await;
    world.clock.advance(chrono::Duration::minutes(2));
    let order = world
        .commerce_event("order-r2", "OrderPlaced", json!({ "order_id": "r2" }))
        .await;
    world.engine.on_event(&order).await.expect("order");
    let id = world.engine.on_event(&abandoned).await.expect("start").started[0].clone();
    assert_eq!(
        world.scheduler.pending().len(),
        1,
        "waiting: the start did not see the order"
    );

    // When the projector has indexed the order and the 1 h timer fires.
    world.project(&order).await;
    let sent = world.advance(chrono::Duration::hours(1)).await;

    // Then the step looks back first and exits instead of reminding.
    assert!(sent.is_empty(), "a reminder to a customer who ordered: {sent:?}");
    let state = world.instance(&id).await;
    assert_eq!(state.status, InstanceStatus::Exited);
    assert_eq!(reminders(&world.journey_events(&id).await), 0);
    assert!(world.scheduler.pending().is_empty());
}

#[tokio::test]
async fn events_recorded_before_the_trigger_do_not_count() {
    let world = World::new(Arc::new(FixedCatalog::new(vec![
        shipped("abandoned-cart"),
        checkout_twice(),
    ])))
    .await;
    // Given an order of another stream recorded a minute before the cart is abandoned.
    let order = world
        .commerce_event("order-b1", "OrderPlaced", json!({ "order_id": "b1" }))
        .await;
    world.project(&order).await;
    world.clock.advance(chrono::Duration::minutes(1));
    let abandoned = world.abandoned_cart("b1").await;
    // And an item added to a cart before the checkout started on it (the same stream, a lower version).
    world
        .commerce_event(
            "cart-b2",
            "ItemAddedToCart",
            json!({ "product_id": "p1", "quantity": 1 }),
        )
        .await;
    let checkout = world
        .commerce_event("cart-b2", "CheckoutStarted", json!({ "cart_id": "b2" }))
        .await;

    // When both triggers arrive.
    let carted = world.engine.on_event(&abandoned).await.expect("abandoned");
    let checked_out = world.engine.on_event(&checkout).await.expect("checkout");

    // Then both instances wait: nothing from before their triggers counts.
    assert_eq!(carted.started.len(), 1);
    assert_eq!(checked_out.started.len(), 1);
    assert!(carted.messages.is_empty() && checked_out.messages.is_empty());
    for id in carted.started.iter().chain(&checked_out.started) {
        let state = world.engine.load(id).await.expect("load").expect("instance");
        assert_eq!(state.status, InstanceStatus::Waiting, "{id}");
    }
    assert_eq!(world.scheduler.pending().len(), 2);
    assert_eq!(
        world.advance(chrono::Duration::hours(1)).await.len(),
        1,
        "the cart reminder; the checkout wait timed out"
    );
}

#[tokio::test]
async fn an_event_the_lookback_took_does_nothing_when_it_arrives() {
    // Given a checkout whose start was redelivered after an item added to its cart.
    let world = World::new(Arc::new(FixedCatalog::new(vec![checkout_twice()]))).await;
    let checkout = world
        .commerce_event("cart-d1", "CheckoutStarted", json!({ "cart_id": "d1" }))
        .await;
    world.clock.advance(chrono::Duration::minutes(1));
    let added = world
        .commerce_event(
            "cart-d1",
            "ItemAddedToCart",
            json!({ "product_id": "p1", "quantity": 1 }),
        )
        .await;
    let started = world.engine.on_event(&checkout).await.expect("start");
    assert_eq!(started.messages.len(), 1, "the first wait took the item: {started:?}");
    let id = started.started[0].clone();
    let state = world.instance(&id).await;
    assert_eq!(
        state.waiting.as_ref().map(|w| w.step_id.as_str()),
        Some("second"),
        "the second wait does not take the same item"
    );

    // When the item's own delivery arrives, twice.
    for _ in 0..2 {
        let late = world.engine.on_event(&added).await.expect("late");
        // Then it changes nothing: the second wait waits on.
        assert!(late.advanced.is_empty() && late.messages.is_empty(), "{late:?}");
    }
    assert_eq!(reminders(&world.journey_events(&id).await), 1);
    assert_eq!(world.scheduler.pending().len(), 1, "the second wait's timer");

    // A new item ends the second wait.
    let another = world
        .commerce_event(
            "cart-d1",
            "ItemAddedToCart",
            json!({ "product_id": "p2", "quantity": 1 }),
        )
        .await;
    let next = world.engine.on_event(&another).await.expect("another");
    assert_eq!(next.messages.len(), 1, "{next:?}");
    assert_eq!(reminders(&world.journey_events(&id).await), 2);
}

#[tokio::test]
async fn the_sweep_removes_an_index_line_whose_append_never_came_after_the_grace() {
    // Given a start that wrote its index lines, then failed to append, and
    // whose trigger never comes back; and another start that stopped after
    // its append (its lines are at version 0 too, but it has a stream).
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let healed = half_started(&world, "o0").await;
    let (_, crashing) = world.engine_whose_journey_appends_fail(vec![shipped("abandoned-cart")]);
    let abandoned = world.abandoned_cart("o1").await;
    assert!(matches!(
        crashing.on_event(&abandoned).await,
        Err(EngineError::Retry(_))
    ));
    let orphan = world
        .index()
        .await
        .into_iter()
        .map(|line| line.instance_id)
        .find(|id| *id != healed)
        .expect("the orphan's line");
    let budget = whole_sweep();

    // When the sweep runs within the grace: the line stays (its redelivery may still come).
    world.clock.advance(chrono::Duration::minutes(30));
    let early = world.engine.sweep(budget).await.expect("sweep");
    assert!(early.orphans_removed.is_empty(), "{early:?}");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 2);

    // When it runs after the grace.
    world.clock.advance(ORPHAN_LINE_GRACE);
    let swept = world.engine.sweep(budget).await.expect("sweep");

    // Then the orphan's lines are gone, both the campaign's and the
    // customer's; the started instance's are not.
    assert_eq!(swept.orphans_removed, vec![orphan.clone()]);
    let lines: Vec<String> = world.index().await.into_iter().map(|line| line.instance_id).collect();
    assert_eq!(lines, vec![healed.clone()]);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 1);

    // A trigger that does come back after all starts the instance, once, indexed.
    let started = world.engine.on_event(&abandoned).await.expect("redelivered").started;
    assert_eq!(started, vec![orphan.clone()]);
    let state = world.instance(&orphan).await;
    let line = world
        .index()
        .await
        .into_iter()
        .find(|line| line.instance_id == orphan)
        .expect("indexed again");
    assert_eq!(line.version, state.version);
    assert!(world
        .engine
        .sweep(budget)
        .await
        .expect("sweep")
        .orphans_removed
        .is_empty());
}

/// A customer event no campaign acts on (decision 0043): the kept catalog's
/// change signal is read (one read of the `campaigns` stream), nothing else
/// of the event store, and no read model at all: not the profile, not the
/// journey index, although the customer has a running journey. A page of
/// such events reads the signal once.
#[tokio::test]
async fn an_event_no_campaign_acts_on_reads_only_the_catalog_signal() {
    let world = World::stored().await;
    world
        .campaigns()
        .pause("review-request", Actor::api("t"))
        .await
        .expect("pause");
    let counting = Arc::new(CountingEvents::over(world.events.clone()));
    let engine = JourneyEngine::new(
        counting.clone(),
        world.docs.clone(),
        world.scheduler.clone(),
        Arc::new(super::catalog::StoredCatalog::new(counting.clone())),
        world.clock.clone(),
    );
    let abandoned = world.abandoned_cart("r1").await;
    let started = engine.on_event(&abandoned).await.expect("start").started;
    assert_eq!(started.len(), 1, "a running journey");

    let activity = crate::customer::activity::activity_stream_id(CUSTOMER);
    let viewed = world
        .commerce_event(&activity, "PageViewed", json!({ "url": "https://shop.example/a" }))
        .await;
    counting.take_reads();
    world.docs.reads.store(0, Ordering::SeqCst);
    let outcome = engine.on_event(&viewed).await.expect("page view");
    assert_eq!(outcome, EngineOutcome::default());
    assert_eq!(counting.take_reads(), vec![super::catalog::INDEX_STREAM.to_string()]);
    assert_eq!(
        world.docs.reads.load(Ordering::SeqCst),
        0,
        "no profile, no journey index"
    );

    // A page of five: the signal once.
    let handler = super::campaigns::CampaignHandler::new(
        engine,
        crate::commerce::CartService::new(counting.clone(), world.clock.clone(), world.scheduler.clone()),
        crate::commerce::OrderService::new(counting.clone(), world.clock.clone(), world.scheduler.clone()),
        Arc::new(crate::testing::InMemoryDeadLetters::default()),
    );
    let mut page = Vec::new();
    for n in 0..5 {
        page.push(
            world
                .commerce_event(
                    &activity,
                    "PageViewed",
                    json!({ "url": format!("https://shop.example/{n}") }),
                )
                .await,
        );
    }
    counting.take_reads();
    let handled = crate::consumer::EventHandler::handle_page(&handler, &page, world.clock.now())
        .await
        .expect("page");
    assert_eq!(handled.applied, 5);
    assert_eq!(counting.take_reads(), vec![super::catalog::INDEX_STREAM.to_string()]);
    assert_eq!(world.docs.reads.load(Ordering::SeqCst), 0);

    // The order the journey exits on still reaches it.
    let order = world
        .commerce_event("order-r1", "OrderPlaced", json!({ "order_id": "r1" }))
        .await;
    let exited = handler.engine().on_event(&order).await.expect("order");
    assert_eq!(exited.advanced, started);
}
