//! The cart routes over the real SQLite store and timer table: the cart's
//! lifecycle, its inactivity timer (replaced by every activity, and by the
//! checkout's timer at checkout, decision 0069), idempotency, and every kind of bad input (which writes nothing).

use crm_core::clock::SystemClock;
use crm_core::commerce::{inactivity_timer_name, CartService, TimerOutcome};
use crm_core::scheduler::{Scheduler, TimerKind, TimerPayload};
use crm_tests::{registration, TestApi};
use serde_json::json;
use std::sync::Arc;

async fn customer(api: &TestApi) -> String {
    let a = api
        .call("POST", "/customers", Some(&registration("shopper@example.com")))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_string()
}

async fn cart(api: &TestApi, customer_id: &str) -> String {
    let a = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": customer_id, "currency": "EUR" }).to_string()),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_string()
}

fn item(product: &str, quantity: i64, price: i64) -> String {
    json!({ "product_id": product, "name": format!("Product {product}"), "quantity": quantity,
        "unit_price_minor": price })
    .to_string()
}

async fn timer(api: &TestApi, cart_id: &str) -> Option<TimerPayload> {
    api.runtime
        .scheduler
        .get(&inactivity_timer_name(cart_id))
        .await
        .expect("timer table readable")
}

#[tokio::test]
async fn cart_lifecycle_with_its_inactivity_timer() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let created = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": customer_id, "currency": "EUR" }).to_string()),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.headers["location"], format!("/carts/{id}").as_str());
    assert_eq!(created.body["customer_id"], customer_id.as_str());
    assert_eq!(created.body["status"], "open");
    assert_eq!(created.body["currency"], "EUR");
    assert_eq!(created.body["items"], json!([]));
    assert_eq!(
        (
            created.body["total_value_minor"].clone(),
            created.body["version"].clone()
        ),
        (json!(0), json!(1))
    );
    for field in ["created_at", "updated_at"] {
        assert!(created.body[field].is_string(), "{field}");
    }

    let t1 = timer(&api, &id).await.expect("create sets the timer");
    assert_eq!(t1.kind, TimerKind::CartInactivity);
    assert_eq!(t1.stream_id, format!("cart-{id}"));
    assert_eq!(t1.customer_id.as_deref(), Some(customer_id.as_str()));
    assert_eq!(t1.set_at_version, 1);
    // The creation time, read as the timer's own timestamp type.
    let mut at_creation = serde_json::to_value(&t1).expect("json");
    at_creation["due_at"] = created.body["created_at"].clone();
    let at_creation: TimerPayload = serde_json::from_value(at_creation).expect("timestamp");
    assert_eq!(
        (t1.due_at - at_creation.due_at).num_seconds(),
        60 * 60,
        "due an hour after the activity"
    );

    let added = api
        .call("POST", &format!("/carts/{id}/items"), Some(&item("sku-1", 2, 1250)))
        .await;
    assert_eq!(added.status, 200, "{:?}", added.body);
    assert_eq!(added.body["total_value_minor"], 2500);
    assert_eq!(timer(&api, &id).await.map(|t| t.set_at_version), Some(2), "replaced");

    api.call("POST", &format!("/carts/{id}/items"), Some(&item("sku-2", 1, 499)))
        .await;
    let more = api
        .call("POST", &format!("/carts/{id}/items"), Some(&item("sku-1", 1, 1250)))
        .await;
    assert_eq!(more.status, 200);
    assert_eq!(more.body["items"][0]["quantity"], 3, "same product: quantity grows");
    assert_eq!(more.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(more.body["total_value_minor"], 3 * 1250 + 499);
    assert_eq!(timer(&api, &id).await.map(|t| t.set_at_version), Some(4));

    let removed = api.call("DELETE", &format!("/carts/{id}/items/sku-2"), None).await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    assert_eq!(removed.body["total_value_minor"], 3750);
    assert_eq!(timer(&api, &id).await.map(|t| t.set_at_version), Some(5));

    let got = api.call("GET", &format!("/carts/{id}"), None).await;
    assert_eq!((got.status.as_u16(), got.body.clone()), (200, removed.body.clone()));

    let checkout = api.call("POST", &format!("/carts/{id}/checkout"), None).await;
    assert_eq!(checkout.status, 200, "{:?}", checkout.body);
    assert_eq!(checkout.body["status"], "checked-out");
    let checkout_timer = timer(&api, &id).await.expect("the checkout's timer");
    assert_eq!(
        checkout_timer.set_at_version, 6,
        "checkout replaces the inactivity timer by the checkout's"
    );

    // Every event of the cart names its customer (routing by customer works).
    let events = api
        .store
        .read_stream(&format!("cart-{id}"), 0, 100)
        .await
        .expect("read");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CartCreated",
            "ItemAddedToCart",
            "ItemAddedToCart",
            "ItemAddedToCart",
            "ItemRemovedFromCart",
            "CheckoutStarted"
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.customer_id.as_deref() == Some(customer_id.as_str())));

    // A checked-out cart refuses item changes, and nothing is written.
    let before = api.event_count().await;
    for (method, path, body) in [
        ("POST", format!("/carts/{id}/items"), Some(item("sku-3", 1, 1))),
        ("DELETE", format!("/carts/{id}/items/sku-1"), None),
        ("POST", format!("/carts/{id}/checkout"), None),
    ] {
        let a = api.call(method, &path, body.as_deref()).await;
        assert_eq!(a.status, 409, "{method} {path}: {:?}", a.body);
        assert_eq!(a.content_type(), "application/problem+json");
    }
    assert_eq!(api.event_count().await, before);
    assert_eq!(timer(&api, &id).await, Some(checkout_timer));
}

