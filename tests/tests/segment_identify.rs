//! Identify needs only an identifier (issue 17 item 2, decision 0051),
//! through the HTTP API and the local runtime: the most common server
//! identify (`userId` and an email, no names) makes a customer whose
//! emails greet them without a name, and a user id identified without an
//! email keeps its activity until the email arrives.

use chrono::{DateTime, Utc};
use crm_tests::TestApi;
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-12-01T10:00:00Z")
}

/// The customer registered with `email`, by `GET /customers?email=`.
async fn customer_by_email(api: &TestApi, email: &str) -> Value {
    let found = api.call("GET", &format!("/customers?email={email}"), None).await;
    assert_eq!(found.status, 200, "{:?}", found.body);
    let items = found.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{email}: {:?}", found.body);
    items[0].clone()
}

/// The activity types of the customer's timeline (their own and merged profiles').
async fn activity_types(api: &TestApi, customer: &str) -> Vec<String> {
    let timeline = api.call("GET", &format!("/customers/{customer}/timeline"), None).await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    timeline.body["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn an_identify_with_only_an_email_makes_a_customer_greeted_without_a_name() {
    let api = TestApi::at(start());
    let identify =
        json!({ "messageId": "i-1", "userId": "shop-user-9", "traits": { "email": "only.email@shop.example" } });
    let answer = api.segment("identify", &identify).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let customer = customer_by_email(&api, "only.email@shop.example").await;
    let id = customer["id"].as_str().expect("id").to_string();
    assert_eq!(
        (&customer["first_name"], &customer["last_name"]),
        (&json!(""), &json!(""))
    );

    // Later calls with the user id are the customer's.
    let searched = json!({ "messageId": "t-1", "userId": "shop-user-9", "event": "Products Searched",
        "properties": { "query": "lamp" } });
    let answer = api.segment("track", &searched).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(activity_types(&api, &id).await.contains(&"SearchPerformed".to_string()));

    // The verification email reaches them and reads well without a name.
    api.advance_minutes(1).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let verification = mail
        .iter()
        .find(|m| m.subject.contains("Confirm your email"))
        .and_then(|m| m.email())
        .unwrap_or_else(|| panic!("the verification email: {mail:?}"));
    assert!(verification.text.contains("Hi there,"), "{}", verification.text);
    assert!(!verification.html.contains("Hi ,"), "{}", verification.html);

    // Once they consent and verify, the welcome email greets them too.
    let consent = json!({ "purpose": "marketing", "channel": "email", "method": "preference-centre" });
    let answer = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&consent.to_string()))
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let events = api
        .call("GET", &format!("/customers/{id}/events?limit=500"), None)
        .await;
    let token = events.body["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|e| e["type"] == "EmailVerificationRequested")
                .and_then(|e| e["data"]["token"].as_str())
        })
        .expect("a verification token")
        .to_string();
    let verify = json!({ "token": token });
    let answer = api
        .call(
            "POST",
            &format!("/customers/{id}/email/verify"),
            Some(&verify.to_string()),
        )
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    api.advance_minutes(1).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert!(subjects.contains(&"Welcome!"), "{subjects:?}");
}

#[tokio::test]
async fn a_user_id_identified_without_an_email_keeps_its_activity_until_the_email_arrives() {
    let api = TestApi::at(start());
    let bare = json!({ "messageId": "i-1", "userId": "shop-user-10",
        "traits": { "plan": "pro", "lastName": "Hopper" } });
    let answer = api.segment("identify", &bare).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let viewed = json!({ "messageId": "t-1", "userId": "shop-user-10", "event": "Product Viewed",
        "properties": { "product_id": "lamp", "name": "Desk lamp", "price": 65 } });
    let answer = api.segment("track", &viewed).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(api.events_of_type("CustomerRegistered").await.is_empty());

    let with_email = json!({ "messageId": "i-2", "userId": "shop-user-10",
        "traits": { "email": "later@shop.example", "firstName": "Grace" } });
    let answer = api.segment("identify", &with_email).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let customer = customer_by_email(&api, "later@shop.example").await;
    assert_eq!(customer["first_name"], "Grace");
    assert_eq!(customer["last_name"], "Hopper", "the name sent before the email");
    let id = customer["id"].as_str().expect("id");
    let activity = activity_types(&api, id).await;
    assert!(activity.contains(&"ProductViewed".to_string()), "{activity:?}");
    assert_eq!(api.events_of_type("CustomersMerged").await.len(), 1);
}
