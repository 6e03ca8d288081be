//! Membership of a segment defined by rules (issue 20 item 1, decision
//! 0083), end to end through the API on the virtual clock: "viewed at least
//! 3 distinct products in category lighting in 7 days and no order in 30
//! days". Membership appears on the 3rd distinct view, goes with an order,
//! comes back at the exact instant the order leaves its 30 days and goes
//! at the exact instant the first view leaves its 7 days: the window
//! timers do it, no daily job (the daily re-evaluation touches only the
//! fixed segments). A redelivered event appends nothing; a deactivated
//! customer leaves, and their window timer goes.

use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_core::scheduler::Scheduler;
use crm_core::segments::rule_evaluator::window_timer_name;
use crm_tests::TestApi;
use serde_json::json;

const SEGMENT: &str = "lamp-lookers";

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn define(api: &TestApi) {
    let definition = json!({
        "id": SEGMENT,
        "name": "Lamp lookers",
        "match": { "all": [
            { "performed": "ProductViewed", "where": [{ "path": "category", "op": "equals", "value": "lighting" }],
              "distinct": "product_id", "at_least": 3, "within_days": 7 },
            { "not_performed": "OrderPlaced", "within_days": 30 }
        ]}
    });
    let put = api
        .call("PUT", &format!("/segments/{SEGMENT}"), Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    api.runtime.bus.settle().await.expect("settle");
}

async fn view(api: &TestApi, customer_id: &str, product: &str, category: &str) {
    let body = json!({ "type": "ProductViewed", "product_id": product, "name": product, "category": category });
    let a = api
        .call(
            "POST",
            &format!("/customers/{customer_id}/activity"),
            Some(&body.to_string()),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    api.runtime.bus.settle().await.expect("settle");
}

/// The customer's membership events of the rule segment: (type, reason, occurred_at).
async fn changes(api: &TestApi, customer_id: &str) -> Vec<(String, String, DateTime<Utc>)> {
    let events: Vec<EventEnvelope> = api
        .store
        .read_stream(&format!("segments-{customer_id}"), 0, usize::MAX)
        .await
        .expect("segments stream");
    events
        .into_iter()
        .filter(|e| e.data["segment"] == SEGMENT)
        .map(|e| {
            (
                e.event_type,
                e.data["reason"].as_str().unwrap_or_default().to_string(),
                e.occurred_at,
            )
        })
        .collect()
}

/// The segment's members, from the members index (the read route).
async fn members(api: &TestApi) -> Vec<String> {
    let got = api
        .call("GET", &format!("/segments/{SEGMENT}/members?limit=100"), None)
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["customer_id"].as_str().map(str::to_string))
        .collect()
}

/// Moves the virtual clock to `at` (firing what falls due on the way).
async fn advance_to(api: &TestApi, at: DateTime<Utc>) {
    let now = api.runtime.clock.now();
    api.runtime.advance(at - now).await.expect("advance");
    assert_eq!(api.runtime.clock.now(), at);
}

const JOINED: &str = "matches rule segment lamp-lookers v1";
const LEFT: &str = "no longer matches rule segment lamp-lookers v1";

#[tokio::test]
async fn membership_follows_views_and_orders_and_the_windows_slide_at_the_exact_instant() {
    let api = TestApi::at(start());
    define(&api).await;
    let c = api.register("looker@example.com").await;

    // Two distinct lighting products, the same one again, another category: not yet.
    view(&api, &c, "lamp", "lighting").await;
    api.advance_minutes(10).await;
    view(&api, &c, "shade", "lighting").await;
    view(&api, &c, "lamp", "lighting").await;
    view(&api, &c, "desk", "furniture").await;
    assert!(changes(&api, &c).await.is_empty());
    assert!(members(&api).await.is_empty());

    // The third distinct product: in, at once.
    api.advance_minutes(10).await;
    view(&api, &c, "bulb", "lighting").await;
    let joined_at = api.runtime.clock.now();
    assert_eq!(
        changes(&api, &c).await,
        [("CustomerSegmentAdded".into(), JOINED.into(), joined_at)]
    );
    assert_eq!(members(&api).await, [c.as_str()]);

    // An order: out, at once.
    api.advance_minutes(60).await;
    api.paid_order(&c, 5000, "Desk lamp", "lighting").await;
    api.runtime.bus.settle().await.expect("settle");
    let ordered_at = api.events_of_type("OrderPlaced").await[0].occurred_at;
    assert_eq!(changes(&api, &c).await.len(), 2);
    assert_eq!(changes(&api, &c).await[1].0, "CustomerSegmentRemoved");
    assert!(members(&api).await.is_empty());

    // 27 days on, three distinct views again: the order still keeps them out.
    advance_to(&api, ordered_at + Duration::days(27)).await;
    view(&api, &c, "lamp", "lighting").await;
    let first_view = api.runtime.clock.now();
    api.advance_minutes(5).await;
    view(&api, &c, "shade", "lighting").await;
    api.advance_minutes(5).await;
    view(&api, &c, "bulb", "lighting").await;
    assert_eq!(changes(&api, &c).await.len(), 2);

    // The order leaves its 30 days at ordered_at + 30 days exactly: in then, not a second before.
    let order_leaves = ordered_at + Duration::days(30);
    advance_to(&api, order_leaves - Duration::seconds(1)).await;
    assert_eq!(changes(&api, &c).await.len(), 2);
    assert!(members(&api).await.is_empty());
    advance_to(&api, order_leaves).await;
    assert_eq!(
        changes(&api, &c).await[2..],
        [("CustomerSegmentAdded".into(), JOINED.into(), order_leaves)]
    );
    assert_eq!(members(&api).await, [c.as_str()]);

    // The first of the three views leaves its 7 days: out at that instant.
    let view_leaves = first_view + Duration::days(7);
    advance_to(&api, view_leaves - Duration::seconds(1)).await;
    assert_eq!(changes(&api, &c).await.len(), 3);
    assert_eq!(members(&api).await, [c.as_str()]);
    advance_to(&api, view_leaves).await;
    assert_eq!(
        changes(&api, &c).await[3..],
        [("CustomerSegmentRemoved".into(), LEFT.into(), view_leaves)]
    );
    assert!(members(&api).await.is_empty());

    // Nothing more to come by time alone: no timer left, and a month later nothing changed.
    let timer = window_timer_name(SEGMENT, 1, &c);
    assert_eq!(api.runtime.scheduler.get(&timer).await.expect("timer"), None);
    api.runtime.advance(Duration::days(31)).await.expect("advance");
    assert_eq!(changes(&api, &c).await.len(), 4);
}

#[tokio::test]
async fn a_redelivered_event_appends_nothing_and_a_deactivated_customer_leaves() {
    let api = TestApi::at(start());
    define(&api).await;
    let c = api.register("leaver@example.com").await;
    for product in ["lamp", "shade", "bulb"] {
        view(&api, &c, product, "lighting").await;
        api.advance_minutes(1).await;
    }
    assert_eq!(changes(&api, &c).await.len(), 1);
    let timer = window_timer_name(SEGMENT, 1, &c);
    let due = api
        .runtime
        .scheduler
        .get(&timer)
        .await
        .expect("timer")
        .map(|t| t.due_at);
    assert_eq!(
        due,
        Some(start() + Duration::days(7)),
        "the first view leaves its window then"
    );

    // Every event delivered again to the rule-segments function: nothing appended.
    let stored = api.event_count().await;
    api.runtime.bus.rewind("rule-segments", 0).await.expect("rewind");
    api.runtime.bus.settle().await.expect("settle");
    assert_eq!(api.event_count().await, stored);
    assert_eq!(changes(&api, &c).await.len(), 1);

    // Deactivated: out of the segment, and no window timer left.
    let body = json!({ "reason": "customer-request" }).to_string();
    let deactivated = api
        .call("POST", &format!("/customers/{c}/deactivate"), Some(&body))
        .await;
    assert_eq!(deactivated.status, 200, "{:?}", deactivated.body);
    api.runtime.bus.settle().await.expect("settle");
    let after = changes(&api, &c).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[1].0, "CustomerSegmentRemoved");
    assert!(members(&api).await.is_empty());
    assert_eq!(api.runtime.scheduler.get(&timer).await.expect("timer"), None);

    // More views while deactivated: still out.
    view(&api, &c, "globe", "lighting").await;
    assert_eq!(changes(&api, &c).await.len(), 2);
}
