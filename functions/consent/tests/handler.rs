//! The consent function's handler over the real SQLite adapters. Its rule
//! sends it only `ConsentGranted` and `ConsentRevoked`, so the rest of a
//! customer's stream always comes from the event store (gap fill).

use crm_consent::handler::{handle, Handled, HandlerError};
use crm_core::consent::ledger::{consent_history, current_consents, ConsentStatus};
use crm_core::consent::{Channel, Purpose};
use crm_core::customer::{CustomerCommand, RevokeConsent};
use crm_core::failure::{Classify, FailureKind};
use crm_testkit::{applied, bus_event, detail, duplicates, invocation, sample_event, Harness};
use serde_json::json;

const CUSTOMER: &str = "0190a000-0000-7000-8000-00000000c002";
fn consent_group(
    events: std::sync::Arc<dyn crm_core::ports::EventStore>,
    docs: std::sync::Arc<dyn crm_core::ports::ReadModelStore>,
    dead_letters: std::sync::Arc<dyn crm_core::ports::DeadLetterQueue>,
) -> crm_core::consumer::ConsumerGroup {
    crm_consent::group(
        events,
        docs,
        dead_letters,
        crm_core::privacy::IdentifierHasher::new(b"test"),
    )
}

const LEDGER: &str = "consent-ledger";
const PROOF_LEDGER: &str = "proof-ledger";

#[tokio::test]
async fn a_grant_at_registration_lands_in_the_ledger_after_filling_the_gap() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let events = h.register(CUSTOMER, "grace@example.com").await;
    let granted = &events[1];
    assert_eq!((granted.event_type.as_str(), granted.version), ("ConsentGranted", 2));

    // Version 1 (CustomerRegistered) never reaches this function: the
    // consumer reads it from the store before applying version 2.
    let outcome = handle(invocation(bus_event(granted)), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert_eq!(applied(&outcome), [LEDGER, PROOF_LEDGER]);

    let consents = current_consents(h.docs.as_ref(), CUSTOMER)
        .await
        .expect("read the ledger");
    assert_eq!(consents.len(), 1);
    let record = &consents[0];
    assert_eq!(
        (record.purpose, record.channel, record.status),
        (Purpose::Marketing, Channel::Email, ConsentStatus::Active)
    );
    assert_eq!(record.proof.event_id, granted.event_id);
    assert_eq!(record.proof.ip.as_deref(), Some("192.0.2.1"));
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let events = h.register(CUSTOMER, "grace@example.com").await;
    let granted = bus_event(&events[1]);
    handle(invocation(granted.clone()), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    let before = current_consents(h.docs.as_ref(), CUSTOMER)
        .await
        .expect("read the ledger");

    for _ in 0..2 {
        let outcome = handle(invocation(granted.clone()), &group, h.dead_letters.as_ref())
            .await
            .expect("handled");
        assert_eq!(duplicates(&outcome), [LEDGER, PROOF_LEDGER]);
        assert!(applied(&outcome).is_empty());
    }
    assert_eq!(
        current_consents(h.docs.as_ref(), CUSTOMER)
            .await
            .expect("read the ledger"),
        before
    );
    assert_eq!(
        consent_history(h.docs.as_ref(), CUSTOMER)
            .await
            .expect("read the history")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_revocation_delivered_before_its_grant_applies_both_in_order() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let events = h.register(CUSTOMER, "grace@example.com").await;
    let revoked = h
        .execute(
            CUSTOMER,
            CustomerCommand::RevokeConsent(RevokeConsent {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                reason: "too many emails".into(),
                method: None,
            }),
        )
        .await;
    assert_eq!(revoked[0].version, 4);

    // The bus reorders: the revocation (v4) comes first and pulls v1..v3.
    let outcome = handle(invocation(bus_event(&revoked[0])), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert_eq!(applied(&outcome), [LEDGER, PROOF_LEDGER]);
    let outcome = handle(invocation(bus_event(&events[1])), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert_eq!(duplicates(&outcome), [LEDGER, PROOF_LEDGER]);

    let consents = current_consents(h.docs.as_ref(), CUSTOMER)
        .await
        .expect("read the ledger");
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].status, ConsentStatus::Revoked);
    assert_eq!(consents[0].revocation_reason.as_deref(), Some("too many emails"));
    let history = consent_history(h.docs.as_ref(), CUSTOMER)
        .await
        .expect("read the history");
    assert_eq!(history.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 4]);
}

#[tokio::test]
async fn a_detail_that_is_not_an_envelope_is_parked_not_failed() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let events = h.register(CUSTOMER, "grace@example.com").await;
    let mut garbage = bus_event(&events[1]);
    garbage["detail"] = json!("ConsentGranted");

    let outcome = handle(invocation(garbage.clone()), &group, h.dead_letters.as_ref())
        .await
        .expect("parked, not failed");
    assert!(matches!(outcome, Handled::Parked { .. }), "{outcome:?}");
    let letters = h.letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].consumer, "consent");
    assert_eq!(letters[0].payload, garbage);
    assert!(current_consents(h.docs.as_ref(), CUSTOMER)
        .await
        .expect("read the ledger")
        .is_empty());
}

#[tokio::test]
async fn a_gap_the_store_cannot_fill_is_retried() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let events = h.register(CUSTOMER, "grace@example.com").await;
    // A grant on a stream the store does not hold.
    let mut orphan = events[1].clone();
    orphan.stream_id = "customer-unknown".into();
    orphan.customer_id = Some("unknown".into());

    let error = handle(invocation(bus_event(&orphan)), &group, h.dead_letters.as_ref())
        .await
        .expect_err("retried");
    assert!(
        matches!(error, HandlerError::Retry(_)) && error.kind() == FailureKind::Retryable,
        "{error}"
    );
    assert!(h.letters().await.is_empty());
}

#[tokio::test]
async fn the_sample_grant_follows_the_projector_sample_registration() {
    let h = Harness::new();
    let group = h.group(consent_group);
    let registered = detail(&sample_event("projector/customer-registered.json"));
    let sample = sample_event("consent/consent-granted.json");
    let granted = detail(&sample);
    assert_eq!(granted.stream_id, registered.stream_id);
    assert_eq!((registered.version, granted.version), (1, 2));
    // What the smoke test seeds into the events table.
    h.seed(&[registered, granted.clone()]).await;

    let outcome = handle(invocation(sample), &group, h.dead_letters.as_ref())
        .await
        .expect("handled");
    assert_eq!(applied(&outcome), [LEDGER, PROOF_LEDGER]);
    let customer_id = granted.customer_id.as_deref().expect("customer id");
    let consents = current_consents(h.docs.as_ref(), customer_id)
        .await
        .expect("read the ledger");
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].status, ConsentStatus::Active);
    assert_eq!(consents[0].proof.event_id, granted.event_id);
}
