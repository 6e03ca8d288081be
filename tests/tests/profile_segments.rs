//! Activity events, profile metrics and segments through the HTTP API on a
//! virtual clock: orders placed and paid through the order API, logins and
//! product views through the activity route, the 30-day figure falling as
//! the clock moves, and segment membership changing with recency.

use chrono::{DateTime, Duration, Utc};
use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

async fn customer(api: &TestApi, email: &str) -> String {
    let created = api.call("POST", "/customers", Some(&registration(email))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

async fn metrics(api: &TestApi, id: &str) -> Value {
    let got = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["id"], id, "the customer 360 keeps its fields");
    got.body["metrics"].clone()
}

async fn segments_of(api: &TestApi, id: &str) -> Vec<String> {
    let got = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let mut out: Vec<String> = got.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["segment"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// A paid order, shipped and delivered at once: the RFM scores count
/// deliveries (seed 000, decision 0066). Returns the order id.
async fn delivered_order(api: &TestApi, id: &str, total: i64, name: &str, category: &str) -> String {
    let order = api.paid_order(id, total, name, category).await;
    let shipped = json!({ "carrier": "UPS", "tracking_number": "1Z999" }).to_string();
    for (step, body) in [("ship", shipped.as_str()), ("deliver", "{}")] {
        let done = api.call("POST", &format!("/orders/{order}/{step}"), Some(body)).await;
        assert_eq!(done.status, 200, "{step}: {:?}", done.body);
    }
    order
}

async fn advance(api: &TestApi, days: i64) {
    api.runtime
        .advance(Duration::days(days))
        .await
        .expect("advance the virtual clock");
}

#[tokio::test]
async fn activity_is_typed_validated_and_idempotent() {
    let api = TestApi::at(start());
    let id = customer(&api, "browser@example.com").await;
    let url = format!("/customers/{id}/activity");
    let viewed = json!({
        "type": "ProductViewed", "product_id": "sku-1", "name": "Mug", "category": "kitchen",
        "price_minor": 900, "session_id": "s-1", "utm": { "source": "newsletter" },
        "occurred_at": "2026-11-22T09:00:00Z"
    })
    .to_string();
    let stored = api.call("POST", &url, Some(&viewed)).await;
    assert_eq!(stored.status, 201, "{:?}", stored.body);
    assert_eq!(stored.body["stream_id"], format!("activity-{id}"));
    assert_eq!(stored.body["type"], "ProductViewed");
    assert_eq!(stored.body["occurred_at"], "2026-11-22T09:00:00Z");
    assert_eq!(stored.body["data"]["utm"]["source"], "newsletter");

    let before = api.event_count().await;
    let refused = |body: Value, field: &'static str| (body.to_string(), field);
    for (body, field) in [
        refused(json!({ "type": "ProductLiked", "product_id": "sku-1" }), "type"),
        refused(
            json!({ "type": "ReviewRead", "product_id": "sku-1", "stars": 5 }),
            "stars",
        ),
        refused(json!({ "type": "ReviewRead" }), "product_id"),
        refused(
            json!({ "type": "ReviewRead", "product_id": "sku-1", "utm": { "source": "x", "medium": 3 } }),
            "utm.medium",
        ),
        refused(
            json!({ "type": "CustomerLoggedIn", "occurred_at": "2026-11-23T10:00:00Z" }),
            "occurred_at",
        ),
        refused(
            json!({ "type": "CustomerLoggedIn", "occurred_at": "2026-11-10T09:00:00Z" }),
            "occurred_at",
        ),
        refused(
            json!({ "type": "SearchPerformed", "query": "mug", "results_count": -1 }),
            "results_count",
        ),
    ] {
        let answer = api.call("POST", &url, Some(&body)).await;
        assert_eq!(answer.status, 422, "{body}: {:?}", answer.body);
        assert_eq!(answer.content_type(), "application/problem+json");
        assert_eq!(answer.body["field"], field, "{body}");
    }
    assert_eq!(api.call("POST", &url, Some("{not json")).await.status, 400);
    let unknown = api
        .call(
            "POST",
            "/customers/0190d7a0-0000-7000-8000-000000000000/activity",
            Some(&viewed),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(api.event_count().await, before, "nothing written on refusal");

    // The same Idempotency-Key and body: answered again, stored once.
    let login = json!({ "type": "CustomerLoggedIn", "session_id": "s-2" }).to_string();
    let key = [("authorization", "Bearer test-token"), ("idempotency-key", "login-1")];
    let first = api.call_with("POST", &url, Some(&login), &key).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = api.call_with("POST", &url, Some(&login), &key).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(
        again.headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let other = api
        .call_with(
            "POST",
            &url,
            Some(&json!({ "type": "CustomerLoggedIn" }).to_string()),
            &key,
        )
        .await;
    assert_eq!(
        (other.status.as_u16(), other.body["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );
    let logins = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "CustomerLoggedIn")
        .count();
    assert_eq!(logins, 1);
}

#[tokio::test]
async fn windowed_metrics_fall_as_the_clock_moves_and_segments_follow_recency() {
    let api = TestApi::at(start());
    let id = customer(&api, "shopper@example.com").await;
    let fresh = metrics(&api, &id).await;
    assert_eq!(
        (fresh["orders"].as_u64(), fresh["transactions_30d"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(segments_of(&api, &id).await.is_empty());

    delivered_order(&api, &id, 12_000, "Thing", "Kitchen").await;
    // An order placed but never paid is not a transaction.
    let unpaid = json!({
        "customer_id": id,
        "items": [{ "product_id": "sku-2", "name": "Pan", "quantity": 1, "unit_price_minor": 5000 }],
        "tax_minor": 0, "shipping_minor": 0, "total_minor": 5000, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    assert_eq!(api.call("POST", "/orders", Some(&unpaid.to_string())).await.status, 201);
    let login = json!({ "type": "CustomerLoggedIn" }).to_string();
    for _ in 0..2 {
        let l = api
            .call("POST", &format!("/customers/{id}/activity"), Some(&login))
            .await;
        assert_eq!(l.status, 201, "{:?}", l.body);
    }
    advance(&api, 10).await;
    let second = delivered_order(&api, &id, 8_000, "Thing", "kitchen").await;
    let refund = json!({ "refund_type": "partial", "amount_minor": 3_000, "reason": "quality-issue",
        "return": { "reason": "cracked" } })
    .to_string();
    let refunded = api
        .call("POST", &format!("/orders/{second}/refunds"), Some(&refund))
        .await;
    assert_eq!(refunded.status, 200, "{:?}", refunded.body);

    // Day 10: two paid orders (120.00 and 80.00, 30.00 refunded), logins 10 days ago.
    let m = metrics(&api, &id).await;
    assert_eq!(m["transactions_30d"], 2);
    assert_eq!(m["transaction_value_30d_minor"], 17_000);
    assert_eq!(m["orders"], 2);
    assert_eq!(m["total_spent_minor"], 20_000);
    assert_eq!(m["refunded_minor"], 3_000);
    assert_eq!(m["lifetime_value_minor"], 17_000);
    assert_eq!(m["average_order_value_minor"], 8_500);
    assert_eq!(m["order_frequency_per_month"], 2.0);
    assert_eq!(m["logins_7d"], 0, "the logins were 10 days ago");
    assert_eq!(m["last_login_at"], "2026-11-23T09:00:00Z");
    assert_eq!(m["category_affinity"]["kitchen"], 1.0);
    assert_eq!(m["currency"], "EUR");
    assert_eq!(
        segments_of(&api, &id).await,
        ["affinity-kitchen", "buyers", "new-customers"]
    );
    let seg = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    assert_eq!(
        seg.body["rfm"],
        json!({ "recency": 5, "frequency": 2, "monetary": 2, "segment": "new-customers" })
    );

    // Day 31: the first order (day 0) has left the 30-day window.
    advance(&api, 21).await;
    let m = metrics(&api, &id).await;
    assert_eq!(
        (
            m["transactions_30d"].as_u64(),
            m["transaction_value_30d_minor"].as_i64()
        ),
        (Some(1), Some(5_000))
    );
    assert_eq!(m["lifetime_value_minor"], 17_000, "lifetime figures do not decay");
    // Day 40: nothing left in the window.
    advance(&api, 9).await;
    let m = metrics(&api, &id).await;
    assert_eq!(
        (
            m["transactions_30d"].as_u64(),
            m["transaction_value_30d_minor"].as_i64()
        ),
        (Some(0), Some(0))
    );

    // Day 71: 61 days since the last order, recency 3: the daily re-evaluation
    // moves the customer from new-customers to needs-attention, with events.
    advance(&api, 31).await;
    // The first order's cross-sell ran to its end and tagged the customer:
    // the refund was of the second order, and a refund ends only the
    // cross-sell of its own order (decision 0073's addendum).
    assert_eq!(
        segments_of(&api, &id).await,
        ["affinity-kitchen", "buyers", "cross-sell-contacted", "needs-attention"]
    );
    let changes: Vec<(String, String)> = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == format!("segments-{id}"))
        .map(|e| (e.event_type, e.data["segment"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        changes[changes.len() - 2..],
        [
            ("CustomerSegmentRemoved".to_string(), "new-customers".to_string()),
            ("CustomerSegmentAdded".to_string(), "needs-attention".to_string())
        ]
    );
    let health = api.call("GET", "/health", None).await;
    assert_eq!(health.body["status"], "ok", "nothing parked: {:?}", health.body);
}

#[tokio::test]
async fn segments_list_their_rules_counts_and_members_page_by_page() {
    let api = TestApi::at(start());
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = customer(&api, &format!("buyer{n}@example.com")).await;
        delivered_order(&api, &id, 2_000 + n * 1_000, "Thing", "garden").await;
        ids.push(id);
    }
    ids.sort();
    let list = api.call("GET", "/segments", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().expect("items");
    let find = |id: &str| items.iter().find(|s| s["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(find("buyers")["members"], 3);
    assert_eq!(find("new-customers")["members"], 3);
    assert_eq!(find("champions")["members"], 0);
    assert_eq!(find("affinity-garden")["members"], 3);
    assert!(find("high-value")["rule"].as_str().unwrap_or("").contains("1000.00"));

    let page = api.call("GET", "/segments/buyers/members?limit=2", None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let first: Vec<&str> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["customer_id"].as_str())
        .collect();
    assert_eq!(first, [ids[0].as_str(), ids[1].as_str()]);
    let next = page.body["next_after"].as_str().expect("next page").to_string();
    let rest = api
        .call("GET", &format!("/segments/buyers/members?limit=2&after={next}"), None)
        .await;
    assert_eq!(rest.body["items"][0]["customer_id"], ids[2].as_str());
    assert_eq!(rest.body["next_after"], Value::Null);

    assert_eq!(api.call("GET", "/segments/vips/members", None).await.status, 404);
    let bad = api.call("GET", "/segments/buyers/members?limit=0", None).await;
    assert_eq!((bad.status.as_u16(), bad.body["field"].as_str()), (422, Some("limit")));
    let bad = api.call("GET", "/segments/buyers/members?page=2", None).await;
    assert_eq!((bad.status.as_u16(), bad.body["field"].as_str()), (422, Some("page")));
    assert_eq!(
        api.call("GET", "/customers/0190d7a0-0000-7000-8000-000000000000/segments", None)
            .await
            .status,
        404
    );
}

async fn vip_journeys(api: &TestApi) -> usize {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyStarted" && e.data["campaign_id"] == "vip-thanks")
        .count()
}

#[tokio::test]
async fn campaigns_trigger_on_segment_events_and_entry_segment_is_enforced() {
    let api = TestApi::at(start());
    let campaign = json!({
        "id": "vip-thanks",
        "name": "VIP thanks",
        "description": "Thanks a customer who became a champion or high value, if high value.",
        "trigger": { "pattern": {
            "source": ["crm.segments"],
            "detail-type": ["CustomerSegmentAdded"],
            "detail": { "data": { "segment": ["champions", "high-value"] } }
        } },
        "entry": { "segment": "high-value" },
        "steps": [{ "id": "tag", "type": "update_segment", "segment": "vip-thanked", "action": "add" }]
    });
    let put = api
        .call("PUT", "/campaigns/vip-thanks", Some(&campaign.to_string()))
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);
    let id = customer(&api, "vip@example.com").await;
    // Five orders of 200.00: R5 F4 M5, a champion, but not yet high value
    // (more than five orders needed): the trigger matches, entry refuses.
    for _ in 0..5 {
        delivered_order(&api, &id, 20_000, "Thing", "books").await;
    }
    assert!(segments_of(&api, &id).await.contains(&"champions".to_string()));
    assert_eq!(vip_journeys(&api).await, 0, "not in high-value: no journey");
    // The sixth makes them high value: one journey.
    delivered_order(&api, &id, 20_000, "Thing", "books").await;
    assert!(segments_of(&api, &id).await.contains(&"high-value".to_string()));
    assert_eq!(vip_journeys(&api).await, 1);
}
