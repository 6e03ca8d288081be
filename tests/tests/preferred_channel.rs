//! A send step with `channel: preferred` (issue 19 item 6, decision 0076),
//! end to end through the API on a virtual clock: a campaign reminds of an
//! abandoned checkout on the customer's preferred channel, falling back to
//! email; the explain API says which channel was taken and why not the
//! others; with no channel that qualifies the message is refused.

use chrono::{DateTime, Utc};
use crm_core::event::EventEnvelope;
use crm_tests::TestApi;
use serde_json::{json, Value};

/// 10:00 in New York (the registration's time zone): no quiet hours at the send.
fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

const CAMPAIGN: &str = "checkout-preferred";

/// The shipped checkout abandonment, its send on the channel the customer
/// prefers, email or SMS, each with its own template.
fn campaign() -> Value {
    json!({
        "id": CAMPAIGN,
        "name": "Checkout reminder on the preferred channel",
        "kind": "lifecycle",
        "trigger": { "pattern": { "source": ["crm.commerce"], "detail-type": ["CheckoutAbandoned"] } },
        "entry": { "reentry": "every_time", "dedupe_key": "event.detail.data.cart_id" },
        "steps": [{
            "id": "remind", "type": "send", "channel": "preferred", "fallback": ["email", "sms"],
            "template": "checkout-abandonment", "templates": { "sms": "checkout-abandonment-sms" },
            "category": "marketing", "purpose": "marketing"
        }]
    })
}

async fn setup() -> TestApi {
    let api = TestApi::at(start());
    let put = api
        .call("PUT", &format!("/campaigns/{CAMPAIGN}"), Some(&campaign().to_string()))
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);
    // Only this campaign's reminder, not the shipped one's.
    let paused = api.call("POST", "/campaigns/checkout-abandonment/pause", None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    api
}

/// A registered customer with a verified email (marketing email consent
/// from the registration), who prefers SMS and wants SMS promotions;
/// with `sms_consent` they also consented to marketing SMS.
async fn customer_preferring_sms(api: &TestApi, email: &str, sms_consent: bool) -> String {
    let id = api.register(email).await;
    let events = api
        .call("GET", &format!("/customers/{id}/events?limit=500"), None)
        .await;
    let token = events.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .find(|e| e["type"] == "EmailVerificationRequested")
        .and_then(|e| e["data"]["token"].as_str())
        .expect("a verification was requested")
        .to_string();
    let verified = api
        .call(
            "POST",
            &format!("/customers/{id}/email/verify"),
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    if sms_consent {
        let grant = json!({ "purpose": "marketing", "channel": "sms", "method": "preference-centre" }).to_string();
        let granted = api
            .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
            .await;
        assert_eq!(granted.status, 201, "{:?}", granted.body);
    }
    let prefs = json!({ "email_frequency": "weekly", "categories": [], "timezone": "America/New_York",
        "sms_for_promotions": true, "push_categories": [], "preferred_channel": "sms" });
    let saved = api
        .call("PUT", &format!("/customers/{id}/preferences"), Some(&prefs.to_string()))
        .await;
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    assert_eq!(
        saved.body["preferences"]["preferred_channel"], "sms",
        "{:?}",
        saved.body
    );
    id
}

/// Starts a checkout of the customer's cart and lets it be abandoned (an hour).
async fn abandon_checkout(api: &TestApi, customer_id: &str) {
    let cart_id = api.cart_with_lamps(customer_id, 2, 2000).await;
    let checkout = api.call("POST", &format!("/carts/{cart_id}/checkout"), None).await;
    assert_eq!(checkout.status, 200, "{:?}", checkout.body);
    api.advance_minutes(61).await;
}

/// The campaign's one message request for the customer.
async fn request_of(api: &TestApi, customer_id: &str) -> EventEnvelope {
    let mut requests: Vec<EventEnvelope> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["campaign_id"] == CAMPAIGN && e.data["customer_id"] == customer_id)
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests.remove(0)
}

