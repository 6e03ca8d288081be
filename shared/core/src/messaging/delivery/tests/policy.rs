//! Consent and policy: marketing needs consent and carries one-click
//! unsubscribe, quiet hours defer, caps and suppressions hold; sends,
//! suppressions and deferrals are counted.

use super::*;

#[tokio::test]
async fn marketing_email_carries_one_click_unsubscribe_and_no_consent_means_no_send() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let emails = w.provider.emails.lock().expect("lock").clone();
    let email = emails.first().expect("one email");
    assert!(email
        .headers
        .contains(&("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into())));
    let unsubscribe = &email
        .headers
        .iter()
        .find(|(n, _)| n == "List-Unsubscribe")
        .expect("header")
        .1;
    assert!(unsubscribe.starts_with("<http://127.0.0.1:3000/u/"), "{unsubscribe}");
    assert!(email.html.contains("/u/"), "the footer links to the preference centre");
    assert!(email.tags.contains(&("message_id".into(), "msg-1".into())));

    w.revoke_marketing_email().await;
    let outcome = w
        .delivery
        .on_requested(&w.requested(2, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Suppressed);
    assert_eq!(w.stream_types("msg-2").await, vec!["MessageSuppressed"]);
    // Transactional mail still goes.
    let confirmation = w.requested(3, "order-confirmation", Category::Transactional);
    assert!(matches!(
        w.delivery.on_requested(&confirmation).await.expect("deliver"),
        DeliveryOutcome::Sent { .. }
    ));
    assert_eq!(w.provider.sent(), vec!["msg-1", "msg-3"]);
}

#[tokio::test]
async fn quiet_hours_defer_to_their_end_and_the_timer_sends() {
    let w = World::new().await;
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    // 12:00 UTC is 13:00 in Berlin: quiet until 14:30 Berlin = 13:30 UTC.
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
    let until = DateTime::parse_from_rfc3339("2026-11-23T13:30:00Z")
        .expect("time")
        .to_utc();
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Deferred { until }
    );
    // A redelivery while waiting neither sends nor records anything.
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("again"),
        DeliveryOutcome::Waiting { until }
    );
    let timers = w.scheduler.pending();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at, until);
    // The deferral and its timer name where the request is stored, and hold
    // nothing of it (decision 0041).
    let stored_at = RequestRef {
        message_id: "msg-1".into(),
        stream_id: "journey-i-1".into(),
        version: Some(request.version),
    };
    assert_eq!(
        MessageTimer::of(&timers[0]),
        Some(MessageTimer::Deferral(stored_at.clone()))
    );
    assert_eq!(timers[0].data, json!({ "deferral": stored_at }));
    let deferred = w.message_events("msg-1").await;
    assert_eq!(deferred[0].schema_version, 2);
    assert_eq!(
        deferred[0].data["requested"],
        json!({ "message_id": "msg-1", "stream_id": "journey-i-1", "version": request.version })
    );
    assert!(deferred[0].data.get("request").is_none(), "{}", deferred[0].data);
    w.clock.advance(chrono::Duration::minutes(90));
    use crate::scheduler::TimerHandler;
    w.delivery.on_timer(&timers[0]).await.expect("timer");
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageDeferred", "MessageClaimed", "MessageSent"]
    );
}

#[tokio::test]
async fn the_email_cap_holds_and_a_hard_bounce_suppresses_the_address() {
    let w = World::new().await;
    for n in 1..=4 {
        w.delivery
            .on_requested(&w.requested(n, reminder(), Category::Marketing))
            .await
            .expect("deliver");
        w.clock.advance(chrono::Duration::minutes(10));
    }
    assert_eq!(w.provider.sent(), vec!["msg-1", "msg-2", "msg-3"]);
    assert_eq!(w.stream_types("msg-4").await, vec!["MessageSuppressed"]);

    // A permanent bounce on the address: even transactional mail stops.
    let mut bounce = raw_event(
        &message_stream("msg-1"),
        "EmailBounced",
        json!({ "message_id": "msg-1", "customer_id": CUSTOMER, "bounce_type": "permanent",
                "address_hash": w.delivery.identifiers().email("ANA@example.com ") }),
    );
    bounce.version = 3;
    let list = Consumer::new(
        Arc::new(SuppressionListProjection::new(w.delivery.identifiers().clone())),
        w.events.clone(),
        w.docs.clone(),
    );
    // The stream has two events; deliver the bounce as version 3 after appending it.
    w.append_raw(ExpectedVersion::Exactly(2), vec![bounce.clone()]).await;
    list.deliver(&bounce).await.expect("project");
    let outcome = w
        .delivery
        .on_requested(&w.requested(9, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Suppressed);
}

#[tokio::test]
async fn sends_suppressions_and_deferrals_are_counted_per_channel() {
    let (w, buffer) = World::new().await.metered();
    let confirmation = w.requested(1, "order-confirmation", Category::Transactional);
    w.delivery.on_requested(&confirmation).await.expect("deliver");
    // A duplicate delivery counts nothing.
    w.delivery.on_requested(&confirmation).await.expect("again");
    w.revoke_marketing_email().await;
    w.delivery
        .on_requested(&w.requested(2, reminder(), Category::Marketing))
        .await
        .expect("deliver");

    let docs = buffer.documents();
    assert_eq!(docs.len(), 2, "{docs:?}");
    let sent = &docs[0];
    assert_eq!(sent["MessagesSent"], json!(1.0));
    assert_eq!(sent["Channel"], "email");
    assert_eq!(sent["Category"], "transactional");
    let sent_set = &buffer.sets()[0];
    assert_eq!(sent_set.dimensions, vec![("Channel", "email".to_string())]);
    assert_eq!(
        sent_set.metrics,
        vec![crate::metrics::Metric {
            name: "MessagesSent",
            unit: crate::metrics::Unit::Count,
            value: 1.0
        }]
    );
    assert_eq!(sent_set.timestamp, w.clock.now());
    let suppressed = &docs[1];
    assert_eq!(suppressed["MessagesSuppressed"], json!(1.0));
    assert_eq!(suppressed["Channel"], "email");
    assert_eq!(suppressed["Reason"], "no-consent");
    assert_eq!(suppressed["CampaignId"], "abandoned-cart");
    assert!(suppressed.get("MessagesSent").is_none());
}

#[tokio::test]
async fn a_deferral_is_counted_with_its_reason() {
    let (w, buffer) = World::new().await.metered();
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let docs = buffer.documents();
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["MessagesDeferred"], json!(1.0));
    assert_eq!(docs[0]["Reason"], "quiet-hours");
}
