//! Erasure (GDPR Art. 17, issue 7, decision 0018): after a customer who
//! registered, consented, browsed, abandoned a cart, got the reminder and
//! ordered is erased, no SQLite table holds their personal data in plain
//! text, their journeys have exited with no timers left, and the address can
//! register again as a new customer.

use chrono::{DateTime, Utc};
use crm_testkit::LogCapture;
use crm_tests::{registration, TestApi};
use serde_json::json;

const EMAIL: &str = "erase.me@shop.example";
/// The customer's personal data: names, phone, email (parts), IP, user
/// agent (what `registration` sends) and the address given later.
const PLAIN: &[&str] = &[
    "Grace",
    "Hopper",
    "+12025550123",
    "erase.me",
    "shop.example",
    "198.51.100.4",
    "Mozilla/5.0",
    "1 Main St",
    "1906-12-09",
];

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// What the proof ledger holds about the erased address.
async fn proof_of(api: &TestApi) -> crm_core::consent::proof::IdentifierProof {
    let identifier = crm_core::privacy::HashedIdentifier {
        kind: crm_core::privacy::IdentifierKind::Email,
        hash: api.runtime.identifiers.email(EMAIL),
    };
    crm_core::consent::proof::identifier_proof(api.runtime.docs.as_ref(), &identifier)
        .await
        .expect("proof")
}

/// Every row of every table of the database, as text, with its table's name.
fn every_row(api: &TestApi) -> Vec<(String, String)> {
    let db = api.db_path();
    crm_tests::sqlite_tables(&db)
        .into_iter()
        .flat_map(|table| {
            crm_tests::sqlite_rows(&db, &table)
                .into_iter()
                .map(move |row| (table.clone(), row))
        })
        .collect()
}

