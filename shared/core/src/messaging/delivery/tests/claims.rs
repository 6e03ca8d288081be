//! Claims and exactly once: every request sends once however often and in
//! whatever order it comes; a claim left by a crash is found, checked when its
//! window ends, and sent again or settled.

use super::*;

#[tokio::test]
async fn every_request_delivered_three_times_in_shuffled_order_sends_exactly_once() {
    let w = World::new().await;
    let requests: Vec<EventEnvelope> = (1..=3)
        .map(|n| w.requested(n, "order-confirmation", Category::Transactional))
        .collect();
    // Three copies each, interleaved in a fixed shuffled order.
    let order = [2, 0, 1, 1, 2, 0, 0, 2, 1];
    for i in order {
        w.delivery.on_requested(&requests[i]).await.expect("deliver");
    }
    let mut sent = w.provider.sent();
    sent.sort();
    assert_eq!(sent, vec!["msg-1", "msg-2", "msg-3"]);
    assert_eq!(w.stream_types("msg-1").await, vec!["MessageClaimed", "MessageSent"]);
    // Concurrent copies: the stream version is the claim.
    let again = w.requested(4, "order-confirmation", Category::Transactional);
    let (a, b, c) = tokio::join!(
        w.delivery.on_requested(&again),
        w.delivery.on_requested(&again),
        w.delivery.on_requested(&again)
    );
    let outcomes = [a.expect("a"), b.expect("b"), c.expect("c")];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, DeliveryOutcome::Sent { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(w.provider.sent().iter().filter(|m| *m == "msg-4").count(), 1);
}

#[tokio::test]
async fn a_claim_left_by_a_crash_is_stale_when_its_window_ends_and_the_email_is_sent_again() {
    let (w, buffer) = World::new().await.metered();
    // The request was never acknowledged, so it comes again: it finds the
    // claim, sends nothing, and makes sure the settle check exists.
    let (_, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(check.due_at, w.clock.now() + Duration::minutes(15));
    assert!(w.provider.sent().is_empty());

    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        vec![
            "MessageClaimed",
            "MessageOutcomeUnknown",
            "MessageNotAccepted",
            "MessageClaimed",
            "MessageSent"
        ]
    );
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    let docs = buffer.documents();
    let stale: Vec<_> = docs
        .iter()
        .filter(|d| d.get(outcome_metrics::STALE_MESSAGE_CLAIMS).is_some())
        .collect();
    assert_eq!(stale.len(), 1, "{docs:?}");
    assert_eq!(stale[0]["Channel"], "email");
    assert_eq!(stale[0]["Reason"], "stale-claim");
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![outcome_metrics::settlement::RESEND]
    );
}

#[tokio::test]
async fn a_claim_left_by_a_crash_after_ses_took_the_email_is_settled_by_its_send_event() {
    let w = World::new().await;
    let (_, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageClaimed", "MessageAccepted", "MessageSent"]
    );
    assert!(
        w.provider.sent().is_empty(),
        "the crashed delivery sent it; nothing more"
    );
}

#[tokio::test]
async fn a_redelivery_after_the_window_sets_the_check_for_a_moment_later() {
    let w = World::new().await;
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    w.claim_and_crash(&request).await;
    // The request comes back only after the window has ended.
    w.clock.advance(Duration::minutes(20));
    w.delivery.on_requested(&request).await.expect("redelivery");
    let check = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(check.due_at, w.clock.now() + Duration::seconds(5));
    w.clock.advance(Duration::seconds(5));
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}

/// A redelivered settle check of an earlier claim schedules the check of the
/// newer claim a crashed resend left open (found by scripts/chaos.py's crash points).
#[tokio::test]
async fn a_crash_after_the_claim_of_a_resend_still_gets_a_settle_check() {
    let w = World::new().await;
    let (request, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(check.set_at_version, 1);
    w.clock.advance(Duration::minutes(15));
    // The check fires: stale, given back, sent again: the resend claims
    // (v4) and its invocation dies before the provider call (what the
    // settle check's run would have appended, appended here by hand).
    let parsed = MessageRequest::from_envelope(&request).expect("request");
    let left = vec![
        MessageEvent::MessageOutcomeUnknown {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: parsed.channel,
            error: "no outcome recorded within 900 s of the claim".into(),
            settle_by: Some(w.clock.now()),
        },
        MessageEvent::MessageNotAccepted {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: parsed.channel,
            reason: "SES reported nothing".into(),
        },
        MessageEvent::claim(&parsed, "0".repeat(64)),
    ];
    w.append_by_hand("msg-1", ExpectedVersion::Exactly(1), &left).await;
    // The crashed invocation's message (the fired check) comes back.
    w.fire(&check).await;
    let pending = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(
        pending.set_at_version, 4,
        "a settle check for the resend's claim: {pending:?}"
    );
    // The resend's window is twice the first's.
    assert_eq!(pending.due_at, w.clock.now() + Duration::minutes(30));
}
