//! Insights through the HTTP API over the local runtime: a customer's funnel
//! and the period's, an order's attribution under the five models and the
//! period's, campaign stats with a conversion, and problem JSON naming the
//! parameter for bad input. Events the APIs of issue 6 do not yet take
//! (activity, messages of a given time) are appended as decision 0012 names them.

use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_core::ports::{AppendRequest, ExpectedVersion};
use crm_tests::{registration, Answer, TestApi};
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-02T15:00:00Z")
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Appends one event to `stream` (at its end) and lets the bus deliver it.
async fn append(api: &TestApi, stream: &str, event_type: &str, customer: &str, at: DateTime<Utc>, data: Value) {
    let id = uuid::Uuid::now_v7();
    let event = EventEnvelope {
        event_id: id,
        stream_id: stream.to_string(),
        version: 0,
        event_type: event_type.into(),
        schema_version: 1,
        customer_id: Some(customer.to_string()),
        occurred_at: at,
        recorded_at: at,
        causation_id: None,
        correlation_id: id,
        actor: "api:test".into(),
        data,
    };
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: stream.to_string(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("append");
    api.runtime.bus.settle().await.expect("settle");
}

async fn register(api: &TestApi, email: &str) -> String {
    let created = api.call("POST", "/customers", Some(&registration(email))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

async fn place_order(api: &TestApi, customer: &str, total: i64) -> String {
    let body = json!({
        "customer_id": customer,
        "items": [{ "product_id": "sku-1", "name": "Beans", "quantity": 1, "unit_price_minor": total }],
        "tax_minor": 0, "shipping_minor": 0, "total_minor": total, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    let order = api.call("POST", "/orders", Some(&body.to_string())).await;
    assert_eq!(order.status, 201, "{:?}", order.body);
    order.body["id"].as_str().expect("order id").to_string()
}

fn assert_problem(answer: &Answer, status: u16, field: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["field"], field, "{:?}", answer.body);
}

async fn no_dead_letters(api: &TestApi) {
    let health = api.call("GET", "/health", None).await;
    assert_eq!(health.body["status"], "ok", "nothing parked: {:?}", health.body);
}

#[tokio::test]
async fn a_customers_funnel_and_the_periods() {
    let api = TestApi::at(start());
    let now = start();
    let buyer = register(&api, "buyer@example.com").await;
    let browser = register(&api, "browser@example.com").await;

    // buyer: PageViewed 2 h ago, a review read 1 h ago (consideration; a
    // product view would be awareness, decision 0066), a cart with an item
    // (the API's events happen now), checkout and an order.
    append(
        &api,
        &format!("activity-{buyer}"),
        "PageViewed",
        &buyer,
        now - Duration::hours(2),
        json!({ "url": "/" }),
    )
    .await;
    append(
        &api,
        &format!("activity-{buyer}"),
        "ReviewRead",
        &buyer,
        now - Duration::hours(1),
        json!({ "product_id": "sku-1" }),
    )
    .await;
    let cart = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": buyer, "currency": "EUR" }).to_string()),
        )
        .await;
    assert_eq!(cart.status, 201, "{:?}", cart.body);
    let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
    let item = r#"{"product_id":"sku-1","name":"Beans","quantity":1,"unit_price_minor":1250}"#;
    assert_eq!(
        api.call("POST", &format!("/carts/{cart_id}/items"), Some(item))
            .await
            .status,
        200
    );
    assert_eq!(
        api.call("POST", &format!("/carts/{cart_id}/checkout"), None)
            .await
            .status,
        200
    );
    place_order(&api, &buyer, 1250).await;
    // browser: only a page view 3 h ago.
    append(
        &api,
        &format!("activity-{browser}"),
        "PageViewed",
        &browser,
        now - Duration::hours(3),
        json!({ "url": "/" }),
    )
    .await;

    let f = api.call("GET", &format!("/customers/{buyer}/funnel"), None).await;
    assert_eq!(f.status, 200, "{:?}", f.body);
    let stages: Vec<&str> = f.body["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["stage"].as_str().unwrap_or(""))
        .collect();
    // The cart was created and the item added at the same instant: CartCreated is intent.
    assert_eq!(
        stages,
        vec!["awareness", "consideration", "intent", "checkout", "purchase"]
    );
    assert_eq!(
        f.body["stages"][0]["time_in_stage_seconds"], 3600,
        "awareness until the review read"
    );
    assert_eq!(
        f.body["stages"][1]["time_in_stage_seconds"], 3600,
        "consideration until the cart"
    );
    assert_eq!(f.body["current_stage"], "purchase");
    assert_eq!(f.body["completed"], true);
    assert_eq!(f.body["drop_off"], Value::Null);

    let f = api.call("GET", &format!("/customers/{browser}/funnel"), None).await;
    assert_eq!(f.body["current_stage"], "awareness");
    assert_eq!(f.body["drop_off"]["next_expected_stage"], "consideration");
    assert_eq!(f.body["drop_off"]["seconds_since_last_activity"], 3 * 3600);
    assert_eq!(f.body["conversion_rate"], 0.2);
    // Only the period before the buyer's review read: awareness only.
    let early = api
        .call(
            "GET",
            &format!("/customers/{buyer}/funnel?to={}", rfc(now - Duration::minutes(90))),
            None,
        )
        .await;
    assert_eq!(early.body["current_stage"], "awareness", "{:?}", early.body);

    // The period: 2 customers; awareness 2, consideration 1 (50 %), intent,
    // checkout and purchase 1 (100 % of the previous); the browser dropped off at awareness.
    let url = format!(
        "/insights/funnel?from={}&to={}",
        rfc(now - Duration::days(1)),
        rfc(now + Duration::days(1))
    );
    let r = api.call("GET", &url, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["customers"], 2);
    let counts: Vec<(i64, i64, f64)> = r.body["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["customers"].as_i64().unwrap_or(-1),
                s["dropped_off"].as_i64().unwrap_or(-1),
                s["conversion_from_previous"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![(2, 1, 1.0), (1, 0, 0.5), (1, 0, 1.0), (1, 0, 1.0), (1, 0, 1.0)]
    );
    // Defaults: the 30 days up to now (the clock): the same customers.
    let r = api.call("GET", "/insights/funnel", None).await;
    assert_eq!(r.body["customers"], 2, "{:?}", r.body);
    no_dead_letters(&api).await;
}

#[tokio::test]
async fn an_orders_attribution_under_the_five_models_and_the_periods() {
    let api = TestApi::at(start());
    let t = start();
    // A customer known only from their events.
    let c = "0190d7a0-0000-7000-8000-00000000a771";
    append(
        &api,
        &format!("activity-{c}"),
        "PageViewed",
        c,
        t - Duration::days(40),
        json!({ "url": "/", "utm": { "source": "facebook", "medium": "social" } }),
    )
    .await;
    append(
        &api,
        &format!("activity-{c}"),
        "PageViewed",
        c,
        t - Duration::days(14),
        json!({ "url": "/", "utm": { "source": "google", "medium": "cpc", "campaign": "autumn" } }),
    )
    .await;
    append(&api, "message-att-1", "MessageSent", c, t - Duration::days(7), json!({ "message_id": "att-1", "customer_id": c, "channel": "email", "category": "marketing", "campaign_id": "welcome", "provider_message_id": "ses-1" })).await;
    let order_id = "0190d7a0-0000-7000-8000-0000000a7701";
    append(
        &api,
        &format!("order-{order_id}"),
        "OrderPlaced",
        c,
        t,
        json!({
            "order_id": order_id, "customer_id": c,
            "items": [{ "product_id": "sku-1", "name": "Beans", "quantity": 3, "unit_price_minor": 1000 }],
            "subtotal_minor": 3000, "tax_minor": 0, "shipping_minor": 0, "total_minor": 3000, "currency": "EUR",
            "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" },
            "billing_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
        }),
    )
    .await;

    let a = api.call("GET", &format!("/orders/{order_id}/attribution"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (a.body["total_minor"].as_i64(), a.body["lookback_days"].as_i64()),
        (Some(3000), Some(30))
    );
    // The social visit is 40 days old: outside the 30-day lookback.
    let channels: Vec<&str> = a.body["touchpoints"]
        .as_array()
        .expect("touchpoints")
        .iter()
        .map(|t| t["channel"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(channels, vec!["cpc", "email"]);
    let split = |model: &str| -> Vec<(String, i64, i64)> {
        a.body["models"][model]["channels"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|c| {
                (
                    c["channel"].as_str().unwrap_or("").to_string(),
                    c["credit_bp"].as_i64().unwrap_or(-1),
                    c["value_minor"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    let s = |c: &str, bp: i64, v: i64| (c.to_string(), bp, v);
    assert_eq!(split("first-touch"), vec![s("cpc", 10_000, 3000)]);
    assert_eq!(split("last-touch"), vec![s("email", 10_000, 3000)]);
    assert_eq!(split("linear"), vec![s("cpc", 5_000, 1500), s("email", 5_000, 1500)]);
    // Ages 14 and 7 days, the seed's exp(-age / 7 d) (decision 0066):
    // weights e^-2 and e^-1 = 0.2689 : 0.7311 → 2 689.41 and 7 310.59 bp,
    // the unit to the larger remainder: 2 689 / 7 311; of 3 000: 806.82 and
    // 2 193.18 → 807 / 2 193.
    assert_eq!(split("time-decay"), vec![s("cpc", 2_689, 807), s("email", 7_311, 2193)]);
    // Two touchpoints: 50/50 (the seed's 40 + 40, scaled).
    assert_eq!(
        split("position-based"),
        vec![s("cpc", 5_000, 1500), s("email", 5_000, 1500)]
    );
    assert_eq!(a.body["models"]["time-decay"]["campaigns"][1]["campaign"], "welcome");

    let url = format!(
        "/insights/attribution?model=time-decay&from={}&to={}",
        rfc(t - Duration::days(1)),
        rfc(t + Duration::days(1))
    );
    let r = api.call("GET", &url, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["orders"], 1);
    assert_eq!(r.body["revenue_minor"]["EUR"], 3000);
    assert_eq!(r.body["channels"][0]["channel"], "cpc");
    assert_eq!(r.body["channels"][0]["value_minor"]["EUR"], 807);
    assert_eq!(r.body["channels"][1]["channel"], "email");
    assert_eq!(r.body["channels"][1]["conversions"], 0.7311);
    assert_eq!(r.body["campaigns"][0]["campaign"], "autumn");
    // A period before the order: nothing.
    let url = format!(
        "/insights/attribution?model=linear&from={}&to={}",
        rfc(t - Duration::days(10)),
        rfc(t)
    );
    let r = api.call("GET", &url, None).await;
    assert_eq!(
        (r.body["orders"].as_i64(), r.body["channels"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );

    assert_eq!(
        api.call("GET", "/orders/0190d7a0-0000-7000-8000-00000000dead/attribution", None)
            .await
            .status,
        404
    );
    no_dead_letters(&api).await;
}

#[tokio::test]
async fn campaign_stats_count_the_welcome_journey_and_an_order_after_its_email() {
    let api = TestApi::at(start());
    let customer = register(&api, "stats@example.com").await;
    // Verifying the address moves the welcome journey on to its (marketing) welcome email.
    let token = api
        .all_events()
        .await
        .into_iter()
        .find(|e| e.event_type == "EmailVerificationRequested")
        .and_then(|e| e.data["token"].as_str().map(str::to_string))
        .expect("a verification token");
    let verified = api
        .call(
            "POST",
            &format!("/customers/{customer}/email/verify"),
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    api.runtime.advance(Duration::hours(1)).await.expect("advance");
    let before = api.call("GET", "/campaigns/welcome/stats", None).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert_eq!(before.body["entered"], 1, "{:?}", before.body);
    let sent = before.body["messages"]["sent"].as_i64().unwrap_or(0);
    assert!(sent >= 1, "the welcome email went out: {:?}", before.body);
    assert!(before.body["messages"]["requested"].as_i64().unwrap_or(0) >= sent);
    assert_eq!(before.body["conversions"], 0);

    // An order a few hours after the email: a conversion worth its total.
    place_order(&api, &customer, 4200).await;
    let after = api.call("GET", "/campaigns/welcome/stats", None).await;
    assert_eq!(after.body["conversions"], 1, "{:?}", after.body);
    assert_eq!(after.body["revenue_minor"]["EUR"], 4200);
    assert_eq!(after.body["conversion_window_days"], 7);
    // Another campaign the customer got nothing from: no conversion.
    let other = api
        .call("GET", "/campaigns/review-request/stats?window_days=30", None)
        .await;
    assert_eq!(
        (other.body["entered"].as_i64(), other.body["conversions"].as_i64()),
        (Some(0), Some(0))
    );
    no_dead_letters(&api).await;
}

#[tokio::test]
async fn bad_query_input_is_a_problem_naming_the_parameter() {
    let api = TestApi::at(start());
    let customer = register(&api, "bad@example.com").await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("/insights/funnel?from=yesterday".into(), 422, "from"),
        ("/insights/funnel?to=2026-13-01T00:00:00Z".into(), 422, "to"),
        (
            "/insights/funnel?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z".into(),
            422,
            "to",
        ),
        (
            "/insights/funnel?from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z".into(),
            422,
            "to",
        ),
        (
            "/insights/funnel?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".into(),
            422,
            "from",
        ),
        ("/insights/funnel?since=2026-11-01T00:00:00Z".into(), 422, "since"),
        ("/insights/attribution".into(), 422, "model"),
        ("/insights/attribution?model=u-shaped".into(), 422, "model"),
        ("/insights/attribution?model=linear&to=soon".into(), 422, "to"),
        (format!("/customers/{customer}/funnel?from=2026-11-02"), 422, "from"),
        ("/campaigns/welcome/stats?window_days=0".into(), 422, "window_days"),
        ("/campaigns/welcome/stats?window_days=seven".into(), 422, "window_days"),
        ("/campaigns/welcome/stats?window_days=91".into(), 422, "window_days"),
    ];
    for (url, status, field) in cases {
        let answer = api.call("GET", &url, None).await;
        assert_problem(&answer, status, field);
    }
    let unknown = api
        .call("GET", "/customers/0190d7a0-0000-7000-8000-0000000000ff/funnel", None)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.content_type(), "application/problem+json");
    assert_eq!(
        api.call("GET", "/campaigns/no-such-campaign/stats", None).await.status,
        404
    );
    assert_eq!(api.call_with("GET", "/insights/funnel", None, &[]).await.status, 401);
}

/// End to end through the APIs of issue 6: activity with UTM parameters
/// (POST /customers/{id}/activity), an order a week later (POST /orders), its
/// attribution and the customer's funnel.
#[tokio::test]
async fn activity_and_an_order_through_the_api_are_attributed_and_in_the_funnel() {
    let api = TestApi::at(start());
    let customer = register(&api, "e2e@example.com").await;
    let visit = json!({ "type": "PageViewed", "url": "/autumn", "utm": { "source": "google", "medium": "cpc", "campaign": "autumn" } });
    let posted = api
        .call(
            "POST",
            &format!("/customers/{customer}/activity"),
            Some(&visit.to_string()),
        )
        .await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    api.runtime.advance(Duration::days(7)).await.expect("advance");
    let view = json!({ "type": "ProductViewed", "product_id": "sku-1", "name": "Beans", "category": "coffee",
                       "utm": { "source": "newsletter", "medium": "email", "campaign": "beans" } });
    let posted = api
        .call(
            "POST",
            &format!("/customers/{customer}/activity"),
            Some(&view.to_string()),
        )
        .await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let order_id = place_order(&api, &customer, 3000).await;

    let a = api.call("GET", &format!("/orders/{order_id}/attribution"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The verification emails of registration are transactional: no touchpoints.
    let touches: Vec<(&str, &str)> = a.body["touchpoints"]
        .as_array()
        .expect("touchpoints")
        .iter()
        .map(|t| {
            (
                t["channel"].as_str().unwrap_or(""),
                t["campaign"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(touches, vec![("cpc", "autumn"), ("email", "beans")]);
    // Time decay: ages 7 d and 0 → weights e^-1 and 1 (0.2689 : 0.7311) →
    // 807 and 2 193 of 3 000 (decision 0066).
    let values: Vec<i64> = a.body["models"]["time-decay"]["touchpoints"]
        .as_array()
        .expect("credits")
        .iter()
        .map(|c| c["value_minor"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(values, vec![807, 2193]);
    assert_eq!(a.body["models"]["first-touch"]["campaigns"][0]["campaign"], "autumn");
    assert_eq!(a.body["models"]["last-touch"]["campaigns"][0]["campaign"], "beans");

    let f = api.call("GET", &format!("/customers/{customer}/funnel"), None).await;
    let stages: Vec<(&str, i64)> = f.body["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap_or(""),
                s["time_in_stage_seconds"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    // Awareness for the week until the order: the product view (at the
    // order's instant) is awareness too, as the seed has it (decision 0066).
    assert_eq!(stages, vec![("awareness", 7 * 86_400), ("purchase", -1)]);
    no_dead_letters(&api).await;
}