#[tokio::test]
async fn a_current_timer_abandons_the_cart_a_replaced_one_does_not() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let id = cart(&api, &customer_id).await;
    let stale = timer(&api, &id).await.expect("set");
    api.call("POST", &format!("/carts/{id}/items"), Some(&item("sku-1", 2, 700)))
        .await;
    let current = timer(&api, &id).await.expect("set");

    let scheduler: Arc<dyn Scheduler> = api.runtime.scheduler.clone();
    let service = CartService::new(api.runtime.command_store(), Arc::new(SystemClock), scheduler);
    let now = current.due_at;
    assert_eq!(
        service.on_inactivity_timer(&stale, now).await,
        Ok(TimerOutcome::Superseded)
    );
    let outcome = service.on_inactivity_timer(&current, now).await.expect("handled");
    let TimerOutcome::Abandoned { events } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(events[0].event_type, "CartAbandoned");
    assert_eq!(events[0].customer_id.as_deref(), Some(customer_id.as_str()));
    assert_eq!(events[0].data["total_value_minor"], 1400);
    assert_eq!(events[0].data["currency"], "EUR");
    assert_eq!(events[0].data["items"][0]["product_id"], "sku-1");
    assert!(events[0].data["time_in_cart_seconds"]
        .as_i64()
        .is_some_and(|s| s >= 3600));

    let got = api.call("GET", &format!("/carts/{id}"), None).await;
    assert_eq!(got.body["status"], "abandoned");
    let refused = api
        .call("POST", &format!("/carts/{id}/items"), Some(&item("sku-2", 1, 1)))
        .await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        service.on_inactivity_timer(&current, now).await,
        Ok(TimerOutcome::NotOpen),
        "a redelivered timer is a no-op"
    );
}

#[tokio::test]
async fn idempotent_cart_commands_are_applied_once() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let body = json!({ "customer_id": customer_id, "currency": "USD" }).to_string();
    let key = [
        ("authorization", "Bearer test-token"),
        ("idempotency-key", "cart-create-1"),
    ];
    let first = api.call_with("POST", "/carts", Some(&body), &key).await;
    assert_eq!(first.status, 201);
    let count = api.event_count().await;
    let again = api.call_with("POST", "/carts", Some(&body), &key).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(api.event_count().await, count);

    let id = first.body["id"].as_str().expect("id");
    let add_key = [("authorization", "Bearer test-token"), ("idempotency-key", "add-1")];
    let path = format!("/carts/{id}/items");
    let a = api
        .call_with("POST", &path, Some(&item("sku-1", 1, 100)), &add_key)
        .await;
    let b = api
        .call_with("POST", &path, Some(&item("sku-1", 1, 100)), &add_key)
        .await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(b.body["items"][0]["quantity"], 1, "applied once");
    let reused = api
        .call_with("POST", &path, Some(&item("sku-1", 5, 100)), &add_key)
        .await;
    assert_eq!(
        (reused.status.as_u16(), reused.body["field"].clone()),
        (422, json!("Idempotency-Key"))
    );
}

