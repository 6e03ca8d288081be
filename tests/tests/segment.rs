//! Segment-compatible ingestion end to end (issue 8): a client browses and
//! fills a cart as an anonymous visitor, identifies, then orders. One
//! customer ends up holding all of it, and the abandoned-cart journey that
//! started while they were anonymous goes on after identify: the reminder
//! reaches them, and their order ends it.

use chrono::{DateTime, Utc};
use crm_tests::TestApi;
use serde_json::json;

const EMAIL: &str = "visitor@shop.example";
const ANON: &str = "0a1b2c3d-anon-device";

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

#[tokio::test]
async fn an_anonymous_visit_identify_and_order_make_one_customer_and_the_journey_goes_on() {
    let api = TestApi::at(start());
    // The shop registered the customer earlier (with marketing consent).
    let customer = api.register(EMAIL).await;

    // Anonymous: a page, a product view, a product added to a cart.
    let page = json!({ "messageId": "m-1", "anonymousId": ANON, "name": "Home",
        "properties": { "url": "https://shop.example/" },
        "context": { "campaign": { "source": "newsletter", "medium": "email", "name": "winter" } } });
    let answer = api.segment("page", &page).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["duplicate"], false);
    let viewed = json!({ "messageId": "m-2", "anonymousId": ANON, "event": "Product Viewed",
        "properties": { "product_id": "lamp", "name": "Desk lamp", "category": "lighting", "price": 65 } });
    assert_eq!(api.segment("track", &viewed).await.status, 200);
    let added = json!({ "messageId": "m-3", "anonymousId": ANON, "event": "Product Added",
        "properties": { "cart_id": "web-cart-1", "product_id": "lamp", "name": "Desk lamp", "price": 65, "currency": "EUR" } });
    let answer = api.segment("track", &added).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // The same message again: 200, nothing appended.
    let before = api.all_events().await.len();
    let again = api.segment("track", &added).await;
    assert_eq!((again.status.as_u16(), &again.body["duplicate"]), (200, &json!(true)));
    assert_eq!(api.all_events().await.len(), before);

    // An hour of inactivity: the anonymous cart is abandoned and the journey starts.
    api.advance_minutes(60).await;
    let started = api.events_of_type("JourneyStarted").await;
    let cart_journey: Vec<_> = started
        .iter()
        .filter(|e| e.data["campaign_id"] == "abandoned-cart")
        .collect();
    assert_eq!(cart_journey.len(), 1, "the abandoned-cart journey started anonymously");
    let anonymous_profile = cart_journey[0].customer_id.clone().expect("a profile");
    assert_ne!(anonymous_profile, customer);

    // Identify (the shop's user id, the email address): the profile merges into the customer.
    let identify = json!({ "messageId": "m-4", "anonymousId": ANON, "userId": "shop-user-42",
        "traits": { "email": EMAIL } });
    let answer = api.segment("identify", &identify).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let merged = api.events_of_type("CustomersMerged").await;
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].customer_id.as_deref(), Some(customer.as_str()));
    // Merging twice changes nothing.
    let again = api
        .segment(
            "identify",
            &json!({ "messageId": "m-5", "anonymousId": ANON, "userId": "shop-user-42" }),
        )
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(api.events_of_type("CustomersMerged").await.len(), 1);

    // The journey's hour passes: the reminder reaches the customer.
    api.advance_minutes(60).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let reminder = mail
        .iter()
        .find(|m| m.recipient == EMAIL && m.subject.to_lowercase().contains("cart"))
        .unwrap_or_else(|| {
            panic!(
                "a cart reminder to {EMAIL}: {:?}",
                mail.iter().map(|m| (&m.recipient, &m.subject)).collect::<Vec<_>>()
            )
        });
    assert!(reminder.email().expect("an email").html.contains("Desk lamp"));

    // Order Completed by user id: the customer's order ends the journey.
    let order = json!({ "messageId": "m-6", "userId": "shop-user-42", "event": "Order Completed",
        "properties": { "order_id": "web-order-1", "currency": "EUR", "total": 65,
            "shipping_address": { "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE" },
            "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 65, "quantity": 1 }] } });
    let answer = api.segment("track", &order).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let placed = api.events_of_type("OrderPlaced").await;
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].customer_id.as_deref(), Some(customer.as_str()));
    // The visit's campaign (utm of the anonymous page view) gets the credit.
    let order_id = placed[0].stream_id.trim_start_matches("order-").to_string();
    let attribution = api.call("GET", &format!("/orders/{order_id}/attribution"), None).await;
    assert_eq!(attribution.status, 200, "{:?}", attribution.body);
    let touches = attribution.body["touchpoints"].as_array().expect("touchpoints");
    assert!(
        touches
            .iter()
            .any(|t| t["channel"] == "email" && t["campaign"] == "winter"),
        "the anonymous visit's touchpoint: {touches:?}"
    );
    let exited: Vec<_> = api
        .events_of_type("JourneyExited")
        .await
        .into_iter()
        .filter(|e| e.stream_id == cart_journey[0].stream_id)
        .collect();
    assert_eq!(exited.len(), 1, "the order ended the anonymous journey");
    api.advance_minutes(24 * 60).await;
    let offers = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "abandoned-cart-final-offer")
        .count();
    assert_eq!(offers, 0, "no final offer after the order");

    // One customer holds all of it: the merge in the audit trail, and every
    // event of the visit in the timeline's activity.
    let timeline = api.call("GET", &format!("/customers/{customer}/timeline"), None).await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    let audit: Vec<&str> = timeline.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(audit.contains(&"CustomersMerged"), "{audit:?}");
    let activity: Vec<(String, bool)> = timeline.body["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["merged_from"].is_string(),
            )
        })
        .collect();
    for (wanted, anonymous) in [
        ("PageViewed", true),
        ("ProductViewed", true),
        ("ItemAddedToCart", true),
        ("CartAbandoned", true),
        ("JourneyStarted", true),
        ("OrderPlaced", false),
    ] {
        assert!(
            activity.iter().any(|(t, m)| t == wanted && *m == anonymous),
            "{wanted} (merged: {anonymous}) in {activity:?}"
        );
    }
    let health = api.call("GET", "/health", None).await;
    let consumers = health.body["consumers"].as_array().expect("consumers").clone();
    assert!(
        consumers.iter().all(|c| c["dead_letters"] == 0),
        "nothing parked: {consumers:?}"
    );
}

