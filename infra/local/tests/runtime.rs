//! The local runtime end to end over a real SQLite file: the bus catches up
//! after a crash, redelivery is harmless, poison is parked and can be redriven.

use crm_core::clock::SystemClock;
use crm_core::consent::ledger;
use crm_core::customer::views;
use crm_core::customer::CustomerService;
use crm_core::ports::{AppendRequest, ConsumerHealth, DeadLetter, DeadLetterQueue, EventStore, ExpectedVersion};
use crm_core::testing::customer_id;
use crm_local::adapters::data_dir;
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;
use std::path::Path;
use std::sync::Arc;

async fn register(store: Arc<dyn EventStore>, n: usize) {
    let registration =
        crm_core::testing::registration(&format!("runtime{n}@example.com"), "Run", &format!("Time{n}"), "UTC");
    crm_core::testing::register(store, &customer_id(n), registration).await;
}

fn open(db: &Path) -> LocalRuntime {
    LocalRuntime::open(db, BUILT_IN_TEMPLATE).expect("open runtime")
}

#[tokio::test]
async fn killing_the_runtime_between_storing_and_relaying_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");

    // First life: ten customers relayed, ten more stored but never relayed
    // (the process dies before its bus runs again).
    let first = open(&db);
    for n in 0..10 {
        register(first.command_store(), n).await;
    }
    first.bus.settle().await.expect("settle");
    for n in 10..20 {
        register(first.events.clone(), n).await;
    }
    let waiting = first.bus.consumers().await.expect("health");
    let lag: u64 = waiting.iter().map(|c| c.lag).sum();
    assert!(lag > 0, "events are waiting");
    assert!(
        waiting.iter().all(|c| c.lag == 0 || c.lag_seconds.is_some()),
        "a waiting event has an age: {waiting:?}"
    );
    drop(first);

    // Second life: the bus resumes from its persisted cursors.
    let second = open(&db);
    second.bus.settle().await.expect("settle");
    for n in 0..20 {
        let id = customer_id(n);
        let profile = views::customer_profile(second.docs.as_ref(), &id)
            .await
            .expect("read")
            .expect("profile");
        assert_eq!(profile.customer.last_name, format!("Time{n}"));
        let consents = ledger::current_consents(second.docs.as_ref(), &id)
            .await
            .expect("ledger");
        assert_eq!(consents.len(), 1, "customer {n}");
    }
    let health = second.bus.consumers().await.expect("health");
    assert!(
        health
            .iter()
            .all(|c| c.lag == 0 && c.dead_letters == 0 && c.lag_seconds == Some(0)),
        "{health:?}"
    );

    // A crash after the effect but before the cursor moved redelivers
    // everything: the checkpoints make that harmless.
    let before = views::customer_profile(second.docs.as_ref(), &customer_id(3))
        .await
        .expect("read");
    second.bus.rewind("projector", 0).await.expect("rewind");
    second.bus.rewind("consent", 0).await.expect("rewind");
    second.bus.settle().await.expect("settle again");
    let after = views::customer_profile(second.docs.as_ref(), &customer_id(3))
        .await
        .expect("read");
    assert_eq!(after, before);
    assert_eq!(
        after.map(|p| p.event_counts.get("CustomerRegistered").copied()),
        Some(Some(1))
    );
}

