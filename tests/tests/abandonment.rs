//! Browse and checkout abandonment as seed 000 says (issue 19 item 7,
//! decision 0069), end to end through the API on a virtual clock:
//! - browse abandonment starts on two distinct products viewed within an
//!   hour with no cart, and not on one view, nor on one product viewed
//!   twice, nor when a cart was touched; a cart during its wait ends it;
//! - a checkout no order completes within an hour is abandoned
//!   (`CheckoutAbandoned` on the cart's stream), which sends the email then
//!   and the SMS a day later; an order within the hour prevents all of it.

use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_tests::TestApi;
use serde_json::json;

/// 10:00 in New York (the registration's time zone): no quiet hours at the
/// sends.
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn view(api: &TestApi, customer_id: &str, product: &str) {
    let body = json!({ "type": "ProductViewed", "product_id": product, "name": product, "category": "lighting" });
    let a = api
        .call(
            "POST",
            &format!("/customers/{customer_id}/activity"),
            Some(&body.to_string()),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
}

/// The events of the campaign's journeys of one type.
async fn of_campaign(api: &TestApi, event_type: &str, campaign: &str) -> Vec<EventEnvelope> {
    let starts = api.events_of_type("JourneyStarted").await;
    let journeys: Vec<&str> = starts
        .iter()
        .filter(|e| e.data["campaign_id"] == campaign)
        .map(|e| e.stream_id.as_str())
        .collect();
    api.events_of_type(event_type)
        .await
        .into_iter()
        .filter(|e| e.data["campaign_id"] == campaign || journeys.contains(&e.stream_id.as_str()))
        .collect()
}

/// The templates of the campaign's messages that were sent, in order.
async fn sent(api: &TestApi, campaign: &str) -> Vec<String> {
    let sent = api.events_of_type("MessageSent").await;
    of_campaign(api, "MessageRequested", campaign)
        .await
        .into_iter()
        .filter(|r| sent.iter().any(|s| s.data["message_id"] == r.data["message_id"]))
        .map(|r| r.data["template"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn browse_starts(api: &TestApi) -> usize {
    of_campaign(api, "JourneyStarted", "browse-abandonment").await.len()
}

#[tokio::test]
async fn one_product_view_does_not_start_browse_abandonment() {
    let api = TestApi::at(start());
    let customer_id = api.register("one-view@example.com").await;
    view(&api, &customer_id, "lamp").await;
    api.advance_minutes(24 * 60).await;
    assert_eq!(browse_starts(&api).await, 0);
    assert!(sent(&api, "browse-abandonment").await.is_empty());
}

#[tokio::test]
async fn the_same_product_viewed_twice_does_not_start_browse_abandonment() {
    let api = TestApi::at(start());
    let customer_id = api.register("same-product@example.com").await;
    view(&api, &customer_id, "lamp").await;
    api.advance_minutes(5).await;
    view(&api, &customer_id, "lamp").await;
    api.advance_minutes(24 * 60).await;
    assert_eq!(browse_starts(&api).await, 0);
    assert!(sent(&api, "browse-abandonment").await.is_empty());
}

#[tokio::test]
async fn two_distinct_products_viewed_start_browse_abandonment_and_the_nudge_goes_30_minutes_later() {
    let api = TestApi::at(start());
    let customer_id = api.register("two-products@example.com").await;
    view(&api, &customer_id, "lamp").await;
    api.advance_minutes(10).await;
    assert_eq!(browse_starts(&api).await, 0, "one product so far");
    view(&api, &customer_id, "shade").await;
    assert_eq!(browse_starts(&api).await, 1, "the second distinct product starts it");
    // A third view within the re-entry window starts nothing more.
    view(&api, &customer_id, "bulb").await;
    api.advance_minutes(29).await;
    assert!(sent(&api, "browse-abandonment").await.is_empty());
    api.advance_minutes(1).await;
    assert_eq!(sent(&api, "browse-abandonment").await, ["browse-abandonment"]);
    assert_eq!(browse_starts(&api).await, 1);
}

#[tokio::test]
async fn views_further_apart_than_the_window_do_not_start_browse_abandonment() {
    let api = TestApi::at(start());
    let customer_id = api.register("far-apart@example.com").await;
    view(&api, &customer_id, "lamp").await;
    api.advance_minutes(61).await;
    view(&api, &customer_id, "shade").await;
    api.advance_minutes(24 * 60).await;
    assert_eq!(browse_starts(&api).await, 0, "the campaign's window is an hour");
}

#[tokio::test]
async fn a_cart_created_before_the_views_means_no_browse_abandonment() {
    let api = TestApi::at(start());
    let customer_id = api.register("has-a-cart@example.com").await;
    let body = json!({ "customer_id": customer_id, "currency": "EUR" }).to_string();
    let cart = api.call("POST", "/carts", Some(&body)).await;
    assert_eq!(cart.status, 201, "{:?}", cart.body);
    api.advance_minutes(5).await;
    view(&api, &customer_id, "lamp").await;
    view(&api, &customer_id, "shade").await;
    api.advance_minutes(24 * 60).await;
    assert_eq!(browse_starts(&api).await, 0);
    assert!(sent(&api, "browse-abandonment").await.is_empty());
}

#[tokio::test]
async fn a_cart_created_during_the_wait_ends_browse_abandonment() {
    let api = TestApi::at(start());
    let customer_id = api.register("cart-later@example.com").await;
    view(&api, &customer_id, "lamp").await;
    view(&api, &customer_id, "shade").await;
    assert_eq!(browse_starts(&api).await, 1);
    api.advance_minutes(10).await;
    let body = json!({ "customer_id": customer_id, "currency": "EUR" }).to_string();
    assert_eq!(api.call("POST", "/carts", Some(&body)).await.status, 201);
    api.advance_minutes(60).await;
    assert!(sent(&api, "browse-abandonment").await.is_empty());
    let exited = of_campaign(&api, "JourneyExited", "browse-abandonment").await;
    assert_eq!(exited.len(), 1, "the journey ended on the cart");
    assert_eq!(exited[0].occurred_at, start() + Duration::minutes(10));
}

/// A registered customer with SMS marketing consent who takes SMS for
/// promotions, and a checked-out cart of two desk lamps: (customer id, cart id).
async fn checked_out(api: &TestApi, email: &str) -> (String, String) {
    let customer_id = api.register(email).await;
    let grant = json!({ "purpose": "marketing", "channel": "sms", "method": "preference-centre" }).to_string();
    let granted = api
        .call("POST", &format!("/customers/{customer_id}/consents"), Some(&grant))
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    // Seed 000's preferences: SMS for promotions only when the customer says so.
    let prefs = json!({ "email_frequency": "weekly", "categories": [], "timezone": "America/New_York",
        "quiet_hours": { "start": "22:00", "end": "07:00" }, "sms_for_promotions": true, "push_categories": [] });
    let saved = api
        .call(
            "PUT",
            &format!("/customers/{customer_id}/preferences"),
            Some(&prefs.to_string()),
        )
        .await;
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    let cart_id = api.cart_with_lamps(&customer_id, 2, 2000).await;
    let checkout = api.call("POST", &format!("/carts/{cart_id}/checkout"), None).await;
    assert_eq!(checkout.status, 200, "{:?}", checkout.body);
    (customer_id, cart_id)
}

#[tokio::test]
async fn a_checkout_not_completed_in_an_hour_is_abandoned_then_the_email_and_a_day_later_the_sms() {
    let api = TestApi::at(start());
    let (customer_id, cart_id) = checked_out(&api, "checkout@example.com").await;

    api.advance_minutes(59).await;
    assert!(api.events_of_type("CheckoutAbandoned").await.is_empty());
    assert!(sent(&api, "checkout-abandonment").await.is_empty());
    api.advance_minutes(1).await;
    let abandoned = api.events_of_type("CheckoutAbandoned").await;
    assert_eq!(abandoned.len(), 1, "abandoned an hour after the checkout started");
    assert_eq!(abandoned[0].stream_id, format!("cart-{cart_id}"));
    assert_eq!(abandoned[0].customer_id.as_deref(), Some(customer_id.as_str()));
    assert_eq!(abandoned[0].data["cart_id"], cart_id.as_str());
    assert_eq!(abandoned[0].data["total_value_minor"], 4000);
    assert_eq!(abandoned[0].data["time_in_checkout_seconds"], 3600);
    assert_eq!(abandoned[0].occurred_at, start() + Duration::hours(1));
    assert_eq!(sent(&api, "checkout-abandonment").await, ["checkout-abandonment"]);
    let email = of_campaign(&api, "MessageRequested", "checkout-abandonment").await;
    assert_eq!(email[0].data["channel"], "email");
    assert_eq!(email[0].occurred_at, start() + Duration::hours(1));

    api.advance_minutes(24 * 60 - 1).await;
    assert_eq!(sent(&api, "checkout-abandonment").await.len(), 1, "the SMS waits a day");
    api.advance_minutes(1).await;
    assert_eq!(
        sent(&api, "checkout-abandonment").await,
        ["checkout-abandonment", "checkout-abandonment-sms"]
    );
    let sms = of_campaign(&api, "MessageRequested", "checkout-abandonment").await;
    assert_eq!(sms[1].data["channel"], "sms");
    assert_eq!(sms[1].occurred_at, start() + Duration::hours(25));
    // Seed 000's "10% off": the SMS, and only the SMS, carries a code
    // (decision 0074), valid for 48 hours from its sending.
    let codes = api.events_of_type("DiscountIssued").await;
    assert_eq!(codes.len(), 1, "{codes:?}");
    assert_eq!(codes[0].data["message_id"], sms[1].data["message_id"]);
    assert_eq!(codes[0].data["percent"], 10);
    assert_eq!(codes[0].data["customer_id"], customer_id.as_str());

    // Nothing more, ever: the checkout is abandoned once.
    api.advance_minutes(7 * 24 * 60).await;
    assert_eq!(api.events_of_type("CheckoutAbandoned").await.len(), 1);
    assert_eq!(sent(&api, "checkout-abandonment").await.len(), 2);
}

#[tokio::test]
async fn an_order_within_the_hour_means_no_checkout_abandoned_and_no_messages() {
    let api = TestApi::at(start());
    let (customer_id, cart_id) = checked_out(&api, "buyer@example.com").await;
    api.advance_minutes(30).await;
    let order = json!({ "customer_id": customer_id, "cart_id": cart_id, "tax_minor": 0, "shipping_minor": 0,
        "total_minor": 4000,
        "shipping_address": { "line1": "1 Main St", "city": "New York", "postal_code": "10001", "country": "US" } });
    let placed = api.call("POST", "/orders", Some(&order.to_string())).await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);

    api.advance_minutes(2 * 24 * 60).await;
    assert!(api.events_of_type("CheckoutAbandoned").await.is_empty());
    assert!(of_campaign(&api, "JourneyStarted", "checkout-abandonment")
        .await
        .is_empty());
    assert!(of_campaign(&api, "MessageRequested", "checkout-abandonment")
        .await
        .is_empty());
}
