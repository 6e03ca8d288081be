//! The projector's handler over the real SQLite adapters: EventBridge events
//! in, the customer 360 (and timeline, email index) out.

use crm_core::customer::views::{customer_profile, timeline, CustomerProfile};
use crm_core::customer::{CustomerCommand, UpdateProfile};
use crm_core::failure::{Classify, FailureKind};
use crm_projector::handler::{handle, Handled, HandlerError};
use crm_testkit::{bus_event, delivered, detail, invocation, sample_event, Harness};
use serde_json::json;

const CUSTOMER: &str = "0190a000-0000-7000-8000-00000000c001";
/// Every consumer of the projector, in the group's order.
const CONSUMERS: [&str; 15] = [
    "customer-360",
    "timeline",
    "email-index",
    "name-index",
    "funnel",
    "attribution",
    "campaign-stats",
    "broadcast-stats",
    "profile-metrics",
    "segment-evaluator",
    "co-purchases",
    "affinity-detector",
    "segment-members",
    "customer-streams",
    // The operator's overview counters (decision 0085).
    "ops-counters",
];
/// The ones that read a customer event's data (the others only move their checkpoint).
const CUSTOMER_VIEWS: [&str; 4] = ["customer-360", "timeline", "email-index", "name-index"];

/// The projector's group, its indexes keyed with the tests' identifier secret.
fn projector(
    events: std::sync::Arc<dyn crm_core::ports::EventStore>,
    docs: std::sync::Arc<dyn crm_core::ports::ReadModelStore>,
    dead_letters: std::sync::Arc<dyn crm_core::ports::DeadLetterQueue>,
) -> crm_core::consumer::ConsumerGroup {
    crm_projector::group(events, docs, dead_letters, crm_core::testing::identifiers())
}

async fn profile(h: &Harness) -> Option<CustomerProfile> {
    customer_profile(h.docs.as_ref(), CUSTOMER).await.expect("read the 360")
}