/// (method, path, body, expected status, expected `field`)
type Case = (&'static str, String, Option<String>, u16, Option<&'static str>);

#[tokio::test]
async fn bad_cart_requests_are_problems_and_write_nothing() {
    let api = TestApi::new();
    let customer_id = customer(&api).await;
    let id = cart(&api, &customer_id).await;
    let unknown = "0190d7a0-0000-7000-8000-00000000dead";
    let big = format!(
        r#"{{"customer_id":"{customer_id}","currency":"EUR","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let items = format!("/carts/{id}/items");
    let cases: Vec<Case> = vec![
        ("POST", "/carts".into(), Some("{not json".into()), 400, None),
        ("POST", "/carts".into(), None, 400, None),
        ("POST", "/carts".into(), Some(big), 413, None),
        (
            "POST",
            "/carts".into(),
            Some(json!({ "customer_id": customer_id }).to_string()),
            422,
            Some("currency"),
        ),
        (
            "POST",
            "/carts".into(),
            Some(json!({ "customer_id": customer_id, "currency": "eur" }).to_string()),
            422,
            Some("currency"),
        ),
        (
            "POST",
            "/carts".into(),
            Some(json!({ "customer_id": unknown, "currency": "EUR" }).to_string()),
            422,
            Some("customer_id"),
        ),
        (
            "POST",
            "/carts".into(),
            Some(json!({ "customer_id": "nobody", "currency": "EUR" }).to_string()),
            422,
            Some("customer_id"),
        ),
        (
            "POST",
            "/carts".into(),
            Some(json!({ "customer_id": customer_id, "currency": "EUR", "coupon": "x" }).to_string()),
            422,
            Some("coupon"),
        ),
        (
            "POST",
            items.clone(),
            Some(item("sku-1", 0, 100)),
            422,
            Some("quantity"),
        ),
        (
            "POST",
            items.clone(),
            Some(item("sku-1", -1, 100)),
            422,
            Some("quantity"),
        ),
        (
            "POST",
            items.clone(),
            Some(item("sku-1", 1, -1)),
            422,
            Some("unit_price_minor"),
        ),
        (
            "POST",
            items.clone(),
            Some(item("sku 1", 1, 1)),
            422,
            Some("product_id"),
        ),
        (
            "POST",
            items.clone(),
            Some(json!({ "product_id": "sku-1", "quantity": 1, "unit_price_minor": 1 }).to_string()),
            422,
            Some("name"),
        ),
        ("POST", items.clone(), Some("[1,".into()), 400, None),
        (
            "POST",
            format!("/carts/{unknown}/items"),
            Some(item("sku-1", 1, 1)),
            404,
            None,
        ),
        (
            "POST",
            "/carts/not-a-uuid/items".into(),
            Some(item("sku-1", 1, 1)),
            404,
            None,
        ),
        (
            "DELETE",
            format!("/carts/{id}/items/sku-9"),
            None,
            404,
            Some("product_id"),
        ),
        ("GET", format!("/carts/{unknown}"), None, 404, None),
        ("POST", format!("/carts/{id}/checkout"), None, 409, None),
        (
            "POST",
            format!("/carts/{id}/checkout"),
            Some(r#"{"x":1}"#.into()),
            422,
            Some("x"),
        ),
    ];
    let before = api.event_count().await;
    let timer_before = timer(&api, &id).await;
    for (method, path, body, status, field) in cases {
        let a = api.call(method, &path, body.as_deref()).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {:?}", a.body);
        assert_eq!(a.content_type(), "application/problem+json", "{method} {path}");
        assert_eq!(a.body["status"], status);
        assert_eq!(a.body["field"].as_str(), field, "{method} {path}: {:?}", a.body);
        assert!(a.body["type"].as_str().is_some_and(|t| t.starts_with("https://")));
    }
    assert_eq!(api.event_count().await, before, "nothing written");
    assert_eq!(timer(&api, &id).await, timer_before, "timer untouched");
    let unauthenticated = api.call_with("GET", &format!("/carts/{id}"), None, &[]).await;
    assert_eq!(unauthenticated.status, 401);
}
