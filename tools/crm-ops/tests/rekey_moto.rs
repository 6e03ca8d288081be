//! `crm-ops rekey` against moto (decision 0046): a reservation made before
//! keyed hashes (`email#<sha256>`) is moved to the keyed key in the events
//! table, once; the address stays unique; no item's key names the address.

use crm_aws::dynamodb::{create_events_table, create_read_models_table};
use crm_aws::testing::{dynamodb_client, fresh_data_keys, moto_config};
use crm_core::customer::{email_reservation_key, unkeyed_email_reservation_key, CommandError, CustomerCommand};
use crm_core::customer::{Customer, CustomerService};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::{AppendRequest, EventStore, ExpectedVersion, ReservationChange};
use crm_core::privacy::IdentifierHasher;
use crm_core::testing::{customer_id, registration};
use crm_ops::{Clients, Settings, Tables};
use std::sync::Arc;
use uuid::Uuid;

const SECRET: &str = "crm-ops rekey on moto: identifier secret";

async fn tables(unique: &str) -> (Tables, String) {
    let dynamodb = dynamodb_client().await;
    let (events, docs) = (format!("events-rekey-{unique}"), format!("read-models-rekey-{unique}"));
    create_events_table(&dynamodb, &events).await.expect("events table");
    create_read_models_table(&dynamodb, &docs)
        .await
        .expect("read-models table");
    let data_keys = fresh_data_keys("rekey").await;
    let (keys, key_arn) = (data_keys.table, data_keys.key_arn);
    let settings = Settings {
        events_table: Some(events.clone()),
        read_models_table: Some(docs),
        keys_table: Some(keys),
        data_keys_kms_key_id: Some(key_arn),
        dead_letter_queue_url: None,
        event_bus_name: None,
        relay_dead_letter_queue_url: None,
        identifier_hash_secret: Some(SECRET.into()),
    };
    let clients = Clients::new(&moto_config().await);
    (Tables::new(&clients, &settings).expect("tables"), events)
}

async fn register(customers: &CustomerService, id: &str, email: &str) -> Result<(), CommandError> {
    let respond = |c: &Customer, _: &[EventEnvelope]| (201, serde_json::json!({ "id": c.id }));
    customers
        .execute(
            id,
            &CustomerCommand::Register(registration(email, "Ada", "Rekey", "UTC")),
            &CommandMeta::new(Actor::system("test")),
            None,
            &respond,
        )
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_reservation_made_before_keyed_hashes_is_moved_once() {
    let unique = Uuid::now_v7().simple().to_string();
    let (tables, events_table) = tables(&unique).await;
    let identifiers = IdentifierHasher::new(SECRET.as_bytes());
    let customers = CustomerService::new(tables.events.clone(), Arc::new(crm_core::clock::SystemClock))
        .with_identifiers(identifiers.clone());
    let email = format!("rekey.{unique}@example.com");
    let (ada, other) = (customer_id(1), customer_id(2));
    register(&customers, &ada, &email).await.expect("registered");

    // Put the reservation back as it was before decision 0046.
    let (keyed, unkeyed) = (
        email_reservation_key(&identifiers, &email),
        unkeyed_email_reservation_key(&email),
    );
    let owner = format!("customer-{ada}");
    tables
        .stored
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
    assert_eq!(tables.stored.reservation_owner(&keyed).await.expect("owner"), None);

    let report = crm_ops::rekey::rekey(&tables, Some(SECRET)).await.expect("rekey");
    assert_eq!(
        (report.customers, report.rekeyed, report.already_keyed),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        tables.stored.reservation_owner(&keyed).await.expect("owner").as_deref(),
        Some(owner.as_str())
    );
    assert_eq!(tables.stored.reservation_owner(&unkeyed).await.expect("owner"), None);
    let again = crm_ops::rekey::rekey(&tables, Some(SECRET)).await.expect("again");
    assert_eq!((again.rekeyed, again.already_keyed), (0, 1));
    assert!(crm_ops::rekey::render(&again).contains("0 reservation(s) re-keyed"));
    assert!(matches!(
        crm_ops::rekey::rekey(&tables, None).await,
        Err(crm_ops::CliError::NoIdentifierSecret)
    ));

    // Still unique, and no item of the table names the address or its unkeyed hash.
    assert!(matches!(
        register(&customers, &other, &email.to_uppercase()).await,
        Err(CommandError::EmailTaken { .. })
    ));
    let items = dynamodb_client()
        .await
        .scan()
        .table_name(&events_table)
        .send()
        .await
        .expect("scan");
    let text = format!("{:?}", items.items());
    assert!(text.contains(keyed.trim_start_matches("email#")));
    for forbidden in [email.as_str(), unkeyed.trim_start_matches("email#")] {
        assert!(!text.contains(forbidden), "{forbidden} in the events table");
    }
}