/// The events of a message's stream, by type.
async fn on_message(api: &TestApi, message_id: &str, event_type: &str) -> Vec<EventEnvelope> {
    api.events_of_type(event_type)
        .await
        .into_iter()
        .filter(|e| e.data["message_id"] == message_id)
        .collect()
}

async fn explain(api: &TestApi, message_id: &str) -> Value {
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    why.body["channel_choice"].clone()
}

#[tokio::test]
async fn a_customer_who_prefers_sms_gets_the_sms_and_explain_says_why() {
    let api = setup().await;
    let customer_id = customer_preferring_sms(&api, "prefers-sms@example.com", true).await;
    abandon_checkout(&api, &customer_id).await;

    let request = request_of(&api, &customer_id).await;
    let message_id = request.data["message_id"].as_str().expect("message id");
    assert_eq!(
        request.data["candidates"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        request.data
    );
    let sent = on_message(&api, message_id, "MessageSent").await;
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0].data["channel"], "sms");
    let claimed = on_message(&api, message_id, "MessageClaimed").await;
    assert_eq!(
        claimed[0].data["template"], "checkout-abandonment-sms",
        "the SMS's own template"
    );

    let choice = explain(&api, message_id).await;
    assert_eq!(choice["chosen"], "sms", "{choice:?}");
    assert_eq!(choice["preferred"], "sms");
    let considered = choice["considered"].as_array().expect("considered");
    assert_eq!(considered[0]["channel"], "sms");
    assert_eq!(considered[0]["taken"], true);
    assert!(
        considered[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("preferred channel")),
        "{considered:?}"
    );
    assert_eq!(considered[1]["channel"], "email");
    assert_eq!(considered[1]["taken"], false);
}

#[tokio::test]
async fn without_sms_consent_the_message_falls_back_to_email_and_explain_says_why() {
    let api = setup().await;
    let customer_id = customer_preferring_sms(&api, "no-sms-consent@example.com", false).await;
    abandon_checkout(&api, &customer_id).await;

    let request = request_of(&api, &customer_id).await;
    let message_id = request.data["message_id"].as_str().expect("message id");
    let sent = on_message(&api, message_id, "MessageSent").await;
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0].data["channel"], "email");
    let claimed = on_message(&api, message_id, "MessageClaimed").await;
    assert_eq!(claimed[0].data["template"], "checkout-abandonment");

    let choice = explain(&api, message_id).await;
    assert_eq!(choice["chosen"], "email", "{choice:?}");
    let considered = choice["considered"].as_array().expect("considered");
    assert_eq!(considered[0]["channel"], "sms");
    assert_eq!(considered[0]["taken"], false);
    assert_eq!(
        considered[0]["reason"],
        "passed over: no marketing consent for sms in force"
    );
    assert_eq!(considered[1]["channel"], "email");
    assert_eq!(considered[1]["taken"], true);
}

#[tokio::test]
async fn with_no_channel_that_qualifies_the_message_is_refused_with_the_reasons() {
    let api = setup().await;
    let customer_id = customer_preferring_sms(&api, "no-channel@example.com", false).await;
    let revoked = api
        .call(
            "DELETE",
            &format!("/customers/{customer_id}/consents/marketing/email"),
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{:?}", revoked.body);
    abandon_checkout(&api, &customer_id).await;

    let request = request_of(&api, &customer_id).await;
    let message_id = request.data["message_id"].as_str().expect("message id");
    assert!(on_message(&api, message_id, "MessageSent").await.is_empty());
    let refused = on_message(&api, message_id, "MessageSuppressed").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].data["reason"], "no-channel");
    let detail = refused[0].data["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("sms: no marketing consent for sms in force")
            && detail.contains("email: no marketing consent for email in force"),
        "{detail}"
    );
    let choice = explain(&api, message_id).await;
    assert_eq!(choice["chosen"], Value::Null, "{choice:?}");
}
