//! Given/when/then tests of the cart aggregate, and of its service over the
//! in-memory store and scheduler.

use super::*;
use crate::clock::VirtualClock;
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::EventStore;
use crate::scheduler::{Scheduler, SchedulerError, TimerKind};
use crate::testing::{test_time, AggregateScenario, InMemoryEventStore, InMemoryScheduler, Then};
use chrono::Duration;
use std::sync::Arc;

/// The cart `k1` after `events` (the `n`th at [`test_time`] plus `n - 1`
/// minutes); a command is decided a minute after the last.
fn given_cart(events: &[CartEvent]) -> AggregateScenario<CartAggregate> {
    AggregateScenario::new("k1", ()).given(events)
}

fn created() -> Vec<CartEvent> {
    vec![CartEvent::CartCreated {
        cart_id: "k1".into(),
        customer_id: "c1".into(),
        currency: "EUR".into(),
    }]
}

fn add(product: &str, quantity: u32, price: i64) -> AddItem {
    AddItem {
        product_id: product.into(),
        name: format!("Product {product}"),
        quantity,
        unit_price_minor: price,
    }
}

fn with_items() -> Vec<CartEvent> {
    let mut events = created();
    for cmd in [add("sku-1", 2, 1250), add("sku-2", 1, 499)] {
        events.extend(given_cart(&events).when(CartCommand::AddItem(cmd)).events());
    }
    events
}

