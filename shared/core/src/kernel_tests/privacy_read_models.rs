//! The sealed read models: every personal value of every projection stored
//! as ciphertext, read back in clear, `[erased]` once the key is gone.

use crate::assembly::AssembledGroups;
use crate::commerce::{OrderEvent, OrderItem};
use crate::consent::ledger::{consent_history, current_consents};
use crate::consent::{Channel, ConsentMethod, GdprContext, Purpose};
use crate::consumer::ConsumerGroup;
use crate::customer::views::{customer_profile, timeline};
use crate::customer::CUSTOMER_EVENT_TYPES;
use crate::customer::{Address, CustomerEvent, CustomerStatus, DeactivationReason, RegistrationSource};
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::memory::InMemoryReadModels;
use crate::messaging::delivery::{MessageLogProjection, SuppressionListProjection};
use crate::messaging::events::{message_stream, MessageEvent};
use crate::ports::{AppendRequest, EventStore, ExpectedVersion};
use crate::ports::{ReadModelStore, ReadOp};
use crate::preferences::Preferences;
use crate::privacy::memory::InMemoryKeyStore;
use crate::privacy::read_models::*;
use crate::privacy::text_outside_ciphertext;
use crate::privacy::{is_encrypted, DataKey, KeyError, KeyStore, ERASED};
use crate::privacy::{EncryptingEventStore, IdentifierHasher};
use crate::testing::{customer_id, test_time, InMemoryDeadLetters, InMemoryEventStore};
use crate::vocabulary::streams::{CONSENT_LEDGER, TIMELINE};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::json;
use serde_json::Value;
use std::sync::Arc;

const EMAIL_1: &str = "sealed.first.address.quintessa-7281@example.org";
const EMAIL_2: &str = "sealed.second.address.quintessa-7281@example.org";
const FIRST_1: &str = "Quintessaphilomena";
const LAST_1: &str = "Vandersteenhovenkamp";
const FIRST_2: &str = "Quintessaphilomenia";
const LAST_2: &str = "Vandersteenhovenkampf";
const PHONE_1: &str = "+4930987654321";
const PHONE_2: &str = "+4930123498765";
const IP_1: &str = "203.0.113.197";
const IP_2: &str = "198.51.100.173";
const UA_1: &str = "Mozilla/5.0 (SealedReadModelsAgent/71.3; registration)";
const UA_2: &str = "Mozilla/5.0 (SealedReadModelsAgent/71.3; consent)";
const STREET_1: &str = "17 Quintessaphilomena Boulevard";
const STREET_2: &str = "29 Vandersteenhoven Promenade";
const DOB: &str = "1903-04-05";
const PUSH_TOKEN: &str = "push-token-quintessa-0f9e8d7c6b5a49382716";
const NOTES: &str = "deactivated at the request of Quintessaphilomena herself";

/// Every distinctive plaintext of the customer.
const PERSONAL: &[&str] = &[
    EMAIL_1, EMAIL_2, FIRST_1, LAST_1, FIRST_2, LAST_2, PHONE_1, PHONE_2, IP_1, IP_2, UA_1, UA_2, STREET_1, STREET_2,
    DOB, PUSH_TOKEN, NOTES,
];

