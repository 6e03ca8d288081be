//! Dead letters hold what was stored (issue 16 item 3, decision 0040): an
//! event a consumer of the local runtime cannot use is parked with its
//! personal fields encrypted, as the event store keeps them; the
//! `dead_letters` table never holds them in clear. `crm-local dlq show`
//! decrypts for display only, while the customer's key exists, and
//! `[erased]` after; a redriven letter is decrypted as stored events are.

use chrono::Utc;
use crm_core::consumer::{park_poison, SealedDeadLetters};
use crm_core::event::EventEnvelope;
use crm_core::ports::{AppendRequest, DeadLetterQueue, ExpectedVersion};
use crm_core::privacy::KeyStore;
use crm_tests::TestApi;
use serde_json::json;
use std::sync::Arc;

/// A customer whose personal values are long and found nowhere else.
const EMAIL: &str = "cordelia.ravensworth-dlq40@dead-letter-scan.example";
const FIRST: &str = "Cordeliaravensworth";
const LAST: &str = "Blackthornquay";
const PHONE: &str = "+4915712340040";
const IP: &str = "192.0.2.240";
const AGENT: &str = "DeadLetterScan/40.3 (Ravensworth; sqlite-table)";
const PLAIN: [&str; 6] = [EMAIL, FIRST, LAST, PHONE, IP, AGENT];

