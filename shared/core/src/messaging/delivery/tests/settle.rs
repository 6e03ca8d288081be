//! Unknown outcomes (decision 0032): the claim kept, settled by SES's `Send` or
//! by the settle check, sent again with a growing window up to the last allowed
//! send; SMS and push at most once.

use super::*;

#[tokio::test]
async fn an_answer_lost_after_ses_took_the_email_keeps_the_claim_and_its_send_event_settles_it() {
    let w = World::new().await;
    w.provider.lose_answer(timeout());
    let request = w.order_confirmation_unknown().await;
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    // The claim holds: redeliveries send nothing.
    for _ in 0..3 {
        assert_eq!(
            w.delivery.on_requested(&request).await.expect("again"),
            DeliveryOutcome::Duplicate
        );
    }
    // The settle check waits for the end of the window after the claim.
    let check = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(check.due_at, w.clock.now() + Duration::minutes(15));
    assert_eq!(check.kind, TimerKind::MessageDeferral);
    assert_eq!(check.data["settle"]["message_id"], "msg-1");

    // SES's Send comes seconds later: sent, and counted for the caps.
    w.clock.advance(Duration::seconds(5));
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Duplicate);
    let settled = [UNKNOWN.as_slice(), &["MessageAccepted", "MessageSent"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    let recent = recent_sends(w.docs.as_ref(), CUSTOMER, w.clock.now())
        .await
        .expect("log");
    assert_eq!(recent.len(), 1, "{recent:?}");
    let sent = w.message_events("msg-1").await;
    assert_eq!(sent[3].data["provider_message_id"], "ses-1");

    // The check, when it fires (twice: timers come at least once), does nothing.
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 1);
}

#[tokio::test]
async fn no_send_event_within_the_window_means_ses_never_took_it_and_it_is_sent_again() {
    let (w, buffer) = World::new().await.metered();
    // A 500 before SES took it: the caller cannot tell.
    w.provider.fail_before_taking([server_error()]);
    let request = w.order_confirmation_unknown().await;
    assert_eq!(w.provider.times_sent("msg-1"), 0);
    let check = w.message_timer("msg-1").expect("a settle check");

    // Fired early (or redelivered early): it waits for the window's end.
    use crate::scheduler::TimerHandler;
    let settle = settle_check(&check);
    assert_eq!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("early"),
        SettleOutcome::Waiting { until: check.due_at }
    );

    // The scheduler's whole seconds may fire it a moment before the end.
    w.clock.advance(Duration::minutes(15) - Duration::milliseconds(600));
    assert!(matches!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("check"),
        SettleOutcome::Resent(DeliveryOutcome::Sent { .. })
    ));
    let resent = [
        UNKNOWN.as_slice(),
        &["MessageNotAccepted", "MessageClaimed", "MessageSent"],
    ]
    .concat();
    assert_eq!(w.stream_types("msg-1").await, resent);
    assert_eq!(w.provider.sent(), vec!["msg-1"]);

    // Duplicates of the timer, the request and a late Send change nothing.
    w.delivery.on_timer(&check).await.expect("again");
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("again"),
        DeliveryOutcome::Duplicate
    );
    assert_eq!(w.ses_send(1, "send-late").await, FeedbackOutcome::Duplicate);
    assert_eq!(w.stream_types("msg-1").await, resent);
    assert_eq!(w.provider.times_sent("msg-1"), 1);

    let names: Vec<String> = buffer
        .sets()
        .iter()
        .flat_map(|set| set.metrics.iter().map(|m| m.name.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            metric::MESSAGES_SENT,
            outcome_metrics::MESSAGES_RESENT
        ]
    );
    assert_eq!(buffer.documents()[0]["Reason"], "provider-error");
    assert_eq!(
        buffer.documents()[0][outcome_metrics::SETTLEMENT],
        outcome_metrics::settlement::SETTLE_CHECK
    );
    assert_eq!(buffer.documents()[2]["Send"], "2");
}

/// Three sends, each claimed and each unknown, the first two given back.
const THREE_UNKNOWN_SENDS: [&str; 8] = [
    "MessageClaimed",
    "MessageOutcomeUnknown",
    "MessageNotAccepted",
    "MessageClaimed",
    "MessageOutcomeUnknown",
    "MessageNotAccepted",
    "MessageClaimed",
    "MessageOutcomeUnknown",
];

