//! Redriving a local dead letter (decision 0085, "Redrive"), through the
//! local runtime over real SQLite: the redrive hands the event to the
//! consumer the letter names, not to its whole group; a redrive that fails
//! leaves that one letter (the original, its id kept, its reason and
//! attempts updated) and parks nothing for the group's other consumers; one
//! that succeeds removes it and reaches the named consumer only; a replay
//! of a consumer (or of a whole bus target) parks no second letter for an
//! event the consumer already has a letter for.

use chrono::Utc;
use crm_core::consumer::{park_poison, SealedDeadLetters};
use crm_core::event::EventEnvelope;
use crm_core::ports::{AppendRequest, DeadLetterQueue, ExpectedVersion, ReadModelStore};
use crm_core::privacy::KeyStore;
use crm_tests::TestApi;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A registration the projections cannot read (no `source`, no
/// `terms_accepted`): poison to several consumers of the projector group.
async fn append_poison(api: &TestApi) -> EventEnvelope {
    let customer = uuid::Uuid::now_v7().to_string();
    let id = uuid::Uuid::now_v7();
    let poison = EventEnvelope {
        event_id: id,
        stream_id: format!("customer-{customer}"),
        version: 0,
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        customer_id: Some(customer.clone()),
        occurred_at: Utc::now(),
        recorded_at: Utc::now(),
        causation_id: None,
        correlation_id: id,
        actor: "system:test".into(),
        data: json!({ "customer_id": customer, "email": "poison.redrive@dead-letters.example", "first_name": "Posy" }),
    };
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: poison.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![poison.clone()],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    api.runtime.bus.settle().await.expect("settle");
    poison
}

/// The parked letters: id -> (consumer, attempts).
async fn letters(api: &TestApi) -> BTreeMap<i64, (String, u32)> {
    api.runtime
        .bus
        .dead_letters()
        .list()
        .await
        .expect("letters")
        .into_iter()
        .map(|l| (l.id, (l.letter.consumer, l.letter.attempts)))
        .collect()
}

/// How many letters each consumer has.
fn per_consumer(letters: &BTreeMap<i64, (String, u32)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (consumer, _) in letters.values() {
        *out.entry(consumer.clone()).or_insert(0) += 1;
    }
    out
}

fn projector_consumers(api: &TestApi) -> Vec<&'static str> {
    api.runtime
        .bus
        .targets()
        .iter()
        .find(|t| t.rule.target == "projector")
        .expect("the projector target")
        .group
        .consumer_names()
}

#[tokio::test]
async fn a_failed_redrive_leaves_the_one_letter_and_parks_nothing_for_the_rest_of_the_group() {
    let api = TestApi::new();
    append_poison(&api).await;
    let before = letters(&api).await;
    let projector = projector_consumers(&api);
    let refusing: Vec<&String> = before
        .values()
        .map(|(c, _)| c)
        .filter(|c| projector.contains(&c.as_str()))
        .collect();
    assert!(
        refusing.len() >= 2,
        "the test needs several consumers of one group refusing the event: {before:?}"
    );
    assert!(
        per_consumer(&before).values().all(|n| *n == 1),
        "one letter per consumer: {before:?}"
    );
    let depth = api.call("GET", "/dead-letters", None).await.body["depth"].clone();
    assert_eq!(depth, before.len(), "{before:?}");

    let (&id, (consumer, attempts)) = before
        .iter()
        .find(|(_, (c, _))| c == "customer-360")
        .expect("customer-360 refuses the poison");
    let again = api.call("POST", &format!("/dead-letters/{id}/redrive"), None).await;
    assert_eq!(again.status, 409, "{:?}", again.body);

    let after = letters(&api).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same letters, no new one: {before:?} -> {after:?}"
    );
    assert_eq!(
        api.call("GET", "/dead-letters", None).await.body["depth"],
        depth,
        "depth unchanged"
    );
    // The original letter was handed to its consumer again (its attempts
    // count the redrive), the group's other letters were not touched: their
    // consumers did not see the event.
    let (kept_consumer, kept_attempts) = &after[&id];
    assert_eq!(kept_consumer, consumer);
    assert!(kept_attempts > attempts, "{attempts} -> {kept_attempts}");
    for (other, letter) in before.iter().filter(|(other, _)| **other != id) {
        assert_eq!(&after[other], letter, "letter {other} untouched");
    }
    let shown = api.call("GET", &format!("/dead-letters/{id}"), None).await;
    assert_eq!(shown.status, 200, "the original id still answers: {:?}", shown.body);
}

#[tokio::test]
async fn a_redrive_that_succeeds_removes_the_letter_and_reaches_the_named_consumer_only() {
    let api = TestApi::new();
    let customer = api.register("redrive.named-only@example.com").await;
    let stream = format!("customer-{customer}");
    let stored = api.store.read_stream(&stream, 0, 1).await.expect("read").remove(0);
    // Another consumer of the projector group that takes registrations.
    let groups = api.runtime.consumer_groups();
    let projector = groups.iter().find(|g| g.name == "projector").expect("projector");
    let other = projector
        .consumer_names()
        .into_iter()
        .find(|name| {
            *name != "customer-360"
                && projector
                    .consumer(name)
                    .is_some_and(|c| c.handles("CustomerRegistered"))
        })
        .expect("another consumer of registrations");
    // Both lost the registration (their documents and checkpoints); only
    // customer-360's delivery was parked.
    for name in ["customer-360", other] {
        api.runtime.docs.clear(name).await.expect("clear");
        assert_eq!(api.runtime.docs.checkpoint(name, &stream).await.expect("checkpoint"), 0);
    }
    let sealed = SealedDeadLetters::new(
        Arc::new(api.runtime.bus.dead_letters().clone()) as Arc<dyn DeadLetterQueue>,
        api.runtime.keys.clone() as Arc<dyn KeyStore>,
    );
    park_poison(&sealed, "customer-360", &stored, "store was down", Utc::now())
        .await
        .expect("parked");
    let ids: Vec<i64> = letters(&api).await.into_keys().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let redriven = api
        .call("POST", &format!("/dead-letters/{}/redrive", ids[0]), None)
        .await;
    assert_eq!(redriven.status, 200, "{:?}", redriven.body);
    assert!(letters(&api).await.is_empty(), "the letter is removed");
    assert_eq!(
        api.runtime
            .docs
            .checkpoint("customer-360", &stream)
            .await
            .expect("checkpoint"),
        stored.version,
        "the named consumer took it"
    );
    assert_eq!(
        api.runtime.docs.checkpoint(other, &stream).await.expect("checkpoint"),
        0,
        "{other}, of the same group, was not handed it"
    );
}

#[tokio::test]
async fn replaying_a_consumer_or_its_target_parks_no_second_letter_for_an_event() {
    let api = TestApi::new();
    api.register("replayed.beside-poison@example.com").await;
    append_poison(&api).await;
    let before = letters(&api).await;
    assert!(before.values().any(|(c, _)| c == "customer-360"), "{before:?}");

    crm_local::cli::ops::replay(&api.runtime, "customer-360", true)
        .await
        .expect("replay");
    let after = letters(&api).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "replaying customer-360 kept its one letter: {before:?} -> {after:?}"
    );

    // The whole projector target, rewound and settled.
    crm_local::cli::ops::replay(&api.runtime, "projector", true)
        .await
        .expect("rebuild");
    let after = letters(&api).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "rebuilding the projector kept one letter per consumer: {before:?} -> {after:?}"
    );
    assert!(per_consumer(&after).values().all(|n| *n == 1), "{after:?}");
}
