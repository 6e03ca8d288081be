//! Ingestion trust levels (issue 16 item 5, decision 0042), end to end over
//! the local runtime: what a `client` write key (a browser's, public) cannot
//! do to a customer, what a `server` key (the shop's backend) still does,
//! and a phone change revoking SMS consent.

use base64::Engine;
use crm_tests::{Answer, TestApi};
use serde_json::{json, Value};

const VICTIM: &str = "victim.trust-test@shop.example";
const VICTIM_USER: &str = "shop-user-victim";

fn start() -> chrono::DateTime<chrono::Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

/// Sends Segment messages through the runtime's client source (`local-web`).
async fn as_client(api: &TestApi, call: &str, body: &Value) -> Answer {
    let user = format!("{}:", api.runtime.local_client_write_key);
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user));
    api.call_with(
        "POST",
        &format!("/v1/{call}"),
        Some(&body.to_string()),
        &[("authorization", &auth)],
    )
    .await
}

/// The victim: registered with a phone and SMS consent, and linked by the
/// shop's backend to its user id and device.
async fn victim(api: &TestApi) -> String {
    let mut body: Value = serde_json::from_str(&crm_tests::registration(VICTIM)).expect("json");
    body["marketing_consent"]["sms"] = json!(true);
    let registered = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let id = registered.body["id"].as_str().expect("id").to_string();
    let linked = api
        .segment(
            "identify",
            &json!({ "messageId": "victim-link", "anonymousId": "victim-device", "userId": VICTIM_USER,
                "traits": { "email": VICTIM } }),
        )
        .await;
    assert_eq!(linked.status, 200, "{:?}", linked.body);
    id
}

/// What an attacker must not change: the profile, the consents, the user
/// id links, the mail sent.
#[derive(Debug, PartialEq)]
struct Observed {
    first_name: Value,
    last_name: Value,
    phone: Value,
    email: Value,
    consents: Value,
    registrations: usize,
    user_links: usize,
    mail: Vec<(String, String)>,
}

async fn observe(api: &TestApi, id: &str) -> Observed {
    let profile = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(profile.status, 200, "{:?}", profile.body);
    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(consents.status, 200, "{:?}", consents.body);
    let mail = api.runtime.mail.list().await.expect("mail");
    Observed {
        first_name: profile.body["first_name"].clone(),
        last_name: profile.body["last_name"].clone(),
        phone: profile.body["phone"].clone(),
        email: profile.body["email"].clone(),
        consents: consents.body["current"].clone(),
        registrations: api.events_of_type("CustomerRegistered").await.len(),
        user_links: api.events_of_type("UserIdLinked").await.len(),
        mail: mail.into_iter().map(|m| (m.recipient, m.subject)).collect(),
    }
}

fn sms_active(consents: &Value) -> bool {
    consents
        .as_array()
        .expect("current consents")
        .iter()
        .any(|c| c["channel"] == "sms" && c["active"] == true)
}