#[tokio::test]
async fn an_email_ses_never_took_is_sent_again_with_a_growing_window_until_its_send_event_settles_it() {
    let (w, buffer) = World::new().await.metered();
    // SES answers 500 before taking it, twice; the third send it takes,
    // and that answer is lost.
    w.provider.fail_before_taking([server_error(), server_error()]);
    w.provider.lose_answer(timeout());
    // No Send within 15 minutes: sent again, unknown again; its check waits
    // twice as long.
    let (request, first, second) = w.order_confirmation_sent_again().await;
    assert_eq!(second.set_at_version, 4, "the resend's claim");
    assert_eq!(second.due_at, w.clock.now() + Duration::minutes(30));
    // Fired after the first window's length: not yet.
    w.clock.advance(Duration::minutes(15));
    let settle = settle_check(&second);
    assert_eq!(
        w.delivery.on_settle_timer(&second, &settle).await.expect("early"),
        SettleOutcome::Waiting { until: second.due_at }
    );

    // No Send within 30 minutes either: the third and last send.
    w.clock.advance(Duration::minutes(15));
    w.fire(&second).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    assert_eq!(w.provider.email_calls(), 3, "three calls");
    assert_eq!(w.provider.times_sent("msg-1"), 1, "SES took the third");

    // Its Send settles it as sent.
    w.clock.advance(Duration::seconds(5));
    assert_eq!(w.ses_send(1, "send-3").await, FeedbackOutcome::Recorded);
    let settled = [THREE_UNKNOWN_SENDS.as_slice(), &["MessageAccepted", "MessageSent"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    // Nothing more: both checks and the request come again.
    w.clock.advance(Duration::hours(2));
    w.again(&request, &[&first, &second]).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.email_calls(), 3);

    use outcome_metrics::settlement;
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![settlement::SETTLE_CHECK, settlement::SETTLE_CHECK, settlement::GIVEN_UP]
    );
    assert_eq!(
        counted_with(&buffer, outcome_metrics::MESSAGES_RESENT, "Send"),
        vec!["2", "3"]
    );
    assert_eq!(
        counted_with(&buffer, metric::MESSAGES_SENT, "Reason"),
        vec!["settled-by-feedback"]
    );
}

#[tokio::test]
async fn an_email_is_given_up_after_its_last_allowed_send_and_never_sent_a_fourth_time() {
    let (w, buffer) = World::new().await.metered();
    w.provider
        .fail_before_taking([server_error(), server_error(), server_error()]);
    let (request, first, second) = w.order_confirmation_sent_again().await;
    w.clock.advance(Duration::minutes(30));
    w.fire(&second).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    let events = w.message_events("msg-1").await;
    assert!(events[1].data["settle_by"].is_string(), "{:?}", events[1].data);
    assert!(events[4].data["settle_by"].is_string(), "{:?}", events[4].data);
    assert!(events[7].data["settle_by"].is_null(), "given up: {:?}", events[7].data);
    // No check for the last claim: the message's timer is still the second's.
    let pending = w.message_timer("msg-1").expect("the second check");
    assert_eq!(pending.set_at_version, second.set_at_version);

    // Duplicates of both checks and of the request, hours later, send
    // nothing and set no check.
    w.clock.advance(Duration::hours(3));
    w.again(&request, &[&first, &second]).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    assert_eq!(w.provider.email_calls(), 3, "three calls, no fourth");
    assert_eq!(
        w.message_timer("msg-1").map(|t| t.set_at_version),
        Some(second.set_at_version)
    );

    // Given up: counted (the alarm is on MessageOutcomesUnknown).
    use outcome_metrics::settlement;
    let unknown = counted(&buffer, outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN);
    assert_eq!(unknown.len(), 3, "{unknown:?}");
    assert_eq!(unknown[2][outcome_metrics::SETTLEMENT], settlement::GIVEN_UP);
    assert_eq!(unknown[2]["Channel"], "email");
    assert_eq!(unknown[2]["Reason"], "provider-error");
    assert_eq!(counted(&buffer, outcome_metrics::MESSAGES_RESENT).len(), 2);
}