/// The `dead_letters` table as stored: one text per row, every column.
fn raw_dead_letters(api: &TestApi) -> Vec<String> {
    let conn = rusqlite::Connection::open(api.db_path()).expect("open the database file");
    let mut s = conn
        .prepare("SELECT id, consumer, reason, payload, failed_at FROM dead_letters ORDER BY id")
        .expect("select");
    let rows = s
        .query_map([], |r| {
            Ok(format!(
                "{} {} {} {} {}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// Each personal value that occurs in `texts`, and how often.
fn plaintext(texts: &[String]) -> Vec<(&'static str, usize)> {
    PLAIN
        .iter()
        .map(|p| (*p, texts.iter().map(|t| t.matches(p).count()).sum::<usize>()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A `CustomerRegistered` of `customer` carrying `data`, ready to append.
fn registration_event(customer: &str, data: serde_json::Value) -> EventEnvelope {
    let id = uuid::Uuid::now_v7();
    EventEnvelope {
        event_id: id,
        stream_id: format!("customer-{customer}"),
        version: 0,
        event_type: "CustomerRegistered".into(),
        schema_version: 1,
        customer_id: Some(customer.to_string()),
        occurred_at: Utc::now(),
        recorded_at: Utc::now(),
        causation_id: None,
        correlation_id: id,
        actor: "system:test".into(),
        data,
    }
}

#[tokio::test]
async fn a_poison_registration_is_parked_encrypted_and_shown_decrypted_until_erasure() {
    let api = TestApi::new();
    let customer = uuid::Uuid::now_v7().to_string();
    // A registration the projections cannot read (no `source`, no
    // `terms_accepted`), with every personal field: poison for them.
    let poison = registration_event(
        &customer,
        json!({ "customer_id": customer, "email": EMAIL, "first_name": FIRST, "last_name": LAST,
            "phone": PHONE, "ip": IP, "user_agent": AGENT }),
    );
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: poison.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![poison],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    api.runtime.bus.settle().await.expect("settle");

    let letters = api.runtime.bus.dead_letters().list().await.expect("letters");
    assert!(!letters.is_empty(), "the projections parked the registration");
    let raw = raw_dead_letters(&api);
    assert_eq!(
        plaintext(&raw),
        vec![],
        "the dead_letters table holds personal data in clear (the runtime must park through \
         crm_core::consumer::SealedDeadLetters, decision 0040): {raw:?}"
    );
    assert!(raw.iter().all(|row| row.contains("enc:v1:")), "{raw:?}");

    // `dlq show`: decrypted for display while the key exists; `--stored` as kept.
    let id = letters[0].id;
    let shown = crm_local::cli::dlq::show(&api.runtime, id, false).await.expect("show");
    assert_eq!(shown["payload"]["data"]["email"], EMAIL, "{shown}");
    assert_eq!(shown["payload"]["data"]["user_agent"], AGENT, "{shown}");
    let stored = crm_local::cli::dlq::show(&api.runtime, id, true)
        .await
        .expect("show --stored");
    assert_eq!(plaintext(&[stored.to_string()]), vec![], "{stored}");

    // Erased: the key is gone; show reads [erased], and the table is unchanged.
    api.runtime.keys.delete(&customer).await.expect("erase");
    let shown = crm_local::cli::dlq::show(&api.runtime, id, false).await.expect("show");
    assert_eq!(plaintext(&[shown.to_string()]), vec![], "{shown}");
    for field in ["email", "first_name", "last_name", "phone", "ip", "user_agent"] {
        assert_eq!(shown["payload"]["data"][field], "[erased]", "{field}: {shown}");
    }
    assert_eq!(raw_dead_letters(&api), raw, "display wrote nothing back");
}

#[tokio::test]
async fn a_sealed_letter_is_redriven_decrypted_as_stored_events_are() {
    let api = TestApi::new();
    let registration = json!({
        "email": EMAIL, "first_name": FIRST, "last_name": LAST, "phone": PHONE, "source": "web",
        "marketing_consent": { "email": true, "sms": false, "push": false }, "terms_accepted": true,
        "ip": IP, "user_agent": AGENT, "timezone": "Europe/Berlin", "locale": "de-DE"
    });
    let registered = api.call("POST", "/customers", Some(&registration.to_string())).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let customer = registered.body["id"].as_str().expect("id").to_string();
    let event = api
        .store
        .read_stream(&format!("customer-{customer}"), 0, 1)
        .await
        .expect("read")
        .remove(0);
    assert_eq!(event.data["email"], EMAIL, "the consumers see it decrypted");

    // The customer 360 lost it; its letter waits, parked as the runtime parks
    // poison (the decrypted envelope, sealed on the way in).
    api.runtime.docs.clear("customer-360").await.expect("clear");
    let sealed = SealedDeadLetters::new(
        Arc::new(api.runtime.bus.dead_letters().clone()) as Arc<dyn DeadLetterQueue>,
        api.runtime.keys.clone() as Arc<dyn KeyStore>,
    );
    park_poison(&sealed, "customer-360", &event, "store was down", Utc::now())
        .await
        .expect("parked");
    let raw = raw_dead_letters(&api);
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(plaintext(&raw), vec![], "{raw:?}");
    // The customer exists, their 360 is gone: retry later, not "no such customer".
    let gone = api.call("GET", &format!("/customers/{customer}"), None).await;
    assert_eq!(gone.status, 503, "{:?}", gone.body);

    // Redriven: the target decrypts it, the customer 360 holds the address again.
    let id = api.runtime.bus.dead_letters().list().await.expect("letters")[0].id;
    assert!(api.runtime.bus.redrive(id).await.expect("redrive"), "redriven");
    assert!(raw_dead_letters(&api).is_empty(), "the letter is removed once redriven");
    let back = api.call("GET", &format!("/customers/{customer}"), None).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
    assert_eq!(back.body["email"], EMAIL, "{:?}", back.body);
    assert_eq!(back.body["first_name"], FIRST, "{:?}", back.body);
}

#[tokio::test]
async fn letters_parked_in_clear_before_are_sealed_in_place_and_leave_no_bytes_behind() {
    let api = TestApi::new();
    let customer = uuid::Uuid::now_v7().to_string();
    api.runtime.keys.data_key(&customer).await.expect("the customer's key");
    // A letter as the runtime parked it before decision 0040: decrypted.
    let event = registration_event(
        &customer,
        json!({ "email": EMAIL, "first_name": FIRST, "last_name": LAST, "phone": PHONE, "ip": IP,
            "user_agent": AGENT, "source": "web", "terms_accepted": true }),
    );
    let raw_queue = api.runtime.bus.dead_letters().clone();
    park_poison(&raw_queue, "customer-360", &event, "old", Utc::now())
        .await
        .expect("parked in clear");
    assert_eq!(
        plaintext(&raw_dead_letters(&api)).len(),
        PLAIN.len(),
        "the old letter is in clear"
    );

    let db = api.db_path();
    let sealed = crm_local::cli::dlq::seal_all(&api.runtime, &db).await.expect("seal");
    assert_eq!(sealed, 1);
    let raw = raw_dead_letters(&api);
    assert_eq!(plaintext(&raw), vec![], "{raw:?}");
    // Zeroed where it was, and the WAL truncated: in no byte of the files.
    let files: Vec<String> = crm_local::adapters::data_dir::database_files(&db)
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(plaintext(&files), vec![], "the clear text is still in the SQLite files");
    let id = api.runtime.bus.dead_letters().list().await.expect("letters")[0].id;
    let shown = crm_local::cli::dlq::show(&api.runtime, id, false).await.expect("show");
    assert_eq!(shown["payload"]["data"]["email"], EMAIL, "{shown}");
    assert_eq!(
        crm_local::cli::dlq::seal_all(&api.runtime, &db).await.expect("again"),
        0,
        "sealing twice changes nothing"
    );
}
