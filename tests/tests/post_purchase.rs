//! The shipped post-purchase campaigns end to end through the local runtime
//! on a virtual clock (issue 6, "Done when"): an order placed, paid, shipped
//! and delivered through the API; each campaign's message requested at the
//! time its definition says (campaigns/*.yaml) and sent to the local mail
//! sink, or suppressed for a stated reason. And the payment recovery
//! campaign: its email on a final payment failure, its goal met by a later
//! payment (no final notice).

use chrono::{DateTime, Duration, Timelike, Utc};
use crm_core::event::EventEnvelope;
use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

/// Monday 2026-11-23 15:00 UTC (10:00 in New York, the customer's time zone).
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

async fn advance(api: &TestApi, by: Duration) -> DateTime<Utc> {
    api.runtime.advance(by).await.expect("advance the virtual clock")
}

async fn post(api: &TestApi, path: &str, body: Value) -> Value {
    let a = api.call("POST", path, Some(&body.to_string())).await;
    assert!(a.status.is_success(), "POST {path}: {} {:?}", a.status, a.body);
    a.body
}

/// A message a campaign requested, and what became of it.
#[derive(Debug)]
struct Requested {
    campaign: String,
    template: String,
    channel: String,
    at: DateTime<Utc>,
    outcome: String,
}

/// Every message requested so far, in order, with its outcome: `sent`,
/// `suppressed: <reason>`, `deferred` or `pending`.
async fn requested(api: &TestApi) -> Vec<Requested> {
    let events = api.all_events().await;
    let outcome = |id: &Value| -> String {
        let of = |t: &str| -> Option<&EventEnvelope> {
            events
                .iter()
                .rev()
                .find(|e| e.event_type == t && &e.data["message_id"] == id)
        };
        if of("MessageSent").is_some() {
            "sent".into()
        } else if let Some(s) = of("MessageSuppressed") {
            format!("suppressed: {}", s.data["reason"].as_str().unwrap_or(""))
        } else if of("MessageDeferred").is_some() {
            "deferred".into()
        } else {
            "pending".into()
        }
    };
    events
        .iter()
        .filter(|e| e.event_type == "MessageRequested")
        .map(|e| Requested {
            campaign: e.data["campaign_id"].as_str().unwrap_or("").into(),
            template: e.data["template"].as_str().unwrap_or("").into(),
            channel: e.data["channel"].as_str().unwrap_or("").into(),
            at: e.occurred_at,
            outcome: outcome(&e.data["message_id"]),
        })
        .collect()
}

/// The post-purchase messages requested so far: (template, channel, outcome).
async fn post_purchase(api: &TestApi) -> Vec<(String, String, String)> {
    requested(api)
        .await
        .into_iter()
        .filter(|r| !matches!(r.campaign.as_str(), "email-verification" | "welcome"))
        .map(|r| (r.template, r.channel, r.outcome))
        .collect()
}

fn row(template: &str, channel: &str, outcome: &str) -> (String, String, String) {
    (template.into(), channel.into(), outcome.into())
}

async fn at_of(api: &TestApi, template: &str) -> DateTime<Utc> {
    requested(api)
        .await
        .into_iter()
        .find(|r| r.template == template)
        .map(|r| r.at)
        .unwrap_or_else(|| panic!("{template} requested"))
}

fn order(customer_id: &str) -> Value {
    json!({
        "customer_id": customer_id,
        "items": [
            { "product_id": "beans", "name": "Espresso beans, 1 kg", "category": "consumables", "quantity": 2, "unit_price_minor": 2400 },
            { "product_id": "jug", "name": "Milk jug", "category": "accessories", "quantity": 1, "unit_price_minor": 1900 }
        ],
        "tax_minor": 1273,
        "shipping_minor": 495,
        "total_minor": 8468,
        "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "New York", "postal_code": "10001", "country": "US" }
    })
}

fn paid(status: &str) -> Value {
    json!({ "payment_id": "pay-1", "status": status, "method": "credit-card", "amount_minor": 8468,
        "currency": "EUR", "provider": "stripe", "transaction_id": "tx-1" })
}

