//! AWS wire tests: the event-store contract and the item layout, against the
//! DynamoDB endpoint in `AWS_ENDPOINT_URL` (a moto server; the test script
//! starts one and sets it). Every test gets a table of its own, so they run in
//! parallel.
//!
//! Run moto through `scripts/moto_server.py` (same flags as
//! `moto_server`): stock `moto_server` handles requests on many threads with
//! no lock, and a failing TransactWriteItems can then undo another request's
//! acknowledged write, which breaks `sixteen_concurrent_writers`.

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType, TimeToLiveStatus};
use chrono::{Duration, Utc};
use crm_aws::dynamodb::DynamoEventStore;
use crm_aws::testing::{event_item, fresh_event_store};
use crm_core::ports::*;
use crm_core::store_contract::event;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

async fn fresh_store() -> Arc<dyn EventStore> {
    Arc::new(fresh_event_store("events-test").await)
}

crm_core::event_store_contract!(fresh_store);

async fn raw_item(store: &DynamoEventStore, pk: &str, sk: u64) -> HashMap<String, AttributeValue> {
    event_item(store, pk, sk)
        .await
        .unwrap_or_else(|| panic!("no item ({pk}, {sk})"))
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v,
        other => panic!("{name} is not a string: {other:?}"),
    }
}

fn n(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().expect("a number"),
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn stream() -> String {
    format!("customer-{}", Uuid::now_v7().simple())
}

fn append(stream: &str, expected: ExpectedVersion, count: u64) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        expected,
        events: (1..=count).map(|i| event(stream, i)).collect(),
        reservations: Vec::new(),
        receipt: None,
    }
}

fn receipt(key: &str) -> CommandReceipt {
    CommandReceipt {
        key: key.into(),
        request_hash: "sha256:abc".into(),
        status: 201,
        body: serde_json::json!({"id": "c-1", "ok": true}),
        recorded_at: Utc::now(),
    }
}

#[tokio::test]
async fn items_have_the_documented_layout() {
    let store = fresh_event_store("events-test").await;
    let s1 = stream();
    let email = format!("email#{}", Uuid::now_v7().simple());
    let command = format!("command#{}", Uuid::now_v7().simple());
    let mut request = append(&s1, ExpectedVersion::NoStream, 2);
    request.events[1].customer_id = None;
    request.events[1].causation_id = None;
    request.reservations = vec![ReservationChange::Claim {
        key: email.clone(),
        owner: s1.clone(),
    }];
    let r = receipt(&command);
    request.receipt = Some(r.clone());
    let appended = store.append(request).await.expect("append");
    let e1 = &appended.events[0];

    let item = raw_item(&store, &s1, 1).await;
    assert_eq!(s(&item, "pk"), s1);
    assert_eq!(n(&item, "sk"), 1);
    assert_eq!(s(&item, "kind"), "event");
    assert_eq!(s(&item, "event_id"), e1.event_id.to_string());
    assert_eq!(s(&item, "type"), "ContractTested");
    assert_eq!(n(&item, "schema_version"), 1);
    assert_eq!(s(&item, "customer_id"), "c-1");
    assert_eq!(s(&item, "occurred_at"), "2026-11-23T10:00:00.123456789Z");
    assert_eq!(
        s(&item, "recorded_at"),
        e1.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert_eq!(
        s(&item, "causation_id"),
        e1.causation_id.map(|c| c.to_string()).unwrap_or_default()
    );
    assert_eq!(s(&item, "correlation_id"), e1.correlation_id.to_string());
    assert_eq!(s(&item, "actor"), "system:contract");
    let data: serde_json::Value = serde_json::from_str(s(&item, "data")).expect("data is JSON");
    assert_eq!(data, e1.data);
    assert_eq!(item.len(), 13, "{item:?}");

    let second = raw_item(&store, &s1, 2).await;
    assert!(!second.contains_key("customer_id"), "None is omitted");
    assert!(!second.contains_key("causation_id"), "None is omitted");

    let reservation = raw_item(&store, &email, 0).await;
    assert_eq!(s(&reservation, "kind"), "reservation");
    assert_eq!(s(&reservation, "owner"), s1);
    assert_eq!(reservation.len(), 4, "{reservation:?}");

    let stored = raw_item(&store, &command, 0).await;
    assert_eq!(s(&stored, "kind"), "receipt");
    assert_eq!(s(&stored, "request_hash"), "sha256:abc");
    assert_eq!(n(&stored, "status"), 201);
    let body: serde_json::Value = serde_json::from_str(s(&stored, "body")).expect("body is JSON");
    assert_eq!(body, r.body);
    assert_eq!(
        s(&stored, "recorded_at"),
        r.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    let week = (Utc::now() + Duration::days(7)).timestamp();
    assert!((n(&stored, "expires_at") - week).abs() < 300, "expires in 7 days");

    store
        .save_snapshot(Snapshot {
            stream_id: s1.clone(),
            version: 2,
            state_schema: 4,
            state: serde_json::json!({"name": "Ada"}),
        })
        .await
        .expect("snapshot");
    let snapshot = raw_item(&store, &s1, 0).await;
    assert_eq!(s(&snapshot, "kind"), "snapshot");
    assert_eq!(n(&snapshot, "version"), 2);
    assert_eq!(n(&snapshot, "state_schema"), 4);
    let state: serde_json::Value = serde_json::from_str(s(&snapshot, "state")).expect("JSON");
    assert_eq!(state, serde_json::json!({"name": "Ada"}));
}

#[tokio::test]
async fn other_items_never_show_up_as_events() {
    let store = fresh_event_store("events-test").await;
    let s1 = stream();
    // Keys that are also used as stream ids: their item at sk 0 is not a
    // snapshot and not an event.
    let email = format!("email#{}", Uuid::now_v7().simple());
    let command = format!("command#{}", Uuid::now_v7().simple());
    let mut request = append(&s1, ExpectedVersion::NoStream, 3);
    request.reservations = vec![ReservationChange::Claim {
        key: email.clone(),
        owner: s1.clone(),
    }];
    request.receipt = Some(receipt(&command));
    let appended = store.append(request).await.expect("append");
    store
        .save_snapshot(Snapshot {
            stream_id: s1.clone(),
            version: 3,
            state_schema: 1,
            state: serde_json::json!({}),
        })
        .await
        .expect("snapshot");

    for key in [&email, &command] {
        let loaded = store.load(key).await.expect("load");
        assert_eq!(loaded, LoadedStream::default(), "{key}");
        assert!(store.read_stream(key, 0, usize::MAX).await.expect("read").is_empty());
    }
    let loaded = store.load(&s1).await.expect("load");
    assert!(loaded.events.is_empty());
    assert_eq!(loaded.version, 3);
    assert_eq!(
        store.read_stream(&s1, 0, usize::MAX).await.expect("read"),
        appended.events
    );

    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 1).await.expect("read all");
        assert!(page.events.len() <= 1);
        all.extend(page.events);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all, appended.events, "only events, each once, in order");

    // The receipt and the reservation are still what they were.
    assert_eq!(store.reservation_owner(&email).await.expect("owner"), Some(s1.clone()));
    assert!(store.receipt(&command).await.expect("receipt").is_some());
    assert_eq!(store.receipt(&email).await.expect("not a receipt"), None);
    assert_eq!(
        store.reservation_owner(&command).await.expect("not a reservation"),
        None
    );
}

