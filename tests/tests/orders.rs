//! The order routes over the real SQLite store, bus and timer table: the
//! lifecycle, illegal transitions (409 with the reason, nothing written),
//! bad input (422 naming the field, nothing written), orders from carts,
//! idempotency, and payment retries on the virtual clock.

use chrono::{DateTime, Duration, Utc};
use crm_core::commerce::payment_retry_timer_name;
use crm_core::event::EventEnvelope;
use crm_core::scheduler::{Scheduler, TimerKind};
use crm_tests::{registration, Answer, TestApi};
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn customer(api: &TestApi) -> String {
    let a = api
        .call("POST", "/customers", Some(&registration("buyer@example.com")))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_string()
}

fn address() -> Value {
    json!({ "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" })
}

/// An order of two lines: 2 x 12.50 + 1 x 5.00 = 30.00, tax 5.70, shipping 4.30: 40.00 EUR.
fn order_body(customer_id: &str) -> Value {
    json!({
        "customer_id": customer_id,
        "items": [
            { "product_id": "beans", "name": "Espresso beans", "category": "consumables", "quantity": 2, "unit_price_minor": 1250 },
            { "product_id": "jug", "name": "Milk jug", "quantity": 1, "unit_price_minor": 500 }
        ],
        "subtotal_minor": 3000,
        "tax_minor": 570,
        "shipping_minor": 430,
        "total_minor": 4000,
        "currency": "EUR",
        "shipping_address": address()
    })
}

async fn place(api: &TestApi, customer_id: &str) -> String {
    let a = api
        .call("POST", "/orders", Some(&order_body(customer_id).to_string()))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_string()
}