#[tokio::test]
async fn the_post_purchase_campaigns_run_end_to_end_on_the_virtual_clock() {
    let api = TestApi::at(start());
    let customer = post(
        &api,
        "/customers",
        serde_json::from_str(&registration("ada@example.com")).expect("json"),
    )
    .await;
    let customer_id = customer["id"].as_str().expect("id").to_string();
    post(
        &api,
        &format!("/customers/{customer_id}/push-devices"),
        json!({ "platform": "fcm", "token": "dGVzdC1kZXZpY2UtdG9rZW4" }),
    )
    .await;

    // Placed and paid: the confirmation (transactional) goes at once.
    let placed = post(&api, "/orders", order(&customer_id)).await;
    let id = placed["id"].as_str().expect("order id").to_string();
    post(&api, &format!("/orders/{id}/payments"), paid("initiated")).await;
    post(&api, &format!("/orders/{id}/payments"), paid("succeeded")).await;
    assert_eq!(post_purchase(&api).await, [row("order-confirmation", "email", "sent")]);
    let mail = api.runtime.mail.list().await.expect("mail");
    let confirmation = mail
        .iter()
        .find(|m| m.subject.contains(&id) && m.subject.contains("confirmed"))
        .expect("the confirmation in the mail sink");
    let text = confirmation.email().expect("an email").text;
    assert!(text.contains("€84.68"), "{text}");
    assert!(text.contains("confirmation number CRM-"), "{text}");
    // Why it was sent: the chain back to the order's events.
    let message_id = confirmation.message_id.clone();
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    let chain = why.body.to_string();
    for link in [
        "MessageRequested",
        "JourneyStarted",
        "OrderConfirmed",
        "PaymentSucceeded",
        "OrderPlaced",
    ] {
        assert!(chain.contains(link), "{link} in {chain}");
    }

    // Shipped a day later: the shipping email and push, both transactional.
    advance(&api, Duration::days(1)).await;
    post(
        &api,
        &format!("/orders/{id}/ship"),
        json!({ "carrier": "UPS", "tracking_number": "1Z999", "tracking_url": "https://track.example/1Z999" }),
    )
    .await;
    assert_eq!(
        post_purchase(&api).await[1..],
        [
            row("order-shipped", "email", "sent"),
            row("order-shipped-push", "push", "sent")
        ]
    );
    let shipped_mail = api.runtime.mail.list().await.expect("mail");
    let push = shipped_mail
        .iter()
        .find(|m| m.channel == "push")
        .expect("the push in the sink");
    assert!(push.body.contains("UPS"), "{}", push.body);

    // Delivered two days later, at 16:30 UTC (11:30 in New York).
    let delivered_at = advance(&api, Duration::days(2) + Duration::minutes(90)).await;
    post(&api, &format!("/orders/{id}/deliver"), json!({})).await;
    assert_eq!(post_purchase(&api).await.len(), 3, "nothing at delivery itself");

    // Review request: three days after delivery, not a minute before.
    advance(&api, Duration::days(3) - Duration::minutes(1)).await;
    assert_eq!(post_purchase(&api).await.len(), 3);
    advance(&api, Duration::minutes(1)).await;
    assert_eq!(post_purchase(&api).await[3], row("review-request", "email", "sent"));
    assert_eq!(at_of(&api, "review-request").await, delivered_at + Duration::days(3));

    // Cross-sell: seven days after delivery, then the next 10:00 in the
    // customer's time zone: 15:00 UTC the day after (22.5 hours on).
    advance(&api, Duration::days(4) + Duration::hours(22) + Duration::minutes(29)).await;
    assert_eq!(post_purchase(&api).await.len(), 4);
    advance(&api, Duration::minutes(1)).await;
    let all = post_purchase(&api).await;
    assert_eq!(all[4], row("cross-sell-recommendations", "email", "sent"), "{all:?}");
    let cross_sell = at_of(&api, "cross-sell-recommendations").await;
    assert_eq!(
        cross_sell,
        delivered_at + Duration::days(7) + Duration::minutes(22 * 60 + 30)
    );
    assert_eq!(
        (cross_sell.hour(), cross_sell.minute()),
        (15, 0),
        "10:00 in New York is 15:00 UTC"
    );
    let segments = api.all_events().await;
    assert!(segments
        .iter()
        .any(|e| e.event_type == "SegmentMembershipRequested" && e.data["segment"] == "cross-sell-contacted"));

    // Replenishment: thirty days after delivering consumables, the reorder reminder.
    advance(
        &api,
        Duration::days(30) - Duration::days(7) - Duration::minutes(22 * 60 + 30) - Duration::minutes(1),
    )
    .await;
    assert_eq!(post_purchase(&api).await.len(), 5);
    advance(&api, Duration::minutes(1)).await;
    assert_eq!(post_purchase(&api).await[5], row("reorder-reminder", "email", "sent"));
    assert_eq!(at_of(&api, "reorder-reminder").await, delivered_at + Duration::days(30));
    let reminder = api
        .runtime
        .mail
        .list()
        .await
        .expect("mail")
        .into_iter()
        .find(|m| m.email().is_some_and(|e| e.text.contains("/reorder/")))
        .expect("the reorder reminder in the sink");
    assert!(reminder.email().expect("email").text.contains("Espresso beans"));

    // Nothing else, however long we wait; nothing parked.
    advance(&api, Duration::days(60)).await;
    assert_eq!(post_purchase(&api).await.len(), 6);
    let dead = api.runtime.bus.dead_letters().list().await.expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
}

