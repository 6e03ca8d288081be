//! Analytics consent gates activity tracking when the shop turns it on
//! (issue 19 item 9, decision 0079), through the API over the local
//! runtime: the setting off, activity is recorded as before; on, a
//! customer's browsing without analytics consent is refused (the batch
//! answer counts it, the single route answers 422, the refused log lists
//! it) and nothing is stored; with the consent it is recorded. Orders are
//! never gated, and an anonymous visitor is recorded only when the message
//! carries their choice of analytics.

use crm_tests::{TestApi, TOKEN};
use serde_json::{json, Value};

/// The API with the shop's `tracking.require_analytics_consent` as given.
fn shop(require_analytics_consent: bool) -> TestApi {
    let mut api = TestApi::new();
    api.runtime.require_analytics_consent = require_analytics_consent;
    api.app = api.runtime.app(TOKEN.to_string());
    api
}

fn viewed(message_id: &str, customer: &str) -> Value {
    json!({ "type": "track", "messageId": message_id, "userId": customer, "event": "Product Viewed",
        "properties": { "product_id": "sku-lamp", "name": "Desk lamp", "price": 25 } })
}

/// The `ProductViewed` events stored on the customer's activity stream.
async fn views_of(api: &TestApi, customer: &str) -> usize {
    let stream = format!("activity-{customer}");
    api.events_of_type("ProductViewed")
        .await
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .count()
}

async fn grant_analytics(api: &TestApi, customer: &str) {
    let grant = json!({ "purpose": "analytics", "channel": "email", "method": "preference-centre" }).to_string();
    let answer = api
        .call("POST", &format!("/customers/{customer}/consents"), Some(&grant))
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

#[tokio::test]
async fn the_setting_off_records_activity_without_analytics_consent() {
    let api = shop(false);
    let customer = api.register("off.shopper@shop.example").await;

    let answer = api.segment("track", &viewed("off-1", &customer)).await;

    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(views_of(&api, &customer).await, 1, "recorded, as before the setting");
}

#[tokio::test]
async fn the_setting_on_refuses_activity_without_analytics_consent_and_says_so() {
    let api = shop(true);
    let customer = api.register("gated.shopper@shop.example").await;

    // Inside a batch: a 200 answer that counts the refusal.
    let batch = json!({ "batch": [viewed("gated-1", &customer),
        { "type": "page", "messageId": "gated-2", "userId": customer, "name": "Lamps",
          "properties": { "url": "https://shop.example/lamps" } }] });
    let answer = api.segment("batch", &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["rejected"], 2, "{:?}", answer.body);
    // Alone: the route's refusal.
    let alone = api.segment("track", &viewed("gated-3", &customer)).await;
    assert_eq!(alone.status, 422, "{:?}", alone.body);
    assert!(
        alone.body.to_string().contains("analytics"),
        "the reason names the consent: {:?}",
        alone.body
    );

    assert_eq!(views_of(&api, &customer).await, 0, "nothing recorded");
    let activity = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == format!("activity-{customer}"))
        .count();
    assert_eq!(activity, 0, "no activity at all");
    let refused = api.call("GET", "/sources/local/refused", None).await;
    assert_eq!(refused.status, 200, "{:?}", refused.body);
    let items = refused.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{:?}", refused.body);
    assert!(items.iter().all(|i| i["field"] == "userId"), "{:?}", refused.body);

    // An order is a commerce fact: never gated.
    let order = json!({ "messageId": "gated-order", "userId": customer, "event": "Order Completed",
        "properties": { "order_id": "gated-o-1", "total": 25, "currency": "EUR",
            "products": [{ "product_id": "sku-lamp", "name": "Desk lamp", "price": 25, "quantity": 1 }] } });
    let placed = api.segment("track", &order).await;
    assert_eq!(placed.status, 200, "{:?}", placed.body);
    assert_eq!(api.events_of_type("OrderPlaced").await.len(), 1);
}

#[tokio::test]
async fn the_setting_on_records_activity_with_analytics_consent() {
    let api = shop(true);
    let customer = api.register("consenting.shopper@shop.example").await;
    grant_analytics(&api, &customer).await;

    let answer = api
        .segment("batch", &json!({ "batch": [viewed("consented-1", &customer)] }))
        .await;

    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["rejected"], 0, "{:?}", answer.body);
    assert_eq!(views_of(&api, &customer).await, 1);
}

#[tokio::test]
async fn the_setting_on_records_an_anonymous_visitor_only_with_their_choice_in_the_message() {
    let api = shop(true);
    let page = |id: &str, consent: Value| {
        json!({ "type": "page", "messageId": id, "anonymousId": "device-gated", "name": "Home",
            "properties": { "url": "https://shop.example/" }, "context": { "consent": consent } })
    };

    let without = api.segment("page", &page("anon-1", json!({}))).await;
    let declined = api
        .segment(
            "page",
            &page("anon-2", json!({ "categoryPreferences": { "analytics": false } })),
        )
        .await;
    let chosen = api
        .segment(
            "page",
            &page("anon-3", json!({ "categoryPreferences": { "analytics": true } })),
        )
        .await;

    assert_eq!(without.status, 422, "{:?}", without.body);
    assert_eq!(declined.status, 422, "{:?}", declined.body);
    assert_eq!(chosen.status, 200, "{:?}", chosen.body);
    assert_eq!(api.events_of_type("PageViewed").await.len(), 1);
}