#[tokio::test]
async fn an_erased_customer_leaves_no_personal_data_and_can_register_anew() {
    // Every log line of the process (this binary holds this one test), at every level.
    let logs = LogCapture::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let api = TestApi::at(start());
    let id = api.register(EMAIL).await;
    let grant = json!({ "purpose": "marketing", "channel": "sms", "method": "preference-centre" }).to_string();
    let granted = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    let profile = json!({ "address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" },
        "date_of_birth": "1906-12-09" });
    let updated = api
        .call("PATCH", &format!("/customers/{id}"), Some(&profile.to_string()))
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    let view = json!({ "type": "ProductViewed", "product_id": "lamp", "name": "Desk lamp", "category": "lighting" });
    let browsed = api
        .call("POST", &format!("/customers/{id}/activity"), Some(&view.to_string()))
        .await;
    assert_eq!(browsed.status, 201, "{:?}", browsed.body);

    // Quiet hours all day in their time zone: marketing waits on a deferral timer.
    let quiet = json!({ "email_frequency": "daily", "timezone": "America/New_York",
        "quiet_hours": { "start": "00:00", "end": "23:59" } });
    let preferred = api
        .call("PUT", &format!("/customers/{id}/preferences"), Some(&quiet.to_string()))
        .await;
    assert_eq!(preferred.status, 200, "{:?}", preferred.body);

    // The cart is abandoned after an hour and the reminder is asked for an hour later.
    api.cart_with_lamps(&id, 2, 4000).await;
    for minutes in [59, 1, 59, 1] {
        api.advance_minutes(minutes).await;
    }
    let reminders = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == "abandoned-cart")
        .count();
    assert_eq!(reminders, 1, "the abandoned-cart reminder was requested");
    let order = json!({
        "customer_id": id,
        "items": [{ "product_id": "lamp", "name": "Desk lamp", "quantity": 1, "unit_price_minor": 4000 }],
        "subtotal_minor": 4000, "tax_minor": 0, "shipping_minor": 0, "total_minor": 4000, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    let placed = api.call("POST", "/orders", Some(&order.to_string())).await;
    assert!(placed.status.is_success(), "{:?}", placed.body);
    api.runtime.bus.settle().await.expect("settle");
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter().any(|m| m.recipient == EMAIL),
        "mail was sent to the customer"
    );

    let journey_timers = |api: &TestApi| -> Vec<String> {
        every_row(api)
            .into_iter()
            .filter(|(t, row)| t == "timers" && row.contains("journey"))
            .map(|(_, row)| row)
            .collect()
    };
    assert!(
        !journey_timers(&api).is_empty(),
        "journeys wait on timers before erasure"
    );
    // A second cart, still open, waits on its inactivity timer.
    api.cart_with_lamps(&id, 1, 1000).await;
    let customer_timers = |api: &TestApi| -> Vec<String> {
        every_row(api)
            .into_iter()
            .filter(|(t, row)| t == "timers" && row.contains(id.as_str()))
            .map(|(_, row)| row)
            .collect()
    };
    let before = customer_timers(&api);
    for kind in ["cart-inactivity", "message-deferral"] {
        assert!(
            before.iter().any(|row| row.contains(kind)),
            "a {kind} timer before erasure: {before:?}"
        );
    }

    // Erase.
    let erased = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    api.runtime.bus.settle().await.expect("settle");

    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    assert_eq!(customer.body["id"], id.as_str());
    assert_eq!(customer.body["status"], "erased");
    let text = customer.body.to_string();
    for plain in PLAIN {
        assert!(!text.contains(plain), "the customer 360 holds {plain}: {text}");
    }
    let timeline = api.call("GET", &format!("/customers/{id}/timeline"), None).await;
    assert_eq!(timeline.status, 200, "{:?}", timeline.body);
    assert!(
        timeline.body.to_string().contains("CustomerRegistered"),
        "{:?}",
        timeline.body
    );

    // Nothing was parked on the way, and no table holds their personal data in plain text.
    let rows = every_row(&api);
    let parked: Vec<_> = rows.iter().filter(|(t, _)| t == "dead_letters").collect();
    assert!(parked.is_empty(), "dead letters: {parked:?}");
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter().any(|m| m.recipient == "[erased]"),
        "the sink rows are redacted, not deleted"
    );
    for (table, row) in rows {
        // Random ciphertext spells any short word now and then.
        let row = crm_core::privacy::text_without_ciphertext(&row);
        let lower = row.to_lowercase();
        for plain in PLAIN {
            assert!(!lower.contains(&plain.to_lowercase()), "{table} holds {plain}: {row}");
        }
    }

    // The consent ledger keeps its records, every consent revoked at erasure.
    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(consents.status, 200, "{:?}", consents.body);
    let text = consents.body.to_string();
    assert!(text.contains("customer-erased"), "{text}");

    // Every journey exited, and none has a timer left.
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let text = journeys.body.to_string();
    assert!(!text.contains("\"running\"") && !text.contains("\"waiting\""), "{text}");
    let exits = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyExited" && e.customer_id.as_deref() == Some(&id))
        .count();
    assert!(exits >= 1, "the customer's journeys exited");
    let timers = journey_timers(&api);
    assert!(timers.is_empty(), "journey timers left: {timers:?}");
    // So is every other schedule of theirs: carts and deferred messages.
    let timers = customer_timers(&api);
    assert!(timers.is_empty(), "timers left: {timers:?}");

    // The customer refuses further commands; a repeated DELETE is a no-op.
    let patch = api
        .call("PATCH", &format!("/customers/{id}"), Some(r#"{"first_name":"Ada"}"#))
        .await;
    assert_eq!(patch.status, 409, "{:?}", patch.body);
    let view = json!({ "type": "ProductViewed", "product_id": "lamp", "name": "Desk lamp", "category": "lighting" });
    let browse = api
        .call("POST", &format!("/customers/{id}/activity"), Some(&view.to_string()))
        .await;
    assert_eq!(
        browse.status, 404,
        "no activity for an erased customer: {:?}",
        browse.body
    );
    let cart = api
        .call(
            "POST",
            "/carts",
            Some(&json!({ "customer_id": id, "currency": "EUR" }).to_string()),
        )
        .await;
    assert_eq!(cart.status, 422, "no cart for an erased customer: {:?}", cart.body);
    let again = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    let unknown = api
        .call("DELETE", &format!("/customers/{}", uuid::Uuid::now_v7()), None)
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);

    // The data key is gone and nothing written since made a new one.
    let key = api.runtime.keys.existing_key(&id).await.expect("key store");
    assert!(key.is_none(), "the erased customer has no data key");

    // Every projection rebuilt from scratch: still erased, still no personal
    // data anywhere, and the consent history still proven.
    let proof_before = proof_of(&api).await;
    let mut rebuilt = Vec::new();
    for target in ["projector", "consent"] {
        rebuilt.extend(api.runtime.rebuild(target).await.expect("rebuild"));
    }
    for consumer in [
        "customer-360",
        "timeline",
        "email-index",
        "consent-ledger",
        "proof-ledger",
    ] {
        assert!(rebuilt.contains(&consumer), "{consumer} was rebuilt: {rebuilt:?}");
    }
    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.body["status"], "erased", "{:?}", customer.body);
    let timeline = api.call("GET", &format!("/customers/{id}/timeline"), None).await;
    assert!(
        timeline.body.to_string().contains("CustomerErased"),
        "{:?}",
        timeline.body
    );
    let rows = every_row(&api);
    assert!(
        rows.iter().all(|(t, _)| t != "dead_letters"),
        "the rebuild parked nothing"
    );
    for (table, row) in rows {
        // Random ciphertext spells any short word now and then.
        let row = crm_core::privacy::text_without_ciphertext(&row);
        let lower = row.to_lowercase();
        for plain in PLAIN {
            assert!(
                !lower.contains(&plain.to_lowercase()),
                "after the rebuild {table} holds {plain}: {row}"
            );
        }
    }
    assert_eq!(proof_of(&api).await, proof_before, "the proof ledger rebuilds the same");
    assert_eq!(proof_before.erasures.len(), 1, "{proof_before:?}");

    // Nor did the process ever log it, at any level.
    let logged = logs.text();
    assert!(logged.lines().count() >= 2, "the runtime logged: {logged}");
    for line in logged.lines() {
        for plain in PLAIN {
            assert!(
                !line.to_lowercase().contains(&plain.to_lowercase()),
                "logged {plain}: {line}"
            );
        }
    }

    // The address registers again, as a new customer.
    let again = api.call("POST", "/customers", Some(&registration(EMAIL))).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_ne!(again.body["id"], id.as_str());
}