#[tokio::test]
async fn a_failed_payment_starts_the_recovery_campaign_and_a_later_payment_ends_it() {
    let api = TestApi::at(start());
    let customer = post(
        &api,
        "/customers",
        serde_json::from_str(&registration("ada@example.com")).expect("json"),
    )
    .await;
    let customer_id = customer["id"].as_str().expect("id").to_string();
    let placed = post(&api, "/orders", order(&customer_id)).await;
    let id = placed["id"].as_str().expect("order id").to_string();
    post(&api, &format!("/orders/{id}/payments"), paid("initiated")).await;
    let mut failed = paid("failed");
    failed["error_code"] = json!("card_declined");
    failed["error_message"] = json!("Your card was declined.");
    failed["retryable"] = json!(false);
    failed.as_object_mut().map(|o| o.remove("transaction_id"));
    let order = post(&api, &format!("/orders/{id}/payments"), failed).await;
    assert_eq!(order["status"], "payment-failed");
    assert_eq!(post_purchase(&api).await, [row("payment-failed", "email", "sent")]);
    let mail = api.runtime.mail.list().await.expect("mail");
    let text = mail
        .iter()
        .find(|m| m.subject.contains("did not go through"))
        .expect("the payment-failed email")
        .email()
        .expect("an email")
        .text;
    assert!(text.contains("€84.68"), "{text}");

    // Paid with another card two hours later: the goal ends the journey, no final notice.
    advance(&api, Duration::hours(2)).await;
    let mut second = paid("initiated");
    second["payment_id"] = json!("pay-2");
    post(&api, &format!("/orders/{id}/payments"), second.clone()).await;
    second["status"] = json!("succeeded");
    let confirmed = post(&api, &format!("/orders/{id}/payments"), second).await;
    assert_eq!(confirmed["status"], "confirmed");
    advance(&api, Duration::days(2)).await;
    assert_eq!(
        post_purchase(&api).await,
        [
            row("payment-failed", "email", "sent"),
            row("order-confirmation", "email", "sent")
        ]
    );
    let journeys = api.all_events().await;
    assert!(
        journeys
            .iter()
            .any(|e| e.event_type == "JourneyExited" && e.data["reason"] == "goal"),
        "{:?}",
        journeys
            .iter()
            .filter(|e| e.event_type.starts_with("Journey"))
            .map(|e| (&e.event_type, &e.data))
            .collect::<Vec<_>>()
    );
}

/// A registered customer's order, paid and shipped (not delivered): its id.
async fn shipped_order(api: &TestApi) -> String {
    let customer = post(
        api,
        "/customers",
        serde_json::from_str(&registration("ada@example.com")).expect("json"),
    )
    .await;
    let customer_id = customer["id"].as_str().expect("id").to_string();
    let placed = post(api, "/orders", order(&customer_id)).await;
    let id = placed["id"].as_str().expect("order id").to_string();
    post(api, &format!("/orders/{id}/payments"), paid("succeeded")).await;
    post(
        api,
        &format!("/orders/{id}/ship"),
        json!({ "carrier": "UPS", "tracking_number": "1Z999" }),
    )
    .await;
    id
}