#[tokio::test]
async fn a_poison_event_is_parked_and_a_parked_event_can_be_redriven() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");
    let runtime = open(&db);

    // A stored event whose data does not fit its type.
    let mut bad = crm_core::store_contract::event("customer-00000000-0000-7000-8000-00000000dead", 1);
    bad.event_type = "CustomerRegistered".into();
    bad.customer_id = Some("00000000-0000-7000-8000-00000000dead".into());
    runtime
        .events
        .append(AppendRequest {
            stream_id: bad.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![bad],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("append");
    register(runtime.command_store(), 1).await;
    runtime.bus.settle().await.expect("settle: poison does not block");
    assert!(
        views::customer_profile(runtime.docs.as_ref(), &customer_id(1))
            .await
            .expect("read")
            .is_some(),
        "later events still flow"
    );

    let letters = runtime.bus.dead_letters().list().await.expect("list");
    let consumers: Vec<&str> = letters.iter().map(|l| l.letter.consumer.as_str()).collect();
    assert_eq!(
        consumers,
        ["customer-360", "timeline", "email-index", "name-index", "proof-ledger"],
        "each consumer that could not use it parked it"
    );
    assert!(
        letters[0].letter.reason.contains("CustomerRegistered"),
        "{}",
        letters[0].letter.reason
    );
    let health = runtime.bus.consumers().await.expect("health");
    assert_eq!(
        health.iter().find(|c| c.name == "projector").map(|c| c.dead_letters),
        Some(4),
        "customer-360, timeline, email-index and name-index"
    );

    // Still poison: a redrive fails and parks it anew.
    assert!(runtime.bus.redrive(letters[0].id).await.is_err());

    // A good event that was parked (say, after a transient outage) is delivered by a redrive.
    let service = CustomerService::new(runtime.events.clone(), Arc::new(SystemClock));
    register(runtime.events.clone(), 2).await;
    let events = runtime
        .events
        .read_stream(&format!("customer-{}", customer_id(2)), 0, 10)
        .await
        .expect("read");
    runtime
        .bus
        .dead_letters()
        .park(DeadLetter {
            consumer: "consent".into(),
            reason: "consent ledger unavailable".into(),
            // The consent the ledger handles (a consumer writes nothing for the
            // types it does not handle, decision 0031, so the consent is what it missed).
            payload: serde_json::to_value(
                events
                    .iter()
                    .find(|e| e.event_type == "ConsentGranted")
                    .expect("the registration's consent"),
            )
            .expect("json"),
            failed_at: chrono::Utc::now(),
            attempts: 4,
        })
        .await
        .expect("park");
    let parked = runtime.bus.dead_letters().list().await.expect("list");
    let id = parked
        .iter()
        .find(|l| l.letter.consumer == "consent")
        .map(|l| l.id)
        .expect("parked");
    assert!(runtime.bus.redrive(id).await.expect("redrive"));
    assert_eq!(
        ledger::current_consents(runtime.docs.as_ref(), &customer_id(2))
            .await
            .expect("ledger")
            .len(),
        1
    );
    assert!(
        runtime
            .bus
            .dead_letters()
            .list()
            .await
            .expect("list")
            .iter()
            .all(|l| l.id != id),
        "removed"
    );
    assert!(!runtime.bus.redrive(id).await.expect("redrive"), "gone");
    drop(service);

    // The CLI sees the same table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["dlq", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run crm-local dlq list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("customer-360") && listing.contains("timeline"),
        "{listing}"
    );
}

/// Everything the local runtime and `serve` create in a fresh data
/// directory: the database and SQLite's WAL and shared-memory files
/// beside it (the stored secrets are in it), the master key and the
/// token, each its owner's alone, and the directory too.
#[cfg(unix)]
#[tokio::test]
async fn everything_created_in_a_fresh_data_directory_is_private() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("data");
    let token = crm_local::runtime::serve::token::load_or_create(&dir).expect("token");
    let runtime = LocalRuntime::open(&data_dir::database_path(&dir), BUILT_IN_TEMPLATE).expect("runtime");
    crm_core::testing::register(
        runtime.command_store(),
        &crm_core::testing::customer_id(1),
        crm_core::testing::registration("private@example.com", "Pri", "Vate", "UTC"),
    )
    .await;
    runtime.bus.settle().await.expect("settle");

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["crm.db", "crm.db-shm", "crm.db-wal", "master.key", "token"]);
    assert_eq!(mode(&dir), data_dir::DIR_MODE, "the data directory");
    for name in &names {
        assert_eq!(mode(&dir.join(name)), data_dir::FILE_MODE, "{name}");
    }
    // The secrets are rows of the private database, not files of their own.
    let conn = rusqlite::Connection::open(data_dir::database_path(&dir)).expect("open");
    let secrets: i64 = conn
        .query_row("SELECT count(*) FROM local_secrets", [], |r| r.get(0))
        .expect("secrets");
    assert!(secrets >= 3, "{secrets} secrets stored");
    assert_eq!(
        std::fs::read_to_string(data_dir::token_path(&dir)).expect("token file"),
        token
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}
