//! Personal data is encrypted at rest (issue 7, decision 0017): the raw
//! SQLite rows hold no plaintext, while the API reads as before.

use crm_core::ports::EventStore;
use crm_tests::{registration, TestApi, TOKEN};

const EMAIL: &str = "grace.hopper@navy.example";
/// What `registration` sends besides the email.
const PLAIN: &[&str] = &["Grace", "Hopper", "+12025550123", "198.51.100.4", "Mozilla/5.0"];

/// Every text cell of `table`, one string per row.
fn raw_rows(api: &TestApi, table: &str) -> Vec<String> {
    crm_tests::sqlite_rows(&api.db_path(), table)
}

fn assert_no_plaintext(rows: &[String], table: &str) {
    for row in rows {
        // Random ciphertext spells any short word now and then.
        let row = &crm_core::privacy::text_without_ciphertext(row);
        let lower = row.to_lowercase();
        assert!(
            !lower.contains("grace") && !lower.contains("navy.example"),
            "{table}: {row}"
        );
        for plain in PLAIN {
            assert!(!row.contains(plain), "{table} holds {plain} in plain text: {row}");
        }
    }
}

#[tokio::test]
async fn personal_data_is_ciphertext_in_the_store_and_plaintext_through_the_api() {
    let api = TestApi::new();
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "register-grace-1"),
    ];
    let body = registration(EMAIL);
    let created = api.call_with("POST", "/customers", Some(&body), &headers).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();

    // The raw rows: events, receipts and snapshots hold no plaintext.
    let events = raw_rows(&api, "events");
    assert!(events.len() >= 3, "{events:?}");
    assert!(events
        .iter()
        .any(|r| r.contains("CustomerRegistered") && r.contains("enc:v1:")));
    assert_no_plaintext(&events, "events");
    assert_no_plaintext(&raw_rows(&api, "receipts"), "receipts");
    assert_no_plaintext(&raw_rows(&api, "snapshots"), "snapshots");
    assert_eq!(
        raw_rows(&api, "customer_keys").len(),
        1,
        "one data key for the one customer"
    );

    // Through the API, nothing changed.
    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    let text = customer.body.to_string();
    assert!(
        text.contains(EMAIL) && text.contains("Grace") && text.contains("Hopper"),
        "{text}"
    );
    let timeline = api
        .call("GET", &format!("/customers/{id}/events?limit=100"), None)
        .await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    let items = timeline.body["items"].as_array().expect("items");
    let registered = items
        .iter()
        .find(|e| e["type"] == "CustomerRegistered")
        .expect("registered");
    let data = &registered["data"];
    assert_eq!(data["email"], EMAIL);
    assert_eq!(data["first_name"], "Grace");
    assert_eq!(data["last_name"], "Hopper");
    assert_eq!(data["phone"], "+12025550123");
    assert_eq!(data["ip"], "198.51.100.4");
    assert_eq!(data["user_agent"], "Mozilla/5.0 (X11; Linux x86_64)");

    // A retried command is answered from its (encrypted) receipt, in plain text.
    let again = api.call_with("POST", "/customers", Some(&body), &headers).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(again.body, created.body);

    // The store as the runtime reads it decrypts; the raw store does not.
    let stream = format!("customer-{id}");
    let read = api.store.read_stream(&stream, 0, 10).await.expect("read");
    assert_eq!(read[0].data["email"], EMAIL);
    let raw = api
        .runtime
        .stored_events
        .read_stream(&stream, 0, 10)
        .await
        .expect("raw");
    assert!(raw[0].data["email"].as_str().is_some_and(|e| e.starts_with("enc:v1:")));
}
