//! Recommendations from the shop's own co-purchases (issue 19 item 5,
//! decision 0075), end to end through the API on a virtual clock: customers
//! who bought the beans with a tamper (and some with a descaler, one with a
//! jug); a new customer buys only the beans, their order is delivered, and
//! `ProductAffinityDetected` on their stream recommends the tamper and the
//! descaler (not the jug, bought with the beans once; not the beans, which
//! they have). The cross-sell email seven days later lists them.

use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

/// Monday 2026-11-23 15:00 UTC (10:00 in New York, the customers' time zone).
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn post(api: &TestApi, path: &str, body: Value) -> Value {
    let a = api.call("POST", path, Some(&body.to_string())).await;
    assert!(a.status.is_success(), "POST {path}: {} {:?}", a.status, a.body);
    a.body
}

async fn register(api: &TestApi, email: &str) -> String {
    let customer = post(
        api,
        "/customers",
        serde_json::from_str(&registration(email)).expect("json"),
    )
    .await;
    customer["id"].as_str().expect("customer id").to_string()
}

fn item(product: &str) -> Value {
    let (name, category, price) = match product {
        "p-beans" => ("Espresso beans, 1 kg", "coffee", 2400),
        "p-tamper" => ("Walnut espresso tamper", "accessories", 3400),
        "p-descaler" => ("Machine descaler, 6 doses", "care", 1200),
        _ => ("Stainless steel milk jug", "accessories", 1900),
    };
    json!({ "product_id": product, "name": name, "category": category, "quantity": 1, "unit_price_minor": price })
}

/// An order of `products` for the customer, paid, shipped and delivered: its id.
async fn delivered_order(api: &TestApi, customer_id: &str, products: &[&str]) -> String {
    let items: Vec<Value> = products.iter().map(|p| item(p)).collect();
    let total: i64 = items.iter().filter_map(|i| i["unit_price_minor"].as_i64()).sum();
    let placed = post(
        api,
        "/orders",
        json!({
            "customer_id": customer_id, "items": items, "tax_minor": 0, "shipping_minor": 0,
            "total_minor": total, "currency": "EUR",
            "shipping_address": { "line1": "1 Main St", "city": "New York", "postal_code": "10001", "country": "US" }
        }),
    )
    .await;
    let id = placed["id"].as_str().expect("order id").to_string();
    post(
        api,
        &format!("/orders/{id}/payments"),
        json!({ "payment_id": format!("pay-{id}"), "status": "succeeded", "method": "credit-card",
            "amount_minor": total, "currency": "EUR", "transaction_id": format!("tx-{id}") }),
    )
    .await;
    post(
        api,
        &format!("/orders/{id}/ship"),
        json!({ "carrier": "UPS", "tracking_number": "1Z999" }),
    )
    .await;
    post(api, &format!("/orders/{id}/deliver"), json!({})).await;
    id
}

/// The `ProductAffinityDetected` events about `customer_id`.
async fn detections(api: &TestApi, customer_id: &str) -> Vec<EventEnvelope> {
    api.events_of_type("ProductAffinityDetected")
        .await
        .into_iter()
        .filter(|e| e.customer_id.as_deref() == Some(customer_id))
        .collect()
}

