//! The handler with the sample stream batch (events/relay/stream-batch.json:
//! two event items, then a reservation, a receipt and a snapshot, interleaved)
//! over an in-memory bus that can refuse entries.

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use crm_core::bus::BusEntry;
use crm_core::clock::SystemClock;
use crm_core::ports::{BusError, DeadLetter, DeadLetterQueue, EventBus, PublishOutcome, StoreError};
use crm_core::relay::{Relay, RelayLetter, RetryPolicy};
use crm_relay::{handle, TokioPause};
use lambda_runtime::{Context, LambdaEvent};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BATCH: &str = include_str!("../../../events/relay/stream-batch.json");

/// Sequence numbers of the sample's records, in order.
const SEQ_EVENT_1: &str = "4421584500000000017450439091";
const SEQ_EVENT_2: &str = "4421584500000000017450439093";

/// A bus that keeps what it accepted and refuses chosen event types.
#[derive(Default)]
struct FakeBus {
    refuse: HashSet<String>,
    /// Fail whole calls.
    down: bool,
    calls: Mutex<Vec<Vec<String>>>,
    accepted: Mutex<Vec<BusEntry>>,
}

impl FakeBus {
    fn refusing(types: &[&str]) -> Arc<Self> {
        Arc::new(FakeBus {
            refuse: types.iter().map(|t| t.to_string()).collect(),
            ..FakeBus::default()
        })
    }

    fn accepted(&self) -> Vec<BusEntry> {
        self.accepted.lock().expect("lock").clone()
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl EventBus for FakeBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<Vec<PublishOutcome>, BusError> {
        self.calls
            .lock()
            .expect("lock")
            .push(entries.iter().map(|e| e.detail_type.clone()).collect());
        if self.down {
            return Err(BusError::Unavailable("connection refused".into()));
        }
        Ok(entries
            .iter()
            .map(|e| {
                if self.refuse.contains(&e.detail_type) {
                    PublishOutcome::Failed {
                        code: "InternalFailure".into(),
                        message: "try again".into(),
                    }
                } else {
                    self.accepted.lock().expect("lock").push(e.clone());
                    PublishOutcome::Published
                }
            })
            .collect())
    }
}

/// A dead-letter queue that keeps its letters, or refuses them all.
#[derive(Default)]
struct FakeDlq(Mutex<Vec<DeadLetter>>, bool);

impl FakeDlq {
    fn refusing() -> Arc<Self> {
        Arc::new(FakeDlq(Mutex::default(), true))
    }