fn payment(status: &str, extra: Value) -> String {
    let mut body = json!({ "payment_id": "pay-1", "status": status, "method": "credit-card",
        "amount_minor": 4000, "currency": "EUR", "provider": "stripe" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

async fn post(api: &TestApi, order_id: &str, action: &str, body: &str) -> Answer {
    api.call("POST", &format!("/orders/{order_id}/{action}"), Some(body))
        .await
}

async fn pay(api: &TestApi, order_id: &str) {
    let a = post(api, order_id, "payments", &payment("initiated", json!({}))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = post(
        api,
        order_id,
        "payments",
        &payment("succeeded", json!({ "transaction_id": "tx-1" })),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

const SHIP: &str = r#"{"carrier":"DHL","tracking_number":"JD0146","tracking_url":"https://track.example/JD0146"}"#;

async fn order_events(api: &TestApi, order_id: &str) -> Vec<EventEnvelope> {
    let stream = format!("order-{order_id}");
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .collect()
}

fn types(events: &[EventEnvelope]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn an_order_goes_from_payment_to_delivery_and_refunds() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let placed = api
        .call("POST", "/orders", Some(&order_body(&customer_id).to_string()))
        .await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    let id = placed.body["id"].as_str().expect("id").to_string();
    assert_eq!(placed.headers["location"], format!("/orders/{id}").as_str());
    assert_eq!(placed.body["status"], "pending-payment");
    assert_eq!(placed.body["total_minor"], 4000);
    assert_eq!(placed.body["billing_address"], placed.body["shipping_address"]);

    pay(&api, &id).await;
    let order = api.call("GET", &format!("/orders/{id}"), None).await;
    assert_eq!(order.status, 200);
    assert_eq!(order.body["status"], "confirmed");
    let number = order.body["confirmation_number"].as_str().expect("confirmation number");
    assert!(number.starts_with("CRM-"), "{number}");
    assert_eq!(order.body["payment"]["transaction_id"], "tx-1");

    let shipped = post(&api, &id, "ship", SHIP).await;
    assert_eq!(
        (shipped.status.as_u16(), &shipped.body["status"]),
        (200, &json!("in-transit"))
    );
    let delivered = post(&api, &id, "deliver", "{}").await;
    assert_eq!(delivered.body["status"], "completed", "{:?}", delivered.body);

    // After delivery a refund is a return, with its reason (decision 0071).
    let partial = json!({ "refund_type": "partial", "amount_minor": 1500, "reason": "quality-issue", "items": ["jug"],
        "return": { "reason": "the jug leaks" } });
    let refunded = post(&api, &id, "refunds", &partial.to_string()).await;
    assert_eq!(refunded.status, 200, "{:?}", refunded.body);
    assert_eq!(
        (
            refunded.body["refundable_minor"].clone(),
            refunded.body["status"].clone()
        ),
        (json!(2500), json!("completed"))
    );
    let full = post(
        &api,
        &id,
        "refunds",
        r#"{"refund_type":"full","reason":"customer-request","return":{"reason":"not needed after all"}}"#,
    )
    .await;
    assert_eq!(full.body["status"], "refunded", "{:?}", full.body);

    let events = order_events(&api, &id).await;
    assert_eq!(
        types(&events),
        [
            "OrderPlaced",
            "PaymentInitiated",
            "PaymentSucceeded",
            "OrderConfirmed",
            "OrderShipped",
            "OrderDelivered",
            "RefundRequested",
            "RefundRequested",
            "OrderRefunded"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.customer_id.as_deref() == Some(customer_id.as_str())));
    // PaymentSucceeded and OrderConfirmed were written together, by one command.
    assert_eq!(events[2].causation_id, events[3].causation_id);
    assert_eq!(events[3].data["estimated_delivery"].as_str().map(str::len), Some(10));
    assert_eq!(events[8].data["refunded_total_minor"], 4000);
}

/// A delivered order, paid 40.00 EUR.
async fn delivered(api: &TestApi) -> String {
    let customer_id = customer(api).await;
    let id = place(api, &customer_id).await;
    pay(api, &id).await;
    assert_eq!(post(api, &id, "ship", SHIP).await.status, 200);
    assert_eq!(post(api, &id, "deliver", "{}").await.status, 200);
    id
}

#[tokio::test]
async fn a_delivered_order_is_refunded_only_as_a_return_with_a_reason() {
    let api = TestApi::new();
    let id = delivered(&api).await;
    for body in [
        json!({ "refund_type": "full", "reason": "customer-request" }),
        json!({ "refund_type": "partial", "amount_minor": 500, "reason": "quality-issue", "return": null }),
    ] {
        let before = api.event_count().await;
        let a = post(&api, &id, "refunds", &body.to_string()).await;
        assert_eq!(a.status, 409, "{body}: {:?}", a.body);
        assert_eq!(a.content_type(), "application/problem+json");
        assert_eq!(a.body["field"], "return.reason", "{:?}", a.body);
        assert_eq!(api.event_count().await, before, "{body}: nothing written");
    }
    let order = api.call("GET", &format!("/orders/{id}"), None).await;
    assert_eq!(
        (&order.body["status"], &order.body["refundable_minor"]),
        (&json!("completed"), &json!(4000))
    );

    let ret = json!({ "refund_type": "partial", "amount_minor": 500, "reason": "quality-issue", "items": ["jug"],
        "return": { "reason": "the jug leaks" } });
    let a = post(&api, &id, "refunds", &ret.to_string()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["refunds"][0]["origin"], "return");
    assert_eq!(a.body["refunds"][0]["return_reason"], "the jug leaks");
    assert_eq!(a.body["refundable_minor"], 3500);
    let stored = order_events(&api, &id).await;
    let refund = stored.last().expect("the refund");
    assert_eq!(
        (refund.event_type.as_str(), refund.schema_version),
        ("RefundRequested", 2)
    );
    assert_eq!(refund.data["origin"], "return");
}

#[tokio::test]
async fn before_delivery_a_refund_needs_no_return_and_takes_none() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let id = place(&api, &customer_id).await;
    pay(&api, &id).await;
    let ret = json!({ "refund_type": "full", "reason": "other", "return": { "reason": "never arrived" } });
    let before = api.event_count().await;
    let a = post(&api, &id, "refunds", &ret.to_string()).await;
    assert_eq!(
        (a.status.as_u16(), &a.body["field"]),
        (422, &json!("return")),
        "{:?}",
        a.body
    );
    assert_eq!(api.event_count().await, before);
    let a = post(&api, &id, "refunds", r#"{"refund_type":"full","reason":"other"}"#).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (&a.body["status"], &a.body["refunds"][0]["origin"]),
        (&json!("refunded"), &json!("request"))
    );
}

#[tokio::test]
async fn the_providers_confirmation_completes_a_refund_once_per_transaction() {
    let api = TestApi::new();
    let id = delivered(&api).await;
    let ret = json!({ "refund_type": "full", "reason": "other", "return": { "reason": "wrong size" } });
    let refunded = post(&api, &id, "refunds", &ret.to_string()).await;
    assert_eq!(refunded.status, 200, "{:?}", refunded.body);
    let refund_id = refunded.body["refunds"][0]["refund_id"]
        .as_str()
        .expect("refund id")
        .to_string();
    let complete = format!("refunds/{refund_id}/complete");
    let tx = json!({ "transaction_id": "re_3MtwBw" }).to_string();
    let done = post(&api, &id, &complete, &tx).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["refunds"][0]["transaction_id"], "re_3MtwBw");
    assert!(done.body["refunds"][0]["completed_at"].is_string(), "{:?}", done.body);
    // The provider's callback again: nothing new.
    let before = api.event_count().await;
    let again = post(&api, &id, &complete, &tx).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(api.event_count().await, before);
    let other = post(&api, &id, &complete, r#"{"transaction_id":"re_other"}"#).await;
    assert_eq!(
        (other.status.as_u16(), &other.body["field"]),
        (409, &json!("transaction_id"))
    );
    let missing = post(&api, &id, &format!("refunds/{}/complete", uuid::Uuid::now_v7()), &tx).await;
    assert_eq!(
        (missing.status.as_u16(), &missing.body["field"]),
        (404, &json!("refund_id"))
    );
    let completed: Vec<_> = order_events(&api, &id)
        .await
        .into_iter()
        .filter(|e| e.event_type == "RefundCompleted")
        .collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(
        (&completed[0].data["refund_id"], &completed[0].data["amount_minor"]),
        (&json!(refund_id), &json!(4000))
    );
}

#[tokio::test]
async fn illegal_transitions_are_refused_with_the_reason_and_nothing_written() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let id = place(&api, &customer_id).await;
    let refund = r#"{"refund_type":"full","reason":"other"}"#;
    let paid = payment("succeeded", json!({ "transaction_id": "tx-1" }));
    // (state reached, action, body, the reason given)
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "pending",
            "ship",
            SHIP.into(),
            "the order is not paid yet: it cannot be shipped",
        ),
        (
            "pending",
            "deliver",
            "{}".into(),
            "the order is not paid yet: it cannot be delivered",
        ),
        (
            "pending",
            "refunds",
            refund.into(),
            "the order is not paid: there is nothing to refund",
        ),
    ];
    let check = |cases: Vec<(&'static str, &'static str, String, &'static str)>| {
        let api = &api;
        let id = id.clone();
        async move {
            for (state, action, body, reason) in cases {
                let before = api.event_count().await;
                let a = post(api, &id, action, &body).await;
                assert_eq!(a.status, 409, "{state} {action}: {:?}", a.body);
                assert_eq!(a.content_type(), "application/problem+json");
                assert_eq!(a.body["detail"], reason, "{state} {action}");
                assert_eq!(api.event_count().await, before, "{state} {action} wrote nothing");
            }
        }
    };
    check(cases).await;

    pay(&api, &id).await;
    check(vec![
        (
            "confirmed",
            "deliver",
            "{}".into(),
            "the order was not shipped yet: it cannot be delivered",
        ),
        (
            "confirmed",
            "payments",
            paid.clone(),
            "the order is confirmed: it is already paid",
        ),
    ])
    .await;
    let too_much = json!({ "refund_type": "partial", "amount_minor": 4001, "reason": "other" }).to_string();
    check(vec![(
        "confirmed",
        "refunds",
        too_much.clone(),
        "only 4000 of the order total 4000 is left to refund",
    )])
    .await;

    assert_eq!(post(&api, &id, "ship", SHIP).await.status, 200);
    check(vec![
        ("in-transit", "ship", SHIP.into(), "the order was already shipped"),
        (
            "in-transit",
            "cancel",
            r#"{"reason":"too late"}"#.into(),
            "the order was shipped: it can no longer be cancelled",
        ),
    ])
    .await;
    assert_eq!(post(&api, &id, "deliver", "{}").await.status, 200);
    check(vec![
        ("completed", "deliver", "{}".into(), "the order was already delivered"),
        (
            "completed",
            "cancel",
            r#"{"reason":"too late"}"#.into(),
            "the order was delivered: it can no longer be cancelled",
        ),
    ])
    .await;

    // A cancelled order takes nothing more.
    let other = place(&api, &customer_id).await;
    assert_eq!(
        post(&api, &other, "cancel", r#"{"reason":"changed my mind"}"#)
            .await
            .status,
        200
    );
    for (action, body, reason) in [
        (
            "cancel",
            r#"{"reason":"again"}"#.to_string(),
            "the order is already cancelled",
        ),
        ("payments", paid, "the order is cancelled: it takes no payment"),
        (
            "refunds",
            refund.to_string(),
            "the order is cancelled: it cannot be refunded",
        ),
        ("ship", SHIP.to_string(), "the order is cancelled: it cannot be shipped"),
    ] {
        let before = api.event_count().await;
        let a = post(&api, &other, action, &body).await;
        assert_eq!(
            (a.status.as_u16(), a.body["detail"].as_str()),
            (409, Some(reason)),
            "{action}"
        );
        assert_eq!(api.event_count().await, before);
    }
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let id = place(&api, &customer_id).await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = order_body(&customer_id);
        f(&mut b);
        b.to_string()
    };
    let before = api.event_count().await;
    for (body, status, field) in [
        (with(&|b| b["total_minor"] = json!(3999)), 422, "total_minor"),
        (with(&|b| b["subtotal_minor"] = json!(1)), 422, "subtotal_minor"),
        (with(&|b| b["currency"] = json!("euro")), 422, "currency"),
        (with(&|b| b["items"] = json!([])), 422, "items"),
        (
            with(&|b| b["items"][0]["quantity"] = json!(0)),
            422,
            "items[0].quantity",
        ),
        (
            with(&|b| b["shipping_address"]["country"] = json!("Germany")),
            422,
            "shipping_address.country",
        ),
        (
            with(&|b| b["customer_id"] = json!("0190d7a0-0000-7000-8000-000000000000")),
            422,
            "customer_id",
        ),
        (
            with(&|b| b["cart_id"] = json!("0190d7a0-0000-7000-8000-000000000000")),
            422,
            "items",
        ),
        (with(&|b| b["tax"] = json!(1)), 422, "tax"),
        (
            with(&|b| {
                b.as_object_mut().map(|o| o.remove("shipping_address"));
            }),
            422,
            "shipping_address",
        ),
    ] {
        let a = api.call("POST", "/orders", Some(&body)).await;
        assert_eq!(
            (a.status.as_u16(), a.body["field"].as_str()),
            (status, Some(field)),
            "{:?}",
            a.body
        );
    }
    for (action, body, field) in [
        ("payments", payment("succeeded", json!({})), "transaction_id"),
        ("payments", payment("failed", json!({})), "error_code"),
        (
            "payments",
            payment("initiated", json!({ "amount_minor": 1 })),
            "amount_minor",
        ),
        (
            "payments",
            payment("initiated", json!({ "currency": "USD" })),
            "currency",
        ),
        ("payments", payment("refused", json!({})), "status"),
        ("payments", payment("initiated", json!({ "method": "cash" })), "method"),
        (
            "refunds",
            r#"{"refund_type":"partial","reason":"other"}"#.to_string(),
            "refund_type",
        ),
        ("cancel", r#"{"reason":"  "}"#.to_string(), "reason"),
    ] {
        let a = post(&api, &id, action, &body).await;
        // A partial refund of an unpaid order: the state refuses first (409).
        if action == "refunds" {
            assert_eq!(a.status, 409, "{:?}", a.body);
            continue;
        }
        assert_eq!(
            (a.status.as_u16(), a.body["field"].as_str()),
            (422, Some(field)),
            "{action}: {:?}",
            a.body
        );
    }
    assert_eq!(api.event_count().await, before, "nothing written");
    assert_eq!(api.call("GET", "/orders/not-an-id", None).await.status, 404);
    let unknown = "0190d7a0-0000-7000-8000-0000000000ab";
    assert_eq!(api.call("GET", &format!("/orders/{unknown}"), None).await.status, 404);
    assert_eq!(post(&api, unknown, "deliver", "{}").await.status, 404);
    assert_eq!(post(&api, &id, "payments", "{nope").await.status, 400);
}

#[tokio::test]
async fn an_order_from_a_cart_takes_its_items_once() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let cart_id = api.cart_with_lamps(&customer_id, 2, 2000).await;
    let body = json!({ "customer_id": customer_id, "cart_id": cart_id, "tax_minor": 760, "shipping_minor": 0,
        "total_minor": 4760, "shipping_address": address() })
    .to_string();
    let placed = api.call("POST", "/orders", Some(&body)).await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    assert_eq!(placed.body["cart_id"], cart_id.as_str());
    assert_eq!(placed.body["currency"], "EUR");
    assert_eq!(placed.body["items"][0]["product_id"], "lamp");
    assert_eq!(placed.body["subtotal_minor"], 4000);

    let before = api.event_count().await;
    let again = api.call("POST", "/orders", Some(&body)).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.body["field"], "cart_id");
    assert_eq!(again.body["detail"], "the cart was already ordered");
    assert_eq!(api.event_count().await, before);
}

#[tokio::test]
async fn a_repeated_request_is_answered_not_applied_twice() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let body = order_body(&customer_id).to_string();
    let auth = format!("Bearer {}", crm_tests::TOKEN);
    let headers = [("authorization", auth.as_str()), ("idempotency-key", "order-1")];
    let first = api.call_with("POST", "/orders", Some(&body), &headers).await;
    assert_eq!(first.status, 201);
    let count = api.event_count().await;
    let second = api.call_with("POST", "/orders", Some(&body), &headers).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(api.event_count().await, count);
    let other = order_body(&customer_id).to_string().replace("Milk jug", "Jug");
    let reused = api.call_with("POST", "/orders", Some(&other), &headers).await;
    assert_eq!(
        (reused.status.as_u16(), reused.body["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );

    let id = first.body["id"].as_str().expect("id");
    let ship_headers = [("authorization", auth.as_str()), ("idempotency-key", "pay-1")];
    let paid = payment("succeeded", json!({ "transaction_id": "tx-1" }));
    let url = format!("/orders/{id}/payments");
    assert_eq!(
        api.call_with("POST", &url, Some(&paid), &ship_headers).await.status,
        200
    );
    let replay = api.call_with("POST", &url, Some(&paid), &ship_headers).await;
    assert_eq!(
        (replay.status.as_u16(), &replay.body["status"]),
        (200, &json!("confirmed"))
    );
    assert_eq!(
        types(&order_events(&api, id).await),
        ["OrderPlaced", "PaymentInitiated", "PaymentSucceeded", "OrderConfirmed"]
    );
}

/// A retryable failure is retried 300 s later (the payment initiated again),
/// at most three attempts; only the final failure starts the recovery campaign.
#[tokio::test]
async fn retryable_failures_are_retried_then_the_recovery_campaign_starts() {
    let api = TestApi::at(start());
    let customer_id = customer(&api).await;
    let id = place(&api, &customer_id).await;
    assert_eq!(
        post(&api, &id, "payments", &payment("initiated", json!({})))
            .await
            .status,
        200
    );
    let failed = payment(
        "failed",
        json!({ "error_code": "processing_error", "error_message": "try again", "retryable": true }),
    );
    let timer = payment_retry_timer_name(&id);
    for attempt in 1..=3u64 {
        let a = post(&api, &id, "payments", &failed).await;
        assert_eq!(a.status, 200, "attempt {attempt}: {:?}", a.body);
        if attempt == 3 {
            assert_eq!(a.body["status"], "payment-failed");
            break;
        }
        assert_eq!(a.body["status"], "pending-payment");
        assert_eq!(a.body["pending_retry"]["attempt"], attempt + 1);
        let t = api
            .runtime
            .scheduler
            .get(&timer)
            .await
            .expect("timers")
            .expect("a retry timer");
        assert_eq!(t.kind, TimerKind::PaymentRetry);
        assert_eq!(t.due_at, api.runtime.clock.now() + Duration::seconds(300));
        // Not yet due; then due: the payment is initiated again.
        api.runtime.advance(Duration::seconds(299)).await.expect("advance");
        assert_eq!(
            types(&order_events(&api, &id).await).last(),
            Some(&"PaymentRetryScheduled")
        );
        api.runtime.advance(Duration::seconds(1)).await.expect("advance");
        let events = order_events(&api, &id).await;
        let last = events.last().expect("events");
        assert_eq!(last.event_type, "PaymentInitiated");
        assert_eq!(last.actor, "system:payment-retry");
        assert_eq!(last.data["payment_id"], "pay-1");
        assert_eq!(api.runtime.scheduler.get(&timer).await.expect("timers"), None);
        // No recovery journey for a failure that is retried.
        assert!(recovery_requests(&api).await.is_empty(), "attempt {attempt}");
    }
    let events = order_events(&api, &id).await;
    let failures: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e.event_type == "PaymentFailed")
        .map(|e| (e.data["attempt"].clone(), e.data["retryable"].clone()))
        .collect();
    assert_eq!(
        failures,
        [
            (json!(1), json!(true)),
            (json!(2), json!(true)),
            (json!(3), json!(true))
        ]
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "PaymentRetryScheduled")
            .count(),
        2
    );
    assert_eq!(events.iter().filter(|e| e.event_type == "PaymentInitiated").count(), 3);
    // More time brings no fourth attempt.
    api.runtime.advance(Duration::seconds(600)).await.expect("advance");
    assert_eq!(order_events(&api, &id).await.len(), events.len());

    // The final failure: the payment-failed email then, the final notice 24 h
    // after it (600 s of which have passed).
    let requested = recovery_requests(&api).await;
    assert_eq!(requested, ["payment-failed"]);
    api.runtime
        .advance(Duration::hours(24) - Duration::seconds(600) - Duration::minutes(1))
        .await
        .expect("advance");
    assert_eq!(recovery_requests(&api).await, ["payment-failed"], "not before 24 h");
    api.runtime.advance(Duration::minutes(1)).await.expect("advance");
    assert_eq!(
        recovery_requests(&api).await,
        ["payment-failed", "payment-failed-final-notice"]
    );
    let mail = api.runtime.mail.list().await.expect("mail");
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.iter().any(|s| s.contains("did not go through")),
        "{subjects:?}"
    );
    let notice = mail
        .iter()
        .find(|m| m.subject.contains(&id) && !m.subject.contains("did not go through"))
        .expect("final notice sent");
    let text = notice.email().expect("an email").text;
    assert!(text.contains("€40.00"), "the amount of the payment: {text}");
}

