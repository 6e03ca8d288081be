//! Operations on AWS against moto (`AWS_ENDPOINT_URL`): a parallel-scan
//! replay of the events table into one consumer, the consistency check over
//! the DynamoDB adapters (consistent, then a tampered customer 360), clearing
//! one consumer, and listing and redriving an SQS dead-letter queue; and a
//! replay of customers whose personal fields are encrypted under KMS-wrapped
//! data keys (decisions 0016, 0017), which the projection holds decrypted.
//! The relay's dead letters published again onto a moto bus, a consumer's
//! sent back to its source queue, and a time range of the events table
//! republished (decision 0030): a rule on the bus delivers into a queue the
//! test reads.

use async_trait::async_trait;
use crm_aws::dynamodb::{create_events_table, create_read_models_table, DynamoEventStore, DynamoReadModels};
use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::keys::DynamoKmsKeyStore;
use crm_aws::ops::{
    clear_consumer, parallel_replay, receive, redrive, redrive_to_bus, redrive_to_queue, republish, ReplaySource,
};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{bus_into_queue, drain_queue, dynamodb_client, eventbridge_client, fresh_data_keys, sqs_client};
use crm_core::bus::BusEntry;
use crm_core::clock::SystemClock;
use crm_core::consumer::{Consumer, ConsumerGroup, Projection};
use crm_core::customer::views::{CustomerProfileProjection, CUSTOMER_360};
use crm_core::event::EventEnvelope;
use crm_core::ports::{
    AppendRequest, BusError, DeadLetterQueue, EventBus, EventStore, ExpectedVersion, PublishOutcome, ReadModelStore,
    ReadOp,
};
use crm_core::privacy::{EncryptingEventStore, KeyStore, ERASED};
use crm_core::relay::{ParkedEvent, Relay, RELAY_CONSUMER};
use crm_core::testing::{customer_id, dead_letter, raw_event, register_customers};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

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

/// A KMS key and a keys table of the test's own: the deployed key store.
async fn kms_key_store() -> Arc<DynamoKmsKeyStore> {
    Arc::new(fresh_data_keys("ops").await.store())
}

/// No customer in these tables has a key: the events are stored plain.
async fn no_keys() -> Arc<dyn KeyStore> {
    kms_key_store().await
}

