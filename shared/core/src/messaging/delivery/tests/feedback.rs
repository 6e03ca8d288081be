//! Provider feedback: bounces and complaints act once; feedback settles an
//! unknown outcome; a `Send` for a message already sent writes nothing.

use super::*;

#[tokio::test]
async fn bounce_and_complaint_feedback_act_once() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let complaint = MessageEvent::EmailComplained {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
        address_hash: w.delivery.identifiers().email("ana@example.com"),
    };
    let first = w
        .delivery
        .record_feedback(complaint.clone(), "ana@example.com", "ses-1")
        .await;
    assert_eq!(first.expect("record"), FeedbackOutcome::Recorded);
    let again = w.delivery.record_feedback(complaint, "ana@example.com", "ses-1").await;
    assert_eq!(again.expect("record"), FeedbackOutcome::Duplicate);
    let customer = w.customer().await;
    assert!(
        customer.consent(Purpose::Marketing, Channel::Email).is_none(),
        "complaint revokes"
    );
    // Marketing is suppressed; transactional mail still goes after a complaint.
    let confirmation = w.requested(2, "order-confirmation", Category::Transactional);
    assert!(matches!(
        w.delivery.on_requested(&confirmation).await.expect("deliver"),
        DeliveryOutcome::Sent { .. }
    ));

    let bounce = MessageEvent::EmailBounced {
        message_id: "msg-2".into(),
        customer_id: CUSTOMER.into(),
        bounce_type: crate::messaging::events::BounceType::Permanent,
        address_hash: w.delivery.identifiers().email("ana@example.com"),
        diagnostic: Some("550 5.1.1 user unknown".into()),
    };
    w.delivery
        .record_feedback(bounce, "ana@example.com", "ses-2")
        .await
        .expect("record");
    let customer = w.customer().await;
    assert!(customer.email_invalidated);
    let next = w.requested(3, "order-confirmation", Category::Transactional);
    assert_eq!(
        w.delivery.on_requested(&next).await.expect("deliver"),
        DeliveryOutcome::Suppressed
    );
    assert_eq!(
        w.stream_types("msg-2").await,
        vec!["MessageClaimed", "MessageSent", "EmailBounced"]
    );
}

#[tokio::test]
async fn delivery_feedback_settles_an_unknown_outcome_when_the_send_event_is_missing() {
    let w = World::new().await;
    w.provider.lose_answer(timeout());
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let delivered = MessageEvent::EmailDelivered {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
    };
    let outcome = w
        .delivery
        .record_feedback(delivered.clone(), "ana@example.com", "delivery-1")
        .await
        .expect("record");
    assert_eq!(outcome, FeedbackOutcome::Recorded);
    let again = w
        .delivery
        .record_feedback(delivered, "ana@example.com", "delivery-1")
        .await;
    assert_eq!(again.expect("record"), FeedbackOutcome::Duplicate);
    let settled = [UNKNOWN.as_slice(), &["MessageSent", "EmailDelivered"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    let check = w.message_timer("msg-1").expect("a settle check");
    w.clock.advance(Duration::minutes(20));
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 1);
}

#[tokio::test]
async fn a_send_event_for_a_message_already_recorded_sent_writes_nothing() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Duplicate);
    // Nor for a message never claimed here.
    assert_eq!(w.ses_send(7, "send-7").await, FeedbackOutcome::Duplicate);
    assert_eq!(w.stream_types("msg-1").await, vec!["MessageClaimed", "MessageSent"]);
    assert!(w.stream_types("msg-7").await.is_empty());
    // A Reject after the send is recorded (it never went out).
    let rejected = MessageEvent::MessageContentRejected {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
        reason: "Bad content".into(),
    };
    let outcome = w
        .delivery
        .record_feedback(rejected, "ana@example.com", "reject-1")
        .await;
    assert_eq!(outcome.expect("record"), FeedbackOutcome::Recorded);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageClaimed", "MessageSent", "MessageContentRejected"]
    );
}
