//! Operations on AWS against moto (`AWS_ENDPOINT_URL`): a parallel-scan
//! replay of the events table into one consumer, the consistency check over
//! the DynamoDB adapters (consistent, then a tampered customer 360), clearing
//! one consumer, and listing and redriving an SQS dead-letter queue.

use crm_aws::dynamodb::{create_events_table, create_read_models_table, DynamoEventStore, DynamoReadModels};
use crm_aws::ops::{clear_consumer, parallel_replay, receive, redrive};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{dynamodb_client, sqs_client};
use crm_core::clock::SystemClock;
use crm_core::consumer::{Consumer, ConsumerGroup, Projection};
use crm_core::customer::views::{CustomerProfileProjection, CUSTOMER_360};
use crm_core::customer::{Customer, CustomerCommand, CustomerService};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::{DeadLetter, DeadLetterQueue, EventStore, ReadModelStore, ReadOp};
use std::sync::Arc;
use uuid::Uuid;

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (201, serde_json::json!({ "id": c.id }))
}

fn customer_id(n: usize) -> String {
    format!("00000000-0000-7000-8000-{n:012}")
}

async fn tables() -> (Arc<DynamoEventStore>, Arc<DynamoReadModels>) {
    let client = dynamodb_client().await;
    let unique = Uuid::now_v7().simple().to_string();
    let (events, docs) = (format!("events-ops-{unique}"), format!("read-models-ops-{unique}"));
    create_events_table(&client, &events).await.expect("events table");
    create_read_models_table(&client, &docs)
        .await
        .expect("read-models table");
    (
        Arc::new(DynamoEventStore::new(client.clone(), events)),
        Arc::new(DynamoReadModels::new(client, docs)),
    )
}

async fn register(store: Arc<dyn EventStore>, customers: usize) {
    let service = CustomerService::new(store, Arc::new(SystemClock));
    for n in 0..customers {
        let cmd = CustomerCommand::Register(crm_core::testing::registration(
            &format!("ops{n}@example.com"),
            "Op",
            &format!("Erator{n}"),
            "UTC",
        ));
        service
            .execute(
                &customer_id(n),
                &cmd,
                &CommandMeta::new(Actor::system("test")),
                None,
                &respond,
            )
            .await
            .expect("register");
    }
}

async fn dead_letter_queue() -> SqsDeadLetterQueue {
    let client = sqs_client().await;
    let name = format!("ops-dlq-{}", Uuid::now_v7().simple());
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    SqsDeadLetterQueue::new(client, url)
}

#[tokio::test]
async fn a_parallel_scan_replay_rebuilds_a_consumer_the_check_agrees_and_finds_a_tampered_document() {
    let (events, docs) = tables().await;
    register(events.clone(), 6).await;
    let dlq = dead_letter_queue().await;
    let projection: Arc<dyn Projection> = Arc::new(CustomerProfileProjection);
    let consumer = Consumer::new(projection, events.clone(), docs.clone());

    let report = parallel_replay(events.client(), events.table(), 4, &consumer, &dlq)
        .await
        .expect("replay");
    assert_eq!(report.parked, 0);
    assert!(report.events >= 6 * 3, "{report:?}");
    assert_eq!(
        report.applied, report.events,
        "a fresh consumer applies every event once"
    );

    let streams = crm_core::ops::sample_streams(events.as_ref(), 0).await.expect("sample");
    assert_eq!(streams.len(), 6);
    let checked = [Arc::new(CustomerProfileProjection) as Arc<dyn Projection>];
    let clean = crm_core::ops::check(events.as_ref(), docs.as_ref(), &checked, &streams)
        .await
        .expect("check");
    assert_eq!(clean.documents, 6);
    assert!(clean.is_consistent(), "{:?}", clean.differences);

    // Tamper with one customer 360.
    let stream = format!("customer-{}", customer_id(3));
    let checkpoint = docs.checkpoint(CUSTOMER_360, &stream).await.expect("checkpoint");
    let tamper = vec![ReadOp::Put {
        partition: customer_id(3),
        sort: "profile".into(),
        body: serde_json::json!({"tampered": true}),
    }];
    docs.commit(CUSTOMER_360, &stream, checkpoint, checkpoint, tamper)
        .await
        .expect("tamper");
    let report = crm_core::ops::check(events.as_ref(), docs.as_ref(), &checked, &streams)
        .await
        .expect("check");
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    assert_eq!(report.differences[0].stream_id, stream);

    // Clear and replay: consistent again.
    let cleared = clear_consumer(&docs, CUSTOMER_360).await.expect("clear");
    assert_eq!(cleared, 6 + 6, "six documents and six checkpoints");
    assert_eq!(
        docs.get(CUSTOMER_360, &customer_id(3), "profile").await.expect("get"),
        None
    );
    parallel_replay(events.client(), events.table(), 3, &consumer, &dlq)
        .await
        .expect("replay again");
    let again = crm_core::ops::check(events.as_ref(), docs.as_ref(), &checked, &streams)
        .await
        .expect("check");
    assert!(again.is_consistent(), "{:?}", again.differences);
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_reasons_and_redriven() {
    let (events, docs) = tables().await;
    register(events.clone(), 1).await;
    let dlq = dead_letter_queue().await;
    let stream = format!("customer-{}", customer_id(0));
    let first = events.read_stream(&stream, 0, 1).await.expect("read")[0].clone();
    dlq.park(DeadLetter {
        consumer: CUSTOMER_360.into(),
        reason: "store was down".into(),
        payload: serde_json::to_value(&first).expect("json"),
        failed_at: chrono::Utc::now(),
        attempts: 1,
    })
    .await
    .expect("park");
    dlq.park(DeadLetter {
        consumer: CUSTOMER_360.into(),
        reason: "garbage".into(),
        payload: serde_json::json!({"not": "an event"}),
        failed_at: chrono::Utc::now(),
        attempts: 1,
    })
    .await
    .expect("park");

    let listed = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(listed.len(), 2);
    let mut reasons: Vec<&str> = listed.iter().map(|l| l.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["garbage", "store was down"]);
    assert!(listed
        .iter()
        .any(|l| l.event.as_ref().map(|e| e.event_id) == Some(first.event_id)));

    let group = ConsumerGroup::new(
        "projector",
        vec![Arc::new(CustomerProfileProjection)],
        events.clone(),
        docs.clone(),
        Arc::new(dlq.clone()),
    );
    let report = redrive(dlq.client(), dlq.queue_url(), &group, 10)
        .await
        .expect("redrive");
    assert_eq!(report.redriven.len(), 1, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(docs
        .get(CUSTOMER_360, &customer_id(0), "profile")
        .await
        .expect("get")
        .is_some());
    let left = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "garbage");
}
