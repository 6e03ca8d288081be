//! The relay over the wire, against the moto server in `AWS_ENDPOINT_URL`
//! (the test script starts one and sets it):
//!
//! events appended through `DynamoEventStore` → the table's stream, read with
//! DynamoDB Streams (DescribeStream, GetShardIterator TRIM_HORIZON,
//! GetRecords) and shaped as Lambda delivers it → `handle` → PutEvents to a
//! bus of its own → a rule (`{"source": [{"prefix": "crm."}]}`) → an SQS
//! queue, which must then hold exactly the stored events.
//!
//! Every test uses its own table, bus, rule and queues, so they run in
//! parallel.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use chrono::Utc;
use crm_aws::dynamodb::{create_events_table, DynamoEventStore};
use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{bus_into_queue, create_queue, moto_config, REGION};
use crm_core::bus::BusEntry;
use crm_core::event::EventEnvelope;
use crm_core::ports::{
    AppendRequest, BusError, CommandReceipt, DeadLetter, EventBus, EventStore, ExpectedVersion, PublishOutcome,
    ReservationChange, Snapshot,
};
use crm_core::relay::{EventKey, ParkedEvent, RelayLetter};
use crm_relay::{handle, relay};
use lambda_runtime::{Context, LambdaEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Everything one test uses, all named after one unique id.
struct World {
    config: SdkConfig,
    store: DynamoEventStore,
    bus_name: String,
    target_queue: String,
    dead_letter_queue: String,
}

async fn world() -> World {
    let config = moto_config().await;
    let unique = Uuid::now_v7().simple().to_string();

    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("events-relay-{unique}");
    create_events_table(&ddb, &table)
        .await
        .expect("create the events table");

    let sqs = aws_sdk_sqs::Client::new(&config);
    let dead_letter_queue = create_queue(&sqs, &format!("crm-relay-dlq-{unique}")).await;
    let (bus_name, target_queue) = bus_into_queue("relay").await;

    World {
        store: DynamoEventStore::new(ddb, table),
        config,
        bus_name,
        target_queue,
        dead_letter_queue,
    }
}

impl World {
    fn relay(&self) -> crm_core::relay::Relay {
        relay(
            Arc::new(EventBridgeBus::new(
                aws_sdk_eventbridge::Client::new(&self.config),
                &self.bus_name,
            )),
            Arc::new(SqsDeadLetterQueue::new(
                aws_sdk_sqs::Client::new(&self.config),
                &self.dead_letter_queue,
            )),
        )
    }

    /// The table's stream from its start, as the Lambda event Lambda would
    /// deliver for it.
    async fn stream_batch(&self) -> serde_json::Value {
        let ddb = self.store.client();
        let stream_arn = ddb
            .describe_table()
            .table_name(self.store.table())
            .send()
            .await
            .expect("describe table")
            .table()
            .and_then(|t| t.latest_stream_arn())
            .expect("the table has a stream")
            .to_string();
        let streams = aws_sdk_dynamodbstreams::Client::new(&self.config);
        let description = streams
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await
            .expect("describe stream");
        let shards = description
            .stream_description()
            .map(|d| d.shards().to_vec())
            .unwrap_or_default();
        assert!(!shards.is_empty(), "the stream has no shard");

        let mut records = Vec::new();
        for shard in shards {
            let shard_id = shard.shard_id().expect("shard id");
            let mut iterator = streams
                .get_shard_iterator()
                .stream_arn(&stream_arn)
                .shard_id(shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("shard iterator")
                .shard_iterator()
                .map(str::to_string);
            while let Some(it) = iterator {
                let page = streams
                    .get_records()
                    .shard_iterator(it)
                    .limit(100)
                    .send()
                    .await
                    .expect("get records");
                if page.records().is_empty() {
                    break;
                }
                records.extend(page.records().iter().map(|r| lambda_record(r, &stream_arn)));
                iterator = page.next_shard_iterator().map(str::to_string);
            }
        }
        serde_json::json!({ "Records": records })
    }

    /// Every message on `queue`, waiting until `expected` arrived (or ten
    /// seconds passed), then one more short poll for stragglers.
    async fn drain(&self, queue: &str, expected: usize) -> Vec<aws_sdk_sqs::types::Message> {
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut messages = Vec::new();
        loop {
            let page = sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(if messages.len() >= expected { 0 } else { 1 })
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            let got = page.messages().to_vec();
            if got.is_empty() && (messages.len() >= expected || Instant::now() > deadline) {
                return messages;
            }
            for m in &got {
                if let Some(handle) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(queue)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete");
                }
            }
            messages.extend(got);
        }
    }
}

/// A DynamoDB Streams attribute value as DynamoDB JSON.
fn ddb_json(value: &StreamValue) -> serde_json::Value {
    use serde_json::json;
    match value {
        StreamValue::S(s) => json!({ "S": s }),
        StreamValue::N(n) => json!({ "N": n }),
        StreamValue::Bool(b) => json!({ "BOOL": b }),
        StreamValue::Null(b) => json!({ "NULL": b }),
        StreamValue::Ss(v) => json!({ "SS": v }),
        StreamValue::Ns(v) => json!({ "NS": v }),
        StreamValue::L(v) => json!({ "L": v.iter().map(ddb_json).collect::<Vec<_>>() }),
        StreamValue::M(m) => json!({ "M": image_json(m) }),
        other => panic!("no binary attributes in the events table: {other:?}"),
    }
}

fn image_json(item: &HashMap<String, StreamValue>) -> serde_json::Value {
    serde_json::Value::Object(item.iter().map(|(k, v)| (k.clone(), ddb_json(v))).collect())
}

/// One GetRecords record in the shape of a Lambda DynamoDB stream event record.
fn lambda_record(r: &aws_sdk_dynamodbstreams::types::Record, stream_arn: &str) -> serde_json::Value {
    let d = r.dynamodb().expect("record has a dynamodb part");
    let mut change = serde_json::json!({
        "ApproximateCreationDateTime": d
            .approximate_creation_date_time()
            .map(|t| t.secs())
            .unwrap_or_default(),
        "Keys": image_json(d.keys().expect("keys")),
        "SequenceNumber": d.sequence_number().expect("sequence number"),
        "SizeBytes": d.size_bytes().unwrap_or_default(),
        "StreamViewType": d.stream_view_type().map(|t| t.as_str()).unwrap_or("NEW_IMAGE"),
    });
    if let Some(image) = d.new_image() {
        change["NewImage"] = image_json(image);
    }
    if let Some(image) = d.old_image() {
        change["OldImage"] = image_json(image);
    }
    serde_json::json!({
        "eventID": r.event_id().expect("event id"),
        "eventName": r.event_name().expect("event name").as_str(),
        "eventVersion": r.event_version().unwrap_or("1.1"),
        "eventSource": r.event_source().unwrap_or("aws:dynamodb"),
        "awsRegion": r.aws_region().unwrap_or(REGION),
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    })
}

fn envelope(customer: &str, event_type: &str, data: serde_json::Value) -> EventEnvelope {
    let now = Utc::now();
    let id = Uuid::now_v7();
    EventEnvelope {
        event_id: id,
        stream_id: format!("customer-{customer}"),
        version: 0,
        event_type: event_type.into(),
        schema_version: 1,
        customer_id: Some(customer.into()),
        occurred_at: now,
        recorded_at: now,
        causation_id: Some(id),
        correlation_id: id,
        actor: "api:wire-test".into(),
        data,
    }
}

/// Two commands on one customer: a registration (two events, an email
/// reservation and a receipt) and a consent change; then a snapshot.
async fn append_history(store: &DynamoEventStore) -> Vec<EventEnvelope> {
    let customer = Uuid::now_v7().to_string();
    let stream = format!("customer-{customer}");
    let first = store
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![
                envelope(
                    &customer,
                    "CustomerRegistered",
                    serde_json::json!({ "customer_id": customer, "email": "ada@example.com" }),
                ),
                envelope(
                    &customer,
                    "EmailVerificationRequested",
                    serde_json::json!({ "email": "ada@example.com", "token": "t" }),
                ),
            ],
            reservations: vec![ReservationChange::Claim {
                key: format!("email#{customer}"),
                owner: stream.clone(),
            }],
            receipt: Some(CommandReceipt {
                key: format!("command#{customer}"),
                request_hash: "h".into(),
                status: 201,
                body: serde_json::json!({ "id": customer }),
                recorded_at: Utc::now(),
            }),
        })
        .await
        .expect("append the registration");
    let second = store
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::Exactly(2),
            events: vec![envelope(
                &customer,
                "ConsentGranted",
                serde_json::json!({ "purpose": "marketing", "channel": "email", "method": "api" }),
            )],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("append the consent");
    store
        .save_snapshot(Snapshot {
            stream_id: stream,
            version: 3,
            state_schema: 1,
            state: serde_json::json!({ "status": "pending-verification" }),
        })
        .await
        .expect("save a snapshot");
    first.events.into_iter().chain(second.events).collect()
}