fn source<'a>(events: &'a DynamoEventStore, keys: &'a dyn KeyStore) -> ReplaySource<'a> {
    ReplaySource {
        client: events.client(),
        table: events.table(),
        keys,
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
    register_customers(events.clone(), 6).await;
    let dlq = dead_letter_queue().await;
    let projection: Arc<dyn Projection> = Arc::new(CustomerProfileProjection);
    let consumer = Consumer::new(projection, events.clone(), docs.clone());

    let keys = no_keys().await;
    let seen = AtomicU64::new(0);
    let count = |n: u64| {
        seen.fetch_add(n, Ordering::Relaxed);
    };
    let report = parallel_replay(source(&events, keys.as_ref()), 4, &consumer, &dlq, &count)
        .await
        .expect("replay");
    assert_eq!(seen.load(Ordering::Relaxed), report.events, "progress saw every event");
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
    parallel_replay(source(&events, keys.as_ref()), 3, &consumer, &dlq, &|_| {})
        .await
        .expect("replay again");
    let again = crm_core::ops::check(events.as_ref(), docs.as_ref(), &checked, &streams)
        .await
        .expect("check");
    assert!(again.is_consistent(), "{:?}", again.differences);
}

#[tokio::test]
async fn a_replay_decrypts_personal_fields_with_the_kms_backed_key_store() {
    let (raw, docs) = tables().await;
    let keys = kms_key_store().await;
    let events: Arc<dyn EventStore> = Arc::new(EncryptingEventStore::new(raw.clone(), keys.clone()));
    register_customers(events.clone(), 3).await;

    // Stored encrypted: the raw table holds no address in clear.
    let stream = format!("customer-{}", customer_id(1));
    let stored = raw.read_stream(&stream, 0, 1).await.expect("read")[0].clone();
    let email = stored.data["email"].as_str().expect("an email field").to_string();
    assert_ne!(email, "ops1@example.com", "the email is encrypted at rest");
    assert!(email.starts_with("enc:"), "{email}");
    // Customer 2 is crypto-shredded: their key is gone.
    keys.delete(&customer_id(2)).await.expect("delete the key");

    // The consumer fills gaps through the decrypting store, as the projector does.
    let consumer = Consumer::new(Arc::new(CustomerProfileProjection), events.clone(), docs.clone());
    let dlq = dead_letter_queue().await;
    let report = parallel_replay(source(&raw, keys.as_ref()), 2, &consumer, &dlq, &|_| {})
        .await
        .expect("replay");
    assert_eq!(report.parked, 0, "{report:?}");
    assert!(report.applied >= 3, "{report:?}");

    let profile = docs
        .get(CUSTOMER_360, &customer_id(1), "profile")
        .await
        .expect("get")
        .expect("a customer 360");
    assert_eq!(profile["email"], "ops1@example.com", "{profile}");
    assert_eq!(profile["last_name"], "Erator1", "{profile}");
    let shredded = docs
        .get(CUSTOMER_360, &customer_id(2), "profile")
        .await
        .expect("get")
        .expect("a customer 360");
    assert_eq!(shredded["email"], ERASED, "never the ciphertext: {shredded}");

    // And the check, over the decrypting store, agrees.
    let streams = crm_core::ops::sample_streams(raw.as_ref(), 0).await.expect("sample");
    let checked = [Arc::new(CustomerProfileProjection) as Arc<dyn Projection>];
    let report = crm_core::ops::check(events.as_ref(), docs.as_ref(), &checked, &streams)
        .await
        .expect("check");
    assert_eq!(report.documents, 3);
    assert!(report.is_consistent(), "{:?}", report.differences);
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_reasons_and_redriven() {
    let (events, docs) = tables().await;
    register_customers(events.clone(), 1).await;
    let dlq = dead_letter_queue().await;
    let stream = format!("customer-{}", customer_id(0));
    let first = events.read_stream(&stream, 0, 1).await.expect("read")[0].clone();
    dlq.park(dead_letter(
        CUSTOMER_360,
        "store was down",
        serde_json::to_value(&first).expect("json"),
    ))
    .await
    .expect("park");
    dlq.park(dead_letter(
        CUSTOMER_360,
        "garbage",
        serde_json::json!({"not": "an event"}),
    ))
    .await
    .expect("park");

    // An event the customer 360 can never use (a stream of its own, so no gap).
    let mut poison = first.clone();
    poison.event_id = Uuid::now_v7();
    poison.stream_id = format!("customer-{}", customer_id(9));
    poison.customer_id = Some(customer_id(9));
    poison.version = 1;
    poison.data = serde_json::json!({"not": "a registration"});
    dlq.park(dead_letter(
        CUSTOMER_360,
        "poison",
        serde_json::to_value(&poison).expect("json"),
    ))
    .await
    .expect("park");

    let listed = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(listed.len(), 3);
    let mut reasons: Vec<&str> = listed.iter().map(|l| l.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["garbage", "poison", "store was down"]);
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
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report.failed.iter().any(|(_, why)| why.contains("parked again")),
        "{report:?}"
    );
    assert!(docs
        .get(CUSTOMER_360, &customer_id(0), "profile")
        .await
        .expect("get")
        .is_some());
    // The message without an event stays; the poison event was parked again
    // (a new letter with the projection's reason) and its old message
    // deleted: one copy, not two.
    let left = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|l| l.reason == "garbage"), "{left:?}");
    let again: Vec<_> = left
        .iter()
        .filter(|l| l.event.as_ref().map(|e| e.event_id) == Some(poison.event_id))
        .collect();
    assert_eq!(again.len(), 1, "{left:?}");
    assert_ne!(again[0].reason, "poison", "the new letter says why: {left:?}");
}

/// A bus of the test's own with a rule that delivers every `crm.*` event
/// into a queue of its own: what reaches the bus can be read back.
struct BusToQueue {
    bus: EventBridgeBus,
    queue: String,
}

async fn bus_to_queue() -> BusToQueue {
    let (bus_name, queue) = bus_into_queue("ops").await;
    BusToQueue {
        bus: EventBridgeBus::new(eventbridge_client().await, bus_name),
        queue,
    }
}