#[tokio::test]
async fn a_registration_builds_the_customer_360() {
    let h = Harness::new();
    let group = h.group(projector);
    let events = h.register(CUSTOMER, "Ada@Example.com").await;

    for event in &events {
        let outcome = handle(invocation(bus_event(event)), &group, h.dead_letters.as_ref())
            .await
            .expect("handled");
        let (applied, duplicates, parked) = delivered(&outcome);
        // Consumers apply the event types they handle and write nothing for the others.
        assert!(applied.contains(&"customer-360"), "{applied:?}");
        assert!(applied.iter().all(|c| !duplicates.contains(c)), "{outcome:?}");
        assert!(parked.is_empty());
    }

    let profile = profile(&h).await.expect("the 360 exists");
    assert_eq!(profile.customer.id, CUSTOMER);
    assert_eq!(profile.customer.email, "ada@example.com");
    assert_eq!(profile.customer.first_name, "Ada");
    assert_eq!(profile.customer.version, 3);
    assert_eq!(profile.consent_summary, ["marketing:email"]);
    assert_eq!(profile.event_counts.values().sum::<u64>(), 3);
    assert!(profile.customer.pending_verification_token.is_none());
    let timeline = timeline(h.docs.as_ref(), CUSTOMER, 0, 10)
        .await
        .expect("read the timeline");
    assert_eq!(timeline.len(), 3);
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing() {
    let h = Harness::new();
    let group = h.group(projector);
    let events = h.register(CUSTOMER, "ada@example.com").await;
    for event in &events {
        handle(invocation(bus_event(event)), &group, h.dead_letters.as_ref())
            .await
            .expect("handled");
    }
    let before = profile(&h).await;

    for event in events.iter().rev() {
        let outcome = handle(invocation(bus_event(event)), &group, h.dead_letters.as_ref())
            .await
            .expect("handled");
        let (applied, duplicates, parked) = delivered(&outcome);
        assert!(applied.is_empty() && parked.is_empty());
        assert_eq!(duplicates, &CONSUMERS.to_vec());
    }

    assert_eq!(profile(&h).await, before);
    assert_eq!(profile(&h).await.map(|p| p.event_counts.values().sum::<u64>()), Some(3));
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn a_later_version_first_fills_the_gap_from_the_store() {
    let h = Harness::new();
    let group = h.group(projector);
    let mut events = h.register(CUSTOMER, "ada@example.com").await;
    events.extend(
        h.execute(
            CUSTOMER,
            CustomerCommand::UpdateProfile(UpdateProfile {
                first_name: Some("Augusta".into()),
                ..Default::default()
            }),
        )
        .await,
    );
    let last = events.last().expect("events");
    assert_eq!(last.version, 4);

    // Only the newest event arrives; versions 1 to 3 come from the store.
    let outcome = handle(invocation(bus_event(last)), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert!(delivered(&outcome).0.contains(&"customer-360"), "{outcome:?}");
    let filled = profile(&h).await.expect("the 360 exists");
    assert_eq!(filled.customer.version, 4);
    assert_eq!(filled.customer.first_name, "Augusta");
    assert_eq!(filled.event_counts.values().sum::<u64>(), 4);

    // The earlier ones, delivered late, are duplicates for the 360 now (a
    // consumer that does not handle version 4 applies them as they come).
    for event in &events[..3] {
        let outcome = handle(invocation(bus_event(event)), &group, h.dead_letters.as_ref())
            .await
            .expect("handled");
        assert!(delivered(&outcome).1.contains(&"customer-360"), "{outcome:?}");
        assert!(delivered(&outcome).2.is_empty(), "{outcome:?}");
    }
    assert_eq!(profile(&h).await, Some(filled));
}

#[tokio::test]
async fn a_detail_that_is_not_an_envelope_is_parked_not_failed() {
    let h = Harness::new();
    let group = h.group(projector);
    let events = h.register(CUSTOMER, "ada@example.com").await;
    let mut garbage = bus_event(&events[0]);
    garbage["detail"] = json!({"customer": CUSTOMER, "what": "not an envelope"});

    let outcome = handle(invocation(garbage.clone()), &group, h.dead_letters.as_ref())
        .await
        .expect("parked, not failed");
    assert!(matches!(outcome, Handled::Parked { .. }), "{outcome:?}");

    let letters = h.letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].consumer, "projector");
    assert_eq!(letters[0].payload, garbage);
    assert!(
        letters[0].reason.contains("not an event envelope"),
        "{}",
        letters[0].reason
    );
    assert_eq!(profile(&h).await, None);

    // The stream is not blocked: the real event still goes through.
    let outcome = handle(invocation(bus_event(&events[0])), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert!(delivered(&outcome).0.contains(&"customer-360"), "{outcome:?}");
}

#[tokio::test]
async fn an_envelope_the_projections_cannot_use_is_parked_by_the_group() {
    let h = Harness::new();
    let group = h.group(projector);
    let events = h.register(CUSTOMER, "ada@example.com").await;
    // A well-formed envelope of a new stream whose data is not a registration.
    let mut poison = events[0].clone();
    poison.stream_id = "customer-poison".into();
    poison.customer_id = Some("poison".into());
    poison.data = json!({"unexpected": true});

    let outcome = handle(invocation(bus_event(&poison)), &group, h.dead_letters.as_ref())
        .await
        .expect("parked, not failed");
    let (applied, _, parked) = delivered(&outcome);
    assert_eq!(parked, &CUSTOMER_VIEWS.to_vec());
    assert!(applied.iter().all(|c| !CUSTOMER_VIEWS.contains(c)), "{applied:?}");
    let letters = h.letters().await;
    assert_eq!(
        letters.iter().map(|l| l.consumer.as_str()).collect::<Vec<_>>(),
        CUSTOMER_VIEWS
    );
}

#[tokio::test]
async fn a_gap_the_store_cannot_fill_is_retried() {
    let h = Harness::new();
    let group = h.group(projector);
    let events = h.register(CUSTOMER, "ada@example.com").await;
    // Version 5 of a stream whose store ends at version 3.
    let mut ahead = events[2].clone();
    ahead.version = 5;

    let error = handle(invocation(bus_event(&ahead)), &group, h.dead_letters.as_ref())
        .await
        .expect_err("retried");
    assert!(
        matches!(error, HandlerError::Retry(_)) && error.kind() == FailureKind::Retryable,
        "{error}"
    );
    assert!(h.letters().await.is_empty());
    assert_eq!(profile(&h).await, None);
}

#[tokio::test]
async fn the_sample_event_is_a_registration_the_projector_applies() {
    let h = Harness::new();
    let group = h.group(projector);
    let sample = sample_event("projector/customer-registered.json");
    let envelope = detail(&sample);
    assert_eq!(
        (envelope.event_type.as_str(), envelope.version),
        ("CustomerRegistered", 1)
    );

    let outcome = handle(invocation(sample), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert!(delivered(&outcome).0.contains(&"customer-360"), "{outcome:?}");
    let customer_id = envelope.customer_id.as_deref().expect("customer id");
    let profile = customer_profile(h.docs.as_ref(), customer_id)
        .await
        .expect("read the 360")
        .expect("the 360 exists");
    assert_eq!(profile.customer.email, "grace.hopper@example.com");
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn the_order_sample_reaches_the_insight_projections() {
    use crm_core::insights::{attribution, funnel};
    let h = Harness::new();
    let group = h.group(projector);
    let sample = sample_event("projector/order-placed.json");
    let envelope = detail(&sample);
    assert_eq!(sample["source"], "crm.commerce");

    let outcome = handle(invocation(sample), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    let applied = delivered(&outcome).0;
    assert!(
        applied.contains(&"attribution") && applied.contains(&"funnel"),
        "{applied:?}"
    );
    assert!(delivered(&outcome).2.is_empty(), "nothing parked");
    let order_id = envelope.data["order_id"].as_str().expect("order id");
    let order = attribution::order(h.docs.as_ref(), order_id)
        .await
        .expect("read")
        .expect("the order is recorded");
    assert_eq!((order.total_minor, order.currency.as_str()), (3470, "EUR"));
    let customer = envelope.customer_id.as_deref().expect("customer id");
    let f = funnel::customer_funnel(h.docs.as_ref(), customer, None, None, envelope.occurred_at)
        .await
        .expect("read");
    assert_eq!(f.current_stage, Some(funnel::Stage::Purchase));
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn encrypted_events_from_the_bus_are_decrypted_before_the_views() {
    use crm_core::privacy::{encrypt_envelope, memory::InMemoryKeyStore, KeyStore};
    let h = Harness::new();
    let group = h.group(projector);
    let keys = InMemoryKeyStore::new();
    let events = h.register(CUSTOMER, "Ada@Example.com").await;

    for event in &events {
        // What the relay publishes: the event as the encrypting store keeps it.
        let mut stored = event.clone();
        encrypt_envelope(&keys, &mut stored).await.expect("encrypt");
        let on_the_bus = bus_event(&stored);
        if event.event_type == "CustomerRegistered" {
            let text = on_the_bus.to_string();
            assert!(
                !text.contains("ada@example.com") && !text.contains("Lovelace"),
                "{text}"
            );
        }
        let outcome = crm_bus_consumer::handle_stored(invocation(on_the_bus), &group, &keys, h.dead_letters.as_ref())
            .await
            .expect("handled");
        assert!(delivered(&outcome).0.contains(&"customer-360"), "{outcome:?}");
    }

    let profile = profile(&h).await.expect("the 360 exists");
    assert_eq!(profile.customer.email, "ada@example.com");
    assert_eq!(profile.customer.first_name, "Ada");
    assert_eq!(profile.customer.last_name, "Lovelace");
    assert!(h.letters().await.is_empty());

    // Without the key (erased), an encrypted event reads as the marker.
    keys.delete(CUSTOMER).await.expect("shred");
    let mut stored = events[0].clone();
    stored.data["email"] = serde_json::Value::String("enc:v1:AAAA".into());
    crm_core::privacy::decrypt_envelope(&keys, &mut stored)
        .await
        .expect("decrypt without key");
    assert_eq!(stored.data["email"], crm_core::privacy::ERASED);
}

#[tokio::test]
async fn an_sqs_batch_is_one_page_and_its_poison_is_parked_encrypted() {
    use crm_bus_consumer::{handle_batch, StoredEventsOnly};
    use crm_core::consumer::SealedDeadLetters;
    use crm_core::event::EventEnvelope;
    use crm_core::ports::DeadLetterQueue;
    use crm_core::privacy::{decrypt_envelope, encrypt_envelope, memory::InMemoryKeyStore};
    use crm_testkit::sqs_batch;
    use std::sync::Arc;

    let h = Harness::new();
    let keys = Arc::new(InMemoryKeyStore::new());
    // As the Lambda assembles it: dead letters leave sealed (decision 0029).
    let sealed: Arc<dyn DeadLetterQueue> = Arc::new(SealedDeadLetters::new(h.dead_letters.clone(), keys.clone()));
    let group = crm_projector::group(
        h.events.clone(),
        h.docs.clone(),
        sealed.clone(),
        crm_core::testing::identifiers(),
    );
    let events = h.register(CUSTOMER, "Ada@Example.com").await;
    // A registration the customer views cannot use, with an address in it.
    let mut poison = events[0].clone();
    poison.stream_id = "customer-poison".into();
    poison.customer_id = Some("poison".into());
    poison.data = json!({"email": "grace@example.com", "unexpected": true});

    let mut on_the_bus = Vec::new();
    for event in [&events[2], &events[0], &poison, &events[1], &events[0]] {
        let mut stored = event.clone();
        encrypt_envelope(keys.as_ref(), &mut stored).await.expect("encrypt");
        on_the_bus.push(bus_event(&stored));
    }
    let report = handle_batch(
        sqs_batch(&on_the_bus),
        &group,
        &StoredEventsOnly,
        keys.as_ref(),
        sealed.as_ref(),
    )
    .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.response().batch_item_failures.is_empty());
    assert_eq!(report.messages, 5);
    assert_eq!(report.events, 5);
    assert!(!report.one_by_one, "{report:?}");
    assert_eq!(report.outcome.parked, CUSTOMER_VIEWS.len() as u64);

    let profile = profile(&h).await.expect("the 360 exists");
    assert_eq!(profile.customer.email, "ada@example.com");
    assert_eq!(profile.customer.version, 3);

    let letters = h.letters().await;
    assert_eq!(
        letters.iter().map(|l| l.consumer.as_str()).collect::<Vec<_>>(),
        CUSTOMER_VIEWS
    );
    for letter in &letters {
        let text = letter.payload.to_string();
        assert!(!text.contains("grace@example.com"), "parked in clear: {text}");
        let mut back: EventEnvelope = serde_json::from_value(letter.payload.clone()).expect("an envelope");
        decrypt_envelope(keys.as_ref(), &mut back).await.expect("decrypts");
        assert_eq!(back.data["email"], "grace@example.com");
    }
}

#[tokio::test]
async fn the_sqs_batch_sample_is_the_registration_as_the_queue_hands_it_over() {
    use crm_bus_consumer::{handle_batch, SqsEvent, StoredEventsOnly};
    use crm_core::privacy::memory::InMemoryKeyStore;
    let h = Harness::new();
    let group = h.group(projector);
    let batch: SqsEvent = serde_json::from_value(sample_event("projector/sqs-batch.json")).expect("an SQS event");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(batch.records[0].body.as_deref().expect("a body")).expect("json"),
        sample_event("projector/customer-registered.json"),
        "the batch carries the EventBridge sample"
    );
    let report = handle_batch(
        batch,
        &group,
        &StoredEventsOnly,
        &InMemoryKeyStore::new(),
        h.dead_letters.as_ref(),
    )
    .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report.outcome.applied > 0 && report.outcome.parked == 0, "{report:?}");
    let profile = customer_profile(h.docs.as_ref(), "0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f")
        .await
        .expect("read the 360")
        .expect("the 360 exists");
    assert_eq!(profile.customer.email, "grace.hopper@example.com");
}
