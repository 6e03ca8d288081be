//! A revoked consent ends the customer's journeys whose every send needs
//! it, mid-wait, with their timers (issue 19 item 3, decision 0067); a
//! journey that still has something to send on another channel runs on.

use super::*;
use crate::journey::instance::ExitReason;

/// Stores the customer's revocation of `purpose` on `channel` (as the
/// customer aggregate writes it) and hands it to the engine.
async fn revoke(world: &World, purpose: &str, channel: &str) -> EngineOutcome {
    let revoked = world
        .commerce_event(
            &crate::customer::stream_id(CUSTOMER),
            "ConsentRevoked",
            json!({ "purpose": purpose, "channel": channel, "reason": "preference centre" }),
        )
        .await;
    world.engine.on_event(&revoked).await.expect("revocation")
}

fn exited_by_consent(history: &[JourneyEvent]) -> bool {
    matches!(
        history.last(),
        Some(JourneyEvent::JourneyExited {
            reason: ExitReason::ConsentRevoked,
            event_id: Some(_),
            ..
        })
    )
}

#[tokio::test]
async fn revoking_email_marketing_ends_the_email_only_journeys_and_leaves_the_others() {
    let world = World::with_shipped(&["abandoned-cart", "checkout-abandonment"]).await;
    let cart = world.abandon("r1").await.expect("abandon").started;
    let checkout = world
        .commerce_event(
            "cart-r2",
            "CheckoutAbandoned",
            json!({ "cart_id": "r2", "total_value_minor": 7000 }),
        )
        .await;
    let checkout = world.engine.on_event(&checkout).await.expect("checkout").started;
    assert_eq!((cart.len(), checkout.len()), (1, 1));
    assert_eq!(world.scheduler.pending().len(), 2, "both wait");

    // SMS marketing, and email for analytics: nothing of either journey
    // needs only those.
    for (purpose, channel) in [("marketing", "sms"), ("analytics", "email")] {
        let outcome = revoke(&world, purpose, channel).await;
        assert!(outcome.advanced.is_empty(), "{purpose} on {channel}: {outcome:?}");
    }
    assert_eq!(world.scheduler.pending().len(), 2);

    // Email marketing: the cart reminders (email only) end mid-wait, with
    // their timer; the checkout journey still has its SMS and runs on.
    let outcome = revoke(&world, "marketing", "email").await;
    assert_eq!(outcome.advanced, cart);
    assert!(exited_by_consent(&world.journey_events(&cart[0]).await));
    assert!(!exited_by_consent(&world.journey_events(&checkout[0]).await));
    assert_eq!(world.scheduler.pending().len(), 1, "only the checkout's wait is left");
    let sent = world.advance(chrono::Duration::hours(25)).await;
    assert_eq!(sent.len(), 1, "the checkout's SMS; nothing of the cart's: {sent:?}");
    let requested = |history: Vec<JourneyEvent>| {
        history
            .iter()
            .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
            .count()
    };
    assert_eq!(
        requested(world.journey_events(&checkout[0]).await),
        2,
        "the email at the start, the SMS a day later"
    );
    assert_eq!(requested(world.journey_events(&cart[0]).await), 0);

    // Delivered again (an at-least-once queue): nothing more.
    let again = revoke(&world, "marketing", "email").await;
    assert!(again.advanced.is_empty(), "{again:?}");
}

#[test]
fn a_campaign_needs_a_consent_for_every_send_only_if_it_sends_and_all_its_sends_need_it() {
    use crate::consent::{Channel, Purpose};
    let cart = shipped("abandoned-cart");
    assert!(cart.sends_only_under(Purpose::Marketing, Channel::Email));
    assert!(!cart.sends_only_under(Purpose::Marketing, Channel::Sms));
    assert!(!cart.sends_only_under(Purpose::Analytics, Channel::Email));
    let checkout = shipped("checkout-abandonment");
    assert!(!checkout.sends_only_under(Purpose::Marketing, Channel::Email));
    assert!(!checkout.sends_only_under(Purpose::Marketing, Channel::Sms));
    // Transactional sends need no consent: never ended by a revocation.
    let confirmation = shipped("order-confirmation");
    assert!(!confirmation.sends_only_under(Purpose::Marketing, Channel::Email));
}