#[tokio::test]
async fn a_send_event_arriving_after_a_resend_was_decided_causes_no_further_send() {
    let w = World::new().await;
    // SES took the first send, the answer was lost, and its Send lags
    // behind the window (a backlog on the feedback path).
    w.provider.lose_answer(timeout());
    w.provider.lose_answer(timeout());
    let (request, first, second) = w.order_confirmation_sent_again().await;
    // The duplicate this risk costs (decision 0032).
    assert_eq!(w.provider.times_sent("msg-1"), 2);
    // The first send's Send arrives now: it settles the message as sent.
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    let settled = [
        UNKNOWN.as_slice(),
        &["MessageNotAccepted"],
        UNKNOWN.as_slice(),
        &["MessageAccepted", "MessageSent"],
    ]
    .concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    // The resend's own Send changes nothing, nor does its check.
    assert_eq!(w.ses_send(1, "send-2").await, FeedbackOutcome::Duplicate);
    w.clock.advance(Duration::minutes(30));
    w.again(&request, &[&second, &first]).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 2, "no third send");

    // The Send lands between the check's `MessageNotAccepted` and the
    // resend's claim (the check's run died in between): no resend at all.
    w.provider.lose_answer(timeout());
    let request = w
        .stored(w.requested(2, "order-confirmation", Category::Transactional))
        .await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let check = w.message_timer("msg-2").expect("a settle check");
    w.clock.advance(Duration::minutes(15));
    let not_accepted = MessageEvent::MessageNotAccepted {
        message_id: "msg-2".into(),
        customer_id: CUSTOMER.into(),
        channel: Channel::Email,
        reason: "SES reported nothing (no Send) within 900 s of send 1".into(),
    };
    w.append_by_hand("msg-2", ExpectedVersion::Exactly(2), &[not_accepted])
        .await;
    assert_eq!(w.ses_send(2, "send-1-of-2").await, FeedbackOutcome::Recorded);
    let settle = settle_check(&check);
    assert_eq!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("check"),
        SettleOutcome::Settled
    );
    w.again(&request, &[]).await;
    assert_eq!(
        w.stream_types("msg-2").await,
        [
            UNKNOWN.as_slice(),
            &["MessageNotAccepted", "MessageAccepted", "MessageSent"]
        ]
        .concat()
    );
    assert_eq!(w.provider.times_sent("msg-2"), 1);
}

#[tokio::test]
async fn sns_unknown_outcomes_are_recorded_counted_and_never_sent_again() {
    let (w, buffer) = World::new().await.metered();
    w.command(CustomerCommand::RegisterPushDevice(RegisterPushDevice {
        platform: "fcm".into(),
        token: "device-1".into(),
    }))
    .await;
    w.add_phone().await;
    // Push: SNS took it, the answer was lost. SMS: SNS never took it.
    w.provider
        .lose_answer(ProviderError::OutcomeUnknown("SNS Publish (push): timeout".into()));
    let push = w
        .stored(w.requested_on(1, Channel::Push, "order-shipped-push", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&push).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    w.provider
        .fail_before_taking([ProviderError::OutcomeUnknown("SNS Publish (SMS): HTTP 500".into())]);
    let sms = w
        .stored(w.requested_on(2, Channel::Sms, "checkout-abandonment-sms", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&sms).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    // No settle check: nothing could settle them.
    assert!(w.scheduler.pending().is_empty(), "{:?}", w.scheduler.pending());
    w.clock.advance(Duration::hours(1));
    for request in [&push, &sms] {
        assert_eq!(
            w.delivery.on_requested(request).await.expect("again"),
            DeliveryOutcome::Duplicate
        );
    }
    assert!(w.scheduler.pending().is_empty());
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    assert_eq!(w.stream_types("msg-2").await, UNKNOWN);
    let events = w.message_events("msg-2").await;
    assert!(events[1].data["settle_by"].is_null());
    assert_eq!(w.provider.sent(), vec!["msg-1"], "at most once");
    assert_eq!(
        counted_with(&buffer, outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN, "Channel"),
        vec!["push", "sms"]
    );
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![outcome_metrics::settlement::AT_MOST_ONCE; 2]
    );
}

#[tokio::test]
async fn a_stale_sms_claim_is_recorded_unknown_and_never_sent() {
    let (w, buffer) = World::new().await.metered();
    w.add_phone().await;
    let sms = w
        .stored(w.requested_on(1, Channel::Sms, "checkout-abandonment-sms", Category::Transactional))
        .await;
    w.claim_and_crash(&sms).await;
    w.delivery.on_requested(&sms).await.expect("redelivery");
    let check = w.message_timer("msg-1").expect("a settle check");
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    assert!(w.provider.sent().is_empty());
    // Later redeliveries neither send nor set another check.
    w.scheduler.cancel(&check.name).await.expect("fired");
    w.delivery.on_requested(&sms).await.expect("redelivery");
    assert!(w.scheduler.pending().is_empty());
    let docs = buffer.documents();
    let counted: Vec<&str> = docs
        .iter()
        .flat_map(|d| {
            [
                outcome_metrics::STALE_MESSAGE_CLAIMS,
                outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            ]
            .into_iter()
            .filter(|name| d.get(*name).is_some())
        })
        .collect();
    assert_eq!(
        counted,
        vec![
            outcome_metrics::STALE_MESSAGE_CLAIMS,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN
        ]
    );
}

#[tokio::test]
async fn a_resend_goes_through_the_pipeline_again() {
    let w = World::new().await;
    w.provider.fail_before_taking([server_error()]);
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let check = w.message_timer("msg-1").expect("a settle check");
    // The customer unsubscribed within the window: the resend is suppressed.
    w.revoke_marketing_email().await;
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        [UNKNOWN.as_slice(), &["MessageNotAccepted", "MessageSuppressed"]].concat()
    );
    assert!(w.provider.sent().is_empty());
}