#[tokio::test]
async fn older_snapshots_do_not_replace_newer_ones() {
    let store = fresh_event_store("events-test").await;
    let s1 = stream();
    store
        .append(append(&s1, ExpectedVersion::NoStream, 4))
        .await
        .expect("append");
    let snap = |version: u64| Snapshot {
        stream_id: s1.clone(),
        version,
        state_schema: 1,
        state: serde_json::json!({ "v": version }),
    };
    store.save_snapshot(snap(3)).await.expect("save 3");
    store.save_snapshot(snap(2)).await.expect("an older one is ignored");
    let loaded = store.load(&s1).await.expect("load");
    assert_eq!(loaded.snapshot, Some(snap(3)));
    assert_eq!(loaded.events.len(), 1);
    assert_eq!(loaded.version, 4);
    store.save_snapshot(snap(4)).await.expect("save 4");
    let loaded = store.load(&s1).await.expect("load");
    assert_eq!(loaded.snapshot, Some(snap(4)));
    assert!(loaded.events.is_empty());
    assert_eq!(loaded.version, 4);
}

#[tokio::test]
async fn cancellations_are_explained() {
    let store = fresh_event_store("events-test").await;
    let s1 = stream();
    let command = format!("command#{}", Uuid::now_v7().simple());
    let mut first = append(&s1, ExpectedVersion::Exactly(0), 1);
    first.receipt = Some(receipt(&command));
    let first_receipt = first.receipt.clone();
    store.append(first).await.expect("first");

    // A receipt-only retry is a duplicate too.
    let mut retry = append(&s1, ExpectedVersion::Exactly(1), 0);
    retry.receipt = Some(receipt(&command));
    match store.append(retry).await {
        Err(AppendError::DuplicateCommand(r)) => assert_eq!(Some(*r), first_receipt),
        other => panic!("expected DuplicateCommand, got {other:?}"),
    }

    // Releasing a reservation nobody holds is refused.
    let mut release = append(&s1, ExpectedVersion::Exactly(1), 1);
    release.reservations = vec![ReservationChange::Release {
        key: format!("email#{}", Uuid::now_v7().simple()),
        owner: s1.clone(),
    }];
    assert!(matches!(
        store.append(release).await,
        Err(AppendError::ReservationTaken { .. })
    ));

    // A too-high expected version conflicts and leaves no gap.
    let err = store
        .append(append(&s1, ExpectedVersion::Exactly(3), 1))
        .await
        .expect_err("stream is at 1");
    assert_eq!(
        err,
        AppendError::Conflict {
            stream_id: s1.clone(),
            expected: ExpectedVersion::Exactly(3),
            actual: None
        }
    );
    let appended = store
        .append(append(&s1, ExpectedVersion::Exactly(1), 0))
        .await
        .expect("an empty append writes nothing");
    assert_eq!(appended.version, 1);
    assert_eq!(store.read_stream(&s1, 0, 10).await.expect("read").len(), 1);

    // A cursor that is not one is an error, not a panic.
    assert!(matches!(
        store.read_all(Some("garbage!"), 10).await,
        Err(StoreError::Failed(_))
    ));
}

#[tokio::test]
async fn the_table_streams_new_images_and_expires_receipts() {
    let store = fresh_event_store("events-test").await;
    let described = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .expect("describe table");
    let table = described.table().expect("table description");
    let stream = table.stream_specification().expect("a stream");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    assert!(table.latest_stream_arn().is_some());

    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("describe ttl");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
}