#[tokio::test]
async fn a_batch_takes_each_message_on_its_own_and_write_keys_are_checked() {
    let api = TestApi::at(start());
    let customer = api.register("batch@shop.example").await;
    let batch = json!({ "batch": [
        { "type": "page", "messageId": "b-1", "anonymousId": "dev-9", "properties": { "url": "/home" } },
        { "type": "track", "messageId": "b-2", "userId": customer, "event": "Wishlist Shared", "properties": { "list": "xmas" } },
        { "type": "track", "messageId": "b-3", "anonymousId": "dev-9" },
        { "type": "group", "messageId": "b-4", "anonymousId": "dev-9" },
        { "type": "page", "messageId": "b-1", "anonymousId": "dev-9", "properties": { "url": "/home" } },
        { "type": "track", "messageId": "b-5", "userId": customer, "event": "Signed In",
          "timestamp": (start() - chrono::Duration::days(20)).to_rfc3339() }
    ] });
    let answer = api.segment("batch", &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        (
            &answer.body["accepted"],
            &answer.body["duplicates"],
            &answer.body["rejected"]
        ),
        (&json!(3), &json!(1), &json!(2)),
        "{:?}",
        answer.body
    );
    let results = answer.body["results"].as_array().expect("results");
    assert_eq!(results[2]["field"], "batch[2].event");
    assert_eq!(results[3]["field"], "batch[3].type");
    assert_eq!(results[4]["status"], "duplicate");
    assert_eq!(
        (&results[5]["status"], &results[5]["late"]),
        (&json!("accepted"), &json!(true))
    );
    let custom = api
        .all_events()
        .await
        .into_iter()
        .find(|e| e.event_type == "CustomEvent")
        .expect("the custom event");
    assert_eq!(custom.customer_id.as_deref(), Some(customer.as_str()));
    assert_eq!(custom.data["event"], "Wishlist Shared");
    assert_eq!(custom.data["properties"]["list"], "xmas");

    // No key, a wrong key, a malformed body, an oversized batch.
    let page = json!({ "messageId": "x-1", "anonymousId": "dev-9", "properties": { "url": "/" } }).to_string();
    let none = api.call_with("POST", "/v1/page", Some(&page), &[]).await;
    assert_eq!(none.status, 401, "{:?}", none.body);
    let wrong = api
        .call_with(
            "POST",
            "/v1/page",
            Some(&page),
            &[("authorization", "Basic d3Jvbmcta2V5Og==")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    let auth = api.write_key_header();
    let broken = api
        .call_with("POST", "/v1/page", Some("{not json"), &[("authorization", &auth)])
        .await;
    assert_eq!(broken.status, 400, "{:?}", broken.body);
    let many: Vec<_> = (0..501)
        .map(|i| json!({ "type": "page", "messageId": format!("n-{i}"), "anonymousId": "d", "properties": { "url": "/" } }))
        .collect();
    let too_many = api.segment("batch", &json!({ "batch": many })).await;
    assert_eq!(
        (too_many.status.as_u16(), too_many.body["field"].as_str()),
        (422, Some("batch"))
    );
    let big = "x".repeat(600 * 1024);
    let too_big = api
        .call_with(
            "POST",
            "/v1/batch",
            Some(&json!({ "batch": [{ "type": "page", "name": big }] }).to_string()),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(too_big.status, 413, "{:?}", too_big.body);
}

#[tokio::test]
async fn a_custom_event_is_checked_against_its_registered_schema() {
    let api = TestApi::at(start());
    let schema = json!({ "type": "object", "required": ["video_id"],
        "properties": { "video_id": { "type": "string" }, "seconds": { "type": "number", "minimum": 0 } } });
    let registered = api
        .call("PUT", "/schemas/custom/Video%20Played", Some(&schema.to_string()))
        .await;
    assert!(registered.status.is_success(), "{:?}", registered.body);

    let good = json!({ "messageId": "v-1", "anonymousId": "dev-3", "event": "Video Played",
        "properties": { "video_id": "intro", "seconds": 12 } });
    assert_eq!(api.segment("track", &good).await.status, 200);
    let bad = json!({ "messageId": "v-2", "anonymousId": "dev-3", "event": "Video Played",
        "properties": { "seconds": -3 } });
    let before = api.all_events().await.len();
    let refused = api.segment("track", &bad).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let field = refused.body["field"].as_str().unwrap_or_default().to_string();
    assert!(field.starts_with("properties"), "the failing path: {:?}", refused.body);
    assert_eq!(api.all_events().await.len(), before, "nothing stored");
    // In a batch, only that message is refused, with its path.
    let batch = json!({ "batch": [
        { "type": "track", "messageId": "v-3", "anonymousId": "dev-3", "event": "Video Played", "properties": { "video_id": "a" } },
        { "type": "track", "messageId": "v-4", "anonymousId": "dev-3", "event": "Video Played", "properties": { "video_id": 7 } }
    ] });
    let answer = api.segment("batch", &batch).await;
    assert_eq!(
        (&answer.body["accepted"], &answer.body["rejected"]),
        (&json!(1), &json!(1)),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["results"][1]["field"], "batch[1].properties.video_id");
}
