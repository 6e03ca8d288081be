//! The event-store contract suite against the encrypting decorator over the
//! SQLite adapter, with the SQLite key store (decision 0017).

use crm_core::ports::EventStore;
use crm_core::privacy::EncryptingEventStore;
use crm_local::adapters::keys::SqliteKeyStore;
use crm_local::SqliteEventStore;
use std::sync::Arc;

async fn fresh_store() -> Arc<dyn EventStore> {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let path = dir.join("crm.db");
    let keys = SqliteKeyStore::open_data_dir(&dir).expect("key store");
    Arc::new(EncryptingEventStore::new(
        Arc::new(SqliteEventStore::open(&path).expect("open sqlite store")),
        Arc::new(keys),
    ))
}

crm_core::event_store_contract!(fresh_store);