fn address(line1: &str) -> Address {
    Address {
        line1: line1.into(),
        line2: None,
        city: "Berlin".into(),
        region: None,
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

fn dob() -> NaiveDate {
    NaiveDate::parse_from_str(DOB, "%Y-%m-%d").expect("a date")
}

/// The customer's life before erasure: one event of every customer event
/// type but the two of erasure, each personal field with a distinctive value.
fn life(id: &str) -> Vec<CustomerEvent> {
    let grant = |ip: Option<&str>, ua: Option<&str>| CustomerEvent::ConsentGranted {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        method: ConsentMethod::PreferenceCentre,
        ip: ip.map(str::to_string),
        user_agent: ua.map(str::to_string),
        gdpr: GdprContext::new(Purpose::Marketing, ConsentMethod::PreferenceCentre, Some("DE".into())),
    };
    vec![
        CustomerEvent::CustomerRegistered {
            customer_id: id.into(),
            email: EMAIL_1.into(),
            first_name: FIRST_1.into(),
            last_name: LAST_1.into(),
            phone: Some(PHONE_1.into()),
            source: RegistrationSource::Web,
            ip: IP_1.into(),
            user_agent: UA_1.into(),
            timezone: Some("Europe/Berlin".into()),
            locale: Some("de-DE".into()),
            terms_accepted: true,
        },
        grant(Some(IP_2), Some(UA_2)),
        CustomerEvent::EmailVerificationRequested {
            email: EMAIL_1.into(),
            token: "verification-token".into(),
        },
        CustomerEvent::EmailVerified { email: EMAIL_1.into() },
        CustomerEvent::CustomerEmailChanged {
            old_email: EMAIL_1.into(),
            new_email: EMAIL_2.into(),
        },
        CustomerEvent::CustomerNameChanged {
            old_first_name: FIRST_1.into(),
            old_last_name: LAST_1.into(),
            new_first_name: FIRST_2.into(),
            new_last_name: LAST_2.into(),
        },
        CustomerEvent::CustomerPhoneChanged {
            old_phone: Some(PHONE_1.into()),
            new_phone: Some(PHONE_2.into()),
        },
        CustomerEvent::CustomerAddressChanged {
            old_address: None,
            new_address: Some(address(STREET_1)),
        },
        CustomerEvent::CustomerAddressChanged {
            old_address: Some(address(STREET_1)),
            new_address: Some(address(STREET_2)),
        },
        CustomerEvent::CustomerDateOfBirthChanged {
            old_date_of_birth: None,
            new_date_of_birth: Some(dob()),
        },
        CustomerEvent::PreferencesUpdated {
            preferences: Preferences::default(),
        },
        CustomerEvent::CustomerDeactivated {
            reason: DeactivationReason::CustomerRequest,
            notes: Some(NOTES.into()),
            previous_status: CustomerStatus::Active,
        },
        CustomerEvent::CustomerReactivated {
            status: CustomerStatus::Active,
        },
        CustomerEvent::PushDeviceRegistered {
            platform: "apns".into(),
            token: PUSH_TOKEN.into(),
        },
        CustomerEvent::CustomerEmailInvalidated {
            email: EMAIL_2.into(),
            reason: "mailbox does not exist".into(),
        },
        CustomerEvent::CustomersMerged {
            merged_profile_id: "anon-sealed-1".into(),
        },
        CustomerEvent::ConsentRevoked {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            reason: "customer request".into(),
            method: Some(ConsentMethod::PreferenceCentre),
        },
        grant(Some(IP_1), Some(UA_1)),
    ]
}

/// The event store (encrypting, as every runtime has it), the keys, the
/// documents as stored and the sealed documents, and the groups of the
/// projector, consent and channel functions over them.
struct World {
    events: Arc<dyn EventStore>,
    keys: Arc<InMemoryKeyStore>,
    stored: Arc<InMemoryReadModels>,
    docs: Arc<SealedReadModels<InMemoryReadModels>>,
    groups: Vec<ConsumerGroup>,
    dead_letters: Arc<InMemoryDeadLetters>,
}

impl World {
    fn new() -> Self {
        let keys = Arc::new(InMemoryKeyStore::new());
        let events: Arc<dyn EventStore> = Arc::new(EncryptingEventStore::new(
            Arc::new(InMemoryEventStore::default()),
            keys.clone(),
        ));
        let stored = Arc::new(InMemoryReadModels::default());
        let docs = Arc::new(SealedReadModels::new(stored.clone(), keys.clone() as Arc<dyn KeyStore>));
        let dead_letters = Arc::new(InMemoryDeadLetters::default());
        let identifiers = IdentifierHasher::new(b"sealed read models");
        let sealed: Arc<dyn ReadModelStore> = docs.clone();
        let groups = vec![
            ConsumerGroup::projector(
                events.clone(),
                sealed.clone(),
                dead_letters.clone(),
                identifiers.clone(),
            ),
            ConsumerGroup::consent(
                events.clone(),
                sealed.clone(),
                dead_letters.clone(),
                identifiers.clone(),
            ),
            // The channel function's projections (its send log and suppression list).
            ConsumerGroup::new(
                "channel",
                vec![
                    Arc::new(MessageLogProjection),
                    Arc::new(SuppressionListProjection::new(identifiers)),
                ],
                events.clone(),
                sealed,
                dead_letters.clone(),
            ),
        ];
        World {
            events,
            keys,
            stored,
            docs,
            groups,
            dead_letters,
        }
    }

    /// Appends `events` to `stream` for `customer` and has every group handle them.
    async fn record<E: DomainEvent>(&self, stream: &str, customer: &str, events: &[E]) {
        let meta = CommandMeta::new(Actor::system("test"));
        let envelopes = envelopes(stream, Some(customer), events, &meta, test_time()).expect("envelopes");
        let appended = self
            .events
            .append(AppendRequest {
                stream_id: stream.into(),
                expected: ExpectedVersion::Any,
                events: envelopes,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("append");
        // As the bus carries them: read back from the store, decrypted.
        let first = appended.version - events.len() as u64;
        let stored: Vec<EventEnvelope> = self.events.read_stream(stream, first, usize::MAX).await.expect("read");
        for event in &stored {
            for group in &self.groups {
                let outcome = group.handle(event, test_time()).await.expect("handled");
                assert!(
                    outcome.parked.is_empty(),
                    "{} parked {:?}",
                    event.event_type,
                    outcome.parked
                );
            }
        }
        let letters = self.dead_letters.letters.lock().expect("letters");
        assert!(letters.is_empty(), "dead letters: {letters:?}");
    }

    /// Every plaintext of [`PERSONAL`] found in a stored document (keys and
    /// body outside ciphertext).
    fn plaintext_found(&self) -> Vec<String> {
        let mut found = Vec::new();
        for ((consumer, partition, sort), body) in self.stored.dump() {
            let text = format!("{partition} {sort} {}", text_outside_ciphertext(&body));
            for p in PERSONAL {
                if text.contains(p) {
                    found.push(format!("{p} in {consumer}/{partition}/{sort}"));
                }
            }
        }
        found
    }
}

#[tokio::test]
async fn every_personal_value_of_every_projection_is_sealed() {
    let w = World::new();
    let id = customer_id(4501);
    let life = life(&id);
    // Derived, not kept by hand: the customer lives through every event
    // type of the customer stream (erasure's two come last).
    for t in CUSTOMER_EVENT_TYPES {
        let erasure = matches!(*t, "CustomerErasureRequested" | "CustomerErased");
        assert!(
            erasure || life.iter().any(|e| e.event_type() == *t),
            "{t} is not in the customer's life"
        );
    }
    w.record(&format!("customer-{id}"), &id, &life).await;
    // An order shipped to and billed at their addresses, a message sent to them.
    let item = OrderItem {
        product_id: "sku-1".into(),
        name: "Teapot".into(),
        category: Some("kitchen".into()),
        quantity: 1,
        unit_price_minor: 2500,
    };
    let placed = OrderEvent::OrderPlaced {
        order_id: "ord-sealed-1".into(),
        customer_id: id.clone(),
        cart_id: None,
        items: vec![item],
        subtotal_minor: 2500,
        tax_minor: 0,
        shipping_minor: 0,
        total_minor: 2500,
        currency: "EUR".into(),
        shipping_address: Some(address(STREET_1)),
        billing_address: Some(address(STREET_2)),
        discount_minor: 0,
        adjustment_minor: 0,
    };
    w.record(&crate::commerce::order::stream_id("ord-sealed-1"), &id, &[placed])
        .await;
    let sent: MessageEvent = serde_json::from_value(json!({
        "type": "MessageSent",
        "data": {
            "message_id": "msg-sealed-1", "customer_id": id, "channel": "email", "category": "marketing",
            "campaign_id": "welcome", "provider_message_id": "ses-1"
        }
    }))
    .expect("a MessageSent");
    w.record(&message_stream("msg-sealed-1"), &id, &[sent]).await;

    // Stored: no personal value in clear in any document of any consumer.
    assert_eq!(w.plaintext_found(), Vec::<String>::new());
    let consumers: std::collections::BTreeSet<String> = w.stored.dump().keys().map(|(c, _, _)| c.clone()).collect();
    for sealed in SEALED_DOCUMENTS {
        assert!(consumers.contains(sealed.consumer), "{} wrote nothing", sealed.consumer);
    }

    // Read through the seal: as the projections made them.
    let profile = customer_profile(w.docs.as_ref(), &id)
        .await
        .expect("read")
        .expect("a 360");
    let c = &profile.customer;
    assert_eq!(
        (c.email.as_str(), c.first_name.as_str(), c.last_name.as_str()),
        (EMAIL_2, FIRST_2, LAST_2)
    );
    assert_eq!(c.phone.as_deref(), Some(PHONE_2));
    assert_eq!(c.address, Some(address(STREET_2)));
    assert_eq!(c.date_of_birth, Some(dob()));
    assert_eq!(c.push_devices[0].token, PUSH_TOKEN);
    let entries = timeline(w.docs.as_ref(), &id, 0, 100).await.expect("timeline");
    assert_eq!(entries.len(), life.len());
    assert_eq!(entries[0].ip.as_deref(), Some(IP_1));
    assert_eq!(entries[0].user_agent.as_deref(), Some(UA_1));
    assert_eq!(entries[0].changes[0].new, json!(EMAIL_1));
    let email_change = entries
        .iter()
        .find(|e| e.event_type == "CustomerEmailChanged")
        .expect("entry");
    assert_eq!(
        (&email_change.changes[0].old, &email_change.changes[0].new),
        (&json!(EMAIL_1), &json!(EMAIL_2))
    );
    let current = current_consents(w.docs.as_ref(), &id).await.expect("consents");
    assert_eq!(current[0].proof.ip.as_deref(), Some(IP_1));
    let history = consent_history(w.docs.as_ref(), &id).await.expect("history");
    assert_eq!(history[0].user_agent.as_deref(), Some(UA_2));

    // The key deleted (erasure's first step, before CustomerErased is
    // projected): every view reads [erased], the types still read.
    w.keys.delete(&id).await.expect("delete");
    let profile = customer_profile(w.docs.as_ref(), &id)
        .await
        .expect("read")
        .expect("a 360");
    let c = &profile.customer;
    assert_eq!(
        (c.email.as_str(), c.first_name.as_str(), c.last_name.as_str()),
        (ERASED, ERASED, ERASED)
    );
    assert_eq!(c.phone.as_deref(), Some(ERASED));
    assert_eq!((c.address.as_ref(), c.date_of_birth), (None, None));
    assert_eq!(c.push_devices[0].token, ERASED);
    assert_eq!(c.push_devices[0].platform, "apns");
    let entries = timeline(w.docs.as_ref(), &id, 0, 100).await.expect("timeline");
    // The IP and user agent are absent once erased, as the timeline showed them before 0045.
    assert_eq!(
        (entries[0].ip.as_deref(), entries[0].user_agent.as_deref()),
        (None, None)
    );
    for entry in &entries {
        for change in &entry.changes {
            let kept = change.field == "status" || change.field.starts_with("consent.");
            for value in [&change.old, &change.new] {
                if kept {
                    assert_ne!(value, &json!(ERASED), "{} {}", entry.event_type, change.field);
                } else if !value.is_null() {
                    assert_eq!(value, &json!(ERASED), "{} {}", entry.event_type, change.field);
                }
            }
        }
    }
    let deactivated = entries
        .iter()
        .find(|e| e.event_type == "CustomerDeactivated")
        .expect("entry");
    assert_eq!(deactivated.changes[0].new, json!("deactivated"));
    let current = current_consents(w.docs.as_ref(), &id).await.expect("consents");
    assert_eq!(current[0].proof.user_agent.as_deref(), Some(ERASED));
    let history = consent_history(w.docs.as_ref(), &id).await.expect("history");
    let ips: Vec<Option<&str>> = history.iter().map(|h| h.ip.as_deref()).collect();
    assert_eq!(ips, [Some(ERASED), None, Some(ERASED)]);

    // Erasure completes: the rest of the stream is projected, nothing leaks.
    w.record(
        &format!("customer-{id}"),
        &id,
        &[
            CustomerEvent::CustomerErasureRequested {
                identifiers: Vec::new(),
            },
            CustomerEvent::CustomerErased {},
        ],
    )
    .await;
    assert_eq!(w.plaintext_found(), Vec::<String>::new());
    let profile = customer_profile(w.docs.as_ref(), &id)
        .await
        .expect("read")
        .expect("a 360");
    assert_eq!(profile.customer.status, CustomerStatus::Erased);
    assert_eq!(
        (profile.customer.email.as_str(), profile.customer.phone.as_deref()),
        (ERASED, None)
    );
    let last = timeline(w.docs.as_ref(), &id, 0, 100).await.expect("timeline");
    assert_eq!(last.last().expect("entry").changes[0].new, json!("erased"));
}

#[tokio::test]
async fn erasure_of_a_long_timeline_rewrites_nothing_and_reads_erased() {
    let w = World::new();
    let id = customer_id(4502);
    let mut life = life(&id);
    // Well over what one commit may carry (MAX_OPS_PER_COMMIT): 300 and more entries.
    for n in 0..300 {
        let (old, new) = if n % 2 == 0 {
            (PHONE_2, PHONE_1)
        } else {
            (PHONE_1, PHONE_2)
        };
        life.push(CustomerEvent::CustomerPhoneChanged {
            old_phone: Some(old.into()),
            new_phone: Some(new.into()),
        });
    }
    for chunk in life.chunks(50) {
        w.record(&format!("customer-{id}"), &id, chunk).await;
    }
    assert_eq!(w.plaintext_found(), Vec::<String>::new());

    w.record(
        &format!("customer-{id}"),
        &id,
        &[CustomerEvent::CustomerErasureRequested {
            identifiers: Vec::new(),
        }],
    )
    .await;
    w.keys.delete(&id).await.expect("delete");
    // Recorded and projected: nothing parked (`record` checks), every entry erased.
    w.record(&format!("customer-{id}"), &id, &[CustomerEvent::CustomerErased {}])
        .await;
    let mut entries = Vec::new();
    loop {
        let after = entries
            .last()
            .map_or(0, |e: &crate::customer::views::TimelineEntry| e.version);
        let page = timeline(w.docs.as_ref(), &id, after, 500).await.expect("timeline");
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    assert_eq!(entries.len(), life.len() + 2);
    let phones: Vec<_> = entries
        .iter()
        .flat_map(|e| &e.changes)
        .filter(|c| c.field == "phone")
        .collect();
    assert_eq!(phones.len(), 302);
    assert!(phones.iter().all(|c| c.new == json!(ERASED)));
    assert_eq!(entries.last().expect("entry").changes[0].new, json!("erased"));
}

fn key() -> DataKey {
    DataKey::generate().expect("a key")
}

#[test]
fn a_document_sealed_twice_opens_once_and_only_for_its_customer_and_field() {
    let k = key();
    let plain = json!({
        "type": "CustomerEmailChanged",
        "ip": IP_1,
        "user_agent": null,
        "changes": [
            { "field": "email", "old": EMAIL_1, "new": EMAIL_2 },
            { "field": "status", "old": "active", "new": "pending-verification" },
            { "field": "consent.marketing.email", "old": "inactive", "new": "active" },
            { "field": "address", "old": null, "new": { "line1": STREET_1 } }
        ]
    });
    let mut body = plain.clone();
    seal_document(TIMELINE, "entry#0000000005", "cus-1", Some(&k), &mut body).expect("seal");
    let text = text_outside_ciphertext(&body);
    for p in [IP_1, EMAIL_1, EMAIL_2, STREET_1] {
        assert!(!text.contains(p), "{p} in {text}");
    }
    // Status and consent changes, nulls and the rest stay as they were.
    assert_eq!(body["changes"][1], plain["changes"][1]);
    assert_eq!(body["changes"][2], plain["changes"][2]);
    assert_eq!(body["changes"][3]["old"], json!(null));
    assert_eq!(body["user_agent"], json!(null));
    assert_eq!(body["type"], plain["type"]);

    let once = body.clone();
    seal_document(TIMELINE, "entry#0000000005", "cus-1", Some(&k), &mut body).expect("seal again");
    assert_eq!(body, once);

    let mut opened = body.clone();
    open_document(TIMELINE, "entry#0000000005", "cus-1", Some(&k), &mut opened).expect("open");
    assert_eq!(opened, plain);

    // Another customer, another consumer's field, another key: refused.
    let mut other = body.clone();
    assert!(open_document(TIMELINE, "entry#1", "cus-2", Some(&k), &mut other).is_err());
    let mut moved = json!({ "proof": { "ip": body["ip"].clone() } });
    assert!(open_document(CONSENT_LEDGER, "current#marketing#email", "cus-1", Some(&k), &mut moved).is_err());
    let mut wrong = body.clone();
    assert!(open_document(TIMELINE, "entry#1", "cus-1", Some(&key()), &mut wrong).is_err());

    // No key: every personal value reads [erased], sealed or plain.
    let mut erased = body.clone();
    open_document(TIMELINE, "entry#1", "cus-1", None, &mut erased).expect("erased");
    assert_eq!(erased["ip"], ERASED);
    assert_eq!(erased["changes"][0]["old"], ERASED);
    assert_eq!(
        erased["changes"][3],
        json!({ "field": "address", "old": null, "new": ERASED })
    );
    assert_eq!(erased["changes"][1], plain["changes"][1]);
    let mut plain_erased = plain.clone();
    open_document(TIMELINE, "entry#1", "cus-1", None, &mut plain_erased).expect("erased");
    assert_eq!(plain_erased, erased);
    // Written with no key: the marker, never the value.
    let mut written = plain.clone();
    seal_document(TIMELINE, "entry#1", "cus-1", None, &mut written).expect("written");
    assert_eq!(written, erased);

    // With a key, a document written before sealing reads as it is.
    let mut before = plain.clone();
    open_document(TIMELINE, "entry#1", "cus-1", Some(&k), &mut before).expect("plain");
    assert_eq!(before, plain);

    // Documents the table does not name pass untouched.
    let mut state = json!({ "status": "active", "ip": IP_1 });
    seal_document(TIMELINE, "state", "cus-1", Some(&k), &mut state).expect("untouched");
    assert_eq!(state["ip"], IP_1);
}

/// A key store that counts its lookups.
#[derive(Default)]
struct CountingKeys {
    inner: InMemoryKeyStore,
    lookups: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl KeyStore for CountingKeys {
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        self.inner.data_key(customer_id).await
    }
    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.existing_key(customer_id).await
    }
    async fn delete(&self, customer_id: &str) -> Result<(), KeyError> {
        self.inner.delete(customer_id).await
    }
}

#[tokio::test]
async fn the_read_side_never_creates_a_key_and_looks_one_up_only_for_personal_values() {
    let keys = Arc::new(CountingKeys::default());
    let stored = Arc::new(InMemoryReadModels::default());
    let docs = SealedReadModels::new(stored.clone(), keys.clone() as Arc<dyn KeyStore>);
    let put = |sort: &str, body: Value| ReadOp::Put {
        partition: "cus-9".into(),
        sort: sort.into(),
        body,
    };
    // No personal value: nothing looked up.
    docs.commit(
        TIMELINE,
        "customer-cus-9",
        0,
        1,
        vec![
            put("state", json!({ "status": "active" })),
            put(
                "entry#1",
                json!({ "changes": [{ "field": "status", "old": null, "new": "active" }] }),
            ),
        ],
    )
    .await
    .expect("commit");
    assert_eq!(keys.lookups.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A personal value of a customer with no key: written as the marker, no key made.
    docs.commit(
        TIMELINE,
        "customer-cus-9",
        1,
        2,
        vec![put("entry#2", json!({ "ip": IP_1, "changes": [] }))],
    )
    .await
    .expect("commit");
    assert_eq!(keys.inner.existing_key("cus-9").await.expect("keys"), None);
    let raw = stored
        .get(TIMELINE, "cus-9", "entry#2")
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(raw["ip"], ERASED);
    // With a key, one lookup for a page of one partition.
    keys.data_key("cus-9").await.expect("key");
    docs.commit(
        TIMELINE,
        "customer-cus-9",
        2,
        3,
        vec![
            put("entry#3", json!({ "ip": IP_1, "changes": [] })),
            put("entry#4", json!({ "ip": IP_2, "changes": [] })),
        ],
    )
    .await
    .expect("commit");
    let before = keys.lookups.load(std::sync::atomic::Ordering::SeqCst);
    let page = docs
        .list(TIMELINE, "cus-9", "entry#", Some("entry#2"), 10)
        .await
        .expect("list");
    assert_eq!(keys.lookups.load(std::sync::atomic::Ordering::SeqCst), before + 1);
    assert_eq!(
        page.iter().map(|(_, b)| b["ip"].clone()).collect::<Vec<_>>(),
        vec![json!(IP_1), json!(IP_2)]
    );
    assert!(is_encrypted(
        stored
            .get(TIMELINE, "cus-9", "entry#3")
            .await
            .expect("get")
            .expect("doc")["ip"]
            .as_str()
            .expect("text")
    ));
    // Checkpoints pass through.
    assert_eq!(
        docs.checkpoint(TIMELINE, "customer-cus-9").await.expect("checkpoint"),
        3
    );
}
