//! Retention on DynamoDB (moto, `AWS_ENDPOINT_URL`): activity event items
//! carry the table's TTL attribute (`expires_at` = occurred_at + the
//! activity age + the fold's margin, epoch seconds); every item of an order
//! stream or an erased customer's stream the legal period after the
//! stream's newest event (decision 0078); other events none;
//! the sweep over the DynamoDB adapter of `EventExpiry` folds, deletes the
//! raw items it covered, and a second sweep does nothing.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_aws::dynamodb::{items::EXPIRES_AT, DynamoEventStore};
use crm_aws::testing::{event_item, fresh_event_store};
use crm_core::ports::*;
use crm_core::retention::{read_whole_stream, sweep, RetentionPolicy, ACTIVITY_DAY_SUMMARIZED};
use crm_core::testing::raw_event;
use serde_json::json;
use std::collections::HashMap;

async fn fresh(policy: RetentionPolicy) -> DynamoEventStore {
    fresh_event_store("events-retention").await.with_retention(policy)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

async fn put(store: &DynamoEventStore, stream: &str, event_type: &str, at: DateTime<Utc>, data: serde_json::Value) {
    let mut e = raw_event(stream, event_type, data);
    e.customer_id = Some("cus-1".into());
    e.occurred_at = at;
    e.recorded_at = at;
    store
        .append(AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: vec![e],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
}

fn expires_at(item: &HashMap<String, AttributeValue>) -> Option<i64> {
    match item.get(EXPIRES_AT) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

#[tokio::test]
async fn activity_items_carry_the_ttl_and_other_events_do_not() {
    let policy = RetentionPolicy::new(30, 7).expect("policy");
    let store = fresh(policy).await;
    let viewed_at = now() - Duration::days(2);
    put(
        &store,
        "activity-cus-1",
        "ProductViewed",
        viewed_at,
        json!({ "product_id": "sku-1" }),
    )
    .await;
    put(
        &store,
        "customer-cus-1",
        "ConsentGranted",
        viewed_at,
        json!({ "channel": "email" }),
    )
    .await;
    put(
        &store,
        "order-o-1",
        "OrderPlaced",
        viewed_at,
        json!({ "order_id": "o-1" }),
    )
    .await;

    let activity = event_item(&store, "activity-cus-1", 1).await.expect("activity item");
    assert_eq!(
        expires_at(&activity),
        Some(policy.activity_expires_at(viewed_at).timestamp())
    );
    assert!(
        expires_at(&activity) > Some((viewed_at + policy.activity_age()).timestamp()),
        "a margin for the fold"
    );
    let consent = event_item(&store, "customer-cus-1", 1).await.expect("item");
    assert_eq!(expires_at(&consent), None, "consent of a customer still here is kept");
    let order = event_item(&store, "order-o-1", 1).await.expect("item");
    assert_eq!(
        expires_at(&order),
        Some(policy.legal_expires_at(viewed_at).timestamp()),
        "an order is kept the legal period (decision 0078)"
    );
}

#[tokio::test]
async fn the_sweep_folds_and_deletes_the_raw_items_once() {
    let policy = RetentionPolicy::default();
    let store = fresh(policy).await;
    let old = now() - policy.activity_age() - Duration::days(3);
    let stream = "activity-cus-1";
    for hour in [8, 9, 10] {
        let at = old
            .date_naive()
            .and_hms_opt(hour, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(old);
        put(&store, stream, "CustomerLoggedIn", at, json!({})).await;
    }
    put(&store, stream, "CustomerLoggedIn", now() - Duration::days(1), json!({})).await;
    put(
        &store,
        "customer-cus-1",
        "ConsentGranted",
        old,
        json!({ "channel": "email" }),
    )
    .await;

    let report = sweep(&store, &store, &policy, now()).await.expect("sweep");
    assert_eq!((report.summaries_appended, report.activity_events_deleted), (1, 3));
    let left = read_whole_stream(&store, stream).await.expect("read");
    let types: Vec<&str> = left.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["CustomerLoggedIn", ACTIVITY_DAY_SUMMARIZED]);
    assert_eq!(left[1].data["logins"], 3);
    let summary = event_item(&store, stream, left[1].version).await.expect("summary item");
    assert_eq!(expires_at(&summary), None, "summaries are kept");
    assert!(
        event_item(&store, "customer-cus-1", 1).await.is_some(),
        "consent is kept"
    );

    let again = sweep(&store, &store, &policy, now()).await.expect("sweep");
    assert_eq!((again.summaries_appended, again.activity_events_deleted), (0, 0));
    assert_eq!(read_whole_stream(&store, stream).await.expect("read"), left);
}

/// Appends one event at `at` with an exact expected version.
async fn put_at(store: &DynamoEventStore, stream: &str, version: u64, event_type: &str, at: DateTime<Utc>) {
    let mut e = raw_event(stream, event_type, json!({}));
    e.customer_id = Some("cus-1".into());
    e.occurred_at = at;
    e.recorded_at = at;
    store
        .append(AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Exactly(version),
            events: vec![e],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
}

/// The TTL of every event item of `stream`, versions 1 to `last`.
async fn ttls(store: &DynamoEventStore, stream: &str, last: u64) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for sk in 1..=last {
        let item = event_item(store, stream, sk).await.expect("item");
        out.push(expires_at(&item));
    }
    out
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).single().unwrap_or_default()
}

#[tokio::test]
async fn an_order_stream_expires_as_a_whole_the_legal_period_after_its_newest_event() {
    let policy = RetentionPolicy::new(90, 7).expect("policy");
    let store = fresh(policy).await;
    let order = "order-o-1";
    let month_end = |t| Some(policy.legal_expires_at(t).timestamp());
    // Placed and paid in March: one expiry, at the start of the month after, 7 years on.
    put(
        &store,
        order,
        "OrderPlaced",
        at(2026, 3, 30),
        json!({ "order_id": "o-1" }),
    )
    .await;
    put_at(&store, order, 1, "OrderPaid", at(2026, 3, 31)).await;
    assert_eq!(ttls(&store, order, 2).await, vec![month_end(at(2026, 3, 31)); 2]);
    assert_eq!(month_end(at(2026, 3, 31)), Some(at(2033, 4, 1).timestamp() - 10 * 3600));
    // Delivered in April: the earlier items follow the newest.
    put_at(&store, order, 2, "OrderDelivered", at(2026, 4, 2)).await;
    put(&store, order, "ReviewSubmitted", at(2026, 4, 20), json!({})).await;
    assert_eq!(ttls(&store, order, 4).await, vec![month_end(at(2026, 4, 20)); 4]);
    assert_eq!(month_end(at(2026, 4, 20)), Some(at(2033, 5, 1).timestamp() - 10 * 3600));
    // An event stored late, with an older time, never shortens the stream's life.
    put_at(&store, order, 4, "OrderRefunded", at(2026, 1, 5)).await;
    assert_eq!(ttls(&store, order, 5).await, vec![month_end(at(2026, 4, 20)); 5]);
}

#[tokio::test]
async fn a_customer_stream_expires_the_legal_period_after_the_erasure_and_not_before() {
    let policy = RetentionPolicy::new(90, 10).expect("policy");
    let store = fresh(policy).await;
    let customer = "customer-cus-1";
    put(&store, customer, "CustomerRegistered", at(2026, 1, 10), json!({})).await;
    put_at(&store, customer, 1, "ConsentGranted", at(2026, 2, 1)).await;
    put(&store, "cart-k-1", "ItemAddedToCart", at(2026, 2, 1), json!({})).await;
    let snapshot = Snapshot {
        stream_id: customer.into(),
        version: 2,
        state_schema: 1,
        state: json!({}),
    };
    store.save_snapshot(snapshot).await.expect("snapshot");
    assert_eq!(
        ttls(&store, customer, 2).await,
        vec![None, None],
        "a customer here keeps consent"
    );

    put_at(&store, customer, 2, "CustomerErasureRequested", at(2026, 6, 15)).await;
    put_at(&store, customer, 3, "CustomerErased", at(2026, 6, 15)).await;

    let expires = Some(at(2036, 7, 1).timestamp() - 10 * 3600);
    assert_eq!(expires, Some(policy.legal_expires_at(at(2026, 6, 15)).timestamp()));
    assert_eq!(
        ttls(&store, customer, 4).await,
        vec![expires; 4],
        "10 years after the erasure"
    );
    let snapshot = event_item(&store, customer, 0).await.expect("snapshot item");
    assert_eq!(expires_at(&snapshot), expires, "the snapshot goes with its events");
    assert_eq!(
        ttls(&store, "cart-k-1", 1).await,
        vec![None],
        "other streams are not the legal ones"
    );
}

#[tokio::test]
async fn a_store_not_given_the_policy_writes_no_legal_ttl() {
    let store = fresh_event_store("events-retention").await;
    put(&store, "order-o-1", "OrderPlaced", at(2026, 3, 30), json!({})).await;
    put(&store, "customer-cus-1", "CustomerErased", at(2026, 3, 30), json!({})).await;
    assert_eq!(ttls(&store, "order-o-1", 1).await, vec![None]);
    assert_eq!(ttls(&store, "customer-cus-1", 1).await, vec![None]);
}