/// Decision 0073: a review submitted after delivery, before the review
/// request's send, records `ReviewSubmitted` on the order and ends that
/// journey: no review request goes out. The same review again changes
/// nothing; another review of the same product is 409 `product_id`.
#[tokio::test]
async fn a_review_after_delivery_ends_the_review_request_journey_and_nothing_is_asked() {
    let api = TestApi::at(start());
    let id = shipped_order(&api).await;
    advance(&api, Duration::days(2)).await;
    post(&api, &format!("/orders/{id}/deliver"), json!({})).await;
    let running = |events: &[EventEnvelope]| {
        events
            .iter()
            .filter(|e| e.event_type == "JourneyStarted" && e.data["campaign_id"] == "review-request")
            .count()
    };
    assert_eq!(running(&api.all_events().await), 1, "the review request waits");

    // A day after delivery, the customer reviews the beans.
    advance(&api, Duration::days(1)).await;
    let review = json!({ "product_id": "beans", "rating": 5, "review": "Lovely beans" });
    let reviewed = post(&api, &format!("/orders/{id}/reviews"), review.clone()).await;
    assert_eq!(reviewed["reviews"][0]["product_id"], "beans", "{reviewed}");
    assert_eq!(reviewed["reviews"][0]["rating"], 5, "{reviewed}");
    let events = api.all_events().await;
    let submitted: Vec<_> = events.iter().filter(|e| e.event_type == "ReviewSubmitted").collect();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].data["order_id"], id.as_str());
    assert!(
        events.iter().any(|e| e.event_type == "JourneyExited"
            && e.data["reason"] == "exit-event"
            && e.data["rule"] == "review-submitted"),
        "the review request journey ended on the review"
    );

    // The same review again: nothing new. Another one of the beans: 409.
    let again = api
        .call("POST", &format!("/orders/{id}/reviews"), Some(&review.to_string()))
        .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let other = json!({ "product_id": "beans", "rating": 1 });
    let conflict = api
        .call("POST", &format!("/orders/{id}/reviews"), Some(&other.to_string()))
        .await;
    assert_eq!(conflict.status, 409, "{:?}", conflict.body);
    assert_eq!(conflict.body["field"], "product_id", "{:?}", conflict.body);
    let count = |events: &[EventEnvelope]| events.iter().filter(|e| e.event_type == "ReviewSubmitted").count();
    assert_eq!(count(&api.all_events().await), 1);

    // Past the third day after delivery, and long after: no review request.
    advance(&api, Duration::days(10)).await;
    assert!(
        !requested(&api).await.iter().any(|r| r.template == "review-request"),
        "{:?}",
        requested(&api).await
    );
}

/// Decision 0073: an order not yet delivered cannot be reviewed: 409
/// `status`, and nothing is written.
#[tokio::test]
async fn a_review_before_delivery_is_refused_and_nothing_is_written() {
    let api = TestApi::at(start());
    let id = shipped_order(&api).await;
    let before = api.all_events().await.len();
    let review = json!({ "product_id": "beans", "rating": 4, "review": "Not here yet" });
    let refused = api
        .call("POST", &format!("/orders/{id}/reviews"), Some(&review.to_string()))
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(refused.body["field"], "status", "{:?}", refused.body);
    let events = api.all_events().await;
    assert_eq!(events.len(), before, "nothing written");
    assert!(!events.iter().any(|e| e.event_type == "ReviewSubmitted"));

    // Delivered, a rating outside 1 to 5 or a product not on the order is 422.
    post(&api, &format!("/orders/{id}/deliver"), json!({})).await;
    for (body, field) in [
        (json!({ "product_id": "beans", "rating": 6 }), "rating"),
        (json!({ "product_id": "kettle", "rating": 4 }), "product_id"),
    ] {
        let a = api
            .call("POST", &format!("/orders/{id}/reviews"), Some(&body.to_string()))
            .await;
        assert_eq!(a.status, 422, "{body}: {:?}", a.body);
        assert_eq!(a.body["field"], field, "{:?}", a.body);
    }
}