    /// The parked events' entries, in order.
    fn parked_entries(&self) -> Vec<Option<BusEntry>> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|l| match RelayLetter::from_letter(l) {
                Some(RelayLetter::Event(parked)) => parked.stored,
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl DeadLetterQueue for FakeDlq {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        if self.1 {
            return Err(StoreError::Unavailable("queue unreachable".into()));
        }
        self.0.lock().expect("lock").push(letter);
        Ok(())
    }
}

fn relay(bus: Arc<FakeBus>, dlq: Arc<FakeDlq>) -> Relay {
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    Relay::new(bus, dlq, Arc::new(SystemClock)).with_retry(policy, Arc::new(TokioPause))
}

fn batch() -> Event {
    serde_json::from_str(BATCH).expect("events/relay/stream-batch.json is a DynamoDB stream event")
}

async fn run(event: Event, relay: &Relay) -> Vec<Option<String>> {
    let response = handle(LambdaEvent::new(event, Context::default()), relay)
        .await
        .expect("the handler answers");
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

#[tokio::test]
async fn publishes_only_the_event_items_in_order() {
    let bus = FakeBus::refusing(&[]);
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(batch(), &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty(), "{failures:?}");

    let accepted = bus.accepted();
    let summary: Vec<(&str, &str, u64)> = accepted
        .iter()
        .map(|e| (e.source.as_str(), e.detail_type.as_str(), e.detail.version))
        .collect();
    assert_eq!(
        summary,
        [
            ("crm.customer", "CustomerRegistered", 1),
            ("crm.consent", "ConsentGranted", 2)
        ]
    );
    assert_eq!(bus.calls().len(), 1, "both events in one PutEvents");
    let first = &accepted[0].detail;
    assert_eq!(first.event_id.to_string(), "0193a6f2-7c1e-7b3a-9f10-4d5e6a7b8c01");
    assert_eq!(first.stream_id, "customer-0193a6f2-7c1e-7b3a-9f10-4d5e6a7b8c9d");
    assert_eq!(first.data["first_name"], "Ada");
    assert!(dlq.0.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_second_event_refused_on_every_attempt_is_parked_whole_and_the_batch_succeeds() {
    let bus = FakeBus::refusing(&["ConsentGranted"]);
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(batch(), &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty(), "{failures:?}");
    // Tried three times, only the refused entry retried.
    assert_eq!(
        bus.calls(),
        [
            vec!["CustomerRegistered".to_string(), "ConsentGranted".to_string()],
            vec!["ConsentGranted".to_string()],
            vec!["ConsentGranted".to_string()],
        ]
    );
    let parked = dlq.parked_entries();
    assert_eq!(parked.len(), 1);
    let entry = parked[0].as_ref().expect("parked whole");
    assert_eq!(entry.detail_type, "ConsentGranted");
    assert_eq!(entry.source, "crm.consent");
    assert_eq!(entry.detail.version, 2);
    let letter = dlq.0.lock().expect("lock")[0].clone();
    assert_eq!(letter.attempts, 3);
    assert!(letter.reason.contains("InternalFailure"), "{}", letter.reason);
    assert_eq!(letter.payload["record_id"], SEQ_EVENT_2);
}

#[tokio::test]
async fn a_refused_first_event_is_parked_and_the_second_goes_on() {
    let bus = FakeBus::refusing(&["CustomerRegistered"]);
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(batch(), &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty(), "{failures:?}");
    let accepted: Vec<String> = bus.accepted().into_iter().map(|e| e.detail_type).collect();
    assert_eq!(accepted, ["ConsentGranted"]);
    let parked: Vec<String> = dlq
        .parked_entries()
        .into_iter()
        .map(|e| e.map(|e| e.detail_type).unwrap_or_default())
        .collect();
    assert_eq!(parked, ["CustomerRegistered"]);
}

#[tokio::test]
async fn a_bus_that_is_down_is_retried_then_every_event_is_parked() {
    let bus = Arc::new(FakeBus {
        down: true,
        ..FakeBus::default()
    });
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(batch(), &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bus.calls().len(), 3, "the failed call is retried");
    let parked: Vec<u64> = dlq
        .parked_entries()
        .into_iter()
        .map(|e| e.map(|e| e.detail.version).unwrap_or_default())
        .collect();
    assert_eq!(parked, [1, 2]);
}

#[tokio::test]
async fn only_a_record_the_dead_letter_queue_refuses_too_fails_the_batch() {
    let bus = Arc::new(FakeBus {
        down: true,
        ..FakeBus::default()
    });
    let failures = run(batch(), &relay(bus.clone(), FakeDlq::refusing())).await;
    assert_eq!(failures, [Some(SEQ_EVENT_1.to_string())]);

    // A refused second event with the queue down: the first went, the second is retried by Lambda.
    let bus = FakeBus::refusing(&["ConsentGranted"]);
    let failures = run(batch(), &relay(bus.clone(), FakeDlq::refusing())).await;
    assert_eq!(failures, [Some(SEQ_EVENT_2.to_string())]);
    let accepted: Vec<String> = bus.accepted().into_iter().map(|e| e.detail_type).collect();
    assert_eq!(accepted, ["CustomerRegistered"]);
}

#[tokio::test]
async fn poison_is_parked_and_does_not_block_the_stream() {
    let mut json: serde_json::Value = serde_json::from_str(BATCH).expect("json");
    // Corrupt the first event's data and drop the second's actor.
    json["Records"][0]["dynamodb"]["NewImage"]["data"] = serde_json::json!({"S": "{not json"});
    json["Records"][2]["dynamodb"]["NewImage"]
        .as_object_mut()
        .expect("image")
        .remove("actor");
    let event: Event = serde_json::from_value(json).expect("event");
    let bus = FakeBus::refusing(&[]);
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(event, &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(bus.accepted().is_empty());

    let letters = dlq.0.lock().expect("lock").clone();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.consumer == "relay"));
    assert!(letters[0].reason.contains("data"), "{}", letters[0].reason);
    assert!(letters[1].reason.contains("actor"), "{}", letters[1].reason);
    assert_eq!(letters[0].payload["dynamodb"]["SequenceNumber"], SEQ_EVENT_1);
    assert_eq!(letters[1].payload["eventID"], "e3f2cafa94d56e7fb18293a415c6d7e8");
}

#[tokio::test]
async fn removals_and_modifications_are_not_published() {
    let mut json: serde_json::Value = serde_json::from_str(BATCH).expect("json");
    json["Records"][0]["eventName"] = "MODIFY".into();
    json["Records"][2]["eventName"] = "REMOVE".into();
    let event: Event = serde_json::from_value(json).expect("event");
    let bus = FakeBus::refusing(&[]);
    let failures = run(event, &relay(bus.clone(), Arc::default())).await;
    assert!(failures.is_empty());
    assert!(bus.calls().is_empty());
}

/// DynamoDB's TTL deletes an expired event (activity, or an order stream
/// past the legal period, decision 0078): a `REMOVE` without a new image,
/// by the service itself. Nothing is published and nothing is parked.
#[tokio::test]
async fn an_expiry_by_the_ttl_is_neither_published_nor_parked() {
    let mut json: serde_json::Value = serde_json::from_str(BATCH).expect("json");
    let records = json["Records"].as_array_mut().expect("records");
    records.truncate(1);
    records[0]["eventName"] = "REMOVE".into();
    records[0]["userIdentity"] = serde_json::json!({ "type": "Service", "principalId": "dynamodb.amazonaws.com" });
    records[0]["dynamodb"]
        .as_object_mut()
        .expect("dynamodb")
        .remove("NewImage");
    let event: Event = serde_json::from_value(json).expect("event");
    let bus = FakeBus::refusing(&[]);
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(event, &relay(bus.clone(), dlq.clone())).await;
    assert!(failures.is_empty());
    assert!(bus.calls().is_empty());
    assert!(dlq.0.lock().expect("lock").is_empty(), "an expiry is not poison");
}

#[tokio::test]
async fn an_insert_without_a_new_image_is_poison() {
    let mut json: serde_json::Value = serde_json::from_str(BATCH).expect("json");
    let records = json["Records"].as_array_mut().expect("records");
    records.truncate(1);
    records[0]["dynamodb"]
        .as_object_mut()
        .expect("dynamodb")
        .remove("NewImage");
    records[0]["dynamodb"]["StreamViewType"] = "KEYS_ONLY".into();
    let event: Event = serde_json::from_value(json).expect("event");
    let dlq = Arc::new(FakeDlq::default());
    let failures = run(event, &relay(FakeBus::refusing(&[]), dlq.clone())).await;
    assert!(failures.is_empty());
    let letters = dlq.0.lock().expect("lock").clone();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("NEW_IMAGE"));
}

#[tokio::test]
async fn an_empty_batch_answers_no_failures() {
    let event: Event = serde_json::from_str(r#"{"Records": []}"#).expect("event");
    let bus = FakeBus::refusing(&[]);
    assert!(run(event, &relay(bus.clone(), Arc::default())).await.is_empty());
    assert!(bus.calls().is_empty());
}

#[test]
fn the_response_serialises_as_lambda_expects() {
    let mut failure = aws_lambda_events::event::streams::DynamoDbBatchItemFailure::default();
    failure.item_identifier = Some(SEQ_EVENT_2.into());
    let mut response = aws_lambda_events::event::streams::DynamoDbEventResponse::default();
    response.batch_item_failures.push(failure);
    assert_eq!(
        serde_json::to_value(&response).expect("json"),
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": SEQ_EVENT_2}]})
    );
}

#[tokio::test]
async fn a_batch_reports_its_lag_from_the_oldest_record_and_what_it_published() {
    use crm_aws::emf::{EmfWriter, SharedBuffer};
    use crm_core::clock::VirtualClock;
    // The sample's records were written at 1795435200 (epoch seconds); the relay runs 90 s later.
    let written = chrono::DateTime::from_timestamp(1_795_435_200, 0).expect("valid time");
    let buffer = SharedBuffer::default();
    let relay = Relay::new(
        FakeBus::refusing(&[]),
        Arc::new(FakeDlq::default()),
        Arc::new(VirtualClock::starting_at(written + chrono::Duration::seconds(90))),
    )
    .with_metrics(Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))));
    let failures = run(batch(), &relay).await;
    assert!(failures.is_empty(), "{failures:?}");
    let docs = buffer.documents();
    assert_eq!(docs.len(), 1, "one document per batch: {docs:?}");
    let doc = &docs[0];
    assert_eq!(doc["Consumer"], "relay");
    assert_eq!(doc["ConsumerLag"], serde_json::json!(90_000.0));
    assert_eq!(doc["EventsRelayed"], serde_json::json!(2.0));
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Crm");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Consumer"]]));
}