fn recommended(detection: &EventEnvelope) -> Vec<String> {
    detection.data["recommended_products"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["product_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_delivered_order_recommends_what_others_bought_with_it_and_the_cross_sell_lists_it() {
    let api = TestApi::at(start());
    let baskets: [&[&str]; 4] = [
        &["p-beans", "p-tamper", "p-descaler"],
        &["p-beans", "p-tamper"],
        &["p-beans", "p-tamper", "p-descaler", "p-jug"],
        // Without the beans: does not count.
        &["p-tamper", "p-jug"],
    ];
    let mut buyers = Vec::new();
    for (n, basket) in baskets.iter().enumerate() {
        let customer = register(&api, &format!("buyer{n}@example.com")).await;
        delivered_order(&api, &customer, basket).await;
        buyers.push(customer);
    }

    let ada = register(&api, "ada@example.com").await;
    let order = delivered_order(&api, &ada, &["p-beans"]).await;
    let found = detections(&api, &ada).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let detected = &found[0];
    assert_eq!(detected.stream_id, format!("recommendations-{ada}"));
    assert_eq!(detected.data["category"], "coffee");
    assert_eq!(detected.data["affinity_score"], 1.0);
    assert_eq!(detected.data["order_id"], order.as_str());
    assert_eq!(recommended(detected), ["p-tamper", "p-descaler"], "{}", detected.data);
    assert_eq!(
        detected.data["recommended_products"][0]["name"],
        "Walnut espresso tamper"
    );
    assert_eq!(detected.data["recommended_products"][0]["price_minor"], 3400);

    // Buyers whose shares are mixed (no category above 0.7) have no
    // detection; the tamper and jug buyer (accessories only) has one.
    for buyer in &buyers[..3] {
        assert!(detections(&api, buyer).await.is_empty(), "{buyer}");
    }
    let accessories = detections(&api, &buyers[3]).await;
    assert_eq!(accessories.len(), 1, "{accessories:?}");
    assert_eq!(accessories[0].data["category"], "accessories");

    // The cross-sell, seven days after delivery and at 10:00 in New York,
    // lists the recommendations (and not the beans Ada has).
    for _ in 0..9 {
        api.runtime
            .advance(Duration::days(1))
            .await
            .expect("advance the virtual clock");
    }
    let mail = api.runtime.mail.list().await.expect("mail");
    let cross_sell = mail
        .iter()
        .find(|m| m.recipient == "ada@example.com" && m.subject.starts_with("Picked for you"))
        .unwrap_or_else(|| {
            panic!(
                "the cross-sell email to Ada in {:?}",
                mail.iter()
                    .filter(|m| m.recipient == "ada@example.com")
                    .map(|m| &m.subject)
                    .collect::<Vec<_>>()
            )
        });
    let email = cross_sell.email().expect("an email");
    for text in [&email.text, &email.html] {
        assert!(text.contains("Walnut espresso tamper"), "{text}");
        assert!(text.contains("Machine descaler, 6 doses"), "{text}");
        assert!(text.contains("/products/p-tamper"), "{text}");
        assert!(!text.contains("Espresso beans"), "{text}");
        assert!(!text.contains("milk jug"), "{text}");
    }
    assert!(email.text.contains("€34.00"), "{}", email.text);
    assert!(email.text.contains(&order), "{}", email.text);

    // Nothing new on Ada's stream: the same facts append nothing.
    assert_eq!(detections(&api, &ada).await.len(), 1);
    let dead = api.runtime.bus.dead_letters().list().await.expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
}

/// A second delivery that changes nothing (same share, same products)
/// appends no second detection; one that brings a new product does.
#[tokio::test]
async fn the_same_facts_are_detected_once() {
    let api = TestApi::at(start());
    for n in 0..2 {
        let customer = register(&api, &format!("buyer{n}@example.com")).await;
        delivered_order(&api, &customer, &["p-beans", "p-tamper"]).await;
    }
    let ada = register(&api, "ada@example.com").await;
    delivered_order(&api, &ada, &["p-beans"]).await;
    delivered_order(&api, &ada, &["p-beans"]).await;
    let found = detections(&api, &ada).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(recommended(&found[0]), ["p-tamper"]);

    // Ada buys the tamper with more beans: nothing left to recommend from
    // these baskets, and her share of coffee is 0.75 now: a new detection.
    delivered_order(&api, &ada, &["p-beans", "p-tamper"]).await;
    let found = detections(&api, &ada).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[1].data["affinity_score"], 0.75);
    assert!(recommended(&found[1]).is_empty(), "{}", found[1].data);
}
