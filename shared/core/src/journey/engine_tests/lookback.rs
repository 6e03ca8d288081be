//! The lookback (decision 0033): events the queue delivered before the
//! trigger, or while the start was half done, still act on the instance.

use super::*;
use crate::assembly::AssembledGroups;

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
