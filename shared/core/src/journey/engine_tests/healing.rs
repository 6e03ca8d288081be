//! A start or a step that stopped half-way (after its append, before its
//! timer or index write) is made good by its retry or redelivery.

use super::*;

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
    assert_eq!(
        world.engine.on_timer(&first).await.map_err(|e| e.kind()),
        Err(FailureKind::Retryable)
    );
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
        crate::journey::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder)
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
    assert_eq!(
        crashing.on_event(&abandoned).await.map_err(|e| e.kind()),
        Err(FailureKind::Retryable)
    );
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