fn event_ids(bodies: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = bodies
        .iter()
        .map(|b| b["detail"]["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// A bus that is always down.
struct DownBus;

#[async_trait]
impl EventBus for DownBus {
    async fn put(&self, _entries: &[BusEntry]) -> Result<Vec<PublishOutcome>, BusError> {
        Err(BusError::Unavailable("EventBridge is down".into()))
    }
}

fn relay_over(bus: Arc<dyn EventBus>, dlq: &SqsDeadLetterQueue) -> Relay {
    Relay::new(bus, Arc::new(dlq.clone()), Arc::new(SystemClock))
}

#[tokio::test]
async fn the_relays_dead_letters_are_published_again_whole_or_re_read_by_their_key() {
    let (events, _docs) = tables().await;
    register_customers(events.clone(), 3).await;
    let mut firsts = Vec::new();
    for n in 0..3 {
        let stream = format!("customer-{}", customer_id(n));
        firsts.push(events.read_stream(&stream, 0, 1).await.expect("read")[0].clone());
    }
    let (e0, e1, e2) = (firsts[0].clone(), firsts[1].clone(), firsts[2].clone());
    let dlq = dead_letter_queue().await;

    // Parked whole by a relay whose bus was down.
    let report = relay_over(Arc::new(DownBus), &dlq)
        .publish(vec![("seq-0".into(), BusEntry::for_event(e0.clone()))])
        .await;
    assert_eq!(report.parked, 1);
    // Parked by its key alone (as an entry too large for a message is).
    let mut by_key = ParkedEvent::of("seq-1", &BusEntry::for_event(e1.clone()));
    by_key.stored = None;
    dlq.park(dead_letter(
        RELAY_CONSUMER,
        "throttled",
        serde_json::to_value(&by_key).expect("json"),
    ))
    .await
    .expect("park");
    // A stream record the relay could not read then (its Keys name the item).
    let record = serde_json::json!({
        "eventID": "e",
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": e2.stream_id}, "sk": {"N": e2.version.to_string()}}}
    });
    dlq.park(dead_letter(RELAY_CONSUMER, "event item cannot be read", record))
        .await
        .expect("park");
    // A key no longer in the table, and the stream mapping's on-failure record: they stay.
    let mut gone = by_key.clone();
    gone.key.pk = "customer-gone".into();
    dlq.park(dead_letter(
        RELAY_CONSUMER,
        "throttled",
        serde_json::to_value(&gone).expect("json"),
    ))
    .await
    .expect("park");
    dlq.client()
        .send_message()
        .queue_url(dlq.queue_url())
        .message_body(
            serde_json::json!({
                "version": "1.0",
                "DDBStreamBatchInfo": {
                    "shardId": "shardId-1",
                    "approximateArrivalOfFirstRecord": "2026-12-01T10:00:04Z",
                    "approximateArrivalOfLastRecord": "2026-12-01T10:00:09Z",
                    "batchSize": 3
                }
            })
            .to_string(),
        )
        .send()
        .await
        .expect("send");

    let listed = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(listed.len(), 5);
    assert!(listed
        .iter()
        .any(|l| l.event.as_ref().map(|e| e.event_id) == Some(e0.event_id)));
    assert!(listed
        .iter()
        .any(|l| l.key.as_ref().is_some_and(|k| k.pk == e2.stream_id)));

    let target = bus_to_queue().await;
    let relay = relay_over(Arc::new(target.bus.clone()), &dlq);
    let report = redrive_to_bus(dlq.client(), dlq.queue_url(), events.as_ref(), &relay, 10)
        .await
        .expect("redrive");
    assert_eq!(report.redriven.len(), 3, "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .any(|(_, why)| why.contains("customer-gone v1 is not in the events table")),
        "{report:?}"
    );
    assert!(
        report
            .failed
            .iter()
            .any(|(_, why)| why.contains("crm-ops republish --from 2026-12-01T09:59:04Z --to 2026-12-01T10:01:09Z")),
        "{report:?}"
    );

    let arrived = drain_queue(&target.queue, 3).await;
    let mut expected: Vec<String> = [&e0, &e1, &e2].iter().map(|e| e.event_id.to_string()).collect();
    expected.sort();
    assert_eq!(event_ids(&arrived), expected);
    for body in &arrived {
        let detail: EventEnvelope = serde_json::from_value(body["detail"].clone()).expect("an envelope");
        let stored = [&e0, &e1, &e2]
            .into_iter()
            .find(|e| e.event_id == detail.event_id)
            .expect("stored");
        assert_eq!(&detail, stored, "as stored");
        assert_eq!(body["detail-type"], stored.event_type.as_str());
    }
    let left = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(left.len(), 2, "only what could not be published stays: {left:?}");

    // Still down: parked again (a new letter), the old one deleted.
    let report = relay_over(Arc::new(DownBus), &dlq)
        .publish(vec![("seq-0".into(), BusEntry::for_event(e0.clone()))])
        .await;
    assert_eq!(report.parked, 1);
    let before = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list").len();
    let report = redrive_to_bus(
        dlq.client(),
        dlq.queue_url(),
        events.as_ref(),
        &relay_over(Arc::new(DownBus), &dlq),
        10,
    )
    .await
    .expect("redrive");
    assert!(
        report.failed.iter().any(|(_, why)| why.contains("parked again")),
        "{report:?}"
    );
    assert_eq!(
        receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list").len(),
        before,
        "one copy, not two"
    );
}

#[tokio::test]
async fn a_consumers_dead_letters_go_back_to_its_queue_as_the_rule_delivers_them() {
    let (events, _docs) = tables().await;
    register_customers(events.clone(), 2).await;
    let stream = |n: usize| format!("customer-{}", customer_id(n));
    let e0 = events.read_stream(&stream(0), 0, 1).await.expect("read")[0].clone();
    let e1 = events.read_stream(&stream(1), 0, 1).await.expect("read")[0].clone();
    let dlq = dead_letter_queue().await;
    let target = dead_letter_queue().await;

    // (a) moved by the queue's redrive policy: the EventBridge event itself.
    let raw = BusEntry::for_event(e0.clone()).to_event_json("123456789012", "us-east-1");
    dlq.client()
        .send_message()
        .queue_url(dlq.queue_url())
        .message_body(raw.to_string())
        .send()
        .await
        .expect("send");
    // (b) parked by a handler: the EventBridge event as received, or a bare envelope.
    dlq.park(dead_letter("campaign", "SES unavailable", raw.clone()))
        .await
        .expect("park");
    dlq.park(dead_letter(
        "channel",
        "poison",
        serde_json::to_value(&e1).expect("json"),
    ))
    .await
    .expect("park");
    dlq.park(dead_letter(
        "channel",
        "garbage",
        serde_json::json!({"not": "an event"}),
    ))
    .await
    .expect("park");

    // A queue that does not exist: nothing is deleted.
    let missing = format!("{}-missing", target.queue_url());
    let report = redrive_to_queue(dlq.client(), dlq.queue_url(), &missing, 10)
        .await
        .expect("redrive");
    assert_eq!((report.redriven.len(), report.failed.len()), (0, 4), "{report:?}");
    assert_eq!(
        receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list").len(),
        4
    );

    let report = redrive_to_queue(dlq.client(), dlq.queue_url(), target.queue_url(), 10)
        .await
        .expect("redrive");
    assert_eq!(report.redriven.len(), 3, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let left = receive(dlq.client(), dlq.queue_url(), 10, 0).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "garbage");

    let bodies = drain_queue(target.queue_url(), 3).await;
    assert_eq!(
        bodies.iter().filter(|b| **b == raw).count(),
        2,
        "(a) and (b) as they were: {bodies:?}"
    );
    let wrapped = bodies
        .iter()
        .find(|b| b["id"] == e1.event_id.to_string())
        .expect("the envelope, wrapped");
    let account = target.queue_url().rsplit('/').nth(1).expect("an account in the URL");
    assert_eq!(
        wrapped,
        &BusEntry::for_event(e1.clone()).to_event_json(account, "us-east-1")
    );
}

#[tokio::test]
async fn republish_publishes_the_events_recorded_in_a_range_again_from_the_table() {
    let (events, _docs) = tables().await;
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .expect("time")
    };
    let times = [
        ("2026-12-01T09:59:59.999Z", false),
        ("2026-12-01T10:00:00Z", true),
        ("2026-12-01T10:02:30.250Z", true),
        ("2026-12-01T10:05:00Z", true),
        ("2026-12-01T10:05:00.001Z", false),
    ];
    let mut inside = Vec::new();
    for (n, (time, within)) in times.iter().enumerate() {
        let mut event = raw_event(
            &format!("republished-{n}"),
            "ProductViewed",
            serde_json::json!({"n": n}),
        );
        event.recorded_at = at(time);
        let stored = events
            .append(AppendRequest {
                stream_id: event.stream_id.clone(),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
                reservations: vec![],
                receipt: None,
            })
            .await
            .expect("append");
        if *within {
            inside.push(stored.events[0].event_id.to_string());
        }
    }
    register_customers(events.clone(), 1).await; // recorded now: outside the range

    let target = bus_to_queue().await;
    let dlq = dead_letter_queue().await;
    let relay = relay_over(Arc::new(target.bus.clone()), &dlq);
    let counted = AtomicU64::new(0);
    let report = republish(
        events.client(),
        events.table(),
        at("2026-12-01T10:00:00Z"),
        at("2026-12-01T10:05:00Z"),
        3,
        &relay,
        &|n| {
            counted.fetch_add(n, Ordering::Relaxed);
        },
    )
    .await
    .expect("republish");
    assert_eq!(report.matched, 3, "{report:?}");
    assert_eq!(report.published, 3, "{report:?}");
    assert_eq!((report.parked, report.failed), (0, 0), "{report:?}");
    assert!(report.scanned >= 5 + 3, "every item read: {report:?}");
    assert_eq!(counted.load(Ordering::Relaxed), 3);
    inside.sort();
    assert_eq!(event_ids(&drain_queue(&target.queue, 3).await), inside);
    assert!(receive(dlq.client(), dlq.queue_url(), 10, 0)
        .await
        .expect("list")
        .is_empty());
}
