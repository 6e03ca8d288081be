//! The operator routes' dead letters on AWS (decision 0085):
//! `SqsDeadLetters` over a consumer's queue and its dead-letter queue on
//! moto: listed, found by message id, counted, and redriven back into the
//! consumer's own queue as the rule delivers it; without a bus, a queue
//! with no source queue (the relay's) is refused, and the letter stays. A
//! letter a consumer of the group parked goes back for that consumer alone
//! (the `crm-redrive-consumer` attribute), by the route and by `crm-ops dlq
//! redrive --to queue`; what the redrive policy moved, for the whole group.
//! With a bus, the relay's letters (whole, or by key from the events table)
//! and the scheduler's timers go onto it, through a rule to a queue, and
//! leave their dead-letter queue; a bus that takes nothing leaves them,
//! with the reason.

use crm_aws::dead_letters::SqsDeadLetters;
use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::health::WatchedQueue;
use crm_aws::ops::{REDRIVE_CONSUMER_ATTRIBUTE, SCHEDULER_CONSUMER};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{
    bus_into_queue, create_queue, drain_queue, eventbridge_client, fresh_event_store, sqs_client, take_messages,
};
use crm_core::bus::BusEntry;
use crm_core::event::EventEnvelope;
use crm_core::ports::{AppendRequest, DeadLetterAdmin, DeadLetterQueue, EventStore, ExpectedVersion, Redriven};
use crm_core::relay::{ParkedEvent, RELAY_CONSUMER};
use crm_core::scheduler::{TimerKind, TimerPayload, TIMER_FIRED, TIMER_SOURCE};
use crm_core::testing::{dead_letter, raw_event};
use std::sync::Arc;

#[tokio::test]
async fn letters_are_listed_found_counted_and_redriven_to_their_consumers_queue() {
    let sqs = sqs_client().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let source = create_queue(&sqs, &format!("projector-{unique}")).await;
    let dlq = create_queue(&sqs, &format!("projector-dlq-{unique}")).await;
    let relay_dlq = create_queue(&sqs, &format!("relay-dlq-{unique}")).await;
    let event = raw_event(
        "customer-1",
        "CustomerRegistered",
        serde_json::json!({"customer_id": "1"}),
    );
    let bus_event = BusEntry::for_event(event.clone()).to_event_json("123456789012", "us-east-1");
    SqsDeadLetterQueue::new(sqs.clone(), &dlq)
        .park(dead_letter("customer-360", "store was down", bus_event.clone()))
        .await
        .expect("park");
    SqsDeadLetterQueue::new(sqs.clone(), &relay_dlq)
        .park(dead_letter(
            "relay",
            "bus refused",
            serde_json::json!({"not": "an event"}),
        ))
        .await
        .expect("park");
    let admin = SqsDeadLetters::new(
        sqs.clone(),
        vec![
            WatchedQueue {
                name: "projector".into(),
                queue_url: source.clone(),
                dead_letter_url: dlq.clone(),
            },
            WatchedQueue {
                name: "relay".into(),
                queue_url: String::new(),
                dead_letter_url: relay_dlq.clone(),
            },
        ],
    );

    let page = admin.list(None, 10).await.expect("list");
    assert_eq!(page.items.len(), 2, "{page:?}");
    assert_eq!(page.next, None);
    assert_eq!(admin.depth().await.expect("depth"), 2);
    let parked = page
        .items
        .iter()
        .find(|l| l.letter.consumer == "customer-360")
        .expect("the projector's letter");
    assert_eq!(parked.letter.reason, "store was down");
    let found = admin.get(&parked.id).await.expect("get").expect("found");
    assert_eq!(found.letter.payload, bus_event);
    assert_eq!(admin.get("no-such-message").await.expect("get"), None);

    // The relay's letter has no queue to go back to: refused, and it stays.
    let relay = page
        .items
        .iter()
        .find(|l| l.letter.consumer == "relay")
        .expect("relay's");
    assert!(matches!(
        admin.redrive(&relay.id).await.expect("redrive"),
        Redriven::Failed(_)
    ));
    assert!(admin.get(&relay.id).await.expect("get").is_some());

    assert_eq!(admin.redrive(&parked.id).await.expect("redrive"), Redriven::Done);
    let delivered = drain_queue(&source, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["detail"]["event_id"], event.event_id.to_string());
    assert_eq!(admin.get(&parked.id).await.expect("get"), None, "deleted once sent");
    assert_eq!(admin.redrive(&parked.id).await.expect("again"), Redriven::NotFound);
    assert_eq!(admin.list(None, 10).await.expect("list").items.len(), 1);
}