/// The templates of the payment-failed-recovery journey requested so far.
async fn recovery_requests(api: &TestApi) -> Vec<String> {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == "payment-failed-recovery")
        .filter_map(|e| e.data["template"].as_str().map(str::to_string))
        .collect()
}

/// An order placed from a cart that is still open: its inactivity timer then
/// finds the cart ordered and does not abandon it (no abandoned-cart reminder).
#[tokio::test]
async fn an_ordered_cart_is_not_abandoned() {
    let api = TestApi::at(start());
    let customer_id = customer(&api).await;
    let cart_id = api.cart_with_lamps(&customer_id, 1, 6500).await;
    let body = json!({ "customer_id": customer_id, "cart_id": cart_id, "tax_minor": 0, "shipping_minor": 0,
        "total_minor": 6500, "shipping_address": address() });
    assert_eq!(api.call("POST", "/orders", Some(&body.to_string())).await.status, 201);
    api.runtime.advance(Duration::hours(3)).await.expect("advance");
    let abandoned = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| {
            e.event_type == "CartAbandoned"
                || e.event_type == "JourneyStarted" && e.data["campaign_id"] == "abandoned-cart"
        })
        .count();
    assert_eq!(abandoned, 0);
}

/// Two requests race to order the same cart: the cart's reservation, written
/// in the same append as OrderPlaced, lets exactly one of them win.
#[tokio::test]
async fn two_racing_orders_of_one_cart_place_one_order() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let cart = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": customer_id, "currency": "EUR" }).to_string()),
        )
        .await;
    let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
    let item = json!({ "product_id": "lamp", "name": "Desk lamp", "quantity": 1, "unit_price_minor": 6500 });
    api.call("POST", &format!("/carts/{cart_id}/items"), Some(&item.to_string()))
        .await;
    let body = json!({ "customer_id": customer_id, "cart_id": cart_id, "tax_minor": 0, "shipping_minor": 0,
        "total_minor": 6500, "shipping_address": address() })
    .to_string();
    let (a, b, c, d) = tokio::join!(
        api.call("POST", "/orders", Some(&body)),
        api.call("POST", "/orders", Some(&body)),
        api.call("POST", "/orders", Some(&body)),
        api.call("POST", "/orders", Some(&body)),
    );
    let answers = [a, b, c, d];
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409], "{answers:?}");
    let placed = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "OrderPlaced")
        .count();
    assert_eq!(placed, 1);
}
