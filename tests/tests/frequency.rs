//! The customer's email frequency as chosen (issue 19 item 2, decision
//! 0064), through the API on the virtual clock: a promotional email goes
//! only 24 h (`daily`) or 168 h (`weekly`, the default) after the last
//! promotional one; lifecycle emails (here the review requests) are not held
//! back by it and do not hold it back.
//!
//! The eligible triggers are deliveries: each starts a "new arrivals" email
//! at once (a campaign published through the API without a `kind`, so
//! promotional, one per order) and the shipped review request 3 days later
//! (lifecycle, one per order).

use chrono::{DateTime, Duration, Utc};
use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

/// Monday 2026-11-23 16:00 UTC (11:00 in New York, the customer's time zone).
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T16:00:00Z")
}

async fn post(api: &TestApi, path: &str, body: Value) -> Value {
    let a = api.call("POST", path, Some(&body.to_string())).await;
    assert!(a.status.is_success(), "POST {path}: {} {:?}", a.status, a.body);
    a.body
}

async fn register(api: &TestApi, frequency: Option<&str>) -> String {
    let customer = post(
        api,
        "/customers",
        serde_json::from_str(&registration("ada@example.com")).expect("json"),
    )
    .await;
    let id = customer["id"].as_str().expect("id").to_string();
    if let Some(frequency) = frequency {
        let prefs = json!({ "email_frequency": frequency, "timezone": "America/New_York" });
        let put = api
            .call("PUT", &format!("/customers/{id}/preferences"), Some(&prefs.to_string()))
            .await;
        assert_eq!(put.status, 200, "{:?}", put.body);
    }
    id
}

/// A promotional campaign (no `kind`: the default) that emails every
/// delivered order at once.
async fn publish_new_arrivals(api: &TestApi) {
    let definition = json!({
        "id": "new-arrivals", "name": "New arrivals",
        "trigger": { "pattern": { "source": ["crm.commerce"], "detail-type": ["OrderDelivered"] } },
        "entry": { "consent": { "purpose": "marketing", "channel": "email" }, "reentry": "every_time",
            "dedupe_key": "event.detail.data.order_id" },
        "steps": [{ "id": "announce", "type": "send", "channel": "email",
            "template": "cross-sell-recommendations", "category": "marketing" }]
    });
    let put = api
        .call("PUT", "/campaigns/new-arrivals", Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
}

/// An order of a milk jug placed, paid, shipped and delivered now.
async fn deliver_order(api: &TestApi, customer_id: &str) {
    let order = json!({
        "customer_id": customer_id,
        "items": [{ "product_id": "jug", "name": "Milk jug", "category": "accessories",
            "quantity": 1, "unit_price_minor": 2400 }],
        "tax_minor": 0, "shipping_minor": 0, "total_minor": 2400, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "New York", "postal_code": "10001", "country": "US" }
    });
    let placed = post(api, "/orders", order).await;
    let id = placed["id"].as_str().expect("order id").to_string();
    for status in ["initiated", "succeeded"] {
        let payment = json!({ "payment_id": format!("pay-{id}"), "status": status, "method": "credit-card",
            "amount_minor": 2400, "currency": "EUR", "provider": "stripe", "transaction_id": format!("tx-{id}") });
        post(api, &format!("/orders/{id}/payments"), payment).await;
    }
    post(
        api,
        &format!("/orders/{id}/ship"),
        json!({ "carrier": "UPS", "tracking_number": "1Z999", "tracking_url": "https://track.example/1Z999" }),
    )
    .await;
    post(api, &format!("/orders/{id}/deliver"), json!({})).await;
}

