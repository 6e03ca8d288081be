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
use crate::ports::{AppendRequest, EventStore, ExpectedVersion};
use crate::scheduler::Scheduler;
use crate::testing::{InMemoryEventStore, InMemoryReadModels, InMemoryScheduler};
use async_trait::async_trait;
use serde_json::json;
use std::sync::{Arc, Mutex};

fn shipped(name: &str) -> Campaign {
    let path = format!("{}/../../campaigns/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    Campaign::from_yaml(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_else(|e| panic!("{e:?}"))
}

const CUSTOMER: &str = "00000000-0000-7000-8000-00000000c0de";

struct World {
    events: Arc<InMemoryEventStore>,
    docs: Arc<InMemoryReadModels>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    engine: JourneyEngine,
}

impl World {
    async fn new(catalog: Arc<dyn CampaignCatalog>) -> World {
        let events = Arc::new(InMemoryEventStore::default());
        let docs = Arc::new(InMemoryReadModels::default());
        let scheduler = Arc::new(InMemoryScheduler::default());
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").map(|t| t.with_timezone(&chrono::Utc));
        let clock = Arc::new(VirtualClock::starting_at(start.unwrap_or_default()));
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

    /// A customer with marketing email consent, projected into the 360 and the ledger.
    async fn register(&self) {
        let service = CustomerService::new(self.events.clone(), self.clock.clone());
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
            ConsumerGroup::projector(self.events.clone(), self.docs.clone(), dlq.clone()),
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
    let world = World::new(Arc::new(FixedCatalog::new(vec![shipped("abandoned-cart")]))).await;
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
    let index = world.engine.instances_of(CUSTOMER).await.expect("index");
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
    let world = World::new(Arc::new(FixedCatalog::new(vec![shipped("abandoned-cart")]))).await;
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
    async fn active(&self) -> Result<Vec<(Arc<Campaign>, u64)>, crate::ports::StoreError> {
        let edited = *self.edited.lock().unwrap_or_else(|p| p.into_inner());
        Ok(vec![if edited {
            (self.v2.clone(), 2)
        } else {
            (self.v1.clone(), 1)
        }])
    }
    async fn version(&self, id: &str, version: u64) -> Result<Option<Arc<Campaign>>, crate::ports::StoreError> {
        Ok(match version {
            1 if id == self.v1.id => Some(self.v1.clone()),
            2 if id == self.v2.id => Some(self.v2.clone()),
            _ => None,
        })
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
    let world = World::new(Arc::new(FixedCatalog::new(vec![shipped("abandoned-cart")]))).await;
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

    let service = CustomerService::new(world.events.clone(), world.clock.clone());
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
    let world = World::new(Arc::new(FixedCatalog::new(vec![shipped("abandoned-cart")]))).await;
    let e = world
        .commerce_event(
            "cart-p1",
            "CartAbandoned",
            json!({ "cart_id": "p1", "total_value_minor": 6000 }),
        )
        .await;
    let started = world.engine.on_event(&e).await.expect("start").started;
    assert_eq!(world.scheduler.pending().len(), 1);
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