/// The messages of `queue` (deleted as read), each as its body and its
/// `crm-redrive-consumer` attribute; waits up to ten seconds for `expected`.
async fn received(sqs: &aws_sdk_sqs::Client, queue: &str, expected: usize) -> Vec<(serde_json::Value, Option<String>)> {
    take_messages(sqs, queue, expected)
        .await
        .iter()
        .map(|m| {
            let consumer = m
                .message_attributes()
                .and_then(|a| a.get(REDRIVE_CONSUMER_ATTRIBUTE))
                .and_then(|v| v.string_value())
                .map(str::to_string);
            (
                serde_json::from_str(m.body().unwrap_or_default()).expect("a JSON body"),
                consumer,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_redriven_letter_names_the_consumer_that_parked_it() {
    let sqs = sqs_client().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let source = create_queue(&sqs, &format!("projector-{unique}")).await;
    let dlq = create_queue(&sqs, &format!("projector-dlq-{unique}")).await;
    let event = raw_event(
        "customer-1",
        "CustomerRegistered",
        serde_json::json!({"customer_id": "1"}),
    );
    let bus_event = BusEntry::for_event(event.clone()).to_event_json("123456789012", "us-east-1");
    let parked = SqsDeadLetterQueue::new(sqs.clone(), &dlq);
    for consumer in ["customer-360", "timeline", "projector"] {
        parked
            .park(dead_letter(consumer, "refused", bus_event.clone()))
            .await
            .expect("park");
    }
    // What the queue's redrive policy moved: the rule's delivery, no attributes.
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(bus_event.to_string())
        .send()
        .await
        .expect("send");
    let admin = SqsDeadLetters::new(
        sqs.clone(),
        vec![WatchedQueue {
            name: "projector".into(),
            queue_url: source.clone(),
            dead_letter_url: dlq.clone(),
        }],
    );
    let page = admin.list(None, 10).await.expect("list");
    // The parked letters (attempts 1; the moved message, listed under the
    // function's name too, has none).
    let id_of = |consumer: &str| {
        page.items
            .iter()
            .find(|l| l.letter.consumer == consumer && l.letter.attempts == 1)
            .map(|l| l.id.clone())
            .unwrap_or_else(|| panic!("{consumer}'s letter in {page:?}"))
    };

    // The route: customer-360's letter for customer-360 alone, the event as the rule delivers it.
    assert_eq!(
        admin.redrive(&id_of("customer-360")).await.expect("redrive"),
        Redriven::Done
    );
    assert_eq!(
        received(&sqs, &source, 1).await,
        vec![(bus_event.clone(), Some("customer-360".to_string()))]
    );
    // The function's own name and the redrive policy's message: the whole group.
    assert_eq!(
        admin.redrive(&id_of("projector")).await.expect("redrive"),
        Redriven::Done
    );
    assert_eq!(
        admin.redrive(&id_of("projector")).await.expect("redrive"),
        Redriven::NotFound
    );
    let moved = page
        .items
        .iter()
        .find(|l| l.letter.attempts == 0)
        .expect("the moved message");
    assert_eq!(moved.letter.consumer, "projector");
    assert_eq!(admin.redrive(&moved.id).await.expect("redrive"), Redriven::Done);
    assert_eq!(
        received(&sqs, &source, 2).await,
        vec![(bus_event.clone(), None), (bus_event.clone(), None)]
    );

    // A redriven message that failed again and that the redrive policy
    // moved back: listed under its consumer, and redriven for it again.
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(bus_event.to_string())
        .message_attributes(
            REDRIVE_CONSUMER_ATTRIBUTE,
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("customer-360")
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("send");
    let listed = crm_aws::ops::receive(&sqs, &dlq, 10, 0).await.expect("receive");
    let mut consumers: Vec<&str> = listed.iter().map(|l| l.consumer.as_str()).collect();
    consumers.sort_unstable();
    assert_eq!(consumers, ["customer-360", "timeline"]);

    // `crm-ops dlq redrive --to queue`: the same.
    let report = crm_aws::ops::redrive_to_queue(&sqs, &dlq, &source, 10)
        .await
        .expect("redrive to queue");
    assert_eq!(report.redriven.len(), 2, "{report:?}");
    let mut delivered = received(&sqs, &source, 2).await;
    delivered.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        delivered,
        vec![
            (bus_event.clone(), Some("customer-360".to_string())),
            (bus_event, Some("timeline".to_string()))
        ]
    );
    assert_eq!(admin.depth().await.expect("depth"), 0);
}

/// The relay's dead-letter queue and the scheduler's, as `HEALTH_QUEUES`
/// names them (no source queue).
fn bus_queues(relay_dlq: &str, scheduler_dlq: &str) -> Vec<WatchedQueue> {
    vec![
        WatchedQueue {
            name: RELAY_CONSUMER.into(),
            queue_url: String::new(),
            dead_letter_url: relay_dlq.into(),
        },
        WatchedQueue {
            name: SCHEDULER_CONSUMER.into(),
            queue_url: String::new(),
            dead_letter_url: scheduler_dlq.into(),
        },
    ]
}

/// Parks `entry` as the relay does when the bus keeps refusing it: whole,
/// or by its key alone (`by_key`, as an entry too large for a message).
async fn park_as_the_relay_does(sqs: &aws_sdk_sqs::Client, queue: &str, entry: &BusEntry, by_key: bool) {
    let mut parked = ParkedEvent::of(format!("seq-{}", entry.detail.event_id), entry);
    if by_key {
        parked.stored = None;
    }
    SqsDeadLetterQueue::new(sqs.clone(), queue)
        .park(dead_letter(
            RELAY_CONSUMER,
            "throttled",
            serde_json::to_value(&parked).expect("json"),
        ))
        .await
        .expect("park");
}

/// A journey's wait timer, sent to `queue` as EventBridge Scheduler parks
/// one it could not deliver: the schedule's `Input` as the body, its
/// attributes.
async fn park_as_the_scheduler_does(sqs: &aws_sdk_sqs::Client, queue: &str, unique: &str) -> TimerPayload {
    let timer = TimerPayload {
        name: format!("jw-{unique}"),
        kind: TimerKind::JourneyWait,
        stream_id: format!("journey-{unique}"),
        customer_id: Some("customer-1".into()),
        due_at: chrono::DateTime::parse_from_rfc3339("2026-12-06T05:00:00Z")
            .expect("time")
            .to_utc(),
        set_at_version: 3,
        data: serde_json::json!({"step": "wait-1"}),
    };
    let attribute = |value: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("attribute")
    };
    sqs.send_message()
        .queue_url(queue)
        .message_body(serde_json::to_string(&timer).expect("json"))
        .message_attributes("ERROR_CODE", attribute("AWS.Scheduler.InternalServerError"))
        .message_attributes("ERROR_MESSAGE", attribute("Unexpected error."))
        .message_attributes(
            "SCHEDULE_ARN",
            attribute(&format!(
                "arn:aws:scheduler:us-east-1:123456789012:schedule/crm/{}",
                timer.name
            )),
        )
        .send()
        .await
        .expect("send");
    timer
}

#[tokio::test]
async fn the_relays_and_the_schedulers_letters_go_back_onto_the_bus() {
    let sqs = sqs_client().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let relay_dlq = create_queue(&sqs, &format!("relay-dlq-{unique}")).await;
    let scheduler_dlq = create_queue(&sqs, &format!("scheduler-dlq-{unique}")).await;
    let (bus, target) = bus_into_queue("dead-letters").await;
    let stored = Arc::new(fresh_event_store("dead-letters").await);

    // Parked whole, and by its key alone (the event is in the events table).
    let whole = raw_event(
        "customer-1",
        "CustomerRegistered",
        serde_json::json!({"customer_id": "1"}),
    );
    park_as_the_relay_does(&sqs, &relay_dlq, &BusEntry::for_event(whole.clone()), false).await;
    let appended = stored
        .append(AppendRequest {
            stream_id: "customer-2".into(),
            expected: ExpectedVersion::Any,
            events: vec![raw_event(
                "customer-2",
                "CustomerRegistered",
                serde_json::json!({"customer_id": "2"}),
            )],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append")
        .events[0]
        .clone();
    park_as_the_relay_does(&sqs, &relay_dlq, &BusEntry::for_event(appended.clone()), true).await;
    let timer = park_as_the_scheduler_does(&sqs, &scheduler_dlq, &unique).await;

    let admin = SqsDeadLetters::new(sqs.clone(), bus_queues(&relay_dlq, &scheduler_dlq))
        .with_bus(EventBridgeBus::new(eventbridge_client().await, bus), stored);
    let page = admin.list(None, 10).await.expect("list");
    assert_eq!(page.items.len(), 3, "{page:?}");
    for letter in &page.items {
        assert_eq!(
            admin.redrive(&letter.id).await.expect("redrive"),
            Redriven::Done,
            "{letter:?}"
        );
        assert_eq!(admin.get(&letter.id).await.expect("get"), None, "deleted once put");
    }
    assert_eq!(admin.depth().await.expect("depth"), 0);

    // On the bus, through its rule: the two events as the relay puts them, the timer as its schedule would.
    let arrived = drain_queue(&target, 3).await;
    assert_eq!(arrived.len(), 3, "{arrived:?}");
    for event in [&whole, &appended] {
        let body = arrived
            .iter()
            .find(|b| b["detail"]["event_id"] == event.event_id.to_string())
            .unwrap_or_else(|| panic!("{} on the bus: {arrived:?}", event.event_id));
        let detail: EventEnvelope = serde_json::from_value(body["detail"].clone()).expect("an envelope");
        assert_eq!(&detail, event, "as stored");
        assert_eq!(body["detail-type"], "CustomerRegistered");
    }
    let fired = arrived
        .iter()
        .find(|b| b["source"] == TIMER_SOURCE)
        .expect("the timer on the bus");
    assert_eq!(fired["detail-type"], TIMER_FIRED);
    let fired: TimerPayload = serde_json::from_value(fired["detail"].clone()).expect("a timer");
    assert_eq!(fired, timer);
}

#[tokio::test]
async fn a_put_the_bus_refuses_leaves_the_letter_and_says_why() {
    let sqs = sqs_client().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let relay_dlq = create_queue(&sqs, &format!("relay-dlq-{unique}")).await;
    let scheduler_dlq = create_queue(&sqs, &format!("scheduler-dlq-{unique}")).await;
    let stored = Arc::new(fresh_event_store("dead-letters").await);
    let event = raw_event(
        "customer-1",
        "CustomerRegistered",
        serde_json::json!({"customer_id": "1"}),
    );
    park_as_the_relay_does(&sqs, &relay_dlq, &BusEntry::for_event(event), false).await;
    // By key, an event no longer in the table: nothing to put.
    let gone = raw_event(
        "customer-gone",
        "CustomerRegistered",
        serde_json::json!({"customer_id": "9"}),
    );
    park_as_the_relay_does(&sqs, &relay_dlq, &BusEntry::for_event(gone), true).await;
    park_as_the_scheduler_does(&sqs, &scheduler_dlq, &unique).await;

    // A bus that does not exist.
    let admin = SqsDeadLetters::new(sqs.clone(), bus_queues(&relay_dlq, &scheduler_dlq)).with_bus(
        EventBridgeBus::new(eventbridge_client().await, format!("no-bus-{unique}")),
        stored,
    );
    let page = admin.list(None, 10).await.expect("list");
    assert_eq!(page.items.len(), 3, "{page:?}");
    let mut reasons = Vec::new();
    for letter in &page.items {
        match admin.redrive(&letter.id).await.expect("redrive") {
            Redriven::Failed(why) => reasons.push(why),
            other => panic!("{letter:?}: {other:?}"),
        }
        assert!(
            admin.get(&letter.id).await.expect("get").is_some(),
            "it stays: {letter:?}"
        );
    }
    reasons.sort();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons.iter().filter(|why| why.contains("PutEvents")).count() == 2,
        "the bus's refusals: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|why| why.contains("customer-gone v0 is not in the events table")),
        "{reasons:?}"
    );
    assert_eq!(admin.depth().await.expect("depth"), 3);
}