#[tokio::test]
async fn a_client_key_cannot_take_over_register_or_order_and_sends_nothing() {
    let api = TestApi::at(start());
    let id = victim(&api).await;
    let before = observe(&api, &id).await;
    assert!(
        sms_active(&before.consents),
        "the victim's SMS consent: {:?}",
        before.consents
    );
    assert_eq!((before.registrations, before.user_links), (1, 1));
    assert_eq!(before.first_name, "Grace");

    // The victim's address under the attacker's user id, with new names and phone.
    let hostile = json!({ "messageId": "h-1", "anonymousId": "attacker-device", "userId": "attacker-1",
        "traits": { "email": VICTIM.to_uppercase(), "firstName": "Mallory", "lastName": "Attacker",
            "phone": "+447700900999" } });
    let answer = as_client(&api, "identify", &hostile).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // The victim's own user id, with new traits.
    let hostile = json!({ "messageId": "h-2", "anonymousId": "attacker-device-2", "userId": VICTIM_USER,
        "traits": { "email": "mallory@attacker.example", "firstName": "Mallory", "phone": "+447700900999" } });
    let answer = as_client(&api, "identify", &hostile).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // Both again in a batch.
    let batch = json!({ "batch": [
        { "type": "identify", "messageId": "h-3", "anonymousId": "attacker-device", "userId": "attacker-3",
          "traits": { "email": VICTIM, "lastName": "Batch" } },
        { "type": "identify", "messageId": "h-4", "anonymousId": "attacker-device", "userId": VICTIM_USER,
          "traits": { "phone": "+447700900998" } } ] });
    let answer = as_client(&api, "batch", &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], 2, "{:?}", answer.body);

    // Unknown addresses: no customer, no verification mail.
    for (n, email) in ["brand-new.trust-test@shop.example", "second.trust-test@shop.example"]
        .iter()
        .enumerate()
    {
        let unknown = json!({ "messageId": format!("u-{n}"), "anonymousId": "attacker-device",
            "userId": format!("new-user-{n}"), "traits": { "email": email, "firstName": "Click <a href='https://evil.example'>here</a>" } });
        let answer = as_client(&api, "identify", &unknown).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }

    // Order Completed for the victim: activity, no order.
    let order = json!({ "messageId": "o-1", "userId": VICTIM_USER, "event": "Order Completed",
        "properties": { "order_id": "client-order-1", "currency": "EUR",
            "shipping_address": { "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE" },
            "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 40 }] } });
    let answer = as_client(&api, "track", &order).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    let after = observe(&api, &id).await;
    assert_eq!(
        after, before,
        "nothing of the victim changed, no customer or link was made, no mail sent"
    );
    assert!(api.events_of_type("OrderPlaced").await.is_empty(), "no order placed");
    let kept = api.events_of_type("CustomEvent").await;
    assert!(
        kept.iter().any(|e| e.data["event"] == "Order Completed"),
        "the client's Order Completed is recorded as activity"
    );
    let traits: Vec<_> = kept.iter().filter(|e| e.data["event"] == "Identify").collect();
    assert_eq!(traits.len(), 6, "each identify's traits are kept");
    assert!(traits.iter().all(|e| e.data["properties"]["verified"] == false));
}

#[tokio::test]
async fn a_server_key_still_registers_links_and_updates_and_a_new_phone_revokes_sms_consent() {
    let api = TestApi::at(start());
    let id = victim(&api).await;
    let before = observe(&api, &id).await;
    assert!(sms_active(&before.consents));

    // An unknown address through the server key: a customer, and their verification mail.
    let new_email = "server-new.trust-test@shop.example";
    let answer = api
        .segment(
            "identify",
            &json!({ "messageId": "s-1", "userId": "server-user-1",
                "traits": { "email": new_email, "firstName": "Nora", "lastName": "New" } }),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter().any(|m| m.recipient == new_email),
        "verification mail: {:?}",
        mail.iter().map(|m| &m.recipient).collect::<Vec<_>>()
    );

    // The victim's address with a new name and phone: linked and updated, as before.
    let answer = api
        .segment(
            "identify",
            &json!({ "messageId": "s-2", "userId": "server-user-2",
                "traits": { "email": VICTIM, "firstName": "Gracie", "phone": "+447700900123" } }),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let after = observe(&api, &id).await;
    assert_eq!(
        (after.first_name.clone(), after.phone.clone()),
        (json!("Gracie"), json!("+447700900123"))
    );
    assert_eq!(after.user_links, 3);
    assert!(
        !sms_active(&after.consents),
        "SMS consent was for the old number: {:?}",
        after.consents
    );
    let revoked = api.events_of_type("ConsentRevoked").await;
    assert!(revoked
        .iter()
        .any(|e| e.customer_id.as_deref() == Some(id.as_str()) && e.data["reason"] == "phone-changed"));

    // An order through the server key is placed.
    let order = json!({ "messageId": "s-3", "userId": VICTIM_USER, "event": "Order Completed",
        "properties": { "order_id": "server-order-1", "currency": "EUR",
            "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 40 }],
            "shipping_address": { "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE" } } });
    let answer = api.segment("track", &order).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(api.events_of_type("OrderPlaced").await.len(), 1);
}

#[tokio::test]
async fn a_client_linked_visitor_follows_when_the_server_names_the_customer() {
    let api = TestApi::at(start());
    let page = json!({ "messageId": "p-1", "anonymousId": "later-device", "name": "Home",
        "properties": { "url": "https://shop.example/" } });
    assert_eq!(as_client(&api, "page", &page).await.status, 200);
    let identify = json!({ "messageId": "i-1", "anonymousId": "later-device", "userId": "later-user",
        "traits": { "email": "later.trust-test@shop.example" } });
    assert_eq!(as_client(&api, "identify", &identify).await.status, 200);
    assert!(api.events_of_type("CustomerRegistered").await.is_empty());
    assert!(api.events_of_type("CustomersMerged").await.is_empty());

    let answer = api
        .segment(
            "identify",
            &json!({ "messageId": "s-1", "userId": "later-user",
                "traits": { "email": "later.trust-test@shop.example", "firstName": "Lia", "lastName": "Later" } }),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let registered = api.events_of_type("CustomerRegistered").await;
    assert_eq!(registered.len(), 1);
    let customer = registered[0].customer_id.clone().expect("customer");
    let merged = api.events_of_type("CustomersMerged").await;
    assert_eq!(merged.len(), 1, "the client's anonymous activity follows");
    assert_eq!(merged[0].customer_id.as_deref(), Some(customer.as_str()));
}