/// events/relay/parked-event.json: the relay's dead letter for the sample's
/// second event, refused on every attempt, as its SQS message body.
const PARKED: &str = include_str!("../../../events/relay/parked-event.json");

#[tokio::test]
async fn the_sample_parked_event_is_what_the_relay_parks() {
    let bus = FakeBus::refusing(&["ConsentGranted"]);
    let dlq = Arc::new(FakeDlq::default());
    let relay = Relay::new(bus, dlq.clone(), Arc::new(SystemClock)).with_retry(
        RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        },
        Arc::new(crm_core::relay::NoPause),
    );
    assert!(run(batch(), &relay).await.is_empty());
    let parked = dlq.0.lock().expect("lock")[0].clone();
    let sample: DeadLetter = serde_json::from_str(PARKED).expect("events/relay/parked-event.json is a dead letter");
    assert_eq!(
        DeadLetter {
            failed_at: sample.failed_at,
            ..parked.clone()
        },
        sample,
        "{}",
        serde_json::to_string_pretty(&parked).unwrap_or_default()
    );
    match RelayLetter::from_letter(&sample) {
        Some(RelayLetter::Event(event)) => {
            assert_eq!(event.key.sk, 2);
            assert!(event.stored.is_some());
        }
        other => panic!("a parked event, not {other:?}"),
    }
}

