//! Exit rules about the trigger's order (decision 0073 addendum): the
//! review request's exits say `same: event.detail.data.order_id`, so a
//! review (or a refund) of one delivered order ends only that order's
//! review request. Through the API on a virtual clock.

use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_tests::TestApi;
use serde_json::{json, Value};

/// Monday 2026-11-23 15:00 UTC (10:00 in New York, the customer's time zone).
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn post(api: &TestApi, path: &str, body: Value) -> Value {
    let a = api.call("POST", path, Some(&body.to_string())).await;
    assert!(a.status.is_success(), "POST {path}: {} {:?}", a.status, a.body);
    a.body
}

/// An order of the customer for `product`, paid, shipped and delivered: its id.
async fn delivered_order(api: &TestApi, customer_id: &str, product: &str) -> String {
    let order = json!({
        "customer_id": customer_id,
        "items": [{ "product_id": product, "name": product, "category": "consumables", "quantity": 1, "unit_price_minor": 2400 }],
        "tax_minor": 0, "shipping_minor": 0, "total_minor": 2400, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "New York", "postal_code": "10001", "country": "US" }
    });
    let id = post(api, "/orders", order).await["id"]
        .as_str()
        .expect("order id")
        .to_string();
    let payment = json!({ "payment_id": format!("pay-{id}"), "status": "succeeded", "method": "credit-card",
        "amount_minor": 2400, "currency": "EUR", "provider": "stripe", "transaction_id": format!("tx-{id}") });
    post(api, &format!("/orders/{id}/payments"), payment).await;
    post(
        api,
        &format!("/orders/{id}/ship"),
        json!({ "carrier": "UPS", "tracking_number": format!("1Z{product}") }),
    )
    .await;
    post(api, &format!("/orders/{id}/deliver"), json!({})).await;
    id
}

/// The orders whose review request was sent, and the review-request
/// journeys that ended on an exit rule (their rule).
async fn review_requests(api: &TestApi) -> (Vec<String>, Vec<String>) {
    let events = api.all_events().await;
    let sent = |e: &EventEnvelope| {
        events
            .iter()
            .any(|s| s.event_type == "MessageSent" && s.data["message_id"] == e.data["message_id"])
    };
    let orders = events
        .iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == "review-request" && sent(e))
        .map(|e| e.data["data"]["order_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let journeys: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "JourneyStarted" && e.data["campaign_id"] == "review-request")
        .map(|e| e.stream_id.as_str())
        .collect();
    let exits = events
        .iter()
        .filter(|e| e.event_type == "JourneyExited" && journeys.contains(&e.stream_id.as_str()))
        .filter(|e| e.data["reason"] == "exit-event")
        .map(|e| e.data["rule"].as_str().unwrap_or_default().to_string())
        .collect();
    (orders, exits)
}

#[tokio::test]
async fn a_review_of_one_order_ends_only_that_orders_review_request() {
    let api = TestApi::at(start());
    let customer_id = api.register("two-orders@example.com").await;
    let first = delivered_order(&api, &customer_id, "beans").await;
    let second = delivered_order(&api, &customer_id, "jug").await;
    let started = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyStarted" && e.data["campaign_id"] == "review-request")
        .count();
    assert_eq!(started, 2, "one review request per delivered order");

    // A day later the customer reviews the first order's beans.
    api.runtime
        .advance(Duration::days(1))
        .await
        .expect("advance the virtual clock");
    post(
        &api,
        &format!("/orders/{first}/reviews"),
        json!({ "product_id": "beans", "rating": 5 }),
    )
    .await;
    let (sent, exits) = review_requests(&api).await;
    assert!(sent.is_empty(), "nothing asked yet: {sent:?}");
    assert_eq!(exits, ["review-submitted"], "only the first order's request ended");

    // Past the third day after delivery: the second order is asked about, the first is not.
    api.runtime
        .advance(Duration::days(3))
        .await
        .expect("advance the virtual clock");
    let (sent, exits) = review_requests(&api).await;
    assert_eq!(sent, [second], "the second order's review request is sent");
    assert_eq!(exits, ["review-submitted"]);
}
