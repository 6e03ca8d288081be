//! Read models sealed on the local runtime over a real SQLite file (decision
//! 0045): documents stored plain by an older version are rebuilt encrypted
//! by `crm-local replay`, and no plaintext is left in the database file or
//! its WAL.

use crm_core::consent::ledger::{self, CONSENT_LEDGER};
use crm_core::customer::views::{self, CUSTOMER_360, TIMELINE};
use crm_core::ports::{ReadModelStore, ReadOp};
use crm_core::testing::customer_id;
use crm_local::adapters::data_dir::database_files;
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;
use std::path::Path;

const EMAIL: &str = "sealed.local.replay.ottoline-5531@example.org";
const FIRST: &str = "Ottolinequadrille";
const LAST: &str = "Brackenbury-Featherstonehaugh";
const USER_AGENT: &str = "Mozilla/5.0 (SealedLocalReplay/9.41; plain before 0045)";

/// Which distinctive plaintexts occur in the database file and its WAL.
fn plaintext_in_files(db: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for file in database_files(db) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for p in [EMAIL, FIRST, LAST, USER_AGENT] {
            if bytes.windows(p.len()).any(|w| w == p.as_bytes()) {
                found.push(format!("{p} in {}", file.display()));
            }
        }
    }
    found
}

/// Stores `consumer`'s documents of `customer` as they read (in clear), in
/// the table underneath the seal: what a version before 0045 wrote.
async fn store_plain(runtime: &LocalRuntime, consumer: &str, customer: &str) {
    let docs = runtime
        .docs
        .list(consumer, customer, "", None, 100)
        .await
        .expect("list");
    assert!(!docs.is_empty(), "{consumer} has documents");
    let ops = docs
        .into_iter()
        .map(|(sort, body)| ReadOp::Put {
            partition: customer.to_string(),
            sort,
            body,
        })
        .collect();
    let stream = format!("customer-{customer}");
    let at = runtime.docs.checkpoint(consumer, &stream).await.expect("checkpoint");
    runtime
        .docs
        .inner()
        .commit(consumer, &stream, at, at, ops)
        .await
        .expect("plain write");
}

#[tokio::test]
async fn a_replay_rebuilds_plain_read_models_sealed_and_leaves_no_plaintext_in_the_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("crm.db");
    let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE).expect("open runtime");
    let id = customer_id(7311);
    let mut registration = crm_core::testing::registration(EMAIL, FIRST, LAST, "UTC");
    registration.user_agent = USER_AGENT.into();
    crm_core::testing::register(runtime.command_store(), &id, registration).await;
    runtime.bus.settle().await.expect("settle");
    // The mail sink is the provider's side (what was sent to the customer),
    // not a read model: its verification email is forgotten, so the scan
    // below looks at the CRM's own stores.
    let sent = runtime.mail.list().await.expect("mail");
    assert!(!sent.is_empty(), "the verification email went out");
    runtime
        .mail
        .redact_messages(sent.into_iter().map(|m| m.message_id).collect())
        .await
        .expect("forget the mail");

    // Sealed from the start: nothing in clear in the read models' rows.
    for consumer in [CUSTOMER_360, TIMELINE, CONSENT_LEDGER] {
        let stored = runtime
            .docs
            .inner()
            .list(consumer, &id, "", None, 100)
            .await
            .expect("list");
        let text = serde_json::to_string(&stored).expect("json");
        for p in [EMAIL, FIRST, LAST, USER_AGENT] {
            assert!(!text.contains(p), "{p} in {consumer}: {text}");
        }
    }

    // The documents as a version before decision 0045 stored them: plain.
    for consumer in [CUSTOMER_360, TIMELINE, CONSENT_LEDGER] {
        store_plain(&runtime, consumer, &id).await;
    }
    runtime.docs.truncate_wal().await.expect("checkpoint");
    assert!(
        !plaintext_in_files(&db).is_empty(),
        "the plain documents are in the file"
    );
    // Read as they are meanwhile.
    let profile = views::customer_profile(runtime.docs.as_ref(), &id)
        .await
        .expect("read")
        .expect("a 360");
    assert_eq!(
        (profile.customer.email.as_str(), profile.customer.last_name.as_str()),
        (EMAIL, LAST)
    );

    // `crm-local replay`: both bus targets rebuilt, through the seal.
    for target in ["projector", "consent"] {
        crm_local::cli::ops::replay(&runtime, target, true)
            .await
            .expect("replay");
    }
    assert_eq!(plaintext_in_files(&db), Vec::<String>::new());

    // And the API's answers are as before.
    let profile = views::customer_profile(runtime.docs.as_ref(), &id)
        .await
        .expect("read")
        .expect("a 360");
    assert_eq!(
        (
            profile.customer.email.as_str(),
            profile.customer.first_name.as_str(),
            profile.customer.last_name.as_str()
        ),
        (EMAIL, FIRST, LAST)
    );
    let entries = views::timeline(runtime.docs.as_ref(), &id, 0, 100)
        .await
        .expect("timeline");
    assert_eq!(entries[0].user_agent.as_deref(), Some(USER_AGENT));
    let history = ledger::consent_history(runtime.docs.as_ref(), &id)
        .await
        .expect("history");
    assert_eq!(history[0].user_agent.as_deref(), Some(USER_AGENT));
}
