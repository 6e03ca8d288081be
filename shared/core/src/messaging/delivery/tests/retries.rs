//! Retries and parking: throttling retried in process, errors that prove
//! nothing was sent give the claim back, permanent failures (a provider
//! refusal, a template that does not render) parked; a settle check that cannot
//! be set is set by the redelivery.

use super::*;

#[tokio::test]
async fn throttling_is_retried_and_a_permanent_failure_is_parked() {
    let w = World::new().await;
    w.provider.fail_before_taking([
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
    ]);
    let outcome = w
        .delivery
        .on_requested(&w.requested(1, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert!(matches!(outcome, DeliveryOutcome::Sent { .. }), "{outcome:?}");

    // Unavailable: recorded, the claim given back, the next delivery sends.
    w.provider
        .fail_before_taking([ProviderError::Unavailable("down".into())]);
    w.given_back_then_sent(2).await;

    w.provider
        .fail_before_taking([ProviderError::Rejected("bad address".into())]);
    let outcome = w
        .delivery
        .on_requested(&w.requested(3, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Failed);
    let letters = w.dead_letters.letters.lock().expect("lock").clone();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("bad address"), "{:?}", letters[0]);
}

#[tokio::test]
async fn a_missing_template_variable_fails_the_message_for_good_naming_it() {
    let w = World::new().await;
    let mut request = w.requested(1, reminder(), Category::Marketing);
    request.data = json!({
        "message_id": "msg-1", "instance_id": "i-1", "campaign_id": "abandoned-cart", "campaign_version": 1,
        "step_id": "reminder", "customer_id": CUSTOMER, "channel": "email", "template": reminder(),
        "category": "marketing", "purpose": "marketing", "data": {}
    });
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    assert!(w.provider.sent().is_empty());
    let letters = w.dead_letters.letters.lock().expect("lock").clone();
    assert!(letters[0].reason.contains("data."), "{:?}", letters[0].reason);
}

#[tokio::test]
async fn a_template_written_for_another_channel_fails_the_message_for_good_and_sends_nothing() {
    let w = World::new().await;
    // An email message naming the checkout's SMS template (a campaign can
    // name a stored template of any channel; decision 0077).
    let request = w.requested(1, "checkout-abandonment-sms", Category::Transactional);
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    assert!(w.provider.sent().is_empty());
    assert_eq!(w.stream_types("msg-1").await, vec!["MessageFailed"]);
    let letters = w.dead_letters.letters.lock().expect("lock").clone();
    assert!(
        letters[0]
            .reason
            .contains("written for sms, and this message goes by email"),
        "{:?}",
        letters[0].reason
    );
}

#[tokio::test]
async fn errors_that_prove_nothing_was_sent_release_the_claim_at_once() {
    let w = World::new().await;
    // Throttled on every in-process attempt: given back, sent on redelivery.
    w.provider.fail_before_taking([
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
    ]);
    w.given_back_then_sent(1).await;
    // A 4xx about the message: failed for good at once.
    w.provider
        .fail_before_taking([ProviderError::Rejected("InvalidParameter (HTTP 400)".into())]);
    let rejected = w.requested(2, "order-confirmation", Category::Transactional);
    assert_eq!(
        w.delivery.on_requested(&rejected).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    assert_eq!(w.stream_types("msg-2").await, vec!["MessageClaimed", "MessageFailed"]);
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert!(
        w.scheduler.pending().is_empty(),
        "no settle checks: {:?}",
        w.scheduler.pending()
    );
}

#[tokio::test]
async fn a_settle_check_that_cannot_be_scheduled_is_set_by_the_redelivery() {
    let w = World::new().await;
    w.provider.fail_before_taking([server_error()]);
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    w.scheduler
        .fail_with(Some(crate::scheduler::SchedulerError::Unavailable("down".into())));
    assert_eq!(
        w.delivery.on_requested(&request).await.map_err(|e| e.kind()),
        Err(FailureKind::Retryable)
    );
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    w.scheduler.fail_with(None);
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("redelivery"),
        DeliveryOutcome::Duplicate
    );
    let check = w.message_timer("msg-1").expect("the settle check, set now");
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}
