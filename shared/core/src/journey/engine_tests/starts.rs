//! Starting journeys: one instance per trigger, entry rules, campaign
//! versions, deactivation, and what an event no campaign acts on reads.

use super::*;

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
        .read_stream(&crate::journey::instance::stream_id(&id), 0, 100)
        .await
        .expect("read");
    assert_eq!(stored[0].causation_id, Some(abandoned.event_id));
    assert_eq!(stored[0].actor, "journey:abandoned-cart@1");

    // Why was the reminder sent? Message <- steps <- start <- CartAbandoned <- the cart's items.
    let why = crate::journey::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder[0])
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
    if let Some(crate::journey::definition::Step::Send(send)) = v2.steps.iter_mut().find(|s| s.id() == "reminder") {
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
                reason: crate::journey::instance::ExitReason::CustomerDeactivated,
                ..
            })
        ));
    }
    assert!(
        world.advance(chrono::Duration::days(2)).await.is_empty(),
        "nothing is sent afterwards"
    );
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
        Arc::new(crate::journey::catalog::StoredCatalog::new(counting.clone())),
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
    assert_eq!(
        counting.take_reads(),
        vec![crate::journey::catalog::INDEX_STREAM.to_string()]
    );
    assert_eq!(
        world.docs.reads.load(Ordering::SeqCst),
        0,
        "no profile, no journey index"
    );

    // A page of five: the signal once.
    let handler = crate::journey::campaigns::CampaignHandler::new(
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
    assert_eq!(
        counting.take_reads(),
        vec![crate::journey::catalog::INDEX_STREAM.to_string()]
    );
    assert_eq!(world.docs.reads.load(Ordering::SeqCst), 0);

    // The order the journey exits on still reaches it.
    let order = world
        .commerce_event("order-r1", "OrderPlaced", json!({ "order_id": "r1" }))
        .await;
    let exited = handler.engine().on_event(&order).await.expect("order");
    assert_eq!(exited.advanced, started);
}
