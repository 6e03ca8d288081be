//! The proof ledger end to end (issue 7, decision 0019): after a customer is
//! erased, the ledger proves their consent history and erasure by the
//! salted hash of their address, holds no personal data, and a marketing
//! message requested for that address is suppressed until consent is given
//! on it again.

use chrono::{DateTime, Utc};
use crm_core::consent::proof::{identifier_proof, PROOF_LEDGER};
use crm_core::consent::Channel;
use crm_core::privacy::{HashedIdentifier, IdentifierKind};
use crm_tests::TestApi;
use serde_json::json;

const EMAIL: &str = "opted.out@shop.example";

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

#[tokio::test]
async fn an_erased_address_is_proven_and_gets_no_marketing_until_it_consents_again() {
    let api = TestApi::at(start());
    let erased_id = api.register(EMAIL).await;
    let erased = api.call("DELETE", &format!("/customers/{erased_id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    api.runtime.bus.settle().await.expect("settle");

    // The ledger proves the consent and its end by the address's hash alone.
    let identifier = HashedIdentifier {
        kind: IdentifierKind::Email,
        hash: api.runtime.identifiers.email(EMAIL),
    };
    let proof = identifier_proof(api.runtime.docs.as_ref(), &identifier)
        .await
        .expect("proof");
    assert_eq!(proof.erasures.len(), 1, "{proof:?}");
    let history: Vec<(bool, Option<&str>)> = proof
        .consents
        .iter()
        .filter(|c| c.channel == Channel::Email)
        .map(|c| (c.granted, c.reason.as_deref()))
        .collect();
    assert_eq!(history, [(true, None), (false, Some("customer-erased"))]);
    assert!(proof.erased_without_consent(Channel::Email).is_some());
    let rows: Vec<String> = {
        let conn = rusqlite::Connection::open(api.db_path()).expect("open");
        let mut s = conn
            .prepare("SELECT * FROM read_models WHERE consumer = ?1")
            .expect("select");
        let columns = s.column_count();
        let rows = s
            .query_map([PROOF_LEDGER], |row| {
                (0..columns)
                    .map(|i| row.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|cells| cells.join(" | "))
            })
            .expect("query");
        rows.map(|r| r.expect("row")).collect()
    };
    assert!(!rows.is_empty(), "the proof ledger has documents");
    for row in &rows {
        for plain in [EMAIL, "opted.out", erased_id.as_str(), "198.51.100.4", "Mozilla"] {
            assert!(!row.contains(plain), "the proof ledger holds {plain}: {row}");
        }
    }

    // Another customer, who consented under their own address, moves to the erased one.
    let mover = api.register("mover@shop.example").await;
    let moved = api
        .call(
            "PUT",
            &format!("/customers/{mover}/email"),
            Some(&json!({ "new_email": EMAIL }).to_string()),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    api.cart_with_lamps(&mover, 2, 4000).await;
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let reminders: Vec<_> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "abandoned-cart-reminder")
        .collect();
    assert_eq!(reminders.len(), 1, "the journey asked for the reminder");
    let suppressed = api.events_of_type("MessageSuppressed").await;
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    assert_eq!(suppressed[0].data["reason"], "erased-address");
    assert_eq!(suppressed[0].data["message_id"], reminders[0].data["message_id"]);
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter().all(|m| m.message_id != reminders[0].data["message_id"]),
        "no reminder in the mail sink"
    );

    // They withdraw and give consent anew, on this address: marketing goes again.
    let revoked = api
        .call("DELETE", &format!("/customers/{mover}/consents/marketing/email"), None)
        .await;
    assert!(revoked.status.is_success(), "{:?}", revoked.body);
    let grant = json!({ "purpose": "marketing", "channel": "email", "method": "preference-centre" });
    let granted = api
        .call(
            "POST",
            &format!("/customers/{mover}/consents"),
            Some(&grant.to_string()),
        )
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    api.cart_with_lamps(&mover, 1, 6000).await;
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let reminders: Vec<_> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "abandoned-cart-reminder")
        .collect();
    assert_eq!(reminders.len(), 2, "a second reminder was asked for");
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter()
            .any(|m| m.message_id == reminders[1].data["message_id"] && m.recipient == EMAIL),
        "the second reminder went to the address: {:?}",
        mail.iter().map(|m| (&m.message_id, &m.recipient)).collect::<Vec<_>>()
    );
    assert_eq!(api.events_of_type("MessageSuppressed").await.len(), 1);
}