fn sequence_numbers(batch: &serde_json::Value, kind: &str) -> Vec<String> {
    batch["Records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["dynamodb"]["NewImage"]["kind"]["S"] == kind)
        .map(|r| {
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .expect("sequence number")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn stored_events_reach_the_bus_and_nothing_else_does() {
    let w = world().await;
    let stored = append_history(&w.store).await;
    let batch = w.stream_batch().await;
    // The stream holds the events and the other items: the relay must tell them apart.
    assert_eq!(sequence_numbers(&batch, "event").len(), 3, "{batch:#}");
    assert_eq!(sequence_numbers(&batch, "reservation").len(), 1);
    assert_eq!(sequence_numbers(&batch, "receipt").len(), 1);
    assert_eq!(sequence_numbers(&batch, "snapshot").len(), 1);

    let event: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(batch).expect("the batch is a Lambda DynamoDB stream event");
    let response = handle(LambdaEvent::new(event, Context::default()), &w.relay())
        .await
        .expect("handle");
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let messages = w.drain(&w.target_queue, stored.len()).await;
    let bodies: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or_default()).expect("message is JSON"))
        .collect();
    let mut arrived: Vec<String> = bodies
        .iter()
        .map(|b| b["detail"]["event_id"].as_str().expect("detail.event_id").to_string())
        .collect();
    arrived.sort();
    let mut expected: Vec<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
    expected.sort();
    assert_eq!(arrived, expected, "exactly the stored events, once each");

    for body in &bodies {
        let detail: EventEnvelope = serde_json::from_value(body["detail"].clone()).expect("detail is an envelope");
        let stored = stored
            .iter()
            .find(|e| e.event_id == detail.event_id)
            .expect("a stored event");
        assert_eq!(&detail, stored, "the envelope arrives as stored");
        assert_eq!(body["detail-type"], stored.event_type.as_str());
        assert_eq!(body["source"], crm_core::bus::source_for(&stored.event_type));
    }
    assert!(w.drain(&w.dead_letter_queue, 0).await.is_empty());
}

#[tokio::test]
async fn an_unreadable_event_item_goes_to_the_dead_letter_queue() {
    let w = world().await;
    let stored = append_history(&w.store).await;
    // An event item nobody could have written through the store: no actor.
    w.store
        .client()
        .put_item()
        .table_name(w.store.table())
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("customer-broken".into()),
        )
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .item("kind", aws_sdk_dynamodb::types::AttributeValue::S("event".into()))
        .send()
        .await
        .expect("put a broken item");
    let batch = w.stream_batch().await;
    let event: aws_lambda_events::event::dynamodb::Event = serde_json::from_value(batch).expect("event");
    let response = handle(LambdaEvent::new(event, Context::default()), &w.relay())
        .await
        .expect("handle");
    assert!(response.batch_item_failures.is_empty());

    assert_eq!(w.drain(&w.target_queue, stored.len()).await.len(), stored.len());
    let letters = w.drain(&w.dead_letter_queue, 1).await;
    assert_eq!(letters.len(), 1);
    let attributes = letters[0].message_attributes().expect("attributes");
    assert_eq!(attributes.get("consumer").and_then(|a| a.string_value()), Some("relay"));
    assert!(attributes
        .get("reason")
        .and_then(|a| a.string_value())
        .is_some_and(|r| r.contains("event_id")));
    let letter: crm_core::ports::DeadLetter =
        serde_json::from_str(letters[0].body().unwrap_or_default()).expect("a dead letter");
    assert_eq!(letter.consumer, "relay");
    assert_eq!(letter.payload["dynamodb"]["Keys"]["pk"]["S"], "customer-broken");
}

/// The real EventBridge adapter behind a switch: the first `failures` calls
/// fail as a whole, as a throttled or unreachable EventBridge does.
struct FlakyBus {
    inner: EventBridgeBus,
    failures: AtomicUsize,
    calls: AtomicUsize,
}

impl FlakyBus {
    fn new(w: &World, failures: usize) -> Arc<Self> {
        Arc::new(FlakyBus {
            inner: EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&w.config), &w.bus_name),
            failures: AtomicUsize::new(failures),
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl EventBus for FlakyBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<Vec<PublishOutcome>, BusError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(BusError::Unavailable(
                "ThrottlingException: Rate exceeded (injected)".into(),
            ));
        }
        self.inner.put(entries).await
    }
}