/// A request replayed with its Idempotency-Key after the customer was
/// erased: its stored answer held their personal data and went with the
/// key, so the replay is 410 (a problem), never the sealed `[erased]`
/// placeholder as if it were the answer (found by schemathesis).
#[tokio::test]
async fn a_replayed_answer_erased_with_its_customer_is_410() {
    let api = TestApi::at(start());
    let id = api.register("replay@example.com").await;
    let order_id = api.paid_order(&id, 5000, "Lamp", "lighting").await;
    let path = format!("/orders/{order_id}/cancel");
    let bearer = format!("Bearer {}", crm_tests::TOKEN);
    let headers = [("idempotency-key", "cancel-1"), ("authorization", bearer.as_str())];
    let cancel = || api.call_with("POST", &path, Some(r#"{"reason": "changed my mind"}"#), &headers);
    let first = cancel().await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["status"], "cancelled", "{:?}", first.body);
    let again = cancel().await;
    assert_eq!(again.status, 200, "a replay before the erasure is the first answer");
    assert_eq!(again.body["id"], first.body["id"]);
    let erased = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    api.runtime.bus.settle().await.expect("settles");
    let after = cancel().await;
    assert_eq!(after.status, 410, "{:?}", after.body);
    assert_eq!(after.content_type(), "application/problem+json");
    assert_eq!(after.body["title"], "Answer erased", "{:?}", after.body);
    assert_eq!(after.body["code"], "gone", "{:?}", after.body);
    assert_eq!(
        after.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );
}