/// The messages one campaign requested: (when, outcome), outcome `sent`,
/// `suppressed: <reason>` or `pending`.
async fn outcomes(api: &TestApi, campaign: &str) -> Vec<(DateTime<Utc>, String)> {
    let events = api.all_events().await;
    let outcome = |id: &Value| -> String {
        let of = |t: &str| events.iter().find(|e| e.event_type == t && &e.data["message_id"] == id);
        if of("MessageSent").is_some() {
            "sent".into()
        } else if let Some(s) = of("MessageSuppressed") {
            format!("suppressed: {}", s.data["reason"].as_str().unwrap_or(""))
        } else {
            "pending".into()
        }
    };
    events
        .iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == campaign)
        .map(|e| (e.occurred_at, outcome(&e.data["message_id"])))
        .collect()
}

fn sent_at(rows: &[(DateTime<Utc>, String)]) -> Vec<DateTime<Utc>> {
    rows.iter().filter(|(_, o)| o == "sent").map(|(at, _)| *at).collect()
}

/// Seven deliveries `every` apart from the start, and the clock moved on
/// in steps of `every` until ten days after the start (the runtime fires
/// what is due at the end of a step, so each lands on its due time).
async fn seven_deliveries(api: &TestApi, customer_id: &str, every: Duration) {
    publish_new_arrivals(api).await;
    let end = start() + Duration::days(10);
    let mut step = 0;
    while start() + every * step < end {
        if step > 0 {
            api.runtime.advance(every).await.expect("advance the virtual clock");
        }
        if step < 7 {
            deliver_order(api, customer_id).await;
        }
        step += 1;
    }
}

#[tokio::test]
async fn a_weekly_customer_gets_one_promotional_email_in_seven_days_of_triggers() {
    let api = TestApi::at(start());
    // Weekly is the default: the customer never chose.
    let customer_id = register(&api, None).await;
    let customer = api.call("GET", &format!("/customers/{customer_id}"), None).await;
    assert_eq!(
        customer.body["preferences"]["email_frequency"], "weekly",
        "{:?}",
        customer.body
    );
    seven_deliveries(&api, &customer_id, Duration::days(1)).await;

    // Seven promotional emails requested on seven days in a row: only the first goes.
    let promotional = outcomes(&api, "new-arrivals").await;
    assert_eq!(promotional.len(), 7, "{promotional:?}");
    assert_eq!(sent_at(&promotional), [start()], "{promotional:?}");
    assert!(
        promotional[1..].iter().all(|(_, o)| o == "suppressed: frequency-cap"),
        "{promotional:?}"
    );
    let why = api.events_of_type("MessageSuppressed").await;
    let held = why
        .iter()
        .find(|e| e.data["reason"] == "frequency-cap")
        .expect("a suppression by the frequency");
    let detail = held.data["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("weekly"), "{detail}");

    // The review requests (lifecycle), one a day, all went; so did the
    // cross-sell (promotional), 8 days after the first promotional email.
    let reviews = outcomes(&api, "review-request").await;
    assert_eq!(sent_at(&reviews).len(), 7, "{reviews:?}");
    let cross_sell = outcomes(&api, "cross-sell").await;
    assert_eq!(sent_at(&cross_sell).len(), 1, "{cross_sell:?}");
}

#[tokio::test]
async fn a_daily_customer_gets_a_promotional_email_24_hours_after_the_last_not_sooner() {
    let api = TestApi::at(start());
    let customer_id = register(&api, Some("daily")).await;
    seven_deliveries(&api, &customer_id, Duration::hours(12)).await;

    // Requested every 12 hours: the ones 24 h after the last sent one go.
    let promotional = outcomes(&api, "new-arrivals").await;
    assert_eq!(promotional.len(), 7, "{promotional:?}");
    let sent = sent_at(&promotional);
    assert_eq!(
        sent,
        (0..4).map(|d| start() + Duration::days(d)).collect::<Vec<_>>(),
        "{promotional:?}"
    );
    for (at, outcome) in promotional.iter().filter(|(at, _)| !sent.contains(at)) {
        assert_eq!(outcome, "suppressed: frequency-cap", "{at}");
    }
    // Lifecycle emails 12 hours apart are not held back.
    let reviews = outcomes(&api, "review-request").await;
    assert_eq!(sent_at(&reviews).len(), 7, "{reviews:?}");
}