/// The `RecordsParked` documents of `buffer`: (Parked, value).
fn parked_metrics(buffer: &crm_aws::emf::SharedBuffer) -> Vec<(String, f64)> {
    buffer
        .documents()
        .into_iter()
        .filter(|d| d.get(crm_relay::RECORDS_PARKED).is_some())
        .map(|d| {
            assert_eq!(d["Consumer"], "relay", "{d}");
            assert_eq!(
                d["_aws"]["CloudWatchMetrics"][0]["Metrics"],
                serde_json::json!([{"Name": crm_relay::RECORDS_PARKED, "Unit": "Count"}]),
                "{d}"
            );
            assert_eq!(
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                serde_json::json!([["Consumer"]]),
                "{d}"
            );
            (
                d["Parked"].as_str().unwrap_or_default().to_string(),
                d[crm_relay::RECORDS_PARKED].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_record_the_function_parks_is_counted() {
    use crm_aws::emf::{EmfWriter, SharedBuffer};
    // The relay as the function builds it (default retry policy): the
    // second event is refused on every attempt, so it is parked whole.
    let buffer = SharedBuffer::default();
    let dlq = Arc::new(FakeDlq::default());
    let relay = crm_relay::build(
        FakeBus::refusing(&["ConsentGranted"]),
        dlq.clone(),
        Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))),
        None,
    );
    assert!(run(batch(), &relay).await.is_empty());
    assert_eq!(dlq.parked_entries().len(), 1);
    assert_eq!(parked_metrics(&buffer), [("event".to_string(), 1.0)]);

    // Poison (an event item that cannot be read) is parked and counted too.
    let mut json: serde_json::Value = serde_json::from_str(BATCH).expect("json");
    json["Records"][0]["dynamodb"]["NewImage"]["data"] = serde_json::json!({"S": "{not json"});
    let event: Event = serde_json::from_value(json).expect("event");
    let buffer = SharedBuffer::default();
    let relay = crm_relay::build(
        FakeBus::refusing(&[]),
        Arc::new(FakeDlq::default()),
        Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))),
        None,
    );
    assert!(run(event, &relay).await.is_empty());
    assert_eq!(parked_metrics(&buffer), [("poison".to_string(), 1.0)]);

    // Nothing parked, nothing counted.
    let buffer = SharedBuffer::default();
    let relay = crm_relay::build(
        FakeBus::refusing(&[]),
        Arc::new(FakeDlq::default()),
        Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))),
        None,
    );
    assert!(run(batch(), &relay).await.is_empty());
    assert!(parked_metrics(&buffer).is_empty());
    assert!(!buffer.documents().is_empty(), "the batch's own metrics are written");
}

