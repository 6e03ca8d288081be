//! Deferrals and timers name the stored request (decision 0041), including
//! those stored before it.

use super::*;

/// A `MessageDeferred` as schema version 1 stored it: with a copy of the
/// whole request.
fn deferred_v1(request: &EventEnvelope, until: DateTime<Utc>) -> EventEnvelope {
    let mut e = raw_event(
        &message_stream("msg-1"),
        "MessageDeferred",
        json!({
            "message_id": "msg-1", "customer_id": CUSTOMER, "channel": "email",
            "reason": "quiet-hours", "until": until, "request": request.data,
        }),
    );
    e.customer_id = Some(CUSTOMER.into());
    e
}

#[tokio::test]
async fn a_deferral_timer_set_before_0041_with_the_request_in_its_data_still_sends() {
    let w = World::new().await;
    // Not even stored on a journey stream: the timer's copy is what counts.
    let request = w.requested(1, reminder(), Category::Marketing);
    let until = w.clock.now() + Duration::minutes(30);
    w.append_raw(ExpectedVersion::NoStream, vec![deferred_v1(&request, until)])
        .await;
    let timer = TimerPayload {
        name: timer_name(TimerKind::MessageDeferral, &["msg-1"]),
        kind: TimerKind::MessageDeferral,
        stream_id: message_stream("msg-1"),
        customer_id: Some(CUSTOMER.into()),
        due_at: until,
        set_at_version: 1,
        data: request.data.clone(),
    };
    assert!(matches!(
        MessageTimer::of(&timer),
        Some(MessageTimer::DeferralWithRequest(_))
    ));
    // Fired early (a redelivery of the timer): still waiting, and the timer
    // set again holds no request.
    assert_eq!(
        w.delivery
            .on_deferral_timer(&MessageTimer::of(&timer).expect("timer"))
            .await
            .expect("early"),
        DeliveryOutcome::Waiting { until }
    );
    let again = w.message_timer("msg-1").expect("set again");
    assert_eq!(
        MessageTimer::of(&again),
        Some(MessageTimer::Deferral(RequestRef {
            message_id: "msg-1".into(),
            stream_id: "journey-i-1".into(),
            version: None,
        }))
    );
    w.clock.advance(Duration::minutes(30));
    w.fire(&timer).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageDeferred", "MessageClaimed", "MessageSent"]
    );
}

#[tokio::test]
async fn a_stored_v1_deferral_reads_as_where_its_request_is() {
    let w = World::new().await;
    let request = w.requested(1, reminder(), Category::Marketing);
    let until = w.clock.now() + Duration::minutes(30);
    let typed = MessageEvent::from_envelope(&deferred_v1(&request, until)).expect("v1 reads");
    assert_eq!(
        typed,
        MessageEvent::MessageDeferred {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: Channel::Email,
            reason: DeferralReason::QuietHours,
            until,
            requested: RequestRef {
                message_id: "msg-1".into(),
                stream_id: "journey-i-1".into(),
                version: None,
            },
        }
    );
    // An erased v1 deferral (its request's data reads `[erased]`) reads too;
    // one without its request does not.
    let mut erased = deferred_v1(&request, until);
    erased.data["request"]["data"] = json!(crate::privacy::ERASED);
    assert!(MessageEvent::from_envelope(&erased).is_ok());
    let mut broken = deferred_v1(&request, until);
    broken.data.as_object_mut().expect("object").remove("request");
    assert!(MessageEvent::from_envelope(&broken).is_err());
}

#[tokio::test]
async fn a_settle_check_set_before_0041_names_the_journey_instance_and_still_settles() {
    let w = World::new().await;
    let (_, mut check) = w.order_confirmation_left_claimed().await;
    check.data = json!({ "settle": { "message_id": "msg-1", "instance_id": "i-1" } });
    assert_eq!(
        settle_check(&check),
        RequestRef {
            message_id: "msg-1".into(),
            stream_id: "journey-i-1".into(),
            version: None,
        }
    );
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    // The stale claim is given back and the request, found on the journey
    // stream by its message id, sent.
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}

#[tokio::test]
async fn a_deferral_whose_request_is_gone_is_refused_not_sent() {
    let w = World::new().await;
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    // Delivered but never stored (as if its journey stream had expired).
    let request = w.requested(1, reminder(), Category::Marketing);
    assert!(matches!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Deferred { .. }
    ));
    let timer = w.message_timer("msg-1").expect("the deferral's timer");
    w.clock.advance(Duration::minutes(90));
    use crate::scheduler::TimerHandler;
    assert!(matches!(
        w.delivery.on_timer(&timer).await,
        Err(crate::scheduler::SchedulerError::Refused(m)) if m.contains("no MessageRequested")
    ));
    assert!(w.provider.sent().is_empty());
}
