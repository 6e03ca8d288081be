//! A dead letter's redrive on AWS, end to end over moto (decision 0085): a
//! group of two consumers that both refuse an event parks two letters in
//! the function's dead-letter queue; the route's redrive of one
//! (`SqsDeadLetters::redrive`) sends the event back to the function's queue
//! for that consumer, and the batch handler hands it to that consumer
//! alone. It refuses again: 2 letters, not 3.

use aws_lambda_events::event::sqs::SqsEvent;
use crm_aws::dead_letters::SqsDeadLetters;
use crm_aws::health::WatchedQueue;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{create_queue, sqs_client, take_messages};
use crm_bus_consumer::{handle_batch, StoredEventsOnly};
use crm_core::bus::BusEntry;
use crm_core::consumer::ConsumerGroup;
use crm_core::memory::InMemoryReadModels;
use crm_core::ports::{DeadLetterAdmin, Redriven};
use crm_core::privacy::memory::InMemoryKeyStore;
use crm_core::testing::{raw_event, InMemoryEventStore, RefusingProjection as Refusing};
use serde_json::{json, Value};
use std::sync::Arc;

/// The messages of `queue` as the event source mapping hands them to the
/// function (body, attributes, message attributes), deleted as Lambda
/// deletes what it answered; waits up to ten seconds for `expected`.
async fn take_batch(sqs: &aws_sdk_sqs::Client, queue: &str, expected: usize) -> SqsEvent {
    let mut records = Vec::new();
    for m in take_messages(sqs, queue, expected).await {
        let mut attributes = serde_json::Map::new();
        for (name, value) in m.attributes().into_iter().flatten() {
            attributes.insert(name.as_str().to_string(), json!(value));
        }
        let mut message_attributes = serde_json::Map::new();
        for (name, value) in m.message_attributes().into_iter().flatten() {
            message_attributes.insert(
                name.clone(),
                json!({"stringValue": value.string_value(), "stringListValues": [], "binaryListValues": [],
                       "dataType": value.data_type()}),
            );
        }
        records.push(json!({
            "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
            "attributes": attributes, "messageAttributes": message_attributes, "eventSource": "aws:sqs",
        }));
    }
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

#[tokio::test]
async fn a_failed_redrive_of_one_of_two_refusals_leaves_two_letters() {
    let sqs = sqs_client().await;
    let mut event = raw_event("customer-1", "CustomerRegistered", json!({"customer_id": "1"}));
    event.version = 1;
    let unique = event.event_id.simple().to_string();
    let source = create_queue(&sqs, &format!("projector-{unique}")).await;
    let dlq = create_queue(&sqs, &format!("projector-dlq-{unique}")).await;
    let dead_letters = Arc::new(SqsDeadLetterQueue::new(sqs.clone(), &dlq));
    let group = ConsumerGroup::new(
        "projector",
        vec![Arc::new(Refusing("first")), Arc::new(Refusing("second"))],
        Arc::new(InMemoryEventStore::default()),
        Arc::new(InMemoryReadModels::default()),
        dead_letters.clone(),
    );
    let keys = InMemoryKeyStore::new();
    let admin = SqsDeadLetters::new(
        sqs.clone(),
        vec![WatchedQueue {
            name: "projector".into(),
            queue_url: source.clone(),
            dead_letter_url: dlq.clone(),
        }],
    );
    let letters = || async {
        let mut consumers: Vec<String> = admin
            .list(None, 10)
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|l| l.letter.consumer)
            .collect();
        consumers.sort();
        consumers
    };

    // The rule delivers the event; both consumers refuse it.
    let bus_event: Value = BusEntry::for_event(event).to_event_json("123456789012", "us-east-1");
    sqs.send_message()
        .queue_url(&source)
        .message_body(bus_event.to_string())
        .send()
        .await
        .expect("send");
    let report = handle_batch(
        take_batch(&sqs, &source, 1).await,
        &group,
        &StoredEventsOnly,
        &keys,
        dead_letters.as_ref(),
    )
    .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.outcome.parked, 2, "{report:?}");
    assert_eq!(letters().await, ["first", "second"]);

    // second's letter redriven through the route: for second alone, who refuses it again.
    let second = admin
        .list(None, 10)
        .await
        .expect("list")
        .items
        .into_iter()
        .find(|l| l.letter.consumer == "second")
        .expect("second's letter");
    assert_eq!(admin.redrive(&second.id).await.expect("redrive"), Redriven::Done);
    let batch = take_batch(&sqs, &source, 1).await;
    assert_eq!(batch.records.len(), 1);
    let report = handle_batch(batch, &group, &StoredEventsOnly, &keys, dead_letters.as_ref()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!((report.redriven, report.outcome.parked), (1, 1), "{report:?}");
    assert_eq!(letters().await, ["first", "second"], "2 letters, not 3");
    assert_eq!(admin.depth().await.expect("depth"), 2);
}