#[tokio::test]
async fn a_letter_the_queue_refused_is_not_counted() {
    use crm_aws::emf::{EmfWriter, SharedBuffer};
    let buffer = SharedBuffer::default();
    let relay = crm_relay::build(
        FakeBus::refusing(&["ConsentGranted"]),
        FakeDlq::refusing(),
        Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))),
        None,
    );
    assert_eq!(run(batch(), &relay).await, [Some(SEQ_EVENT_2.to_string())]);
    assert!(parked_metrics(&buffer).is_empty(), "{:?}", buffer.documents());
}

#[tokio::test]
async fn an_event_parked_by_its_key_is_counted_as_such() {
    use crm_aws::emf::{EmfWriter, SharedBuffer};
    use crm_core::ports::DeadLetterQueue as _;
    let buffer = SharedBuffer::default();
    let dlq = Arc::new(FakeDlq::default());
    let metered =
        crm_relay::MeteredDeadLetters::new(dlq.clone(), Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))));
    let by_key: serde_json::Value = serde_json::json!({
        "key": {"pk": "customer-1", "sk": 3},
        "event_id": "0193a6f2-7c1e-7b3a-9f10-4d5e6a7b8c01",
        "event_type": "OrderPlaced",
        "record_id": "42",
        "size_bytes": 300000
    });
    let relay = relay(FakeBus::refusing(&[]), Arc::new(FakeDlq::default()));
    let letter = relay.dead_letter("too large for a queue message", by_key);
    assert!(
        matches!(RelayLetter::from_letter(&letter), Some(RelayLetter::Event(ref p)) if p.stored.is_none()),
        "{letter:?}"
    );
    metered.park(letter).await.expect("parked");
    assert_eq!(dlq.0.lock().expect("lock").len(), 1);
    assert_eq!(parked_metrics(&buffer), [("event-by-key".to_string(), 1.0)]);
}

/// template.yaml alarms on the first record parked: the metric the relay
/// emits, in the functions' namespace, for the relay's dimension.
#[test]
fn the_template_alarms_on_the_records_parked() {
    let template = include_str!("../../../template.yaml");
    let start = template
        .find("\n  RelayRecordsParkedAlarm:\n")
        .expect("template.yaml has RelayRecordsParkedAlarm");
    // Its lines: up to the next top-level resource (or comment) of Resources.
    let alarm: String = template[start + 1..]
        .lines()
        .enumerate()
        .take_while(|(i, line)| *i == 0 || !line.starts_with("  ") || line.starts_with("   "))
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    for line in [
        "Type: AWS::CloudWatch::Alarm",
        "Namespace: !Ref MetricsNamespace",
        &format!("MetricName: {}", crm_relay::RECORDS_PARKED),
        "- Name: Consumer",
        &format!("Value: {}", crm_core::relay::RELAY_CONSUMER),
        "Statistic: Sum",
        "Threshold: 0",
        "ComparisonOperator: GreaterThanThreshold",
    ] {
        assert!(
            alarm.contains(line),
            "RelayRecordsParkedAlarm has no {line:?}:\n{alarm}"
        );
    }
    assert!(
        template.contains(&format!(
            "[\"${{MetricsNamespace}}\", \"{}\", \"Consumer\", \"relay\"",
            crm_relay::RECORDS_PARKED
        )),
        "the dashboard charts the records parked"
    );
}
