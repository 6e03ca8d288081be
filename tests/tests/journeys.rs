//! Journeys end to end through the local runtime on a virtual clock: cart
//! abandonment, the abandoned-cart campaign's reminder, an exit mid-wait,
//! exactly-once starts, and the explain chain.

use chrono::{DateTime, Duration, Utc};
use crm_core::journey::explain::explain;
use crm_core::ports::{AppendRequest, ExpectedVersion};
use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// The messages the abandoned-cart campaign asked for.
async fn cart_messages(api: &TestApi) -> Vec<crm_core::event::EventEnvelope> {
    api.events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["campaign_id"] == "abandoned-cart")
        .collect()
}

#[tokio::test]
async fn abandoned_cart_reminds_once_after_the_wait_and_an_order_ends_the_journey() {
    let api = TestApi::at(start());
    let customer = api
        .call("POST", "/customers", Some(&registration("shopper@example.com")))
        .await;
    assert_eq!(customer.status, 201, "{:?}", customer.body);
    let customer_id = customer.body["id"].as_str().expect("id").to_string();

    let cart = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": customer_id, "currency": "EUR" }).to_string()),
        )
        .await;
    assert_eq!(cart.status, 201, "{:?}", cart.body);
    let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
    let add = |product: &str, price: i64| {
        json!({ "product_id": product, "name": product, "quantity": 1, "unit_price_minor": price }).to_string()
    };
    assert_eq!(
        api.call("POST", &format!("/carts/{cart_id}/items"), Some(&add("lamp", 4000)))
            .await
            .status,
        200
    );

    // Activity 30 minutes later resets the inactivity timer.
    api.advance_minutes(30).await;
    assert_eq!(
        api.call("POST", &format!("/carts/{cart_id}/items"), Some(&add("shade", 2500)))
            .await
            .status,
        200
    );
    api.advance_minutes(59).await;
    assert!(
        api.events_of_type("CartAbandoned").await.is_empty(),
        "59 minutes after the last activity: still open"
    );
    api.advance_minutes(1).await;
    let abandoned = api.events_of_type("CartAbandoned").await;
    assert_eq!(abandoned.len(), 1, "abandoned 60 minutes after the last activity");
    assert_eq!(abandoned[0].data["total_value_minor"], 6500);

    // The bus delivers everything to the campaign function again (as after a
    // crash before its cursor moved): still exactly one instance.
    api.runtime.bus.rewind("campaign", 0).await.expect("rewind");
    api.runtime.bus.settle().await.expect("redeliver");
    let starts: Vec<_> = api
        .events_of_type("JourneyStarted")
        .await
        .into_iter()
        .filter(|e| e.data["campaign_id"] == "abandoned-cart")
        .collect();
    assert_eq!(starts.len(), 1, "a duplicated trigger starts no second instance");

    // The campaign waits an hour, then asks for exactly one reminder.
    api.advance_minutes(59).await;
    assert!(cart_messages(&api).await.is_empty());
    api.advance_minutes(1).await;
    let requested = cart_messages(&api).await;
    assert_eq!(
        requested.len(),
        1,
        "one reminder, 60 + 60 minutes after the last activity"
    );
    assert_eq!(requested[0].data["template"], "abandoned-cart-reminder");
    assert_eq!(requested[0].occurred_at, start() + Duration::minutes(30 + 60 + 60));
    let message_id = requested[0].data["message_id"]
        .as_str()
        .expect("message id")
        .to_string();

    // An order during the 24 h wait ends the journey at once and deletes its schedule.
    api.advance_minutes(180).await;
    // (Orders get their own aggregate with the commerce issue; the event is what matters here.)
    let order_id = uuid::Uuid::now_v7();
    let order = crm_core::event::EventEnvelope {
        event_id: order_id,
        stream_id: format!("order-{order_id}"),
        version: 0,
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        customer_id: Some(customer_id.clone()),
        occurred_at: start() + Duration::minutes(300),
        recorded_at: start() + Duration::minutes(300),
        causation_id: None,
        correlation_id: order_id,
        actor: "api:test".into(),
        data: json!({ "order_id": order_id, "cart_id": cart_id }),
    };
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: order.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![order],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("order placed");
    api.runtime.bus.settle().await.expect("settle");
    let exited: Vec<_> = api
        .events_of_type("JourneyExited")
        .await
        .into_iter()
        .filter(|e| e.data["rule"] == "order-placed")
        .collect();
    assert_eq!(exited.len(), 1);
    assert_eq!(
        exited[0].stream_id,
        format!("journey-{}", requested[0].data["instance_id"].as_str().unwrap_or(""))
    );
    api.advance_minutes(24 * 60).await;
    assert_eq!(cart_messages(&api).await.len(), 1, "no final offer");
    // Meanwhile the registration's own journey asked for the verification email.
    assert!(api
        .events_of_type("MessageRequested")
        .await
        .iter()
        .any(|e| e.data["template"] == "email-verification"));

    // Why was the reminder sent?
    let why = explain(api.store.as_ref(), api.runtime.docs.as_ref(), &message_id)
        .await
        .expect("explain")
        .expect("known");
    let chain: Vec<(&str, &str)> = why.chain.iter().map(|l| (l.role, l.event_type.as_str())).collect();
    assert_eq!(chain[0], ("message", "MessageRequested"));
    assert!(chain.contains(&("trigger", "CartAbandoned")), "{chain:?}");
    assert!(chain.contains(&("history", "ItemAddedToCart")), "{chain:?}");
    assert_eq!(why.campaign, "abandoned-cart@1");
    let _: Value = json!(why);
}