/// The field a refused command names as invalid.
fn invalid_field(decided: Then<CartAggregate>) -> String {
    match decided.error() {
        CartError::Invalid { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn creating_a_cart_needs_a_currency_code() {
    given_cart(&[])
        .when(CartCommand::Create(CreateCart {
            customer_id: "c1".into(),
            currency: "EUR".into(),
        }))
        .then_expect_events(&created());
    for bad in ["eur", "EURO", "E1R", ""] {
        let r = given_cart(&[]).when(CartCommand::Create(CreateCart {
            customer_id: "c1".into(),
            currency: bad.into(),
        }));
        assert_eq!(invalid_field(r), "currency", "{bad}");
    }
    let again = given_cart(&created()).when(CartCommand::Create(CreateCart {
        customer_id: "c1".into(),
        currency: "EUR".into(),
    }));
    assert!(matches!(again.error(), CartError::Conflict { .. }));
    given_cart(&[])
        .when(CartCommand::StartCheckout)
        .then_expect_error(CartError::NotFound);
}

#[test]
fn adding_an_existing_product_increases_its_quantity() {
    let mut events = with_items();
    events.extend(
        given_cart(&events)
            .when(CartCommand::AddItem(add("sku-1", 3, 1300)))
            .events(),
    );
    let scenario = given_cart(&events);
    let cart = scenario.state().expect("cart");
    assert_eq!(cart.items.len(), 2);
    let line = cart.item("sku-1").expect("line");
    assert_eq!((line.quantity, line.unit_price_minor), (5, 1300), "latest price");
    assert_eq!(cart.total_value_minor(), 5 * 1300 + 499);
    assert_eq!(cart.version, 4);
    assert_eq!(cart.last_activity_at, test_time() + Duration::minutes(3));
}

#[test]
fn bad_items_name_their_field() {
    let s = given_cart(&created());
    assert_eq!(
        invalid_field(s.when(CartCommand::AddItem(add("sku-1", 0, 100)))),
        "quantity"
    );
    assert_eq!(
        invalid_field(s.when(CartCommand::AddItem(add("sku-1", MAX_QUANTITY_PLUS_ONE, 100)))),
        "quantity"
    );
    assert_eq!(
        invalid_field(s.when(CartCommand::AddItem(add("sku-1", 1, -1)))),
        "unit_price_minor"
    );
    assert_eq!(
        invalid_field(s.when(CartCommand::AddItem(add("sku-1", 2, i64::MAX)))),
        "unit_price_minor"
    );
    assert_eq!(
        invalid_field(s.when(CartCommand::AddItem(add("sku 1", 1, 1)))),
        "product_id"
    );
    let mut blank = add("sku-1", 1, 1);
    blank.name = "  ".into();
    assert_eq!(invalid_field(s.when(CartCommand::AddItem(blank))), "name");
}

const MAX_QUANTITY_PLUS_ONE: u32 = cart::MAX_QUANTITY + 1;

#[test]
fn removing_needs_the_product_in_the_cart() {
    let s = given_cart(&with_items());
    s.when(CartCommand::RemoveItem(RemoveItem {
        product_id: "sku-9".into(),
    }))
    .then_expect_error(CartError::ItemNotFound("sku-9".into()));
    let removed = s
        .when(CartCommand::RemoveItem(RemoveItem {
            product_id: "sku-1".into(),
        }))
        .events();
    assert_eq!(
        removed,
        vec![CartEvent::ItemRemovedFromCart {
            product_id: "sku-1".into(),
            quantity: 2
        }]
    );
    let mut events = with_items();
    events.extend(removed);
    assert_eq!(given_cart(&events).state().expect("cart").total_value_minor(), 499);
}

#[test]
fn a_reported_checkout_creates_an_unknown_cart_with_its_lines_or_checks_out_a_known_one() {
    let report = |items: Vec<AddItem>| {
        CartCommand::ReportCheckout(ReportCheckout {
            customer_id: "c1".into(),
            currency: "USD".into(),
            items,
        })
    };
    let events = given_cart(&[])
        .when(report(vec![add("sku-1", 1, 1900), add("sku-2", 2, 300)]))
        .events();
    let types: Vec<_> = events.iter().map(CartEvent::event_type).collect();
    assert_eq!(
        types,
        ["CartCreated", "ItemAddedToCart", "ItemAddedToCart", "CheckoutStarted"]
    );
    assert!(matches!(
        events.last(),
        Some(CartEvent::CheckoutStarted {
            total_value_minor: 2500,
            ..
        })
    ));
    let known = given_cart(&with_items())
        .when(report(vec![add("other", 1, 1)]))
        .events();
    assert!(
        matches!(
            &known[..],
            [CartEvent::CheckoutStarted {
                total_value_minor: 2999,
                ..
            }]
        ),
        "a known cart keeps its own lines: {known:?}"
    );
    assert!(matches!(
        given_cart(&[]).when(report(vec![])).error(),
        CartError::Conflict { .. }
    ));
    assert_eq!(
        invalid_field(given_cart(&[]).when(report(vec![add("a b", 1, 1)]))),
        "items[0].product_id"
    );
}

#[test]
fn checkout_needs_items_and_freezes_the_cart() {
    assert!(matches!(
        given_cart(&created()).when(CartCommand::StartCheckout).error(),
        CartError::Conflict { .. }
    ));
    let mut events = with_items();
    let checkout = given_cart(&events).when(CartCommand::StartCheckout).events();
    assert!(matches!(
        &checkout[..],
        [CartEvent::CheckoutStarted {
            total_value_minor: 2999,
            ..
        }]
    ));
    events.extend(checkout);
    let s = given_cart(&events);
    assert_eq!(s.state().map(|c| c.status), Some(CartStatus::CheckedOut));
    for command in [
        CartCommand::AddItem(add("sku-3", 1, 1)),
        CartCommand::RemoveItem(RemoveItem {
            product_id: "sku-1".into(),
        }),
        CartCommand::StartCheckout,
        CartCommand::MarkAbandoned { now: test_time() },
    ] {
        assert!(matches!(s.when(command).error(), CartError::Conflict { .. }));
    }
}

#[test]
fn abandoning_records_what_was_left_and_for_how_long() {
    let events = with_items();
    let now = test_time() + Duration::minutes(65);
    let abandoned = given_cart(&events).when(CartCommand::MarkAbandoned { now }).events();
    let [CartEvent::CartAbandoned {
        cart_id,
        customer_id,
        items,
        total_value_minor,
        currency,
        abandoned_at,
        time_in_cart_seconds,
    }] = &abandoned[..]
    else {
        panic!("{abandoned:?}");
    };
    assert_eq!(
        (cart_id.as_str(), customer_id.as_str(), currency.as_str()),
        ("k1", "c1", "EUR")
    );
    assert_eq!((items.len(), *total_value_minor), (2, 2999));
    assert_eq!((*abandoned_at, *time_in_cart_seconds), (now, 65 * 60));
    let mut all = events;
    all.extend(abandoned);
    let s = given_cart(&all);
    assert_eq!(s.state().map(|c| c.status), Some(CartStatus::Abandoned));
    assert!(matches!(
        s.when(CartCommand::MarkAbandoned { now }).error(),
        CartError::Conflict { .. }
    ));
    assert!(matches!(
        s.when(CartCommand::AddItem(add("sku-3", 1, 1))).error(),
        CartError::Conflict { .. }
    ));
}

// The service.

struct Harness {
    store: Arc<InMemoryEventStore>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    service: CartService,
}

fn harness() -> Harness {
    let store = Arc::new(InMemoryEventStore::default());
    let scheduler = Arc::new(InMemoryScheduler::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let service =
        CartService::new(store.clone(), clock.clone(), scheduler.clone()).with_inactivity(Duration::minutes(30));
    Harness {
        store,
        scheduler,
        clock,
        service,
    }
}

fn view(cart: &Cart, _events: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "id": cart.id, "version": cart.version }))
}

async fn run(h: &Harness, command: CartCommand) -> Result<CartExecuted, CartCommandError> {
    h.service
        .execute("k1", &command, &CommandMeta::new(Actor::system("test")), None, &view)
        .await
}

fn create() -> CartCommand {
    CartCommand::Create(CreateCart {
        customer_id: "c1".into(),
        currency: "EUR".into(),
    })
}

#[tokio::test]
async fn every_activity_replaces_the_timer_and_checkout_replaces_it_by_the_checkout_timer() {
    let h = harness();
    let name = inactivity_timer_name("k1");
    run(&h, create()).await.expect("created");
    let timer = h.scheduler.get(&name).await.expect("get").expect("set");
    assert_eq!(timer.kind, TimerKind::CartInactivity);
    assert_eq!(timer.stream_id, "cart-k1");
    assert_eq!(timer.customer_id.as_deref(), Some("c1"));
    assert_eq!(
        (timer.set_at_version, timer.due_at),
        (1, test_time() + Duration::minutes(30))
    );

    h.clock.advance(Duration::minutes(10));
    run(&h, CartCommand::AddItem(add("sku-1", 1, 100)))
        .await
        .expect("added");
    let timer = h.scheduler.get(&name).await.expect("get").expect("set");
    assert_eq!(
        (timer.set_at_version, timer.due_at),
        (2, test_time() + Duration::minutes(40))
    );
    assert_eq!(h.scheduler.pending().len(), 1, "replaced, not added");

    let stored = h.store.read_stream("cart-k1", 0, 10).await.expect("read");
    assert!(stored.iter().all(|e| e.customer_id.as_deref() == Some("c1")));

    h.clock.advance(Duration::minutes(5));
    run(&h, CartCommand::StartCheckout).await.expect("checked out");
    let timer = h.scheduler.get(&name).await.expect("get").expect("set");
    assert_eq!(
        (timer.set_at_version, timer.due_at),
        (3, test_time() + Duration::minutes(15 + DEFAULT_CHECKOUT_MINUTES)),
        "the checkout's timer, due one checkout period after it started"
    );
    assert_eq!(h.scheduler.pending().len(), 1, "replaced, not added");
}

/// Decision 0069: a checkout no order completed within the checkout period
/// is abandoned once; its timer is then gone.
#[tokio::test]
async fn a_checkout_timer_abandons_the_checkout_once() {
    let h = harness();
    let name = inactivity_timer_name("k1");
    run(&h, create()).await.expect("created");
    run(&h, CartCommand::AddItem(add("sku-1", 2, 100)))
        .await
        .expect("added");
    h.clock.advance(Duration::minutes(10));
    run(&h, CartCommand::StartCheckout).await.expect("checked out");
    let timer = h.scheduler.get(&name).await.expect("get").expect("set");

    let now = h.clock.advance(Duration::minutes(DEFAULT_CHECKOUT_MINUTES));
    let outcome = h.service.on_inactivity_timer(&timer, now).await.expect("fired");
    let TimerOutcome::CheckoutAbandoned { events } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(events[0].event_type, "CheckoutAbandoned");
    assert_eq!(events[0].customer_id.as_deref(), Some("c1"));
    assert_eq!(events[0].data["cart_id"], "k1");
    assert_eq!(events[0].data["total_value_minor"], 200);
    assert_eq!(
        events[0].data["time_in_checkout_seconds"],
        DEFAULT_CHECKOUT_MINUTES * 60
    );
    let cart = h.service.load("k1").await.expect("load").expect("cart");
    assert_eq!(cart.status, CartStatus::CheckedOut);
    assert_eq!(cart.checkout_abandoned_at, Some(now));
    assert_eq!(
        h.service.on_inactivity_timer(&timer, now).await,
        Ok(TimerOutcome::NotOpen),
        "a redelivered timer is a no-op"
    );
    h.service.sync_timer(&cart).await.expect("sync");
    assert_eq!(h.scheduler.get(&name).await.expect("get"), None);
    assert!(
        matches!(
            given_cart(&with_items())
                .when(CartCommand::MarkCheckoutAbandoned { now })
                .error(),
            CartError::Conflict { .. }
        ),
        "an open cart has no checkout to abandon"
    );
}

#[tokio::test]
async fn a_current_timer_abandons_a_stale_one_does_nothing() {
    let h = harness();
    let name = inactivity_timer_name("k1");
    run(&h, create()).await.expect("created");
    let stale = h.scheduler.get(&name).await.expect("get").expect("set");
    run(&h, CartCommand::AddItem(add("sku-1", 2, 100)))
        .await
        .expect("added");
    let current = h.scheduler.get(&name).await.expect("get").expect("set");

    let now = h.clock.advance(Duration::minutes(31));
    assert_eq!(
        h.service.on_inactivity_timer(&stale, now).await,
        Ok(TimerOutcome::Superseded)
    );
    let outcome = h.service.on_inactivity_timer(&current, now).await.expect("fired");
    let TimerOutcome::Abandoned { events } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(events[0].event_type, "CartAbandoned");
    assert_eq!(events[0].version, 3);
    assert_eq!(events[0].customer_id.as_deref(), Some("c1"));
    assert_eq!(events[0].data["total_value_minor"], 200);
    assert_eq!(events[0].data["time_in_cart_seconds"], 31 * 60);
    // Delivered twice: the second delivery is a no-op.
    assert_eq!(
        h.service.on_inactivity_timer(&current, now).await,
        Ok(TimerOutcome::NotOpen)
    );
    let mut other = current.clone();
    other.kind = TimerKind::JourneyWait;
    assert_eq!(
        h.service.on_inactivity_timer(&other, now).await,
        Ok(TimerOutcome::Ignored)
    );
}

#[tokio::test]
async fn a_timer_of_a_deactivated_customer_abandons_nothing() {
    let h = harness();
    let customers = crate::customer::CustomerService::new(h.store.clone(), h.clock.clone())
        .with_identifiers(crate::testing::identifiers());
    let respond = |_: &crate::customer::Customer, _: &[EventEnvelope]| (200, serde_json::Value::Null);
    let meta = CommandMeta::new(Actor::system("test"));
    let register =
        crate::customer::CustomerCommand::Register(crate::testing::registration("c1@example.com", "C", "One", "UTC"));
    customers
        .execute("c1", &register, &meta, None, &respond)
        .await
        .expect("registered");
    run(&h, create()).await.expect("created");
    let timer = h
        .scheduler
        .get(&inactivity_timer_name("k1"))
        .await
        .expect("get")
        .expect("set");
    let deactivate = crate::customer::CustomerCommand::Deactivate(crate::customer::DeactivateCustomer {
        reason: crate::customer::DeactivationReason::CustomerRequest,
        notes: None,
    });
    customers
        .execute("c1", &deactivate, &meta, None, &respond)
        .await
        .expect("deactivated");

    let now = h.clock.advance(Duration::minutes(31));
    assert_eq!(
        h.service.on_inactivity_timer(&timer, now).await,
        Ok(TimerOutcome::CustomerInactive)
    );
    let types: Vec<String> = h
        .store
        .read_stream("cart-k1", 0, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(!types.iter().any(|t| t == "CartAbandoned"), "{types:?}");
}

#[tokio::test]
async fn a_failed_schedule_is_retryable_and_the_retry_sets_the_timer() {
    let h = harness();
    let name = inactivity_timer_name("k1");
    run(&h, create()).await.expect("created");
    h.scheduler
        .fail_with(Some(SchedulerError::Unavailable("throttled".into())));
    let key = IdempotencyKey::new("p", "retry-1", "POST", "/carts/k1/items", b"{}");
    let meta = CommandMeta::new(Actor::system("test"));
    let command = CartCommand::AddItem(add("sku-1", 1, 100));
    let err = h
        .service
        .execute("k1", &command, &meta, Some(&key), &view)
        .await
        .expect_err("timer failed");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        h.store.read_stream("cart-k1", 0, 10).await.expect("read").len(),
        2,
        "events stored"
    );
    assert_eq!(
        h.scheduler.pending()[0].set_at_version,
        1,
        "the old timer is still pending"
    );

    h.scheduler.fail_with(None);
    let again = h
        .service
        .execute("k1", &command, &meta, Some(&key), &view)
        .await
        .expect("replayed");
    assert!(matches!(again, CartExecuted::Replayed { status: 200, .. }));
    assert_eq!(
        h.store.read_stream("cart-k1", 0, 10).await.expect("read").len(),
        2,
        "applied once"
    );
    let timer = h.scheduler.get(&name).await.expect("get").expect("set");
    assert_eq!(timer.set_at_version, 2);
}

#[tokio::test]
async fn refused_commands_write_nothing_and_set_no_timer() {
    let h = harness();
    let refused = run(&h, CartCommand::AddItem(add("sku-1", 1, 100))).await;
    assert_eq!(refused, Err(CartCommandError::Rejected(CartError::NotFound)));
    assert!(h.scheduler.pending().is_empty());
    assert!(h.store.read_stream("cart-k1", 0, 10).await.expect("read").is_empty());
}
