//! Correlation and causation: every journey event descends from its cause,
//! back to the trigger.

use super::*;

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
        .read_stream(&crate::journey::instance::stream_id(&id), 0, 100)
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
        .read_stream(&crate::journey::instance::stream_id(&id), 0, 100)
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
    let why = crate::journey::explain::explain(world.events.as_ref(), world.docs.as_ref(), &reminder[0])
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
