//! Retention on DynamoDB (moto, `AWS_ENDPOINT_URL`): activity event items
//! carry the table's TTL attribute (`expires_at` = occurred_at + the
//! activity age + the fold's margin, epoch seconds), other events do not;
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
    for (pk, sk) in [("customer-cus-1", 1), ("order-o-1", 1)] {
        let kept = event_item(&store, pk, sk).await.expect("item");
        assert_eq!(expires_at(&kept), None, "{pk} is not activity: no TTL");
    }
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
