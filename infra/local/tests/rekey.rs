//! Keyed lookups over a real SQLite file (decision 0046): after a
//! registration no key names the address or its unkeyed SHA-256, the email
//! stays unique, the email and name lookups find the customer, an erasure
//! leaves the name index; and `crm-local rekey` moves a reservation made
//! before keyed hashes.

use crm_core::customer::name_index::customers_with_name;
use crm_core::customer::views::customers_with_email;
use crm_core::customer::{
    email_reservation_key, unkeyed_email_reservation_key, CommandError, Customer, CustomerCommand, CustomerService,
};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::{AppendRequest, EventStore, ExpectedVersion, ReservationChange};
use crm_core::privacy::IdentifierHasher;
use crm_core::testing::{customer_id, registration};
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;
use std::path::Path;

fn open(db: &Path) -> LocalRuntime {
    LocalRuntime::open(db, BUILT_IN_TEMPLATE).expect("open runtime")
}

fn customers(runtime: &LocalRuntime) -> CustomerService {
    CustomerService::new(runtime.command_store(), runtime.clock.clone()).with_identifiers(runtime.identifiers.clone())
}

async fn register(runtime: &LocalRuntime, id: &str, email: &str, last_name: &str) -> Result<(), CommandError> {
    let respond = |c: &Customer, _: &[EventEnvelope]| (201, serde_json::json!({ "id": c.id }));
    customers(runtime)
        .execute(
            id,
            &CustomerCommand::Register(registration(email, "Ada", last_name, "UTC")),
            &CommandMeta::new(Actor::system("test")),
            None,
            &respond,
        )
        .await
        .map(|_| ())
}

fn column(db: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open sqlite");
    let mut stmt = conn.prepare(sql).expect(sql);
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).expect(sql);
    rows.map(|r| r.expect("row")).collect()
}

/// Every key column of the database: reservation keys, stream ids, read
/// model partitions and sort keys.
fn keys(db: &Path) -> Vec<String> {
    [
        "SELECT key FROM reservations",
        "SELECT DISTINCT stream_id FROM events",
        "SELECT partition || ' ' || sort FROM read_models",
    ]
    .into_iter()
    .flat_map(|sql| column(db, sql))
    .collect()
}

/// The email reservations' keys.
fn reservation_keys(db: &Path) -> Vec<String> {
    column(db, "SELECT key FROM reservations WHERE key LIKE 'email#%'")
}

#[tokio::test]
async fn lookups_are_keyed_and_a_reservation_made_before_is_moved_by_rekey() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let email = format!("keyed.lookup.{unique}@example.com");
    let last_name = format!("Keyedlookup{unique}");
    let (ada, other) = (customer_id(1), customer_id(2));

    let runtime = open(&db);
    register(&runtime, &ada, &email, &last_name).await.expect("registered");
    runtime.bus.settle().await.expect("settle");

    let keyed = email_reservation_key(&runtime.identifiers, &email);
    let unkeyed = unkeyed_email_reservation_key(&email);
    let stored = keys(&db);
    assert!(stored.contains(&keyed), "{stored:?}");
    for forbidden in [&email, &last_name.to_lowercase(), &last_name, &unkeyed] {
        assert!(
            !stored
                .iter()
                .any(|k| k.contains(forbidden.trim_start_matches("email#"))),
            "{forbidden} in {stored:?}"
        );
    }
    assert_ne!(
        email_reservation_key(&IdentifierHasher::new(b"another secret"), &email),
        keyed,
        "another secret, another key"
    );

    // Unique: the same address (any case) is refused for another customer.
    assert!(matches!(
        register(&runtime, &other, &email.to_uppercase(), "Other").await,
        Err(CommandError::EmailTaken { .. })
    ));
    // Found by email and by exact last name (any case).
    assert_eq!(
        customers_with_email(runtime.docs.as_ref(), &runtime.identifiers, &email.to_uppercase())
            .await
            .expect("by email"),
        std::slice::from_ref(&ada)
    );
    assert_eq!(
        customers_with_name(
            runtime.docs.as_ref(),
            &runtime.identifiers,
            &last_name.to_uppercase(),
            10
        )
        .await
        .expect("by name"),
        std::slice::from_ref(&ada)
    );

    // As before decision 0046: the reservation under the unkeyed SHA-256.
    let owner = format!("customer-{ada}");
    runtime
        .stored_events
        .append(AppendRequest {
            stream_id: owner.clone(),
            expected: ExpectedVersion::Any,
            events: Vec::new(),
            reservations: vec![
                ReservationChange::Claim {
                    key: unkeyed.clone(),
                    owner: owner.clone(),
                },
                ReservationChange::Release {
                    key: keyed.clone(),
                    owner: owner.clone(),
                },
            ],
            receipt: None,
        })
        .await
        .expect("unkeyed");
    assert_eq!(reservation_keys(&db), std::slice::from_ref(&unkeyed));
    // Still unique while it waits for the migration.
    assert!(matches!(
        register(&runtime, &other, &email, "Other").await,
        Err(CommandError::EmailTaken { .. })
    ));
    drop(runtime);

    let report = crm_local::cli::rekey::rekey(dir.path()).await.expect("rekey");
    assert_eq!((report.customers, report.rekeyed), (1, 1), "{report:?}");
    assert_eq!(reservation_keys(&db), std::slice::from_ref(&keyed));
    let again = crm_local::cli::rekey::rekey(dir.path()).await.expect("rekey again");
    assert_eq!((again.rekeyed, again.already_keyed), (0, 1));
    assert!(crm_local::cli::rekey::render(&again).contains("1 already keyed"));

    // Erased: the address can register again, and the name finds nobody.
    let runtime = open(&db);
    crm_local::cli::privacy::erase(&runtime, &db, &ada)
        .await
        .expect("erase");
    assert_eq!(reservation_keys(&db), Vec::<String>::new());
    assert!(
        customers_with_name(runtime.docs.as_ref(), &runtime.identifiers, &last_name, 10)
            .await
            .expect("by name")
            .is_empty()
    );
    assert!(
        customers_with_email(runtime.docs.as_ref(), &runtime.identifiers, &email)
            .await
            .expect("by email")
            .is_empty()
    );
    register(&runtime, &other, &email, "Other")
        .await
        .expect("registers again");
}