async fn cross_sell(api: &TestApi) -> Vec<crm_core::event::EventEnvelope> {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == "cross-sell")
        .collect()
}

#[tokio::test]
async fn until_ten_local_lands_at_ten_in_the_customers_zone_across_the_dst_change() {
    // Berlin springs forward on 2026-03-29: 10:00 that day is 08:00 UTC (the day before, 09:00 UTC).
    let start = DateTime::parse_from_rfc3339("2026-03-21T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let api = TestApi::at(start);
    let mut body: Value = serde_json::from_str(&registration("berlin@example.com")).expect("json");
    body["timezone"] = json!("Europe/Berlin");
    let customer = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(customer.status, 201, "{:?}", customer.body);
    let customer_id = customer.body["id"].as_str().expect("id").to_string();

    let order_id = uuid::Uuid::now_v7();
    let delivered = crm_core::event::EventEnvelope {
        event_id: order_id,
        stream_id: format!("order-{order_id}"),
        version: 0,
        event_type: "OrderDelivered".into(),
        schema_version: 1,
        customer_id: Some(customer_id.clone()),
        occurred_at: start,
        recorded_at: start,
        causation_id: None,
        correlation_id: order_id,
        actor: "api:test".into(),
        data: json!({ "order_id": order_id }),
    };
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: delivered.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![delivered],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("order delivered");
    api.runtime.bus.settle().await.expect("settle");

    // Seven days (to 2026-03-28T12:00Z), then the wait for 10:00 Berlin time.
    api.advance_minutes(7 * 24 * 60).await;
    assert!(cross_sell(&api).await.is_empty());
    // 2026-03-29T07:59Z is 09:59 CEST: not yet.
    api.advance_minutes(19 * 60 + 59).await;
    assert!(cross_sell(&api).await.is_empty(), "not before 10:00 local");
    api.advance_minutes(1).await;
    let sent = cross_sell(&api).await;
    assert_eq!(sent.len(), 1);
    let due = DateTime::parse_from_rfc3339("2026-03-29T08:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    assert_eq!(sent[0].occurred_at, due, "10:00 CEST, the first day of summer time");
}
