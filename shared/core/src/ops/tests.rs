//! Replay and the consistency check over the in-memory adapters.

use super::*;
use crate::clock::SystemClock;
use crate::consent::ledger::CONSENT_LEDGER;
use crate::consent::{Channel, ConsentMethod, Purpose};
use crate::consumer::ConsumerGroup;
use crate::customer::views::CUSTOMER_360;
use crate::customer::*;
use crate::event::{Actor, CommandMeta};
use crate::ports::{ReadModelStore, ReadOp};
use crate::testing::{InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels};

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "id": c.id }))
}

/// Three customers with a registration, a consent and a profile change each.
async fn store() -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::default());
    let service = CustomerService::new(store.clone(), Arc::new(SystemClock));
    let meta = CommandMeta::new(Actor::api("ops-test"));
    for n in 0..3 {
        let id = format!("00000000-0000-7000-8000-{n:012}");
        let register = CustomerCommand::Register(RegisterCustomer {
            email: format!("ops{n}@example.com"),
            first_name: format!("First{n}"),
            last_name: "Ops".into(),
            phone: None,
            source: RegistrationSource::Web,
            marketing_consent: MarketingConsentChoice {
                email: true,
                sms: false,
                push: false,
            },
            terms_accepted: true,
            ip: "192.0.2.1".into(),
            user_agent: "ops-test".into(),
            timezone: None,
            locale: None,
        });
        service
            .execute(&id, &register, &meta, None, &respond)
            .await
            .expect("register");
        let grant = CustomerCommand::GrantConsent(GrantConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Push,
            method: ConsentMethod::PreferenceCentre,
            ip: None,
            user_agent: None,
        });
        service
            .execute(&id, &grant, &meta, None, &respond)
            .await
            .expect("grant");
        let update = CustomerCommand::UpdateProfile(UpdateProfile {
            first_name: Some(format!("Renamed{n}")),
            ..Default::default()
        });
        service
            .execute(&id, &update, &meta, None, &respond)
            .await
            .expect("update");
    }
    store
}

/// The projector and consent groups over `docs`, fed every stored event.
async fn project(store: Arc<InMemoryEventStore>, docs: Arc<InMemoryReadModels>) {
    let dead = Arc::new(InMemoryDeadLetters::default());
    let groups = [
        ConsumerGroup::projector(store.clone(), docs.clone(), dead.clone()),
        ConsumerGroup::consent(
            store.clone(),
            docs.clone(),
            dead.clone(),
            crate::privacy::IdentifierHasher::new(b"ops-test"),
        ),
    ];
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 100).await.expect("read all");
        for event in &page.events {
            for group in &groups {
                group.handle(event, Utc::now()).await.expect("handle");
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
}

#[tokio::test]
async fn a_consistent_store_reports_no_differences() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let streams = sample_streams(store.as_ref(), 10).await.expect("sample");
    assert_eq!(streams.len(), 3);
    let report = check(store.as_ref(), docs.as_ref(), &checked_projections(), &streams)
        .await
        .expect("check");
    assert!(report.documents >= 3 * 2, "folded the 360 and the ledger: {report:?}");
    assert!(report.is_consistent(), "{:?}", report.differences);
    assert!(report.behind.is_empty());
}

#[tokio::test]
async fn a_tampered_document_and_an_extra_document_are_reported() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let customer = "00000000-0000-7000-8000-000000000001";
    let stream = format!("customer-{customer}");
    let mut profile = docs
        .get(CUSTOMER_360, customer, "profile")
        .await
        .expect("get")
        .expect("a 360");
    profile["first_name"] = serde_json::json!("Tampered");
    let checkpoint = docs.checkpoint(CUSTOMER_360, &stream).await.expect("checkpoint");
    let tamper = vec![ReadOp::Put {
        partition: customer.into(),
        sort: "profile".into(),
        body: profile.clone(),
    }];
    docs.commit(CUSTOMER_360, &stream, checkpoint, checkpoint, tamper)
        .await
        .expect("tamper");
    let checkpoint = docs.checkpoint(CONSENT_LEDGER, &stream).await.expect("checkpoint");
    let extra = vec![ReadOp::Put {
        partition: customer.into(),
        sort: "current#analytics#sms".into(),
        body: serde_json::json!({"granted": true}),
    }];
    docs.commit(CONSENT_LEDGER, &stream, checkpoint, checkpoint, extra)
        .await
        .expect("extra");

    let streams = sample_streams(store.as_ref(), 0).await.expect("sample");
    let report = check(store.as_ref(), docs.as_ref(), &checked_projections(), &streams)
        .await
        .expect("check");
    assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    let tampered = &report.differences[0];
    assert_eq!(
        (tampered.consumer.as_str(), tampered.partition.as_str()),
        (CUSTOMER_360, customer)
    );
    assert_eq!(tampered.stored.as_ref(), Some(&profile));
    assert_eq!(
        tampered.expected.as_ref().and_then(|p| p["first_name"].as_str()),
        Some("Renamed1")
    );
    let extra = &report.differences[1];
    assert_eq!(extra.consumer, CONSENT_LEDGER);
    assert_eq!(extra.expected, None);
}

#[tokio::test]
async fn replaying_one_consumer_rebuilds_it_alone() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let before = docs.dump();
    // Forget the customer 360 only (what `clear` does to one consumer).
    let fresh = Arc::new(InMemoryReadModels::default());
    let group = ConsumerGroup::new(
        "projector",
        vec![Arc::new(crate::customer::views::CustomerProfileProjection)],
        store.clone(),
        fresh.clone(),
        Arc::new(InMemoryDeadLetters::default()),
    );
    let mut seen = 0;
    let report = replay(&group, store.as_ref(), Utc::now(), &mut |n| seen = n)
        .await
        .expect("replay");
    assert_eq!(report.events, seen);
    assert!(report.applied > 0 && report.parked == 0, "{report:?}");
    let rebuilt: Vec<_> = fresh.dump().into_iter().collect();
    let original: Vec<_> = before.into_iter().filter(|((c, _, _), _)| c == CUSTOMER_360).collect();
    assert_eq!(rebuilt, original);
    // Replaying again applies nothing: the checkpoints skip every event.
    let again = replay(&group, store.as_ref(), Utc::now(), &mut |_| {})
        .await
        .expect("replay again");
    assert_eq!(again.applied, 0);
}
