//! `crm-local privacy migrate` (decision 0020) over a real data directory:
//! events appended before encryption at rest (written here through the
//! inner, non-encrypting SQLite store) are rewritten encrypted, read back as
//! they were, a second run changes nothing, and erasing afterwards shreds
//! them.

use crm_core::customer::{Customer, CustomerCommand, CustomerService, UpdateProfile};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::idempotency::IdempotencyKey;
use crm_core::ports::{EventStore, Snapshot};
use crm_core::privacy::migrate::plaintext_paths;
use crm_core::privacy::ERASED;
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// The personal data the plain events hold.
const PLAIN: &[&str] = &[
    "plain.old@shop.example",
    "Grace",
    "Hopper",
    "+12025550123",
    "198.51.100.4",
    "Mozilla/5.0",
    "1 Main St",
];

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (201, json!({ "id": c.id, "email": c.email }))
}

/// Every stored event row's payload, as stored.
fn raw_rows(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let mut s = conn
        .prepare("SELECT event_id, data FROM events ORDER BY position")
        .expect("select");
    let rows = s
        .query_map([], |r| {
            Ok(format!("{} {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// The events' payloads, the receipts' bodies and the snapshots' states, as stored.
fn all_rows(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let mut out = raw_rows(db);
    for sql in ["SELECT body FROM receipts", "SELECT state FROM snapshots"] {
        let mut s = conn.prepare(sql).expect("select");
        let rows = s.query_map([], |r| r.get::<_, String>(0)).expect("query");
        out.extend(rows.map(|r| r.expect("row")));
    }
    out.join("\n")
}

fn migrate(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["privacy", "migrate", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run crm-local");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "privacy migrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A customer whose commands were appended through the inner SQLite store
/// (as before decision 0017): their personal fields are stored plain.
async fn plain_customer(runtime: &LocalRuntime, idempotency: Option<&IdempotencyKey>) -> (String, CustomerService) {
    let id = uuid::Uuid::now_v7().to_string();
    let plain_store: std::sync::Arc<dyn EventStore> = runtime.stored_events.clone();
    let old = CustomerService::new(plain_store, runtime.clock.clone()).with_identifiers(runtime.identifiers.clone());
    let meta = CommandMeta::new(Actor::system("before-encryption"));
    let register = serde_json::from_value(json!({
        "email": "plain.old@shop.example", "first_name": "Grace", "last_name": "Hopper",
        "phone": "+12025550123", "source": "web", "terms_accepted": true,
        "marketing_consent": { "email": true, "sms": false, "push": false },
        "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"
    }))
    .expect("registration");
    old.execute(&id, &CustomerCommand::Register(register), &meta, idempotency, &respond)
        .await
        .expect("register");
    let address: UpdateProfile = serde_json::from_value(json!({
        "address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    }))
    .expect("profile");
    old.execute(&id, &CustomerCommand::UpdateProfile(address), &meta, None, &respond)
        .await
        .expect("address");
    (id, old)
}

#[tokio::test]
async fn erasing_without_migrating_first_still_shreds_the_plain_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");
    let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE).expect("open");
    let idempotency = IdempotencyKey::new("ops", "signup-2", "POST", "/customers", b"{}");
    let (id, old) = plain_customer(&runtime, Some(&idempotency)).await;
    let state = serde_json::to_value(old.load(&id).await.expect("load").expect("customer")).expect("state");
    runtime
        .stored_events
        .save_snapshot(Snapshot {
            stream_id: format!("customer-{id}"),
            version: 2,
            state_schema: 1,
            state,
        })
        .await
        .expect("plain snapshot");
    let plain_events = runtime
        .stored_events
        .read_stream(&format!("customer-{id}"), 0, usize::MAX)
        .await
        .expect("raw")
        .iter()
        .filter(|e| !plaintext_paths(e).is_empty())
        .count();
    assert!(all_rows(&db).contains("plain.old@shop.example"));

    let out = Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["privacy", "erase", &id, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run crm-local");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("erased customer {id}")), "{stdout}");
    // Their plain events (and the journeys' copies of them) now read [erased].
    let rewritten: usize = stdout
        .lines()
        .find_map(|l| l.split(" of their events").next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    assert!(rewritten >= plain_events, "{stdout}");
    let text = all_rows(&db);
    for plain in PLAIN {
        assert!(!text.contains(plain), "{plain} is stored in plain text after erasure");
    }
    let read = runtime
        .events
        .read_stream(&format!("customer-{id}"), 0, usize::MAX)
        .await
        .expect("read");
    assert!(read
        .iter()
        .filter(|e| e.event_type == "CustomerRegistered")
        .all(|e| e.data["email"] == ERASED));
}

#[tokio::test]
async fn plaintext_events_are_encrypted_once_read_as_before_and_shredded_by_erasure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");
    let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE).expect("open");

    // Before decision 0017: the customer's commands appended through the
    // inner SQLite store, so their personal fields are stored plain.
    let idempotency = IdempotencyKey::new("ops", "signup-1", "POST", "/customers", b"{}");
    let (id, old) = plain_customer(&runtime, Some(&idempotency)).await;

    let stream = format!("customer-{id}");
    // A snapshot of the customer stream, stored plain as before encryption.
    let state = serde_json::to_value(old.load(&id).await.expect("load").expect("customer")).expect("state");
    runtime
        .stored_events
        .save_snapshot(Snapshot {
            stream_id: stream.clone(),
            version: 2,
            state_schema: 1,
            state,
        })
        .await
        .expect("plain snapshot");
    let receipt_before = runtime
        .events
        .receipt(&idempotency.receipt_key)
        .await
        .expect("receipt")
        .expect("stored");
    assert_eq!(receipt_before.body["email"], "plain.old@shop.example");
    let stored_plain = runtime
        .stored_events
        .read_stream(&stream, 0, usize::MAX)
        .await
        .expect("raw");
    let with_plain = stored_plain.iter().filter(|e| !plaintext_paths(e).is_empty()).count();
    assert!(with_plain >= 2, "the old events hold plain personal data");
    let rows = all_rows(&db);
    for plain in PLAIN {
        assert!(rows.contains(plain), "the setup stored {plain} in plain text");
    }
    assert!(runtime.keys.existing_key(&id).await.expect("keys").is_none());
    let before = runtime.events.read_stream(&stream, 0, usize::MAX).await.expect("read");

    // Migrate: the counts, the rows, and the same values read back.
    let first = migrate(dir.path());
    assert!(first.contains(&format!("{with_plain} encrypted, 0 erased")), "{first}");
    assert!(first.contains("data keys created: 1"), "{first}");
    assert!(first.contains("dropped: 1; receipts sealed: 1"), "{first}");
    let migrated_rows = raw_rows(&db);
    let text = all_rows(&db);
    for plain in PLAIN {
        assert!(!text.contains(plain), "{plain} is still stored in plain text");
    }
    let after = runtime.events.read_stream(&stream, 0, usize::MAX).await.expect("read");
    assert_eq!(after, before, "the encrypting store reads the original values");
    let receipt_after = runtime
        .events
        .receipt(&idempotency.receipt_key)
        .await
        .expect("receipt")
        .expect("stored");
    assert_eq!(receipt_after, receipt_before, "the sealed receipt reads as before");
    let loaded = runtime.events.load(&stream).await.expect("load");
    assert!(loaded.snapshot.is_none(), "the plain snapshot was dropped");
    let raw = runtime
        .stored_events
        .read_stream(&stream, 0, usize::MAX)
        .await
        .expect("raw");
    assert!(raw.iter().all(|e| plaintext_paths(e).is_empty()));

    // Again: nothing changes.
    let second = migrate(dir.path());
    assert!(second.contains("0 encrypted, 0 erased"), "{second}");
    assert!(second.contains("data keys created: 0"), "{second}");
    assert!(second.contains("dropped: 0; receipts sealed: 0"), "{second}");
    assert_eq!(raw_rows(&db), migrated_rows, "a second run rewrote rows");

    // Erasure now shreds them.
    let erased = crm_local::cli::privacy::erase(&runtime, &db, &id).await.expect("erase");
    assert_eq!(erased.plain_events_erased, 0, "nothing was left plain");
    let erased = runtime.events.read_stream(&stream, 0, usize::MAX).await.expect("read");
    let registered = erased
        .iter()
        .find(|e| e.event_type == "CustomerRegistered")
        .expect("registration");
    for field in ["email", "first_name", "last_name", "phone", "ip", "user_agent"] {
        assert_eq!(registered.data[field], ERASED, "{field}");
    }
    let moved = erased
        .iter()
        .find(|e| e.event_type == "CustomerAddressChanged")
        .expect("address change");
    assert_eq!(moved.data["new_address"], ERASED);
    let text = all_rows(&db);
    for plain in PLAIN {
        assert!(!text.contains(plain), "{plain} is stored in plain text after erasure");
    }
}

#[tokio::test]
async fn the_commands_refuse_a_missing_database_and_an_unknown_customer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args([
            "privacy",
            "export",
            "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run crm-local");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("crm.db").exists(), "no database was created");

    LocalRuntime::open(&dir.path().join("crm.db"), BUILT_IN_TEMPLATE).expect("create the database");
    for args in [
        ["privacy", "export", "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"],
        ["privacy", "erase", "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_crm-local"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run crm-local");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("not found"), "{args:?}: {stderr}");
    }
}
