//! The operator routes' dead letters on AWS (decision 0085):
//! `SqsDeadLetters` over a consumer's queue and its dead-letter queue on
//! moto: listed, found by message id, counted, and redriven back into the
//! consumer's own queue as the rule delivers it; a queue with no source
//! queue (the relay's) is refused, and the letter stays.

use crm_aws::dead_letters::SqsDeadLetters;
use crm_aws::health::WatchedQueue;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{create_queue, drain_queue, sqs_client};
use crm_core::bus::BusEntry;
use crm_core::ports::{DeadLetterAdmin, DeadLetterQueue, Redriven};
use crm_core::testing::{dead_letter, raw_event};

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
