//! Deactivation (issue 7): it revokes every consent, exits every journey and
//! cancels every schedule of the customer (journey waits, cart inactivity,
//! deferred messages); reactivation does not give the consents back.

use chrono::{DateTime, Utc};
use crm_tests::TestApi;
use serde_json::json;

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// The payloads of the timers that name `customer_id`.
fn timers_of(api: &TestApi, customer_id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(api.db_path()).expect("open the database file");
    let mut s = conn.prepare("SELECT payload FROM timers").expect("select");
    let rows = s.query_map([], |r| r.get::<_, String>(0)).expect("query");
    rows.map(|r| r.expect("row"))
        .filter(|p| p.contains(customer_id))
        .collect()
}

#[tokio::test]
async fn deactivation_ends_journeys_and_schedules_and_reactivation_restores_no_consent() {
    let api = TestApi::at(start());
    let id = api.register("leaving@shop.example").await;
    // Quiet hours all day: the cart reminder waits on a deferral timer.
    let quiet = json!({ "email_frequency": "daily", "timezone": "America/New_York",
        "quiet_hours": { "start": "00:00", "end": "23:59" } });
    let preferred = api
        .call("PUT", &format!("/customers/{id}/preferences"), Some(&quiet.to_string()))
        .await;
    assert_eq!(preferred.status, 200, "{:?}", preferred.body);
    api.cart_with_lamps(&id, 2, 4000).await;
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    api.cart_with_lamps(&id, 1, 1000).await;
    let before = timers_of(&api, &id);
    for kind in ["journey-wait", "cart-inactivity", "message-deferral"] {
        assert!(
            before.iter().any(|t| t.contains(kind)),
            "a {kind} timer before deactivation: {before:?}"
        );
    }

    let body = json!({ "reason": "customer-request" }).to_string();
    let deactivated = api
        .call("POST", &format!("/customers/{id}/deactivate"), Some(&body))
        .await;
    assert_eq!(deactivated.status, 200, "{:?}", deactivated.body);
    api.runtime.bus.settle().await.expect("settle");

    let left = timers_of(&api, &id);
    assert!(left.is_empty(), "timers left after deactivation: {left:?}");
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let text = journeys.body.to_string();
    assert!(text.contains("exited"), "{text}");
    assert!(!text.contains("\"running\"") && !text.contains("\"waiting\""), "{text}");
    // A day later nothing fired for them: no abandonment, no message sent.
    let sent_before = api.runtime.mail.list().await.expect("mail").len();
    api.advance_minutes(24 * 60).await;
    let abandoned = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "CartAbandoned" && e.customer_id.as_deref() == Some(id.as_str()))
        .count();
    assert_eq!(abandoned, 1, "only the first cart was abandoned (before deactivation)");
    assert_eq!(api.runtime.mail.list().await.expect("mail").len(), sent_before);

    // Reactivation gives the account back, not the consents.
    let reactivated = api.call("POST", &format!("/customers/{id}/reactivate"), None).await;
    assert_eq!(reactivated.status, 200, "{:?}", reactivated.body);
    api.runtime.bus.settle().await.expect("settle");
    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    assert_ne!(customer.body["status"], "deactivated", "{:?}", customer.body);
    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(consents.status, 200, "{:?}", consents.body);
    let current = consents.body["current"].as_array().cloned().unwrap_or_default();
    assert!(!current.is_empty(), "the ledger keeps the records: {:?}", consents.body);
    assert!(
        current.iter().all(|c| c["status"] == "revoked"),
        "no consent is active after reactivation: {:?}",
        consents.body
    );
}