impl World {
    fn dead_letters(&self) -> Arc<SqsDeadLetterQueue> {
        Arc::new(SqsDeadLetterQueue::new(
            aws_sdk_sqs::Client::new(&self.config),
            &self.dead_letter_queue,
        ))
    }

    /// The stream's batch through the relay over `bus`.
    async fn relay_through(&self, bus: Arc<dyn EventBus>) -> Vec<Option<String>> {
        let batch = self.stream_batch().await;
        let event: aws_lambda_events::event::dynamodb::Event = serde_json::from_value(batch).expect("event");
        handle(
            LambdaEvent::new(event, Context::default()),
            &relay(bus, self.dead_letters()),
        )
        .await
        .expect("handle")
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
    }

    /// The relay's dead letters on the queue, decoded.
    async fn parked(&self, expected: usize) -> Vec<(DeadLetter, ParkedEvent)> {
        self.drain(&self.dead_letter_queue, expected)
            .await
            .iter()
            .map(|m| {
                let letter: DeadLetter = serde_json::from_str(m.body().unwrap_or_default()).expect("a dead letter");
                match RelayLetter::from_letter(&letter) {
                    Some(RelayLetter::Event(parked)) => (letter, *parked),
                    other => panic!("a parked event, not {other:?}"),
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn put_events_failures_are_retried_inside_the_invocation() {
    let w = world().await;
    let stored = append_history(&w.store).await;
    let bus = FlakyBus::new(&w, 2);
    let failures = w.relay_through(bus.clone()).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        bus.calls.load(Ordering::SeqCst),
        3,
        "two failed calls, then the one that went"
    );
    assert_eq!(w.drain(&w.target_queue, stored.len()).await.len(), stored.len());
    assert!(w.drain(&w.dead_letter_queue, 0).await.is_empty());
}

#[tokio::test]
async fn events_still_unpublished_after_the_retries_are_parked_whole_and_the_batch_succeeds() {
    let w = world().await;
    let stored = append_history(&w.store).await;
    let bus = FlakyBus::new(&w, usize::MAX);
    let failures = w.relay_through(bus.clone()).await;
    assert!(
        failures.is_empty(),
        "the stream mapping never has to give up: {failures:?}"
    );
    assert_eq!(
        bus.calls.load(Ordering::SeqCst),
        4,
        "the default policy's four attempts"
    );
    assert!(w.drain(&w.target_queue, 0).await.is_empty());

    let parked = w.parked(stored.len()).await;
    assert_eq!(parked.len(), stored.len());
    for (letter, event) in &parked {
        let original = stored
            .iter()
            .find(|e| e.event_id == event.event_id)
            .expect("a stored event");
        assert_eq!(letter.consumer, "relay");
        assert_eq!(letter.attempts, 4);
        assert!(letter.reason.contains("injected"), "{}", letter.reason);
        assert_eq!(
            event.key,
            EventKey {
                pk: original.stream_id.clone(),
                sk: original.version
            }
        );
        let entry = event.stored.as_ref().expect("parked whole");
        assert_eq!(
            entry,
            &BusEntry::for_event(original.clone()),
            "the entry as the relay built it"
        );
    }
}

#[tokio::test]
async fn a_bus_that_does_not_exist_parks_every_event_without_retrying() {
    let w = world().await;
    let stored = append_history(&w.store).await;
    let missing = EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&w.config),
        format!("{}-missing", w.bus_name),
    );
    let failures = w.relay_through(Arc::new(missing)).await;
    assert!(failures.is_empty(), "{failures:?}");
    let parked = w.parked(stored.len()).await;
    assert_eq!(parked.len(), stored.len());
    assert!(parked.iter().all(|(l, p)| l.attempts == 1 && p.stored.is_some()));
    assert!(
        parked[0].0.reason.contains("refused the call"),
        "{}",
        parked[0].0.reason
    );
}

#[tokio::test]
async fn a_dead_letter_queue_that_does_not_exist_either_fails_the_batch_from_the_first_event() {
    let w = world().await;
    append_history(&w.store).await;
    let batch = w.stream_batch().await;
    let first_event = sequence_numbers(&batch, "event")
        .into_iter()
        .next()
        .expect("an event record");
    let event: aws_lambda_events::event::dynamodb::Event = serde_json::from_value(batch).expect("event");
    let relay = relay(
        FlakyBus::new(&w, usize::MAX),
        Arc::new(SqsDeadLetterQueue::new(
            aws_sdk_sqs::Client::new(&w.config),
            format!("{}-missing", w.dead_letter_queue),
        )),
    );
    let response = handle(LambdaEvent::new(event, Context::default()), &relay)
        .await
        .expect("handle");
    let failures: Vec<Option<String>> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    assert_eq!(failures, [Some(first_event)]);
}
